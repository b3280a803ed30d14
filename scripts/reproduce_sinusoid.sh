#!/usr/bin/env bash
# Reproduce the sinusoid results table of the README: every recipe in configs/sinusoid/ trained
# with the MAML paper's setup (70,000 meta-iterations), then all evaluated on the same 600 test
# tasks per shot count against the baselines. Most of an hour on 2 CPU cores (the runs without
# Reptile took 32 minutes here while sharing the CPU with other work).
# Usage: bash scripts/reproduce_sinusoid.sh [runs-folder]   (extra key=value overrides go to every run)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/sinusoid}
shift || true
for algo in maml maml-code pretrain metasgd fomaml anil reptile; do
  metadapt train "configs/sinusoid/$algo.yaml" --run-dir "$out/$algo" --overwrite --no-progress "$@"
done
metadapt eval "$out/maml" --no-progress --compare "$out/maml-code" "$out/pretrain" "$out/metasgd" "$out/fomaml" "$out/anil" "$out/reptile"
echo "table and figures: $out/maml/report.md"
