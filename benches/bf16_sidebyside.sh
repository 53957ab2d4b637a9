#!/usr/bin/env bash
# Issue 17's figures, side by side and alternating on one machine: cnnc in
# f32, cnnc in bf16 and PyTorch under CPU autocast bf16, on the seed CNN and
# ResNet-34, ROUNDS rounds; then `python3 benches/bf16_table.py OUT`.
#
#   benches/bf16_sidebyside.sh target/release/cnnc OUT [ROUNDS]
#
# PyTorch comes from the peers' environment (../shared/peers/setup.sh,
# $PEERS_HOME or ~/.cache/cnnc-peers).
set -u
CNNC=$1; OUT=$2; ROUNDS=${3:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
PROJ=$(dirname "$HERE")
PH=${PEERS_HOME:-$HOME/.cache/cnnc-peers}
mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  for m in fashion_cnn resnet34; do
    pm=$m; [ $m = resnet34 ] && pm=resnet34_fashion
    for p in f32 bf16; do
      /usr/bin/time -v "$CNNC" bench "$PROJ/examples/$m.cnn" --steps 30 --threads 2 --precision $p \
        > "$OUT/cnnc_${p}_${m}_r$r.txt" 2> "$OUT/cnnc_${p}_${m}_r$r.time"
    done
    (cd "$OUT" && PEERS_RESULTS="$OUT/json" "$PH/venv-torch/bin/python" "$HERE/bench_torch_autocast.py" \
      --model $pm --batches 32 --min-seconds 15 --autocast-bf16 > "$OUT/torch_bf16_${m}_r$r.txt" 2>&1)
  done
done
echo done > "$OUT/DONE"
