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
import os
import shutil
import tempfile
from typing import Any, Dict, Optional

from ray import tune

from lci.config import TrainConfig
from lci.errors import RECURRING_ERRORS
from lci.fitloop import train_loop
from lci.outputs import CHECKPOINT_FILE, CONFIG_FILE, HISTORY_FILE, RESULT_FILE
from lci.names import FUSED_KEY
from lci.trainer import Trainer

from .trial import (check_gpus_visible, cpu_share, end_on_recurring_error,
                    publish_run_files, split_config)

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
        check_gpus_visible(cfg)
        if cfg.threads == 0:
            # the trial's CPU share; a study sets `threads` itself, this covers direct Tuner use
            cfg = cfg.replace(threads=cpu_share())
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
                publish_run_files(run_dir)
                metrics = {**final, **metrics}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(run_dir)
                        if saved else None)

        train_loop(trainer, checkpoint=save, report=report)
    except RECURRING_ERRORS as e:
        end_on_recurring_error(e, trainer.epoch if trainer is not None else 0)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


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

        saved_cfg = json.loads(read(CONFIG_FILE))
        result = json.loads(read(RESULT_FILE))
        rows = list(csv.DictReader(io.StringIO(read(HISTORY_FILE))))
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
