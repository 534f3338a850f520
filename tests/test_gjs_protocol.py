"""The CIFAR presets follow the GJS protocol (ErikEnglesson/GJS): noise, views, settings."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from lci.noise import make_noisy_labels


def gjs_reference_asym(labels: np.ndarray, percent: float, seed: int) -> np.ndarray:
    """GJS's CIFAR-10 asymmetric loop written out again, on numpy's *global* RNG as GJS uses it.

    ``np.random.seed(seed)`` then, for every class i = 0..9 in turn: the indices whose label
    is *currently* i, shuffled; index number j (from 0) flips when j < percent·len. The global
    RNG state is restored afterwards.
    """
    flips = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}  # truck->automobile, bird->airplane, cat<->dog, deer->horse
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        noisy = np.array(labels, dtype=np.int64, copy=True)
        for cls in range(10):
            members = np.where(noisy == cls)[0]
            np.random.shuffle(members)
            limit = percent * len(members)
            for j, sample in enumerate(members):
                if j < limit and cls in flips:
                    noisy[sample] = flips[cls]
        return noisy
    finally:
        np.random.set_state(saved)


@pytest.mark.parametrize("percent,seed", [(0.2, 1), (0.4, 1), (0.4, 3), (0.07, 0), (1.0, 2)])
def test_cifar10_asym_matches_gjs_loop(percent, seed):
    # a fixed, unequal, shuffled label vector (sizes not multiples of 10 so rounding shows)
    sizes = [503, 498, 511, 487, 500, 509, 492, 501, 499, 131]
    y = np.random.default_rng(1234).permutation(np.repeat(np.arange(10), sizes))
    ref = gjs_reference_asym(y, percent, seed)
    out = make_noisy_labels(y, "asym", percent, 10, seed, dataset="cifar10")
    # the same (true, noisy) counts -- and, with the same RNG stream, the same labels
    pair_counts = lambda noisy: Counter(zip(y.tolist(), noisy.tolist()))  # noqa: E731
    assert pair_counts(out.noisy_labels) == pair_counts(ref)
    np.testing.assert_array_equal(out.noisy_labels, ref)
    assert out.realized_rate == pytest.approx(float((ref != y).mean()))


def test_gjs_rounding_is_reproduced():
    # GJS compares j < 0.07·100 = 7.000000000000001, so 8 samples per class flip; the
    # independent convention rounds the product first (7)
    y = np.repeat(np.arange(10), 100)
    gjs = make_noisy_labels(y, "asym", 0.07, 10, 0, dataset="cifar10")
    ind = make_noisy_labels(y, "asym", 0.07, 10, 0, dataset="cifar10", convention="independent")
    assert int(((y == 9) & gjs.is_noisy).sum()) == math.ceil(0.07 * 100) == 8
    assert int(((y == 9) & ind.is_noisy).sum()) == 7


@pytest.mark.parametrize("rate,expect", [(0.2, 0.0955), (0.4, 0.1840)])
def test_realized_rates_on_cifar10_shaped_labels(rate, expect):
    # the figures of the README protocol table: 5 seeds on 10 x 5000 labels
    y = np.repeat(np.arange(10), 5000)
    got = np.mean([make_noisy_labels(y, "asym", rate, 10, s, dataset="cifar10").realized_rate
                   for s in range(5)])
    assert got == pytest.approx(expect, abs=0.001)


@pytest.mark.parametrize("total,start", [(10, 3), (12, 3), (13, 4), (1, 1), (400, 100)])
def test_label_correction_starts_after_ceil_n_over_4(total, start):
    # Algorithm 1 line 6: correct when iter > ceil(n/4), iter counted from 1, i.e. from the
    # 0-based step ceil(n/4) on (int() was one step early when 4 does not divide n)
    import torch

    from lci.augment import Augmenter
    from lci.config import TrainConfig
    from lci.engine import Engine

    cfg = TrainConfig(method="lci", device="cpu").resolved()
    aug = Augmenter((0.5,), (0.5,), pad=0, hflip=False)
    eng = Engine(cfg, lambda: torch.nn.Linear(4, 3), 3, aug, torch.device("cpu"),
                 total_steps=total)
    assert eng.correction_step == start == math.ceil(total / 4)
