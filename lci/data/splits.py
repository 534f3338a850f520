"""Index splits: the run's validation split, class-balanced subsets, the fixed test hold-outs."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..errors import ConfigError, DataError

#: Constant seed of the fixed test hold-outs: the test set must not depend on the run seed.
HOLDOUT_SEED = 12345
#: Share of the images held out as the test set of user data without a test split.
HOLDOUT_FRACTION = 0.2


def split_validation(n: int, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Random ``(train_idx, val_idx)`` of ``range(n)``, both sorted int64 arrays.

    ``round(fraction * n)`` samples are held out (at least one when ``fraction > 0``, and at
    least one stays in training). ``fraction = 0`` gives an empty validation set.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"val_fraction={fraction!r} must be in [0, 1)")
    n_val = int(round(fraction * n))
    if fraction > 0:
        n_val = min(max(n_val, 1), n - 1)
    if n_val <= 0:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # A local generator seeded by (seed, tag): the noise module may also draw a permutation
    # from `default_rng(seed)`, and the same stream would make the validation set exactly
    # the samples whose labels were flipped.
    rng = np.random.default_rng([seed, 0x5E1_1D])
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


def balanced_subset(labels: np.ndarray, n: int, num_classes: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` samples, an equal number per (given) label, drawn with ``seed``.

    Each class gets ``n // num_classes``; the ``n % num_classes`` left over go one each to
    classes picked at random. A class with fewer samples than its share gives all it has (the
    subset is then smaller than ``n``). ``n >= len(labels)`` keeps everything.
    """
    labels = np.asarray(labels)
    if n <= 0 or n >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng([seed, 0xC1_07])  # its own stream: not the noise's, not the split's
    quota = np.full(num_classes, n // num_classes, dtype=np.int64)
    quota[rng.permutation(num_classes)[: n % num_classes]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:quota[c]] for c in range(num_classes)]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def fixed_holdout(labels: np.ndarray, n_test: int) -> Tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train_idx, test_idx)`` with exactly ``n_test`` test samples.

    Each class gives its share of ``n_test`` (largest remainders get the rounding), drawn
    with the constant :data:`HOLDOUT_SEED`, so the split is the same in every run.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n_test / len(labels)
    take = np.floor(quota).astype(np.int64)
    # stable sort: ties go to the lower class id, deterministically
    extra = np.argsort(-(quota - take), kind="stable")[: n_test - int(take.sum())]
    take[extra] += 1
    rng = np.random.default_rng(HOLDOUT_SEED)
    test = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    test_idx = np.sort(np.concatenate(test)).astype(np.int64)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False
    return np.flatnonzero(train_mask).astype(np.int64), test_idx


def holdout_count(n: int, where: str) -> int:
    if n < 2:
        raise DataError(f"{where} holds {n} image(s); at least 2 are needed to hold out a "
                        "test set")
    return min(max(1, int(round(HOLDOUT_FRACTION * n))), n - 1)
