"""Aggregate training throughput of k fused seeds (lci.fused), as ratios to one run alone.

For each k in ``--members`` (default 1 2 4 8) one :class:`lci.fused.FusedEngine` is built from
k member engines made as ``Trainer`` makes them (seeds 0..k-1; ``benchmarks.step_cost``'s
``build_engine``), with label correction active (lci's dearest phase). A step trains k runs
on k batches, so the aggregate rate is ``k · batch / step time``; the ratio to k = 1 in the
same mode and repeat is what fusion buys (k = 1 is one run through the same fused code).

Modes: ``eager`` everywhere; ``graph`` (the fused step replayed as a CUDA graph) on CUDA only.
Devices in ``--devices`` that this machine lacks are skipped, and the output says so. The
k values are timed interleaved, in a shuffled order per repeat, and the ratio is the median of
the per-repeat ratios, so a shared machine's load moves it less than the absolute rates.
``ops/step`` counts the ATen operators one eager step dispatches (kernel launches on a GPU);
on CUDA ``--profile`` adds the profiler's kernels per step.

    python benchmarks/fused_throughput.py [--model small_cnn] [--method lci]
        [--members 1 2 4 8] [--devices cpu cuda] [--batch N] [--steps 5] [--warmup 2]
        [--repeats 3] [--threads 0] [--profile] [--json]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Dict, List, Optional

import torch

from lci.fused import FusedEngine

try:
    from benchmarks.step_cost import (METHODS, build_engine, count_ops, profile_steps,
                                      random_batches, time_steps)
except ModuleNotFoundError:  # run as a script without the repository on the path
    from step_cost import (METHODS, build_engine, count_ops, profile_steps,  # type: ignore
                           random_batches, time_steps)


def build_fused(model: str, method: str, k: int, device: torch.device, graph: bool) -> FusedEngine:
    members = [build_engine(model, METHODS[method], device, seed=s) for s in range(k)]
    eng = FusedEngine(members)
    eng.step_count = eng.correction_step  # time the label-corrected phase
    if graph:
        eng.use_cuda_graphs("on")
    eng.train()
    return eng


def fused_batches(model: str, k: int, device: torch.device, batch: int):
    """``[N_BATCHES, k, B, ...]`` images and ``[N_BATCHES, k, B]`` labels, member i's from seed i."""
    parts = [random_batches(model, device, seed=s, batch=batch) for s in range(k)]
    return torch.stack([p[0] for p in parts], 1), torch.stack([p[1] for p in parts], 1)


def bench_device(device: torch.device, args) -> List[dict]:
    modes = ["eager", "graph"] if device.type == "cuda" else ["eager"]
    keys = [(k, mode) for mode in modes for k in args.members]
    engines = {key: build_fused(args.model, args.method, key[0], device, key[1] == "graph")
               for key in keys}
    data = {k: fused_batches(args.model, k, device, args.batch) for k in args.members}
    for (k, _), eng in engines.items():  # warm-up (graph capture happens here)
        xs, ys = data[k]
        time_steps(eng, xs, ys, max(args.warmup, 1) + (4 if eng._graph is not None else 0),
                   device)
    times: Dict[tuple, List[float]] = {key: [] for key in keys}
    for _ in range(args.repeats):
        order = list(keys)
        random.shuffle(order)
        for key in order:
            xs, ys = data[key[0]]
            times[key].append(time_steps(engines[key], xs, ys, args.steps, device)[0])
    batch = data[args.members[0]][0].shape[2]
    rows = []
    for k, mode in keys:
        rates = [k * batch / (ms / 1e3) for ms in times[(k, mode)]]
        base = [args.members[0] * batch / (ms / 1e3) for ms in times[(args.members[0], mode)]]
        xs, ys = data[k]
        row = {"device": str(device), "mode": mode, "members": k, "batch": batch,
               "ms_per_step": statistics.median(times[(k, mode)]),
               "samples_per_s": statistics.median(rates),
               "ratio_to_k1": statistics.median(r / b for r, b in zip(rates, base)),
               "ops_per_step": count_ops(engines[(k, mode)], xs[0], ys[0]) if mode == "eager"
               else None}
        loss = engines[(k, mode)].step(xs[0], ys[0])["loss"]
        row["finite"] = bool(torch.isfinite(loss).all())
        if args.profile and device.type == "cuda":
            row.update(profile_steps(engines[(k, mode)], xs, ys, args.steps))
        rows.append(row)
    return rows


def main(argv: Optional[List[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small_cnn", choices=["small_cnn", "preact_resnet34"])
    p.add_argument("--method", default="lci", choices=list(METHODS))
    p.add_argument("--members", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=0, help="per member (0: the data set's)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="CUDA: kernels per step")
    p.add_argument("--json", action="store_true", help="last line: the results as JSON")
    args = p.parse_args(argv)
    if args.members[0] != 1:
        p.error("--members must start with 1 (the ratios are to k=1)")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, skipped = [], []
    for name in args.devices:
        if name.startswith("cuda") and not torch.cuda.is_available():
            skipped.append(f"{name}: no CUDA device on this machine")
            continue
        rows += bench_device(torch.device(name), args)
    t = time.strftime("%Y-%m-%d %H:%M")
    print(f"fused seeds, {args.model} {args.method}, batch {rows[0]['batch'] if rows else '?'} "
          f"per member, {args.steps} steps x {args.repeats} repeats ({t})")
    print(f"{'device':8} {'mode':6} {'k':>3} {'ms/step':>9} {'samples/s':>10} {'x k=1':>6} "
          f"{'ops/step':>8}")
    for r in rows:
        ops = "" if r["ops_per_step"] is None else r["ops_per_step"]
        print(f"{r['device']:8} {r['mode']:6} {r['members']:>3} {r['ms_per_step']:>9.2f} "
              f"{r['samples_per_s']:>10.0f} {r['ratio_to_k1']:>6.2f} {ops:>8}")
    for s in skipped + (["graph: CUDA only"] if not any(r["mode"] == "graph" for r in rows)
                        else []):
        print(f"skipped {s}")
    out = {"model": args.model, "method": args.method, "rows": rows, "skipped": skipped,
           "threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
