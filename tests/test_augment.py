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
    # pixel values stay whole numbers 0..255 before normalisation
    pix = y * torch.tensor(STD).view(1, 3, 1, 1) * 255 + torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(pix, pix.round(), rtol=0, atol=1e-3)
    # grey and tiny images (digits: 1 channel, 8 px) work too
    g = Augmenter((0.3,), (0.4,), pad=1, hflip=False, mode="strong",
                  generator=torch.Generator().manual_seed(0))
    assert g(_images(b=16, c=1, h=8, w=8)).shape == (16, 1, 8, 8)


def test_each_rand_augment_op_matches_torchvision_on_chosen_samples():
    tvf = pytest.importorskip("torchvision.transforms.v2.functional")
    x = _images(b=2, h=16, w=16).float()
    a = _aug("strong", magnitude=9)   # a magnitude where translate is 2 px on 16 px
    for name, ref in [
        ("identity", lambda im: im),
        ("solarize", lambda im: tvf.solarize(im, 255.0 * (1 - 9 / 30))),
        ("brightness", lambda im: tvf.adjust_brightness(im, 1 + 0.27)),
        ("contrast", lambda im: tvf.adjust_contrast(im, 1 + 0.27)),
        ("autocontrast", lambda im: tvf.autocontrast(im)),
        ("translate_x", lambda im: tvf.affine(im, angle=0.0, translate=[-2, 0], scale=1.0,
                                              shear=[0.0, 0.0])),
    ]:
        # torchvision on uint8 images (what RandAugment sees); it truncates where we round
        op = torch.full((2,), OPS.index(name))
        out = a._rand_augment(x.clone(), op=op, sign=torch.ones(2))
        torch.testing.assert_close(out, ref(x.to(torch.uint8)).float(), rtol=0, atol=1.0,
                                   msg=f"op {name}")
    # every op keeps shape and range
    for i, name in enumerate(OPS):
        out = a._rand_augment(x.clone(), op=torch.full((2,), i), sign=-torch.ones(2))
        assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 255, name


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
