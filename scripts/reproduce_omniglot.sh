#!/usr/bin/env bash
# Reproduce the Omniglot table of the README: Prototypical Networks (30 min), Matching Networks
# (30 min), first-order MAML (60 min) and the pretrained-classifier baseline (15 min), each
# stopped by its training-time budget, then evaluated on 1,000 test episodes per setting.
# First-order MAML runs beside Matching Networks and then the baseline, one thread each, as they
# were measured on 2 CPU cores; Prototypical Networks and 20-way first-order MAML run alone. About 3 h 20 min in all.
# Usage: bash scripts/reproduce_omniglot.sh [runs-folder]    (DATA=folder with the Omniglot archives)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/omniglot}
data=${DATA:-../shared/data/omniglot}
common=(task.data_dir="$data" train.iterations=1000000 train.threads=1)
run() {  # run NAME RECIPE SECONDS [overrides...]
  local name=$1 recipe=$2 seconds=$3
  shift 3
  OMP_NUM_THREADS=1 metadapt train "$recipe" "${common[@]}" train.time_limit_s="$seconds" "$@" \
    --run-dir "$out/$name" --overwrite --no-progress
}
run fomaml configs/omniglot/fomaml.yaml 3600 train.val_every=500 &
fomaml=$!
run matching configs/omniglot/matching.yaml 1800
OMP_NUM_THREADS=1 metadapt eval "$out/matching" --no-progress
run pretrain configs/omniglot/pretrain.yaml 900
wait "$fomaml"
metadapt eval "$out/fomaml" --compare "$out/pretrain" --no-scratch --no-progress
# Prototypical Networks were measured alone, with torch's default threads (2 here)
metadapt train configs/omniglot/protonet.yaml task.data_dir="$data" task.ways=20 train.iterations=100000 \
  train.time_limit_s=1800 train.val_every=2000 train.checkpoint_every=2000 --run-dir "$out/protonet" --overwrite --no-progress
metadapt eval "$out/protonet" --no-progress
# The 20-way first-order MAML row was measured alone, 25 minutes, torch's default threads
metadapt train configs/omniglot/fomaml-20way.yaml task.data_dir="$data" train.iterations=1000000 \
  train.time_limit_s=1500 --run-dir "$out/fomaml-20way" --overwrite --no-progress
metadapt eval "$out/fomaml-20way" --no-scratch --no-progress
echo "reports: $out/{protonet,matching,fomaml,fomaml-20way}/report.md"
