"""cnnc export, checked by onnxruntime.

For every model of the given .cnn files (default: stdlib/, examples/ and
tests/onnx/ops.cnn), at its declared input size and batch 2, with random
weights (the initializers of `cnnc init`, biases, scales and offsets drawn
at random too, so that a misplaced one shows; each batchnorm's moving
statistics those of its input on a calibration batch, the mean jittered and
the variance twice to four times the second moment, so that deep models neither explode nor
saturate their softmax) and a random input:

  cnnc export  -> onnx.checker.check_model(full_check=True)
               -> onnxruntime's outputs
  cnnc predict -> cnnc's outputs

and the largest difference relative to the largest output value must be at
most 1e-4. Then `cnnc import` reads the exported file back: the imported
model's outputs must equal the original's within the same bound, and its
parameter count be the same. Prints one table row per model and exits 1 if any fails.

Usage: python tests/onnx/check.py CNNC_BINARY [FILE.cnn ...] [--table]
(needs numpy, onnx and onnxruntime; .ci/run makes a venv with them).
"""

import json
import pathlib
import re
import struct
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime

TOLERANCE = 1e-4
ROOT = pathlib.Path(__file__).resolve().parents[2]


def models_of(cnnc, path):
    """The names of the models a .cnn file defines (from its header lines)."""
    names = re.findall(r"^model\s+(\w+)", path.read_text(), flags=re.M)
    return names


def read_safetensors(path):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    return bytearray(data), header, 8 + length


def write_safetensors(source, target, replace):
    """`source` with the tensors named in `replace` (name -> values)
    overwritten, written to `target` in the same layout."""
    data, header, start = read_safetensors(source)
    for name, values in replace.items():
        begin, end = header[name]["data_offsets"]
        data[start + begin : start + end] = np.asarray(values, "<f4").tobytes()
    target.write_bytes(bytes(data))


def randomize(source, target, seed):
    """The weights of `source` with biases, betas, gammas and coefficients
    drawn at random, written to `target`."""
    rng = np.random.default_rng(seed)
    _, header, _ = read_safetensors(source)
    replace = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = int(np.prod(entry["shape"]))
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("gamma", "coefficient"):
            replace[name] = rng.uniform(0.5, 1.5, count)
        elif leaf in ("bias", "beta"):
            replace[name] = rng.normal(0.0, 0.1, count)
    write_safetensors(source, target, replace)


def calibrate(exported, x, seed):
    """Each batchnorm's moving mean and variance: those of its input over
    `x` (every axis but the channels'), given the statistics set before it,
    the mean jittered by a few percent and the variance
    twice to four times the second moment. The statistics are fed as inputs, so that one
    onnxruntime session serves every step. Returns weight name -> values
    (the exporter names initializers by the weights' names)."""
    rng = np.random.default_rng(seed)
    model = onnx.load(str(exported))
    norms = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    if not norms:
        return {}
    statistics = {name for n in norms for name in n.input[3:5]}
    initial = {}
    for tensor in list(model.graph.initializer):
        if tensor.name in statistics:
            initial[tensor.name] = onnx.numpy_helper.to_array(tensor)
            model.graph.initializer.remove(tensor)
            model.graph.input.append(onnx.helper.make_tensor_value_info(
                tensor.name, onnx.TensorProto.FLOAT, list(tensor.dims)))
    for n in norms:
        model.graph.output.append(onnx.helper.make_tensor_value_info(
            n.input[0], onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: x, **initial}
    for n in norms:
        (value,) = session.run([n.input[0]], feeds)
        axes = (0, 2, 3) if value.ndim == 4 else (0,)
        jitter = lambda: rng.uniform(0.95, 1.05, value.shape[1]).astype(np.float32)
        feeds[n.input[3]] = value.mean(axis=axes) * jitter()
        # Twice to four times the second moment: each normalized map has a
        # spread of at most about 0.6, even where the examples hardly differ
        # (deep 1x1 maps), so that residual sums stay moderate and the
        # softmax of a deep model is not saturated.
        spread = rng.uniform(2.0, 4.0, value.shape[1]).astype(np.float32)
        feeds[n.input[4]] = (value**2).mean(axis=axes) * spread
    return {name: feeds[name] for name in statistics}


def run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{result.stderr}")
    return result.stdout


def check(cnnc, path, model, work):
    weights0 = work / f"{model}.init.safetensors"
    weights = work / f"{model}.safetensors"
    exported = work / f"{model}.onnx"
    run([cnnc, "init", path, "--model", model, "-o", weights0])
    randomize(weights0, weights, seed=len(model))
    run([cnnc, "export", path, "--model", model, "--weights", weights, "-o", exported])
    shape = list(onnx.load(str(exported)).graph.input[0].type.tensor_type.shape.dim)
    shape = [d.dim_value for d in shape[1:]]
    rng = np.random.default_rng(1)
    calibration = rng.normal(size=[8] + shape).astype(np.float32)
    x = rng.normal(size=[2] + shape).astype(np.float32)
    statistics = calibrate(exported, calibration, seed=len(model))
    if statistics:
        write_safetensors(weights, weights, statistics)
        run([cnnc, "export", path, "--model", model, "--weights", weights, "-o", exported])
    onnx.checker.check_model(str(exported), full_check=True)
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (input_info,) = session.get_inputs()
    np.save(work / f"{model}.x.npy", x)
    out = work / f"{model}.y.npy"
    run([cnnc, "predict", path, "--model", model, "--weights", weights,
         "--input", work / f"{model}.x.npy", "--output", out])
    names = [o.name for o in session.get_outputs()]
    theirs = session.run(None, {input_info.name: x})
    worst = 0.0
    for name, reference in zip(names, theirs):
        file = out if len(names) == 1 else out.with_name(f"{model}.y.{name}.npy")
        ours = np.load(file)
        if ours.shape != reference.shape:
            raise RuntimeError(f"output {name}: cnnc {ours.shape}, onnxruntime {reference.shape}")
        if np.isclose(reference.sum(axis=-1), 1.0).all() and reference.max(axis=-1).min() > 0.999:
            raise RuntimeError(f"output {name} is a saturated softmax: the comparison would say little")
        scale = max(float(np.abs(reference).max()), 1e-30)
        worst = max(worst, float(np.abs(ours - reference).max()) / scale)
    nodes = len(onnx.load(str(exported)).graph.node)
    return worst, nodes, round_trip(cnnc, path, model, work, exported, names)


def total_params(cnnc, path, model=None):
    text = run([cnnc, "summary", path] + (["--model", model] if model else []))
    return int(re.search(r"^Total params: ([\d,]+)", text, flags=re.M).group(1).replace(",", ""))


def round_trip(cnnc, path, model, work, exported, names):
    """`cnnc import` of the export: the largest difference of its outputs
    from the original's (same weights, same input), relative to the
    largest output value; the parameter counts must be equal."""
    imported = work / f"{model}.imported.cnn"
    run([cnnc, "import", exported, "-o", imported, "--overwrite"])
    out = work / f"{model}.z.npy"
    run([cnnc, "predict", imported, "--weights", imported.with_suffix(".safetensors"),
         "--input", work / f"{model}.x.npy", "--output", out])
    if total_params(cnnc, imported) != total_params(cnnc, path, model):
        raise RuntimeError("the import's parameter count differs")
    worst = 0.0
    for name in names:
        original = work / (f"{model}.y.npy" if len(names) == 1 else f"{model}.y.{name}.npy")
        again = out if len(names) == 1 else out.with_name(f"{model}.z.{name}.npy")
        a, b = np.load(again), np.load(original)
        worst = max(worst, float(np.abs(a - b).max()) / max(float(np.abs(b).max()), 1e-30))
    return worst


def check_fixtures(cnnc):
    """PyTorch's ONNX files (tests/fixtures/onnx): onnxruntime on the
    original (NCHW input) against `cnnc predict` on its import (the same
    input as NHWC). Prints a table; returns the number of failures."""
    print()
    print("| PyTorch fixture | onnxruntime vs cnnc import, max relative error |")
    print("|---|---|")
    failures = 0
    with tempfile.TemporaryDirectory() as folder:
        work = pathlib.Path(folder)
        for path in sorted((ROOT / "tests" / "fixtures" / "onnx").glob("*.onnx")):
            x = np.load(path.with_suffix(".input.npy"))
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            (reference,) = session.run(None, {session.get_inputs()[0].name: x})
            imported = work / f"{path.stem}.cnn"
            run([cnnc, "import", path, "-o", imported])
            np.save(work / "x.npy", np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
            run([cnnc, "predict", imported, "--weights", imported.with_suffix(".safetensors"),
                 "--input", work / "x.npy", "--output", work / "y.npy"])
            ours = np.load(work / "y.npy")
            error = float(np.abs(ours - reference).max()) / max(float(np.abs(reference).max()), 1e-30)
            verdict = "" if error <= TOLERANCE else " FAILED"
            failures += error > TOLERANCE
            print(f"| {path.name} | {error:.1e}{verdict} |", flush=True)
    return failures


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    cnnc, files = pathlib.Path(args[0]).resolve(), [pathlib.Path(f) for f in args[1:]]
    if not files:
        files = sorted((ROOT / "stdlib").glob("*.cnn")) + sorted((ROOT / "examples").glob("*.cnn"))
        files.append(ROOT / "tests" / "onnx" / "ops.cnn")
    failures = 0
    print(f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}")
    print("| model | file | ONNX nodes | onnxruntime max relative error | import: round-trip error |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        work = pathlib.Path(folder)
        for path in files:
            for model in models_of(cnnc, path):
                shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                try:
                    worst, nodes, trip = check(cnnc, path, model, work)
                except Exception as e:  # noqa: BLE001 - reported per model
                    failures += 1
                    print(f"| {model} | {shown} | | FAILED: {e} |", flush=True)
                    continue
                verdict = "" if worst <= TOLERANCE else " FAILED"
                trip_verdict = "" if trip <= TOLERANCE else " FAILED"
                failures += worst > TOLERANCE or trip > TOLERANCE
                print(f"| {model} | {shown} | {nodes} | {worst:.1e}{verdict} | {trip:.1e}{trip_verdict} |",
                      flush=True)
    failures += check_fixtures(cnnc)
    print(f"{failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
