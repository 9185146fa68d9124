#!/usr/bin/env bash
# CPU data-parallel benchmark: `cpt train` on small-10m at 1 rank and at 2 ranks (mpiexec,
# ZeRO-0, 1 and 3), next to PyTorch on the same model, shard and batch in one process and
# as DistributedDataParallel over gloo (torchrun, 2 ranks), in one run. Every rank uses one
# thread, so 2 ranks use the machine's 2 cores. Also: bytes each rank sends per step
# against the theory, and the memory planner's prediction against each rank's measured
# peak resident set.
#
# usage: scripts/bench_dist_cpu.sh        (needs target/release/cpt built with --features mpi)
# env:   CPT=path/to/cpt  PYTHON=python3  STEPS=12 WARMUP=3 MB=4 SEQ=256 KEEP=1
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_config.sh

PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-12}
WARMUP=${WARMUP:-3}
MB=${MB:-4}
SEQ=${SEQ:-256}
CPT=${CPT:-${CARGO_TARGET_DIR:-target}/release/cpt}
[[ -x "$CPT" ]] || { echo "build first: cargo build --release --features mpi" >&2; exit 1; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d)
[[ -n "${KEEP:-}" ]] || trap 'rm -rf "$WORK"' EXIT
echo "work directory: $WORK" >&2

"$CPT" init --preset small-10m --out "$WORK/model" --train-tokenizer corpus/sample/plain/*.txt --vocab-size 8192 >&2

write_config() { # name zero recompute
    bench_config "$WORK/$1.yaml" "$WORK/run-$1" "$WORK/model" 1 "$MB" "$SEQ" 2 "$STEPS" "kernels: {recompute: $3}
parallel: {zero: $2}"
}

ROWS=()
cpt_row() { # name ranks zero recompute
    write_config "$1" "$3" "$4"
    echo "== cpt $1: $2 rank(s), ZeRO-$3, recompute $4" >&2
    if [[ $2 == 1 ]]; then
        RAYON_NUM_THREADS=1 "$CPT" train --config "$WORK/$1.yaml" --no-progress >&2
    else
        mpiexec -n "$2" env RAYON_NUM_THREADS=1 "$CPT" train --config "$WORK/$1.yaml" --no-progress >&2
    fi
    local plan
    plan=$("$CPT" plan --config "$WORK/$1.yaml" --devices "$2" --device-memory 24GiB --json)
    ROWS+=("cpt|$1|$2|$3|$4|$WORK/run-$1/metrics.jsonl|$(echo "$plan" | tr -d '\n')")
}

cpt_row one 1 0 false
cpt_row one-rc 1 0 true
cpt_row zero0 2 0 false
cpt_row zero1 2 1 false
cpt_row zero3 2 3 true

torch_row() { # ranks
    echo "== PyTorch: $1 rank(s)" >&2
    local out
    if [[ $1 == 1 ]]; then
        out=$(OMP_NUM_THREADS=1 "$PYTHON" scripts/bench_dist_torch.py --model "$WORK/model" --shard "$WORK/data-cache/sample" \
            --micro-batch "$MB" --seq-len "$SEQ" --grad-accum 2 --steps "$STEPS" --warmup "$WARMUP" --threads 1)
    else
        out=$(OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node "$1" scripts/bench_dist_torch.py --model "$WORK/model" \
            --shard "$WORK/data-cache/sample" --micro-batch "$MB" --seq-len "$SEQ" --grad-accum 2 --steps "$STEPS" \
            --warmup "$WARMUP" --threads 1 | grep '^{')
    fi
    echo "$out" >&2
    ROWS+=("torch|ddp|$1|0|false|$out|")
}
torch_row 1
torch_row 2

echo
echo "load average (1/5/15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
"$PYTHON" - "$WORK/model/model.safetensors" "$WARMUP" "${ROWS[@]}" <<'PY'
import json, struct, sys, statistics

def shapes(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {k: v["shape"] for k, v in header.items()}

def numel(s):
    out = 1
    for d in s:
        out *= d
    return out

params = shapes(sys.argv[1])
n_all = sum(numel(s) for s in params.values())
n_layers = sum(numel(s) for k, s in params.items() if k.startswith("model.layers."))
n_rest = n_all - n_layers
warmup = int(sys.argv[2])

def theory(zero, w, accum_local, c=4):
    """Bytes one rank sends per step by the ring algorithms, f32 gradients, weights in f32."""
    share = (w - 1) / w
    if w == 1:
        return 0.0
    if zero == 0:
        return 2 * share * 4 * n_all
    if zero == 1:
        return share * 4 * n_all + share * c * n_all
    # ZeRO-3: the rest as ZeRO-1; each layer gathered twice and reduced once per micro-batch.
    return share * (4 + c) * n_rest + accum_local * share * (2 * c + 4) * n_layers

def cpt_stats(path):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    steps = [r for r in recs if "kind" not in r]
    a, b = steps[warmup - 1], steps[-1]
    dt = b["elapsed_s"] - a["elapsed_s"]
    tokens = (b["tokens"] - a["tokens"]) / dt
    timed = steps[warmup:]
    comm_b = [r["ranks"]["comm_bytes_per_step"][0] for r in timed if "ranks" in r]
    comm_s = [r["ranks"]["comm_s_per_step"][0] for r in timed if "ranks" in r]
    if steps[0].get("ranks"):
        ranks = len(steps[0]["ranks"]["peak_mem_bytes"])
        peaks = [max(r["ranks"]["peak_mem_bytes"][k] or 0 for r in steps) for k in range(ranks)]
    else:
        peaks = [max(r.get("peak_mem_bytes") or 0 for r in steps)]
    return tokens, (statistics.median(comm_b) if comm_b else 0.0), (statistics.median(comm_s) if comm_s else 0.0), peaks

MiB = 1 << 20
base = {}
print(f"small-10m: {n_all / 1e6:.2f}M parameters ({n_layers / 1e6:.2f}M in decoder layers); 2 micro-batches per step over all ranks\n")
print("| run | ranks | ZeRO | recompute | tokens/s (job) | tokens/s per rank | per rank vs 1 rank | sent MB/step (measured) | sent MB/step (theory) | comm s/step | peak MiB per rank (measured) | planner MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for row in sys.argv[3:]:
    impl, name, w, zero, rc, data, plan = row.split("|", 6)
    w, zero = int(w), int(zero)
    if impl == "torch":
        t = json.loads(data)
        per = t["tokens_per_s"] / w
        ref = base.get(("torch", rc))
        if w == 1:
            base[("torch", rc)] = per
        ratio = f"{per / ref:.2f}" if ref and w > 1 else "-"
        theory_mb = t["allreduce_bytes_per_step_theory"] / 1e6
        print(f"| PyTorch {'DDP (gloo)' if w > 1 else 'eager'} | {w} | - | no | {t['tokens_per_s']:.0f} | {per:.0f} | {ratio} | - | {theory_mb:.1f} | - | - | - |")
        continue
    tokens, comm_b, comm_s, peaks = cpt_stats(data)
    per = tokens / w
    if w == 1:
        base[("cpt", rc)] = per
    ref = base.get(("cpt", rc))
    ratio = f"{per / ref:.2f}" if ref and w > 1 else "-"
    plans = json.loads(plan)
    predicted = next(p["total"] for p in plans if p["zero"] == zero and p["recompute"] == (rc == "true"))
    peak_txt = " / ".join(f"{p / MiB:.0f}" for p in peaks)
    print(f"| cpt {name} | {w} | {zero} | {'yes' if rc == 'true' else 'no'} | {tokens:.0f} | {per:.0f} | {ratio} | "
          f"{comm_b / 1e6:.1f} | {theory(zero, w, 2 // w) / 1e6:.1f} | {comm_s:.3f} | {peak_txt} | {predicted / MiB:.0f} |")
PY
