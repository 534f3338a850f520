"""The "(E)" rows of Table 3: two independently trained networks, softmax outputs averaged."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence

import torch

from .config import TrainConfig
from .errors import LCIError


def load_run(run_dir: str):
    """A :class:`~lci.trainer.Trainer` restored from a finished (or checkpointed) run folder."""
    from .trainer import Trainer

    cfg_path = os.path.join(run_dir, "config.json")
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    for p in (cfg_path, ckpt_path):
        if not os.path.isfile(p):
            raise LCIError(f"{run_dir!r} is not a run folder with a checkpoint: {p!r} is missing "
                           "(train with checkpoint_every >= 1)")
    with open(cfg_path) as fh:
        cfg = TrainConfig.from_dict(json.load(fh))
    trainer = Trainer(cfg)
    trainer.load_checkpoint(ckpt_path)
    return trainer


def topk_accuracy(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, probs.shape[1])
    hit = (probs.topk(k, dim=1).indices == labels[:, None]).any(1)
    return hit.float().mean().item()


def ensemble_eval(run_dirs: Sequence[str]) -> Dict[str, object]:
    """Test accuracy (top-1, top-5) of each member and of the averaged softmax of all."""
    if len(run_dirs) < 2:
        raise LCIError(f"an ensemble needs at least two runs, got {len(run_dirs)}")
    probs: List[torch.Tensor] = []
    members = []
    labels = None
    for d in run_dirs:
        tr = load_run(d)
        p = tr.test_probabilities().cpu()
        y = tr.test_labels().cpu()
        if labels is not None and (y.shape != labels.shape or not torch.equal(y, labels)):
            raise LCIError(f"{d!r} was evaluated on another test set than {run_dirs[0]!r}")
        labels = y
        probs.append(p)
        members.append({"run": d, "test_acc": topk_accuracy(p, y, 1),
                        "test_acc_top5": topk_accuracy(p, y, 5)})
    mean = torch.stack(probs).mean(0)
    return {"test_acc": topk_accuracy(mean, labels, 1),
            "test_acc_top5": topk_accuracy(mean, labels, 5),
            "members": members, "n_members": len(members)}
