"""Medians, ranges and per-round ratios of a side-by-side run.

Reads the files `../shared/peers/sidebyside.sh BIN . OUT ROUNDS` leaves in
OUT (cnnc_*, torch_* and keras_* for each model and round) and prints, for
each model, every figure's median and range for each framework, then the
ratios the targets of issue 13 are stated in, round by round (each round's
cnnc against the peers of the same round) and their median:

    python3 benches/sidebyside_table.py OUT
"""

import glob
import re
import statistics
import sys

MODELS = ["fashion_cnn", "resnet34"]
FRAMEWORKS = ["cnnc", "torch", "keras"]


def number(pattern, text, path):
    found = re.search(pattern, text)
    if not found:
        sys.exit(f"{path}: no match for {pattern!r}")
    return float(found.group(1))


def cnnc(out, model, r):
    path = f"{out}/cnnc_{model}_r{r}.txt"
    text = open(path).read()
    timing = open(f"{out}/cnnc_{model}_r{r}.time").read()
    return {
        "train": number(r"\(([\d.]+) ms/step", text, path),
        "inf": number(r"inference, batch 256: ([\d.]+)", text, path),
        "lat": number(r"latency: ([\d.]+)", text, path),
        "first": number(r"done ([\d.]+) s", text, path),
        "compile": number(r"training step ([\d.]+) s", text, path),
        "rss": number(r"Maximum resident set size \(kbytes\): (\d+)", timing, path) / 1024,
    }


def peer(out, framework, model, r):
    path = f"{out}/{framework}_{model}_r{r}.txt"
    text = open(path).read()
    latency = (
        r"inference_mode_call': \{'calls': \d+, 'median_ms': ([\d.]+)"
        if framework == "torch"
        else r"predict_on_batch \{'calls': \d+, 'median_ms': ([\d.]+)"
    )
    return {
        "train": number(r"'median_step_ms': ([\d.]+)", text, path),
        "inf": number(
            r"inference \{'images': \d+, 'seconds': [\d.]+, 'images_per_s': ([\d.]+)", text, path
        ),
        "lat": number(latency, text, path),
        "first": number(r"'process_start_to_first_step_end_s': ([\d.]+)", text, path),
        "rss": number(r"peak_rss_mb ([\d.]+)", text, path),
    }


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    rounds = sorted(
        {int(re.search(r"_r(\d+)\.txt", f).group(1)) for f in glob.glob(f"{out}/cnnc_*_r*.txt")}
    )
    for model in MODELS:
        rows = {
            fw: [cnnc(out, model, r) if fw == "cnnc" else peer(out, fw, model, r) for r in rounds]
            for fw in FRAMEWORKS
        }
        print("==", model)
        for key in ["train", "inf", "lat", "first", "rss", "compile"]:
            cells = []
            for fw in FRAMEWORKS:
                values = [row[key] for row in rows[fw] if key in row]
                if values:
                    median = statistics.median(values)
                    cells.append(f"{fw} {median:.3f} ({min(values):.3f}-{max(values):.3f})")
            print(f"  {key}: " + " | ".join(cells))
        c, t, k = rows["cnnc"], rows["torch"], rows["keras"]
        n = range(len(rounds))
        ratios = {
            "training, PyTorch's step / cnnc's": [t[i]["train"] / c[i]["train"] for i in n],
            "inference, cnnc / the faster peer": [
                c[i]["inf"] / max(t[i]["inf"], k[i]["inf"]) for i in n
            ],
            "latency, cnnc / the faster peer": [
                c[i]["lat"] / min(t[i]["lat"], k[i]["lat"]) for i in n
            ],
        }
        for name, values in ratios.items():
            rounded = [round(v, 3) for v in values]
            print(f"  {name}: {rounded}, median {statistics.median(values):.3f}")


if __name__ == "__main__":
    main()
