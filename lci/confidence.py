"""Sample-wise label confidence (docs/method.md §2, Eq. 6, 8, 9 and Algorithm 1 line 8).

Pure tensor functions; nothing here calls ``.item()``, so they never force a host sync.
"""
from __future__ import annotations

from typing import Union

import torch

from .errors import ConfigError, allowed

Tensor = torch.Tensor
Scalar = Union[float, Tensor]

CE_NORMS = ("mean", "complement")
_DENOM_EPS = 1e-6  # floor of Σ(1 − C) for the "complement" normalization


def _detached(x: Scalar) -> Scalar:
    return x.detach() if isinstance(x, Tensor) else x


def label_confidence(robust_losses: Tensor, mu: Scalar, m: Scalar, slope: float = 0.5) -> Tensor:
    """``C = sigmoid(slope·(−L + μ + m))`` per sample, float32 and detached (no gradient flows
    through the confidence). ``C = 0.5`` exactly when ``L = μ + m``; lower loss, higher C."""
    losses = robust_losses.detach().float()
    return torch.sigmoid(slope * (-losses + _detached(mu) + _detached(m)))


def update_mu(mu: Scalar, batch_losses: Tensor, momentum: float = 0.7) -> Tensor:
    """``μ ← momentum·μ + (1 − momentum)·mean(L)``, a detached float32 tensor on the losses'
    device (``μ = 0`` at the start, Algorithm 1). The mean is over the last dimension: losses
    ``[B]`` give a 0-dim μ, losses ``[k, B]`` of k fused runs (:mod:`lci.fused`) one μ each."""
    mean = batch_losses.detach().float().mean(-1)
    mu = torch.as_tensor(_detached(mu), dtype=torch.float32, device=mean.device)
    return momentum * mu + (1 - momentum) * mean


def weighted_ce_term(C: Tensor, ce_per_sample: Tensor, norm: str = "mean") -> Tensor:
    """The confidence-weighted CE term of the noise-free model.

    ``"mean"`` (Eq. 9): ``mean(C·CE)``; ``"complement"`` (Eq. 8): ``Σ C·CE / Σ(1 − C)``,
    the denominator floored at 1e-6. Reduced over the last dimension (one value per fused
    run for ``[k, B]`` inputs).
    """
    weighted = C.float() * ce_per_sample.float()
    if norm == "mean":
        return weighted.mean(-1)
    if norm == "complement":
        return weighted.sum(-1) / (1 - C.float()).sum(-1).clamp_min(_DENOM_EPS)
    raise ConfigError(f"unknown ce_norm {norm!r}; allowed: {allowed(CE_NORMS)}")
