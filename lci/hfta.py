"""Horizontal fusion of k networks of one architecture into one (HFTA, Wang et al., MLSys 2021).

k copies of a network that differ only in their weights become one network whose every layer
holds the k members side by side along the channel dimension:

- ``Conv2d(Cin, Cout, groups=g)`` -> ``Conv2d(k·Cin, k·Cout, groups=k·g)``: weight
  ``[k·Cout, Cin/g, kh, kw]``, member i's filters in rows ``i·Cout .. (i+1)·Cout``;
- ``BatchNorm2d(C)`` -> ``BatchNorm2d(k·C)``: the statistics of a channel are computed over
  the batch and the pixels only, so each member keeps its own batch and running statistics;
- ``Linear(in, out)`` -> :class:`FusedLinear`, one batched matmul (weight ``[k, out, in]``);
- parameter-free layers that act on each channel alone (ReLU, pooling, Flatten) are kept.

The fused network reads ``[B, k·C, H, W]`` (member i's images in channels ``i·C ..``) and
writes ``[B, k·classes]``; :class:`FusedNet` converts from and to the member-major layout
``[k·B, ...]`` that :class:`lci.fused.FusedEngine` works in. No member's output depends on
another member's weights or inputs, so the sum of the members' losses has each member's own
gradient, and an elementwise optimizer (SGD, weight decay, momentum) over the fused weights
is each member's own optimizer.

Every fused parameter and buffer keeps its member's name and holds the members along its
first dimension, so ``member_view(t, k, i, shape)`` is member i's tensor (a view, for copying
in and out). Only layer types known to keep members apart are accepted; any other raises
:class:`~lci.errors.ConfigError` (a silently mixed network would train wrong, not fail).
"""
from __future__ import annotations

import copy
from typing import List, Sequence

import torch
from torch import nn

from .errors import ConfigError

#: Layers without parameters that act on every channel separately (safe to keep as they are).
_CHANNELWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                nn.AdaptiveMaxPool2d, nn.Flatten)
#: Containers whose forward combines their children with channel-wise functions only (ReLU,
#: pooling, flatten(1), addition): checked by class, since forward code cannot be inspected.
_CONTAINERS = {"torch.nn.modules.container": ("Sequential",),
               "lci.models": ("SmallCNN", "PreActBlock", "PreActResNet"),
               "torchvision.models.resnet": ("ResNet", "BasicBlock", "Bottleneck")}


class FusedLinear(nn.Module):
    """k ``Linear(in, out)`` layers as one batched matmul: ``[B, k·in] -> [B, k·out]``."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(k, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        xs = x.reshape(b, self.k, self.in_features).transpose(0, 1)  # [k, B, in]
        if self.bias is not None:
            out = torch.baddbmm(self.bias.unsqueeze(1), xs, self.weight.transpose(1, 2))
        else:
            out = torch.bmm(xs, self.weight.transpose(1, 2))
        return out.transpose(0, 1).reshape(b, self.k * self.out_features)


def _cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach() for t in tensors]).clone()


def _fuse_leaf(mods: List[nn.Module], k: int) -> nn.Module:
    first = mods[0]
    if type(first) is nn.Conv2d:
        if first.padding_mode != "zeros":
            raise ConfigError(f"cannot fuse Conv2d with padding_mode={first.padding_mode!r}; "
                              "allowed: 'zeros'")
        out = nn.Conv2d(k * first.in_channels, k * first.out_channels, first.kernel_size,
                        stride=first.stride, padding=first.padding, dilation=first.dilation,
                        groups=k * first.groups, bias=first.bias is not None,
                        device=first.weight.device, dtype=first.weight.dtype)
    elif type(first) is nn.BatchNorm2d:
        out = nn.BatchNorm2d(k * first.num_features, eps=first.eps, momentum=first.momentum,
                             affine=first.affine, track_running_stats=first.track_running_stats,
                             device=next(iter(first.state_dict().values())).device)
    elif type(first) is nn.Linear:
        out = FusedLinear(k, first.in_features, first.out_features, bias=first.bias is not None)
        out.to(first.weight.device)
    elif isinstance(first, _CHANNELWISE):
        return copy.deepcopy(first)
    else:
        raise ConfigError(f"cannot fuse a {type(first).__name__} layer; allowed: Conv2d, "
                          "BatchNorm2d, Linear, parameter-free channel-wise layers "
                          f"({', '.join(c.__name__ for c in _CHANNELWISE)})")
    copy_in(out, mods)
    out.train(first.training)
    return out


def _is_container(m: nn.Module) -> bool:
    return type(m).__name__ in _CONTAINERS.get(type(m).__module__, ())


def fuse(models: Sequence[nn.Module]) -> nn.Module:
    """One network holding ``models`` (same architecture) side by side; see the module doc."""
    k, first = len(models), models[0]
    if any(type(m) is not type(first) for m in models):
        raise ConfigError("fused networks must share one architecture")
    if not _is_container(first):
        return _fuse_leaf(list(models), k)
    if next(first.parameters(recurse=False), None) is not None or first._buffers:
        raise ConfigError(f"cannot fuse {type(first).__name__}: it holds parameters itself")
    out = copy.copy(first)  # the container's settings; its children are replaced below
    out._parameters, out._buffers, out._modules = {}, {}, {}
    for name, child in first.named_children():
        out._modules[name] = fuse([m._modules[name] for m in models])
    return out


def member_view(t: torch.Tensor, k: int, i: int, shape: torch.Size) -> torch.Tensor:
    """Member ``i``'s part of the fused tensor ``t`` (a view), in the member's ``shape``."""
    if t.dim() == 0:  # BatchNorm's num_batches_tracked: the same count for every member
        return t
    return t.unflatten(0, (k, -1))[i].view(shape)


def copy_in(fused: nn.Module, members: Sequence[nn.Module]) -> None:
    """Copy the members' parameters and buffers into the fused network."""
    _copy(fused, members, into_fused=True)


def copy_out(fused: nn.Module, members: Sequence[nn.Module]) -> None:
    """Copy the fused network's parameters and buffers back into each member."""
    _copy(fused, members, into_fused=False)


@torch.no_grad()
def _copy(fused: nn.Module, members: Sequence[nn.Module], into_fused: bool) -> None:
    k = len(members)
    dst = fused.state_dict(keep_vars=True)
    states = [m.state_dict(keep_vars=True) for m in members]
    if any(set(s) != set(dst) for s in states):
        raise ConfigError("fused network and member networks differ in their tensors")
    for name, t in dst.items():
        for i, s in enumerate(states):
            part = member_view(t, k, i, s[name].shape)
            if into_fused:
                part.copy_(s[name])
            else:
                s[name].copy_(part)


class FusedNet(nn.Module):
    """A fused network in the member-major layout: ``[k·B, C, H, W] -> [k·B, classes]``,
    rows ``i·B .. (i+1)·B`` being member i's batch."""

    def __init__(self, models: Sequence[nn.Module], channels_last: bool = False):
        super().__init__()
        self.k = len(models)
        self.net = fuse(models)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k
        b = x.shape[0] // k
        # [k·B, C, H, W] -> [B, k·C, H, W]: member i's channels side by side
        xf = x.unflatten(0, (k, b)).transpose(0, 1).flatten(1, 2)
        xf = xf.contiguous(memory_format=torch.channels_last if self.channels_last
                           else torch.contiguous_format)
        out = self.net(xf)  # [B, k·classes]
        return out.unflatten(1, (k, -1)).transpose(0, 1).flatten(0, 1)
