"""Whole training epochs with ``lci train``: samples/s and epoch time, eager vs CUDA graphs,
and 1/2/4 trials packed on one device.

Writes CIFAR-10-shaped data (random pixels and labels) in torchvision's on-disk format
(``cifar-10-batches-py``: five ``data_batch_*`` pickles, ``test_batch``, ``batches.meta``) to a
temporary folder, then runs ``lci train`` on it as separate processes, exactly as a user (or a
Tune trial) would: the data set on the device, the default options of the method, evaluation
of the test set after every epoch (not timed: ``epoch_s`` is the training loop alone).

- **solo**: one process per (method, mode), e.g. ``ce``/``lci`` x ``eager``/``graph``
  (``cuda_graphs=off``/``on``).
- **packed**: ``k`` processes of ``--pack-method`` at once for each ``k`` in ``--packs``; the
  aggregate samples/s is the sum of each process's steady rate. Its ratio to ``k=1`` is how
  much packing ``k`` trials on one GPU gains (see the README's Performance section for choosing
  ``gpu:`` fractions from it).

The first epoch holds the one-off costs (cuDNN autotuning, the graph warm-up and capture), so
each process's rate is the median over its epochs after the first (the first, when it ran
only one). Needs only torch, torchvision, numpy, pyyaml and tqdm: nothing from ``study/`` or
``trainables/``, no Ray, no Optuna.

    python benchmarks/epoch_time.py [--epochs 3] [--n-train 50000] [--n-test 10000]
        [--model preact_resnet34] [--methods ce lci] [--modes eager graph] [--packs 1 2 4]
        [--pack-method lci] [--pack-mode auto] [--device auto] [--batch 128] [--json]

CPU smoke test (about a minute on two cores):
    python benchmarks/epoch_time.py --device cpu --model small_cnn --n-train 512
        --n-test 256 --epochs 2 --modes eager --packs 1 2 --threads 1
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


# ------------------------------------------------------------------------------------ data


def write_cifar10(folder: str, n_train: int, n_test: int, seed: int = 0) -> str:
    """Random CIFAR-10-shaped data in torchvision's format under ``folder``; returns the
    ``data_dir`` to give ``lci train`` (the folder holding ``cifar-10-batches-py``)."""
    rng = np.random.default_rng(seed)
    base = os.path.join(folder, "cifar-10-batches-py")
    os.makedirs(base, exist_ok=True)

    def dump(name: str, n: int) -> None:
        # torchvision reads entry["data"] as N x 3072 uint8 (CHW per row) and entry["labels"]
        entry = {"batch_label": name, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n).tolist(),
                 "filenames": [f"{name}_{i}.png" for i in range(n)]}
        with open(os.path.join(base, name), "wb") as fh:
            pickle.dump(entry, fh, protocol=pickle.HIGHEST_PROTOCOL)

    sizes = [n_train // 5 + (i < n_train % 5) for i in range(5)]
    for i, n in enumerate(sizes, 1):
        dump(f"data_batch_{i}", n)
    dump("test_batch", n_test)
    with open(os.path.join(base, "batches.meta"), "wb") as fh:
        pickle.dump({"label_names": CLASSES, "num_cases_per_batch": sizes[0],
                     "num_vis": 3072}, fh)
    return folder


# ------------------------------------------------------------------------------------- runs


def train_command(out: str, data_dir: str, method: str, mode: str, args, seed: int) -> List[str]:
    sets = {"dataset": "cifar10", "data_dir": data_dir, "method": method, "model": args.model,
            "epochs": args.epochs, "batch_size": args.batch, "device": args.device,
            "cuda_graphs": "on" if mode == "graph" else "off", "seed": seed,
            "eval_train": "false", "checkpoint_every": 0, "threads": args.threads}
    cmd = [sys.executable, "-m", "lci_study", "train", "--quiet", "--out", out]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def start(out: str, data_dir: str, method: str, mode: str, args, seed: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    log = open(out + ".log", "w")
    return subprocess.Popen(train_command(out, data_dir, method, mode, args, seed), cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def read_history(out: str) -> List[Dict[str, float]]:
    from lci.outputs import HISTORY_FILE

    with open(os.path.join(out, HISTORY_FILE)) as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(fh)]


def summarise(out: str, n_train: int) -> Dict[str, float]:
    hist = read_history(out)
    epochs = [h["epoch_s"] for h in hist]
    steady = epochs[1:] or epochs
    epoch_s = statistics.median(steady)
    return {"epochs": len(epochs), "first_epoch_s": epochs[0], "epoch_s": epoch_s,
            "samples_per_s": statistics.median(h["samples_per_s"] for h in (hist[1:] or hist)),
            "epoch_s_all": epochs, "test_acc": hist[-1].get("test_acc", float("nan"))}


def run_group(tmp: str, data_dir: str, jobs: List[tuple], args, tag: str) -> List[dict]:
    """Start every ``(method, mode)`` of ``jobs`` at once, wait, summarise each."""
    procs = []
    t0 = time.perf_counter()
    for i, (method, mode) in enumerate(jobs):
        out = os.path.join(tmp, f"{tag}-{i}-{method}-{mode}")
        procs.append((method, mode, out, start(out, data_dir, method, mode, args, seed=i)))
    rows = []
    for method, mode, out, proc in procs:
        rc = proc.wait()
        if rc != 0:
            with open(out + ".log") as fh:
                tail = fh.read()[-3000:]
            raise SystemExit(f"lci train ({method}, {mode}) failed with exit {rc}:\n{tail}")
        rows.append({"method": method, "mode": mode, **summarise(out, args.n_train)})
    wall = time.perf_counter() - t0
    for r in rows:
        r["group_wall_s"] = wall
    return rows


# ------------------------------------------------------------------------------------ main


def main(argv: Optional[List[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=50000)
    ap.add_argument("--n-test", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--model", default="preact_resnet34")
    ap.add_argument("--methods", nargs="*", default=["ce", "lci"])
    ap.add_argument("--modes", nargs="*", default=["eager", "graph"], choices=["eager", "graph"])
    ap.add_argument("--packs", nargs="*", type=int, default=[1, 2, 4],
                    help="processes at once on the device for the packing rows (empty: none)")
    ap.add_argument("--pack-method", default="lci")
    ap.add_argument("--pack-mode", default="auto", choices=["auto", "eager", "graph"],
                    help="auto: graph on CUDA, eager elsewhere")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads per process")
    ap.add_argument("--keep", help="write data and runs here and keep them (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.n_train < args.batch or args.n_test < 1 or any(
            k < 1 for k in args.packs):
        ap.error("--epochs, --n-test and --packs must be >= 1, --n-train >= --batch")

    import torch  # after argument errors, which need no torch

    dev_name = args.device
    if args.device in ("auto", "cuda") or args.device.startswith("cuda"):
        dev_name = (torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    if args.pack_mode == "auto":
        args.pack_mode = "graph" if dev_name != "cpu" else "eager"
    if "graph" in args.modes and dev_name == "cpu":
        ap.error("--modes graph needs a CUDA device (CUDA graphs); use --modes eager on a CPU")
    tmp = args.keep or tempfile.mkdtemp(prefix="lci-epoch-time-")
    os.makedirs(tmp, exist_ok=True)
    try:
        t0 = time.perf_counter()
        data_dir = write_cifar10(os.path.join(tmp, "data"), args.n_train, args.n_test)
        print(f"epoch time on {dev_name}: {args.model}, {args.n_train} train / {args.n_test} "
              f"test images, batch {args.batch}, {args.epochs} epochs per run "
              f"(data written in {time.perf_counter() - t0:.1f} s)", flush=True)
        solo: List[dict] = []
        for method in args.methods:
            for mode in args.modes:
                (row,) = run_group(tmp, data_dir, [(method, mode)], args, "solo")
                solo.append(row)
                print(f"  solo   {method:<6}{mode:<6} epoch {row['epoch_s']:7.2f} s  "
                      f"{row['samples_per_s']:9.0f} samples/s  (first epoch "
                      f"{row['first_epoch_s']:.2f} s)", flush=True)
        packed: List[dict] = []
        for k in args.packs:
            rows = run_group(tmp, data_dir, [(args.pack_method, args.pack_mode)] * k, args,
                             f"pack{k}")
            agg = sum(r["samples_per_s"] for r in rows)
            packed.append({"processes": k, "method": args.pack_method, "mode": args.pack_mode,
                           "aggregate_samples_per_s": agg,
                           "epoch_s_each": [r["epoch_s"] for r in rows],
                           "group_wall_s": rows[0]["group_wall_s"]})
            print(f"  packed {k} x {args.pack_method} {args.pack_mode}: aggregate {agg:9.0f} "
                  f"samples/s, epoch {statistics.median(r['epoch_s'] for r in rows):.2f} s "
                  "each", flush=True)
        base = packed[0]["aggregate_samples_per_s"] if packed else None
        for p in packed:
            p["gain_vs_first"] = p["aggregate_samples_per_s"] / base
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nsummary ({dev_name}, {args.model}, {args.n_train} images, batch {args.batch})")
    print(f"{'run':<26}{'epoch s':>9}{'samples/s':>11}{'x':>7}")
    for r in solo:
        print(f"{'solo ' + r['method'] + ' ' + r['mode']:<26}{r['epoch_s']:>9.2f}"
              f"{r['samples_per_s']:>11.0f}{'':>7}")
    for p in packed:
        label = f"{p['processes']} x {p['method']} {p['mode']}"
        print(f"{label:<26}{statistics.median(p['epoch_s_each']):>9.2f}"
              f"{p['aggregate_samples_per_s']:>11.0f}{p['gain_vs_first']:>7.2f}")
    result = {"device": args.device, "device_name": dev_name, "model": args.model,
              "n_train": args.n_train, "batch": args.batch, "epochs": args.epochs,
              "solo": solo, "packed": packed}
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
