"""The Tune trial of fused seeds: one trial trains the seeds of ``fused_seeds`` as one network.

A study with ``fuse_seeds: true`` gives each cell's evaluation (each sweep value) one trial
whose config holds the seeds (:data:`study.trials.FUSED_KEY`); :func:`train_fused` trains them
with :class:`lci.fused.FusedTrainer`. What a reader of trials sees is unchanged: each seed
gets the trial folder an unfused trial of that seed would have, ``<trial folder>-s<seed>``,
with its ``params.json`` (the trial's config with that seed), a ``result.json`` line per epoch
(the final line with the run's result), ``run/`` (its run files) and, when it diverged, its
``error.txt`` and a last line with the reason. The fused trial's own folder holds its
checkpoints (every member's state: Tune restores a fused trial as it restores any other) and
its reports to Tune: the epoch, the live members and the mean of their metrics.

A member that diverges ends alone (its folder says why); the trial fails only when all did.
A fused trial restarted without a checkpoint trains again (no replay of a finished run).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional

from ray import tune

from lci.errors import FAILED_KEY, RECURRING_ERRORS
from lci.fused import FusedTrainer
from lci.names import (FUSED_KEY, MEMBERS_LIVE_KEY, PARAMS_FILE, TUNE_RESULT_FILE,
                       fused_member_folder)
from lci.outputs import CHECKPOINT_FILE

from .trial import (check_gpus_visible, cpu_share, end_on_recurring_error,
                    publish_run_files, split_config, write_error)


class _MemberFolders:
    """The seeds' trial folders in the experiment storage (local, NFS or S3)."""

    def __init__(self, config: Dict[str, Any], seeds: List[int]):
        st = tune.get_context().get_storage()
        self.fs = st.storage_filesystem
        self.trial_id = tune.get_context().get_trial_id()
        self.paths = [fused_member_folder(st.trial_fs_path, s) for s in seeds]
        params = {k: v for k, v in config.items() if k != FUSED_KEY}
        for path, seed in zip(self.paths, seeds):
            self.fs.create_dir(path, recursive=True)
            self._write(path, PARAMS_FILE, json.dumps({**params, "seed": seed}, indent=2))

    def _write(self, path: str, name: str, text: str) -> None:
        with self.fs.open_output_stream(f"{path}/{name}") as fh:
            fh.write(text.encode())

    def publish(self, trainer: FusedTrainer, finals: Optional[List[Optional[dict]]] = None) -> None:
        """Every member's result lines so far (rewritten whole: a restored trial's member has
        its history back from the checkpoint), its error, and at the end its run files."""
        for i, (m, path) in enumerate(zip(trainer.members, self.paths)):
            tid = os.path.basename(path)
            lines = [{**h, "trial_id": tid, "training_iteration": n + 1}
                     for n, h in enumerate(m.history)]
            final = finals[i] if finals else None
            if final is not None and lines:
                lines[-1] = {**{k: v for k, v in final.items() if v is not None}, **lines[-1]}
            reason = trainer.failed.get(i)
            if reason is not None:
                lines.append({FAILED_KEY: reason, "epoch": m.epoch, "trial_id": tid})
                write_error(reason, path)
            self._write(path, TUNE_RESULT_FILE, "".join(json.dumps(l) + "\n" for l in lines))
            if final is not None and m.writer is not None:
                publish_run_files(m.writer.out_dir, path)


def _report(trainer: FusedTrainer, metrics: List[Optional[dict]]) -> Dict[str, Any]:
    """What the fused trial reports to Tune: the epoch, the live members, their mean metrics."""
    live = [m for m in metrics if m is not None]
    out: Dict[str, Any] = {"epoch": trainer.epoch, MEMBERS_LIVE_KEY: len(trainer.live())}
    for k in (live[0] if live else {}):
        vals = [m[k] for m in live if isinstance(m.get(k), (int, float))]
        if len(vals) == len(live) and k != "epoch":
            out[k] = sum(vals) / len(vals)
    if not trainer.live():
        out[FAILED_KEY] = "every fused seed failed; first: " + next(iter(trainer.failed.values()))
    return out


def train_fused(config: Dict[str, Any]) -> None:
    root = tempfile.mkdtemp(prefix="lci-fused-")
    trainer = None
    try:
        cfg, extras = split_config(config)
        seeds = [int(s) for s in extras[FUSED_KEY]]
        check_gpus_visible(cfg)
        if cfg.threads == 0:
            cfg = cfg.replace(threads=cpu_share())
        folders = _MemberFolders(config, seeds)
        trainer = FusedTrainer([cfg.replace(seed=s) for s in seeds],
                               out_dirs=[os.path.join(root, f"s{s}") for s in seeds])
        ckpt_dir = os.path.join(root, "checkpoint")
        os.makedirs(ckpt_dir)
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                trainer.load_checkpoint(os.path.join(d, CHECKPOINT_FILE))
            folders.publish(trainer)
        every = trainer.cfg.checkpoint_every
        while not trainer.done:
            metrics = trainer.train_epoch()
            finals = trainer.finish() if trainer.done else None
            folders.publish(trainer, finals)
            due = trainer.done or bool(every and trainer.epoch % every == 0)
            if due:
                trainer.save_checkpoint(os.path.join(ckpt_dir, CHECKPOINT_FILE))
            tune.report(_report(trainer, metrics),
                        checkpoint=tune.Checkpoint.from_directory(ckpt_dir) if due else None)
    except RECURRING_ERRORS as e:
        end_on_recurring_error(e, trainer.epoch if trainer is not None else 0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
