#!/usr/bin/env bash
# Forward+backward per token on CPU: cpt (benches/model_fwd_bwd.rs) beside PyTorch
# (scripts/bench_model_torch.py, eager and sdpa attention), same shapes and threads.
#   scripts/bench_model.sh [THREADS] [CASE ...]      e.g. scripts/bench_model.sh 2 tiny
# Set BENCH_BIN to a prebuilt bench binary to skip `cargo bench` (e.g. on another machine).
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"; shift || true
export RAYON_NUM_THREADS="$threads" CANDLE_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if [[ -n "${BENCH_BIN:-}" ]]; then
  "$BENCH_BIN" "$@" | tee -a "$log"
else
  cargo bench --bench model_fwd_bwd -- "$@" | tee -a "$log"
fi
for attn in eager sdpa; do
  python3 scripts/bench_model_torch.py --threads "$threads" --attn "$attn" "$@" | tee -a "$log"
done
python3 - "$log" <<'PY'
import json, sys
rows = [json.loads(l.split(" ", 1)[1]) for l in open(sys.argv[1]) if l.startswith("BENCH ")]
by = {(r["impl"], r["case"]): r for r in rows}
print("\ncase        threads  cpt us/tok  torch-eager  torch-sdpa  cpt/eager  cpt/sdpa")
for case in dict.fromkeys(r["case"] for r in rows):
    c, e, s = (by.get((i, case)) for i in ("cpt", "torch-eager", "torch-sdpa"))
    if not (c and e and s):
        continue
    print(f"{case:<11} {c['threads']:>7}  {c['us_per_token']:>10.1f}  {e['us_per_token']:>11.1f}"
          f"  {s['us_per_token']:>10.1f}  {c['us_per_token']/e['us_per_token']:>9.2f}"
          f"  {c['us_per_token']/s['us_per_token']:>8.2f}")
PY
