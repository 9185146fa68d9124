#!/usr/bin/env python3
"""Loads adapters written by `cpt` with PEFT exactly as a user would,
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), ADAPTER)`, and checks
that PEFT's logits on the given input ids match the logits `cpt` computed with the adapter.

Usage: python3 scripts/check_peft_roundtrip.py [--tol 1e-5] BASE ADAPTER EXPECTED.safetensors [BASE ADAPTER EXPECTED ...]
EXPECTED holds `input_ids` [B,T] (int64) and `logits` [B,T,V] (f32) from `cpt`.
Exits non-zero with a message on any mismatch.
"""
import sys
import warnings

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

warnings.filterwarnings("ignore")
from peft import PeftModel  # noqa: E402


def check(base_dir, adapter_dir, expected_path, tol):
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    expected = load_file(expected_path)
    with torch.no_grad():
        logits = model(input_ids=expected["input_ids"].long()).logits.float()
        with model.disable_adapter():
            plain = model(input_ids=expected["input_ids"].long()).logits.float()
    diff = (logits - expected["logits"]).abs().max().item()
    moved = (logits - plain).abs().max().item()
    print(f"PeftModel({type(base).__name__}) {adapter_dir}: max |logit diff| vs cpt = {diff:.3e} "
          f"(the adapter moves the logits by up to {moved:.3f})")
    if not diff < tol:
        sys.exit(f"{adapter_dir}: logits differ by {diff} (tolerance {tol})")
    if not moved > 0:
        sys.exit(f"{adapter_dir}: PEFT applied no change: the adapter did not load")


def main():
    args = sys.argv[1:]
    tol = 1e-5
    if args[:1] == ["--tol"]:
        tol, args = float(args[1]), args[2:]
    if not args or len(args) % 3:
        sys.exit(__doc__)
    for i in range(0, len(args), 3):
        check(args[i], args[i + 1], args[i + 2], tol)


if __name__ == "__main__":
    main()
