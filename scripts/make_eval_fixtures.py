#!/usr/bin/env python3
"""Makes the fixtures of `cpt eval`'s tests (tests/fixtures/eval/):

- tiny benchmark folders in the MMLU, C-Eval and CMMLU release layouts, with made-up
  questions that exercise the parsing traps (quoted commas and newlines, numeric option
  columns pandas retypes, "None" options pandas reads as NaN, padded questions);
- prompts.json: the reference prompts, rebuilt here the way the official scripts do it
  (pandas.read_csv + their format_example/gen_prompt logic, shot dropping with a real
  tokenizer) and the way lm-evaluation-harness does it (its YAML jinja templates,
  description + shots + question);
- a tiny byte-level BPE tokenizer and a tiny random LlamaForCausalLM (transformers);
- loglik.json: transformers log-likelihoods of multiple-choice requests and rolling
  perplexity windows, built with lm-evaluation-harness' encode-pair and window rules.

Run from the repository root:  python3 scripts/make_eval_fixtures.py
Needs: torch, transformers, tokenizers, pandas, jinja2.
"""
import csv
import io
import json
import math
import os
import random
import re

import jinja2
import pandas as pd
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "eval")
LETTERS = ["A", "B", "C", "D"]

# ---------------------------------------------------------------- benchmark files

def mmlu_rows(subject, n, seed):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        q = f"In {subject.replace('_', ' ')}, what is {a} + {b}?"
        opts = [str(a + b), str(a + b + 1), str(a * b), str(abs(a - b))]
        if i == 1:
            q = "Which statement is true, given \"x, y\"?\nConsider both."  # quotes, comma, newline
            opts = ["x, then y", "None", "both \"x\" and y", "neither"]
        if i == 2:
            q = "  A padded question with trailing spaces.  "
        rows.append([q] + opts + [LETTERS[rng.randrange(4)]])
    return rows


def numeric_rows(n, seed):
    # Every option column is numeric, and column B has a decimal: pandas makes it float.
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        x = rng.randint(1, 9)
        rows.append([f"Solve {x} * 2 =", str(2 * x), "2.50" if i == 0 else str(x), "007", str(x + 3), LETTERS[i % 4]])
    return rows


def zh_rows(topic, n, seed):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        q = f"关于{topic}，{a}加{b}等于多少？"
        opts = [f"{a + b}个", f"{a + b + 2}个", f"{a * b}个", "以上都不对"]
        if i == 1:
            q = "下列说法中，正确的是\n（多行题干，含\"引号\"）"
        rows.append([q] + opts + [LETTERS[rng.randrange(4)]])
    return rows


def write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        if header is not None:
            w.writerow(header)
        for r in rows:
            w.writerow(r)


def make_benchmarks():
    mmlu = os.path.join(ROOT, "mmlu")
    for s, seed in [("abstract_algebra", 1), ("high_school_physics", 2)]:
        write_csv(f"{mmlu}/dev/{s}_dev.csv", None, mmlu_rows(s, 5, seed))
        write_csv(f"{mmlu}/test/{s}_test.csv", None, mmlu_rows(s, 4, seed + 10))
    write_csv(f"{mmlu}/dev/elementary_mathematics_dev.csv", None, numeric_rows(5, 3))
    write_csv(f"{mmlu}/test/elementary_mathematics_test.csv", None, numeric_rows(3, 4))

    ceval = os.path.join(ROOT, "ceval")
    for s, seed in [("computer_network", 5), ("law", 6)]:
        dev = zh_rows(s, 5, seed)
        write_csv(f"{ceval}/dev/{s}_dev.csv", ["id", "question", "A", "B", "C", "D", "answer", "explanation"],
                  [[i] + r + [f"解析{i}"] for i, r in enumerate(dev)])
        val = zh_rows(s, 3, seed + 10)
        write_csv(f"{ceval}/val/{s}_val.csv", ["id", "question", "A", "B", "C", "D", "answer"],
                  [[i] + r for i, r in enumerate(val)])
        test = zh_rows(s, 2, seed + 20)
        write_csv(f"{ceval}/test/{s}_test.csv", ["id", "question", "A", "B", "C", "D", "answer"],
                  [[i] + r[:-1] + [""] for i, r in enumerate(test)])

    cmmlu = os.path.join(ROOT, "cmmlu", "data")
    for s, topic, seed in [("agronomy", "农学", 7), ("chinese_history", "历史", 8)]:
        write_csv(f"{cmmlu}/dev/{s}.csv", ["", "Question", "A", "B", "C", "D", "Answer"],
                  [[i] + r for i, r in enumerate(zh_rows(topic, 5, seed))])
        write_csv(f"{cmmlu}/test/{s}.csv", ["", "Question", "A", "B", "C", "D", "Answer"],
                  [[i] + r for i, r in enumerate(zh_rows(topic, 4, seed + 10))])

def make_jsonl_benchmarks():
    arc = os.path.join(ROOT, "arc")
    os.makedirs(arc, exist_ok=True)
    ai2 = [  # AI2's release form
        {"id": "Q1", "question": {"stem": "Which gas do plants take in?", "choices": [
            {"text": "oxygen", "label": "A"}, {"text": "carbon dioxide", "label": "B"},
            {"text": "helium", "label": "C"}, {"text": "neon", "label": "D"}]}, "answerKey": "B"},
        {"id": "Q2", "question": {"stem": "What melts ice fastest?", "choices": [
            {"text": "salt", "label": "1"}, {"text": "sand", "label": "2"}, {"text": "a cold room", "label": "3"}]},
         "answerKey": "1"},
        {"id": "Q3", "question": {"stem": "Pick the mammal.", "choices": [
            {"text": "shark", "label": "A"}, {"text": "whale", "label": "B"}, {"text": "trout", "label": "C"},
            {"text": "eel", "label": "D"}, {"text": "squid", "label": "E"}]}, "answerKey": "B"},
    ]
    with open(os.path.join(arc, "ARC-Easy-Test.jsonl"), "w", encoding="utf-8") as f:
        for r in ai2:
            f.write(json.dumps(r) + "\n")
    hf = [{"id": "H1", "question": "Water boils at sea level at about", "choices": {"text": ["50 C", "100 C", "150 C", "0 C"], "label": ["A", "B", "C", "D"]}, "answerKey": "B"}]
    with open(os.path.join(arc, "ARC-Challenge-Test.jsonl"), "w", encoding="utf-8") as f:
        for r in hf:
            f.write(json.dumps(r) + "\n")
    hs = os.path.join(ROOT, "hellaswag")
    os.makedirs(hs, exist_ok=True)
    rows = [
        {"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles.",
         "ctx_b": "then", "endings": [", the man adds wax to the windshield and cuts it.", ", a person board a ski lift, while two men supporting the head of the person wearing winter clothes snow as the we girls sled.",
                                      ", the man puts on a christmas coat, knitted with netting.", ", the man continues removing the snow on his car."], "label": 3},
        {"ind": 9, "activity_label": "Home and Garden", "ctx_a": "[header] How to plant tulips [title] Choose a  sunny spot.",
         "ctx_b": "Dig A HOLE", "endings": ["[step] Water it  well.", " Add compost [substeps] then plant. ", "Wait until [spring.", "Sing to it."], "label": "0"},
    ]
    with open(os.path.join(hs, "hellaswag_val.jsonl"), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def hellaswag_preprocess(text):
    # lm_eval/tasks/hellaswag/utils.py
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def jsonl_prompts():
    out = []
    for fn in sorted(os.listdir(os.path.join(ROOT, "arc"))):
        for i, line in enumerate(open(os.path.join(ROOT, "arc", fn), encoding="utf-8")):
            d = json.loads(line)
            q = d["question"]
            stem, texts = (q["stem"], [c["text"] for c in q["choices"]]) if isinstance(q, dict) else (q, d["choices"]["text"])
            out.append(dict(benchmark="arc", style="lm-eval", subject=fn[:-6], index=i, shots=0, max_len=None,
                            context=f"Question: {stem}\nAnswer:", continuations=[" " + t for t in texts], shots_used=0))
    for i, line in enumerate(open(os.path.join(ROOT, "hellaswag", "hellaswag_val.jsonl"), encoding="utf-8")):
        d = json.loads(line)
        ctx = d["ctx_a"] + " " + d["ctx_b"].capitalize()
        out.append(dict(benchmark="hellaswag", style="lm-eval", subject="hellaswag_val", index=i, shots=0, max_len=None,
                        context=hellaswag_preprocess(d["activity_label"] + ": " + ctx),
                        continuations=[" " + hellaswag_preprocess(e) for e in d["endings"]], shots_used=0))
    return out

# ---------------------------------------------------------------- official prompts
# Rebuilt from hendrycks/test evaluate_hf.py, hkust-nlp/ceval evaluators and
# haonan-li/CMMLU mp_utils.py: same pandas reads, same string assembly.

CEVAL_ZH = {"computer_network": "计算机网络", "law": "法学"}
CMMLU_ZH = {"agronomy": "农学", "chinese_history": "中国历史"}


def official_mmlu(dev_df, test_df, subject, i, k, tok=None, max_len=None):
    def example(df, idx, answer):
        s = df.iloc[idx, 0]
        for j in range(df.shape[1] - 2):
            s += "\n{}. {}".format(LETTERS[j], df.iloc[idx, j + 1])
        s += "\nAnswer:"
        if answer:
            s += " {}\n\n".format(df.iloc[idx, df.shape[1] - 1])
        return s

    def head(k):
        words = "".join(" " + w for w in subject.split("_"))
        p = "The following are multiple choice questions (with answers) about {}.\n\n".format(words)
        for j in range(k):
            p += example(dev_df, j, True)
        return p

    end = example(test_df, i, False)
    prompt = head(k) + end
    if tok is not None:
        while len(tok(prompt).input_ids) > max_len:
            k -= 1
            prompt = head(k) + end
    return prompt, k


def official_ceval(dev_df, row, subject, k):
    def example(line, answer):
        s = line["question"]
        for c in LETTERS:
            s += f'\n{c}. {line[f"{c}"]}'
        return s + ("\n答案：" + line["answer"] + "\n\n" if answer else "\n答案：")

    p = f"以下是中国关于{CEVAL_ZH[subject]}考试的单项选择题，请选出其中的正确答案。\n\n"
    for j in range(k):
        p += example(dev_df.iloc[j, :], True)
    return p + example(row, False), k


def official_cmmlu(dev_df, test_df, subject, i, k, tok=None, max_len=None):
    def example(df, idx, answer):
        s = "题目：" + df.iloc[idx, 0]
        for j in range(df.shape[1] - 2):
            s += "\n{}. {}".format(LETTERS[j], df.iloc[idx, j + 1])
        s += "\n答案是："
        if answer:
            s += "{}\n\n".format(df.iloc[idx, df.shape[1] - 1])
        return s

    desc = "以下是关于{}的单项选择题，请直接给出正确答案的选项。\n\n".format(CMMLU_ZH[subject])
    end = example(test_df, i, False)
    if tok is None:
        return desc + "".join(example(dev_df, j, True) for j in range(k)) + end, k
    fixed = len(tok.encode(desc) + tok.encode(end))
    if fixed > max_len:
        return end, 0
    shots = [(example(dev_df, j, True), tok.encode(example(dev_df, j, True))) for j in range(k)]
    while shots and sum(len(s[1]) for s in shots) >= max_len - fixed:
        longest = max(len(s[1]) for s in shots)
        shots = [s for s in shots if len(s[1]) != longest]
    return desc + "".join(s[0] for s in shots) + end, len(shots)

# ---------------------------------------------------------------- lm-evaluation-harness prompts
# doc_to_text templates and descriptions from lm_eval/tasks/{mmlu/default,ceval,cmmlu}.

LM_EVAL = {
    "mmlu": ("{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
             "The following are multiple choice questions (with answers) about {}.\n\n"),
    "ceval": ("{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n答案：",
              "以下是中国关于{}考试的单项选择题，请选出其中的正确答案。\n\n"),
    "cmmlu": ("{{Question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n答案：",
              "以下是关于{}的单项选择题，请直接给出正确答案的选项。\n\n"),
}


def raw_rows(path, header):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return rows[1:] if header else rows


def lm_eval_doc(bench, row):
    if bench == "mmlu":
        return {"question": row[0], "choices": row[1:5], "answer": LETTERS.index(row[5])}
    if bench == "ceval":
        return {"question": row[1], "A": row[2], "B": row[3], "C": row[4], "D": row[5], "answer": row[6]}
    return {"Question": row[1], "A": row[2], "B": row[3], "C": row[4], "D": row[5], "Answer": row[6]}


def lm_eval_context(bench, subject_name, dev_docs, doc, k):
    env = jinja2.Environment()
    tpl = env.from_string(LM_EVAL[bench][0])
    desc = LM_EVAL[bench][1].format(subject_name)
    shots = ""
    for d in dev_docs[:k]:
        gold = d["answer"] if bench == "mmlu" else LETTERS.index(d.get("answer", d.get("Answer")))
        shots += tpl.render(**d) + " " + LETTERS[gold] + "\n\n"
    return desc + shots + tpl.render(**doc)

# ---------------------------------------------------------------- prompts.json

def make_prompts(tok, max_len):
    out = []
    mm = os.path.join(ROOT, "mmlu")
    for s in ["abstract_algebra", "elementary_mathematics", "high_school_physics"]:
        dev = pd.read_csv(f"{mm}/dev/{s}_dev.csv", header=None)[:5]
        test = pd.read_csv(f"{mm}/test/{s}_test.csv", header=None)
        dev_raw = [lm_eval_doc("mmlu", r) for r in raw_rows(f"{mm}/dev/{s}_dev.csv", False)]
        test_raw = [lm_eval_doc("mmlu", r) for r in raw_rows(f"{mm}/test/{s}_test.csv", False)]
        for i in range(test.shape[0]):
            for k in [0, 2, 5]:
                p, _ = official_mmlu(dev, test, s, i, k)
                out.append(dict(benchmark="mmlu", style="official", subject=s, index=i, shots=k, max_len=None, context=p, shots_used=k))
                out.append(dict(benchmark="mmlu", style="lm-eval", subject=s, index=i, shots=k, max_len=None,
                                context=lm_eval_context("mmlu", s.replace("_", " "), dev_raw, test_raw[i], k), shots_used=k))
            p, used = official_mmlu(dev, test, s, i, 5, tok, max_len)
            out.append(dict(benchmark="mmlu", style="official", subject=s, index=i, shots=5, max_len=max_len, context=p, shots_used=used))
    ce = os.path.join(ROOT, "ceval")
    for s in ["computer_network", "law"]:
        dev = pd.read_csv(f"{ce}/dev/{s}_dev.csv")
        val = pd.read_csv(f"{ce}/val/{s}_val.csv")
        dev_raw = [lm_eval_doc("ceval", r) for r in raw_rows(f"{ce}/dev/{s}_dev.csv", True)]
        val_raw = [lm_eval_doc("ceval", r) for r in raw_rows(f"{ce}/val/{s}_val.csv", True)]
        for i, (_, row) in enumerate(val.iterrows()):
            for k in [0, 5]:
                p, _ = official_ceval(dev, row, s, k)
                out.append(dict(benchmark="ceval", style="official", subject=s, index=i, shots=k, max_len=None, context=p, shots_used=k))
                out.append(dict(benchmark="ceval", style="lm-eval", subject=s, index=i, shots=k, max_len=None,
                                context=lm_eval_context("ceval", CEVAL_ZH[s], dev_raw, val_raw[i], k), shots_used=k))
    cm = os.path.join(ROOT, "cmmlu", "data")
    for s in ["agronomy", "chinese_history"]:
        dev = pd.read_csv(f"{cm}/dev/{s}.csv", header=0, index_col=0)
        test = pd.read_csv(f"{cm}/test/{s}.csv", header=0, index_col=0)
        dev_raw = [lm_eval_doc("cmmlu", r) for r in raw_rows(f"{cm}/dev/{s}.csv", True)]
        test_raw = [lm_eval_doc("cmmlu", r) for r in raw_rows(f"{cm}/test/{s}.csv", True)]
        for i in range(test.shape[0]):
            for k in [0, 5]:
                p, _ = official_cmmlu(dev, test, s, i, k)
                out.append(dict(benchmark="cmmlu", style="official", subject=s, index=i, shots=k, max_len=None, context=p, shots_used=k))
                out.append(dict(benchmark="cmmlu", style="lm-eval", subject=s, index=i, shots=k, max_len=None,
                                context=lm_eval_context("cmmlu", CMMLU_ZH[s], dev_raw, test_raw[i], k), shots_used=k))
            p, used = official_cmmlu(dev, test, s, i, 5, tok, max_len)
            out.append(dict(benchmark="cmmlu", style="official", subject=s, index=i, shots=5, max_len=max_len, context=p, shots_used=used))
    return out

# ---------------------------------------------------------------- tokenizer and model

def make_tokenizer(texts, path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t.train_from_iterator(texts, trainer)
    bos = t.token_to_id("<s>")
    t.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    os.makedirs(path, exist_ok=True)
    t.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                   "model_max_length": 512}, f, indent=1)
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast.from_pretrained(path)


def make_model(path, vocab, bos, eos, max_len):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_len,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                      bos_token_id=bos, eos_token_id=eos, torch_dtype="float32")
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger weights than the default init, so choices differ clearly
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    model.save_pretrained(path, safe_serialization=True)
    return model.eval()

# ---------------------------------------------------------------- log-likelihoods

def encode_pair(tok, context, continuation, add_special):
    n = len(context) - len(context.rstrip())
    if n:
        continuation = context[-n:] + continuation
        context = context[:-n]
    whole = tok(context + continuation, add_special_tokens=add_special).input_ids
    ctx = tok(context, add_special_tokens=add_special).input_ids
    return ctx, whole[len(ctx):]


@torch.no_grad()
def score(model, ctx, cont, max_len):
    inp = (ctx + cont)[-(max_len + 1):][:-1]
    logits = model(torch.tensor([inp])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    start = len(inp) - len(cont)
    lps = [logp[start + j, t].item() for j, t in enumerate(cont)]
    greedy = all(int(logp[start + j].argmax()) == t for j, t in enumerate(cont))
    return sum(lps), greedy


def rolling(tokens, prefix, max_len):
    out = []
    first = min(max_len, len(tokens))
    out.append(([prefix], tokens[:first]))
    pred = first
    while pred < len(tokens):
        n = min(len(tokens) - pred, max_len)
        end = pred + n
        a, b = tokens[end - max_len - 1:end - 1], tokens[end - n:end]
        out.append((a[:len(a) - (len(b) - 1)], b))
        pred = end
    return out


def main():
    make_benchmarks()
    make_jsonl_benchmarks()
    texts = []
    for dirpath, _, files in os.walk(ROOT):
        for fn in files:
            if fn.endswith(".csv"):
                with open(os.path.join(dirpath, fn), encoding="utf-8") as f:
                    texts.append(f.read())
    texts += ["The quick brown fox jumps over the lazy dog.", "以下是关于农学的单项选择题，请直接给出正确答案的选项。"]
    model_dir = os.path.join(ROOT, "tiny-llama")
    max_len = 512
    tok = make_tokenizer(texts, model_dir)
    model = make_model(model_dir, len(tok), tok.bos_token_id, tok.eos_token_id, max_len)

    prompt_max_len = 300
    prompts = make_prompts(tok, prompt_max_len) + jsonl_prompts()
    with open(os.path.join(ROOT, "prompts.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_max_len": prompt_max_len, "prompts": prompts}, f, ensure_ascii=False, indent=0)

    # Multiple-choice requests from a sample of the prompts, both styles' continuations.
    requests = []
    for p in [p for p in prompts if p["benchmark"] in ("arc", "hellaswag")]:
        for cont in p["continuations"]:  # multi-token continuations, no BOS (lm-eval)
            ctx_ids, cont_ids = encode_pair(tok, p["context"], cont, False)
            ll, greedy = score(model, ctx_ids, cont_ids, max_len)
            requests.append(dict(context=p["context"], continuation=cont, add_special=False,
                                 context_ids=ctx_ids, continuation_ids=cont_ids, loglik=ll, greedy=greedy))
    for p in prompts[::7]:
        if p["max_len"] is not None or p["benchmark"] in ("arc", "hellaswag"):
            continue
        official_no_space = p["style"] == "official" and p["benchmark"] != "mmlu"
        add_special = p["style"] == "official"
        for letter in LETTERS:
            cont = letter if official_no_space else " " + letter
            ctx_ids, cont_ids = encode_pair(tok, p["context"], cont, add_special)
            ll, greedy = score(model, ctx_ids, cont_ids, max_len)
            requests.append(dict(context=p["context"], continuation=cont, add_special=add_special,
                                 context_ids=ctx_ids, continuation_ids=cont_ids, loglik=ll, greedy=greedy))
    # Truncation: a small max_len so contexts are cut on the left.
    trunc = []
    for r in requests[:8]:
        ll, greedy = score(model, r["context_ids"], r["continuation_ids"], 24)
        trunc.append(dict(index=requests.index(r), max_len=24, loglik=ll, greedy=greedy))
    # Rolling perplexity over documents longer than the window.
    docs = ["The quick brown fox jumps over the lazy dog. " * 3,
            "以下是关于农学的单项选择题，请直接给出正确答案的选项。肉牛屠宰后，胴体的哪个部位肉质较好？",
            "short"]
    ppl = []
    for window in [16, 64]:
        for d in docs:
            ids = tok(d, add_special_tokens=False).input_ids
            total = 0.0
            windows = rolling(ids, tok.bos_token_id, window)
            for c, t in windows:
                total += score(model, c, t, window)[0]
            ppl.append(dict(text=d, max_len=window, token_ids=ids, windows=[[c, t] for c, t in windows], loglik=total))
    with open(os.path.join(ROOT, "loglik.json"), "w", encoding="utf-8") as f:
        json.dump({"model_max_len": max_len, "requests": requests, "truncated": trunc, "rolling": ppl},
                  f, ensure_ascii=False, indent=0)
    print(f"{len(prompts)} prompts, {len(requests)} requests, {len(ppl)} rolling documents")


if __name__ == "__main__":
    main()
