#!/usr/bin/env python3
"""Side-by-side: `cpt eval` against transformers on the same model and CMMLU questions.

Both sides build the official CMMLU prompts (5-shot, shots dropped to fit the context as
CMMLU's `gen_prompt` does), score the four letters by continuation log-likelihood
(context and continuation tokenized together), and predict the most likely letter.
transformers runs one forward per question, as the official script does. Prints the
agreement of predictions, the largest log-likelihood difference and both speeds.

    python3 scripts/bench_eval_hf.py --make-model /tmp/bench-model   # random Llama, fixture tokenizer
    python3 scripts/bench_eval_hf.py --model /tmp/bench-model --cmmlu ../shared/benchmarks/cmmlu \
        --subjects 4 --limit 10

Needs torch, transformers, pandas; `cargo build --release` first.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pandas as pd
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_eval_fixtures import encode_pair, official_cmmlu  # noqa: E402

LETTERS = ["A", "B", "C", "D"]


def make_model(path, hidden, layers, max_len):
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    src = os.path.join(HERE, "..", "tests", "fixtures", "eval", "tiny-llama")
    os.makedirs(path, exist_ok=True)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(src, f), path)
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=int(hidden * 8 / 3) // 64 * 64,
                      num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 128),
                      max_position_embeddings=max_len, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
    n = sum(p.numel() for p in LlamaForCausalLM(cfg).parameters())
    print(f"wrote a random Llama ({n / 1e6:.1f}M parameters, {layers} layers, hidden {hidden}) to {path}")


def cmmlu_root(d):
    return os.path.join(d, "data") if os.path.isdir(os.path.join(d, "data", "test")) else d


@torch.no_grad()
def run_hf(model_dir, cmmlu, subjects, limit, shots, max_len):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    import make_eval_fixtures as mef
    names = json.load(open(os.path.join(cmmlu, "subjects.json"), encoding="utf-8"))["name_en2zh"] \
        if os.path.exists(os.path.join(cmmlu, "subjects.json")) else {}
    mef.CMMLU_ZH.update(names)
    root = cmmlu_root(cmmlu)
    out = {}
    start = time.perf_counter()
    n = 0
    for s in subjects:
        dev = pd.read_csv(os.path.join(root, "dev", s + ".csv"), header=0, index_col=0)
        test = pd.read_csv(os.path.join(root, "test", s + ".csv"), header=0, index_col=0)
        for i in range(min(limit, test.shape[0])):
            prompt, _ = official_cmmlu(dev, test, s, i, shots, tok, max_len)
            pairs = [encode_pair(tok, prompt, c, True) for c in LETTERS]
            ctx = pairs[0][0]
            if all(p[0] == ctx and len(p[1]) == 1 for p in pairs):
                # One forward per question: the official scripts' cost.
                logp = torch.log_softmax(model(torch.tensor([ctx])).logits[0, -1].double(), -1)
                ll = [logp[p[1][0]].item() for p in pairs]
            else:
                ll = []
                for c, t in pairs:
                    inp = (c + t)[-(max_len + 1):][:-1]
                    lp = torch.log_softmax(model(torch.tensor([inp])).logits[0].double(), -1)
                    st = len(inp) - len(t)
                    ll.append(sum(lp[st + j, x].item() for j, x in enumerate(t)))
            out[(s, i)] = ll
            n += 1
    return out, n, time.perf_counter() - start


def run_cpt(binary, model_dir, cmmlu, subjects, limit, shots, max_len, batch_tokens):
    tmp = tempfile.mkdtemp()
    cmd = [binary, "eval", "--model", model_dir, "--task", f"cmmlu={cmmlu}", "--subjects", ",".join(subjects),
           "--limit", str(limit), "--shots", str(shots), "--max-len", str(max_len),
           "--batch-tokens", str(batch_tokens), "--out", tmp]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    report = json.load(open(os.path.join(tmp, "report.json")))
    timing = [t for t in report["timing"] if t["task"] == "cmmlu"][0]
    out = {}
    per_subject = {}
    for line in open(os.path.join(tmp, "cmmlu-questions.jsonl"), encoding="utf-8"):
        r = json.loads(line)
        i = per_subject.get(r["subject"], 0)
        per_subject[r["subject"]] = i + 1
        out[(r["subject"], i)] = r["loglik"]
    shutil.rmtree(tmp)
    return out, timing["items"], timing["seconds"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-model")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--model")
    ap.add_argument("--cmmlu", default=os.path.join(HERE, "..", "..", "shared", "benchmarks", "cmmlu"))
    ap.add_argument("--subjects", type=int, default=4, help="first N subjects in name order")
    ap.add_argument("--limit", type=int, default=10, help="questions per subject")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpt", default=os.path.join(HERE, "..", "target", "release", "cpt"))
    a = ap.parse_args()
    if a.make_model:
        make_model(a.make_model, a.hidden, a.layers, a.max_len)
        return
    torch.set_num_threads(a.threads)
    subjects = sorted(f[:-4] for f in os.listdir(os.path.join(cmmlu_root(a.cmmlu), "test")) if f.endswith(".csv"))[:a.subjects]
    hf, n_hf, t_hf = run_hf(a.model, a.cmmlu, subjects, a.limit, a.shots, a.max_len)
    cp, n_cp, t_cp = run_cpt(a.cpt, a.model, a.cmmlu, subjects, a.limit, a.shots, a.max_len, a.batch_tokens)
    assert n_hf == n_cp, (n_hf, n_cp)
    # First maximum wins on both sides (numpy's argmax rule).
    agree = sum(hf[k].index(max(hf[k])) == cp[k].index(max(cp[k])) for k in hf)
    diff = max(abs(x - y) for k in hf for x, y in zip(hf[k], cp[k]))
    print(f"questions: {n_hf} ({len(subjects)} subjects x {a.limit}), {a.shots}-shot official CMMLU prompts, max_len {a.max_len}")
    print(f"predictions agree: {agree}/{n_hf}; max |loglik difference|: {diff:.2e}")
    print(f"transformers: {n_hf / t_hf:.2f} questions/s ({t_hf:.1f}s, {a.threads} threads)")
    print(f"cpt eval:     {n_cp / t_cp:.2f} questions/s ({t_cp:.1f}s)")
    print(f"ratio cpt/transformers: {(n_cp / t_cp) / (n_hf / t_hf):.2f}x")


if __name__ == "__main__":
    main()
