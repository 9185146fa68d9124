#!/usr/bin/env bash
# Are two `cpt` binaries the same trainer? Runs `cpt train` with each binary on one config,
# one after the other in the same scratch paths (so paths recorded in the outputs agree), and
# compares what the runs wrote, file by file.
#
# usage: scripts/compare_runs.sh BIN_A BIN_B CONFIG [--fresh-model] [--set key=value ...]
#   --fresh-model   point model.path into the scratch directory and delete it before each
#                   run, so each binary creates the base model itself (`model.init`) and the
#                   model files are compared too
#   --set ...       passed to both runs (e.g. --set kernels.mode=fused)
# env:  WORK=dir (scratch directory, default: a new temporary one, kept at the end); the
#       environment reaches both runs (e.g. CPT_INJECT_NAN_AT_STEPS=5,6 to exercise the guard)
#
# Run it from the repository root (the config's relative paths resolve from there). For each
# file of the run directories it prints one line:
#   identical                  byte for byte (cmp)
#   identical except timing    JSON / JSONL equal once the wall-clock fields are removed
#                              (elapsed_s, tokens_per_s, mfu, peak_mem_bytes, and a data
#                              shard's preparation `seconds`)
#   skipped                    TensorBoard events (wall-clock times, also in their names)
#   DIFFERENT / only in A|B
# and exits 1 when any file is DIFFERENT or missing on one side.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
BIN_A=$(realpath "$1")
BIN_B=$(realpath "$2")
CONFIG=$3
shift 3
FRESH_MODEL=
SETS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --fresh-model) FRESH_MODEL=1; shift ;;
        --set) SETS+=(--set "$2"); shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
RUN="$WORK/run"
MODEL="$WORK/model"
EXTRA=(--set "run.out_dir=$RUN")
[[ -n "$FRESH_MODEL" ]] && EXTRA+=(--set "model.path=$MODEL")

for side in a b; do
    bin=$BIN_A
    [[ $side == b ]] && bin=$BIN_B
    rm -rf "$RUN" "$MODEL" "${WORK:?}/$side"
    mkdir -p "$WORK/$side"
    start=$(date +%s)
    if ! "$bin" train --config "$CONFIG" "${EXTRA[@]}" "${SETS[@]}" >"$WORK/$side.log" 2>&1; then
        echo "run $side ($bin) failed; its output: $WORK/$side.log" >&2
        tail -5 "$WORK/$side.log" >&2
        exit 1
    fi
    echo "run $side: $bin ($(($(date +%s) - start)) s)"
    mv "$RUN" "$WORK/$side/run"
    [[ -n "$FRESH_MODEL" ]] && mv "$MODEL" "$WORK/$side/model"
done

python3 - "$WORK/a" "$WORK/b" <<'EOF'
import json, os, sys, filecmp

# Wall-clock fields: run time, throughput, utilisation, memory, and a shard's preparation time.
TIMING = {"elapsed_s", "tokens_per_s", "mfu", "peak_mem_bytes", "seconds"}

def files(root):
    out = set()
    for d, _, names in os.walk(root):
        for n in names:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out

def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in TIMING}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v

def same_without_timing(pa, pb):
    with open(pa) as fa, open(pb) as fb:
        ta, tb = fa.read(), fb.read()
    try:
        if pa.endswith(".jsonl"):
            la, lb = ta.splitlines(), tb.splitlines()
            return len(la) == len(lb) and all(strip(json.loads(x)) == strip(json.loads(y)) for x, y in zip(la, lb))
        return strip(json.loads(ta)) == strip(json.loads(tb))
    except ValueError:
        return False

a, b = sys.argv[1], sys.argv[2]
fa, fb = files(a), files(b)
bad = 0
counts = {}
for rel in sorted(fa | fb):
    if "/tb/" in "/" + rel:
        verdict = "skipped (TensorBoard)"
    elif rel not in fb or rel not in fa:
        verdict = "only in A" if rel in fa else "only in B"
    elif filecmp.cmp(os.path.join(a, rel), os.path.join(b, rel), shallow=False):
        verdict = "identical"
    elif rel.endswith((".json", ".jsonl")) and same_without_timing(os.path.join(a, rel), os.path.join(b, rel)):
        verdict = "identical except timing"
    else:
        verdict = "DIFFERENT"
    bad += verdict == "DIFFERENT" or verdict.startswith("only")
    key = verdict.split(" (")[0]
    counts[key] = counts.get(key, 0) + 1
    print(f"{verdict:<28} {rel}")
print("summary: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
sys.exit(1 if bad else 0)
EOF
