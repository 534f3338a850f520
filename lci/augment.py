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
- ``strong``: the GJS "strong" view (GJS ``datasets/transforms.py``: ``RandAugment(N, M)``
  inserted before ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``,
  ``Normalize``, then ``CutoutDefault(16)``): one RandAugment op per sample on the stored
  image (N=1, M=3), then crop + flip, then normalisation, then Cutout, whose square is set to
  0 *after* normalisation (the mean colour, as ``CutoutDefault`` multiplies the normalised
  tensor by a mask). RandAugment is the one GJS installs, ildoonet/pytorch-randaugment
  (``RandAugment/augmentations.py``, ``augment_list``): 16 ops drawn uniformly, value
  ``M/30·(max−min)+min`` -- autocontrast, equalize, invert, rotate (0..30°), posterize
  (0..4 bits, ``max(1, int(v))``), solarize (threshold 0..256), solarize-add (0..110, threshold
  128), color/contrast/brightness/sharpness (factor 0.1..1.9, no sign), shear x/y (0..0.3),
  cutout-abs (0..40 px, fill (125, 123, 114)), translate x/y (0..100 *pixels*); rotate, shear
  and translate take a random sign. At M=3: 3°, 1 bit, threshold 25.6, +11, factor 0.28,
  shear 0.03, a 5x5 patch, 10 px. Each op reproduces PIL's integer arithmetic (nearest
  neighbour in PIL's 16.16 fixed point for rotate/shear, truncating blends, L = 0.299/0.587/
  0.114 rounded as PIL), so a view equals what ildoonet's op gives on the same image and the
  same random choices (tests compare with PIL).

Two options for ImageNet-sized photos (the file-backed real-world sets, docs/method.md §8):

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

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, allowed

MODES = ("none", "weak", "cutout", "strong")

# RandAugment ops as GJS uses them: ildoonet/pytorch-randaugment's augment_list(), in its order
# (the index drawn per sample), with its (min, max) value ranges
_RA_RANGES = (("autocontrast", 0, 1), ("equalize", 0, 1), ("invert", 0, 1), ("rotate", 0, 30),
              ("posterize", 0, 4), ("solarize", 0, 256), ("solarize_add", 0, 110),
              ("color", 0.1, 1.9), ("contrast", 0.1, 1.9), ("brightness", 0.1, 1.9),
              ("sharpness", 0.1, 1.9), ("shear_x", 0.0, 0.3), ("shear_y", 0.0, 0.3),
              ("cutout_abs", 0, 40), ("translate_x", 0.0, 100), ("translate_y", 0.0, 100))
OPS = tuple(name for name, _, _ in _RA_RANGES)
_OP = {name: i for i, name in enumerate(OPS)}
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")  # signed, remapping
_MAX_MAGNITUDE = 30  # RandAugment's M in [0, 30]
_CUTOUT_ABS_FILL = (125.0, 123.0, 114.0)  # ildoonet's CutoutAbs colour


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
        if self.mode == "strong":       # GJS: RandAugment on the stored image, before the crop
            with torch.autocast(x.device.type, enabled=False):  # PIL's arithmetic, in fp32/64
                x = self._rand_augment(x.float()).to(torch.uint8)  # whole numbers in [0, 255]
        x = self._crop_flip(x)           # on uint8: moves a quarter of the bytes of float
        xf = x.float()
        if self.jitter is not None:
            xf = self._color_jitter(xf)
        if self.mode == "cutout":
            xf = xf.masked_fill(self._cutout_mask(xf), 0.0)
        out = self._normalize_float(xf)
        if self.mode == "strong":       # CutoutDefault after Normalize: 0 is the mean colour
            out = out.masked_fill(self._cutout_mask(out), 0.0)
        return out

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
            else:  # CutoutAbs colour, RGB ("cutout_fill") or grey ("cutout_fill1")
                v = torch.tensor(_CUTOUT_ABS_FILL if name == "cutout_fill" else _CUTOUT_ABS_FILL[:1])
                v = v.view(1, -1, 1, 1)
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
    def _ra_value(self, name: str) -> float:
        """ildoonet's ``(float(m) / 30) * float(maxval - minval) + minval``, in Python floats."""
        _, lo, hi = _RA_RANGES[_OP[name]]
        return (float(self.magnitude) / 30) * float(hi - lo) + lo

    def _geometry(self, H: int, W: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[11, H·W]`` flat source index (−1: outside, filled black) of every output pixel:
        identity, then each op of :data:`_GEOMETRIC` with sign +, then −; and, per op of
        :data:`OPS`, the row of its + map (0: not geometric). Built once per size on the host
        with PIL's arithmetic (see :func:`_pil_affine_source`)."""
        key = (device, f"geometry{H}x{W}")
        if key not in self._consts:
            base = torch.zeros(len(OPS), dtype=torch.long)
            for g, name in enumerate(_GEOMETRIC):
                base[_OP[name]] = 1 + 2 * g
            self._consts[(device, "geometry_rows")] = base.to(device)
            maps = [np.arange(H * W, dtype=np.int64)]
            for name in _GEOMETRIC:
                for sign in (1.0, -1.0):
                    v = sign * self._ra_value(name)
                    if name == "rotate":
                        a = _pil_rotate_matrix(v, W, H)
                    elif name == "shear_x":
                        a = (1.0, v, 0.0, 0.0, 1.0, 0.0)
                    elif name == "shear_y":
                        a = (1.0, 0.0, 0.0, v, 1.0, 0.0)
                    elif name == "translate_x":
                        a = (1.0, 0.0, v, 0.0, 1.0, 0.0)
                    else:
                        a = (1.0, 0.0, 0.0, 0.0, 1.0, v)
                    maps.append(_pil_affine_source(a, H, W))
            self._consts[key] = torch.from_numpy(np.stack(maps)).to(device)
        return self._consts[key], self._consts[(device, "geometry_rows")]

    def _rand_augment(self, x: torch.Tensor, op: Optional[torch.Tensor] = None,
                      sign: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One ildoonet RandAugment op per sample on whole-number pixels in [0, 255].

        Every candidate op is computed for the whole batch and each sample keeps its own op's
        result (``torch.where``): more arithmetic than grouping, but no data-dependent
        shapes, hence no sync. The geometric ops are one gather with precomputed source
        indices. ``op`` (indices into :data:`OPS`) and ``sign`` (±1) can be given to apply
        chosen ops (tests). Returns whole numbers in [0, 255] as float32.
        """
        B, C, H, W = x.shape
        dev = x.device
        if op is None:
            op = self._randint(len(OPS), (B,), dev)
        if sign is None:  # ildoonet: `if random.random() > 0.5: v = -v`
            sign = self._randint(2, (B,), dev).float() * 2 - 1

        def is_op(name: str) -> torch.Tensor:
            return (op == _OP[name]).view(B, 1, 1, 1)

        # --- geometric: PIL's nearest-neighbour source pixel of every output pixel
        maps, rows = self._geometry(H, W, dev)
        geo = rows[op]
        src = maps[geo + ((geo > 0) & (sign < 0)).long()]            # [B, H·W]
        flat = x.reshape(B, C, H * W)
        moved = flat.gather(2, src.clamp_min(0)[:, None, :].expand(B, C, H * W))
        out = moved.masked_fill((src < 0)[:, None, :], 0.0).view(B, C, H, W)

        # --- pixel ops (PIL's integer look-up tables)
        out = torch.where(is_op("invert"), 255.0 - x, out)
        bits = max(1, int(self._ra_value("posterize")))
        step = float(2 ** (8 - bits))                                # keep the top `bits` bits
        out = torch.where(is_op("posterize"), torch.floor(x / step) * step, out)
        thr = self._ra_value("solarize")
        out = torch.where(is_op("solarize"), torch.where(x < thr, x, 255.0 - x), out)
        added = (x + self._ra_value("solarize_add")).clamp(0.0, 255.0).floor()  # astype(uint8)
        out = torch.where(is_op("solarize_add"), torch.where(added < 128, added, 255.0 - added),
                          out)
        out = torch.where(is_op("autocontrast"), _pil_autocontrast(x), out)
        out = torch.where(is_op("equalize"), _pil_equalize(x), out)

        # --- enhance ops: Image.blend(degenerate, image, v), float32, truncated (PIL)
        gray = _pil_luma(x)                                          # [B, 1, H, W]

        def blend(name: str, degenerate: torch.Tensor) -> torch.Tensor:
            f = float(np.float32(self._ra_value(name)))  # PIL's ImagingBlend takes a C float
            return (degenerate + f * (x - degenerate)).clamp(0.0, 255.0).floor()

        out = torch.where(is_op("color"), blend("color", gray.expand_as(x)), out)
        mean = torch.floor(gray.mean((1, 2, 3), keepdim=True, dtype=torch.float64) + 0.5).float()
        out = torch.where(is_op("contrast"), blend("contrast", mean.expand_as(x)), out)
        out = torch.where(is_op("brightness"), blend("brightness", torch.zeros_like(x)), out)
        if H >= 3 and W >= 3:  # ImageFilter.SMOOTH; the border keeps its pixels, as in PIL
            # (1 1 1 / 1 5 1 / 1 1 1)/13 as a whole-number sum (exact: no TF32/bf16 conv),
            # rounded as PIL's clip8
            box = sum(x[:, :, i:H - 2 + i, j:W - 2 + j] for i in range(3) for j in range(3))
            smooth = (box + 4.0 * x[:, :, 1:-1, 1:-1]) / 13.0
            degenerate = x.clone()
            degenerate[:, :, 1:-1, 1:-1] = torch.floor(smooth + 0.5)
            out = torch.where(is_op("sharpness"), blend("sharpness", degenerate), out)
        else:
            out = torch.where(is_op("sharpness"), x, out)

        # --- CutoutAbs: a (v+1)-wide square (PIL's rectangle includes both corners), corner
        # at int(max(0, u - v/2)) with u from np.random.uniform(size) = uniform on (1, size]
        v = self._ra_value("cutout_abs")
        r = torch.rand((2, B, 1, 1), device=dev, generator=self.generator)
        y0 = torch.floor((H + (1 - H) * r[0] - v / 2.0).clamp_min(0.0))
        x0 = torch.floor((W + (1 - W) * r[1] - v / 2.0).clamp_min(0.0))
        y1 = torch.floor(torch.clamp(y0 + v, max=float(H)))
        x1 = torch.floor(torch.clamp(x0 + v, max=float(W)))
        rows = torch.arange(H, device=dev, dtype=torch.float32).view(1, H, 1)
        cols = torch.arange(W, device=dev, dtype=torch.float32).view(1, 1, W)
        patch = ((rows >= y0) & (rows <= y1) & (cols >= x0) & (cols <= x1))[:, None]
        fill = self._const("cutout_fill" if C == 3 else "cutout_fill1", dev)
        out = torch.where(is_op("cutout_abs") & patch, fill, torch.where(
            is_op("cutout_abs"), x, out))
        return out.clamp_(0.0, 255.0)


# ------------------------------------------------------------------------- PIL arithmetic
def _pil_rotate_matrix(angle: float, w: int, h: int) -> Tuple[float, ...]:
    """``Image.rotate(angle)``'s inverse affine matrix (PIL's own float steps, about the centre)."""
    angle = angle % 360.0
    if angle == 0:
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    cx, cy = w / 2, h / 2
    rad = -math.radians(angle)
    m = [round(math.cos(rad), 15), round(math.sin(rad), 15), 0.0,
         round(-math.sin(rad), 15), round(math.cos(rad), 15), 0.0]
    a, b, _, d, e, _ = m
    m[2], m[5] = a * -cx + b * -cy + 0.0, d * -cx + e * -cy + 0.0
    m[2] += cx
    m[5] += cy
    return tuple(m)


def _pil_affine_source(a: Sequence[float], H: int, W: int) -> np.ndarray:
    """Flat source index (−1: outside) of each output pixel for PIL's NEAREST affine transform.

    PIL (libImaging/Geometry.c) takes ``ImagingScaleAffine`` when the matrix has no
    rotation/shear terms (source ``floor(a0·(x+½) + a2)``, accumulated in doubles) and
    otherwise ``affine_fixed``: 16.16 fixed point, ``FIX(v) = floor(v·65536 + ½)``, the source
    column ``(a2' + y·a1 + x·a0) >> 16`` with ``a2' = FIX(a2 + a0/2 + a1/2)``, likewise rows.
    """
    a0, a1, a2, a3, a4, a5 = (float(v) for v in a)
    if a1 == 0 and a3 == 0:
        def axis(scale: float, shift: float, n: int) -> np.ndarray:
            out, pos = np.empty(n, dtype=np.int64), shift + scale * 0.5
            for i in range(n):
                out[i] = -1 if pos < 0.0 else int(pos)
                pos += scale
            return out
        xs, ys = axis(a0, a2, W)[None, :], axis(a4, a5, H)[:, None]
    else:
        def fix(v: float) -> int:
            return math.floor(v * 65536.0 + 0.5)
        A0, A1, A3, A4 = fix(a0), fix(a1), fix(a3), fix(a4)
        A2, A5 = fix(a2 + a0 * 0.5 + a1 * 0.5), fix(a5 + a3 * 0.5 + a4 * 0.5)
        yy, xx = np.arange(H, dtype=np.int64)[:, None], np.arange(W, dtype=np.int64)[None, :]
        xs = (A2 + yy * A1 + xx * A0) >> 16
        ys = (A5 + yy * A4 + xx * A3) >> 16
    inside = (xs >= 0) & (xs < W) & (ys >= 0) & (ys < H)
    return np.where(inside, ys * W + xs, -1).reshape(-1)


def _pil_luma(x: torch.Tensor) -> torch.Tensor:
    """``convert("L")``: (R·19595 + G·38470 + B·7471 + 2^15) >> 16 (grey images: as they are)."""
    if x.shape[1] != 3:
        return x[:, :1]
    xi = x.to(torch.int64)
    return ((xi[:, 0:1] * 19595 + xi[:, 1:2] * 38470 + xi[:, 2:3] * 7471 + 32768) >> 16).float()


def _pil_autocontrast(x: torch.Tensor) -> torch.Tensor:
    """``ImageOps.autocontrast``: per channel ``int(v·scale + offset)``, scale = 255/(hi−lo)."""
    xd = x.double()
    lo = xd.amin((2, 3), keepdim=True)
    hi = xd.amax((2, 3), keepdim=True)
    stretch = hi > lo  # a flat channel keeps its values
    scale = 255.0 / torch.where(stretch, hi - lo, torch.ones_like(hi))
    offset = -lo * scale
    out = torch.trunc(xd * scale + offset).clamp(0.0, 255.0)
    return torch.where(stretch, out, xd).float()


def _pil_equalize(x: torch.Tensor) -> torch.Tensor:
    """``ImageOps.equalize``: per channel, ``lut[i] = (step//2 + #pixels below i) // step`` with
    ``step = (N − count of the highest used value) // 255``; identity when step is 0 or only
    one value is used."""
    B, C, H, W = x.shape
    xi = x.to(torch.int64).reshape(B * C, H * W)
    hist = torch.zeros(B * C, 256, dtype=torch.int64, device=x.device)
    hist.scatter_add_(1, xi, torch.ones_like(xi))
    levels = torch.arange(256, device=x.device)
    used = hist > 0
    top = (levels * used).amax(1, keepdim=True)                      # highest used value
    step = (H * W - hist.gather(1, top)) // 255
    below = hist.cumsum(1) - hist
    lut = (step // 2 + below) // step.clamp_min(1)
    keep = (used.sum(1, keepdim=True) <= 1) | (step == 0)
    lut = torch.where(keep, levels.expand_as(lut), lut).clamp(0, 255)
    return lut.gather(1, xi).view(B, C, H, W).to(x.dtype)
