#!/usr/bin/env bash
# One epoch of the seed CNN on the full Fashion-MNIST, for each cnnc binary
# given, alternating, ROUNDS times: wall time and peak RSS from
# /usr/bin/time, the run's own output (test accuracy) beside it.
#   benches/epochs.sh OUT_DIR ROUNDS BIN [BIN ...]
# Each binary's outputs go to OUT_DIR/NAME_rR.txt (NAME: the binary's file
# name, so give each binary a distinct one) and its run folder to
# OUT_DIR/run_NAME_rR.
set -u
if [ $# -lt 3 ]; then
  echo "usage: $0 OUT_DIR ROUNDS BIN [BIN ...]" >&2
  exit 2
fi
out=$1; rounds=$2; shift 2
project=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    name=$(basename "$bin")
    dir="$out/run_${name}_r$r"
    rm -rf "$dir"
    /usr/bin/time -f "wall %e s rss %M KB" "$bin" run "$project/examples/fashion_cnn.cnn" \
      --train fashion --epochs 1 --threads 2 --out "$dir" > "$out/${name}_r$r.txt" 2>&1
    echo "$name round $r: $(grep -h 'test:' "$out/${name}_r$r.txt") $(tail -1 "$out/${name}_r$r.txt")"
  done
done
