#!/usr/bin/env bash
# Train one recipe with 1 process and with 2 processes under torchrun (gloo, CPU) and print the
# largest absolute difference between the final meta-parameters.
# Usage: bash scripts/compare_processes.sh RECIPE [key=value ...]
# e.g.   bash scripts/compare_processes.sh configs/omniglot/protonet.yaml task.data_dir=../shared/data/omniglot \
#            task.ways=20 train.iterations=6 train.meta_batch_size=4 train.val_every=3 train.checkpoint_every=3 \
#            train.val_tasks=4 train.threads=1 train.grad_shards=4
set -euo pipefail
recipe=$1; shift
out=$(mktemp -d)
metadapt train "$recipe" "$@" --run-dir "$out/one" --no-progress > /dev/null
torchrun --standalone --nproc_per_node=2 -m metadapt train "$recipe" "$@" --run-dir "$out/two" --no-progress > /dev/null 2>&1
python - "$out" <<'PY'
import sys, torch
a = torch.load(f"{sys.argv[1]}/one/checkpoints/last.pt", weights_only=True)["state"]
b = torch.load(f"{sys.argv[1]}/two/checkpoints/last.pt", weights_only=True)["state"]
print("largest |difference| between 1 and 2 processes:", max((a[k] - b[k]).abs().max().item() for k in a))
PY
rm -rf "$out"
