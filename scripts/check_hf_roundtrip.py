#!/usr/bin/env python3
"""Loads a model directory written by `cpt` with transformers and checks that
  1. no weight is missing, unexpected or mis-shaped, and
  2. its logits on the given input ids match the logits `cpt` computed.

With --text FILE, also checks that transformers' tokenizer of each MODEL_DIR turns the
file's text into the first row of `input_ids` (special tokens added as the tokenizer does).

Usage: python3 scripts/check_hf_roundtrip.py [--tol 1e-4] [--text FILE] MODEL_DIR EXPECTED.safetensors [MODEL_DIR EXPECTED ...]
(several pairs in one call: transformers is imported once). EXPECTED holds `input_ids` [B,T] (int64) and `logits` [B,T,V] (f32) from `cpt`.
Exits non-zero with a message on any mismatch.
"""
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def check(model_dir, expected_path, tol, text=None):
    model, info = AutoModelForCausalLM.from_pretrained(
        model_dir, output_loading_info=True, dtype=torch.float32, attn_implementation="eager")
    problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        sys.exit(f"transformers reported weight problems loading {model_dir}: {problems}")
    expected = load_file(expected_path)
    if text is not None:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(model_dir)
        ids = tok(text)["input_ids"]
        want = expected["input_ids"][0].tolist()
        if ids != want:
            sys.exit(f"{model_dir}: transformers tokenizes the text as {ids[:20]}..., cpt as {want[:20]}...")
        print(f"{model_dir}: tokenizer agrees on {len(ids)} ids (bos {tok.bos_token!r}, eos {tok.eos_token!r})")
    with torch.no_grad():
        logits = model(input_ids=expected["input_ids"].long()).logits.float()
    diff = (logits - expected["logits"]).abs().max().item()
    print(f"{type(model).__name__} ({model_dir}): max |logit diff| vs cpt = {diff:.3e}, "
          f"logit std {expected['logits'].std().item():.3f}")
    if not diff < tol:
        sys.exit(f"{model_dir}: logits differ by {diff} (tolerance {tol})")


def main():
    args = sys.argv[1:]
    tol, text = 1e-4, None
    while args[:1] in (["--tol"], ["--text"]):
        if args[0] == "--tol":
            tol = float(args[1])
        else:
            with open(args[1], encoding="utf-8") as f:
                text = f.read()
        args = args[2:]
    if not args or len(args) % 2:
        sys.exit(__doc__)
    for model_dir, expected_path in zip(args[0::2], args[1::2]):
        check(model_dir, expected_path, tol, text)


if __name__ == "__main__":
    main()
