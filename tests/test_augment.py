"""lci.augment: batched views on uint8 batches, reproducible from a torch.Generator."""
from __future__ import annotations

import pytest
import torch

from lci.augment import OPS, Augmenter
from lci.errors import ConfigError

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _images(b=64, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    # values 1..255: no input pixel is 0, so zeros in a view come from padding or cutout
    return torch.randint(1, 256, (b, c, h, w), dtype=torch.uint8, generator=g)


def _aug(mode="weak", seed=0, **kw):
    kw = {"pad": 4, "hflip": True, **kw}
    return Augmenter(MEAN, STD, mode=mode, generator=torch.Generator().manual_seed(seed), **kw)


def _black(aug, shape):
    """The normalised value of a 0 pixel, per channel, broadcast to ``shape``."""
    return aug.normalize(torch.zeros(shape, dtype=torch.uint8))


def test_output_shape_dtype_and_normalisation():
    x = _images()
    for mode in ("none", "weak", "cutout", "strong"):
        y = _aug(mode)(x)
        assert y.shape == x.shape and y.dtype == torch.float32
    a = _aug("none")
    ref = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(a.normalize(x), ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(a(x), a.normalize(x))  # "none" is normalisation only


def test_weak_view_is_a_shifted_crop_of_the_zero_padded_image():
    x = _images(b=32)
    a = _aug("weak", hflip=False)
    y = a(x)
    black = _black(a, x.shape)
    xn = a.normalize(x)
    p = 4
    offsets = set()
    for b in range(len(x)):
        # find the offset (dy, dx) in [-p, p]^2 for which the view is the shifted image
        # with zero padding where the window leaves the image
        found = None
        for dy in range(-p, p + 1):
            for dx in range(-p, p + 1):
                ref = black[b].clone()
                ys, yd = slice(max(dy, 0), 32 + min(dy, 0)), slice(max(-dy, 0), 32 + min(-dy, 0))
                xs, xd = slice(max(dx, 0), 32 + min(dx, 0)), slice(max(-dx, 0), 32 + min(-dx, 0))
                ref[:, yd, xd] = xn[b][:, ys, xs]
                if torch.equal(ref, y[b]):
                    found = (dy, dx)
        assert found is not None, f"sample {b} is not a crop of the padded image"
        offsets.add(found)
    assert len(offsets) > 10  # per-sample offsets, not one offset for the batch


def test_flip_happens_about_half_the_time():
    x = _images(b=400)
    a = _aug("weak", pad=0)
    y = a(x)
    xn = a.normalize(x)
    flipped = torch.tensor([torch.equal(y[i], xn[i].flip(-1)) for i in range(len(x))])
    same = torch.tensor([torch.equal(y[i], xn[i]) for i in range(len(x))])
    assert bool((flipped ^ same).all())          # each view is the image or its mirror
    assert 150 < int(flipped.sum()) < 250
    # no flip when hflip=False (digits)
    assert torch.equal(_aug("weak", pad=0, hflip=False)(x), xn)


def test_same_seed_same_views_and_generator_state_resumes():
    x = _images()
    for mode in ("weak", "cutout", "strong"):
        assert torch.equal(_aug(mode, seed=7)(x), _aug(mode, seed=7)(x))
        assert not torch.equal(_aug(mode, seed=7)(x), _aug(mode, seed=8)(x))
    # saving and restoring the generator state (what a checkpoint does) repeats the views
    a = _aug("strong", seed=3)
    a(x)
    state = a.generator.get_state()
    first = a(x)
    a.generator.set_state(state)
    assert torch.equal(a(x), first)
    # two calls draw two different views (x' and x'')
    assert not torch.equal(a(x), a(x))


def test_cutout_blacks_out_one_square_per_sample():
    x = _images(b=200)
    a = _aug("cutout", pad=0, hflip=False)   # only cutout changes the image
    y = a(x)
    black = _black(a, x.shape)
    mask = (y == black).all(1)               # [B, H, W]: pixels set to 0 in every channel
    xn = a.normalize(x)
    assert torch.equal(y[~mask[:, None].expand_as(y)], xn[~mask[:, None].expand_as(y)])
    full = 0
    for m in mask:
        rows = m.any(1).nonzero().flatten()
        cols = m.any(0).nonzero().flatten()
        assert len(rows) > 0, "every sample gets a cutout (the centre is inside the image)"
        # the blacked pixels form one axis-aligned rectangle of side <= 16 (clipped square)
        assert len(rows) <= 16 and len(cols) <= 16
        assert int(m.sum()) == len(rows) * len(cols)
        assert int(rows[-1] - rows[0]) + 1 == len(rows) and int(cols[-1] - cols[0]) + 1 == len(cols)
        full += int(len(rows) == 16 and len(cols) == 16)
    assert full > 20  # unclipped squares are exactly 16 x 16
    # an explicit size
    m8 = (_aug("cutout", pad=0, hflip=False, cutout=8)(x) == black).all(1)
    assert int(m8.sum((1, 2)).max()) == 64


def test_strong_view_runs_and_keeps_the_pixel_range():
    x = _images(b=256)
    a = _aug("strong")
    y = a(x)
    lo, hi = _black(a, (1, 3, 1, 1)), a.normalize(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8))
    eps = 1e-5
    assert bool(((y >= lo - eps) & (y <= hi + eps)).all()) and torch.isfinite(y).all()
    # pixel values stay whole numbers 0..255 before normalisation, except Cutout's square,
    # which is 0 after normalisation (GJS's CutoutDefault: the mean colour)
    cut = (y == 0).all(1, keepdim=True).expand_as(y)
    assert int(cut[:, 0].sum((1, 2)).min()) > 0            # every view has its square
    pix = y * torch.tensor(STD).view(1, 3, 1, 1) * 255 + torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(pix[~cut], pix[~cut].round(), rtol=0, atol=1e-3)
    # grey and tiny images (digits: 1 channel, 8 px) work too
    g = Augmenter((0.3,), (0.4,), pad=1, hflip=False, mode="strong",
                  generator=torch.Generator().manual_seed(0))
    assert g(_images(b=16, c=1, h=8, w=8)).shape == (16, 1, 8, 8)


def _ildoonet_op(img, name, v):
    """What ildoonet's RandAugment op (the one GJS installs) does to a PIL image with value v."""
    import numpy as np
    from PIL import Image, ImageEnhance, ImageOps

    affine = Image.Transform.AFFINE
    if name in ("autocontrast", "equalize", "invert"):
        return getattr(ImageOps, name)(img)
    if name == "rotate":
        return img.rotate(v)
    if name == "posterize":
        return ImageOps.posterize(img, max(1, int(v)))
    if name == "solarize":
        return ImageOps.solarize(img, v)
    if name == "solarize_add":
        added = np.clip(np.asarray(img).astype(np.int64) + v, 0, 255).astype(np.uint8)
        return ImageOps.solarize(Image.fromarray(added), 128)
    if name in ("color", "contrast", "brightness", "sharpness"):
        return getattr(ImageEnhance, name.capitalize())(img).enhance(v)
    matrix = {"shear_x": (1, v, 0, 0, 1, 0), "shear_y": (1, 0, 0, v, 1, 0),
              "translate_x": (1, 0, v, 0, 1, 0), "translate_y": (1, 0, 0, 0, 1, v)}[name]
    return img.transform(img.size, affine, matrix)


@pytest.mark.parametrize("magnitude,device", [
    (3, "cpu"), (11, "cpu"),
    pytest.param(3, "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                     reason="needs CUDA"))])
def test_each_rand_augment_op_equals_pil_as_ildoonet_calls_it(magnitude, device):
    import contextlib

    np = pytest.importorskip("numpy")
    Image = pytest.importorskip("PIL.Image")
    x = _images(b=5, h=32, w=32)
    x[3] = x[3] // 3 + 60          # a narrow range (autocontrast, equalize)
    x[4] = (x[4] // 64) * 64       # few levels
    a = Augmenter(MEAN, STD, pad=4, hflip=True, mode="strong", magnitude=magnitude)
    # on CUDA inside bf16 autocast, as the engine calls it: the arithmetic must stay exact
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda"
           else contextlib.nullcontext())
    checked = 0
    for i, name in enumerate(OPS):
        if name == "cutout_abs":
            continue
        for sign in (1.0, -1.0):
            with amp:
                out = a._rand_augment(x.to(device).float(), op=torch.full((5,), i, device=device),
                                      sign=torch.full((5,), sign, device=device)).cpu()
            v = a._ra_value(name) * (sign if name in ("rotate", "shear_x", "shear_y",
                                                      "translate_x", "translate_y") else 1.0)
            for b in range(len(x)):
                img = Image.fromarray(x[b].permute(1, 2, 0).numpy())
                ref = torch.from_numpy(np.array(_ildoonet_op(img, name, v))).permute(2, 0, 1)
                assert torch.equal(out[b], ref.float()), f"{name} sign {sign} sample {b}"
                checked += 1
    assert checked == 15 * 2 * 5


def test_rand_augment_is_ildoonets_list_at_gjs_magnitude():
    # GJS's scripts: N=1, M=3 -> 16 ops, values M/30 of each range
    assert OPS == ("autocontrast", "equalize", "invert", "rotate", "posterize", "solarize",
                   "solarize_add", "color", "contrast", "brightness", "sharpness", "shear_x",
                   "shear_y", "cutout_abs", "translate_x", "translate_y")
    a = _aug("strong")
    got = {n: a._ra_value(n) for n in ("rotate", "posterize", "solarize", "solarize_add",
                                       "color", "shear_x", "cutout_abs", "translate_x")}
    assert got == pytest.approx({"rotate": 3.0, "posterize": 0.4, "solarize": 25.6,
                                 "solarize_add": 11.0, "color": 0.28, "shear_x": 0.03,
                                 "cutout_abs": 4.0, "translate_x": 10.0})


def test_cutout_abs_paints_a_5x5_patch_in_ildoonets_colour():
    x = _images(b=300)
    a = _aug("strong")
    out = a._rand_augment(x.float(), op=torch.full((300,), OPS.index("cutout_abs")),
                          sign=torch.ones(300))
    fill = torch.tensor([125.0, 123.0, 114.0]).view(3, 1, 1)
    corners = []
    for b in range(len(x)):
        changed = (out[b] != x[b].float()).any(0)
        painted = (out[b] == fill).all(0)
        assert bool((changed <= painted).all())              # only the patch changes
        rows, cols = painted.any(1).nonzero().flatten(), painted.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 5 and 1 <= len(cols) <= 5
        corners.append(int(rows[0]))
    # corner int(max(0, u - 2)), u uniform on (1, 32]: rows 0..29, row 0 twice as often
    assert min(corners) == 0 and max(corners) == 29


def test_strong_order_is_rand_augment_then_crop_flip_then_cutout():
    # with pad=0 and no flip, the view is RandAugment's output, normalised, with one square
    # set to 0 after normalisation; the same generator draws the op first
    x = _images(b=64)
    a, b = _aug("strong", seed=5, pad=0, hflip=False), _aug("strong", seed=5, pad=0, hflip=False)
    y = a(x)
    ra = b._rand_augment(x.float()).to(torch.uint8)
    ref = b.normalize(ra)
    cut = (y == 0).all(1, keepdim=True).expand_as(y)
    assert torch.equal(y[~cut], ref[~cut])
    side = cut[:, 0].sum((1, 2))
    assert int(side.max()) == 16 * 16


def test_bad_arguments():
    with pytest.raises(ConfigError, match="'weak'"):
        Augmenter(MEAN, STD, pad=4, hflip=True, mode="heavy")
    a = Augmenter(MEAN, STD, pad=4, hflip=True)
    with pytest.raises(ValueError, match="uint8"):
        a(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        a(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


def test_for_data_uses_the_bundle():
    from lci.data import load_data

    b = load_data("digits")
    a = Augmenter.for_data(b, "weak", generator=torch.Generator().manual_seed(0))
    assert (a.pad, a.hflip, a.mean) == (1, False, b.mean)
    assert a(b.x_train[:8]).shape == (8, 1, 8, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_views_match_shapes_and_never_sync():
    x = _images().cuda()
    for mode in ("none", "weak", "cutout", "strong"):
        a = Augmenter(MEAN, STD, pad=4, hflip=True, mode=mode,
                      generator=torch.Generator(device="cuda").manual_seed(0))
        a(x)  # first call copies the constants to the device (a sync, once)
        torch.cuda.set_sync_debug_mode("error")
        try:
            y = a(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert y.is_cuda and y.shape == x.shape and y.dtype == torch.float32
