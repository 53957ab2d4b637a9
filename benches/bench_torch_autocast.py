#!/usr/bin/env python
"""PyTorch (eager, CPU) counterpart of bench_keras.py on Fashion-MNIST, 2 threads.

A copy of the team's ../shared/peers/bench_torch.py with one option added
for issue 17: --autocast-bf16 runs the forward passes and the loss under
torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's mixed precision on
the CPU (convolutions and linear layers in bf16 through oneDNN, master
weights and optimizer state in f32). benches/bf16_sidebyside.sh alternates
it with `cnnc bench --precision bf16`.

  $PEERS_HOME/venv-torch/bin/python benches/bench_torch_autocast.py --model fashion_cnn --autocast-bf16

  $PEERS_HOME/venv-torch/bin/python bench_torch.py --model fashion_cnn
  $PEERS_HOME/venv-torch/bin/python bench_torch.py --model resnet34_fashion
  $PEERS_HOME/venv-torch/bin/python bench_torch.py --model fashion_cnn --mode epoch
  $PEERS_HOME/venv-torch/bin/python bench_torch.py --model fashion_cnn --channels-last
  $PEERS_HOME/venv-torch/bin/python bench_torch.py --model fashion_cnn --compile

Same architectures as reference_models.py (NCHW; 'same' padding reproduced
with explicit padding -- identical output shapes and parameter counts),
same initialisers as Keras/HOML (he_normal for conv/hidden dense,
glorot_uniform for the output layer, zero biases), Keras BN hyper-parameters
(eps 1e-3, momentum 0.99 -> torch momentum 0.01), NAdam(lr=1e-3, eps=1e-7)
(Keras defaults), CrossEntropyLoss on logits (== softmax + sparse CE).
Plain hand-written loop (no DataLoader); steps timed with perf_counter
(CPU execution is synchronous).
"""
import argparse
import json
import os
import resource
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="fashion_cnn", choices=["fashion_cnn", "resnet34_fashion"])
ap.add_argument("--mode", default="bench", choices=["bench", "epoch"])
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--warmup", type=int, default=20)
ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--min-seconds", type=float, default=20.0)
ap.add_argument("--batches", default="32,128")
ap.add_argument("--latency-calls", type=int, default=200)
ap.add_argument("--channels-last", action="store_true")
ap.add_argument("--compile", action="store_true", help="torch.compile (inductor) the model")
ap.add_argument("--seed", type=int, default=42)
ap.add_argument("--autocast-bf16", action="store_true",
                help="forward passes and loss under torch.autocast('cpu', dtype=torch.bfloat16)")
ap.add_argument("--out", default=None)
args = ap.parse_args()
os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The peers' data loader lives beside the team's scripts.
sys.path.insert(0, os.environ.get("PEERS_DIR", os.path.join(HERE, "..", "..", "shared", "peers")))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

PROC_START = psutil.Process().create_time()
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(args.threads)
import fmnist  # noqa: E402

T_IMPORTS = time.time()


def rss_peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def init_keras_like(model):
    last_linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if m is last_linear:
                nn.init.xavier_uniform_(m.weight)
            else:
                # keras he_normal = truncated normal, std sqrt(2/fan_in)
                fan_in = m.weight[0].numel()
                nn.init.trunc_normal_(m.weight, std=(2.0 / fan_in) ** 0.5,
                                      a=-2 * (2.0 / fan_in) ** 0.5, b=2 * (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def fashion_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 64, 7, padding=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
        nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2304, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(64, 10))


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class ResidualUnit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), bn(cout))
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), bn(cout))
                     if stride > 1 else nn.Identity())
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.main(x) + self.skip(x))


def resnet34(in_ch=1, n_classes=10):
    layers = [nn.Conv2d(in_ch, 64, 7, 2, 3, bias=False), bn(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    prev = 64
    for f in [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3:
        layers.append(ResidualUnit(prev, f, 1 if f == prev else 2))
        prev = f
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, n_classes)]
    return nn.Sequential(*layers)


FWD_FLOPS = {"fashion_cnn": 178_932_992, "resnet34_fashion": 139_307_520}  # from reference_models.json


def build():
    torch.manual_seed(args.seed)
    model = fashion_cnn() if args.model == "fashion_cnn" else resnet34()
    init_keras_like(model)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.NAdam(model.parameters(), lr=1e-3, eps=1e-7)
    fwd = torch.compile(model) if args.compile else model
    return model, fwd, opt


def to_t(x):
    t = torch.from_numpy(x)
    return t.contiguous(memory_format=torch.channels_last) if args.channels_last else t


def autocast():
    """The autocast context when asked for, else one that does nothing."""
    import contextlib
    if args.autocast_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(fwd, opt, loss_fn, xb, yb):
    opt.zero_grad(set_to_none=True)
    with autocast():
        loss = loss_fn(fwd(xb), yb)
    loss.backward()
    opt.step()
    return loss


def main():
    res = {"script": "bench_torch_autocast.py", "argv": sys.argv[1:], "args": vars(args),
           "versions": {"torch": torch.__version__, "numpy": np.__version__,
                        "python": sys.version.split()[0],
                        "torch_num_threads": torch.get_num_threads(),
                        "torch_num_interop_threads": torch.get_num_interop_threads(),
                        "mkldnn": torch.backends.mkldnn.is_available(),
                        "cpu_capability": torch.backends.cpu.get_cpu_capability()}}
    x_train, y_train, x_test, y_test = fmnist.load(channels_last=False)  # NCHW arrays
    xtr, ytr, xte, yte = to_t(x_train), torch.from_numpy(y_train), to_t(x_test), torch.from_numpy(y_test)
    T_DATA = time.time()
    model, fwd, opt = build()
    T_BUILT = time.time()
    loss_fn = nn.CrossEntropyLoss()
    res["model"] = args.model
    res["total_params"] = sum(p.numel() for p in model.parameters())
    res["buffers"] = sum(b.numel() for b in model.buffers())

    if args.mode == "epoch":
        n, bs = 48000, 32
        g = torch.Generator().manual_seed(args.seed)
        perm = torch.randperm(n, generator=g)
        model.train()
        t0 = time.perf_counter()
        ts, tot_loss, correct = [], 0.0, 0
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            xb, yb = xtr[idx], ytr[idx]
            if args.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            with autocast():
                out = fwd(xb)
                loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            tot_loss += float(loss) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            ts.append(time.perf_counter())
            if len(ts) == 1:
                first_wall = time.time()
        epoch_s = time.perf_counter() - t0
        model.eval()
        t1 = time.perf_counter()
        with torch.inference_mode(), autocast():
            pred = torch.cat([fwd(xte[i:i + 256]).argmax(1) for i in range(0, len(xte), 256)])
        eval_s = time.perf_counter() - t1
        res["epoch"] = {
            "train_images": n, "batch_size": bs, "steps": len(ts),
            "epoch_wall_s_including_first_step": round(epoch_s, 2),
            "first_step_s": round(ts[0] - t0, 3),
            "steady_images_per_s_after_step1": round((len(ts) - 1) * bs / (ts[-1] - ts[0]), 1),
            "train_loss_epoch_mean": tot_loss / n, "train_acc_epoch_mean": correct / n,
            "test_accuracy": float((pred == yte).float().mean()),
            "evaluate_wall_s_batch256": round(eval_s, 2),
        }
        res["cold_start_s_process_start_to_first_step_end"] = round(first_wall - PROC_START, 3)
        print(json.dumps(res["epoch"], indent=1))
    else:
        res["train"] = []
        model.train()
        first = True
        for bs in [int(b) for b in args.batches.split(",")]:
            wall0 = time.time()
            ts = [time.perf_counter()]
            i = 0
            while True:
                s = (i * bs) % (len(xtr) - bs)
                train_step(fwd, opt, loss_fn, xtr[s:s + bs], ytr[s:s + bs])
                ts.append(time.perf_counter())
                i += 1
                if i == 1:
                    fw = time.time()
                    if first:
                        first = False
                        res["cold_start"] = {
                            "process_start_to_first_step_end_s": round(fw - PROC_START, 3),
                            "process_start_to_imports_done_s": round(T_IMPORTS - PROC_START, 3),
                            "data_load_s": round(T_DATA - T_IMPORTS, 3),
                            "build_s": round(T_BUILT - T_DATA, 3),
                            "first_train_step_s": round(fw - wall0, 3),
                        }
                        print("cold start", res["cold_start"], flush=True)
                timed = i - args.warmup
                if timed > 0:
                    el = ts[-1] - ts[args.warmup]
                    if timed >= args.steps or (el >= args.min_seconds and timed >= 30):
                        break
            t = np.array(ts[args.warmup:])
            d = np.diff(t)
            s = {"batch_size": bs, "warmup_steps": args.warmup, "timed_steps": len(d),
                 "timed_seconds": round(float(t[-1] - t[0]), 3),
                 "images_per_s": round(float(len(d) * bs / (t[-1] - t[0])), 1),
                 "median_step_ms": round(float(np.median(d)) * 1e3, 3),
                 "p90_step_ms": round(float(np.percentile(d, 90)) * 1e3, 3),
                 "first_step_of_this_loop_s": round(ts[1] - ts[0], 3)}
            s["achieved_gflops_3x_forward"] = round(s["images_per_s"] * 3 * FWD_FLOPS[args.model] / 1e9, 2)
            res["train"].append(s)
            print("train", s, flush=True)

        model.eval()
        with torch.inference_mode(), autocast():
            for i in range(0, 2 * 256 + 16, 256):  # warm-up incl. partial batch
                fwd(xte[i:i + 256])
            t0 = time.perf_counter()
            for i in range(0, len(xte), 256):
                fwd(xte[i:i + 256])
            el = time.perf_counter() - t0
        res["inference_b256"] = {"images": len(xte), "seconds": round(el, 3),
                                 "images_per_s": round(len(xte) / el, 1),
                                 "gflops": round(len(xte) * FWD_FLOPS[args.model] / el / 1e9, 2),
                                 "api": "model.eval(); torch.inference_mode(); model(x[i:i+256])"}
        print("inference", res["inference_b256"], flush=True)
        x1 = xte[:1]
        with torch.inference_mode(), autocast():
            for _ in range(10):
                fwd(x1)
            lt = []
            for _ in range(args.latency_calls):
                t0 = time.perf_counter()
                fwd(x1)
                lt.append(time.perf_counter() - t0)
        lt = np.array(lt) * 1e3
        res["latency_b1"] = {"inference_mode_call": {
            "calls": len(lt), "median_ms": round(float(np.median(lt)), 3),
            "p10_ms": round(float(np.percentile(lt, 10)), 3),
            "p90_ms": round(float(np.percentile(lt, 90)), 3)}}
        print("latency", res["latency_b1"], flush=True)
    res["peak_rss_mb"] = round(rss_peak_mb(), 1)
    res["total_wall_s"] = round(time.time() - PROC_START, 1)
    tag = ("_cl" if args.channels_last else "") + ("_compile" if args.compile else "")
    tag += "_autocast_bf16" if args.autocast_bf16 else ""
    out = args.out or os.path.join(os.environ.get("PEERS_RESULTS", "peer-results"), f"torch_{args.model}{tag}_{args.mode}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print("peak_rss_mb", res["peak_rss_mb"], "total_wall_s", res["total_wall_s"], "->", out)


if __name__ == "__main__":
    main()
