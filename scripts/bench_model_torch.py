#!/usr/bin/env python3
"""PyTorch (transformers) equivalent of benches/model_fwd_bwd.rs: forward + backward time per
token on CPU, f32, same presets, shapes, token ids and thread count.

Usage: python3 scripts/bench_model_torch.py [--threads N] [--attn eager|sdpa] [CASE ...]
Prints one `BENCH {json}` line per case, like the Rust bench.
"""
import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

# Must match src/model/init.rs PRESETS and the CASES table of benches/model_fwd_bwd.rs.
PRESETS = {
    "tiny": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048),
    "small-100m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                       num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=4096),
}
CASES = [("tiny", 1024, 8, 128, 20), ("small-100m", 32000, 1, 256, 3)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=int(os.environ.get("RAYON_NUM_THREADS", "0")) or None)
    ap.add_argument("--attn", default="sdpa", choices=["eager", "sdpa"])
    ap.add_argument("cases", nargs="*")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name, vocab, batch, seq, iters in CASES:
        if args.cases and name not in args.cases:
            continue
        cfg = LlamaConfig(vocab_size=vocab, tie_word_embeddings=True, rms_norm_eps=1e-5,
                          attn_implementation=args.attn, **PRESETS[name])
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).float().train()
        n = batch * (seq + 1)
        ids = torch.tensor([(i * 2654435761) % vocab for i in range(n)]).reshape(batch, seq + 1)
        inputs, targets = ids[:, :-1], ids[:, 1:]

        def step():
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=inputs).logits
            loss = F.cross_entropy(logits.reshape(-1, vocab).float(), targets.reshape(-1))
            loss.backward()

        step()  # warm-up
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        times.sort()
        median = times[len(times) // 2]
        tokens = batch * seq
        print("BENCH " + json.dumps({
            "impl": f"torch-{args.attn}", "case": name,
            "params": sum(p.numel() for p in model.parameters()),
            "batch": batch, "seq": seq, "threads": torch.get_num_threads(),
            "ms_per_iter": round(median * 1e3, 3), "us_per_token": round(median * 1e6 / tokens, 3),
            "tokens_per_s": round(tokens / median, 1)}), flush=True)


if __name__ == "__main__":
    main()
