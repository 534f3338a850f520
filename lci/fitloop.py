"""``lci.fit(config)``: one training run from start (or checkpoint) to result."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Union

from .config import TrainConfig
from .errors import LCIError
from .trainer import Trainer

ProgressFn = Callable[[Trainer, Dict[str, float]], None]


def fit(config: Union[TrainConfig, Dict[str, Any]], out_dir: Optional[str] = None, *,
        resume: bool = False, on_epoch: Optional[ProgressFn] = None, data=None) -> Dict[str, Any]:
    """Train one run and return its final metrics (the content of ``result.json``).

    With ``out_dir`` the run writes config.json, history.csv, checkpoint.pt (every
    ``checkpoint_every`` epochs), result.json and label_issues.csv there. ``resume=True``
    continues from ``out_dir/checkpoint.pt``; without it an ``out_dir`` that already holds a
    run is refused, so a finished run is never overwritten by accident.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    ckpt_path = os.path.join(out_dir, "checkpoint.pt") if out_dir else None
    if out_dir and not resume and any(
            os.path.exists(os.path.join(out_dir, f)) for f in ("checkpoint.pt", "result.json")):
        raise LCIError(f"{out_dir!r} already holds a run; pass resume=True (--resume) to continue "
                       "it, or choose another output folder")
    if resume and not out_dir:
        raise LCIError("resume needs the run's output folder")
    trainer = Trainer(cfg, out_dir, data=data)
    if resume:
        trainer.load_checkpoint(ckpt_path)
    every = trainer.cfg.checkpoint_every
    while not trainer.done:
        metrics = trainer.train_epoch()
        if out_dir and every and (trainer.epoch % every == 0 or trainer.done):
            trainer.save_checkpoint(ckpt_path)
        if on_epoch is not None:
            on_epoch(trainer, metrics)
    return trainer.finish()
