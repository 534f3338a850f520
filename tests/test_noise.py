"""Tests for lci.noise: synthetic label noise following the GJS protocol (docs/method.md §7)."""
from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lci.errors import ConfigError
from lci.noise import (ASYM_MAPS, CIFAR10_ASYM, CIFAR100_COARSE, DIGITS_ASYM, NoisyLabels,
                       asym_mapping, load_transition, make_noisy_labels)


def ceil_count(r: float, n: int) -> int:
    """ceil(r·n) in exact arithmetic (float products like 0.7*10 = 7.000000000000001 aside)."""
    return math.ceil(round(r * n, 9))


def balanced(num_classes: int, per_class: int, seed: int = 123) -> np.ndarray:
    y = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(y)


def pairs(labels, out: NoisyLabels) -> Counter:
    m = out.is_noisy
    return Counter(zip(np.asarray(labels)[m].tolist(), out.noisy_labels[m].tolist()))


# --------------------------------------------------------------------------- basic contract
def test_result_fields_and_types():
    y = balanced(10, 50)
    out = make_noisy_labels(y, "sym", 0.5, 10, 0)
    assert isinstance(out, NoisyLabels)
    assert out.noisy_labels.dtype == np.int64 and out.noisy_labels.shape == y.shape
    assert out.is_noisy.dtype == np.bool_
    np.testing.assert_array_equal(out.is_noisy, out.noisy_labels != y)
    assert isinstance(out.realized_rate, float)
    assert out.realized_rate == pytest.approx(out.is_noisy.mean())
    assert out.kind == "sym" and out.rate == 0.5
    assert out.num_noisy == int(out.is_noisy.sum())
    with pytest.raises(AttributeError):
        out.rate = 0.1  # frozen


def test_none_is_a_copy():
    y = balanced(10, 20)
    out = make_noisy_labels(y, "none", 0.0, 10, 0)
    np.testing.assert_array_equal(out.noisy_labels, y)
    assert out.realized_rate == 0.0 and not out.is_noisy.any()
    assert not np.shares_memory(out.noisy_labels, y)


@pytest.mark.parametrize("kind,kw", [
    ("sym", {}), ("sym", {"convention": "exclusive"}), ("asym", {"dataset": "cifar10"}),
    ("asym", {"transition": np.full((10, 10), 0.1)}),
    ("matrix", {"transition": np.full((10, 10), 0.1)}),
])
def test_input_labels_never_mutated(kind, kw):
    y = balanced(10, 30)
    before = y.copy()
    as_list = y.tolist()
    make_noisy_labels(y, kind, 0.7, 10, 1, **kw)
    make_noisy_labels(as_list, kind, 0.7, 10, 1, **kw)
    np.testing.assert_array_equal(y, before)
    assert as_list == before.tolist()


def test_accepts_lists_and_integral_floats():
    y = [0, 1, 2, 3] * 10
    a = make_noisy_labels(y, "sym", 0.5, 4, 3)
    b = make_noisy_labels(np.array(y, dtype=np.float32), "sym", 0.5, 4, 3)
    np.testing.assert_array_equal(a.noisy_labels, b.noisy_labels)


def test_empty_labels():
    out = make_noisy_labels(np.array([], dtype=np.int64), "sym", 0.5, 10, 0)
    assert out.noisy_labels.size == 0 and out.realized_rate == 0.0


# -------------------------------------------------------------------------------- symmetric
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.37, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("n", [1, 7, 100, 1001])
def test_sym_exclusive_flips_exactly_round_rN(rate, n):
    y = np.arange(n) % 10
    out = make_noisy_labels(y, "sym", rate, 10, 5, convention="exclusive")
    assert out.is_noisy.sum() == round(rate * n) == out.n_selected
    assert out.realized_rate == pytest.approx(round(rate * n) / n)


def test_sym_exclusive_new_label_uniform_over_other_classes():
    C = 5
    y = np.zeros(50_000, dtype=np.int64)
    out = make_noisy_labels(y, "sym", 1.0, C, 0, convention="exclusive")
    assert out.is_noisy.all()
    counts = np.bincount(out.noisy_labels, minlength=C)
    assert counts[0] == 0
    np.testing.assert_allclose(counts[1:] / y.size, 1 / (C - 1), atol=0.01)


@pytest.mark.parametrize("C", [10, 100])
@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6, 0.8])
def test_sym_gjs_realized_rate_and_count(C, rate):
    N = 50_000
    y = balanced(C, N // C)
    out = make_noisy_labels(y, "sym", rate, C, 7)
    assert out.n_selected == round(rate * N)
    assert out.is_noisy.sum() <= round(rate * N)
    # a selected sample keeps its label with probability 1/C
    assert out.realized_rate == pytest.approx(rate * (1 - 1 / C), abs=0.01)


def test_sym_gjs_new_labels_uniform_over_all_classes():
    C = 4
    y = np.zeros(40_000, dtype=np.int64)
    out = make_noisy_labels(y, "sym", 1.0, C, 0)
    np.testing.assert_allclose(np.bincount(out.noisy_labels, minlength=C) / y.size, 1 / C,
                               atol=0.01)


def test_sym_gjs_changes_only_selected_samples():
    # with C=1 gjs noise can change nothing; exclusive is impossible
    y = np.zeros(100, dtype=np.int64)
    out = make_noisy_labels(y, "sym", 0.9, 1, 0)
    assert out.n_selected == 90 and not out.is_noisy.any()
    with pytest.raises(ConfigError, match="at least 2 classes"):
        make_noisy_labels(y, "sym", 0.9, 1, 0, convention="exclusive")


# ------------------------------------------------------------------------------- asymmetric
CIFAR10_PAIRS = {(9, 1), (2, 0), (3, 5), (5, 3), (4, 7)}


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.3, 0.4, 0.7, 1.0])
def test_asym_cifar10_per_class_counts(rate):
    # unequal class sizes so per-class ceil is really per class
    sizes = [503, 498, 511, 487, 500, 509, 492, 501, 499, 13]
    y = np.random.default_rng(0).permutation(np.repeat(np.arange(10), sizes))
    out = make_noisy_labels(y, "asym", rate, 10, 11, dataset="cifar10", convention="independent")
    got = pairs(y, out)
    assert set(got) <= CIFAR10_PAIRS
    for src, dst in CIFAR10_ASYM.items():
        assert got[(src, dst)] == ceil_count(rate, sizes[src])
    assert out.n_selected == sum(ceil_count(rate, sizes[c]) for c in CIFAR10_ASYM)
    # unmapped classes are untouched
    for c in set(range(10)) - set(CIFAR10_ASYM):
        assert not out.is_noisy[y == c].any()


def test_asym_ceil_is_exact_despite_float_products():
    # 0.07 * 100 == 7.000000000000001 in floating point; the count must be 7, not 8
    assert 0.07 * 100 != 7
    y = np.repeat(np.arange(10), 100)
    out = make_noisy_labels(y, "asym", 0.07, 10, 0, dataset="cifar10", convention="independent")
    assert out.is_noisy.sum() == 5 * 7


def test_asym_ceil_rounds_up():
    y = np.repeat(np.arange(10), 7)  # 0.1 * 7 = 0.7 -> 1 per mapped class
    out = make_noisy_labels(y, "asym", 0.1, 10, 0, dataset="cifar10", convention="independent")
    assert out.is_noisy.sum() == 5


def test_asym_rate_one_flips_every_mapped_sample():
    y = balanced(10, 40)
    out = make_noisy_labels(y, "asym", 1.0, 10, 0, dataset="cifar10", convention="independent")
    expect = y.copy()
    for src, dst in CIFAR10_ASYM.items():
        expect[y == src] = dst
    np.testing.assert_array_equal(out.noisy_labels, expect)
    assert out.realized_rate == pytest.approx(0.5)


@pytest.mark.parametrize("name", ["digits", "mnist", "MNIST"])
def test_asym_digits_mapping(name):
    assert DIGITS_ASYM == {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}
    y = balanced(10, 180)
    out = make_noisy_labels(y, "asym", 0.4, 10, 2, dataset=name)
    got = pairs(y, out)
    assert set(got) == {(7, 1), (2, 7), (5, 6), (6, 5), (3, 8)}
    assert all(v == 72 for v in got.values())


def test_cifar10_mapping_constant():
    assert asym_mapping("cifar10") == {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
    assert asym_mapping("CIFAR-10") == CIFAR10_ASYM


def test_cifar100_coarse_table():
    assert CIFAR100_COARSE.shape == (100,)
    assert sorted(Counter(CIFAR100_COARSE.tolist()).items()) == [(c, 5) for c in range(20)]
    # a few well-known entries: apple→fruit_and_vegetables, aquarium_fish→fish, baby→people,
    # bear→large_carnivores, beaver→aquatic_mammals, ..., worm→non-insect_invertebrates
    known = {0: 4, 1: 1, 2: 14, 3: 8, 4: 0, 8: 18, 30: 0, 55: 0, 72: 0, 95: 0, 99: 13}
    for fine, coarse in known.items():
        assert CIFAR100_COARSE[fine] == coarse


def test_cifar100_next_in_superclass_mapping():
    m = asym_mapping("cifar100")
    assert sorted(m) == list(range(100)) and sorted(m.values()) == list(range(100))
    assert m[4] == 30 and m[95] == 4  # beaver→dolphin, whale→beaver (circular)
    for src, dst in m.items():
        assert CIFAR100_COARSE[src] == CIFAR100_COARSE[dst] and src != dst
        members = np.flatnonzero(CIFAR100_COARSE == CIFAR100_COARSE[src]).tolist()
        assert dst == members[(members.index(src) + 1) % 5]


@pytest.mark.parametrize("rate", [0.2, 0.4, 1.0])
def test_asym_cifar100_global_count_and_superclass(rate):
    y = np.random.default_rng(1).permutation(np.repeat(np.arange(100), 37))  # N = 3700
    out = make_noisy_labels(y, "asym", rate, 100, 4, dataset="cifar100")
    m = ASYM_MAPS["cifar100"]
    changed = out.is_noisy
    assert changed.sum() == ceil_count(rate, y.size) == out.n_selected
    assert np.all(CIFAR100_COARSE[out.noisy_labels] == CIFAR100_COARSE[y])
    assert all(m[s] == d for s, d in zip(y[changed].tolist(), out.noisy_labels[changed].tolist()))


def test_asym_cifar100_picks_over_whole_set_not_per_class():
    y = np.repeat(np.arange(100), 10)
    counts = set()
    for seed in range(5):
        out = make_noisy_labels(y, "asym", 0.3, 100, seed, dataset="cifar100")
        counts |= set(np.bincount(y[out.is_noisy], minlength=100).tolist())
    assert len(counts) > 1  # per-class counts vary; only the total is fixed


# ----------------------------------------------------------------------- transition matrix
def _tridiagonal(C: int, p: float) -> np.ndarray:
    T = np.eye(C) * (1 - p)
    for c in range(C):
        T[c, (c + 1) % C] = p
    return T


def test_asym_with_transition_counts_and_targets():
    C = 4
    T = np.array([[0.6, 0.4, 0.0, 0.0],
                  [0.0, 0.5, 0.25, 0.25],
                  [0.0, 0.0, 1.0, 0.0],     # no off-diagonal mass: keeps its labels
                  [0.1, 0.1, 0.1, 0.7]])
    sizes = [100, 101, 50, 99]
    y = np.repeat(np.arange(C), sizes)
    out = make_noisy_labels(y, "asym", 0.3, C, 0, transition=T)
    per_class = np.bincount(y[out.is_noisy], minlength=C)
    assert per_class.tolist() == [ceil_count(0.3, 100), ceil_count(0.3, 101), 0,
                                  ceil_count(0.3, 99)]
    got = pairs(y, out)
    assert set(got) <= {(0, 1), (1, 2), (1, 3), (3, 0), (3, 1), (3, 2)}
    # the transition wins over a data set mapping
    out2 = make_noisy_labels(y, "asym", 0.3, C, 0, transition=T, dataset="cifar10")
    np.testing.assert_array_equal(out.noisy_labels, out2.noisy_labels)


def test_asym_transition_uses_off_diagonal_proportions():
    T = np.array([[0.5, 0.3, 0.1, 0.1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    y = np.zeros(30_000, dtype=np.int64)
    out = make_noisy_labels(y, "asym", 1.0, 4, 0, transition=T)
    assert out.is_noisy.all()
    np.testing.assert_allclose(np.bincount(out.noisy_labels, minlength=4) / y.size,
                               [0, 0.6, 0.2, 0.2], atol=0.01)


def test_matrix_draws_every_label_from_its_row():
    C = 3
    T = np.array([[0.8, 0.2, 0.0], [0.0, 1.0, 0.0], [0.3, 0.3, 0.4]])
    y = np.repeat(np.arange(C), 20_000)
    out = make_noisy_labels(y, "matrix", 0.0, C, 0, transition=T)  # rate ignored
    for c in range(C):
        freq = np.bincount(out.noisy_labels[y == c], minlength=C) / 20_000
        np.testing.assert_allclose(freq, T[c], atol=0.01)
    assert not out.is_noisy[y == 1].any()
    assert out.realized_rate == pytest.approx((0.2 + 0.6) / 3, abs=0.01)


def test_matrix_identity_changes_nothing():
    y = balanced(5, 20)
    out = make_noisy_labels(y, "matrix", 1.0, 5, 0, transition=np.eye(5).tolist())
    np.testing.assert_array_equal(out.noisy_labels, y)


@pytest.mark.parametrize("fmt", ["npy", "csv", "json", "json_obj", "list"])
def test_transition_from_files(tmp_path, fmt):
    C = 5
    T = _tridiagonal(C, 0.3)
    if fmt == "npy":
        src = tmp_path / "t.npy"
        np.save(src, T)
    elif fmt == "csv":
        src = tmp_path / "t.csv"
        np.savetxt(src, T, delimiter=",")
    elif fmt == "json":
        src = tmp_path / "t.json"
        src.write_text(json.dumps(T.tolist()))
    elif fmt == "json_obj":
        src = tmp_path / "t.json"
        src.write_text(json.dumps({"transition": T.tolist()}))
    else:
        src = T.tolist()
    if not isinstance(src, list):
        np.testing.assert_allclose(load_transition(str(src), C), T)
        np.testing.assert_allclose(load_transition(src, C), T)  # a pathlib.Path too
    y = balanced(C, 200)
    given_t = src if isinstance(src, list) else str(src)
    a = make_noisy_labels(y, "matrix", 1.0, C, 9, transition=given_t)
    b = make_noisy_labels(y, "matrix", 1.0, C, 9, transition=T)
    np.testing.assert_array_equal(a.noisy_labels, b.noisy_labels)


@pytest.mark.parametrize("T,match", [
    ([[1.0, 0.0], [0.0, 1.0]], r"2x2 but there are 3 classes"),
    ([[1, 0, 0], [0, 1, 0]], r"square matrix, got shape \(2, 3\)"),
    ([[1, 0, 0], [0, 0.5, 0.4], [0, 0, 1]], r"row 1 sums to 0\.9"),
    ([[1, 0, 0], [0, 1, 0], [0.5, 0.7, -0.2]], r"row 2 has a negative entry T\[2, 2\] = -0\.2"),
    ([[1, 0, 0], [0, 1, 0], [float("nan"), 0, 1]], r"row 2 has a non-finite"),
    ([[1, 0, "a"], [0, 1, 0], [0, 0, 1]], r"matrix of numbers"),
])
def test_transition_validation(T, match):
    with pytest.raises(ConfigError, match=match):
        make_noisy_labels([0, 1, 2], "matrix", 1.0, 3, 0, transition=T)


def test_transition_row_tolerance():
    T = np.eye(3)
    T[0] = [1 - 1e-7, 0.5e-7, 0.5e-7]
    T[1, 1] = 1 + 5e-7
    load_transition(T, 3)  # within 1e-6
    T[2, 2] = 1 + 1e-5
    with pytest.raises(ConfigError, match="row 2"):
        load_transition(T, 3)


def test_transition_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_transition(str(tmp_path / "missing.npy"), 3)
    bad = tmp_path / "t.txt"
    bad.write_text("1")
    with pytest.raises(ConfigError, match=r"unknown format; allowed: '\.npy', '\.csv', '\.json'"):
        load_transition(str(bad), 3)
    broken = tmp_path / "t.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_transition(str(broken), 3)
    ragged = tmp_path / "r.json"
    ragged.write_text("[[1, 0], [1]]")
    with pytest.raises(ConfigError, match="r.json"):
        load_transition(str(ragged), 2)


def test_matrix_requires_transition():
    with pytest.raises(ConfigError, match="'matrix' needs a transition"):
        make_noisy_labels([0, 1], "matrix", 1.0, 2, 0)


# --------------------------------------------------------------------------------- seeding
@pytest.mark.parametrize("kind,kw", [
    ("sym", {}), ("sym", {"convention": "exclusive"}), ("asym", {"dataset": "cifar10"}),
    ("asym", {"dataset": "cifar100"}), ("asym", {"transition": _tridiagonal(100, 0.5)}),
    ("matrix", {"transition": _tridiagonal(100, 0.5)}),
])
def test_seed_determinism(kind, kw):
    y = balanced(100, 20)
    a = make_noisy_labels(y, kind, 0.4, 100, 42, **kw)
    b = make_noisy_labels(y, kind, 0.4, 100, 42, **kw)
    c = make_noisy_labels(y, kind, 0.4, 100, 43, **kw)
    np.testing.assert_array_equal(a.noisy_labels, b.noisy_labels)
    assert not np.array_equal(a.noisy_labels, c.noisy_labels)


def test_global_numpy_rng_untouched():
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    make_noisy_labels(balanced(10, 10), "sym", 0.5, 10, 1)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_pinned_values_stable_across_runs():
    # guards against accidental changes in how the RNG is consumed (same seed -> same labels
    # on every machine and release)
    y = np.arange(20) % 10
    out = make_noisy_labels(y, "sym", 0.5, 10, 0, convention="exclusive")
    again = make_noisy_labels(y.tolist(), "sym", 0.5, 10, 0, convention="exclusive")
    np.testing.assert_array_equal(out.noisy_labels, again.noisy_labels)
    assert out.is_noisy.sum() == 10


# ------------------------------------------------------------------------------- rate edges
@pytest.mark.parametrize("kind,kw", [
    ("sym", {}), ("sym", {"convention": "exclusive"}), ("asym", {"dataset": "cifar10"}),
    ("asym", {"dataset": "cifar100"}), ("asym", {"transition": _tridiagonal(100, 0.5)}),
])
def test_rate_zero_changes_nothing(kind, kw):
    y = balanced(100, 10)
    out = make_noisy_labels(y, kind, 0.0, 100, 0, **kw)
    np.testing.assert_array_equal(out.noisy_labels, y)
    assert out.realized_rate == 0.0 and out.n_selected == 0


def test_rate_one_cifar100_flips_everything():
    y = balanced(100, 5)
    out = make_noisy_labels(y, "asym", 1.0, 100, 0, dataset="cifar100")
    assert out.is_noisy.all()
    m = ASYM_MAPS["cifar100"]
    np.testing.assert_array_equal(out.noisy_labels, [m[c] for c in y.tolist()])


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), float("inf")])
def test_bad_rate_names_the_value(rate):
    with pytest.raises(ConfigError, match=f"rate {rate!r}"):
        make_noisy_labels([0, 1], "sym", rate, 2, 0)


def test_non_numeric_rate():
    with pytest.raises(ConfigError, match="'high'"):
        make_noisy_labels([0, 1], "sym", "high", 2, 0)


def test_unknown_kind_lists_allowed():
    with pytest.raises(ConfigError, match=r"unknown noise kind 'pair'; allowed: 'none', 'sym', "
                                          r"'asym', 'matrix'"):
        make_noisy_labels([0, 1], "pair", 0.2, 2, 0)


def test_unknown_convention():
    with pytest.raises(ConfigError, match=r"convention 'uniform'; allowed: 'gjs', 'exclusive'"):
        make_noisy_labels([0, 1], "sym", 0.2, 2, 0, convention="uniform")


@pytest.mark.parametrize("dataset", [None, "clothing1m", "data/my.npz"])
def test_asym_without_mapping_names_datasets(dataset):
    with pytest.raises(ConfigError) as e:
        make_noisy_labels([0, 1], "asym", 0.2, 2, 0, dataset=dataset)
    msg = str(e.value)
    assert repr(dataset) in msg
    for name in ("cifar10", "cifar100", "digits"):
        assert repr(name) in msg
    assert "transition" in msg


def test_asym_mapping_needs_enough_classes():
    with pytest.raises(ConfigError, match="num_classes=5"):
        make_noisy_labels([0, 1, 2], "asym", 0.2, 5, 0, dataset="cifar10")


@pytest.mark.parametrize("labels,match", [
    ([0, 1, 10], r"label 10 at index 2 is outside \[0, 10\)"),
    ([0, -1, 3], r"label -1 at index 1 is outside \[0, 10\)"),
    ([0, 1.5, 3], r"integer class ids; found 1\.5 at index 1"),
    ([[0, 1], [2, 3]], r"1-D"),
    (["a", "b"], r"integer class ids; found 'a'"),
])
def test_bad_labels(labels, match):
    with pytest.raises(ConfigError, match=match):
        make_noisy_labels(labels, "sym", 0.2, 10, 0)


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True])
def test_bad_num_classes(num_classes):
    with pytest.raises(ConfigError, match="num_classes"):
        make_noisy_labels([0], "sym", 0.2, num_classes, 0)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_bad_seed(seed):
    with pytest.raises(ConfigError, match="seed"):
        make_noisy_labels([0], "sym", 0.2, 2, seed)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        make_noisy_labels([0], "sym", 2.0, 2, 0)


# --------------------------------------------------------------------------- property test
@settings(max_examples=50, deadline=None)
@given(rate=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400),
       C=st.integers(2, 12), exclusive=st.booleans())
def test_property_sym(rate, seed, n, C, exclusive):
    y = np.random.default_rng(seed).integers(0, C, size=n)
    before = y.copy()
    out = make_noisy_labels(y, "sym", rate, C, seed,
                            convention="exclusive" if exclusive else "gjs")
    np.testing.assert_array_equal(y, before)
    k = round(round(rate * n, 9))
    assert out.n_selected == k
    assert out.noisy_labels.min(initial=0) >= 0 and out.noisy_labels.max(initial=0) < C
    np.testing.assert_array_equal(out.is_noisy, out.noisy_labels != y)
    if exclusive:
        assert out.is_noisy.sum() == k
    else:
        assert out.is_noisy.sum() <= k
    again = make_noisy_labels(y, "sym", rate, C, seed,
                              convention="exclusive" if exclusive else "gjs")
    np.testing.assert_array_equal(out.noisy_labels, again.noisy_labels)


@settings(max_examples=50, deadline=None)
@given(rate=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300),
       dataset=st.sampled_from(["cifar10", "digits", "cifar100"]))
def test_property_asym(rate, seed, n, dataset):
    C = 100 if dataset == "cifar100" else 10
    y = np.random.default_rng(seed).integers(0, C, size=n)
    out = make_noisy_labels(y, "asym", rate, C, seed, dataset=dataset, convention="independent")
    m = asym_mapping(dataset)
    changed = out.is_noisy
    assert all(m[s] == d for s, d in zip(y[changed].tolist(), out.noisy_labels[changed].tolist()))
    if dataset == "cifar100":
        assert changed.sum() == ceil_count(rate, n)
    else:
        for src in m:
            assert changed[y == src].sum() == ceil_count(rate, int((y == src).sum()))


# ------------------------------------------------- CIFAR-10 asym: GJS's sequential procedure
def test_cifar10_gjs_asym_is_sequential_and_below_half_the_rate():
    y = np.repeat(np.arange(10), 5000)  # CIFAR-10-shaped
    out = make_noisy_labels(y, "asym", 0.4, 10, 0, dataset="cifar10")
    got = pairs(y, out)
    assert set(got) <= CIFAR10_PAIRS
    # cat->dog first (2000), then 40% of all 7000 current dogs (2800) go to cat: some of them
    # are former cats, which end up clean again
    cats_back = int(((y == 3) & (out.noisy_labels == 3)).sum()) - 3000
    assert got[(5, 3)] + cats_back == 2800
    assert got[(3, 5)] == 2000 - cats_back and cats_back > 0
    for src in (9, 2, 4):
        assert got[(src, CIFAR10_ASYM[src])] == 2000
    assert out.n_selected == 2000 * 4 + 2800
    assert 0.18 < out.realized_rate < 0.19


def test_cifar10_independent_keeps_the_true_label_draw():
    y = np.repeat(np.arange(10), 5000)
    out = make_noisy_labels(y, "asym", 0.4, 10, 0, dataset="cifar10", convention="independent")
    assert out.realized_rate == pytest.approx(0.2)
    assert out.is_noisy[y == 3].mean() == pytest.approx(0.4)


@pytest.mark.parametrize("dataset,C", [("digits", 10), ("cifar100", 100)])
def test_gjs_convention_changes_only_cifar10_asym(dataset, C):
    # digits and CIFAR-100 draw as before under every convention (digits results unchanged)
    y = balanced(C, 30)
    a = make_noisy_labels(y, "asym", 0.4, C, 3, dataset=dataset)
    b = make_noisy_labels(y, "asym", 0.4, C, 3, dataset=dataset, convention="independent")
    np.testing.assert_array_equal(a.noisy_labels, b.noisy_labels)


def test_cifar10_gjs_asym_keeps_the_global_rng_and_the_input():
    y = balanced(10, 50)
    before = y.copy()
    np.random.seed(5)
    state = np.random.get_state()[1].copy()
    make_noisy_labels(y, "asym", 0.4, 10, 1, dataset="cifar10")
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    np.testing.assert_array_equal(y, before)


def test_cifar10_gjs_asym_large_seed_and_seed_sequence():
    y = balanced(10, 50)
    a = make_noisy_labels(y, "asym", 0.4, 10, 2 ** 40, dataset="cifar10")
    b = make_noisy_labels(y, "asym", 0.4, 10, np.random.SeedSequence(7), dataset="cifar10")
    assert 0 < a.realized_rate < 0.25 and 0 < b.realized_rate < 0.25
