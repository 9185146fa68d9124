#!/usr/bin/env python3
"""Fixture for `tests/topics_fasttext.rs`: a tiny fastText supervised model (its vocabulary,
label set and both matrices) and what fastText computes with it (character n-gram ids,
sentence vectors, label probabilities) on a few texts. The test loads the same matrices into
cpt's classifier and checks that cpt's features, hidden vectors and probabilities agree.

    pip install fasttext-wheel
    python3 scripts/make_topics_fixtures.py      # writes tests/fixtures/topics/fasttext_tiny.json
"""
import json
import os
import random
import tempfile

import fasttext

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "topics", "fasttext_tiny.json")
SETTINGS = {"dim": 4, "wordNgrams": 2, "minn": 1, "maxn": 3, "bucket": 211}

# Small labelled set: English words, Chinese runs (no spaces, as Chinese text has none) and
# non-ASCII bytes, so that fastText's signed-byte hash and UTF-8 aware n-grams are exercised.
TOPICS = {
    "science": ["atom energy physics", "物理学 能量 原子", "electron orbit quantum", "光速 实验"],
    "history": ["empire dynasty war", "历史 王朝 战争", "ancient king treaty", "唐朝 皇帝"],
    "cooking": ["recipe flour oven", "红烧肉 做法 酱油", "bake bread butter", "米饭 蒸 锅"],
}
PROBES = [
    "atom energy in a quantum orbit",
    "唐朝的皇帝 and the treaty",
    "红烧肉做法",
    "  unknownword   oven\tbread  ",
    "naïve café crème",
    "物理学",
    "x",
]
WORDS = ["atom", "物理学", "unknownword", "naïve", "</s>", "红烧肉做法"]


def main():
    rng = random.Random(0)
    lines = []
    for _ in range(40):
        topic = rng.choice(sorted(TOPICS))
        words = " ".join(rng.sample(TOPICS[topic], 2))
        lines.append(f"__label__{topic} {words}")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "train.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        model = fasttext.train_supervised(input=path, epoch=60, lr=1.0, thread=1, seed=1, verbose=0, loss="softmax", **SETTINGS)
    nwords = len(model.words)
    subwords = {}
    for w in WORDS:
        names, ids = model.get_subwords(w)
        subwords[w] = {"ngrams": list(names), "ids": [int(i) for i in ids]}
    probes = []
    for text in PROBES:
        # The binding's own predict (with the newline its Python wrapper adds): under numpy 2,
        # fasttext-wheel 0.9.2's `predict` fails for one text and repeats the first
        # probability for a list. It reports exp(log(p + 1e-5)): take the 1e-5 back off.
        by_label = {l[len("__label__"):]: float(p) - 1e-5 for p, l in model.f.predict(text + "\n", -1, 0.0, "strict")}
        probes.append({
            "text": text,
            "sentence_vector": [float(x) for x in model.get_sentence_vector(text)],
            "probabilities": by_label,
        })
    fixture = {
        "fasttext_version": "fasttext-wheel 0.9.2",
        "settings": SETTINGS,
        "words": list(model.words),
        "labels": [l[len("__label__"):] for l in model.labels],
        "input": [[float(x) for x in row] for row in model.get_input_matrix()],
        "output": [[float(x) for x in row] for row in model.get_output_matrix()],
        "nwords": nwords,
        "subwords": subwords,
        "probes": probes,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"{nwords} words, {len(fixture['labels'])} labels, {len(fixture['input'])} input rows -> {OUT}")


if __name__ == "__main__":
    main()
