"""The "(E)" rows of Table 3: two independently trained networks, softmax outputs averaged."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence

import torch

from .config import TrainConfig
from .errors import LCIError
from .outputs import CHECKPOINT_FILE, CONFIG_FILE


def load_run(run_dir: str):
    """A :class:`~lci.trainer.Trainer` restored from a finished (or checkpointed) run folder."""
    from .trainer import Trainer

    cfg_path = os.path.join(run_dir, CONFIG_FILE)
    ckpt_path = os.path.join(run_dir, CHECKPOINT_FILE)
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
    """Accuracy (top-1, top-5) of each member and of the averaged softmax of all, on the test
    set (``test_acc``) and on every further test set of the data (e.g. ``imagenet_test_acc``
    for WebVision, ``clean_val_acc`` for Clothing1M)."""
    if len(run_dirs) < 2:
        raise LCIError(f"an ensemble needs at least two runs, got {len(run_dirs)}")
    probs: Dict[str, List[torch.Tensor]] = {}
    labels: Dict[str, torch.Tensor] = {}
    members = []
    for d in run_dirs:
        tr = load_run(d)
        member: Dict[str, object] = {"run": d}
        sets = tr.eval_sets()
        if labels and set(sets) != set(labels):
            raise LCIError(f"{d!r} has the test sets {sorted(sets)}, {run_dirs[0]!r} has "
                           f"{sorted(labels)}")
        for name, (x, y) in sets.items():
            p = tr.probabilities(x).cpu()
            y = y.cpu()
            if name in labels and (y.shape != labels[name].shape
                                   or not torch.equal(y, labels[name])):
                raise LCIError(f"{d!r} was evaluated on another {name} set than {run_dirs[0]!r}")
            labels[name] = y
            probs.setdefault(name, []).append(p)
            member[f"{name}_acc"] = topk_accuracy(p, y, 1)
            member[f"{name}_acc_top5"] = topk_accuracy(p, y, 5)
        members.append(member)
    out: Dict[str, object] = {}
    for name, ps in probs.items():
        mean = torch.stack(ps).mean(0)
        out[f"{name}_acc"] = topk_accuracy(mean, labels[name], 1)
        out[f"{name}_acc_top5"] = topk_accuracy(mean, labels[name], 5)
    out.update(members=members, n_members=len(members))
    return out
