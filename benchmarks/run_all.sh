#!/usr/bin/env bash
# The full benchmark suite on the FracAtlas dev copy (../shared/data/fracatlas), targets asserted.
# Writes results/benchmarks/<date>.json (pytest-benchmark's JSON, figures in each extra_info).
# Run it on an otherwise idle machine: another job on the same cores slows every figure.
# A missed target fails the run (exit 1), but its figures are in the JSON all the same.
# Extra arguments go to pytest, e.g. `benchmarks/run_all.sh -k train`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then
  . .venv/bin/activate
fi
unset FRACBENCH_BENCH_SMOKE
export FRACBENCH_BENCH_TARGETS=1
export FRACBENCH_QUIET=1
mkdir -p results/benchmarks
out="results/benchmarks/$(date +%Y-%m-%d).json"
if [ -e "$out" ]; then  # never overwrite an earlier run's figures
  out="results/benchmarks/$(date +%Y-%m-%d-%H%M%S).json"
fi
echo "benchmarks -> $out"
python -m pytest benchmarks --benchmark-only --benchmark-json "$out" "$@"
