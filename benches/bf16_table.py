"""Medians and ratios of `benches/bf16_sidebyside.sh BIN OUT ROUNDS`:
for each model, cnnc's training step, inference rate and training arena in
f32 and in bf16, and PyTorch's under CPU autocast bf16; then issue 17's
ratios round by round (each round's figures against the same round's)
and their medians:

    python3 benches/bf16_table.py OUT
"""

import glob
import re
import statistics
import sys


def number(pattern, text, path):
    found = re.search(pattern, text)
    if not found:
        sys.exit(f"{path}: no match for {pattern!r}")
    return float(found.group(1))


def cnnc(out, precision, model, r):
    path = f"{out}/cnnc_{precision}_{model}_r{r}.txt"
    text = open(path).read()
    return {
        "train_ms": number(r"\(([\d.]+) ms/step", text, path),
        "inference": number(r"inference, batch 256: ([\d.]+)", text, path),
        "arena_mib": number(r"arena: training ([\d.]+) MiB", text, path),
        "latency_ms": number(r"latency: ([\d.]+)", text, path),
    }


def torch(out, model, r):
    path = f"{out}/torch_bf16_{model}_r{r}.txt"
    text = open(path).read()
    return {
        "train_ms": number(r"'median_step_ms': ([\d.]+)", text, path),
        "inference": number(
            r"inference \{'images': \d+, 'seconds': [\d.]+, 'images_per_s': ([\d.]+)", text, path
        ),
    }


def main(out):
    rounds = sorted(
        {int(re.search(r"_r(\d+)\.txt$", p).group(1)) for p in glob.glob(f"{out}/cnnc_bf16_*_r*.txt")}
    )
    for model in ["fashion_cnn", "resnet34"]:
        rows = [(cnnc(out, "f32", model, r), cnnc(out, "bf16", model, r), torch(out, model, r)) for r in rounds]
        print(f"## {model} ({len(rows)} rounds)")
        for label, pick in [("cnnc f32", 0), ("cnnc bf16", 1), ("torch autocast bf16", 2)]:
            figures = [row[pick] for row in rows]
            keys = figures[0].keys()
            medians = {k: statistics.median(f[k] for f in figures) for k in keys}
            print(f"{label}: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
        ratios = {
            "training, bf16 over f32 (target >= 1.6)": [f["train_ms"] / b["train_ms"] for f, b, _ in rows],
            "training, bf16 over torch autocast (target > 1)": [t["train_ms"] / b["train_ms"] for _, b, t in rows],
            "inference b256, bf16 over f32 (target >= 1.7)": [b["inference"] / f["inference"] for f, b, _ in rows],
            "inference b256, bf16 over torch autocast": [b["inference"] / t["inference"] for _, b, t in rows],
            "training arena, bf16 / f32 (target <= 0.6)": [b["arena_mib"] / f["arena_mib"] for f, b, _ in rows],
        }
        for name, values in ratios.items():
            print(f"  {name}: median {statistics.median(values):.3f}, rounds " + " ".join(f"{v:.3f}" for v in values))
        print()


if __name__ == "__main__":
    main(sys.argv[1])
