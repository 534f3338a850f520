"""Per-sample classification losses (docs/method.md §6) and the divergences LCI needs (§2).

Every loss is a pure function ``(logits [N, K], labels) -> per-sample loss [N]`` in float32,
natural log, no reduction. ``labels`` are int64 class ids, or a float ``[N, K]`` target
distribution for the losses that have a natural soft-target form (all but ``mae`` and
``gce``, whose definitions need the probability of one labelled class). ``gjs`` takes a list
of logits tensors, one per augmented view.

Numerics: logits are cast to float32 first (callers may run under bf16 autocast),
probabilities come from ``log_softmax`` and anything that is logged is clamped at ``_EPS``,
so that logits of ±1e4 give finite values and finite gradients.

    >>> loss = get_loss("gce", q=0.5)
    >>> loss(logits, labels).mean().backward()
"""
from __future__ import annotations

import inspect
import math
from functools import partial
from typing import Callable, Dict, List, Mapping, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .errors import ConfigError, allowed
from .registry import Registry

Tensor = torch.Tensor
LossFn = Callable[..., Tensor]

LOSSES: Registry[LossFn] = Registry("loss")

_EPS = 1e-7  # floor of any probability that is logged (as the GJS code does)

# ------------------------------------------------------------------------------- helpers


def _log_probs(logits: Tensor) -> Tensor:
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [N, K], got {tuple(logits.shape)}")
    return F.log_softmax(logits.float(), dim=1)


def _is_soft(labels: Tensor) -> bool:
    return labels.is_floating_point()


def _target(labels: Tensor, log_p: Tensor) -> Tensor:
    """The target distribution ``[N, K]`` (one-hot for class ids), float32."""
    if _is_soft(labels):
        if labels.shape != log_p.shape:
            raise ValueError(f"soft targets must have the logits' shape {tuple(log_p.shape)}, "
                             f"got {tuple(labels.shape)}")
        return labels.float()
    return F.one_hot(labels.long(), log_p.shape[1]).float()


def _class_log_prob(labels: Tensor, log_p: Tensor, loss: str) -> Tensor:
    """``log p_y`` of the labelled class; losses built on it need class ids."""
    if _is_soft(labels):
        raise ValueError(f"loss {loss!r} needs integer class labels, not soft targets")
    return log_p.gather(1, labels.long().view(-1, 1)).squeeze(1)


def _kl(p: Tensor, log_p: Tensor, log_m: Tensor) -> Tensor:
    """Per-sample KL(p‖m) = Σ p·(log p − log m) with finite ``log_p`` (from log_softmax).

    Not ``xlogy(p, p)``: its gradient w.r.t. its second argument is p/p = NaN where p = 0.
    """
    return (p * (log_p - log_m)).sum(1)


def _kl_target(y: Tensor, log_m: Tensor) -> Tensor:
    """KL(y‖m) for a (constant) target y; ``xlogy`` makes 0·log 0 = 0, so a one-hot y
    contributes only its labelled class."""
    return (torch.xlogy(y, y) - y * log_m).sum(1)


def _safe_log(x: Tensor) -> Tensor:
    return x.clamp_min(_EPS).log()


# -------------------------------------------------------------------------------- losses


@LOSSES.register("ce")
def ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy ``−Σ_k y_k log p_k`` (soft targets allowed)."""
    log_p = _log_probs(logits)
    if _is_soft(labels):
        return -(_target(labels, log_p) * log_p).sum(1)
    return -_class_log_prob(labels, log_p, "ce")


@LOSSES.register("bs")
def bs(logits: Tensor, labels: Tensor, t: float = 0.2) -> Tensor:
    """Soft bootstrapping: target ``(1−t)·y + t·p``; p is NOT detached (Reed et al.)."""
    log_p = _log_probs(logits)
    target = (1 - t) * _target(labels, log_p) + t * log_p.exp()
    return -(target * log_p).sum(1)


@LOSSES.register("ls")
def ls(logits: Tensor, labels: Tensor, eps: float = 0.1) -> Tensor:
    """Label smoothing ``(1−eps)·y + eps/K`` (torch's ``label_smoothing`` convention)."""
    log_p = _log_probs(logits)
    target = (1 - eps) * _target(labels, log_p) + eps / log_p.shape[1]
    return -(target * log_p).sum(1)


@LOSSES.register("mae")
def mae(logits: Tensor, labels: Tensor, scale: float = 2.0) -> Tensor:
    """``scale·(1 − p_y)``; with scale 2 this is ‖p − y‖₁ for a one-hot y."""
    return scale * (1 - _class_log_prob(labels, _log_probs(logits), "mae").exp())


@LOSSES.register("gce")
def gce(logits: Tensor, labels: Tensor, q: float = 0.7) -> Tensor:
    """Generalized CE ``(1 − p_y^q)/q``; p_y^q as exp(q·log p_y) never underflows to NaN grads."""
    return (1 - torch.exp(q * _class_log_prob(labels, _log_probs(logits), "gce"))) / q


def _rce(log_p: Tensor, target: Tensor) -> Tensor:
    # reverse CE −Σ_k p_k·log y_k with log 0 := log 1e-4 (Wang et al., SCE)
    return -(log_p.exp() * target.clamp_min(1e-4).log()).sum(1)


@LOSSES.register("sce")
def sce(logits: Tensor, labels: Tensor, a: float = 0.1, b: float = 1.0) -> Tensor:
    """Symmetric CE ``a·CE + b·RCE``."""
    log_p = _log_probs(logits)
    target = _target(labels, log_p)
    return a * -(target * log_p).sum(1) + b * _rce(log_p, target)


@LOSSES.register("nce_rce")
def nce_rce(logits: Tensor, labels: Tensor, a: float = 1.0, b: float = 1.0) -> Tensor:
    """Normalized CE + RCE (Ma et al.): ``NCE = −log p_y / (−Σ_k log p_k)``."""
    log_p = _log_probs(logits)
    target = _target(labels, log_p)
    # the denominator is >= K·log K > 0 (its minimum is at the uniform p), so no clamp needed
    nce = (target * log_p).sum(1) / log_p.sum(1)
    return a * nce + b * _rce(log_p, target)


def _generalized_js(labels: Tensor, log_ps: Sequence[Tensor], pi1: float) -> Tensor:
    """``Σ_i π_i·KL(p_i‖M) / Z`` over ``[y, p_1..p_V]``, weights ``[π1, (1−π1)/V, ...]``.

    ``M = π1·y + (1−π1)·mean_v p_v`` and ``Z = −(1−π1)·ln(1−π1)`` (Englesson & Azizpour).
    """
    y = _target(labels, log_ps[0])
    ps = [lp.exp() for lp in log_ps]
    w = (1 - pi1) / len(ps)
    log_m = _safe_log(pi1 * y + w * sum(ps))
    total = pi1 * _kl_target(y, log_m)
    for p, lp in zip(ps, log_ps):
        total = total + w * _kl(p, lp, log_m)
    return total / (-(1 - pi1) * math.log(1 - pi1))


@LOSSES.register("js")
def js(logits: Tensor, labels: Tensor, pi1: float = 0.5) -> Tensor:
    """Jensen-Shannon loss between the label y and p, normalized by Z."""
    return _generalized_js(labels, [_log_probs(logits)], pi1)


@LOSSES.register("gjs")
def gjs(logits: Union[Sequence[Tensor], Tensor], labels: Tensor, pi1: float = 0.5) -> Tensor:
    """Generalized JS over ``[y, p(x'), p(x''), ...]``; a single tensor counts as one view (= js)."""
    views = [logits] if isinstance(logits, Tensor) else list(logits)
    if not views:
        raise ValueError("gjs needs at least one logits tensor")
    return _generalized_js(labels, [_log_probs(v) for v in views], pi1)


# ------------------------------------------------------------------------- divergences (docs/method.md §2)


def jsd(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Per-sample ``½KL(p‖M) + ½KL(q‖M)``, ``M = (p+q)/2``: LCI's augmentation-invariant term."""
    log_p, log_q = _log_probs(logits_a), _log_probs(logits_b)
    p, q = log_p.exp(), log_q.exp()
    log_m = _safe_log((p + q) / 2)
    return 0.5 * _kl(p, log_p, log_m) + 0.5 * _kl(q, log_q, log_m)


def kl_div_logits(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Per-sample ``KL(p‖q)`` from logits (the ``distill`` penalty KL(p(x';θ) ‖ p(x';θ*)))."""
    log_p, log_q = _log_probs(logits_p), _log_probs(logits_q)
    # log_q straight from log_softmax is finite, so no clamp is needed here
    return _kl(log_p.exp(), log_p, log_q)


# --------------------------------------------------------------------------------- API


def _defaults(fn: LossFn) -> Dict[str, float]:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


#: Default parameters of each loss (the values of docs/method.md §6).
LOSS_DEFAULTS: Dict[str, Dict[str, float]] = {n: _defaults(LOSSES.get(n)) for n in LOSSES.names()}

# Allowed range of each parameter name: (low, high, low_open, high_open).
_RANGES: Dict[str, Tuple[float, float, bool, bool]] = {
    "q": (0.0, 1.0, True, False),
    "pi1": (0.0, 1.0, True, True),
    "t": (0.0, 1.0, False, False),
    "eps": (0.0, 1.0, False, False),
    "scale": (0.0, math.inf, False, False),
    "a": (0.0, math.inf, False, False),
    "b": (0.0, math.inf, False, False),
}

# The search ranges of these parameters are a study fact: study/spec/keys.py (LOSS_SEARCH_SPACE).


def available() -> List[str]:
    """Names of the registered losses."""
    return LOSSES.names()


def check_params(name: str, params: Mapping[str, float]) -> None:
    """Raise :class:`ConfigError` for an unknown loss, parameter name or out-of-range value."""
    LOSSES.get(name)  # unknown name -> ConfigError listing the allowed ones
    names = list(LOSS_DEFAULTS[name])
    for key, value in params.items():
        if key not in names:
            ok = allowed(names) if names else "none (it has no parameters)"
            raise ConfigError(f"unknown parameter {key!r} for loss {name!r}; allowed: {ok}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"loss {name!r}: parameter {key}={value!r} must be a finite number")
        lo, hi, lo_open, hi_open = _RANGES[key]
        if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
            close = ")" if hi_open or hi == math.inf else "]"
            rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{close}"
            raise ConfigError(f"loss {name!r}: parameter {key}={value!r} is outside {rng}")


def get_loss(name: str, **params: float) -> LossFn:
    """``get_loss("gce", q=0.5)`` -> ``fn(logits, labels) -> per-sample loss [N]`` (float32)."""
    check_params(name, params)
    fn = LOSSES.get(name)
    return partial(fn, **{**LOSS_DEFAULTS[name], **params})
