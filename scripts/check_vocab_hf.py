#!/usr/bin/env python3
"""Check a model written by `cpt vocab extend` with transformers.

Loads the extended directory with AutoModelForCausalLM and AutoTokenizer (and the raw
tokenizer.json with PreTrainedTokenizerFast), checks the resized embeddings against the
base model and vocab_extension.json, and prints JSON with the ids transformers gives each
text, for the caller to compare with its own encoding.

usage: check_vocab_hf.py --base DIR --extended DIR [--base DIR --extended DIR ...] --texts FILE.json
Prints one JSON object per pair, in a list. Exits non-zero, with the reason on stderr, when
a check fails.
"""
import argparse
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast


def fail(msg):
    print(f"check_vocab_hf: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, action="append")
    ap.add_argument("--extended", required=True, action="append")
    ap.add_argument("--texts", required=True)
    args = ap.parse_args()
    if len(args.base) != len(args.extended):
        fail("give --base and --extended in pairs")
    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)
    results = [check_pair(base, extended, texts) for base, extended in zip(args.base, args.extended)]
    json.dump(results, sys.stdout, ensure_ascii=False)


def check_pair(base_dir, extended_dir, texts):
    with open(f"{extended_dir}/vocab_extension.json", encoding="utf-8") as f:
        ext = json.load(f)

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(extended_dir, dtype=torch.float32)
    vocab_size = model.config.vocab_size
    if vocab_size != ext["new_vocab_size"]:
        fail(f"config vocab_size {vocab_size} != {ext['new_vocab_size']}")

    old = ext["old_id_space"]
    matrices = [("embed_tokens", base.get_input_embeddings().weight, model.get_input_embeddings().weight)]
    if not ext["tied_embeddings"]:
        matrices.append(("lm_head", base.get_output_embeddings().weight, model.get_output_embeddings().weight))
    elif model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        fail("tied model loaded with separate lm_head")
    for name, w_old, w_new in matrices:
        if tuple(w_new.shape) != (vocab_size, w_old.shape[1]):
            fail(f"{name} shape {tuple(w_new.shape)}")
        if not torch.equal(w_old[:old], w_new[:old]):
            fail(f"{name}: rows of old tokens changed")
        mean = w_old[:old].mean(0)
        for t in ext["tokens"]:
            if ext["init"] == "piece-mean":
                expected = w_old[t["old_pieces"]].mean(0)
            else:
                expected = mean
            err = (w_new[t["id"]] - expected).abs().max().item()
            if err > 1e-5:
                fail(f"{name}: row {t['id']} ({t['text']!r}) differs from its initialisation by {err}")

    auto = AutoTokenizer.from_pretrained(extended_dir)
    fast = PreTrainedTokenizerFast(tokenizer_file=f"{extended_dir}/tokenizer.json")
    out = {"auto_class": type(auto).__name__, "auto": [], "fast": [], "decoded": []}
    for text in texts:
        a = auto.encode(text, add_special_tokens=False)
        b = fast.encode(text, add_special_tokens=False)
        out["auto"].append(a)
        out["fast"].append(b)
        out["decoded"].append(fast.decode(b))

    # The resized model runs on ids that include new tokens.
    ids = max(out["auto"], key=len)[:32] or [0]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    if logits.shape[-1] != vocab_size or not torch.isfinite(logits).all():
        fail(f"forward gave logits of shape {tuple(logits.shape)} or non-finite values")
    return out


if __name__ == "__main__":
    main()
