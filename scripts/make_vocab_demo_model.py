#!/usr/bin/env python3
"""Make a model directory with a real tokenizer, for measuring `cpt vocab extend` /
`cpt vocab stats` on Chinese text. Both tokenizers ship inside the `mistral-common` package
(`pip install mistral-common sentencepiece tiktoken`):

--kind sentencepiece: Mistral-7B-v0.1's SentencePiece model (32000 pieces, BPE with byte
  fallback: Llama-2/TinyLlama style, English-centred), or any SentencePiece BPE `.model`
  given with --spm; checked against sentencepiece itself on --check-corpus texts.
--kind tekken: Mistral's byte-level BPE "tekken" (tiktoken format; its first 130072 ranks,
  the default vocabulary, with its pre-tokenizer regex; multilingual, Llama-3 style),
  plus <s> and </s> after it; checked against tiktoken itself.

transformers converts either to tokenizer.json. The weights are a tiny random
LlamaForCausalLM (the tokenizer is what is measured, not the model).

usage: make_vocab_demo_model.py --out DIR [--kind sentencepiece|tekken] [--spm FILE]
                                [--check-corpus FILE.jsonl ...]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

TEKKEN_VOCAB = 130072


def mistral_data(name):
    try:
        import mistral_common
    except ImportError:
        sys.exit("`pip install mistral-common` (it ships the tokenizers), or give --spm FILE")
    return os.path.join(os.path.dirname(mistral_common.__file__), "data", name)


def read_texts(paths):
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)["text"]


def report_differences(encode_ref, tok, texts, show):
    """Counts texts where the converted tokenizer's ids differ from the reference's."""
    checked = differ = 0
    for text in texts:
        a, b = encode_ref(text), tok.encode(text, add_special_tokens=False)
        checked += 1
        if a != b:
            differ += 1
            if differ == 1:
                i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                print(f"first difference: reference {show(a[i:i + 3])} vs converted "
                      f"{tok.convert_ids_to_tokens(b[i:i + 3])}")
    return checked, differ


def sentencepiece_tokenizer(spm_path, texts):
    import sentencepiece

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(spm_path, os.path.join(tmp, "tokenizer.model"))
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "LlamaTokenizer"}, f)
        tok = AutoTokenizer.from_pretrained(tmp)
    # transformers' conversion differs from sentencepiece on some runs of spaces (indented
    # code): count the documents where it differs and show the first place.
    sp = sentencepiece.SentencePieceProcessor(model_file=spm_path)
    checked, differ = report_differences(sp.encode, tok, texts, sp.id_to_piece)
    return tok, sp.bos_id(), sp.eos_id(), checked, differ


def tekken_tokenizer(texts):
    import base64
    import json as _json

    import tiktoken
    from transformers.convert_slow_tokenizer import TikTokenConverter

    with open(mistral_data("tekken_240718.json"), encoding="utf-8") as f:
        tekken = _json.load(f)
    pattern = tekken["config"]["pattern"]
    ranks = {base64.b64decode(t["token_bytes"]): t["rank"] for t in tekken["vocab"] if t["rank"] < TEKKEN_VOCAB}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tekken.tiktoken")
        with open(path, "w") as f:
            for token, rank in sorted(ranks.items(), key=lambda x: x[1]):
                f.write(f"{base64.b64encode(token).decode()} {rank}\n")
        converted = TikTokenConverter(vocab_file=path, pattern=pattern, extra_special_tokens=["<s>", "</s>"]).converted()
    tok = PreTrainedTokenizerFast(tokenizer_object=converted, bos_token="<s>", eos_token="</s>")
    reference = tiktoken.Encoding("tekken", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    checked, differ = report_differences(reference.encode_ordinary, tok, texts, reference.decode_tokens_bytes)
    return tok, tok.bos_token_id, tok.eos_token_id, checked, differ


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--kind", choices=["sentencepiece", "tekken"], default="sentencepiece")
    ap.add_argument("--spm")
    ap.add_argument("--check-corpus", nargs="*", default=[])
    args = ap.parse_args()
    texts = list(read_texts(args.check_corpus))
    if args.kind == "sentencepiece":
        tok, bos, eos, checked, differ = sentencepiece_tokenizer(args.spm or mistral_data("tokenizer.model.v1"), texts)
    else:
        tok, bos, eos, checked, differ = tekken_tokenizer(texts)
    os.makedirs(args.out, exist_ok=True)
    tok.save_pretrained(args.out)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos,
    )
    LlamaForCausalLM(config).save_pretrained(args.out)
    print(f"wrote {args.out}: {args.kind} tokenizer with {len(tok)} ids; "
          f"conversion matches the reference on {checked - differ} of {checked} documents")


if __name__ == "__main__":
    main()
