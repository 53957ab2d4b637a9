#!/usr/bin/env bash
# Data-parallel training on one machine (issue 16's throughput figure):
# the training step of each model at global batch 64, one process of 2
# threads against `mpirun -np 2` ranks of 1 thread each, alternating, for
# ROUNDS rounds. Needs a binary built with `cargo build --release
# --features mpi` and OpenMPI's mpirun.
#
#   benches/data_parallel.sh [CNNC] [ROUNDS] [MODELS...]
#
# Prints one line per run: model, setup, ms/step and, for the ranks, the
# time a step spent exchanging rows. docs/scale-out.md quotes the medians.
set -euo pipefail
cnnc=${1:-target/release/cnnc}
rounds=${2:-3}
shift 2 || true
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(examples/fashion_cnn.cnn examples/resnet34.cnn)
steps() { case "$1" in *resnet*) echo 10 ;; *) echo 20 ;; esac; }
for round in $(seq "$rounds"); do
    for model in "${models[@]}"; do
        n=$(steps "$model")
        alone=$("$cnnc" bench "$model" --batch 64 --threads 2 --steps "$n" |
            sed -n 's/^training, batch 64: .*(\([0-9.]*\) ms\/step.*/\1/p')
        echo "round $round $(basename "$model" .cnn) 1x2 ${alone} ms/step"
        ranks=$(mpirun --allow-run-as-root --bind-to core -np 2 "$cnnc" bench "$model" \
            --batch 64 --threads 1 --steps "$n")
        step=$(sed -n 's/^data-parallel training, batch 64: .*(\([0-9.]*\) ms\/step).*/\1/p' <<<"$ranks")
        exchange=$(sed -n 's/^exchanging rows: \([0-9.]*\) ms\/step.*/\1/p' <<<"$ranks")
        echo "round $round $(basename "$model" .cnn) 2x1 ${step} ms/step exchange ${exchange} ms/step"
    done
done
