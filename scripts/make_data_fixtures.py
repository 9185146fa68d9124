#!/usr/bin/env python3
"""Fixtures for tests/data_reference.rs: a small byte-level BPE tokenizer trained with
Hugging Face `tokenizers`, and the ids it gives a few Chinese/English/code documents
(what `cpt prepare` must write, with EOS after each document).

  python3 scripts/make_data_fixtures.py   # writes tests/fixtures/data/{tokenizer.json,expected.json}
"""
import json
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

TRAIN = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Continual pre-training adapts a base model to new languages and domains.",
    "大语言模型的继续预训练需要合适的数据配比和学习率。",
    "中文与英文的比例是二比八，合成数据占百分之二十。",
    "def add(a, b):\n    return a + b\n",
    "Perplexity falls as the model sees more data; topics that stop improving get more weight.",
]

DOCS = [
    "The lazy dog sleeps while the quick fox runs.",
    "继续预训练：中文数据与英文数据按比例混合。",
    "Mixed 中英 text with numbers 12345 and symbols #@!",
    "def mul(a, b):\n    return a * b\n",
    "  leading spaces and a trailing newline\n",
    "emoji 🙂 and accents: café, naïve",
]


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "data")
    os.makedirs(out, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TRAIN, trainer)
    tok.save(os.path.join(out, "tokenizer.json"))
    eos = tok.token_to_id("</s>")
    bos = tok.token_to_id("<s>")
    expected = {
        "bos_id": bos,
        "eos_id": eos,
        "docs": DOCS,
        "ids": [tok.encode(d, add_special_tokens=False).ids + [eos] for d in DOCS],
    }
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False)
    print("wrote", out)


if __name__ == "__main__":
    main()
