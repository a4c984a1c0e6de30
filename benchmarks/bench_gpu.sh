#!/usr/bin/env bash
# The README's "On a GPU" figures, in one command on a CUDA machine with the data in place:
#   bash scripts/bench_gpu.sh [OUT_DIR]        (default bench/gpu; extra `--set` arguments via SET="...")
# 1. the CPU recipe, seed 1, alone: lazy host syncs (the CUDA default), then the eager loop;
# 2. one epoch of configs/imdb_gpu.yaml alone, lazy then eager (per-step time with and without the syncs);
# 3. configs/imdb_gpu.yaml over seeds 1-3 side by side on the GPU (accuracy; their seconds are shared time).
# Each step prints its epoch table; scripts/step_times.py compares the pairs.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/gpu}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
read -r -a EXTRA <<< "${SET:-}"
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench_gpu.sh needs a CUDA GPU')"
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
"$PY" scripts/step_times.py "$OUT/cpu-lazy" "$OUT/cpu-eager"
"$PY" scripts/step_times.py "$OUT/gpu-e1-lazy" "$OUT/gpu-e1-eager"
SEEDS=(--config configs/imdb_gpu.yaml --seeds 1 2 3 --parallel --threads 4 --out "$OUT/seeds")
for s in "${EXTRA[@]}"; do [ "$s" != "--set" ] && SEEDS+=(--set "$s"); done
"$PY" scripts/seed_runs.py "${SEEDS[@]}"
