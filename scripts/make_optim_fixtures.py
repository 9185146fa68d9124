"""Reference optimiser trajectories from PyTorch for tests/optim_*.rs.

For each case: a few small parameters (a 2-D embedding, a 2-D projection, a 1-D norm
weight, a 1-D bias) get N steps of given gradients through torch.optim.AdamW or
torch.optim.SGD (single-tensor code path, foreach=False), with weight decay groups as cpt
builds them (1-D tensors never decayed, embeddings optionally) and optional
torch.nn.utils.clip_grad_norm_. Stored per case in tests/fixtures/optim/<case>.safetensors
(init.<name>, grad.<step>.<name>, param.<step>.<name>, state tensors after the last step)
and <case>.json (settings, per-step lr and pre-clip gradient norm).

It also records learning rates of reference schedulers (HF transformers' LambdaLR
schedules and torch's CosineAnnealingLR), step by step, in
tests/fixtures/optim/schedules.json for tests/schedule_*.rs.

Run: python3 scripts/make_optim_fixtures.py
"""
import json
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "optim")

SHAPES = [
    ("model.embed_tokens.weight", (6, 4)),
    ("model.layers.0.mlp.up_proj.weight", (5, 4)),
    ("model.norm.weight", (4,)),
    ("model.layers.0.self_attn.q_proj.bias", (5,)),
]


def decays(name, rank, decay_embeddings):
    if rank < 2:
        return False
    if name.endswith("embed_tokens.weight"):
        return decay_embeddings
    return True


def run_case(case):
    g = torch.Generator().manual_seed(case["seed"])
    params = {n: torch.nn.Parameter(torch.randn(s, generator=g)) for n, s in SHAPES}
    tensors = {f"init.{n}": p.detach().clone() for n, p in params.items()}
    decay = [p for n, p in params.items() if decays(n, p.dim(), case["decay_embeddings"])]
    no_decay = [p for n, p in params.items() if not decays(n, p.dim(), case["decay_embeddings"])]
    groups = [
        {"params": decay, "weight_decay": case["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    lr0 = case["lrs"][0]
    if case["algorithm"] == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr0, betas=tuple(case["betas"]), eps=case["eps"], foreach=False)
    else:
        opt = torch.optim.SGD(
            groups, lr=lr0, momentum=case["momentum"], nesterov=case["nesterov"], dampening=0.0, foreach=False
        )
    norms = []
    for step, lr in enumerate(case["lrs"]):
        for group in opt.param_groups:
            group["lr"] = lr
        # Gradients of varying size so that clipping acts on some steps and not others.
        scale = case["grad_scales"][step]
        for n, p in params.items():
            p.grad = torch.randn(p.shape, generator=g) * scale
            tensors[f"grad.{step}.{n}"] = p.grad.detach().clone()
        if case["clip"] is not None:
            norm = torch.nn.utils.clip_grad_norm_(list(params.values()), case["clip"], foreach=False)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params.values()]))
        norms.append(float(norm))
        opt.step()
        for n, p in params.items():
            tensors[f"param.{step}.{n}"] = p.detach().clone()
    for n, p in params.items():
        for key, value in opt.state[p].items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"state.{n}.{key}"] = value.detach().clone()
    return tensors, norms


CASES = {
    "adamw_groups_clip": dict(
        algorithm="adamw", seed=1, betas=[0.9, 0.95], eps=1e-8, weight_decay=0.1, decay_embeddings=False,
        clip=1.0, lrs=[1e-2, 5e-3, 2e-2, 1e-2, 3e-3, 1e-2], grad_scales=[1.0, 0.05, 2.0, 0.1, 1.0, 0.01],
    ),
    "adamw_decay_embeddings": dict(
        algorithm="adamw", seed=2, betas=[0.8, 0.99], eps=1e-6, weight_decay=0.01, decay_embeddings=True,
        clip=None, lrs=[3e-2, 3e-2, 1e-2, 1e-3, 2e-2], grad_scales=[1.0, 0.5, 3.0, 0.2, 1.0],
    ),
    "sgd_momentum_clip": dict(
        algorithm="sgd", seed=3, momentum=0.9, nesterov=False, weight_decay=0.01, decay_embeddings=False,
        clip=0.5, lrs=[0.1, 0.05, 0.1, 0.02, 0.1], grad_scales=[1.0, 0.01, 1.0, 0.1, 2.0],
    ),
    "sgd_nesterov": dict(
        algorithm="sgd", seed=4, momentum=0.8, nesterov=True, weight_decay=0.0, decay_embeddings=False,
        clip=None, lrs=[0.1, 0.1, 0.05, 0.05], grad_scales=[1.0, 0.5, 1.0, 0.3],
    ),
    "sgd_plain": dict(
        algorithm="sgd", seed=5, momentum=0.0, nesterov=False, weight_decay=0.05, decay_embeddings=True,
        clip=None, lrs=[0.1, 0.2, 0.05], grad_scales=[1.0, 1.0, 1.0],
    ),
}


def schedule_trace(make, steps, base_lr=1.0):
    """lr seen by each step 0..steps-1 (read before scheduler.step(), as a training loop does)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = make(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def schedules():
    from transformers import optimization as hf

    peak = 3e-4
    cases = []

    def add(name, spec, steps, make):
        cases.append(dict(name=name, spec=spec, peak_lr=peak, lrs=schedule_trace(make, steps, peak)))

    add("hf_cosine_warmup", dict(kind="cosine", warmup=10, total=100), 110,
        lambda o: hf.get_cosine_schedule_with_warmup(o, 10, 100))
    add("hf_linear_warmup", dict(kind="linear", warmup=7, total=50), 60,
        lambda o: hf.get_linear_schedule_with_warmup(o, 7, 50))
    add("hf_cosine_min_lr", dict(kind="cosine", warmup=5, total=80, min_lr_ratio=0.1), 90,
        lambda o: hf.get_cosine_with_min_lr_schedule_with_warmup(o, 5, 80, min_lr_rate=0.1))
    add("hf_constant_warmup", dict(kind="constant", warmup=12, total=40), 40,
        lambda o: hf.get_constant_schedule_with_warmup(o, 12))
    # HF's WSD warms up from min_lr_ratio * peak: cpt's start_lr expresses the same thing.
    for shape in ["linear", "cosine", "1-sqrt"]:
        add(f"hf_wsd_{shape}", dict(kind="wsd", warmup=10, total=100, decay=30, decay_shape=shape,
                                    min_lr_ratio=0.05, start_lr=0.05 * peak), 110,
            lambda o, shape=shape: hf.get_wsd_schedule(o, num_warmup_steps=10, num_decay_steps=30,
                                                       num_training_steps=100, decay_type=shape, min_lr_ratio=0.05))
    add("torch_cosine_annealing", dict(kind="cosine", warmup=0, total=60, min_lr=1e-5), 61,
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=60, eta_min=1e-5))
    return cases


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "schedules.json"), "w") as f:
        json.dump(schedules(), f)
    print("schedules.json written")
    for name, case in CASES.items():
        tensors, norms = run_case(case)
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, f"{name}.safetensors"))
        meta = dict(case, norms=norms, params=[n for n, _ in SHAPES], torch=torch.__version__)
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(meta, f, indent=1)
        print(f"{name}: {len(case['lrs'])} steps, norms {['%.4f' % x for x in norms]}")


if __name__ == "__main__":
    main()
