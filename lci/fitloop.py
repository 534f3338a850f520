"""``lci.fit(config)``: one training run from start (or checkpoint) to result."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Union

from .config import TrainConfig
from .errors import LCIError
from .outputs import CHECKPOINT_FILE, RESULT_FILE
from .trainer import Trainer

ProgressFn = Callable[[Trainer, Dict[str, float]], None]
#: report(trainer, epoch metrics, final result or None, whether a checkpoint was just saved)
ReportFn = Callable[[Trainer, Dict[str, float], Optional[Dict[str, Any]], bool], None]


def train_loop(trainer: Trainer, *, checkpoint: Optional[Callable[[Trainer], None]] = None,
               report: Optional[ReportFn] = None) -> Dict[str, Any]:
    """The epoch loop of every run, shared by :func:`fit` and the Ray Tune trainable.

    After each epoch: on the last one ``trainer.finish()`` (result.json, label_issues.csv);
    then, every ``checkpoint_every`` epochs and at the end, ``checkpoint(trainer)``; then
    ``report(...)``. Finishing before the last checkpoint makes that checkpoint a complete run
    folder. Returns the final result (also for a run that was already done when resumed).
    """
    every = trainer.cfg.checkpoint_every
    final: Optional[Dict[str, Any]] = None
    while not trainer.done:
        metrics = trainer.train_epoch()
        if trainer.done:
            final = trainer.finish()
        due = checkpoint is not None and (trainer.done or bool(every and trainer.epoch % every == 0))
        if due:
            checkpoint(trainer)
        if report is not None:
            report(trainer, metrics, final, due)
    return final if final is not None else trainer.finish()


def check_new_run_dir(out_dir: str) -> None:
    """A new run goes into a missing or empty folder: one that holds a run is refused (resume
    it instead), and so is one that holds anything else (a run would overwrite files of the
    same names, e.g. someone's ``config.json``). Checks only; touches nothing."""
    if not os.path.exists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise LCIError(f"output folder {out_dir!r} is a file; choose a folder")
    names = sorted(os.listdir(out_dir))
    if not names:
        return
    if any(f in names for f in (CHECKPOINT_FILE, RESULT_FILE)):
        raise LCIError(f"{out_dir!r} already holds a run; pass resume=True (--resume) to continue "
                       "it, or choose another output folder")
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    raise LCIError(f"output folder {out_dir!r} is not empty ({shown}) and holds no run to "
                   "resume; choose a new or empty folder")


def fit(config: Union[TrainConfig, Dict[str, Any]], out_dir: Optional[str] = None, *,
        resume: bool = False, on_epoch: Optional[ProgressFn] = None, data=None) -> Dict[str, Any]:
    """Train one run and return its final metrics (the content of ``result.json``).

    With ``out_dir`` the run writes config.json, history.csv, checkpoint.pt (every
    ``checkpoint_every`` epochs), result.json and label_issues.csv there. ``resume=True``
    continues from ``out_dir/checkpoint.pt``; without it an ``out_dir`` that already holds a
    run is refused, so a finished run is never overwritten by accident.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    ckpt_path = os.path.join(out_dir, CHECKPOINT_FILE) if out_dir else None
    if out_dir and not resume:
        check_new_run_dir(out_dir)
    if resume and not out_dir:
        raise LCIError("resume needs the run's output folder")
    if resume:
        # every check before any file of the run changes: a refused resume (another config)
        # must leave config.json as it was, so the plain --resume still works afterwards
        from . import checkpoint as ckpt

        ckpt.check_config(ckpt.load(ckpt_path)["config"], cfg.resolved().to_dict(), ckpt_path)
    trainer = Trainer(cfg, out_dir, data=data)
    if resume:
        trainer.load_checkpoint(ckpt_path)
    save = (lambda tr: tr.save_checkpoint(ckpt_path)) if out_dir else None
    progress = (lambda tr, m, final, saved: on_epoch(tr, m)) if on_epoch else None
    return train_loop(trainer, checkpoint=save, report=progress)
