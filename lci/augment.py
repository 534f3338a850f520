"""Batched image augmentation on the device (airbench style).

:class:`Augmenter` turns a uint8 batch ``[B, C, H, W]`` (already on the device) into a
normalised float32 view. Every random choice is drawn per sample as a tensor from the given
``torch.Generator``, and every transform is applied to the whole batch at once: no Python
loop over samples and no host synchronisation (no ``.item()``, ``.tolist()``, ``.cpu()``,
boolean-mask indexing), so a step never waits for the GPU.

Modes (``TrainConfig.augment``):

- ``none``: normalise only.
- ``weak``: random crop with ``pad`` pixels of zero padding + random horizontal flip (if
  ``hflip``); torchvision's ``RandomCrop(size, padding=pad)`` + ``RandomHorizontalFlip()``.
- ``cutout``: weak + Cutout: a ``cutout`` x ``cutout`` square (default half the image side,
  16 for 32 px) around a uniformly drawn centre, clipped at the border, set to black (pixel
  value 0, i.e. ``-mean/std`` after normalisation, the same as the crop's padding).
- ``strong``: weak + one RandAugment op per sample (N=1, magnitude M=3 of 30, torchvision's
  magnitude scale) + Cutout, the GJS "strong" view. Ops: identity, shear x/y, translate x/y,
  rotate, brightness, color, contrast, sharpness, posterize, solarize, autocontrast.
  Equalize is left out (it needs a per-image histogram lookup). Shear and rotation are about
  the image centre (torchvision shears about the corner; at M=3 this moves pixels by < 1 px).

Two options for ImageNet-sized photos (the file-backed real-world sets, method.md section 6):

- ``crop=S``: the views are random ``S x S`` windows of the (larger) stored image, with no
  padding unless ``pad`` is also set: torchvision's ``RandomCrop(S)`` after ``Resize(256)``.
  :meth:`Augmenter.normalize` (evaluation, label correction) takes the centre ``S x S``
  window, torchvision's ``CenterCrop(S)``.
- ``jitter=(b, c, s, h)``: per-sample ColorJitter on every view after crop and flip (before
  RandAugment/Cutout), each factor drawn uniformly as in torchvision: brightness
  ``x·f``, contrast and saturation blends with the grey mean / grey image, ``f`` in
  ``[max(0, 1-b), 1+b]``; hue: a rotation of the chroma plane of YIQ by ``2π·u``,
  ``u`` in ``[-h, h]``, instead of torchvision's HSV shift (same turn of the colour wheel,
  an approximation that keeps luma fixed and needs no per-pixel branches). The four ops run
  in this fixed order (torchvision permutes them per call); values are clamped to [0, 255]
  after each op and not rounded.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .errors import ConfigError, allowed

MODES = ("none", "weak", "cutout", "strong")

# RandAugment ops, in the order their index is drawn (the order is part of reproducibility)
OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate",
       "brightness", "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast")
_OP = {name: i for i, name in enumerate(OPS)}
_MAX_MAGNITUDE = 30  # torchvision's RandAugment: 31 bins, magnitude 0..30


class Augmenter:
    """Random views of uint8 batches; see the module docstring.

    ``mean``/``std`` are per channel in [0, 1] pixel units (``DataBundle.mean/std``).
    ``cutout`` is the Cutout side in pixels for modes ``cutout`` and ``strong`` (0: half the
    image side); other modes ignore it. ``magnitude`` is RandAugment's M for ``strong``.
    ``generator`` must live on the device of the batches; ``None`` uses torch's global RNG.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, pad: int, hflip: bool,
                 mode: str = "weak", cutout: int = 0, magnitude: int = 3,
                 generator: Optional[torch.Generator] = None, crop: int = 0,
                 jitter: Optional[Sequence[float]] = None):
        if mode not in MODES:
            raise ConfigError(f"unknown augment {mode!r}; allowed: {allowed(MODES)}")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ConfigError(f"mean {tuple(mean)} and std {tuple(std)} must have one entry per "
                              "channel, with std > 0")
        if pad < 0 or cutout < 0:
            raise ConfigError(f"pad={pad} and cutout={cutout} must be >= 0")
        if not 0 <= magnitude <= _MAX_MAGNITUDE:
            raise ConfigError(f"magnitude={magnitude} must be in [0, {_MAX_MAGNITUDE}]")
        if crop < 0:
            raise ConfigError(f"crop={crop} must be >= 0 (0: views keep the image size)")
        if jitter is not None and (len(jitter) != 4 or any(j < 0 for j in jitter)
                                   or jitter[3] > 0.5):
            raise ConfigError(f"jitter={tuple(jitter)!r} must be (brightness, contrast, "
                              "saturation, hue), each >= 0, hue <= 0.5")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.pad, self.hflip, self.mode = int(pad), bool(hflip), mode
        self.cutout, self.magnitude = int(cutout), int(magnitude)
        self.generator = generator
        self.crop = int(crop)
        self.jitter = tuple(float(j) for j in jitter) if jitter is not None and any(jitter) else None
        self._consts: Dict[Tuple[torch.device, str], torch.Tensor] = {}

    @classmethod
    def for_data(cls, bundle, mode: str = "weak", *, cutout: int = 0,
                 generator: Optional[torch.Generator] = None) -> "Augmenter":
        """The augmenter a :class:`lci.data.DataBundle` asks for (its stats, pad and flip)."""
        return cls(bundle.mean, bundle.std, pad=bundle.pad, hflip=bundle.hflip, mode=mode,
                   cutout=cutout, generator=generator, crop=getattr(bundle, "crop", 0),
                   jitter=getattr(bundle, "color_jitter", None))

    def __repr__(self) -> str:
        return (f"Augmenter(mode={self.mode!r}, pad={self.pad}, hflip={self.hflip}, "
                f"cutout={self.cutout}, magnitude={self.magnitude}, crop={self.crop}, "
                f"jitter={self.jitter})")

    # ------------------------------------------------------------------------------ public
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A random view of ``x`` (uint8 ``[B, C, H, W]``): normalised float32, same shape."""
        self._check(x)
        if self.mode == "none":
            return self.normalize(x)
        x = self._crop_flip(x)           # on uint8: moves a quarter of the bytes of float
        xf = x.float()
        if self.jitter is not None:
            xf = self._color_jitter(xf)
        if self.mode == "strong":
            xf = self._rand_augment(xf)
        if self.mode in ("cutout", "strong"):
            xf = xf.masked_fill(self._cutout_mask(xf), 0.0)
        return self._normalize_float(xf)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """No augmentation: ``(x/255 - mean) / std`` as float32 (evaluation, label correction)."""
        self._check(x)
        return self._normalize_float(self._center_crop(x).float())

    # ----------------------------------------------------------------------------- helpers
    def _check(self, x: torch.Tensor) -> None:
        # shape, dtype and device are host-side metadata: checking them never syncs
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"Augmenter expects uint8 images [B, C, H, W], got {x.dtype} "
                             f"{tuple(x.shape)}")
        if x.shape[1] != len(self.mean) and len(self.mean) != 1:
            raise ValueError(f"images have {x.shape[1]} channels but mean/std have "
                             f"{len(self.mean)}")
        g = self.generator
        if g is not None and g.device.type != x.device.type:
            raise ValueError(f"the generator is on {g.device} but the images are on {x.device}; "
                             "create it with torch.Generator(device=images.device)")

    def _const(self, name: str, device: torch.device) -> torch.Tensor:
        """Per-device constants, made once: a host-to-device copy would be a sync point."""
        key = (device, name)
        if key not in self._consts:
            if name == "mean255":
                v = torch.tensor(self.mean, dtype=torch.float32).mul(255.0).view(1, -1, 1, 1)
            elif name == "inv_std255":
                v = (1.0 / (torch.tensor(self.std, dtype=torch.float32) * 255.0)).view(1, -1, 1, 1)
            elif name in ("yiq", "yiq_inv"):  # RGB -> YIQ (NTSC), and back
                v = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                                  [0.211, -0.523, 0.312]], dtype=torch.float64)
                v = (v if name == "yiq" else torch.linalg.inv(v)).float()
            else:  # sharpness: torchvision's smoothing kernel
                v = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
                v = v.view(1, 1, 3, 3)
            self._consts[key] = v.to(device)
        return self._consts[key]

    def _normalize_float(self, xf: torch.Tensor) -> torch.Tensor:
        return (xf - self._const("mean255", xf.device)) * self._const("inv_std255", xf.device)

    def _randint(self, high: int, shape: Tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.randint(0, high, shape, device=device, generator=self.generator)

    # ------------------------------------------------------------------------- crop + flip
    def _crop_flip(self, x: torch.Tensor) -> torch.Tensor:
        """Random crop of the zero-padded image and random mirror, as two batched gathers.

        Output pixel ``(i, j)`` of sample ``b`` reads padded pixel ``(i + dy_b, j + dx_b)``; a
        flip reverses the column indices of the crop window. ``gather`` with per-sample index
        rows does it for the whole batch at once.
        """
        B, C, H, W = x.shape
        p, dev = self.pad, x.device
        Ho, Wo = (self.crop, self.crop) if self.crop else (H, W)  # the window's size
        if Ho > H + 2 * p or Wo > W + 2 * p:
            raise ValueError(f"crop={self.crop} is larger than the (padded) {H}x{W} images")
        if p == 0 and not self.hflip and (Ho, Wo) == (H, W):
            return x
        rows = torch.arange(Ho, device=dev).expand(B, Ho)
        cols = torch.arange(Wo, device=dev).expand(B, Wo)
        if p > 0:
            x = F.pad(x, (p, p, p, p))  # zeros, like RandomCrop(padding=p)
        if p > 0 or (Ho, Wo) != (H, W):
            rows = rows + self._randint(H + 2 * p - Ho + 1, (B, 1), dev)
            cols = cols + self._randint(W + 2 * p - Wo + 1, (B, 1), dev)
        if self.hflip:
            flip = self._randint(2, (B, 1), dev).bool()
            cols = torch.where(flip, cols.flip(1), cols)
        x = x.gather(2, rows[:, None, :, None].expand(B, C, Ho, x.shape[3]))
        return x.gather(3, cols[:, None, None, :].expand(B, C, Ho, Wo))

    def _center_crop(self, x: torch.Tensor) -> torch.Tensor:
        """The centre ``crop x crop`` window (torchvision's CenterCrop offsets); a view, no copy."""
        c = self.crop
        H, W = x.shape[-2:]
        if not c or (H <= c and W <= c):
            return x
        top, left = int(round((H - c) / 2.0)), int(round((W - c) / 2.0))
        return x[..., top:top + c, left:left + c]

    # ------------------------------------------------------------------------ ColorJitter
    def _color_jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample brightness, contrast, saturation and hue on float pixels in [0, 255]."""
        b, c, s, h = self.jitter
        B, C = x.shape[:2]
        dev = x.device

        def factor(amount: float) -> torch.Tensor:  # uniform in [max(0, 1-a), 1+a]
            u = torch.rand((B, 1, 1, 1), device=dev, generator=self.generator)
            lo = max(0.0, 1.0 - amount)
            return lo + u * (1.0 + amount - lo)

        def gray(v: torch.Tensor) -> torch.Tensor:
            if C != 3:
                return v.mean(1, keepdim=True)
            return 0.299 * v[:, 0:1] + 0.587 * v[:, 1:2] + 0.114 * v[:, 2:3]

        if b > 0:
            x = (x * factor(b)).clamp_(0.0, 255.0)
        if c > 0:
            m = gray(x).mean((1, 2, 3), keepdim=True)
            x = (m + factor(c) * (x - m)).clamp_(0.0, 255.0)
        if s > 0 and C == 3:
            g = gray(x)
            x = (g + factor(s) * (x - g)).clamp_(0.0, 255.0)
        if h > 0 and C == 3:
            angle = (torch.rand(B, device=dev, generator=self.generator) * 2.0 - 1.0) * (h * 2 * math.pi)
            cos, sin = torch.cos(angle), torch.sin(angle)
            one, zero = torch.ones_like(cos), torch.zeros_like(cos)
            rot = torch.stack([torch.stack([one, zero, zero], 1),
                               torch.stack([zero, cos, -sin], 1),
                               torch.stack([zero, sin, cos], 1)], 1)       # [B, 3, 3]
            m = self._const("yiq_inv", dev) @ rot @ self._const("yiq", dev)  # RGB -> RGB
            x = torch.einsum("bij,bjhw->bihw", m, x).clamp_(0.0, 255.0)
        return x

    # ------------------------------------------------------------------------------ cutout
    def _cutout_mask(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` True inside each sample's square (rows/cols compared to bounds)."""
        B, _, H, W = x.shape
        s = self.cutout or max(1, min(H, W) // 2)
        dev = x.device
        top = self._randint(H, (B, 1, 1), dev) - s // 2     # centre - s//2: an s-wide square
        left = self._randint(W, (B, 1, 1), dev) - s // 2
        r = torch.arange(H, device=dev).view(1, H, 1)
        c = torch.arange(W, device=dev).view(1, 1, W)
        inside = (r >= top) & (r < top + s) & (c >= left) & (c < left + s)
        return inside[:, None]

    # ------------------------------------------------------------------------- RandAugment
    def _rand_augment(self, x: torch.Tensor, op: Optional[torch.Tensor] = None,
                      sign: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One op per sample on float pixels in [0, 255]; returns rounded values in [0, 255].

        Every candidate op is computed for the whole batch and each sample keeps its own op's
        result (``torch.where``): more arithmetic than grouping, but no data-dependent
        shapes, hence no sync. The geometric ops share one ``grid_sample``. ``op`` (indices
        into :data:`OPS`) and ``sign`` (±1) can be given to apply chosen ops (tests).
        """
        B, C, H, W = x.shape
        dev = x.device
        frac = self.magnitude / _MAX_MAGNITUDE
        if op is None:
            op = self._randint(len(OPS), (B,), dev)
        if sign is None:
            sign = self._randint(2, (B,), dev).float() * 2 - 1  # signed ops: random direction

        def is_op(name: str) -> torch.Tensor:
            return (op == _OP[name]).view(B, 1, 1, 1)

        # --- geometric: one affine matrix per sample (identity for non-geometric ops)
        # theta maps output to input coordinates in [-1, 1] units; for non-square images
        # the off-diagonal terms carry the aspect ratio so shear/rotation act in pixels.
        def signed(name: str, amount: float) -> torch.Tensor:
            return torch.where(op == _OP[name], sign * amount, torch.zeros_like(sign))

        shear_x = signed("shear_x", 0.3 * frac)
        shear_y = signed("shear_y", 0.3 * frac)
        # whole pixels (torchvision truncates the translation too): exact shifts
        tx = signed("translate_x", float(int(150.0 / 331.0 * W * frac)))
        ty = signed("translate_y", float(int(150.0 / 331.0 * H * frac)))
        angle = signed("rotate", math.radians(30.0 * frac))
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([
            torch.stack([cos, (shear_x - sin) * (H / W), tx * (2.0 / W)], 1),
            torch.stack([(shear_y + sin) * (W / H), cos, ty * (2.0 / H)], 1),
        ], 1)
        grid = F.affine_grid(theta, [B, C, H, W], align_corners=False)
        warped = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        geometric = (op >= _OP["shear_x"]) & (op <= _OP["rotate"])
        out = torch.where(geometric.view(B, 1, 1, 1), warped, x)

        # --- colour: blends with a degenerate image, factor 1 ± 0.9·M/30 (torchvision)
        factor = (1.0 + sign * 0.9 * frac).view(B, 1, 1, 1)
        if C == 3:
            gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        else:
            gray = x.mean(1, keepdim=True)

        def blend(degenerate: torch.Tensor) -> torch.Tensor:
            return degenerate + factor * (x - degenerate)

        out = torch.where(is_op("brightness"), x * factor, out)
        out = torch.where(is_op("color"), blend(gray), out)
        out = torch.where(is_op("contrast"), blend(gray.mean((1, 2, 3), keepdim=True)), out)
        if H >= 3 and W >= 3:  # the border keeps its pixels, as in torchvision
            smooth = F.conv2d(x.reshape(B * C, 1, H, W), self._const("sharp", dev))
            degenerate = x.clone()
            degenerate[:, :, 1:-1, 1:-1] = smooth.view(B, C, H - 2, W - 2)
            out = torch.where(is_op("sharpness"), blend(degenerate), out)
        # posterize keeps `bits` high bits (8 at M=3, an identity there, as in torchvision)
        bits = 8 - round(self.magnitude / (_MAX_MAGNITUDE / 4))  # half-to-even, like torch
        step = float(2 ** (8 - bits))
        out = torch.where(is_op("posterize"), torch.floor(x / step) * step, out)
        threshold = 255.0 * (1.0 - frac)
        out = torch.where(is_op("solarize"), torch.where(x >= threshold, 255.0 - x, x), out)
        lo = x.amin((2, 3), keepdim=True)
        hi = x.amax((2, 3), keepdim=True)
        stretch = hi > lo  # a flat channel stays as it is
        scale = torch.where(stretch, 255.0 / (hi - lo).clamp_min(1e-6), torch.ones_like(hi))
        auto = (x - torch.where(stretch, lo, torch.zeros_like(lo))) * scale
        out = torch.where(is_op("autocontrast"), auto, out)
        # back to what a uint8 image could hold
        return out.clamp_(0.0, 255.0).round_()
