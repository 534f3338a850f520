"""Networks, created by name from a registry (timm style).

Every factory has the signature ``(num_classes, in_channels=3, image_size=32) -> nn.Module``
and every network names its classifier ``fc``, so checkpoint loading can tell the head from
the backbone the same way for all of them.

- ``small_cnn``: a three-conv net with BatchNorm for tiny images (8x8 digits); fast on CPU.
- ``preact_resnet34``: the CIFAR network of the GJS code (docs/method.md §8), ~1.9 M params.
- ``resnet18/34/50``: torchvision ResNets; CIFAR-style stem (3x3 stride 1, no max-pool) when
  ``image_size <= 64``, ImageNet stem otherwise. ``create_model(..., pretrained=PATH)`` loads a
  local state-dict file (torchvision or self-supervised), keeping a freshly initialised head
  when the class count differs.

Weight initialisation (``init_scheme``): every network is built with its own scheme, the one
:data:`NATIVE_INIT` names, and ``create_model(..., init_scheme=...)`` can replace it by
either entry of :data:`INIT_SCHEMES`. ``preact_resnet34`` keeps PyTorch's default init, as
GJS's ``models/preact_resnet.py`` has no init code; ``small_cnn`` (whose digits defaults were
calibrated with it) and the torchvision ResNets (torchvision's own init) use kaiming-normal
fan_out convolutions.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Dict, List, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import CheckpointError, ConfigError, allowed
from .registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")

# Below this size the ImageNet stem (7x7 stride 2 + max-pool) would throw away most pixels.
SMALL_IMAGE_MAX = 64


# ----------------------------------------------------------------------------------------------
# small_cnn


class SmallCNN(nn.Module):
    """conv-BN-ReLU, conv-BN-ReLU, max-pool 2, conv-BN-ReLU, global average pool, linear.

    Widths 16/32/64 by default: 32/64/128 costs ~2.2x the CPU time (a digits epoch of 1300
    images x 3 forwards + backward: 0.18 s vs 0.39 s on 2 cores) for about one point of clean
    test accuracy on 8x8 digits (97.4% vs 98.4% after 15 epochs).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, widths: tuple = (16, 32, 64)):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w1, 3, padding=1, bias=False),
            nn.BatchNorm2d(w1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w1, w2, 3, padding=1, bias=False),
            nn.BatchNorm2d(w2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w2, w3, 3, padding=1, bias=False),
            nn.BatchNorm2d(w3),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(w3, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


# ----------------------------------------------------------------------------------------------
# preact_resnet34 (the GJS CIFAR network)


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus the shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: Optional[nn.Module] = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The projection shortcut reads the pre-activated input, as in He et al. (2016b).
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(
        self,
        num_blocks: List[int],
        widths: List[int],
        num_classes: int,
        in_channels: int = 3,
        stem_width: int = 32,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem_width, 3, stride=1, padding=1, bias=False)
        layers = []
        in_planes = stem_width
        for i, (n, width) in enumerate(zip(num_blocks, widths)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(PreActBlock(in_planes, width, stride if j == 0 else 1))
                in_planes = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.bn = nn.BatchNorm2d(in_planes)  # final BN+ReLU: the blocks end without one
        self.fc = nn.Linear(in_planes, num_classes)
        # no init code: PyTorch's default init of every layer, as GJS's PreActResNet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


# ----------------------------------------------------------------------------------------------
# registered factories


def _check_args(num_classes: int, in_channels: int, image_size: int) -> None:
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels),
                       ("image_size", image_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"model {key} must be a positive integer, got {value!r}")


#: model name -> the init scheme its factory applies (``init_scheme: auto`` resolves to it)
NATIVE_INIT: Dict[str, str] = {}


def _register(name: str, init: str):
    """Register a factory together with the init scheme it applies itself."""
    NATIVE_INIT[name] = init
    return MODELS.register(name)


@_register("small_cnn", "kaiming")
def small_cnn(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return SmallCNN(num_classes, in_channels)


@_register("preact_resnet34", "torch")
def preact_resnet34(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return PreActResNet([5, 5, 5], [32, 64, 128], num_classes, in_channels, stem_width=32)


def _torchvision_resnet(arch: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    # imported here: torchvision.models pulls in torch._dynamo (~1.7 s), which every trial
    # worker would pay at start-up although the CIFAR and digits networks never need it
    import torchvision.models

    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if image_size <= SMALL_IMAGE_MAX:
        # CIFAR-style stem: keep the full resolution into layer1.
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    else:
        return model
    # the replaced stem gets the init torchvision gives every other conv of the network
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


@_register("resnet18", "kaiming")  # torchvision's own init
def resnet18(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return _torchvision_resnet("resnet18", num_classes, in_channels, image_size)


@_register("resnet34", "kaiming")  # torchvision's own init
def resnet34(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return _torchvision_resnet("resnet34", num_classes, in_channels, image_size)


@_register("resnet50", "kaiming")  # torchvision's own init
def resnet50(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return _torchvision_resnet("resnet50", num_classes, in_channels, image_size)


# ----------------------------------------------------------------------------------------------
# public API


def create_model(
    name: str,
    num_classes: int,
    *,
    in_channels: int = 3,
    image_size: int = 32,
    pretrained: Optional[str] = None,
    init_scheme: str = "auto",
) -> nn.Module:
    """Build the registered network ``name``; with ``pretrained``, load a local state-dict file.

    ``init_scheme``: ``auto`` keeps the network's own init (:data:`NATIVE_INIT`); ``torch`` or
    ``kaiming`` re-initialises every layer with that scheme (before any pretrained load).
    """
    factory = MODELS.get(name)  # ConfigError listing the known names
    _check_args(num_classes, in_channels, image_size)
    model = factory(num_classes, in_channels=in_channels, image_size=image_size)
    if init_scheme != "auto" and init_scheme != NATIVE_INIT.get(name):
        init_weights(model, init_scheme)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not); buffers such as BN running stats excluded."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# pretrained checkpoints

_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "net")
# Stripped repeatedly, so "module.encoder_q." (MoCo) or "module.backbone." both come off.
_PREFIXES = ("module.", "backbone.", "encoder_q.", "encoder.", "model.")
_HEAD_PREFIX = "fc."
# Fewer matched backbone tensors than this means the file is for another network.
_MIN_MATCHED_FRACTION = 0.5


def _unwrap(obj: object, path: str) -> Dict[str, torch.Tensor]:
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}, "epoch": 90}
        inner = None
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise CheckpointError(
            f"pretrained file {path!r} holds no state dict (expected tensors, or one under "
            f"one of the keys {', '.join(_WRAPPER_KEYS)})"
        )
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _is_state_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and any(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                changed = True
    return key


def load_pretrained(model: nn.Module, path: str) -> nn.Module:
    """Copy matching tensors from the state-dict file ``path`` into ``model`` (in place).

    The classifier (``fc.*``) is loaded only when its shape matches; otherwise the freshly
    initialised head is kept. Raises :class:`CheckpointError` when the file is missing or
    unreadable, or when fewer than half of the backbone tensors find a match of the same
    name and shape. Backbone tensors left at their initial values are reported as a warning.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"pretrained file {path!r} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors all mean "unusable file"
        raise CheckpointError(
            f"pretrained file {path!r} cannot be read: {type(exc).__name__}: {exc}"
        ) from None
    source = {_strip_prefixes(k): v for k, v in _unwrap(raw, path).items()}

    target = model.state_dict()
    backbone = [k for k in target if not k.startswith(_HEAD_PREFIX)]
    matched: Dict[str, torch.Tensor] = {}
    mismatched: List[str] = []
    for key, value in source.items():
        if key not in target:
            continue
        if value.shape != target[key].shape:
            if not key.startswith(_HEAD_PREFIX):
                mismatched.append(key)
            continue  # a head for another class count: keep the new one
        matched[key] = value
    n_backbone = sum(1 for k in matched if not k.startswith(_HEAD_PREFIX))
    if n_backbone < _MIN_MATCHED_FRACTION * len(backbone):
        raise CheckpointError(
            f"pretrained file {path!r} does not fit this model: only {n_backbone} of "
            f"{len(backbone)} backbone tensors match by name and shape"
            + (f" (shape mismatch e.g. {mismatched[0]!r})" if mismatched else "")
        )
    missing = [k for k in backbone if k not in matched]
    if missing:
        warnings.warn(
            f"pretrained file {path!r}: {len(missing)} of {len(backbone)} backbone tensors "
            f"left at their initial values (e.g. {missing[0]!r})",
            stacklevel=2,
        )
    model.load_state_dict(matched, strict=False)
    return model


# ----------------------------------------------------------------------------------------------
# init


def torch_init(model: nn.Module) -> None:
    """PyTorch's default init of every layer (its ``reset_parameters``), e.g. a 3x3 conv of
    64 input channels: uniform with std 1/sqrt(3·fan_in) = 0.024."""
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def kaiming_init(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) convolutions, BatchNorm weight 1 and bias 0 (linear
    layers keep PyTorch's default), as torchvision initialises its ResNets: a 3x3 conv of
    64 output channels gets std sqrt(2/fan_out) = 0.059."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


#: ``init_scheme`` name -> the function that applies it to a whole network
INIT_SCHEMES: Dict[str, Callable[[nn.Module], None]] = {"torch": torch_init,
                                                         "kaiming": kaiming_init}


def init_weights(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise ``model`` in place with the named scheme of :data:`INIT_SCHEMES`."""
    if scheme not in INIT_SCHEMES:
        raise ConfigError(f"unknown init_scheme {scheme!r}; allowed: {allowed(INIT_SCHEMES)}")
    INIT_SCHEMES[scheme](model)
    return model
