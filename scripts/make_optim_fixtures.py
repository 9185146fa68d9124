"""Reference optimiser trajectories from PyTorch for tests/optim_*.rs.

For each case: a few small parameters (a 2-D embedding, a 2-D projection, a 1-D norm
weight, a 1-D bias) get N steps of given gradients through torch.optim.AdamW or
torch.optim.SGD (single-tensor code path, foreach=False), with weight decay groups as cpt
builds them (1-D tensors never decayed, embeddings optionally) and optional
torch.nn.utils.clip_grad_norm_. Stored per case in tests/fixtures/optim/<case>.safetensors
(init.<name>, grad.<step>.<name>, param.<step>.<name>, state tensors after the last step)
and <case>.json (settings, per-step lr and pre-clip gradient norm).

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


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, case in CASES.items():
        tensors, norms = run_case(case)
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, f"{name}.safetensors"))
        meta = dict(case, norms=norms, params=[n for n, _ in SHAPES], torch=torch.__version__)
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(meta, f, indent=1)
        print(f"{name}: {len(case['lrs'])} steps, norms {['%.4f' % x for x in norms]}")


if __name__ == "__main__":
    main()
