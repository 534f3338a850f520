"""What a study costs before it runs: trial-epochs and GPU-hours per phase, and its budget.

The epoch times are measurements, never estimates: ``study/epoch_times.csv`` holds one row per
(GPU kind, model, method) measured with ``benchmarks/epoch_time.py`` (the seconds of one
training epoch of a trial alone on the GPU, over ``images`` training images, with the method's
defaults, CUDA graphs on; the README's Performance section has the runs). A trial's epoch is
that time scaled by its training images (the data set's training set, less a search's
validation split, or ``train_subset``). A pair without a row is reported as unmeasured and not
counted. GPU-hours count each trial's whole GPU time at that rate: packing trials on one GPU
(``gpu: 0.5``) does not lower it with CUDA graphs (the README's packing table); a trial that
holds ``k`` whole GPUs (``gpu: 2``) counts ``k`` GPU-hours per hour (a run trains on one). Per-epoch
evaluation, checkpoints and start-up are not in the measured times; ASHA can only shorten a
search. So the figures are the training time the study asks for, a lower bound of the bill.

The spec's optional ``budget: {gpu_hours: N, gpu: H200}`` refuses a study whose counted
GPU-hours exceed ``N`` (``lci sweep`` and ``--dry-run``: exit 2 before anything is written).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from lci.errors import LCIError, allowed

from .phases import PHASES

EPOCH_TIMES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "epoch_times.csv")
BUDGET_KEYS = {"gpu_hours": "refuse the study when its GPU-hours (the dry run's) exceed this",
               "gpu": "the GPU kind the epoch times are taken for (default H200)"}
DEFAULT_GPU = "H200"
#: training images of the named sets whose size is known without loading them
TRAIN_IMAGES = {"cifar10": 50000, "cifar100": 50000}


def epoch_times(path: str = EPOCH_TIMES_FILE) -> Dict[Tuple[str, str, str], Tuple[int, float]]:
    """(gpu, model, method) -> (images, seconds per epoch over those images)."""
    with open(path, newline="") as fh:
        return {(r["gpu"], r["model"], r["method"]): (int(r["images"]), float(r["epoch_s"]))
                for r in csv.DictReader(fh)}


def gpu_kinds() -> List[str]:
    return sorted({k[0] for k in epoch_times()})


def validate_budget(value: Any) -> Dict[str, Any]:
    """The spec's ``budget`` section checked ({} when absent); LCIError otherwise."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise LCIError(f"budget={value!r} must be a mapping like {{gpu_hours: 100}}")
    unknown = [k for k in value if k not in BUDGET_KEYS]
    if unknown:
        raise LCIError(f"unknown key budget.{unknown[0]}; allowed: {allowed(BUDGET_KEYS)}")
    hours = value.get("gpu_hours")
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not hours > 0:
        raise LCIError(f"budget.gpu_hours={hours!r} must be a number of hours above 0")
    gpu = value.get("gpu", DEFAULT_GPU)
    if gpu not in gpu_kinds():
        raise LCIError(f"budget.gpu={gpu!r}; allowed (kinds with measured epoch times in "
                       f"{os.path.basename(EPOCH_TIMES_FILE)}): {allowed(gpu_kinds())}")
    return {"gpu_hours": float(hours), "gpu": gpu}


@dataclass
class Cost:
    gpu: str
    uses_gpu: bool
    gpus_held: float = 1.0  # GPUs a trial holds, at least one GPU's time
    trials: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    epochs: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    seconds: Dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    # (model, method, why) -> [trials, trial-epochs] not counted in seconds
    unmeasured: Dict[Tuple[str, str, str], List[int]] = field(default_factory=dict)

    @property
    def gpu_hours(self) -> float:
        return self._hours(sum(self.seconds.values()))

    def _hours(self, seconds: float) -> float:
        return seconds * self.gpus_held / 3600 if self.uses_gpu else 0.0

    def describe(self) -> str:
        head = (f"cost on {self.gpu} (training epochs at the measured times of "
                f"study/{os.path.basename(EPOCH_TIMES_FILE)}; evaluation, checkpoints and "
                "start-up not counted):")
        if not self.uses_gpu:
            head = "cost: the trials ask for no GPU (resources.gpu: 0), so no GPU-hours:"
        lines = [head, f"  {'phase':<10}  {'trials':>6}  {'trial-epochs':>12}  {'GPU-hours':>9}"]
        for p in PHASES + ("total",):
            t = sum(self.trials.values()) if p == "total" else self.trials[p]
            if not t:
                continue
            e = sum(self.epochs.values()) if p == "total" else self.epochs[p]
            s = sum(self.seconds.values()) if p == "total" else self.seconds[p]
            h = f"{self._hours(s):.1f}" if self.uses_gpu else "-"
            lines.append(f"  {p:<10}  {t:>6}  {e:>12,}  {h:>9}")
        for (model, method, why), (t, e) in sorted(self.unmeasured.items()):
            lines.append(f"  unmeasured: {method} on {model} ({why}): {t} trials, {e:,} "
                         "trial-epochs not in the GPU-hours")
        return "\n".join(lines)


def study_cost(spec, gpu: Optional[str] = None) -> Cost:
    """Trial-epochs and GPU seconds of every phase of ``spec`` on ``gpu`` (default: the
    budget's kind, else H200)."""
    from lci.config import TrainConfig

    from .experiment import Experiment, ExperimentContext
    from .graph import build_graph

    budget = validate_budget(spec.raw.get("budget"))
    cost = Cost(gpu or budget.get("gpu", DEFAULT_GPU), uses_gpu=spec.gpu > 0,
                gpus_held=max(1.0, float(spec.gpu)))
    table = epoch_times()
    ctx = ExperimentContext(spec=spec)
    for node in build_graph(spec):
        exp = Experiment(node, ctx)
        fixed = {p.name: p.value for p in node.cell.fixed_params}
        cfg = TrainConfig.from_known(exp.base_config(fixed)).resolved()
        epochs = int(cfg.epochs) * node.trials
        cost.trials[node.phase] += node.trials
        cost.epochs[node.phase] += epochs
        row = table.get((cost.gpu, cfg.model, cfg.method))
        images = TRAIN_IMAGES.get(cfg.dataset)
        if row is None or images is None:
            why = (f"no {cost.gpu} row" if row is None
                   else f"training-set size of {cfg.dataset} unknown before loading")
            miss = cost.unmeasured.setdefault((cfg.model, cfg.method, why), [0, 0])
            miss[0] += node.trials
            miss[1] += epochs
            continue
        if cfg.train_subset:
            images = min(images, int(cfg.train_subset))
        images = round(images * (1 - cfg.val_fraction))
        cost.seconds[node.phase] += epochs * row[1] * images / row[0]
    return cost


def check_budget(spec, cost: Optional[Cost] = None) -> None:
    """LCIError when the spec's budget is below the study's counted GPU-hours."""
    budget = validate_budget(spec.raw.get("budget"))
    if not budget:
        return
    cost = cost or study_cost(spec)
    if cost.gpu_hours > budget["gpu_hours"]:
        raise LCIError(f"study {spec.name}: about {cost.gpu_hours:.1f} GPU-hours on "
                       f"{cost.gpu} (see --dry-run), over budget.gpu_hours="
                       f"{budget['gpu_hours']:g}; raise the budget or shrink the study")
