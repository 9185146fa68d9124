#!/usr/bin/env python3
"""PyTorch side of cpt's training benchmark: transformers LlamaForCausalLM, f32 master weights,
bf16 autocast, SDPA attention, fused AdamW, optionally torch.compile; random tokens.

Prints one JSON line: tokens/s, MFU, peak memory. MFU counts 6N + 12*L*H*Q*T FLOPs per token
(N: parameters that do matmul work, i.e. all but the input embedding table; L layers, H heads,
Q head dim, T sequence length) against the dense bf16 peak (989 TFLOP/s on H100/H200 SXM).
The same shapes are in benches/gpu_train_step.rs (the cpt side).

usage: bench_torch_train.py --shape {tiny,100m,1b} [--seq-len T] [--batch B] [--steps N]
                            [--warmup N] [--compile] [--device cuda|cpu] [--peak-tflops F]
"""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    # smoke-test size (runs on a CPU in seconds)
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=256),
    # about 100M parameters (GQA like TinyLlama)
    "100m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                 num_key_value_heads=4, vocab_size=32000),
    # TinyLlama-1.1B
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4, vocab_size=32000),
}


def flops_per_token(cfg: LlamaConfig, n_matmul_params: int, seq_len: int) -> float:
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    return 6 * n_matmul_params + 12 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * seq_len


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, default="tiny")
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seq_len = args.seq_len or (32 if args.shape == "tiny" else 2048)

    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    cfg = LlamaConfig(**SHAPES[args.shape], max_position_embeddings=max(seq_len, 2048),
                      tie_word_embeddings=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).to(dev)  # f32 master weights
    n_params = sum(p.numel() for p in model.parameters())
    n_matmul = n_params - model.model.embed_tokens.weight.numel()
    fused = dev.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=fused, foreach=None if fused else True)
    step_model = torch.compile(model) if args.compile else model

    def step():
        ids = torch.randint(0, cfg.vocab_size, (args.batch, seq_len + 1), device=dev)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
            logits = step_model(input_ids=ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, cfg.vocab_size), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    peak_driver = 0
    for _ in range(args.warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
        if dev.type == "cuda":
            free, total = torch.cuda.mem_get_info()
            peak_driver = max(peak_driver, total - free)
    sync()
    elapsed = time.perf_counter() - t0
    tokens = args.batch * seq_len * args.steps
    tps = tokens / elapsed
    fpt = flops_per_token(cfg, n_matmul, seq_len)
    out = {
        "impl": "torch" + ("+compile" if args.compile else " eager"),
        "shape": args.shape, "params": n_params, "matmul_params": n_matmul,
        "batch": args.batch, "seq_len": seq_len, "steps": args.steps, "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "torch": torch.__version__,
        "tokens_per_s": round(tps, 1),
        "step_s": round(elapsed / args.steps, 4),
        "flops_per_token": fpt,
        "mfu": round(tps * fpt / (args.peak_tflops * 1e12), 4),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved(dev) / 2**30, 2) if dev.type == "cuda" else None,
        "peak_device_used_gib": round(peak_driver / 2**30, 2) if dev.type == "cuda" else None,
        "final_loss": round(float(loss.detach()), 4),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
