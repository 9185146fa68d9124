#!/usr/bin/env python3
"""PyTorch side of the CPU data-parallel benchmark (scripts/bench_dist_cpu.sh): the same
model, token shard, micro-batch, sequence length and AdamW settings as
scripts/bench_train_torch.py, trained with DistributedDataParallel over the gloo backend
(PyTorch's CPU collectives), or in one process when started without torchrun. The global
batch is `--grad-accum` micro-batches per step over all ranks, as in cpt.

Prints one JSON line from rank 0: step time, tokens/s of the whole job and per rank, and
the bytes per step each rank sends in DDP's ring all-reduce of the f32 gradients
(2 (W-1)/W x 4 B x parameters; DDP overlaps it with the backward, so its time is not
separable from the step's).

usage: torchrun --nproc-per-node 2 scripts/bench_dist_torch.py --model DIR --shard DIR
           --micro-batch B --seq-len T --grad-accum N [--steps N] [--warmup N] [--threads N]
"""
import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench_train_torch import load_tokens, model_and_optimizer, windows  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--shard", required=True, type=Path)
    ap.add_argument("--micro-batch", type=int, required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step over all ranks")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.set_num_threads(args.threads)
    model, opt = model_and_optimizer(args.model, 3e-4, 0.1)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if args.grad_accum % world:
        raise SystemExit(f"--grad-accum {args.grad_accum} does not split over {world} ranks")
    local = args.grad_accum // world
    data = windows(load_tokens(args.shard), args.micro_batch, args.seq_len)
    # Each rank takes its share of every step's windows (as cpt's ranks do).
    vocab = model.config.vocab_size
    step_times = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        batches = [next(data) for _ in range(args.grad_accum)][rank * local:(rank + 1) * local]
        for i, w in enumerate(batches):
            x, y = w[:, :-1], w[:, 1:]
            sync = net.no_sync() if world > 1 and i + 1 < local else nullcontext()
            with sync:
                logits = net(input_ids=x).logits
                loss = F.cross_entropy(logits.reshape(-1, vocab).float(), y.reshape(-1)) / args.grad_accum
                loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= args.warmup:
            step_times.append(time.perf_counter() - t0)
    if world > 1:
        dist.barrier()
    params = sum(p.numel() for p in model.parameters())
    mean = sum(step_times) / len(step_times)
    tokens = args.micro_batch * args.seq_len * args.grad_accum
    if rank == 0:
        print(json.dumps({
            "impl": "torch-ddp-gloo" if world > 1 else "torch",
            "world": world,
            "threads": args.threads,
            "parameters": params,
            "timed_steps": len(step_times),
            "step_s_mean": mean,
            "step_s_median": statistics.median(step_times),
            "tokens_per_s": tokens / mean,
            "tokens_per_s_per_rank": tokens / mean / world,
            "allreduce_bytes_per_step_theory": 2 * (world - 1) / world * 4 * params if world > 1 else 0,
        }))
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
