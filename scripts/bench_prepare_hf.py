#!/usr/bin/env python3
"""`cpt prepare` throughput side by side with Hugging Face `tokenizers` (encode_batch).

Both tokenize the same JSONL files with the same tokenizer.json on the same number of
threads, in one run:
  - cpt: `cpt prepare --force` (read, parse, dedup, tokenize, write shards), wall clock;
  - Python: read + json.loads + `Tokenizer.encode_batch` (no writing), and encode_batch
    alone.
MB/s counts UTF-8 bytes of document text. The token ids cpt wrote are compared with
Python's, so the numbers are for identical work.

Usage (from the repository root, after `cargo build --release`):
  python3 scripts/bench_prepare_hf.py [--mb 40] [--threads 2] [--files a.jsonl ...]
                                      [--tokenizer tokenizer.json] [--cpt target/release/cpt]
Without --files, a corpus is generated from sentences of `corpus/sample` (or synthetic
words when that is absent); without --tokenizer, a 32k byte-level BPE is trained on it.
"""
import argparse
import glob
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time


def sentences_from_sample(root):
    pool = []
    for path in sorted(glob.glob(os.path.join(root, "**", "*.jsonl"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = json.loads(line).get("text", "")
                pool.extend(s for s in re.split(r"(?<=[。！？.!?\n])", text) if s.strip())
    return pool


def synthetic_sentences(rng):
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 25))) + "." for _ in range(20000)]


def generate_corpus(out_dir, megabytes, rng, sample):
    pool = sentences_from_sample(sample) if os.path.isdir(sample) else []
    origin = "sentences of corpus/sample" if pool else "synthetic words"
    if not pool:
        pool = synthetic_sentences(rng)
    files, target, written, doc_id = [], megabytes * 1_000_000, 0, 0
    for part in range(4):
        path = os.path.join(out_dir, f"part-{part}.jsonl")
        files.append(path)
        with open(path, "w", encoding="utf-8") as f:
            while written < target * (part + 1) / 4:
                n = rng.randint(3, 40)
                text = "".join(rng.choice(pool) for _ in range(n)) + f" ({doc_id})"
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                written += len(text.encode("utf-8"))
                doc_id += 1
    return files, origin


def read_texts(files):
    texts = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    texts.append(json.loads(line)["text"])
    return texts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=40, help="size of the generated corpus in MB of text")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--files", nargs="*", help="JSONL files with a `text` field (instead of a generated corpus)")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: train a 32k byte-level BPE)")
    ap.add_argument("--cpt", default="target/release/cpt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus", "sample"),
                    help="directory of JSONL whose sentences make the generated corpus")
    args = ap.parse_args()

    # Both sides use rayon under the hood; pin the same thread count before importing.
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    import numpy as np

    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="cpt-bench-")
    if args.files:
        files, origin = [os.path.abspath(f) for f in args.files], "given files"
    else:
        files, origin = generate_corpus(work, args.mb, rng, args.sample)
    texts = read_texts(files)
    total_bytes = sum(len(t.encode("utf-8")) for t in texts)

    if args.tokenizer:
        tok_path = os.path.abspath(args.tokenizer)
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=32000, special_tokens=["<s>", "</s>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(texts[: max(1, len(texts) // 4)], trainer)
        tok_path = os.path.join(work, "tokenizer.json")
        tok.save(tok_path)
    tok_dir = os.path.join(work, "tok")
    os.makedirs(tok_dir, exist_ok=True)
    with open(tok_path, encoding="utf-8") as src, open(os.path.join(tok_dir, "tokenizer.json"), "w", encoding="utf-8") as dst:
        dst.write(src.read())
    tokenizer = Tokenizer.from_file(tok_path)
    eos = tokenizer.token_to_id("</s>")
    with open(os.path.join(tok_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "</s>"} if eos is not None else {}, f)

    config = os.path.join(work, "data.yaml")
    with open(config, "w") as f:
        f.write(f"tokenizer: {tok_dir}\ncache_dir: {os.path.join(work, 'cache')}\n")
        f.write(f"add_eos: {'true' if eos is not None else 'false'}\ndedup: false\n")
        f.write("sources:\n  - name: bench\n    paths:\n")
        for path in files:
            f.write(f"      - {path}\n")

    # cpt prepare, whole pipeline, wall clock.
    start = time.perf_counter()
    out = subprocess.run([args.cpt, "prepare", "--config", config, "--force", "--json"],
                         check=True, capture_output=True, text=True)
    cpt_secs = time.perf_counter() - start
    summary = json.loads(out.stdout)["sources"][0]["summary"]

    # Python: read + parse + encode_batch, and encode_batch alone.
    start = time.perf_counter()
    py_texts = read_texts(files)
    read_secs = time.perf_counter() - start
    ids = []
    start = time.perf_counter()
    for k in range(0, len(py_texts), 4096):
        ids.extend(e.ids for e in tokenizer.encode_batch(py_texts[k:k + 4096], add_special_tokens=False))
    encode_secs = time.perf_counter() - start

    # Same tokens? Compare cpt's shard with Python's ids (+ EOS per document).
    width = np.uint16 if tokenizer.get_vocab_size(with_added_tokens=True) <= 65536 else np.uint32
    shard = np.fromfile(os.path.join(work, "cache", "bench", "tokens.bin"), dtype=width)
    expected = np.fromiter((t for doc in ids for t in (doc + ([eos] if eos is not None else []))), dtype=np.int64)
    identical = shard.shape == expected.shape and bool((shard.astype(np.int64) == expected).all())

    mb = total_bytes / 1e6
    print(f"corpus: {origin}, {len(texts)} documents, {mb:.1f} MB of text, {len(files)} files; "
          f"tokenizer vocab {tokenizer.get_vocab_size(with_added_tokens=True)}; {args.threads} threads")
    print(f"token ids identical between cpt and Python: {identical} ({summary['tokens']} tokens)")
    rows = [
        ("cpt prepare (read+parse+tokenize+write)", cpt_secs),
        ("python read+json+encode_batch", read_secs + encode_secs),
        ("python encode_batch only", encode_secs),
    ]
    for name, secs in rows:
        print(f"{name:<42} {secs:7.2f} s  {mb / secs:7.2f} MB/s  {len(texts) / secs:9.0f} docs/s")
    print(f"ratio cpt / python end-to-end: {(read_secs + encode_secs) / cpt_secs:.2f}x; "
          f"cpt / encode_batch only: {encode_secs / cpt_secs:.2f}x")
    if not identical:
        sys.exit("token ids differ between cpt and Python")


if __name__ == "__main__":
    main()
