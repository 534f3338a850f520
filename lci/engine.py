"""One training step for every method of docs/method.md (§2 the step, §5 the variants, §6 the baselines).

The :class:`Engine` owns the network(s), the single optimizer and the running mean ``μ``.
``step`` takes a uint8 batch that already lives on the device, builds the views there, and
returns the loss terms as detached 0-dim tensors: nothing in here reads a value back to the
host, so a CUDA step never waits for the GPU.

Few operators per step (each one is a kernel launch on a GPU, and the host's launch rate, not
the GPU, bounds a small network's step): the optimizer is foreach (CPU) or fused (CUDA), the
``||θ−θ*||²`` penalty's gradient ``±2λ(θ−θ*)`` is added to the gradients with two foreach ops
instead of being differentiated parameter by parameter, and the loss terms leave the step as
one stacked vector. On CUDA the whole step (views, forwards, losses, backward, optimizer, μ) is
captured once as a CUDA graph and replayed (:mod:`lci.graphstep`, ``cuda_graphs``).

Names follow the paper: ``theta`` is the noise-robust model θ, ``theta_star`` the noise-free
model θ* (used at inference for ``lci`` and ``lci-two-models``).
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from .augment import Augmenter
from .config import TrainConfig
from .confidence import label_confidence, update_mu, weighted_ce_term
from .losses import get_loss, jsd, kl_div_logits
from .methods import TERMS, get_method, loss_of


def trainable(mdl: nn.Module) -> List[nn.Parameter]:
    return [p for p in mdl.parameters() if p.requires_grad]


def param_distance(a: nn.Module, b: nn.Module) -> torch.Tensor:
    """Σ over trainable parameters of ||θ − θ*||² (buffers such as BN statistics excluded)."""
    # foreach kernels: one launch per op for all tensors instead of a Python loop of ~100 ops
    return _squared_norm(torch._foreach_sub(trainable(a), trainable(b)))


def _squared_norm(diff: List[torch.Tensor]) -> torch.Tensor:
    return torch.stack(torch._foreach_norm(diff)).float().pow(2).sum()


def _optimizer_impl(device: torch.device) -> dict:
    """One multi-tensor update for all parameters: fused kernels on CUDA (and a tensor lr can
    be used under CUDA-graph replay), foreach elsewhere (same arithmetic as the per-parameter
    loop, ~5 operators instead of ~5 per parameter)."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


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
        # Algorithm 1 line 6: correction from iteration ceil(n/4) on (n = all iterations)
        self._setup(math.ceil(round(cfg.correction_start * total_steps, 9)))

    def _setup(self, correction_step: int, runs: tuple = ()) -> None:
        """Everything but the networks: optimizer, μ, losses, precision. ``runs`` is the shape
        of the per-run values (μ, each loss term): ``()`` for one run, ``(k,)`` for the k
        runs of :class:`lci.fused.FusedEngine`."""
        cfg, device = self.cfg, self.device
        if self._channels_last():
            for mdl in self.models():
                mdl.to(memory_format=torch.channels_last)
        params: List[nn.Parameter] = [p for mdl in self.models() for p in mdl.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                         nesterov=cfg.nesterov and cfg.momentum > 0,
                                         weight_decay=cfg.weight_decay, **_optimizer_impl(device))
        # μ is updated in place: a captured step reads and writes this one tensor
        self.mu = torch.zeros(runs, device=device, dtype=torch.float32)
        self.step_count = 0
        self.correction_step = correction_step
        self.method = get_method(cfg.method)  # its step and terms (lci.methods)
        loss_name = loss_of(cfg.method, cfg.robust_loss)
        self.robust_loss = get_loss(loss_name, **cfg.robust_loss_params)
        self.uses_gjs = loss_name == "gjs"
        self.ce = get_loss("ce")
        self.amp_dtype = _amp_dtype(cfg.amp, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None
        self._fwd_theta = self._maybe_compile(self.theta)
        self._fwd_star = self._maybe_compile(self.theta_star) if self.theta_star is not None else None
        # l2 penalty: its gradient 2λ(θ−θ*) is added after backward (see _add_penalty_grad);
        # the fp16 GradScaler scales gradients, so there the penalty goes through autograd
        self._manual_penalty = ("loss_penalty" in self.method.terms and cfg.penalty == "l2"
                                and self.scaler is None)
        self._diff: Optional[List[torch.Tensor]] = None
        self._graph = None  # lci.graphstep.GraphStep once enabled
        self._zero = torch.zeros(runs, device=device)  # inactive terms' entry, made once

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
        # a captured graph must not keep autocast's cache of bf16 weights from capture time
        capturing = self.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        return torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=not capturing)

    def _channels_last(self) -> bool:
        cl = self.cfg.channels_last
        return self.device.type == "cuda" if cl == "auto" else bool(cl)

    def _maybe_compile(self, mdl: nn.Module):
        # compile a wrapper, keep the module itself: state_dict keys stay free of "_orig_mod."
        return torch.compile(mdl) if self.cfg.compile else mdl

    def generators(self) -> List[torch.Generator]:
        """The random generators a step draws from (a captured graph registers each)."""
        return [self.augment.generator] if self.augment.generator is not None else []

    def _runs(self, per_sample: torch.Tensor) -> torch.Tensor:
        """Per-sample values ``[N]`` as ``[..., B]``: batch means are over the last dimension,
        so a fused engine (``[k, B]``) reduces each run's batch on its own."""
        return per_sample

    def _sq_norm(self, diff: List[torch.Tensor]) -> torch.Tensor:
        """``Σ ||d||²`` over the parameter differences (per run for a fused engine)."""
        return _squared_norm(diff)

    def _clean_input(self, x: torch.Tensor) -> torch.Tensor:
        """The un-augmented batch as the network reads it (the label-correction oracle)."""
        return self._prep(self.augment.normalize(x))

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last() else x

    def _views(self, x: torch.Tensor, n: int) -> List[torch.Tensor]:
        return [self._prep(self.augment(x)) for _ in range(n)]

    def _two_views_forward(self, fwd, v1: torch.Tensor, v2: torch.Tensor):
        """Logits of both views of one network: two forwards, so BatchNorm normalises each
        view with its own batch statistics (Eq. 9's two calls; GJS's scripts, which never set
        its ``--onebatch``), or with ``fuse_views`` one forward on their concatenation."""
        if self.cfg.fuse_views:
            out = fwd(torch.cat([v1, v2]))
            return out[: v1.shape[0]], out[v1.shape[0]:]
        return fwd(v1), fwd(v2)

    def _robust_terms(self, views: List[torch.Tensor], y: torch.Tensor):
        """θ's logits on x' (and x'' for gjs) and its per-sample robust loss L_i."""
        if self.uses_gjs:
            l1, l2 = self._two_views_forward(self._fwd_theta, views[0], views[1])
            return l1, self._runs(self.robust_loss([l1, l2], y))
        logits = self._fwd_theta(views[0])
        return logits, self._runs(self.robust_loss(logits, y))

    def _confidence(self, losses: torch.Tensor) -> torch.Tensor:
        # Algorithm 1: μ is updated (line 8) before C is computed (line 9); in place, so that
        # a captured step keeps updating the same tensor
        self.mu.copy_(update_mu(self.mu, losses, momentum=self.cfg.mu_momentum))
        # μ[..., None]: one μ per run, broadcast over that run's batch
        return label_confidence(losses, self.mu.unsqueeze(-1), self.cfg.m, slope=self.cfg.slope)

    def _corrected_target(self, x: torch.Tensor, y: torch.Tensor,
                          theta_logits_view: torch.Tensor) -> torch.Tensor:
        """ỹ = (1−w)·onehot(y) + w·softmax(f(x;θ)), detached; one-hot before the start."""
        # scatter, not F.one_hot: one_hot checks the label range with a read-back on the CPU
        onehot = torch.zeros(y.shape[0], self.num_classes, device=y.device).scatter_(
            1, y[:, None], 1.0)
        if self.step_count < self.correction_step:
            return onehot
        with torch.no_grad():
            if self.cfg.correction_source == "view":
                src = theta_logits_view.detach()
            else:
                # the oracle predicts as at inference: eval-mode BN, un-augmented image
                was_training = self.theta.training
                self.theta.eval()
                src = self._fwd_theta(self._clean_input(x))
                self.theta.train(was_training)
            w = self.cfg.correction_weight
            return ((1.0 - w) * onehot + w * torch.softmax(src.float(), dim=1)).detach()

    def _penalty(self, theta_logits: torch.Tensor, star_logits: torch.Tensor) -> torch.Tensor:
        if self.cfg.penalty == "distill":
            return self._runs(kl_div_logits(theta_logits, star_logits)).mean(-1)
        if not self._manual_penalty:
            return self._sq_norm(torch._foreach_sub(trainable(self.theta),
                                                    trainable(self.theta_star)))
        # the value only; θ−θ* is kept for the gradient, added after backward
        with torch.no_grad():
            self._diff = torch._foreach_sub(trainable(self.theta), trainable(self.theta_star))
            return self._sq_norm(self._diff)

    def _add_penalty_grad(self) -> None:
        """∂(λ||θ−θ*||²)/∂θ = 2λ(θ−θ*) = −∂/∂θ*: two foreach ops instead of autograd's
        per-parameter backward of the norms (~8 operators per parameter)."""
        diff, self._diff = self._diff, None
        if diff is None or self.cfg.lam == 0:
            return
        pa, pb = trainable(self.theta), trainable(self.theta_star)
        for p in pa + pb:  # a parameter no loss term reached (never for these networks)
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        scale = 2.0 * self.cfg.lam
        torch._foreach_add_([p.grad for p in pa], diff, alpha=scale)
        torch._foreach_add_([p.grad for p in pb], diff, alpha=-scale)

    # ------------------------------------------------------------------------------ methods
    def _baseline(self, x, y) -> Dict[str, torch.Tensor]:
        views = self._views(x, 2 if self.uses_gjs else 1)
        _, losses = self._robust_terms(views, y)
        return {"loss_robust": losses.mean(-1)}

    def _lci_single(self, x, y) -> Dict[str, torch.Tensor]:
        # one model θ minimising the RHS of Eq. 4: robust loss + α · C-weighted CE of itself
        cfg = self.cfg
        views = self._views(x, 2 if self.uses_gjs else 1)
        logits, losses = self._robust_terms(views, y)
        conf = self._confidence(losses)
        ce = self._runs(self.ce(logits, y))
        return {"loss_robust": losses.mean(-1),
                "loss_ce": cfg.alpha * weighted_ce_term(conf, ce, norm=cfg.ce_norm)}

    def _lci_two_models(self, x, y) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        views = self._views(x, 2 if self.uses_gjs else 1)
        theta_logits, losses = self._robust_terms(views, y)
        conf = self._confidence(losses)
        star_logits = self._fwd_star(views[0])
        ce = self._runs(self.ce(star_logits, y))
        return {"loss_robust": losses.mean(-1),
                "loss_ce": cfg.alpha * weighted_ce_term(conf, ce, norm=cfg.ce_norm),
                "loss_penalty": cfg.lam * self._penalty(theta_logits, star_logits)}

    def _lci(self, x, y) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        views = self._views(x, 2)
        theta_logits, losses = self._robust_terms(views, y)
        conf = self._confidence(losses)
        target = self._corrected_target(x, y, theta_logits)
        s1, s2 = self._two_views_forward(self._fwd_star, views[0], views[1])
        ce = self._runs(self.ce(s1, target))
        return {"loss_robust": losses.mean(-1),
                "loss_ce": cfg.alpha * weighted_ce_term(conf, ce, norm=cfg.ce_norm),
                "loss_jsd": cfg.rho * self._runs(jsd(s1, s2)).mean(-1),
                "loss_penalty": cfg.lam * self._penalty(theta_logits, s1)}

    # --------------------------------------------------------------------------------- step
    def _method(self):
        """The code of the method's step (its ``step`` in :mod:`lci.methods`)."""
        return {"lci": self._lci, "two_models": self._lci_two_models,
                "single": self._lci_single, "baseline": self._baseline}[self.method.step]

    def active_terms(self) -> tuple:
        """The entries of ``TERMS`` this method computes (the others are reported as None)."""
        return self.method.terms

    def eager_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimisation step without graph capture (``step_count`` not advanced).

        Returns the detached float32 vector ``[*TERMS, loss]`` (0 for inactive terms): the
        same arithmetic whether run eagerly or captured by :class:`lci.graphstep.GraphStep`.
        (A fused engine returns ``[len(TERMS) + 1, k]``: a column per run.)
        """
        with self.autocast():
            terms = self._method()(x, y)
        vec = torch.stack([terms[k].float() if k in terms else self._zero for k in TERMS])
        per_run = vec.sum(0)
        # the runs share no parameter: the gradient of their sum is each run's own gradient
        total = per_run.sum() if per_run.dim() else per_run
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if self._manual_penalty:
                self._add_penalty_grad()
            self.optimizer.step()
        return torch.cat([vec, per_run[None]]).detach()

    def step_vector(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step; the loss terms as one device vector ``[*TERMS, loss]`` (a new tensor)."""
        out = self._graph(x, y) if self._graph is not None else self.eager_step(x, y)
        self.step_count += 1
        return out

    def step(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, Optional[torch.Tensor]]:
        """One optimisation step on a uint8 batch ``x`` with (noisy) labels ``y``."""
        vec = self.step_vector(x, y).unbind()  # views, no copies
        active = self.active_terms()
        out: Dict[str, Optional[torch.Tensor]] = {
            k: v if k in active else None for k, v in zip(TERMS, vec)}
        out["loss"] = vec[-1]
        return out

    def in_correction_phase(self) -> bool:
        """Label correction on (Algorithm 1 line 6): selects which captured graph replays."""
        return self.step_count >= self.correction_step

    def use_cuda_graphs(self, mode: str = "auto", capture: Optional[bool] = None) -> bool:
        """Replay the step as CUDA graphs from now on (``cuda_graphs`` of the config).

        ``auto``: on CUDA when the step can be captured (no fp16 GradScaler, no
        ``compile``); ``on``: required (a clear error when impossible); ``off``: eager.
        ``capture=False`` runs the graph path's static buffers and device lr without
        capturing (tests on CPU). Returns whether the graph path is in use.
        """
        from .graphstep import GraphStep, graph_unsupported

        if mode == "off":
            self._graph = None
            return False
        why = graph_unsupported(self) if capture is not False else None
        if why:
            if mode == "on":
                from .errors import ConfigError
                raise ConfigError(f"cuda_graphs=on: {why}; use cuda_graphs=auto or off")
            return False
        self._graph = GraphStep(self, capture=self.device.type == "cuda" if capture is None
                                else capture)
        return True

    def set_lr(self, lr: float) -> None:
        """The learning rate of every parameter group (a device tensor under graph replay)."""
        if self._graph is not None:
            self._graph.set_lr(lr)
            return
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # -------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"theta": self.theta.state_dict(),
                "theta_star": self.theta_star.state_dict() if self.theta_star is not None else None,
                "optimizer": _plain_lr(self.optimizer.state_dict()),
                "mu": self.mu.detach().cpu(),
                "step_count": self.step_count}

    def load_state_dict(self, sd: dict) -> None:
        self.theta.load_state_dict(sd["theta"])
        if self.theta_star is not None:
            self.theta_star.load_state_dict(sd["theta_star"])
        self.optimizer.load_state_dict(sd["optimizer"])  # new momentum buffers ...
        self.mu.copy_(sd["mu"].to(self.device, torch.float32))
        self.step_count = int(sd["step_count"])
        if self._graph is not None:  # ... so graphs captured on the old ones are dropped
            self._graph.reset()


def _plain_lr(sd: dict) -> dict:
    """The optimizer state with Python-float learning rates (a device lr is graph state)."""
    for group in sd["param_groups"]:  # copies of the live groups: safe to change
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
    return sd


def _amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
