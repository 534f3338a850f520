"""The CIFAR presets follow the GJS protocol (ErikEnglesson/GJS): noise, views, settings."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

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


# ------------------------------------------------------------ presets: GJS's per-setting values
SYM = ["sym:0.0", "sym:0.2", "sym:0.4", "sym:0.6", "sym:0.8"]
ASYM = ["asym:0.2", "asym:0.4"]
# (lr, weight decay, pi1) read off ErikEnglesson/GJS scripts/C10/{sym,asym}/{js,gjs}-*.yaml
GJS_C10 = {
    ("js", "sym:0.0"): (0.01, 5e-4, 0.1), ("js", "sym:0.2"): (0.01, 5e-4, 0.7),
    ("js", "sym:0.4"): (0.01, 5e-4, 0.7), ("js", "sym:0.6"): (0.01, 5e-4, 0.9),
    ("js", "sym:0.8"): (0.01, 5e-4, 0.9),
    ("js", "asym:0.2"): (0.1, 1e-3, 0.3), ("js", "asym:0.4"): (0.1, 1e-3, 0.3),
    ("gjs", "sym:0.0"): (0.1, 5e-4, 0.5), ("gjs", "sym:0.2"): (0.1, 5e-4, 0.3),
    ("gjs", "sym:0.4"): (0.1, 5e-4, 0.9), ("gjs", "sym:0.6"): (0.1, 5e-4, 0.1),
    ("gjs", "sym:0.8"): (0.1, 5e-4, 0.1),
    ("gjs", "asym:0.2"): (0.1, 1e-3, 0.3), ("gjs", "asym:0.4"): (0.1, 1e-3, 0.3),
}
# ... and scripts/C100/{sym,asym}/{js,gjs}-*.yaml
GJS_C100 = {
    ("js", "sym:0.0"): (0.2, 1e-4, 0.1), ("js", "sym:0.2"): (0.2, 1e-4, 0.1),
    ("js", "sym:0.4"): (0.2, 1e-4, 0.3), ("js", "sym:0.6"): (0.2, 1e-4, 0.5),
    ("js", "sym:0.8"): (0.2, 1e-4, 0.3),
    ("js", "asym:0.2"): (0.1, 1e-4, 0.5), ("js", "asym:0.4"): (0.1, 1e-4, 0.5),
    ("gjs", "sym:0.0"): (0.2, 5e-5, 0.3), ("gjs", "sym:0.2"): (0.2, 5e-5, 0.3),
    ("gjs", "sym:0.4"): (0.2, 5e-5, 0.5), ("gjs", "sym:0.6"): (0.2, 5e-5, 0.9),
    ("gjs", "sym:0.8"): (0.2, 5e-5, 0.1),
    ("gjs", "asym:0.2"): (0.4, 1e-4, 0.5), ("gjs", "asym:0.4"): (0.4, 1e-4, 0.1),
}
# losses GJS publishes no script for: the values of GJS's own scripts for the noise type
OTHERS = {"cifar10": {"sym": (0.1, 5e-4), "asym": (0.1, 1e-3)},
          "cifar100": {"sym": (0.2, 5e-5), "asym": (0.4, 1e-4)}}


@pytest.mark.parametrize("preset,scripts", [("table1_cifar10", GJS_C10),
                                            ("table1_cifar100", GJS_C100)])
def test_table1_cells_use_the_gjs_scripts_values(preset, scripts):
    from study.protocol_view import cell_settings
    from study.spec import load_spec

    rows = cell_settings(load_spec(preset))
    assert len(rows) == 70
    for r in rows:
        assert r["augment"] == "strong" and r["noise_convention"] == "gjs"
        assert (r["model"], r["epochs"], r["batch_size"]) == ("preact_resnet34", 400, 128)
        assert (r["lr_schedule"], r["lr_milestones"]) == ("multistep", [0.5, 0.75])
        key = (r["method"], r["noise"])
        if key in scripts:
            assert (r["lr"], r["weight_decay"], r["pi1"]) == pytest.approx(scripts[key]), key
        else:
            kind = r["noise"].split(":")[0]
            assert (r["lr"], r["weight_decay"]) == pytest.approx(OTHERS[r["dataset"]][kind]), key
            assert r["pi1"] is None
    assert {r["cell"] for r in rows if (r["method"], r["noise"]) in scripts} == \
        {r["cell"] for r in rows if r["method"] in ("js", "gjs")}


def test_table2_cells_use_the_table1_values():
    from study.protocol_view import cell_settings
    from study.spec import load_spec

    rows = cell_settings(load_spec("table2_ablation"))
    assert len(rows) == 16
    for r in rows:
        kind = r["noise"].split(":")[0]
        assert (r["lr"], r["weight_decay"]) == pytest.approx(OTHERS[r["dataset"]][kind])
        assert r["augment"] == "strong"


def test_views_per_method():
    from study.protocol_view import cell_settings
    from study.spec import load_spec

    views = {r["method"]: r["views"] for r in cell_settings(load_spec("table1_cifar10"))}
    assert views["gjs"] == "2 strong (x', x'')"
    assert views["js"] == views["ce"] == "1 strong (x')"
    assert views["lci"] == "θ: 1 strong (x'); θ*: 2 strong (x', x'')"
    abl = {r["method"]: r["views"] for r in cell_settings(load_spec("table2_ablation"))}
    assert abl["lci-two-models"] == "θ: 1 strong (x'); θ*: 1 strong (x')"
    assert abl["lci-single"] == "θ: 1 strong (x')"


def test_readme_protocol_tables_are_the_presets():
    import os

    from study.protocol_view import cell_settings, format_cell_settings
    from study.spec import load_spec

    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    section = readme[readme.index("## Protocol"):readme.index("<!-- END protocol -->")]
    for preset in ("table1_cifar10", "table1_cifar100"):
        table = format_cell_settings(cell_settings(load_spec(preset)))
        assert table in section, preset
    # the realized rates the README states are the measured ones (test above)
    assert "asym:0.2 → 9.55 %" in section and "asym:0.4 → 18.40 %" in section


def test_cifar_profiles_use_the_strong_view_digits_unchanged():
    from lci.config import TrainConfig

    assert TrainConfig(dataset="cifar10").resolved().augment == "strong"
    assert TrainConfig(dataset="cifar100").resolved().augment == "strong"
    assert TrainConfig(dataset="digits").resolved().augment == "weak"


def test_describe_is_the_dry_run_block():
    from study.protocol_view import cell_settings, describe, format_cell_settings
    from study.spec import load_spec

    spec = load_spec("table1_cifar10")
    text = describe(spec)
    first, rest = text.split("\n", 1)
    assert "model preact_resnet34" in first and "epochs 400" in first and "noise_convention gjs" in first
    assert rest == format_cell_settings(cell_settings(spec))


#: the presets that follow GJS's protocol on CIFAR (the README's protocol section)
GJS_PRESETS = ("table1_cifar10", "table1_cifar100", "table2_ablation", "figure3_curves",
               "figure4_m", "search_cifar10")


@pytest.mark.parametrize("preset", GJS_PRESETS)
def test_gjs_presets_train_in_float32_with_pytorch_default_init(preset):
    """GJS trains in float32 (no autocast in its code) and keeps PyTorch's default init."""
    from lci.config import TrainConfig
    from lci.engine import _amp_dtype
    from study.protocol_view import cell_settings, describe
    from study.spec import load_spec

    spec = load_spec(preset)
    rows = cell_settings(spec)
    assert rows and all(r["amp"] == "off" and r["init_scheme"] == "torch" for r in rows)
    assert _amp_dtype("off", torch.device("cuda")) is None  # no autocast, on a GPU too
    phases = ["evaluation"] + ["search"] * bool(spec.search) + ["sweep"] * bool(spec.sweep)
    for cell in spec.cells:  # every phase the study runs, searches included
        for phase in phases:
            cfg = TrainConfig.from_known(spec.phase_config(cell, phase))
            assert cfg.amp == "off", (preset, cell.id, phase)
    assert "init_scheme torch, amp off" in describe(spec).split("\n", 1)[0]


def test_bf16_stays_an_option():
    from lci.config import TrainConfig
    from lci.engine import _amp_dtype

    assert TrainConfig(dataset="cifar10", amp="bf16").amp == "bf16"
    assert _amp_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert _amp_dtype("auto", torch.device("cuda")) == torch.bfloat16  # the plain default
    assert TrainConfig.from_dict({"amp": False}).amp == "off"  # YAML's unquoted off
