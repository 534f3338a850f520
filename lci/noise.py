"""Synthetic label noise, following the GJS protocol that the LCI paper uses (docs/method.md §7).

Pure numpy: labels in, labels out. Every function takes its main arguments positionally and
its options keyword-only, never touches the global numpy RNG, and never changes its input.

>>> import numpy as np
>>> y = np.repeat(np.arange(10), 100)
>>> out = make_noisy_labels(y, "sym", 0.4, 10, seed=0)
>>> out.n_selected, out.noisy_labels.shape
(400, (1000,))

Kinds
-----
``"none"``
    A copy of the labels.
``"sym"``
    Exactly ``round(rate·N)`` samples, chosen uniformly without replacement, get a new label.
    Convention ``"gjs"`` (default) draws it uniformly from all C classes, so it may equal the
    true one (realized rate ≈ ``rate·(1 − 1/C)``); ``"exclusive"`` draws it from the other
    C − 1 classes (realized rate = ``round(rate·N)/N``).
``"asym"``
    A fixed class mapping for ``dataset`` (see :data:`ASYM_MAPS`).

    - CIFAR-10 with convention ``"gjs"`` (default): GJS's own procedure
      (``datasets/cifar.py``, ``CIFAR10_train.asymmetric_noise``), step for step: the classes
      are visited in order 0..9 over the labels *as they are being changed*; for class ``i``
      the indices whose current label is ``i`` are shuffled and the first ``ceil(rate·n_i)``
      of them (GJS's ``j < rate·n_i``, an unrounded float product) go to the mapped class.
      So cat→dog runs first and dog→cat then draws from all current dogs, the true dogs and
      the cats just turned into dogs (some of which turn back into cats): the realized rate
      is below ``rate/2`` (asym-40: about 18.4 % on CIFAR-10, asym-20: about 9.5 %). The
      shuffles come from a local ``numpy.random.RandomState(seed)`` in GJS's order (every
      class is shuffled, mapped or not), so for an int seed the labels equal those GJS's code
      draws after ``np.random.seed(seed)`` on the same label vector (GJS's ``--test`` runs:
      the noise is the first draw after seeding).
    - Convention ``"independent"`` (and ``"exclusive"``), and every other data set: from the
      true labels, per source class exactly ``ceil(rate·n_class)`` samples flip to the mapped
      class (asym-40 on CIFAR-10: 20.0 %).
    - CIFAR-100 (every convention, as GJS): exactly ``ceil(rate·N)`` samples picked over the
      whole set go to the next class of their superclass, circularly.

    With a ``transition`` matrix instead, per class exactly ``ceil(rate·n_class)`` samples get
    a label drawn from that class's row with the diagonal removed (a row with no off-diagonal
    mass keeps its labels).
``"matrix"``
    Every sample's label is drawn from ``transition[true]`` (``rate`` is ignored).

Counts are computed after rounding ``rate·n`` to 9 decimals, so that float artefacts such as
``0.07 * 100 == 7.000000000000001`` do not turn ``ceil`` into 8 -- except in GJS's CIFAR-10
procedure, which reproduces GJS's float comparison as it is.

Conventions (:data:`NOISE_CONVENTIONS`): ``"gjs"`` (sym may redraw the true class; CIFAR-10
asym sequential as above), ``"exclusive"`` (sym never keeps the true class; asym independent),
``"independent"`` (sym as ``"gjs"``; asym drawn independently from the true labels -- the
``"gjs"`` behaviour of earlier releases).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from .errors import ConfigError, allowed
from .names import NOISE_KINDS

__all__ = [
    "NOISE_KINDS",
    "NOISE_CONVENTIONS",
    "CIFAR10_ASYM",
    "DIGITS_ASYM",
    "CIFAR100_COARSE",
    "ASYM_MAPS",
    "NoisyLabels",
    "asym_mapping",
    "has_asym_mapping",
    "cifar100_next_in_superclass",
    "load_transition",
    "make_noisy_labels",
]

NOISE_CONVENTIONS = ("gjs", "exclusive", "independent")

#: CIFAR-10: truck→automobile, bird→airplane, cat→dog, dog→cat, deer→horse.
CIFAR10_ASYM: Dict[int, int] = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}

#: Digits / MNIST-like: 7→1, 2→7, 5→6, 6→5, 3→8.
DIGITS_ASYM: Dict[int, int] = {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}

#: CIFAR-100 fine label → coarse superclass (the standard 20 superclasses of 5 classes each;
#: e.g. 0 apple → 4 fruit_and_vegetables, 1 aquarium_fish → 1 fish, 2 baby → 14 people).
CIFAR100_COARSE = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3,
    3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10,
    16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19,
    2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
], dtype=np.int64)
CIFAR100_COARSE.setflags(write=False)


def cifar100_next_in_superclass() -> Dict[int, int]:
    """Fine class → next fine class of its superclass (members ascending, circular)."""
    out: Dict[int, int] = {}
    for coarse in range(20):
        members = np.flatnonzero(CIFAR100_COARSE == coarse).tolist()
        for i, c in enumerate(members):
            out[c] = members[(i + 1) % len(members)]
    return dict(sorted(out.items()))


#: Asymmetric class mappings per data set (source class → noisy class).
ASYM_MAPS: Dict[str, Dict[int, int]] = {
    "cifar10": dict(CIFAR10_ASYM),
    "cifar100": cifar100_next_in_superclass(),
    "digits": dict(DIGITS_ASYM),
    "mnist": dict(DIGITS_ASYM),
}

# Data sets whose asym samples are picked over the whole set (ceil(r·N)), not per class.
_GLOBAL_SELECTION = frozenset({"cifar100"})

_TRANSITION_SUFFIXES = (".npy", ".csv", ".json")
_ROW_TOL = 1e-6

TransitionLike = Union[str, "os.PathLike[str]", Sequence[Sequence[float]], np.ndarray]


@dataclass(frozen=True, eq=False)
class NoisyLabels:
    """The result of :func:`make_noisy_labels`.

    ``noisy_labels`` (int64) and ``is_noisy`` (bool, ``noisy_labels != true``) have one entry
    per sample; ``realized_rate`` is ``is_noisy.mean()`` (0.0 for no samples); ``n_selected``
    is how many samples were chosen for relabelling (for gjs sym noise some of them keep their
    label, so it can exceed ``is_noisy.sum()``).
    """

    noisy_labels: np.ndarray
    is_noisy: np.ndarray
    realized_rate: float
    kind: str
    rate: float
    n_selected: int = 0

    @property
    def num_noisy(self) -> int:
        return int(self.is_noisy.sum())

    def __repr__(self) -> str:
        return (f"NoisyLabels(kind={self.kind!r}, rate={self.rate!r}, n={self.noisy_labels.size}, "
                f"n_selected={self.n_selected}, realized_rate={self.realized_rate:.4f})")


# ------------------------------------------------------------------------------- helpers
def _count_round(x: float) -> int:
    return int(round(round(x, 9)))


def _count_ceil(x: float) -> int:
    return int(math.ceil(round(x, 9)))


def _norm_dataset(dataset: Any) -> Optional[str]:
    if dataset is None:
        return None
    s = str(dataset).strip().lower()
    return s.replace("-", "").replace("_", "")


def has_asym_mapping(dataset: Any) -> bool:
    """Whether ``asym`` noise has a class mapping for ``dataset`` (``"CIFAR-10"`` is
    ``"cifar10"``); the config's check, so that it accepts what this module can make."""
    return _norm_dataset(dataset) in ASYM_MAPS


def asym_mapping(dataset: str) -> Dict[int, int]:
    """The asymmetric-noise class mapping (source → noisy class) of a data set.

    Raises :class:`ConfigError` naming the data sets that have one.
    """
    key = _norm_dataset(dataset)
    if not has_asym_mapping(dataset):
        raise ConfigError(
            f"asym noise has no class mapping for dataset {dataset!r}; mappings exist for "
            f"{allowed(ASYM_MAPS)}; give a transition matrix for any other data set")
    return dict(ASYM_MAPS[key])


def _check_labels(labels: Any, num_classes: Any) -> tuple:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ConfigError(f"num_classes={num_classes!r} must be a positive integer")
    num_classes = int(num_classes)
    try:
        y = np.array(labels, copy=True)  # a copy: the caller's labels are never touched
    except Exception:  # noqa: BLE001 - anything that is not array-like
        raise ConfigError(f"labels must be a 1-D array of class ids, got {type(labels).__name__}") \
            from None
    if y.ndim != 1:
        raise ConfigError(f"labels must be a 1-D array of class ids, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        ok = np.zeros(y.shape, dtype=bool)
        if np.issubdtype(y.dtype, np.floating):
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(y) & (y == np.round(y))
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise ConfigError(f"labels must be integer class ids; found {y[i].item()!r} "
                              f"at index {i} (dtype {y.dtype})")
    y = y.astype(np.int64)
    if y.size:
        out = (y < 0) | (y >= num_classes)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise ConfigError(f"label {int(y[i])} at index {i} is outside [0, {num_classes}) "
                              f"(num_classes={num_classes}); "
                              f"{int(out.sum())} label(s) out of range")
    return y, num_classes


def _check_rate(rate: Any) -> float:
    if isinstance(rate, bool):
        raise ConfigError(f"noise rate {rate!r} must be a number in [0, 1]")
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise ConfigError(f"noise rate {rate!r} must be a number in [0, 1]") from None
    if math.isnan(r) or not 0.0 <= r <= 1.0:
        raise ConfigError(f"noise rate {r!r} is outside [0, 1]")
    return r


def _check_seed(seed: Any) -> Any:
    if seed is None:
        return None
    if isinstance(seed, (np.random.SeedSequence, np.random.BitGenerator)):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be a non-negative integer")
    return int(seed)


def load_transition(transition: TransitionLike, num_classes: int) -> np.ndarray:
    """Read and validate a transition matrix ``T[true, noisy]``.

    ``transition`` is a nested list, a numpy array, or the path of a ``.npy``, ``.csv`` (comma
    separated, one row per line) or ``.json`` file (a list of rows, or an object with a
    ``"transition"`` key holding one). It must be ``num_classes × num_classes``, finite,
    non-negative, and each row must sum to 1 (within 1e-6). Returns a float64 array whose rows
    are renormalized to sum to exactly 1.
    """
    source = "transition"
    if isinstance(transition, (str, os.PathLike)):
        path = os.fspath(transition)
        source = f"transition file {path!r}"
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in _TRANSITION_SUFFIXES:
            raise ConfigError(f"{source} has an unknown format; allowed: "
                              f"{allowed(_TRANSITION_SUFFIXES)}")
        if not os.path.isfile(path):
            raise ConfigError(f"{source} does not exist")
        try:
            if suffix == ".npy":
                raw = np.load(path, allow_pickle=False)
            elif suffix == ".csv":
                raw = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
            else:
                with open(path, encoding="utf-8") as f:
                    raw = json.load(f)
                if isinstance(raw, dict):
                    if "transition" not in raw:
                        raise ValueError("a JSON object needs a 'transition' key")
                    raw = raw["transition"]
        except (OSError, ValueError) as e:
            raise ConfigError(f"{source} cannot be read: {e}") from None
    else:
        raw = transition
    try:
        T = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{source} must be a square matrix of numbers") from None
    if T.ndim != 2 or T.shape[0] != T.shape[1]:
        raise ConfigError(f"{source} must be a square matrix, got shape {T.shape}")
    if T.shape[0] != num_classes:
        raise ConfigError(f"{source} is {T.shape[0]}x{T.shape[1]} but there are "
                          f"{num_classes} classes; it must be {num_classes}x{num_classes}")
    for i, row in enumerate(T):
        if not np.all(np.isfinite(row)):
            raise ConfigError(f"{source} row {i} has a non-finite entry: {row.tolist()}")
        if np.any(row < 0):
            j = int(np.flatnonzero(row < 0)[0])
            raise ConfigError(f"{source} row {i} has a negative entry "
                              f"T[{i}, {j}] = {row[j].item()!r}")
        s = float(row.sum())
        if abs(s - 1.0) > _ROW_TOL:
            raise ConfigError(f"{source} row {i} sums to {s:.10g}, not 1 (rows are T[true, noisy] "
                              "probabilities)")
    return T / T.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- the noise
def _sym(y, C, r, rng, convention):
    n = y.size
    k = _count_round(r * n)
    if k == 0:
        return y, 0
    if convention == "exclusive" and C < 2:
        raise ConfigError("sym noise with convention 'exclusive' needs at least 2 classes")
    idx = rng.choice(n, size=k, replace=False)
    if convention == "gjs":
        new = rng.integers(0, C, size=k)
    else:  # uniform over the other C-1 classes
        new = (y[idx] + rng.integers(1, C, size=k)) % C
    y[idx] = new
    return y, k


def _asym_mapped(y, true, C, r, rng, dataset):
    key = _norm_dataset(dataset)
    mapping = ASYM_MAPS[key]
    need = max(max(mapping), max(mapping.values())) + 1
    if C < need:
        raise ConfigError(f"asym noise for dataset {dataset!r} maps classes up to {need - 1}, "
                          f"but num_classes={C}")
    if key in _GLOBAL_SELECTION:
        k = _count_ceil(r * y.size)
        if k == 0:
            return y, 0
        idx = rng.choice(y.size, size=k, replace=False)
        lut = np.arange(C, dtype=np.int64)
        for src, dst in mapping.items():
            lut[src] = dst
        y[idx] = lut[true[idx]]
        return y, k
    total = 0
    for src, members, k in _flips_per_class(true, sorted(mapping), r):
        chosen = rng.choice(members, size=k, replace=False)
        y[chosen] = mapping[src]
        total += k
    return y, total


def _gjs_cifar10_asym(y, C, r, seed):
    """GJS's ``CIFAR10_train.asymmetric_noise`` (datasets/cifar.py), on the running labels.

    ``y`` is changed in place; returns it and the number of flips made (a sample flipped
    twice, cat→dog→cat, counts twice).
    """
    if C < 10:
        raise ConfigError(f"asym noise for dataset 'cifar10' maps classes up to 9, "
                          f"but num_classes={C}")
    if isinstance(seed, np.random.SeedSequence):
        seed = np.random.MT19937(seed)
    elif isinstance(seed, (int, np.integer)) and seed >= 2 ** 32:
        seed = np.random.MT19937(int(seed))  # RandomState takes 32-bit ints only
    rs = np.random.RandomState(seed)  # MT19937 as np.random.seed(seed): GJS's stream
    total = 0
    for i in range(10):  # GJS: `for i in range(10)`, shuffling every class, mapped or not
        idx = np.where(y == i)[0]
        rs.shuffle(idx)
        # `j < percent * len(indices)` for j = 0, 1, ...: the first ceil(r·n) of them, with
        # GJS's float product unrounded
        k = min(idx.size, max(0, math.ceil(r * idx.size)))
        if i in CIFAR10_ASYM and k:
            y[idx[:k]] = CIFAR10_ASYM[i]
            total += k
    return y, total


def _flips_per_class(true, classes, r):
    """(class, its samples, how many of them flip: ⌈r·n⌉) for each class with a flip."""
    for c in classes:
        members = np.flatnonzero(true == c)
        k = _count_ceil(r * members.size)
        if k:
            yield c, members, k


def _asym_transition(y, true, C, r, rng, T):
    total = 0
    for c, members, k in _flips_per_class(true, range(C), r):
        row = T[c].copy()
        row[c] = 0.0
        mass = row.sum()
        total += k
        if mass <= 0.0:  # nowhere to go: the chosen samples keep their label
            continue
        chosen = rng.choice(members, size=k, replace=False)
        y[chosen] = rng.choice(C, size=k, p=row / mass)
    return y, total


def _matrix(y, true, C, rng, T):
    for c in range(C):
        members = np.flatnonzero(true == c)
        if members.size:
            y[members] = rng.choice(C, size=members.size, p=T[c])
    return y, int(y.size)


def make_noisy_labels(labels: Any, kind: str, rate: float, num_classes: int, seed: Any, *,
                      dataset: Optional[str] = None, convention: str = "gjs",
                      transition: Optional[TransitionLike] = None) -> NoisyLabels:
    """Corrupt ``labels`` with synthetic noise; see the module docstring for the kinds.

    Parameters
    ----------
    labels
        True class ids in ``[0, num_classes)``, 1-D (never modified).
    kind
        ``"none"``, ``"sym"``, ``"asym"`` or ``"matrix"``.
    rate
        Noise rate in ``[0, 1]`` (ignored by ``"matrix"``).
    num_classes
        The number of classes C.
    seed
        Seed of a local ``numpy.random.default_rng``; the same seed gives the same labels.
    dataset
        For ``"asym"`` without ``transition``: ``"cifar10"``, ``"cifar100"``, ``"digits"`` or
        ``"mnist"``.
    convention
        ``"gjs"``, ``"exclusive"`` or ``"independent"``: how ``"sym"`` picks the new label,
        and whether CIFAR-10 ``"asym"`` follows GJS's sequential procedure (``"gjs"``).
    transition
        ``T[true, noisy]`` (list, array, or ``.npy``/``.csv``/``.json`` path). Used by
        ``"asym"`` (instead of the data set's mapping) and required by ``"matrix"``; ignored by
        ``"none"`` and ``"sym"``.
    """
    if kind not in NOISE_KINDS:
        raise ConfigError(f"unknown noise kind {kind!r}; allowed: {allowed(NOISE_KINDS)}")
    if convention not in NOISE_CONVENTIONS:
        raise ConfigError(f"unknown noise convention {convention!r}; allowed: "
                          f"{allowed(NOISE_CONVENTIONS)}")
    r = _check_rate(rate)
    true, C = _check_labels(labels, num_classes)
    seed = _check_seed(seed)

    T = None
    if kind in ("asym", "matrix") and transition is not None:
        T = load_transition(transition, C)
    if kind == "matrix" and T is None:
        raise ConfigError("noise kind 'matrix' needs a transition matrix T[true, noisy] "
                          "(a nested list, an array, or a .npy/.csv/.json file)")
    if kind == "asym" and T is None:
        asym_mapping(dataset)  # raises ConfigError naming the data sets that have a mapping

    rng = np.random.default_rng(seed)
    y = true.copy()
    if kind == "none":
        n_sel = 0
    elif kind == "sym":
        y, n_sel = _sym(y, C, r, rng, convention)
    elif kind == "asym" and T is not None:
        y, n_sel = _asym_transition(y, true, C, r, rng, T)
    elif kind == "asym" and convention == "gjs" and _norm_dataset(dataset) == "cifar10":
        y, n_sel = _gjs_cifar10_asym(y, C, r, seed)
    elif kind == "asym":
        y, n_sel = _asym_mapped(y, true, C, r, rng, dataset)
    else:
        y, n_sel = _matrix(y, true, C, rng, T)

    y = y.astype(np.int64, copy=False)
    is_noisy = y != true
    realized = float(is_noisy.mean()) if y.size else 0.0
    return NoisyLabels(noisy_labels=y, is_noisy=is_noisy, realized_rate=realized, kind=kind,
                       rate=r, n_selected=int(n_sel))
