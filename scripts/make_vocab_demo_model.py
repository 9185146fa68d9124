#!/usr/bin/env python3
"""Make a model directory with a real English-centred SentencePiece tokenizer, for
measuring `cpt vocab extend` / `cpt vocab stats` on Chinese text.

The tokenizer is Mistral-7B-v0.1's SentencePiece model (32000 pieces, BPE with byte
fallback: Llama-2/TinyLlama style), shipped inside the `mistral-common` package
(`pip install mistral-common sentencepiece`), or any SentencePiece BPE `.model` given with
--spm. transformers converts it to tokenizer.json; the conversion is checked against
sentencepiece itself on --check-corpus texts. The weights are a tiny random
LlamaForCausalLM (the tokenizer is what is measured, not the model).

usage: make_vocab_demo_model.py --out DIR [--spm FILE] [--check-corpus FILE.jsonl ...]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import sentencepiece
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM


def default_spm():
    try:
        import mistral_common
    except ImportError:
        sys.exit("give --spm FILE, or `pip install mistral-common` for its tokenizer.model.v1")
    return os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")


def read_texts(paths):
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)["text"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--spm")
    ap.add_argument("--check-corpus", nargs="*", default=[])
    args = ap.parse_args()
    spm_path = args.spm or default_spm()

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(spm_path, os.path.join(tmp, "tokenizer.model"))
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "LlamaTokenizer"}, f)
        tok = AutoTokenizer.from_pretrained(tmp)
    os.makedirs(args.out, exist_ok=True)
    tok.save_pretrained(args.out)

    # transformers' conversion is known to differ from sentencepiece on runs of spaces
    # (indented code); count the documents where it differs and show the first place.
    sp = sentencepiece.SentencePieceProcessor(model_file=spm_path)
    checked = differ = 0
    for text in read_texts(args.check_corpus):
        a, b = sp.encode(text), tok.encode(text, add_special_tokens=False)
        checked += 1
        if a != b:
            differ += 1
            if differ == 1:
                i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                print(f"first difference: sentencepiece {sp.id_to_piece(a[i:i + 3])} "
                      f"vs converted {tok.convert_ids_to_tokens(b[i:i + 3])}")

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=sp.vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        tie_word_embeddings=False, bos_token_id=sp.bos_id(), eos_token_id=sp.eos_id(),
    )
    LlamaForCausalLM(config).save_pretrained(args.out)
    print(f"wrote {args.out}: {sp.vocab_size()} pieces from {spm_path}; "
          f"conversion matches sentencepiece on {checked - differ} of {checked} documents")


if __name__ == "__main__":
    main()
