#!/usr/bin/env python3
"""Labelled data for `cpt topics train` from the CMMLU release: every question (with its
four options) becomes a document whose topic is its subject's group.

Llama-3-SynE labels web text with 11 Chinese topics derived from the CMMLU subject
groups. CMMLU's `subjects.json` puts each of its 67 subjects in one or more subcategories
(physics, law, ...); this script maps each subject to one of 11 topics, by its first
subcategory, with the mixed `other` / `culture` subjects assigned one by one. The topic
names match the sample corpus's (`corpus/sample`), plus `law` and `society`.

    python3 scripts/cmmlu_topics.py --cmmlu PATH/TO/cmmlu --out topics-data/cmmlu_topics.jsonl

PATH/TO/cmmlu is your copy of the CMMLU release: `subjects.json` and `data/{dev,test}/*.csv`
(columns: index, Question, A, B, C, D, Answer).
"""
import argparse
import csv
import json
import os
import sys

# CMMLU subcategory -> topic.
BY_SUBCATEGORY = {
    "physics": "science", "chemistry": "science", "biology": "science",
    "computer science": "technology", "engineering": "technology",
    "math": "math", "statistics": "math",
    "history": "history", "geography": "geography", "global": "geography",
    "literature": "literature", "arts": "literature", "linguistics": "literature",
    "economics": "economy", "business": "economy",
    "law": "law", "politics": "law",
    "philosophy": "society", "psychology": "society", "education": "society",
    "sociology": "society", "culture": "society",
}
# Subjects whose subcategory is too broad (`other`) or that fit another topic better.
BY_SUBJECT = {
    "agronomy": "science",
    "food_science": "daily_life",
    "chinese_food_culture": "daily_life",
    "chinese_driving_rule": "daily_life",
    "elementary_commonsense": "daily_life",
    "clinical_knowledge": "health",
    "college_medicine": "health",
    "professional_medicine": "health",
    "traditional_chinese_medicine": "health",
    "nutrition": "health",
    "human_sexuality": "health",
    "sports_science": "health",
    "anatomy": "health",
    "virology": "health",
    "college_medical_statistics": "health",
    "computer_security": "technology",
    "elementary_information_and_technology": "technology",
    "construction_project_management": "technology",
    "legal_and_moral_basis": "law",
    "world_religions": "society",
}
TOPICS = sorted(set(BY_SUBCATEGORY.values()) | set(BY_SUBJECT.values()))


def topic_of(subject, subcategories):
    if subject in BY_SUBJECT:
        return BY_SUBJECT[subject]
    for sub in subcategories:
        if sub in BY_SUBCATEGORY:
            return BY_SUBCATEGORY[sub]
    raise SystemExit(f"subject {subject!r} (subcategories {subcategories}) has no topic; add it to BY_SUBJECT")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cmmlu", required=True, help="the CMMLU release folder (subjects.json, data/dev, data/test)")
    ap.add_argument("--out", required=True, help="JSONL file to write")
    ap.add_argument("--splits", default="dev,test", help="which CMMLU splits to read")
    args = ap.parse_args()

    with open(os.path.join(args.cmmlu, "subjects.json"), encoding="utf-8") as f:
        subcategories = json.load(f)["subcategories"]
    rows = []
    counts = {}
    for split in args.splits.split(","):
        folder = os.path.join(args.cmmlu, "data", split)
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".csv"):
                continue
            subject = name[: -len(".csv")]
            topic = topic_of(subject, subcategories.get(subject, []))
            with open(os.path.join(folder, name), encoding="utf-8", newline="") as f:
                for i, rec in enumerate(csv.DictReader(f)):
                    text = " ".join([rec["Question"].strip()] + [rec[k].strip() for k in "ABCD"])
                    rows.append({"id": f"cmmlu-{split}-{subject}-{i:04d}", "subject": subject, "topic": topic, "text": text})
                    counts[topic] = counts.get(topic, 0) + 1
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, args.out)
    print(f"{len(rows)} questions, {len(counts)} topics -> {args.out}", file=sys.stderr)
    for t in TOPICS:
        print(f"  {t:11s} {counts.get(t, 0):6d}", file=sys.stderr)


if __name__ == "__main__":
    main()
