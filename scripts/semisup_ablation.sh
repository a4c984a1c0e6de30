#!/bin/bash
# What each objective of configs/imdb_cpu_semisup.yaml adds, on validation: the config with one objective at a
# time (and with none), seed 1, one thread per run, two runs at a time on 2 cores (each in its own run
# directory under runs/semisup/). Then:
#   .venv/bin/python scripts/valid_curve.py runs/semisup/{none-vocab,none-norm,at-only,vat-only,em-only,all}
# The plain CPU recipe given as much time: sentiment train --config configs/imdb_cpu.yaml --set train.epochs=10 ...
set -u
cd "$(dirname "$0")/.."
run() { name=$1; shift; OMP_NUM_THREADS=1 .venv/bin/sentiment train --config configs/imdb_cpu_semisup.yaml \
  --set run.threads=1 --set data.workers=1 --set run.seed="${SEED:-1}" --run-dir "runs/semisup/$name" --overwrite "$@" \
  > "runs/semisup/$name.log" 2>&1; echo "$name exit $?"; }
off="--set train.adversarial=null --set train.virtual_adversarial=null --set train.entropy_minimization=null"
mkdir -p runs/semisup
( run all
  run at-only --set train.virtual_adversarial=null --set train.entropy_minimization=null
  run none-norm $off ) &
( run vat-only --set train.adversarial=null --set train.entropy_minimization=null
  run em-only --set train.adversarial=null --set train.virtual_adversarial=null
  run none-vocab $off --set model.normalize_embeddings=false ) &
wait
