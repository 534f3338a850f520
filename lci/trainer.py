"""The fit loop as an object: one call per epoch, so that ``lci.fit`` and the Ray Tune trainable
drive the same code (the trainable reports and checkpoints between epochs).

Data layout follows airbench: the whole training set sits on the device as uint8, batches are
drawn with ``randperm`` on the device from a dedicated generator, views are made on the device.
File-backed sets (Clothing1M, WebVision: :mod:`lci.data.realworld`) cannot sit anywhere whole: a
persistent DataLoader decodes each batch of the same ``randperm`` order to uint8 in worker
processes, the batch is copied to the device, and the views are made there as for the others;
evaluation streams the files once per pass for both models.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from . import checkpoint as ckpt
from . import provenance
from .augment import Augmenter
from .config import TrainConfig
from .confidence import label_confidence
from .data import DataBundle, balanced_subset, load_data, split_validation
from .data.cifarn import load_human_labels
from .engine import Engine
from .errors import DataError, DivergenceError
from .methods import TERMS
from .metrics import confidence_stats, predict_logits, predict_logits_stream
from .models import create_model
from .names import human_noise_key
from .noise import make_noisy_labels
from .outputs import CHECKPOINT_FILE, RunWriter

logger = logging.getLogger(__name__)


#: evaluation batch on CUDA: 4096 CIFAR images through preact_resnet34 without grad in bf16
#: take < 1 GiB of activations, and 10,000 test images are three forwards
EVAL_CHUNK_CUDA = 4096


def _acc(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Accuracy as a 0-dim float32 device tensor (NaN for no labels, like metrics.accuracy)."""
    return (pred == labels).float().mean()


def _read_back(vals: Dict[str, torch.Tensor], *vectors: torch.Tensor):
    """``(dict of floats, *numpy vectors)`` from device scalars and float32 vectors with one
    device-to-host copy (each ``.item()`` would be a sync of its own)."""
    names = list(vals)
    parts = [torch.stack([vals[k].float() for k in names])] if names else []
    parts += [v.float().reshape(-1) for v in vectors]
    if not parts:
        return ({},) + tuple(np.zeros(0, np.float32) for _ in vectors)
    host = torch.cat(parts).cpu().numpy()
    out = {k: float(v) for k, v in zip(names, host[:len(names)])}
    arrays, pos = [], len(names)
    for v in vectors:
        arrays.append(host[pos:pos + v.numel()])
        pos += v.numel()
    return (out,) + tuple(arrays)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from .errors import ConfigError
        raise ConfigError(f"device={name!r} but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Learning-rate multiplier for 0-based ``epoch``: a pure function, so resuming needs no
    scheduler state."""
    if cfg.lr_schedule == "multistep":
        # GJS: ×0.1 at epochs 200 and 300 of 400
        return 0.1 ** sum(epoch >= round(f * cfg.epochs) for f in cfg.lr_milestones)
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    return 1.0


class Trainer:
    """Builds data, noise, models and optimizer from a config; ``train_epoch`` runs one epoch."""

    def __init__(self, config: TrainConfig, out_dir: Optional[str] = None,
                 data: Optional[DataBundle] = None):
        cfg = config.resolved()
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        data = data if data is not None else load_data(
            cfg.dataset, cfg.data_dir, num_workers=cfg.num_workers,
            image_size=cfg.image_size or 224, resize_size=cfg.resize_size or 256,
            download=bool(cfg.download))
        self.data = data
        self.num_classes = data.num_classes

        # --- labels: synthetic noise on clean labels, or the given noisy labels -------------
        y_given = data.y_train.cpu().numpy()
        if data.labels_are_noisy:
            noisy = y_given
            true = data.y_train_true.cpu().numpy() if data.y_train_true is not None else None
        elif cfg.noise_kind == "human":  # CIFAR-N: annotators' labels, checked against y_given
            noisy, true = load_human_labels(cfg.dataset, cfg.data_dir, human_noise_key(cfg.noise),
                                            y_given, data.num_classes), y_given
        else:
            nl = make_noisy_labels(y_given, cfg.noise_kind, cfg.noise_rate, data.num_classes,
                                   cfg.seed, dataset=cfg.dataset, convention=cfg.noise_convention,
                                   transition=cfg.noise_transition)
            noisy, true = nl.noisy_labels, y_given
        # the validation split is carved from the *noisy* training set (searches never see test)
        # train_subset: a class-balanced subset (by the given labels) drawn with the seed, the
        # paper's 128,000 Clothing1M samples; the split is carved from it
        pool = (balanced_subset(noisy, cfg.train_subset, data.num_classes, cfg.seed)
                if cfg.train_subset else np.arange(len(noisy), dtype=np.int64))
        train_idx, val_idx = (pool[i] for i in split_validation(len(pool), cfg.val_fraction,
                                                                 cfg.seed))
        dev = self.device
        self.train_idx = train_idx
        # file-backed sets (Clothing1M, WebVision) stay on disk: DataLoader workers decode them
        self.file_backed = data.file_backed
        if self.file_backed:
            self.x_train = data.x_train.subset(train_idx)
            self.x_val = data.x_train.subset(val_idx)
            self.x_test = data.x_test
        else:
            self.x_train = data.x_train[train_idx].to(dev)
            self.x_val = data.x_train[val_idx].to(dev)
            self.x_test = data.x_test.to(dev)
        self.y_noisy = torch.as_tensor(noisy[train_idx], dtype=torch.long, device=dev)
        self.y_true = (torch.as_tensor(true[train_idx], dtype=torch.long, device=dev)
                       if true is not None else None)
        self.y_val = torch.as_tensor(noisy[val_idx], dtype=torch.long, device=dev)
        self.y_test = data.y_test.to(dev)
        # further test sets (clean_val, imagenet_test): reported as <name>_acc
        self.extra_tests = {name: (x if self.file_backed else x.to(dev), y.to(dev))
                            for name, (x, y) in data.extra_tests.items()}
        self.n_train = int(self.x_train.shape[0])
        self._loader = self._loader_batches = None  # file-backed: built at the first epoch

        # --- randomness: one generator on the device for batches and views ------------------
        self.gen = torch.Generator(device=dev).manual_seed(cfg.seed)
        self.augment = Augmenter(data.mean, data.std, pad=data.pad, hflip=data.hflip,
                                 mode=cfg.augment, generator=self.gen, crop=data.crop,
                                 jitter=data.color_jitter)
        if self.n_train < 2:
            raise DataError(f"{cfg.dataset}: {self.n_train} training sample(s) left after "
                            f"val_fraction={cfg.val_fraction} and train_subset="
                            f"{cfg.train_subset}; a step needs at least 2 (BatchNorm)")
        if cfg.batch_size > self.n_train:
            # one step per epoch on the whole set, said once: never an epoch without a step
            logger.warning("lci: batch_size=%d is more than the %d training samples; every "
                           "epoch is one step on all of them", cfg.batch_size, self.n_train)
        self.batch_size = min(cfg.batch_size, self.n_train)
        # drop the last partial batch: a batch of one breaks BatchNorm, and fixed shapes compile
        self.steps_per_epoch = max(1, self.n_train // self.batch_size)
        # the network sees the views: crop x crop windows when the set asks for a crop
        in_ch, size = int(data.x_train.shape[1]), data.crop or int(data.x_train.shape[-1])

        def make_model():
            return create_model(cfg.model, data.num_classes, in_channels=in_ch, image_size=size,
                                pretrained=cfg.pretrained, init_scheme=cfg.init_scheme)

        # model init draws from torch's global RNG: seed it without disturbing the caller's
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.engine = Engine(cfg, make_model, data.num_classes, self.augment, dev,
                                 total_steps=cfg.epochs * self.steps_per_epoch)
        # the step as CUDA graphs (auto: on CUDA); an impossible "on" fails here, before training
        self.cuda_graphs = self.engine.use_cuda_graphs(cfg.cuda_graphs)
        # which train-set metrics exist is fixed by the labels: decided once, not per epoch
        self._has_noisy = bool((self.y_noisy != self.y_true).any()) if self.y_true is not None else False
        self.epoch = 0
        self.history: List[Dict[str, float]] = []
        self.train_seconds = 0.0
        self._last_eval: Dict[str, np.ndarray] = {}
        self._is_noisy_np: Optional[np.ndarray] = None
        self.writer = RunWriter(out_dir) if out_dir else None
        if self.writer:
            self.writer.write_config(cfg.to_dict())

    # --------------------------------------------------------------------------------- epoch
    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.epochs

    def train_epoch(self) -> Dict[str, float]:
        cfg, eng = self.cfg, self.engine
        eng.set_lr(cfg.lr * lr_factor(cfg, self.epoch))
        eng.train()
        t0 = time.perf_counter()
        perm = torch.randperm(self.n_train, device=self.device, generator=self.gen)
        # loss terms [*TERMS, loss] accumulate on the device (one add per step); read back once
        sums = torch.zeros(len(TERMS) + 1, device=self.device)
        for x, idx in self._batches(perm):
            sums += eng.step_vector(x, self.y_noisy[idx])
        values = sums.div(self.steps_per_epoch).tolist()  # the epoch's one sync
        return self.finish_epoch(values, time.perf_counter() - t0)

    def finish_epoch(self, values: List[float], epoch_s: float) -> Dict[str, float]:
        """The epoch's bookkeeping once its steps ran: ``values`` are the mean loss terms
        ``[*TERMS, loss]``; evaluation, history and the divergence check. (Also called by
        :class:`lci.fused.FusedTrainer` for each run it trains.)"""
        cfg, eng = self.cfg, self.engine
        self.train_seconds += epoch_s
        self.epoch += 1
        metrics: Dict[str, float] = {"epoch": self.epoch}
        for k, v in zip(TERMS + ("loss",), values):
            if k == "loss" or k in eng.active_terms():
                metrics[k] = v
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad:
            raise DivergenceError(f"non-finite loss in epoch {self.epoch}: "
                                  + ", ".join(f"{k}={v}" for k, v in bad.items())
                                  + f" (lr={cfg.lr}, method={cfg.method})")
        metrics.update(self.evaluate())
        metrics["lr"] = cfg.lr * lr_factor(cfg, self.epoch - 1)
        metrics["epoch_s"] = epoch_s
        metrics["samples_per_s"] = self.steps_per_epoch * self.batch_size / max(epoch_s, 1e-9)
        self.history.append(metrics)
        if self.writer:
            self.writer.append_history(metrics)
        return metrics

    def _batches(self, perm: torch.Tensor):
        """``(uint8 images on the device, their positions)`` for each step, in ``perm`` order.

        In memory: slices of the device tensor. File-backed: a persistent DataLoader whose
        workers decode the files; its batch order is this epoch's ``perm``, drawn from the
        run's generator like the in-memory one, so resuming and seeds behave the same.
        """
        bs = self.batch_size
        if not self.file_backed:
            for i in range(self.steps_per_epoch):
                idx = perm[i * bs:(i + 1) * bs]
                yield self.x_train[idx], idx
            return
        if self._loader is None:
            from .data.imagefiles import train_loader
            self._loader, self._loader_batches = train_loader(
                self.x_train, bs, self.cfg.num_workers, pin_memory=self.device.type == "cuda")
        self._loader_batches.order = perm.tolist()  # one host sync per epoch
        for x, idx in self._loader:
            yield (x.to(self.device, non_blocking=True), idx.to(self.device, non_blocking=True))

    # ----------------------------------------------------------------------------- evaluate
    @property
    def _eval_chunk(self) -> int:
        # large batches on a GPU (few launches; a forward without grad is small); CPU memory
        # and caches prefer smaller ones
        return EVAL_CHUNK_CUDA if self.device.type == "cuda" else 1024

    def _predict(self, model, x):
        return self._predict_all([model], x)[0]

    def _predict_all(self, models, x) -> List[torch.Tensor]:
        """Float32 logits of each model on ``x``: a device tensor, or image files streamed
        once through DataLoader workers for all the models."""
        prep = lambda b: self.engine._prep(self.augment.normalize(b))  # noqa: E731
        if isinstance(x, torch.Tensor):
            return [predict_logits(m, x, prep, self.engine.autocast, chunk=self._eval_chunk)
                    for m in models]
        from .data.imagefiles import eval_loader
        loader = eval_loader(x, self.cfg.num_workers, pin_memory=self.device.type == "cuda")
        return predict_logits_stream(models, loader, prep, self.engine.autocast, self.device)

    def _eval_models(self) -> list:
        """The inference model, then θ when it is another model (lci, lci-two-models)."""
        eng = self.engine
        return [eng.inference_model] + ([eng.theta] if eng.theta is not eng.inference_model
                                        and self.cfg.is_lci else [])

    def eval_sets(self) -> Dict[str, tuple]:
        """Labelled test sets by metric prefix: ``test``, plus e.g. ``imagenet_test``."""
        return {"test": (self.x_test, self.y_test), **self.extra_tests}

    def probabilities(self, x) -> torch.Tensor:
        """Softmax of the inference model on images ``x`` (for ensembles)."""
        return torch.softmax(self._predict(self.engine.inference_model, x), 1)

    def evaluate(self) -> Dict[str, float]:
        """Per-epoch metrics. Every accuracy is computed on the device and all of them (and,
        with ``eval_train``, the per-sample C and predictions) come back in one read-back."""
        eng, cfg = self.engine, self.cfg
        vals: Dict[str, torch.Tensor] = {}  # 0-dim float32 device tensors
        test_logits, *robust = self._predict_all(self._eval_models(), self.x_test)
        vals.update(self._test_accuracies("test", test_logits, self.y_test))
        if cfg.is_lci:
            vals["robust_test_acc"] = _acc((robust[0] if robust else test_logits).argmax(1),
                                           self.y_test)
        for name, (x, y) in self.extra_tests.items():
            vals.update(self._test_accuracies(name, self._predict(eng.inference_model, x), y))
        if self.x_val.shape[0]:
            vals["val_acc"] = _acc(self._predict(eng.inference_model, self.x_val).argmax(1),
                                   self.y_val)
        if self.y_true is not None:
            vals["realized_noise_rate"] = (self.y_noisy != self.y_true).float().mean()
        if not cfg.eval_train:
            return _read_back(vals)[0]
        train_vals, conf, pred = self._train_eval_tensors()
        out, conf_np, pred_np = _read_back({**vals, **train_vals}, conf, pred)
        return {**out, **self._train_eval_finish(conf_np, pred_np)}

    def evaluate_train(self) -> Dict[str, float]:
        """Fit, memorisation and label confidence on the training set (Figure 3 metrics);
        keeps the per-sample predictions and C for ``label_issues.csv``."""
        vals, conf, pred = self._train_eval_tensors()
        out, conf_np, pred_np = _read_back(vals, conf, pred)
        return {**out, **self._train_eval_finish(conf_np, pred_np)}

    def _train_eval_tensors(self):
        """Train-set accuracies (device scalars), C and the predictions (device vectors)."""
        eng, cfg = self.engine, self.cfg
        # one pass over the training images for both models (file-backed: one decode)
        logits, *theta_rest = self._predict_all(self._eval_models(), self.x_train)
        pred = logits.argmax(1)
        vals = self._train_accuracies(pred)
        if cfg.is_lci:
            theta_logits = theta_rest[0] if theta_rest else logits
            if eng.theta_star is not None:
                vals.update(self._train_accuracies(theta_logits.argmax(1), prefix="robust_"))
            # C of Eq. 6 from θ's robust loss on the un-augmented image and the current μ
            if eng.uses_gjs:
                losses = eng.robust_loss([theta_logits, theta_logits], self.y_noisy)
            else:
                losses = eng.robust_loss(theta_logits, self.y_noisy)
            conf = label_confidence(losses, eng.mu, cfg.m, slope=cfg.slope)
        else:
            # baselines have no C; their self-confidence p(given label) stands in for it
            conf = torch.softmax(logits, 1).gather(1, self.y_noisy[:, None]).squeeze(1)
        return vals, conf.float(), pred

    def _train_eval_finish(self, conf_np: np.ndarray, pred_np: np.ndarray) -> Dict[str, float]:
        if self._is_noisy_np is None and self.y_true is not None:  # fixed for the run
            self._is_noisy_np = (self.y_noisy != self.y_true).cpu().numpy()
        self._last_eval = {"pred": pred_np.astype(np.int64), "conf": conf_np}
        return confidence_stats(conf_np, self._is_noisy_np)

    def _train_accuracies(self, pred: torch.Tensor, prefix: str = "") -> Dict[str, torch.Tensor]:
        """:func:`lci.metrics.train_accuracies` as device scalars (masked means, no sync)."""
        if self.y_true is None:  # real-world noise: nobody knows which labels are wrong
            return {}
        noisy = self.y_noisy != self.y_true
        hit_given, clean = (pred == self.y_noisy).float(), (~noisy).float()
        out = {f"{prefix}train_acc_clean": (hit_given * clean).sum() / clean.sum()}
        if self._has_noisy:
            nz = noisy.float()
            out[f"{prefix}train_acc_noisy"] = (hit_given * nz).sum() / nz.sum()
            out[f"{prefix}train_acc_noisy_true"] = ((pred == self.y_true).float() * nz).sum() / nz.sum()
        return out

    def _test_accuracies(self, prefix: str, logits: torch.Tensor,
                         y: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {f"{prefix}_acc": _acc(logits.argmax(1), y)}
        if self.num_classes > 5:  # top-5 as reported for WebVision / ILSVRC12
            top5 = logits.topk(5, dim=1).indices
            out[f"{prefix}_acc_top5"] = (top5 == y[:, None]).any(1).float().mean()
        return out

    # ------------------------------------------------------------------------------- finish
    def result(self) -> Dict[str, Any]:
        """Final metrics: the last epoch's, the best test accuracy (labelled), wall time."""
        res: Dict[str, Any] = dict(self.history[-1]) if self.history else {}
        if self.history:
            res["best_test_acc"] = max(h["test_acc"] for h in self.history)
        res["wall_s"] = self.train_seconds
        res["samples_per_s"] = (self.epoch * self.steps_per_epoch * self.batch_size
                                / max(self.train_seconds, 1e-9))
        res["epochs_done"] = self.epoch
        return res

    def label_issues(self):
        """Training samples ranked by label confidence, lowest first (cleanlab's shape)."""
        import pandas as pd

        if not self._last_eval:  # eval_train off: one pass over the training set now
            self.evaluate_train()
        conf = self._last_eval["conf"]
        df = pd.DataFrame({
            "index": self.train_idx,
            "given_label": self.y_noisy.cpu().numpy(),
            "predicted_label": self._last_eval["pred"],
            "label_confidence": conf.astype(np.float32),
            # a label issue: the confident prediction disagrees with the given label
            "is_label_issue": (conf < 0.5) & (self._last_eval["pred"] != self.y_noisy.cpu().numpy()),
        })
        if self.y_true is not None:
            df["is_noisy"] = (self.y_noisy != self.y_true).cpu().numpy()
        if self.file_backed:  # which image: the path as its file list names it
            df["path"] = self.x_train.relative_paths()
        return df.sort_values("label_confidence", kind="stable").reset_index(drop=True)

    def finish(self) -> Dict[str, Any]:
        res = self.result()
        # code, software, machine, data and noisy-label digests (lci/provenance.py)
        res["provenance"] = provenance.collect(self.data, self.train_idx, self.y_noisy, self.device)
        if self.writer:
            self.writer.write_result(res)
            self.writer.write_label_issues(self.label_issues())
        return res

    # --------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> Dict[str, Any]:
        return {"format": ckpt.FORMAT, "config": self.cfg.to_dict(), "epoch": self.epoch,
                "engine": self.engine.state_dict(), "generator": self.gen.get_state(),
                "train_seconds": self.train_seconds, "history": self.history,
                "noisy_labels": self.y_noisy.cpu(), "train_idx": torch.as_tensor(self.train_idx)}

    def load_state_dict(self, sd: Dict[str, Any], source: str = "checkpoint") -> None:
        ckpt.check_config(sd["config"], self.cfg.to_dict(), source)
        if not torch.equal(sd["noisy_labels"], self.y_noisy.cpu()):
            from .errors import CheckpointError
            raise CheckpointError(f"{source}: its noisy labels differ from this run's")
        self.engine.load_state_dict(sd["engine"])
        self.gen.set_state(sd["generator"])
        self.epoch = int(sd["epoch"])
        self.train_seconds = float(sd["train_seconds"])
        self.history = [dict(h) for h in sd["history"]]
        if self.writer:
            self.writer.rewrite_history(self.history)

    def save_checkpoint(self, path: Optional[str] = None) -> str:
        path = path or os.path.join(self.writer.out_dir, CHECKPOINT_FILE)
        ckpt.save_atomic(self.state_dict(), path)
        return path

    def load_checkpoint(self, path: str) -> None:
        ckpt.load_into(self, path, "this run")
