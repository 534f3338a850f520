"""Time per training step of each method, and its ratio to plain cross-entropy in the same run.

One :class:`lci.engine.Engine` per (model, method) is built the way ``Trainer`` builds it, but
from random uint8 batches already on the device (no data set, no noise, no evaluation), so the
figure is the cost of ``Engine.step`` alone: views, forwards, losses, backward, optimizer.
Label correction is switched on for the timed steps of ``lci`` (its most expensive phase).

Methods are interleaved: every repeat times ``--steps`` steps of each engine, in a shuffled
order, and the ratio to ``ce`` is taken within the repeat (the median over repeats is
reported), so a noisy shared machine moves the ratios far less than the absolute times;
``--steps 1`` with more ``--repeats`` interleaves finest. CUDA times with events around each
block (the only synchronisation); CPU with ``perf_counter``, and also with the process's CPU
time (``cpu ms``), which other processes on a shared machine barely move. On a busy CPU use
``--threads 1``: torch's threads waiting for a core stall every op, and CPU time then also
counts their spinning.

Before timing, one untimed step per engine is checked for host synchronisation (``host_syncs``
in each row; empty is right): ``.item()``, ``if tensor:`` and the like from Python on any
device, and on CUDA whatever CUDA's sync debug mode reports (its own notice that the mode is a
prototype is not a synchronisation). One more step is counted operator by operator
(``ops/step``: every ATen operator dispatched, counted with ``TorchDispatchMode``; each is a
kernel launch on a GPU, so this is the host's share of an eager step). On CUDA, ``--profile``
(on by default there) runs the torch profiler over ``--steps`` steps: kernels per step and the
GPU busy fraction (kernel time per step / the timed ms per step; 1.0 = the GPU never waits).

``--graphs`` adds, for every method, a row ``mode=graph`` whose engine replays the step as CUDA
graphs (``cuda_graphs=on``, CUDA only) beside the eager row. ``--batch`` overrides the batch.

    python benchmarks/step_cost.py [--models preact_resnet34 small_cnn] [--methods ce lci ...]
        [--batch N] [--graphs] [--steps 10] [--warmup 3] [--repeats 5] [--threads 0]
        [--device auto] [--compile] [--no-profile] [--json]

What to expect: CE is one forward+backward; ``lci`` with ``correction_source=view`` is θ on x'
plus θ* on x' and x'' (three forward+backward) plus the penalty and two augmentations, about
3x; the default (``correction_source=clean``) adds a no-grad forward of θ on x, about +1/3.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lci import graphstep
from lci.augment import Augmenter
from lci.config import TrainConfig
from lci.engine import Engine
from lci.models import create_model
from lci.trainer import resolve_device

# ------------------------------------------------------------------------- what is measured


@dataclass(frozen=True)
class Workload:
    """A model on batches of the shape its data set has (the same profile ``TrainConfig`` uses)."""

    dataset: str           # profile for the "auto" fields (lr, weight decay, augmentation)
    channels: int
    size: int
    batch: int
    pad: int
    hflip: bool
    num_classes: int = 10


WORKLOADS: Dict[str, Workload] = {
    "preact_resnet34": Workload("cifar10", 3, 32, 128, pad=4, hflip=True),  # CIFAR batches
    "small_cnn": Workload("digits", 1, 8, 64, pad=1, hflip=False),          # 8x8 digits
}

#: row label -> TrainConfig fields. ``ce`` comes first: every ratio is relative to it.
METHODS: Dict[str, Dict[str, object]] = {
    "ce": dict(method="ce"),
    "gce": dict(method="gce"),
    "gjs": dict(method="gjs"),
    "lci": dict(method="lci"),  # correction_source=clean, separate θ* forwards
    "lci:view": dict(method="lci", correction_source="view"),
    "lci:fused": dict(method="lci", fuse_views=True),
    "lci:view+fused": dict(method="lci", correction_source="view", fuse_views=True),
    "lci-two-models": dict(method="lci-two-models"),
    "lci-single": dict(method="lci-single"),
}

N_BATCHES = 4  # distinct random batches cycled through, so no step reuses the last one's input


# ------------------------------------------------------------------------------- building


def build_engine(model: str, options: Dict[str, object], device: torch.device, *,
                 compile: bool = False, seed: int = 0, graphs: bool = False) -> Engine:
    """An Engine as ``Trainer`` builds it (resolved config, device generator, seeded init),
    with label correction already active; ``graphs``: the step replays as CUDA graphs."""
    wl = WORKLOADS[model]
    cfg = TrainConfig(dataset=wl.dataset, model=model, device=device.type, compile=compile,
                      seed=seed, eval_train=False, cuda_graphs="on" if graphs else "off",
                      **options).resolved()
    gen = torch.Generator(device=device).manual_seed(seed)
    # stats of uniform random pixels; the values do not change the cost
    augment = Augmenter((0.5,) * wl.channels, (0.29,) * wl.channels, pad=wl.pad, hflip=wl.hflip,
                        mode=cfg.augment, generator=gen)

    def make_model():
        return create_model(model, wl.num_classes, in_channels=wl.channels, image_size=wl.size)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        engine = Engine(cfg, make_model, wl.num_classes, augment, device, total_steps=1000)
    engine.step_count = engine.correction_step  # time lci's label-corrected phase
    engine.use_cuda_graphs(cfg.cuda_graphs)
    engine.train()
    return engine


def random_batches(model: str, device: torch.device, seed: int = 0, batch: int = 0):
    wl = WORKLOADS[model]
    g = torch.Generator().manual_seed(seed)
    b = batch or wl.batch
    x = torch.randint(0, 256, (N_BATCHES, b, wl.channels, wl.size, wl.size),
                      generator=g, dtype=torch.uint8)
    y = torch.randint(0, wl.num_classes, (N_BATCHES, b), generator=g)
    return x.to(device), y.to(device)


# -------------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_steps(engine: Engine, xs: torch.Tensor, ys: torch.Tensor, n: int) -> None:
    for i in range(n):
        engine.step(xs[i % N_BATCHES], ys[i % N_BATCHES])


def time_steps(engine: Engine, xs: torch.Tensor, ys: torch.Tensor, n: int,
               device: torch.device) -> Tuple[float, Optional[float]]:
    """Milliseconds per step over ``n`` back-to-back steps: wall time, and on CPU also the
    process's CPU time (what this process got of the cores; other processes on a shared
    machine stretch the wall time, much less the CPU time)."""
    if device.type == "cuda":
        _sync(device)  # earlier work (other engines) must not land in this block
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run_steps(engine, xs, ys, n)
        end.record()
        end.synchronize()  # the only sync: after the timed block
        return start.elapsed_time(end) / n, None
    t0, c0 = time.perf_counter(), time.process_time()
    run_steps(engine, xs, ys, n)
    c1, t1 = time.process_time(), time.perf_counter()
    return (t1 - t0) * 1e3 / n, (c1 - c0) * 1e3 / n


# ---------------------------------------------------------------------------- host syncs

#: Tensor methods that read a value back to Python: on CUDA each one waits for the GPU.
_READBACKS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def recording_readbacks(calls: List[str], names=_READBACKS):
    """Record (into ``calls``) every call of the Tensor methods ``names`` inside the block."""
    saved = {name: getattr(torch.Tensor, name) for name in names}

    def recording(name, fn):
        def wrapper(self, *args, **kwargs):
            calls.append(name)
            return fn(self, *args, **kwargs)
        return wrapper

    try:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, recording(name, fn))
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def host_syncs(engine: Engine, x: torch.Tensor, y: torch.Tensor) -> List[str]:
    """What one ``engine.step`` reads back to the host: Python-level reads of tensor values
    (``.item()``, ``if tensor:``, ...) on any device, and on CUDA also every synchronising
    call CUDA's sync debug mode reports (C++ ones included). Empty means no sync point."""
    calls: List[str] = []
    cuda = x.device.type == "cuda"
    with warnings.catch_warnings(record=True) as caught, recording_readbacks(calls):
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.synchronize(x.device)
            torch.cuda.set_sync_debug_mode("warn")
        try:
            engine.step(x, y)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    syncs = [f"Tensor.{c}" for c in calls]
    syncs += [str(w.message).splitlines()[0] for w in caught if is_sync_warning(str(w.message))]
    return syncs


def is_sync_warning(message: str) -> bool:
    """A warning of CUDA's sync debug mode that reports a synchronising call ("called a
    synchronizing CUDA operation"); not its notice that the mode itself is a prototype."""
    return "called a synchronizing" in message.lower()


# ------------------------------------------------------------------- operators and kernels


class _OpCounter(TorchDispatchMode):
    """Counts every ATen operator dispatched (views and in-place ops included)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(engine: Engine, x: torch.Tensor, y: torch.Tensor) -> int:
    """Operators dispatched by one ``engine.step`` (a graph replay dispatches only the copies
    into and out of its static buffers)."""
    counter = _OpCounter()
    with counter:
        engine.step(x, y)
    return counter.count


def profile_steps(engine: Engine, xs: torch.Tensor, ys: torch.Tensor, n: int) -> Dict[str, float]:
    """Kernels per step and GPU kernel milliseconds per step over ``n`` steps (CUDA)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    _sync(xs.device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_steps(engine, xs, ys, n)
        _sync(xs.device)
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    kernel_us = sum(e.time_range.elapsed_us() for e in kernels)
    return {"kernels_per_step": len(kernels) / n, "kernel_ms_per_step": kernel_us / 1e3 / n}


# ------------------------------------------------------------------------------ benchmark


def bench_model(model: str, methods: List[str], device: torch.device, *, steps: int,
                warmup: int, repeats: int, compile: bool, batch: int = 0, graphs: bool = False,
                profile: bool = False) -> List[dict]:
    xs, ys = random_batches(model, device, batch=batch)
    modes = ["eager", "graph"] if graphs else ["eager"]
    keys = [(m, mode) for m in methods for mode in modes]
    engines = {(m, mode): build_engine(model, METHODS[m], device, compile=compile,
                                       graphs=mode == "graph") for m, mode in keys}
    for (m, mode), eng in engines.items():
        # allocator, cudnn autotune, compilation; graphs: the warm-up steps and the capture
        run_steps(eng, xs, ys, max(warmup, graphstep.WARMUP + 2) if mode == "graph" else warmup)
    # one more (untimed) step each, checked for host syncs, and one counted op by op
    syncs = {k: host_syncs(engines[k], xs[0], ys[0]) for k in keys}
    ops = {k: count_ops(engines[k], xs[1], ys[1]) for k in keys}
    _sync(device)
    times: Dict[tuple, List[float]] = {k: [] for k in keys}
    cpu: Dict[tuple, List[float]] = {k: [] for k in keys}
    for r in range(repeats):
        order = list(keys)
        random.Random(r).shuffle(order)  # no method always runs right after another
        for k in order:
            wall, cpu_ms = time_steps(engines[k], xs, ys, steps, device)
            times[k].append(wall)
            if cpu_ms is not None:
                cpu[k].append(cpu_ms)
    # a few steps suffice: the profiler's post-processing of ~5,000 kernels per step is slow
    prof = {k: profile_steps(engines[k], xs, ys, min(steps, 5)) for k in keys} if profile else {}
    # a diverged model would time NaN arithmetic: check once, after all timing
    finite = {k: all(bool(torch.isfinite(p).all()) for mdl in engines[k].models()
                     for p in mdl.parameters()) for k in keys}
    rows = []
    for k in keys:
        m, mode = k
        ce = ("ce", mode)
        row = {"model": model, "method": m, "mode": mode, "batch": int(xs.shape[1]),
               "options": METHODS[m], "ms_per_step": statistics.median(times[k]),
               "ratio_to_ce": _median_ratio(times[k], times[ce]),
               "ms_per_step_runs": times[k], "finite": finite[k], "host_syncs": syncs[k],
               "ops_per_step": ops[k],
               "graph_captures": engines[k]._graph.captures if mode == "graph" else 0}
        if mode == "graph":
            eager = times[(m, "eager")]
            row["speedup_vs_eager"] = statistics.median(e / g for e, g in zip(eager, times[k]))
        if cpu[k]:
            row.update(cpu_ms_per_step=statistics.median(cpu[k]),
                       cpu_ratio_to_ce=_median_ratio(cpu[k], cpu[ce]))
        if k in prof:
            row.update(prof[k])
            row["gpu_busy"] = prof[k]["kernel_ms_per_step"] / row["ms_per_step"]
        rows.append(row)
    return rows


def _median_ratio(a: List[float], ce: List[float]) -> float:
    """Median over repeats of the ratio within each repeat (exactly 1.0 for ce itself)."""
    return 1.0 if a is ce else statistics.median(x / y for x, y in zip(a, ce))


# ---------------------------------------------------------------------------------- main


def print_table(device: str, rows: List[dict], args) -> None:
    print(f"step cost on {device} ({torch.get_num_threads()} threads), {args.steps} steps x "
          f"{args.repeats} repeats after {args.warmup} warm-up; median ms/step, median ratio "
          "to ce (same mode) within a repeat; ops = ATen operators dispatched per step")
    has_cpu = any("cpu_ms_per_step" in r for r in rows)
    has_prof = any("gpu_busy" in r for r in rows)
    cpu_head = f"{'cpu ms':>10}{'x ce':>7}" if has_cpu else ""
    prof_head = f"{'kernels':>9}{'gpu ms':>8}{'busy':>6}" if has_prof else ""
    print(f"{'model':<16}{'method':<16}{'mode':<6}{'batch':>6}{'ms/step':>10}{'x ce':>7}"
          f"{'ops':>7}{cpu_head}{prof_head}   wall runs (ms)")
    for r in rows:
        runs = " ".join(f"{t:.1f}" for t in r["ms_per_step_runs"])
        flag = "" if r["finite"] else "  (non-finite parameters!)"
        if r["host_syncs"]:
            flag += f"  host syncs: {', '.join(sorted(set(r['host_syncs'])))}"
        if "speedup_vs_eager" in r:
            flag += f"  ({r['speedup_vs_eager']:.2f}x eager)"
        cpu_cols = (f"{r['cpu_ms_per_step']:>10.1f}{r['cpu_ratio_to_ce']:>7.2f}"
                    if "cpu_ms_per_step" in r else "")
        prof_cols = (f"{r['kernels_per_step']:>9.0f}{r['kernel_ms_per_step']:>8.2f}"
                     f"{r['gpu_busy']:>6.2f}" if "gpu_busy" in r else "")
        print(f"{r['model']:<16}{r['method']:<16}{r['mode']:<6}{r['batch']:>6}"
              f"{r['ms_per_step']:>10.2f}{r['ratio_to_ce']:>7.2f}{r['ops_per_step']:>7}"
              f"{cpu_cols}{prof_cols}   {runs}{flag}")


def main(argv: Optional[List[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                    help="row labels to time (ce is always included)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per engine first")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    ap.add_argument("--compile", action="store_true", help="torch.compile the models")
    ap.add_argument("--batch", type=int, default=0, help="batch size (0: the workload's)")
    ap.add_argument("--graphs", action="store_true",
                    help="also time every method replayed as CUDA graphs (CUDA only)")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="skip the torch-profiler pass (kernels per step, GPU busy; CUDA only)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0 or args.batch < 0:
        ap.error("--steps and --repeats must be >= 1, --warmup and --batch >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.graphs and device.type != "cuda":
        ap.error(f"--graphs needs a CUDA device (CUDA graphs), this run uses {device}")
    methods = ["ce"] + [m for m in args.methods if m != "ce"]

    rows: List[dict] = []
    for model in args.models:
        rows += bench_model(model, methods, device, steps=args.steps, warmup=args.warmup,
                            repeats=args.repeats, compile=args.compile, batch=args.batch,
                            graphs=args.graphs, profile=args.profile and device.type == "cuda")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print_table(f"{device} ({name})" if device.type == "cuda" else "cpu", rows, args)
    result = {"device": str(device), "device_name": name, "threads": torch.get_num_threads(),
              "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
              "compile": args.compile, "batch": args.batch, "graphs": args.graphs,
              "rows": rows}
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
