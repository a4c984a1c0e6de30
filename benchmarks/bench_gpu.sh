#!/usr/bin/env bash
# The GPU figures of docs/results.md ("On a GPU"), in one command on a CUDA machine with the data in place:
#   bash benchmarks/bench_gpu.sh [OUT_DIR]     (default bench/gpu; extra `--set` arguments via SET="...")
# 1. the CPU recipe, seed 1, alone: lazy host syncs (the CUDA default), then the eager loop;
# 2. one epoch of configs/imdb_gpu.yaml alone, lazy then eager (per-step time with and without the syncs);
# 3. configs/imdb_gpu.yaml over seeds 1-3 side by side on the GPU (accuracy; their seconds are shared time).
# Each step prints its epoch table; benchmarks/metrics.py compares the pairs.
# NOT YET RUN AS A WHOLE ON A GPU: its commands were run one by one on an H200 (2026-11-30, torch 2.11, commit
# ca2a10c, before the engine rewrite); this script, written from them, is only checked to refuse a CPU machine.
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,9p' "$0" | cut -c3-; exit 0; fi
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/gpu}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
read -r -a EXTRA <<< "${SET:-}"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench_gpu.sh needs a CUDA GPU')"
mkdir -p "$OUT"
train() {  # run name, then arguments for sentiment train
  local name=$1; shift
  [ -e "$OUT/$name/results.json" ] && { echo "$OUT/$name done already"; return; }
  rm -rf "${OUT:?}/$name"
  local started=$EPOCHREALTIME
  "$PY" -m sentiment train --run-dir "$OUT/$name" "$@" "${EXTRA[@]}"
  echo "$name: whole command $(awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $started}") s"
}
train cpu-lazy --config configs/imdb_cpu.yaml --set run.seed=1
train cpu-eager --config configs/imdb_cpu.yaml --set run.seed=1 --set train.lazy_sync=false
train gpu-e1-lazy --config configs/imdb_gpu.yaml --set run.seed=1 --set train.epochs=1
train gpu-e1-eager --config configs/imdb_gpu.yaml --set run.seed=1 --set train.epochs=1 --set train.lazy_sync=false
"$PY" benchmarks/metrics.py "$OUT/cpu-lazy" "$OUT/cpu-eager"
"$PY" benchmarks/metrics.py "$OUT/gpu-e1-lazy" "$OUT/gpu-e1-eager"
SEEDS=(--config configs/imdb_gpu.yaml --seeds 1 2 3 --parallel --threads 4 --out "$OUT/seeds")
for s in "${EXTRA[@]}"; do [ "$s" != "--set" ] && SEEDS+=(--set "$s"); done
"$PY" benchmarks/seed_runs.py "${SEEDS[@]}"
