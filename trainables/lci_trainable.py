"""The Ray Tune function trainable around lci's :class:`~lci.trainer.Trainer`.

One trial = one ``lci`` run. Every epoch is one ``tune.report`` (one ``training_iteration``)
with the metric names of interfaces.md; every ``checkpoint_every`` epochs (and the last) the
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
import tempfile
from typing import Any, Dict, Mapping, Optional, Tuple

from ray import tune

from lci.config import TrainConfig
from lci.trainer import Trainer

#: Config keys a study adds to every trial besides the TrainConfig fields. They label the trial
#: in ``params.json`` (for analysis/) and are stripped before ``TrainConfig.from_dict``.
TRIAL_EXTRA_KEYS = ("cell", "phase", "study")
#: Test hook (extra config keys, stripped like the others): the first attempt of the trial
#: raises after epoch ``__fail_once_after``; a marker file in ``__fail_marker_dir`` (absolute)
#: makes the retry pass. Used to test restore-from-checkpoint with a real Ray.
FAIL_ONCE_KEY, FAIL_MARKER_KEY = "__fail_once_after", "__fail_marker_dir"
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


def _maybe_fail_once(epoch: int, extras: Mapping[str, Any]) -> None:
    """The test hook above; does nothing unless the trial config asks for it."""
    after = extras.get(FAIL_ONCE_KEY)
    if after is None or epoch != int(after):
        return
    marker_dir = extras[FAIL_MARKER_KEY]
    marker = os.path.join(marker_dir, f"failed-once-{tune.get_context().get_trial_id()}")
    if not os.path.exists(marker):
        os.makedirs(marker_dir, exist_ok=True)
        open(marker, "w").close()
        raise RuntimeError(f"injected failure after epoch {epoch} ({FAIL_ONCE_KEY})")


def train_lci(config: Dict[str, Any]) -> None:
    """Tune function trainable: train one lci run, reporting every epoch."""
    # one line per checkpoint from Ray's storage layer would flood the driver's console
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    cfg, extras = split_config(config)
    if cfg.threads == 0:
        # the trial's CPU share; a study sets `threads` itself, this covers direct Tuner use
        cfg = cfg.replace(threads=_cpu_share())
    # The run folder lives in a private temporary directory (never the trial's cwd, which
    # Tune moves): each checkpoint report uploads a copy of it to the experiment storage.
    run_dir = tempfile.mkdtemp(prefix="lci-trial-")
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None and _replay_finished_run(cfg):
            return
        trainer = Trainer(cfg, out_dir=run_dir)
        if checkpoint is not None:
            # restored after a failure or from an interrupted study: continue from its epoch
            with checkpoint.as_directory() as d:
                trainer.load_checkpoint(os.path.join(d, CHECKPOINT_FILE))
        every = trainer.cfg.checkpoint_every
        while not trainer.done:
            metrics = trainer.train_epoch()  # DivergenceError fails this trial alone
            if trainer.done:
                # the last report: final extras (best_test_acc, wall_s, ...) and the full run folder
                final = trainer.finish()
                trainer.save_checkpoint(os.path.join(run_dir, CHECKPOINT_FILE))
                _publish_run_files(run_dir)
                tune.report({**final, **metrics},
                            checkpoint=tune.Checkpoint.from_directory(run_dir))
            elif every and trainer.epoch % every == 0:
                trainer.save_checkpoint(os.path.join(run_dir, CHECKPOINT_FILE))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(run_dir))
            else:
                tune.report(metrics)
            _maybe_fail_once(trainer.epoch, extras)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


RUN_FILES = ("config.json", "history.csv", "result.json", "label_issues.csv")


def _publish_run_files(run_dir: str) -> None:
    """Copy the run's files (not the checkpoint) to ``<trial folder>/run/`` in the experiment
    storage, where analysis/ looks for ``label_issues.csv``. The final checkpoint holds the
    same files; this copy is a convenience, so a failure here only warns."""
    try:
        import pyarrow.fs

        st = tune.get_context().get_storage()
        dest = f"{st.trial_fs_path}/run"
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
