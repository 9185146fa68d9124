#!/usr/bin/env python3
"""Step time, tokens/s and peak memory of a `cpt train` run from its metrics.jsonl, over the
steps after the first WARMUP (the benchmarks' cpt side).

usage: cpt_step_stats.py METRICS.jsonl WARMUP     prints one JSON line
"""
import json
import statistics
import sys

recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
steps = [r for r in recs if "kind" not in r]
w = int(sys.argv[2])
a, b = steps[w - 1], steps[-1]
n = b["step"] - a["step"]
dt = b["elapsed_s"] - a["elapsed_s"]
per = [s["elapsed_s"] - p["elapsed_s"] for p, s in zip(steps[w - 1:], steps[w:])]
peaks = [s["peak_mem_bytes"] for s in steps if s.get("peak_mem_bytes") is not None]
print(json.dumps({"step_s_mean": dt / n, "step_s_median": statistics.median(per),
                  "tokens_per_s": (b["tokens"] - a["tokens"]) / dt, "timed_steps": n,
                  "first_loss": steps[0]["loss"], "last_loss": b["loss"],
                  "peak_mem_bytes": max(peaks) if peaks else None}))
