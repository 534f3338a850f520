"""One training step for every method of method.md §3: the baselines and the LCI variants.

The :class:`Engine` owns the network(s), the single optimizer and the running mean ``μ``.
``step`` takes a uint8 batch that already lives on the device, builds the views there, and
returns the loss terms as detached 0-dim tensors: nothing in here reads a value back to the
host, so a CUDA step never waits for the GPU.

Names follow the paper: ``theta`` is the noise-robust model θ, ``theta_star`` the noise-free
model θ* (used at inference for ``lci`` and ``lci-two-models``).
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .augment import Augmenter
from .config import BASELINE_METHODS, TrainConfig
from .confidence import label_confidence, update_mu, weighted_ce_term
from .losses import get_loss, jsd, kl_div_logits

#: Loss-term names, in the order they are accumulated; ``loss`` is their sum.
TERMS = ("loss_robust", "loss_ce", "loss_jsd", "loss_penalty")


def param_distance(a: nn.Module, b: nn.Module) -> torch.Tensor:
    """Σ over trainable parameters of ||θ − θ*||² (buffers such as BN statistics excluded)."""
    pa = [p for p in a.parameters() if p.requires_grad]
    pb = [p for p in b.parameters() if p.requires_grad]
    # foreach kernels: one launch per op for all tensors instead of a Python loop of ~100 ops
    norms = torch._foreach_norm(torch._foreach_sub(pa, pb))
    return torch.stack(norms).float().pow(2).sum()


class Engine:
    """Model(s) + optimizer + μ, and ``step(x, y)`` for the configured method."""

    def __init__(self, cfg: TrainConfig, make_model: Callable[[], nn.Module], num_classes: int,
                 augmenter: Augmenter, device: torch.device, total_steps: int):
        self.cfg = cfg
        self.device = device
        self.num_classes = num_classes
        self.augment = augmenter
        self.theta = make_model().to(device)
        self.theta_star: Optional[nn.Module] = None
        if cfg.two_models:
            # "derived from a shared underlying model": θ* starts as an exact copy of θ
            self.theta_star = (copy.deepcopy(self.theta) if cfg.init == "shared"
                               else make_model().to(device))
        if self._channels_last():
            for mdl in self.models():
                mdl.to(memory_format=torch.channels_last)
        params: List[nn.Parameter] = [p for mdl in self.models() for p in mdl.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                         nesterov=cfg.nesterov and cfg.momentum > 0,
                                         weight_decay=cfg.weight_decay)
        self.mu = torch.zeros((), device=device, dtype=torch.float32)
        self.step_count = 0
        # Algorithm 1 line 6: correction from iteration ceil(n/4) on (n = all iterations)
        self.correction_step = math.ceil(round(cfg.correction_start * total_steps, 9))
        loss_name = cfg.method if cfg.method in BASELINE_METHODS else cfg.robust_loss
        self.robust_loss = get_loss(loss_name, **cfg.robust_loss_params)
        self.uses_gjs = loss_name == "gjs"
        self.ce = get_loss("ce")
        self.amp_dtype = _amp_dtype(cfg.amp, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None
        self._fwd_theta = self._maybe_compile(self.theta)
        self._fwd_star = self._maybe_compile(self.theta_star) if self.theta_star is not None else None

    # ----------------------------------------------------------------------------- helpers
    def models(self) -> List[nn.Module]:
        return [m for m in (self.theta, self.theta_star) if m is not None]

    @property
    def inference_model(self) -> nn.Module:
        return self.theta_star if self.theta_star is not None else self.theta

    def train(self) -> None:
        for mdl in self.models():
            mdl.train()

    def eval(self) -> None:
        for mdl in self.models():
            mdl.eval()

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _channels_last(self) -> bool:
        cl = self.cfg.channels_last
        return self.device.type == "cuda" if cl == "auto" else bool(cl)

    def _maybe_compile(self, mdl: nn.Module):
        # compile a wrapper, keep the module itself: state_dict keys stay free of "_orig_mod."
        return torch.compile(mdl) if self.cfg.compile else mdl

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last() else x

    def _views(self, x: torch.Tensor, n: int) -> List[torch.Tensor]:
        return [self._prep(self.augment(x)) for _ in range(n)]

    def _two_views_forward(self, fwd, v1: torch.Tensor, v2: torch.Tensor, fused: bool):
        """Logits of both views; ``fused`` runs one forward on the concatenation."""
        if fused:
            out = fwd(torch.cat([v1, v2]))
            return out[: v1.shape[0]], out[v1.shape[0]:]
        return fwd(v1), fwd(v2)

    def _robust_terms(self, views: List[torch.Tensor], y: torch.Tensor):
        """θ's logits on x' (and x'' for gjs) and its per-sample robust loss L_i."""
        if self.uses_gjs:
            # GJS's own code forwards both views together
            l1, l2 = self._two_views_forward(self._fwd_theta, views[0], views[1], fused=True)
            return l1, self.robust_loss([l1, l2], y)
        logits = self._fwd_theta(views[0])
        return logits, self.robust_loss(logits, y)

    def _confidence(self, losses: torch.Tensor) -> torch.Tensor:
        # Algorithm 1: μ is updated (line 8) before C is computed (line 9)
        self.mu = update_mu(self.mu, losses, momentum=self.cfg.mu_momentum)
        return label_confidence(losses, self.mu, self.cfg.m, slope=self.cfg.slope)

    def _corrected_target(self, x: torch.Tensor, y: torch.Tensor,
                          theta_logits_view: torch.Tensor) -> torch.Tensor:
        """ỹ = (1−w)·onehot(y) + w·softmax(f(x;θ)), detached; one-hot before the start."""
        onehot = F.one_hot(y, self.num_classes).float()
        if self.step_count < self.correction_step:
            return onehot
        with torch.no_grad():
            if self.cfg.correction_source == "view":
                src = theta_logits_view.detach()
            else:
                # the oracle predicts as at inference: eval-mode BN, un-augmented image
                was_training = self.theta.training
                self.theta.eval()
                src = self._fwd_theta(self._prep(self.augment.normalize(x)))
                self.theta.train(was_training)
            w = self.cfg.correction_weight
            return ((1.0 - w) * onehot + w * torch.softmax(src.float(), dim=1)).detach()

    def _penalty(self, theta_logits: torch.Tensor, star_logits: torch.Tensor) -> torch.Tensor:
        if self.cfg.penalty == "distill":
            return kl_div_logits(theta_logits, star_logits).mean()
        return param_distance(self.theta, self.theta_star)

    # ------------------------------------------------------------------------------ methods
    def _baseline(self, x, y) -> Dict[str, torch.Tensor]:
        views = self._views(x, 2 if self.uses_gjs else 1)
        _, losses = self._robust_terms(views, y)
        return {"loss_robust": losses.mean()}

    def _lci_single(self, x, y) -> Dict[str, torch.Tensor]:
        # one model θ minimising the RHS of Eq. 4: robust loss + α · C-weighted CE of itself
        cfg = self.cfg
        views = self._views(x, 2 if self.uses_gjs else 1)
        logits, losses = self._robust_terms(views, y)
        conf = self._confidence(losses)
        ce = self.ce(logits, y)
        return {"loss_robust": losses.mean(),
                "loss_ce": cfg.alpha * weighted_ce_term(conf, ce, norm=cfg.ce_norm)}

    def _lci_two_models(self, x, y) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        views = self._views(x, 2 if self.uses_gjs else 1)
        theta_logits, losses = self._robust_terms(views, y)
        conf = self._confidence(losses)
        star_logits = self._fwd_star(views[0])
        ce = self.ce(star_logits, y)
        return {"loss_robust": losses.mean(),
                "loss_ce": cfg.alpha * weighted_ce_term(conf, ce, norm=cfg.ce_norm),
                "loss_penalty": cfg.lam * self._penalty(theta_logits, star_logits)}

    def _lci(self, x, y) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        views = self._views(x, 2)
        theta_logits, losses = self._robust_terms(views, y)
        conf = self._confidence(losses)
        target = self._corrected_target(x, y, theta_logits)
        s1, s2 = self._two_views_forward(self._fwd_star, views[0], views[1], cfg.fuse_views)
        ce = self.ce(s1, target)
        return {"loss_robust": losses.mean(),
                "loss_ce": cfg.alpha * weighted_ce_term(conf, ce, norm=cfg.ce_norm),
                "loss_jsd": cfg.rho * jsd(s1, s2).mean(),
                "loss_penalty": cfg.lam * self._penalty(theta_logits, s1)}

    # --------------------------------------------------------------------------------- step
    def step(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One optimisation step on a uint8 batch ``x`` with (noisy) labels ``y``."""
        fn = {"lci": self._lci, "lci-two-models": self._lci_two_models,
              "lci-single": self._lci_single}.get(self.cfg.method, self._baseline)
        with self.autocast():
            terms = fn(x, y)
        total = sum(t.float() for t in terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            self.optimizer.step()
        self.step_count += 1
        out = {k: terms[k].detach().float() if k in terms else None for k in TERMS}
        out["loss"] = total.detach()
        return out

    # -------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"theta": self.theta.state_dict(),
                "theta_star": self.theta_star.state_dict() if self.theta_star is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "mu": self.mu.detach().cpu(),
                "step_count": self.step_count}

    def load_state_dict(self, sd: dict) -> None:
        self.theta.load_state_dict(sd["theta"])
        if self.theta_star is not None:
            self.theta_star.load_state_dict(sd["theta_star"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.mu = sd["mu"].to(self.device, torch.float32)
        self.step_count = int(sd["step_count"])


def _amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
