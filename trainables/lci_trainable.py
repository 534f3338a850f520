"""The Ray Tune function trainable around lci's :class:`~lci.trainer.Trainer`.

One trial = one ``lci`` run. Every epoch is one ``tune.report`` (one ``training_iteration``)
with the metric names of docs/interfaces.md; every ``checkpoint_every`` epochs (and the last) the
report carries a checkpoint. That checkpoint is a complete lci run folder: ``checkpoint.pt``
(both models, optimizer, μ, RNG states, noisy labels), ``config.json`` and ``history.csv``;
the final one also holds ``result.json`` and ``label_issues.csv``. So the run's own outputs
reach the experiment storage (local, NFS or S3) the same way checkpoints do, with no artifact
syncing, and ``lci train --resume --out <checkpoint folder>`` can continue any of them.

Data: each trial calls :func:`lci.data.load_data` inside its worker, which memoizes per process;
with ``reuse_actors=True`` (the study runner's choice) a worker process that runs several
trials loads each data set once. We prefer that to ``tune.with_parameters``: the driver never
needs the data set (on a cluster the head node may not have CIFAR, the GPU workers do), and
the object store does not pin a copy per data set for the whole study.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import tempfile
from typing import Any, Dict, Mapping, Optional, Tuple

from ray import tune

from lci.config import TrainConfig
from lci.errors import FAILED_KEY, RECURRING_ERRORS, LCIError
from lci.fitloop import train_loop
from lci.names import FUSED_KEY
from lci.trainer import Trainer

#: Config keys a study adds to every trial besides the TrainConfig fields. They label the trial
#: in ``params.json`` (for analysis/) and are stripped before ``TrainConfig.from_dict``;
#: ``fused_seeds`` makes the trial train those seeds as one fused network.
TRIAL_EXTRA_KEYS = ("cell", "phase", "study", "experiment", FUSED_KEY)
CHECKPOINT_FILE = "checkpoint.pt"


def split_config(config: Mapping[str, Any]) -> Tuple[TrainConfig, Dict[str, Any]]:
    """A trial config -> (TrainConfig, the extra keys). Tune's own ``__trial_index__`` style
    keys and the study's labels are extras; anything else must be a TrainConfig field."""
    fields = set(TrainConfig.field_names())
    extras = {k: v for k, v in config.items()
              if k not in fields and (k in TRIAL_EXTRA_KEYS or k.startswith("__"))}
    train = {k: v for k, v in config.items() if k not in extras}
    return TrainConfig.from_dict(train), extras


def _cpu_share() -> int:
    """Whole CPUs this trial asked for (at least 1): the torch thread count."""
    try:
        bundles = tune.get_context().get_trial_resources().bundles
        cpus = sum(b.get("CPU", 0) for b in bundles)
    except Exception:  # not inside a Tune trial (direct call in a test)
        return 0
    return max(1, int(math.floor(cpus))) if cpus else 1


def train_lci(config: Dict[str, Any]) -> None:
    """Tune function trainable: train one lci run, reporting every epoch (or, for a config
    with ``fused_seeds``, several seeds as one fused network: :mod:`trainables.fused`)."""
    # one line per checkpoint from Ray's storage layer would flood the driver's console
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    if FUSED_KEY in config:
        from .fused import train_fused

        return train_fused(config)
    # The run folder lives in a private temporary directory (never the trial's cwd, which
    # Tune moves): each checkpoint report uploads a copy of it to the experiment storage.
    run_dir = tempfile.mkdtemp(prefix="lci-trial-")
    trainer = None
    try:
        cfg, _ = split_config(config)
        _check_gpus_visible(cfg)
        if cfg.threads == 0:
            # the trial's CPU share; a study sets `threads` itself, this covers direct Tuner use
            cfg = cfg.replace(threads=_cpu_share())
        checkpoint = tune.get_checkpoint()
        if checkpoint is None and _replay_finished_run(cfg):
            return
        trainer = Trainer(cfg, out_dir=run_dir)
        if checkpoint is not None:
            # restored after a failure or from an interrupted study: continue from its epoch
            with checkpoint.as_directory() as d:
                trainer.load_checkpoint(os.path.join(d, CHECKPOINT_FILE))

        def save(tr: Trainer) -> None:
            tr.save_checkpoint(os.path.join(run_dir, CHECKPOINT_FILE))

        def report(tr: Trainer, metrics: Dict[str, float], final: Optional[Dict[str, Any]],
                   saved: bool) -> None:
            if final is not None:  # the last report: final extras and the full run folder
                _publish_run_files(run_dir)
                metrics = {**final, **metrics}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(run_dir)
                        if saved else None)

        train_loop(trainer, checkpoint=save, report=report)
    except RECURRING_ERRORS as e:
        # bad input or divergence: a retry would fail the same way, so the trial ends here,
        # with its reason in error.txt and in its last result (study.trials reads both)
        reason = f"{type(e).__name__}: {e}"
        _write_error(reason)
        tune.report({FAILED_KEY: reason, "epoch": trainer.epoch if trainer is not None else 0})
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _check_gpus_visible(cfg: TrainConfig) -> None:
    """A trial that Ray gave GPUs must see them in torch; otherwise it would silently train on
    the CPU (a container started without the NVIDIA runtime's variables, a CPU-only torch).
    That recurs on every retry on that node, so it is an :class:`LCIError`: the trial ends at
    once with one line naming the node."""
    import ray

    if cfg.device == "cpu":
        return
    try:
        gpu_ids = ray.get_gpu_ids()
    except Exception:  # not inside a Ray worker (a direct call in a test)
        return
    if not gpu_ids:
        return
    import torch

    if torch.cuda.is_available():
        return
    raise LCIError(
        f"node {socket.gethostname()} ({ray.util.get_node_ip_address()}): Ray gave this trial "
        f"GPU {', '.join(map(str, gpu_ids))} but torch sees no CUDA device "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}, "
        f"NVIDIA_VISIBLE_DEVICES={os.environ.get('NVIDIA_VISIBLE_DEVICES')!r}, torch "
        f"{torch.__version__} built for CUDA {torch.version.cuda}); expose the node's GPUs to "
        "its container, or set resources.gpu: 0")


def _write_error(reason: str, trial_path: Optional[str] = None) -> None:
    """The one-line reason into ``<trial folder>/error.txt`` in the experiment storage
    (``trial_path``: another trial folder than this trial's, a fused seed's)."""
    try:
        st = tune.get_context().get_storage()
        path = f"{trial_path or st.trial_fs_path}/error.txt"
        with st.storage_filesystem.open_output_stream(path) as fh:
            fh.write((reason + "\n").encode())
    except Exception as e:  # the reason still reaches the driver in the last result
        import warnings

        warnings.warn(f"could not write error.txt: {e}")


RUN_FILES = ("config.json", "history.csv", "result.json", "label_issues.csv")


def _publish_run_files(run_dir: str, trial_path: Optional[str] = None) -> None:
    """Copy the run's files (not the checkpoint) to ``<trial folder>/run/`` in the experiment
    storage, where analysis/ looks for ``label_issues.csv`` (``trial_path``: another trial
    folder than this trial's, a fused seed's). The final checkpoint holds the same files;
    this copy is a convenience, so a failure here only warns."""
    try:
        import pyarrow.fs

        st = tune.get_context().get_storage()
        dest = f"{trial_path or st.trial_fs_path}/run"
        st.storage_filesystem.create_dir(dest, recursive=True)
        for name in RUN_FILES:
            src = os.path.join(run_dir, name)
            if os.path.exists(src):
                pyarrow.fs.copy_files(src, f"{dest}/{name}",
                                      destination_filesystem=st.storage_filesystem)
    except Exception as e:  # a Ray API change or a storage hiccup must not fail the trial
        import warnings

        warnings.warn(f"could not copy the run files to the trial folder: {e}")


def _replay_finished_run(cfg: TrainConfig) -> bool:
    """A trial that already finished, restarted without its checkpoint (the driver crashed
    before Tune recorded the trial as finished): report its saved per-epoch metrics again from
    ``<trial folder>/run/`` instead of training it a second time. Returns whether it did."""
    import csv
    import io
    import json

    try:
        st = tune.get_context().get_storage()
        fs, run = st.storage_filesystem, f"{st.trial_fs_path}/run"

        def read(name: str) -> str:
            with fs.open_input_stream(f"{run}/{name}") as fh:
                return fh.read().decode()

        saved_cfg = json.loads(read("config.json"))
        result = json.loads(read("result.json"))
        rows = list(csv.DictReader(io.StringIO(read("history.csv"))))
    except Exception:  # no finished run there (the usual case), or unreadable: train
        return False
    resolved = cfg.resolved().to_dict()
    if saved_cfg != resolved or result.get("epochs_done") != resolved["epochs"] \
            or len(rows) != resolved["epochs"]:
        return False
    for i, row in enumerate(rows):
        metrics = {k: float(v) for k, v in row.items() if v not in ("", None)}
        metrics["epoch"] = int(metrics["epoch"])
        if i == len(rows) - 1:
            metrics = {**{k: v for k, v in result.items() if v is not None}, **metrics}
        tune.report(metrics)
    return True


def make_trainable(cpu: float = 1.0, gpu: float = 0.0, extra: Optional[Dict[str, float]] = None):
    """``train_lci`` with its per-trial resources (whole or fractional CPUs and GPUs).

    A trial that asks for no GPU sees none (Ray hides them), so ``device: auto`` trains on the
    CPU; with ``gpu: 0.5`` two trials share one GPU.
    """
    resources: Dict[str, float] = {"cpu": float(cpu), "gpu": float(gpu)}
    if extra:
        resources.update(extra)
    return tune.with_resources(train_lci, resources)
