"""Evaluation: predictions in chunks, accuracies and label-confidence statistics.

Metric names are those of docs/interfaces.md (Metrics); everything here runs once per epoch,
so reading values back to the host is fine (it is the one sync point of the epoch).
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, prep: Callable[[torch.Tensor], torch.Tensor],
                   autocast, chunk: int = 1024) -> torch.Tensor:
    """Float32 logits of ``model`` (put in eval mode) on uint8 images ``x``, in chunks."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, x.shape[0], chunk):
        with autocast():
            out.append(model(prep(x[i:i + chunk])).float())
    model.train(was_training)
    if not out:
        return torch.zeros(0, 0, device=x.device)
    return torch.cat(out)


@torch.no_grad()
def predict_logits_stream(models: Sequence[nn.Module], batches: Iterable,
                          prep: Callable[[torch.Tensor], torch.Tensor], autocast,
                          device: torch.device) -> List[torch.Tensor]:
    """Float32 logits of each model on a stream of uint8 batches ``(x, ...)`` (a DataLoader
    over image files): every batch is decoded and moved to ``device`` once for all models."""
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    outs: List[List[torch.Tensor]] = [[] for _ in models]
    for batch in batches:
        x = batch[0].to(device, non_blocking=True)
        with autocast():
            xb = prep(x)
            for o, m in zip(outs, models):
                o.append(m(xb).float())
    for m, t in zip(models, was_training):
        m.train(t)
    return [torch.cat(o) if o else torch.zeros(0, 0, device=device) for o in outs]


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    if labels.numel() == 0:
        return float("nan")
    return (pred == labels).float().mean().item()


def train_accuracies(pred: torch.Tensor, noisy: torch.Tensor, true: Optional[torch.Tensor],
                     prefix: str = "") -> Dict[str, float]:
    """Clean-sample fit, noisy-label memorisation and recovery of the true label (Figure 3)."""
    if true is None:  # real-world noise: nobody knows which labels are wrong
        return {}
    is_noisy = noisy != true
    clean, noisy_m = ~is_noisy, is_noisy
    out = {f"{prefix}train_acc_clean": accuracy(pred[clean], noisy[clean])}
    if noisy_m.any():
        out[f"{prefix}train_acc_noisy"] = accuracy(pred[noisy_m], noisy[noisy_m])
        out[f"{prefix}train_acc_noisy_true"] = accuracy(pred[noisy_m], true[noisy_m])
    return out


def confidence_stats(conf: np.ndarray, is_noisy: Optional[np.ndarray]) -> Dict[str, float]:
    """Mean C per group, |D_ce|/n and the AUROC of C for telling clean (high C) from noisy."""
    out = {"dce_fraction": float(conf.mean()) if conf.size else float("nan")}
    if is_noisy is None:
        return out
    clean = ~is_noisy
    if clean.any():
        out["conf_mean_clean"] = float(conf[clean].mean())
    if is_noisy.any():
        out["conf_mean_noisy"] = float(conf[is_noisy].mean())
    if clean.any() and is_noisy.any():
        from sklearn.metrics import roc_auc_score

        out["conf_auroc"] = float(roc_auc_score(clean.astype(np.int64), conf.astype(np.float64)))
    return out
