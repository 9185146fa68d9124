"""PyTorch side of benches/optim_step.rs: time one AdamW step (clip_grad_norm_ + step) over
parameters shaped like a small Llama, single-threaded or not as torch defaults.

Usage: python3 scripts/bench_optim_torch.py LAYERS HIDDEN INTERMEDIATE VOCAB STEPS
Prints one JSON line per variant: {"variant", "params", "ms_per_step"}.
"""
import json
import sys
import time

import torch


def shapes(layers, hidden, inter, vocab):
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + n, (hidden, hidden)) for n in ["self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                                  "self_attn.v_proj.weight", "self_attn.o_proj.weight"]]
        out += [(p + "mlp.gate_proj.weight", (inter, hidden)), (p + "mlp.up_proj.weight", (inter, hidden)),
                (p + "mlp.down_proj.weight", (hidden, inter))]
        out += [(p + "input_layernorm.weight", (hidden,)), (p + "post_attention_layernorm.weight", (hidden,))]
    out += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return out


def main():
    layers, hidden, inter, vocab, steps = map(int, sys.argv[1:6])
    g = torch.Generator().manual_seed(0)
    for variant, kwargs in [("torch_single_tensor", dict(foreach=False)), ("torch_foreach", dict(foreach=True)),
                            ("torch_fused", dict(fused=True))]:
        params = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.02) for _, s in shapes(layers, hidden, inter, vocab)]
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) * 1e-3
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=3e-4, betas=(0.9, 0.95), **kwargs)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()  # first step allocates the moments
        t0 = time.perf_counter()
        for _ in range(steps):
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        ms = (time.perf_counter() - t0) / steps * 1e3
        print(json.dumps(dict(variant=variant, params=sum(p.numel() for p in params), ms_per_step=ms)), flush=True)
        del opt, params


if __name__ == "__main__":
    main()
