"""k runs of one config that differ only in their seed, trained as one fused network.

Why: a small network's step leaves most of a GPU idle (kernels of batch 128 and 32-128
channels), and separate processes do not overlap their kernels. Fused (:mod:`lci.hfta`), the
k runs' convolutions are one grouped convolution each, k times the work per kernel launch.

Each run (a *member*) keeps everything a run alone has: its noisy labels, split, data order
and views (its own generator, drawn in the same order as alone), its initial weights (made by
its own :class:`~lci.trainer.Trainer` exactly as alone), its BatchNorm statistics, μ, label
correction targets, θ and θ*, its optimizer state (an elementwise SGD over the fused weights
is each member's SGD), its metrics and its run folder. Its losses and metrics equal those of
the same seed trained alone, to float rounding (tests/test_fused.py).

How: a :class:`FusedTrainer` holds one ordinary :class:`~lci.trainer.Trainer` per member
(data, labels, generator, evaluation, history, run folder, checkpoint format) and one
:class:`FusedEngine` that steps all members at once. The engine is :class:`~lci.engine.Engine`
with per-sample values shaped ``[k, B]`` and each loss term a vector of k: the same step code,
so the same step replays as a CUDA graph (:mod:`lci.graphstep`). After each epoch the fused
weights are copied back into the members' networks, which then evaluate themselves.

A member whose loss turns non-finite ends (its reason kept in :attr:`FusedTrainer.failed`);
the others go on, untouched: no member's computation reads another member's weights.

Timing in a member's metrics: ``epoch_s`` is the fused epoch's wall time (all members share
it), so its ``samples_per_s`` is the member's own rate; the aggregate is the sum over members.
Evaluation is not fused: each member evaluates its own networks after the fused epoch.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from . import checkpoint as ckpt
from . import hfta
from .config import TrainConfig
from .engine import Engine
from .errors import CheckpointError, ConfigError, DivergenceError
from .methods import TERMS
from .trainer import Trainer, lr_factor


def check_fusable(configs: Sequence[TrainConfig]) -> None:
    """Configs that can train as one fused network: the same settings but distinct seeds."""
    if not configs:
        raise ConfigError("fusing needs at least one config")
    first = configs[0].to_dict()
    for c in configs[1:]:
        d = c.to_dict()
        diff = sorted(k for k in first if k != "seed" and first[k] != d[k])
        if diff:
            raise ConfigError(f"fused runs must differ only in seed; they differ in {diff[0]!r} "
                              f"({first[diff[0]]!r} vs {d[diff[0]]!r})")
    seeds = [c.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"fused runs need distinct seeds, got {seeds}")
    cfg = configs[0]
    if cfg.amp == "fp16":
        # one member's overflow would make the GradScaler skip the step of every member
        raise ConfigError("amp='fp16' cannot be fused (its GradScaler skips a step for all "
                          "members when one overflows); allowed: 'auto', 'off', 'bf16'")
    if cfg.compile:
        raise ConfigError("compile=true cannot be fused; use compile=false (the fused step "
                          "replays as a CUDA graph instead)")


class FusedEngine(Engine):
    """The step of k member engines as one: fused networks, one optimizer, μ of shape [k]."""

    def __init__(self, engines: Sequence[Engine]):
        first = engines[0]
        self.k = len(engines)
        self.members = list(engines)
        self.cfg, self.device, self.num_classes = first.cfg, first.device, first.num_classes
        self.augment = first.augment  # un-augmented input (label correction): the same for all
        self.augmenters = [e.augment for e in engines]
        cl = first._channels_last()
        self.theta = hfta.FusedNet([e.theta for e in engines], channels_last=cl)
        self.theta_star = (hfta.FusedNet([e.theta_star for e in engines], channels_last=cl)
                           if first.theta_star is not None else None)
        self._setup(first.correction_step, runs=(self.k,))

    # per-run values [k, B] (the member-major rows of a [k·B] vector)
    def _runs(self, per_sample: torch.Tensor) -> torch.Tensor:
        return per_sample.view(self.k, -1)

    def _sq_norm(self, diff: List[torch.Tensor]) -> torch.Tensor:
        k = self.k
        return torch.stack([d.reshape(k, -1).float().pow(2).sum(1) for d in diff]).sum(0)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x  # FusedNet lays its input out (memory format included)

    def _clean_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.augment.normalize(x.flatten(0, 1))

    def _views(self, x: torch.Tensor, n: int) -> List[torch.Tensor]:
        # member i's views from member i's generator, in the order its run alone draws them
        return [torch.cat([aug(x[i]) for i, aug in enumerate(self.augmenters)])
                for _ in range(n)]

    def _two_views_forward(self, fwd, v1: torch.Tensor, v2: torch.Tensor):
        if not self.cfg.fuse_views:
            return fwd(v1), fwd(v2)
        # one forward with each member's batch [its x', its x''], as that member alone has
        k, b = self.k, v1.shape[0] // self.k
        both = torch.cat([v1.unflatten(0, (k, b)), v2.unflatten(0, (k, b))], 1).flatten(0, 1)
        out = fwd(both).unflatten(0, (k, 2 * b))
        return out[:, :b].flatten(0, 1), out[:, b:].flatten(0, 1)

    def generators(self) -> List[torch.Generator]:
        return [a.generator for a in self.augmenters if a.generator is not None]

    def eager_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x`` uint8 ``[k, B, C, H, W]``, ``y`` ``[k, B]`` -> ``[len(TERMS) + 1, k]``."""
        return super().eager_step(x, y.reshape(-1))

    # ------------------------------------------------------------------ member state
    def _param_pairs(self, member: Engine):
        fused = [p for m in self.models() for p in m.parameters()]  # the optimizer's order
        return zip(fused, [p for m in member.models() for p in m.parameters()])

    @torch.no_grad()
    def copy_out(self, optimizer: bool = False) -> None:
        """The members' networks, μ and step count (and optimizer state) from the fused ones."""
        for name in ("theta", "theta_star"):
            if getattr(self, name) is not None:
                hfta.copy_out(getattr(self, name).net, [getattr(e, name) for e in self.members])
        lr = self.optimizer.param_groups[0]["lr"]
        for i, e in enumerate(self.members):
            e.mu.copy_(self.mu[i])
            e.step_count = self.step_count
            if not optimizer:
                continue
            for group in e.optimizer.param_groups:
                group["lr"] = float(lr)
            for fp, mp in self._param_pairs(e):
                buf = self.optimizer.state.get(fp, {}).get("momentum_buffer")
                if buf is not None:
                    e.optimizer.state[mp]["momentum_buffer"] = hfta.member_view(
                        buf, self.k, i, mp.shape).clone()

    @torch.no_grad()
    def copy_in(self) -> None:
        """The fused networks, μ, step count and optimizer state from the members' (a load)."""
        for name in ("theta", "theta_star"):
            if getattr(self, name) is not None:
                hfta.copy_in(getattr(self, name).net, [getattr(e, name) for e in self.members])
        for i, e in enumerate(self.members):
            self.mu[i] = e.mu
        self.step_count = self.members[0].step_count
        for i, e in enumerate(self.members):
            for fp, mp in self._param_pairs(e):
                buf = e.optimizer.state.get(mp, {}).get("momentum_buffer")
                if buf is None:
                    continue
                state = self.optimizer.state[fp]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(fp)
                hfta.member_view(state["momentum_buffer"], self.k, i, mp.shape).copy_(buf)
        if self._graph is not None:  # captured graphs hold the addresses of replaced tensors
            self._graph.reset()


class FusedTrainer:
    """k :class:`~lci.trainer.Trainer` runs (same config, distinct seeds) stepped as one.

    ``train_epoch`` returns each member's epoch metrics (None for a member that ended);
    ``out_dirs`` gives each member its own run folder, written as a run alone writes it.
    """

    def __init__(self, configs: Sequence[TrainConfig], out_dirs: Optional[Sequence[Optional[str]]] = None,
                 data=None):
        cfgs = [c.resolved() for c in configs]
        check_fusable(cfgs)
        dirs = list(out_dirs) if out_dirs is not None else [None] * len(cfgs)
        if len(dirs) != len(cfgs):
            raise ConfigError(f"{len(cfgs)} fused runs need {len(cfgs)} output folders, "
                              f"got {len(dirs)}")
        self.members: List[Trainer] = []
        for c, d in zip(cfgs, dirs):
            m = Trainer(c, out_dir=d, data=data)
            if m.file_backed:
                raise ConfigError(f"dataset {c.dataset!r} is read from files; fused runs need "
                                  "an in-memory data set (digits, cifar10, cifar100, .npz)")
            data = m.data  # loaded once, shared
            m.engine.use_cuda_graphs("off")  # members never step; the fused engine does
            self.members.append(m)
        first = self.members[0]
        self.k, self.cfg, self.device = len(cfgs), first.cfg, first.device
        self.steps_per_epoch, self.batch_size = first.steps_per_epoch, first.batch_size
        self.engine = FusedEngine([m.engine for m in self.members])
        self.cuda_graphs = self.engine.use_cuda_graphs(self.cfg.cuda_graphs)
        # the batches: one gather for all members per step
        if all(np.array_equal(m.train_idx, first.train_idx) for m in self.members):
            for m in self.members[1:]:
                m.x_train = first.x_train  # the same images: one copy on the device
            self._x = first.x_train
            self._rows = None
        else:
            self._x = torch.stack([m.x_train for m in self.members])
            self._rows = torch.arange(self.k, device=self.device)[:, None]
        self._y = torch.stack([m.y_noisy for m in self.members])
        self.epoch = 0
        self.failed: Dict[int, str] = {}  # member index -> why it ended

    @property
    def seeds(self) -> List[int]:
        return [m.cfg.seed for m in self.members]

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.epochs or len(self.failed) == self.k

    def live(self) -> List[int]:
        return [i for i in range(self.k) if i not in self.failed]

    def _batch(self, idx: torch.Tensor):
        x = self._x[idx] if self._rows is None else self._x[self._rows, idx]
        return x, self._y.gather(1, idx)

    def train_epoch(self) -> List[Optional[Dict[str, float]]]:
        cfg, eng = self.cfg, self.engine
        eng.set_lr(cfg.lr * lr_factor(cfg, self.epoch))
        eng.train()
        t0 = time.perf_counter()
        # each member's order from its own generator, drawn first as in its run alone
        perms = torch.stack([torch.randperm(m.n_train, device=self.device, generator=m.gen)
                             for m in self.members])
        sums = torch.zeros(len(TERMS) + 1, self.k, device=self.device)
        bs = self.batch_size
        for i in range(self.steps_per_epoch):
            sums += eng.step_vector(*self._batch(perms[:, i * bs:(i + 1) * bs]))
        values = sums.div(self.steps_per_epoch).T.tolist()  # the epoch's one sync
        epoch_s = time.perf_counter() - t0
        self.epoch += 1
        eng.copy_out()
        out: List[Optional[Dict[str, float]]] = []
        for i, m in enumerate(self.members):
            if i in self.failed:
                out.append(None)
                continue
            try:
                out.append(m.finish_epoch(values[i], epoch_s))
            except DivergenceError as e:
                self.failed[i] = f"{type(e).__name__}: {e}"
                out.append(None)
        return out

    def finish(self) -> List[Optional[Dict[str, Any]]]:
        """Each live member's final result (its run folder's result.json, label_issues.csv)."""
        return [None if i in self.failed else m.finish() for i, m in enumerate(self.members)]

    # --------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> Dict[str, Any]:
        """Every member's own checkpoint (each loadable by a run alone) and who ended."""
        self.engine.copy_out(optimizer=True)
        return {"format": ckpt.FORMAT, "fused": self.k, "epoch": self.epoch,
                "failed": dict(self.failed), "members": [m.state_dict() for m in self.members]}

    def load_state_dict(self, sd: Dict[str, Any], source: str = "checkpoint") -> None:
        members = sd.get("members")
        if not isinstance(members, list) or len(members) != self.k:
            raise CheckpointError(f"{source}: not a checkpoint of {self.k} fused runs")
        for m, msd in zip(self.members, members):
            m.load_state_dict(msd, source=f"{source} (seed {m.cfg.seed})")
        self.epoch = int(sd["epoch"])
        self.failed = {int(i): str(r) for i, r in sd["failed"].items()}
        self.engine.copy_in()

    def save_checkpoint(self, path: str) -> str:
        ckpt.save_atomic(self.state_dict(), path)
        return path

    def load_checkpoint(self, path: str) -> None:
        ckpt.load_into(self, path, "these fused runs")
