#!/usr/bin/env python3
"""`cpt topics` side by side with fastText itself: same labelled data, same seeded split,
same hyperparameters, one run. Reports held-out accuracy and macro-F1, and training and
prediction time (wall and CPU seconds; CPU time is the per-core cost, and the steadier
number on a shared machine).

    pip install fasttext-wheel
    cargo build --release
    python3 scripts/cmmlu_topics.py --cmmlu PATH/TO/cmmlu --out topics-data/cmmlu_topics.jsonl
    python3 scripts/bench_topics_fasttext.py --data topics-data/cmmlu_topics.jsonl --threads 1,2

Both tools read the same documents: the script writes the split as JSONL for cpt and in
fastText's format (`__label__TOPIC text`, whitespace runs joined by one space, which is
what fastText's reader sees in cpt's JSONL text as well). cpt's training time counts
reading the JSONL, the vocabulary, the features and SGD; fastText's counts
`train_supervised` (reading, dictionary, SGD). Prediction is timed over every document
(train and held-out), on texts already in memory for fastText and with `cpt topics eval`'s
prediction loop for cpt. Saving the model is not timed for either.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time


def split(rows, fraction, seed):
    """Per topic, a seeded shuffle; `fraction` of each topic held out (at least one)."""
    by_topic = {}
    for r in rows:
        by_topic.setdefault(r["topic"], []).append(r)
    train, test = [], []
    rng = random.Random(seed)
    for topic in sorted(by_topic):
        docs = by_topic[topic]
        rng.shuffle(docs)
        k = max(1, round(fraction * len(docs))) if len(docs) >= 2 else 0
        test += docs[:k]
        train += docs[k:]
    rng.shuffle(train)  # fastText reads its file in order: do not give it one topic after another
    return train, test


def fasttext_line(text):
    return " ".join(text.split())


def scores(truth, predicted):
    labels = sorted(set(truth) | set(predicted))
    acc = sum(t == p for t, p in zip(truth, predicted)) / len(truth)
    f1s = []
    for l in labels:
        tp = sum(t == l and p == l for t, p in zip(truth, predicted))
        pred = sum(p == l for p in predicted)
        true = sum(t == l for t in truth)
        prec = tp / pred if pred else 0.0
        rec = tp / true if true else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return acc, sum(f1s) / len(f1s)


def children_cpu():
    import resource
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def run_cpt(cpt, args, work, threads):
    hp = ["--dim", str(args.dim), "--epoch", str(args.epoch), "--lr", str(args.lr), "--word-ngrams", str(args.word_ngrams),
          "--minn", str(args.minn), "--maxn", str(args.maxn), "--bucket", str(args.bucket), "--seed", str(args.seed)]
    model = os.path.join(work, f"cpt-model-{threads}")
    cmd = [cpt, "topics", "train", "--data", os.path.join(work, "train.jsonl"), "--valid", os.path.join(work, "test.jsonl"),
           "--out", model, "--threads", str(threads), "--json", "--quiet"] + hp
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    t = out["seconds"]
    ev = out["evaluation"]
    cmd = [cpt, "topics", "eval", "--model", model, "--data", os.path.join(work, "all.jsonl"), "--threads", str(threads), "--json"]
    pred = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {
        "accuracy": ev["accuracy"], "macro_f1": ev["macro_f1"],
        "train_wall": t["read"] + t["train"], "train_cpu": t["read"] + t["train_cpu"],
        "predict_wall": pred["predict_seconds"], "predict_cpu": pred["predict_cpu_seconds"],
    }


def run_fasttext(args, work, threads, test, every):
    import fasttext
    wall, cpu = time.perf_counter(), time.process_time()
    model = fasttext.train_supervised(
        input=os.path.join(work, "train.txt"), dim=args.dim, epoch=args.epoch, lr=args.lr, wordNgrams=args.word_ngrams,
        minn=args.minn, maxn=args.maxn, bucket=args.bucket, thread=threads, loss="softmax", minCount=1, seed=args.seed, verbose=0)
    train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
    labels, _ = model.predict([fasttext_line(r["text"]) for r in test])
    acc, f1 = scores([r["topic"] for r in test], [l[0][len("__label__"):] for l in labels])
    texts = [fasttext_line(r["text"]) for r in every]
    wall, cpu = time.perf_counter(), time.process_time()
    model.predict(texts)
    return {"accuracy": acc, "macro_f1": f1, "train_wall": train_wall, "train_cpu": train_cpu,
            "predict_wall": time.perf_counter() - wall, "predict_cpu": time.process_time() - cpu}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="labelled JSONL (`text`, `topic`)")
    ap.add_argument("--cpt", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "cpt"))
    ap.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--valid-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--epoch", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--word-ngrams", type=int, default=2)
    ap.add_argument("--minn", type=int, default=1)
    ap.add_argument("--maxn", type=int, default=3)
    ap.add_argument("--bucket", type=int, default=2000000)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    with open(args.data, encoding="utf-8") as f:
        rows = [json.loads(l) for l in f if l.strip()]
    train, test = split(rows, args.valid_fraction, args.seed)
    every = train + test
    results = []
    with tempfile.TemporaryDirectory() as work:
        for name, part in (("train", train), ("test", test), ("all", every)):
            with open(os.path.join(work, f"{name}.jsonl"), "w", encoding="utf-8") as f:
                for r in part:
                    f.write(json.dumps({"text": r["text"], "topic": r["topic"]}, ensure_ascii=False) + "\n")
        with open(os.path.join(work, "train.txt"), "w", encoding="utf-8") as f:
            for r in train:
                f.write(f"__label__{r['topic']} {fasttext_line(r['text'])}\n")
        print(f"{len(train)} training and {len(test)} held-out documents, {len(set(r['topic'] for r in rows))} topics; "
              f"dim {args.dim} epoch {args.epoch} lr {args.lr} wordNgrams {args.word_ngrams} minn {args.minn} maxn {args.maxn} "
              f"bucket {args.bucket}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        for threads in [int(t) for t in args.threads.split(",")]:
            for rep in range(args.repeats):
                c = run_cpt(args.cpt, args, work, threads)
                ft = run_fasttext(args, work, threads, test, every)
                results.append({"threads": threads, "repeat": rep, "cpt": c, "fasttext": ft, "load": os.getloadavg()[0]})
                print(f"\nthreads {threads}, run {rep + 1} (load average {os.getloadavg()[0]:.1f})")
                print(f"{'':10s} {'accuracy':>9s} {'macro-F1':>9s} {'train wall':>11s} {'train CPU':>10s} {'predict wall':>13s} {'predict CPU':>12s}")
                for name, r in (("cpt", c), ("fastText", ft)):
                    print(f"{name:10s} {r['accuracy']:9.4f} {r['macro_f1']:9.4f} {r['train_wall']:10.2f}s {r['train_cpu']:9.2f}s "
                          f"{r['predict_wall']:12.3f}s {r['predict_cpu']:11.3f}s")
                print(f"{'cpt/ft':10s} {c['accuracy'] - ft['accuracy']:+9.4f} {c['macro_f1'] - ft['macro_f1']:+9.4f} "
                      f"{c['train_wall'] / ft['train_wall']:10.2f}x {c['train_cpu'] / ft['train_cpu']:9.2f}x "
                      f"{c['predict_wall'] / ft['predict_wall']:12.2f}x {c['predict_cpu'] / ft['predict_cpu']:11.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
