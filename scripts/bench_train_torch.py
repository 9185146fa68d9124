#!/usr/bin/env python3
"""PyTorch side of the CPU training benchmark (scripts/bench_train_cpu.sh).

Trains transformers' LlamaForCausalLM loaded from the same model directory cpt trains
(config.json + safetensors written by `cpt init`), in f32 on CPU, with the same
micro-batch, sequence length, gradient accumulation, AdamW settings (decay on 2-D
non-embedding weights only, as cpt), global-norm clipping and thread count. The data are
the token shards cpt prepared (`tokens.bin` of one source), cut into consecutive windows
of seq_len + 1 tokens like cpt's sampler.

With --lora-rank R the model trains PEFT LoRA adapters instead (scripts/bench_lora.sh):
`get_peft_model` with r R, --lora-alpha, --lora-dropout and --lora-targets (default
all-linear); the frozen base gets no gradient and no optimiser state, the adapters are
decayed like every other 2-D tensor.

Prints one JSON line: mean and median step time and tokens/s over the steps after warm-up,
and the process's peak resident set.

usage: bench_train_torch.py --model DIR --shard DIR --micro-batch B --seq-len T
                            [--grad-accum N] [--steps N] [--warmup N] [--threads N]
                            [--lora-rank R [--lora-alpha A] [--lora-dropout P] [--lora-targets all-linear|q_proj,v_proj]]
"""
import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM


def load_tokens(shard: Path) -> np.ndarray:
    meta = json.loads((shard / "meta.json").read_text())
    dtypes = {"u16": np.uint16, "u32": np.uint32}
    width = meta.get("width")
    if width not in dtypes:
        raise SystemExit(f"{shard / 'meta.json'}: field `width` is {width!r}, expected u16 or u32")
    dtype = dtypes[width]
    return np.fromfile(shard / "tokens.bin", dtype=dtype).astype(np.int64)


def windows(tokens: np.ndarray, batch: int, seq_len: int):
    """Consecutive windows of seq_len + 1 tokens overlapping by one, cycling over the shard."""
    need = seq_len + 1
    if len(tokens) < need:
        raise SystemExit(f"shard has {len(tokens)} tokens, fewer than seq_len + 1 = {need}")
    pos = 0
    while True:
        rows = []
        for _ in range(batch):
            if pos + need > len(tokens):
                pos = 0
            rows.append(tokens[pos:pos + need])
            pos += seq_len
        yield torch.from_numpy(np.stack(rows))


def model_and_optimizer(model_dir, lr, weight_decay, lora=None):
    """The f32 model in training mode and AdamW with cpt's decay groups (2-D weights other
    than the input embeddings decay) over its trainable parameters. `lora`: a dict of
    `rank`, `alpha`, `dropout`, `targets` to wrap the model in PEFT LoRA adapters first."""
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model
        targets = lora["targets"] if lora["targets"] == "all-linear" else lora["targets"].split(",")
        model = get_peft_model(model, LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"],
                                                 lora_dropout=lora["dropout"], target_modules=targets,
                                                 task_type="CAUSAL_LM"))
    model.train()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trainable if p.dim() >= 2 and "embed_tokens" not in n]
    no_decay = [p for n, p in trainable if not (p.dim() >= 2 and "embed_tokens" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95), eps=1e-8,
    )
    return model, opt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--shard", required=True, type=Path, help="a source directory of cpt's data cache")
    ap.add_argument("--micro-batch", type=int, required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3, help="steps excluded from the timing")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--lora-rank", type=int, default=0, help="train PEFT LoRA adapters of this rank (0: full training)")
    ap.add_argument("--lora-alpha", type=float, default=16.0)
    ap.add_argument("--lora-dropout", type=float, default=0.0)
    ap.add_argument("--lora-targets", default="all-linear")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    lora = None
    if args.lora_rank:
        lora = {"rank": args.lora_rank, "alpha": args.lora_alpha, "dropout": args.lora_dropout,
                "targets": args.lora_targets}
    model, opt = model_and_optimizer(args.model, args.lr, args.weight_decay, lora)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    data = windows(load_tokens(args.shard), args.micro_batch, args.seq_len)
    vocab = model.config.vocab_size

    step_times, losses = [], []
    for step in range(args.steps):
        t0 = time.perf_counter()
        total = 0.0
        for _ in range(args.grad_accum):
            w = next(data)
            x, y = w[:, :-1], w[:, 1:]
            logits = model(input_ids=x).logits
            loss = F.cross_entropy(logits.reshape(-1, vocab).float(), y.reshape(-1)) / args.grad_accum
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], args.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(total)
        if step >= args.warmup:
            step_times.append(dt)

    tokens_per_step = args.micro_batch * args.seq_len * args.grad_accum
    mean = sum(step_times) / len(step_times)
    print(json.dumps({
        "impl": "torch + peft" if args.lora_rank else "torch",
        "torch": torch.__version__,
        "threads": args.threads,
        "attn": model.config._attn_implementation,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for _, p in trainable),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "timed_steps": len(step_times),
        "step_s_mean": mean,
        "step_s_median": statistics.median(step_times),
        "tokens_per_s": tokens_per_step / mean,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }))


if __name__ == "__main__":
    main()
