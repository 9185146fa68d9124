#!/usr/bin/env python3
"""Generation speed on CPU: `cpt generate` beside transformers' `generate` on the same model,
the same prompts (left-padded batches), greedy, a fixed number of new tokens (EOS ignored),
the same number of threads, in one run. Prefill (the prompt's forward, up to the first new
token) and decode (every later token) are timed apart on both sides:
  prefill tokens/s = prompt tokens (padding excluded) / prefill seconds
  decode tokens/s  = batch x (new tokens - 1) / decode seconds

Usage:
  python3 scripts/bench_generate.py --make-model bench-gen --preset small-10m
  python3 scripts/bench_generate.py --model bench-gen [--threads 2] [--batches 1,8]
      [--prompt-tokens 128] [--new-tokens 64] [--repeats 3]
(the cpt binary: target/release/cpt, or --cpt PATH; build it with `cargo build --release`)
transformers' decode time is its generate() time less a separate prefill forward.
"""
import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# OpenMP threads that spin while waiting collapse on a loaded machine (a 10x slowdown seen
# here at load 10 on 2 cores); passive waiting is torch's better setting there.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def make_model(out, preset, cpt):
    plain = sorted(glob.glob(os.path.join(ROOT, "corpus", "sample", "plain", "*.txt")))
    subprocess.run([cpt, "init", "--preset", preset, "--arch", "llama", "--seed", "1", "--out", out,
                    "--train-tokenizer", *plain], check=True)


def prompts(tokenizer, n, length):
    """n texts of about `length` tokens each, from the sample corpus (different starts)."""
    text = open(os.path.join(ROOT, "corpus", "sample", "plain", "en.txt"), encoding="utf-8").read()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = []
    for i in range(n):
        start = (i * 97) % max(1, len(ids) - length)
        # Slightly different lengths, so batches need left padding.
        out.append(tokenizer.decode(ids[start:start + length - 3 * i]))
    return out


def bench_torch(model_dir, texts, new_tokens, threads):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=True)
    prompt_tokens = int(enc["attention_mask"].sum())
    with torch.no_grad():
        # The prefill: the prompts' forward that fills the cache.
        t0 = time.perf_counter()
        model(**enc, use_cache=True)
        prefill = time.perf_counter() - t0
        start = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        end = time.perf_counter()
    decode = (end - start) - prefill
    assert out.shape[1] - enc["input_ids"].shape[1] == new_tokens
    return {"prompt_tokens": prompt_tokens, "prefill_s": prefill, "decode_s": decode,
            "decode_tokens": len(texts) * (new_tokens - 1)}


def bench_cpt(cpt, model_dir, texts, new_tokens, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), CANDLE_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "prompts.jsonl")
        with open(path, "w") as f:
            for t in texts:
                f.write(json.dumps({"prompt": t}) + "\n")
        r = subprocess.run([cpt, "generate", "--model", model_dir, "--prompts", path, "--out", os.path.join(d, "out.jsonl"),
                            "--max-new-tokens", str(new_tokens), "--ignore-eos", "--batch-size", str(len(texts))],
                           env=env, capture_output=True, text=True, check=True)
    m = re.search(r"prefill: (\d+) tokens in ([\d.]+)s .*decode: (\d+) tokens in ([\d.]+)s", r.stderr)
    if not m:
        sys.exit(f"unexpected cpt output: {r.stderr}")
    return {"prompt_tokens": int(m[1]), "prefill_s": float(m[2]), "decode_tokens": int(m[3]), "decode_s": float(m[4])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--make-model")
    ap.add_argument("--preset", default="small-10m")
    ap.add_argument("--cpt", default=os.path.join(ROOT, "target", "release", "cpt"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if a.make_model:
        make_model(a.make_model, a.preset, a.cpt)
        return
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(a.model)
    rows = []
    for b in [int(x) for x in a.batches.split(",")]:
        texts = prompts(tok, b, a.prompt_tokens)
        for impl, fn in (("cpt", lambda: bench_cpt(a.cpt, a.model, texts, a.new_tokens, a.threads)),
                         ("torch", lambda: bench_torch(a.model, texts, a.new_tokens, a.threads))):
            fn()  # warm-up
            runs = [fn() for _ in range(a.repeats)]
            med = lambda k: statistics.median(r[k] for r in runs)
            row = {"impl": impl, "batch": b, "prompt_tokens": runs[0]["prompt_tokens"],
                   "prefill_tok_s": runs[0]["prompt_tokens"] / med("prefill_s"),
                   "decode_tok_s": runs[0]["decode_tokens"] / med("decode_s")}
            rows.append(row)
            print("BENCH", json.dumps(row), flush=True)
    print(f"\nthreads {a.threads}, {a.new_tokens} new tokens, median of {a.repeats}")
    print("batch  prompt tok  cpt prefill/s  torch prefill/s  ratio  cpt decode/s  torch decode/s  ratio")
    for b in sorted({r["batch"] for r in rows}):
        c = next(r for r in rows if r["impl"] == "cpt" and r["batch"] == b)
        t = next(r for r in rows if r["impl"] == "torch" and r["batch"] == b)
        print(f"{b:>5}  {c['prompt_tokens']:>10}  {c['prefill_tok_s']:>13.0f}  {t['prefill_tok_s']:>15.0f}"
              f"  {c['prefill_tok_s'] / t['prefill_tok_s']:>5.2f}  {c['decode_tok_s']:>12.1f}  {t['decode_tok_s']:>14.1f}"
              f"  {c['decode_tok_s'] / t['decode_tok_s']:>5.2f}")


if __name__ == "__main__":
    main()
