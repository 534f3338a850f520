"""``TrainConfig``: the one config dataclass shared by the CLI, the Tune trainables and Optuna.

Keys are flat so that ``--set key=value``, a Tune ``param_space`` and an Optuna trial all use
the same names. Fields whose default is ``"auto"`` are filled in per data set by
:meth:`TrainConfig.resolved` (e.g. ``small_cnn`` for digits, ``preact_resnet34`` for CIFAR);
``config.json`` of a run always holds the resolved values.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .errors import ConfigError, allowed
from .methods import get_method, loss_of
from .names import (HUMAN_NOISE_KEYS, METHODS, ROBUST_LOSSES, human_noise_datasets,
                    human_noise_key, parse_noise)
from .noise import ASYM_MAPS, NOISE_CONVENTIONS, has_asym_mapping

# ----------------------------------------------------------------------------------- names
# Methods, losses, data sets and noise kinds are shared with study/ and analysis/: lci/names.py
# (the methods' facts: lci/methods.py).
CE_NORMS = ("mean", "complement")
PENALTIES = ("l2", "distill")
INITS = ("shared", "independent")
CORRECTION_SOURCES = ("clean", "view")
LR_SCHEDULES = ("multistep", "cosine", "constant")
AUGMENTS = ("auto", "none", "weak", "cutout", "strong")
AMPS = ("auto", "off", "bf16", "fp16")
CUDA_GRAPHS = ("auto", "on", "off")


def _registered_datasets() -> Tuple[str, ...]:
    """The names of the data set registry (:mod:`lci.data`), the one list of set names.

    Imported on first use, not with this module: ``lci.data`` imports torch, and
    ``import lci`` stays light (validation imports torch anyway, for the loss registry).
    """
    from .data import dataset_names

    return dataset_names()


def _realworld_datasets() -> Tuple[str, ...]:
    """Real-world noisy sets: read from image files (file-backed), labels already noisy."""
    from .data import file_backed_names

    return file_backed_names()


# The values of the "auto" fields per data set (profiles) are registered with each set in the
# data set registry (lci.data.registry.DatasetProfile); resolved() reads them from there.


@dataclass
class TrainConfig:
    # --- data -------------------------------------------------------------------------------
    dataset: str = "digits"          # registered name or path of a .npz / .csv / image folder
                                     # (clothing1m/webvision have real noise: `noise` resolves to none)
    data_dir: str = "data"           # where registered data sets live on disk
    download: Union[bool, str] = "auto"  # CIFAR missing under data_dir: "auto" fetches it with
                                     # torchvision on first use (md5-checked); false: an error
    noise: str = "sym:0.8"           # "none", "sym:R", "asym:R", "matrix" (see noise_transition)
                                     # or "human:KEY" (CIFAR-N labels from data_dir)
    noise_convention: str = "gjs"    # "gjs": sym may keep the label, CIFAR-10 asym is GJS's
                                     # sequential procedure; "exclusive": sym never keeps it;
                                     # "independent": asym flips drawn from the true labels
    noise_transition: Optional[Union[str, List[List[float]]]] = None  # T[true, noisy] or its file
    val_fraction: float = 0.0        # held out of the noisy train set for searches (val_acc)
    train_subset: Union[int, str] = "auto"  # class-balanced subset of N training samples drawn
                                     # with the seed (0 = all; auto: 128000 for clothing1m)
    image_size: Union[int, str] = "auto"  # clothing1m/webvision: crop side the network sees (224)
    resize_size: Union[int, str] = "auto"  # ... and the side images are decoded to (auto: 8/7 of
                                     # image_size, 256): Resize(s) + CenterCrop(s), cropped per view
    # --- method -----------------------------------------------------------------------------
    method: str = "lci"              # lci, lci-two-models, lci-single, or a baseline loss name
    robust_loss: str = "gce"         # loss of the noise-robust model θ (lci methods)
    robust_loss_params: Dict[str, float] = field(default_factory=dict)  # e.g. {"q": 0.7}
    m: float = 0.0                   # shift of the confidence mapping (Eq. 6): larger -> more CE
    lam: float = 1e-3                # λ, weight of the parameter-distance penalty
    rho: float = 1.0                 # ρ, weight of the JSD between the two views of θ*
    alpha: float = 1.0               # α, weight of the confidence-weighted CE term
    slope: float = 0.5               # s in sigmoid(s·(−L + μ + m)); the paper uses 0.5
    mu_momentum: float = 0.7         # μ ← mom·μ + (1−mom)·mean_B(L) (Algorithm 1, line 8)
    ce_norm: str = "mean"            # "mean" (Eq. 9) or "complement" (Eq. 8, Σ C·CE / Σ(1−C))
    penalty: str = "l2"              # "l2": Σ||θ−θ*||²; "distill": KL(p(x';θ) ‖ p(x';θ*))
    init: str = "shared"             # θ* starts as a copy of θ ("shared") or freshly ("independent")
    correction_start: float = 0.25   # fraction of all iterations after which ỹ is corrected
    correction_weight: float = 0.5   # w in ỹ = (1−w)·y + w·softmax(f(x;θ))
    correction_source: str = "clean"  # "clean": f on un-augmented x (Alg. 1); "view": reuse x'
    fuse_views: bool = False         # a network's two views in one forward, cat(x', x'') (BN
                                     # over both): θ* of lci, θ of gjs (GJS's --onebatch)
    # --- model and optimisation -------------------------------------------------------------
    model: str = "auto"              # registry name; "auto" picks per data set
    pretrained: Optional[str] = None  # local state-dict file for torchvision ResNets
    init_scheme: str = "auto"        # weight init: "auto" = the network's own (PyTorch's default
                                     # for preact_resnet34, as GJS; kaiming for small_cnn and
                                     # the torchvision ResNets), "torch", "kaiming"
    epochs: Union[int, str] = "auto"
    batch_size: Union[int, str] = "auto"
    lr: Union[float, str] = "auto"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: Union[float, str] = "auto"
    lr_schedule: str = "auto"        # "multistep" (×0.1 at lr_milestones), "cosine", "constant"
    lr_milestones: Tuple[float, ...] = (0.5, 0.75)  # fractions of epochs (GJS: 200, 300 of 400)
    augment: str = "auto"            # "none", "weak" (crop+flip), "cutout", "strong" (RandAug+cutout)
    # --- run --------------------------------------------------------------------------------
    seed: int = 0                    # noise, split, init, batches and augmentation
    device: str = "auto"             # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    amp: str = "auto"                # "auto" = bf16 on CUDA, off on CPU; "off" = float32 (the
                                     # CIFAR presets, as GJS)
    channels_last: Union[bool, str] = "auto"  # "auto" = on CUDA
    compile: bool = False            # torch.compile the models
    cuda_graphs: str = "auto"        # replay the step as CUDA graphs: "auto" (on for CUDA,
                                     # eager elsewhere or with fp16/compile), "on", "off"
    num_workers: int = 0             # decoding workers for file-based data sets
    threads: int = 0                 # torch CPU threads (0 = leave torch's default)
    checkpoint_every: int = 1        # epochs between checkpoints (0 = never)
    eval_train: bool = True          # per-epoch metrics on the training set (Figure 3)

    # ------------------------------------------------------------------------------ building
    def __post_init__(self) -> None:
        self._coerce()
        self.validate()

    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Build from a mapping; unknown keys are an error that lists the allowed ones."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"a config must be a mapping of keys to values, got {type(d).__name__}")
        names = cls.field_names()
        unknown = [k for k in d if k not in names]
        if unknown:
            raise ConfigError(f"unknown config key {unknown[0]!r}; allowed: {', '.join(names)}")
        return cls(**dict(d))

    @classmethod
    def from_known(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Build from the keys of ``d`` that are config fields, ignoring the rest: a study's
        trial config also holds its labels (cell, phase, study)."""
        names = set(cls.field_names())
        return cls.from_dict({k: v for k, v in d.items() if k in names})

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        return d

    def replace(self, **changes: Any) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # ----------------------------------------------------------------------------- parsing
    def _coerce(self) -> None:
        """Turn strings (from ``--set`` or YAML) into the field's type, with clear errors."""
        for f in fields(self):
            v = getattr(self, f.name)
            default = f.default if f.default is not dataclasses.MISSING else None
            setattr(self, f.name, _coerce_value(f.name, v, default))

    @property
    def noise_kind(self) -> str:
        return parse_noise(self.noise)[0]

    @property
    def noise_rate(self) -> float:
        return parse_noise(self.noise)[1]

    @property
    def is_lci(self) -> bool:
        return get_method(self.method).is_lci

    @property
    def two_models(self) -> bool:
        return get_method(self.method).models == 2

    def validate(self) -> None:
        _one_of("method", self.method, METHODS)
        _one_of("robust_loss", self.robust_loss, ROBUST_LOSSES)
        _one_of("noise_convention", self.noise_convention, NOISE_CONVENTIONS)
        _one_of("ce_norm", self.ce_norm, CE_NORMS)
        _one_of("penalty", self.penalty, PENALTIES)
        _one_of("init", self.init, INITS)
        _one_of("correction_source", self.correction_source, CORRECTION_SOURCES)
        _one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES + ("auto",))
        _one_of("augment", self.augment, AUGMENTS)
        _one_of("amp", self.amp, AMPS)
        _one_of("cuda_graphs", self.cuda_graphs, CUDA_GRAPHS)
        registered = _registered_datasets()
        if self.dataset not in registered and not _looks_like_path(self.dataset):
            raise ConfigError(
                f"unknown dataset {self.dataset!r}; allowed: {allowed(registered)} "
                "or the path of a .npz file, a .csv file list or an image folder")
        kind, rate = parse_noise(self.noise)
        if kind == "asym" and self.noise_transition is None and not has_asym_mapping(self.dataset):
            raise ConfigError(
                f"noise={self.noise!r} needs a class mapping, and dataset {self.dataset!r} has none; "
                f"asym noise is defined for {allowed(ASYM_MAPS)}, or give noise_transition")
        if kind == "human":
            _check_human_noise(self.noise, self.dataset)
        if kind == "matrix" and self.noise_transition is None:
            raise ConfigError("noise='matrix' needs noise_transition (a matrix T[true, noisy] or a "
                              ".npy/.csv/.json file holding one)")
        for name in ("val_fraction", "correction_start", "correction_weight"):
            _in_range(name, getattr(self, name), 0.0, 1.0)
        if self.val_fraction >= 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction!r} must be below 1")
        _in_range("mu_momentum", self.mu_momentum, 0.0, 1.0)
        for name in ("lam", "rho", "alpha", "momentum"):
            _in_range(name, getattr(self, name), 0.0, math.inf)
        _in_range("slope", self.slope, 0.0, math.inf, low_open=True)
        if not math.isfinite(self.m):
            raise ConfigError(f"m={self.m!r} must be a finite number")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if v != "auto" and v < 1:
                raise ConfigError(f"{name}={v!r} must be a positive integer or 'auto'")
        if self.train_subset != "auto" and self.train_subset < 0:
            raise ConfigError(f"train_subset={self.train_subset!r} must be >= 0 (0 = all) or 'auto'")
        for name in ("image_size", "resize_size"):
            v = getattr(self, name)
            if v in ("auto", 0):
                continue
            if self.dataset not in _realworld_datasets():
                raise ConfigError(f"{name}={v!r} applies only to the file-backed data sets "
                                  f"{allowed(_realworld_datasets())}; leave it 'auto' for "
                                  f"{self.dataset!r}")
            if v < 8:
                raise ConfigError(f"{name}={v!r} must be an image side of at least 8 pixels")
        if (isinstance(self.image_size, int) and isinstance(self.resize_size, int)
                and self.image_size and self.resize_size and self.resize_size < self.image_size):
            raise ConfigError(f"resize_size={self.resize_size} must be >= image_size="
                              f"{self.image_size} (views are image_size crops of the decoded image)")
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            if v != "auto":
                _in_range(name, v, 0.0, math.inf)
        for name in ("num_workers", "threads", "checkpoint_every", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 0")
        if any(not 0.0 < x < 1.0 for x in self.lr_milestones):
            raise ConfigError(f"lr_milestones={list(self.lr_milestones)!r} must be fractions of "
                              "the epochs, each in (0, 1)")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(f"unknown device {self.device!r}; allowed: 'auto', 'cpu', 'cuda', "
                              "'cuda:N', 'mps'")
        # the robust loss's own parameters are checked by the loss registry
        from .losses import check_params
        check_params(loss_of(self.method, self.robust_loss), self.robust_loss_params)
        from .models import INIT_SCHEMES, MODELS
        _one_of("init_scheme", self.init_scheme, ("auto", *INIT_SCHEMES))
        if self.model != "auto":
            MODELS.get(self.model)

    # ---------------------------------------------------------------------------- resolving
    def resolved(self) -> "TrainConfig":
        """Fill every "auto" field for this data set; the result is what a run records."""
        from .data.registry import REALWORLD_IMAGE_SIZE, profile_of  # imports torch

        profile = profile_of(self.dataset)
        changes: Dict[str, Any] = {k: v for k, v in profile.auto_values(self.noise_kind).items()
                                   if getattr(self, k) == "auto"}
        loss = loss_of(self.method, self.robust_loss)
        if loss != self.robust_loss:
            changes["robust_loss"] = loss  # a baseline's loss is its name
        if self.init_scheme == "auto":
            from .models import NATIVE_INIT  # a model registered elsewhere keeps "auto"
            changes["init_scheme"] = NATIVE_INIT.get(changes.get("model", self.model), "auto")
        if self.train_subset == "auto":
            changes["train_subset"] = profile.train_subset
        realworld = self.dataset in _realworld_datasets()
        if realworld and self.noise_kind != "none":
            changes["noise"] = "none"  # the labels are noisy already; no synthetic noise on top
        size = self.image_size
        if size in ("auto", 0):
            size = changes["image_size"] = REALWORLD_IMAGE_SIZE if realworld else 0
        if self.resize_size in ("auto", 0):
            changes["resize_size"] = round(size * 8 / 7) if realworld else 0
        return self.replace(**changes) if changes else self


# ------------------------------------------------------------------------------- helpers
def _looks_like_path(s: str) -> bool:
    return isinstance(s, str) and (os.sep in s or s.endswith((".npz", ".csv")) or os.path.exists(s))


def _check_human_noise(noise: str, dataset: str) -> None:
    """CIFAR-N noise only with the data set whose label file holds that key."""
    key = human_noise_key(noise)
    if dataset in human_noise_datasets(key):
        return
    if dataset in HUMAN_NOISE_KEYS:
        raise ConfigError(f"noise={noise!r} is a CIFAR-N label set of "
                          f"{allowed(human_noise_datasets(key))}, not of dataset {dataset!r}; "
                          f"allowed with {dataset!r}: "
                          + ", ".join(f"'human:{k}'" for k in HUMAN_NOISE_KEYS[dataset]))
    raise ConfigError(f"noise={noise!r} (CIFAR-N human labels) needs dataset "
                      f"{allowed(HUMAN_NOISE_KEYS)}, not {dataset!r}")


def _one_of(name: str, value: Any, options) -> None:
    if value not in options:
        raise ConfigError(f"unknown {name} {value!r}; allowed: {allowed(options)}")


def _in_range(name: str, v: float, lo: float, hi: float, low_open: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise ConfigError(f"{name}={v!r} must be a number")
    if v < lo or v > hi or (low_open and v == lo):
        lo_b = "(" if low_open else "["
        hi_s = "inf" if hi == math.inf else hi
        raise ConfigError(f"{name}={v!r} is outside {lo_b}{lo}, {hi_s}]")


#: Fields that hold "auto" or a number of that type.
_AUTO_INTS = ("epochs", "batch_size", "train_subset", "image_size", "resize_size")
_AUTO_FLOATS = ("lr", "weight_decay")

_BOOL_STR = {"true": True, "1": True, "yes": True, "on": True,
             "false": False, "0": False, "no": False, "off": False}


def _coerce_value(name: str, v: Any, default: Any) -> Any:
    """Coerce ``v`` to the type of the field's default (strings from the CLI, ints from YAML)."""
    bad = ConfigError
    if name == "robust_loss_params":
        if isinstance(v, str):
            try:
                v = json.loads(v) if v.strip() else {}
            except json.JSONDecodeError:
                raise bad(f"robust_loss_params={v!r} must be a JSON object like '{{\"q\": 0.7}}'") from None
        if not isinstance(v, Mapping):
            raise bad(f"robust_loss_params={v!r} must be a mapping like {{'q': 0.7}}")
        out = {}
        for k, x in v.items():
            try:
                out[str(k)] = float(x)
            except (TypeError, ValueError):
                raise bad(f"robust_loss_params[{k!r}]={x!r} must be a number") from None
        return out
    if name == "noise_transition":
        if v is None or isinstance(v, str):
            return v
        try:
            return [[float(x) for x in row] for row in v]
        except (TypeError, ValueError):
            raise bad("noise_transition must be a matrix (list of rows of numbers) or a file path") from None
    if name == "lr_milestones":
        if isinstance(v, str):
            v = [x for x in v.replace("[", "").replace("]", "").split(",") if x.strip()]
        try:
            return tuple(float(x) for x in v)
        except (TypeError, ValueError):
            raise bad(f"lr_milestones={v!r} must be a list of fractions like [0.5, 0.75]") from None
    if name == "cuda_graphs" and isinstance(v, bool):  # YAML reads on/off as booleans
        return "on" if v else "off"
    if name == "amp" and v is False:  # YAML reads an unquoted off as false
        return "off"
    if name == "pretrained":
        return None if v in (None, "", "none", "None") else str(v)
    if isinstance(v, str) and v == "auto" and default == "auto":
        return v
    if isinstance(default, bool) or (default == "auto" and name in ("channels_last", "download")):
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in _BOOL_STR:
            return _BOOL_STR[v.lower()]
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise bad(f"{name}={v!r} must be true or false")
    if isinstance(default, int) or name in _AUTO_INTS:
        if isinstance(v, bool):
            raise bad(f"{name}={v!r} must be an integer")
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str):
            try:
                return int(v)
            except ValueError:
                pass
        if isinstance(v, int):
            return v
        raise bad(f"{name}={v!r} must be an integer")
    if isinstance(default, float) or name in _AUTO_FLOATS:
        if isinstance(v, bool):
            raise bad(f"{name}={v!r} must be a number")
        try:
            return float(v)
        except (TypeError, ValueError):
            raise bad(f"{name}={v!r} must be a number") from None
    if isinstance(default, str):
        if not isinstance(v, str):
            raise bad(f"{name}={v!r} must be a string")
        return v
    return v


def load_config_file(path: str) -> Dict[str, Any]:
    """Read a YAML or JSON mapping of config keys."""
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path) as fh:
        try:
            d = yaml.safe_load(fh) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path!r} is not valid YAML/JSON: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of config keys")
    return d


def parse_set_args(items: List[str]) -> Dict[str, Any]:
    """``["method=lci", "m=1"]`` -> dict; values stay strings and are coerced by TrainConfig."""
    out: Dict[str, Any] = {}
    for it in items:
        key, sep, val = it.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {it!r} must look like KEY=VALUE")
        out[key.strip()] = val.strip()
    return out
