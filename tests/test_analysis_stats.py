"""Paired statistics over seeds (analysis.stats) against hand-computed numbers."""
import math

import pandas as pd
import pytest

import analysis
from analysis.stats import (min_signflip_seeds, paired, paired_t_p, seeds_needed,
                            sign_flip_p)
from synthetic import write_study

# A paired table: 5 seeds, two methods at one setting. Per seed (in %):
#   gce 78 78 80 80 79   (mean 79, squared deviations 1+1+1+1+0 = 4, sd 1)
#   lci 80 82 79 83 81   (mean 81, squared deviations 1+1+4+4+0 = 10, sd sqrt(2.5))
#   d = lci - gce = 2 4 -1 3 2: mean 2, squared deviations 0+4+9+1+0 = 14, sd sqrt(3.5)
GCE = [0.78, 0.78, 0.80, 0.80, 0.79]
LCI = [0.80, 0.82, 0.79, 0.83, 0.81]
T975_DF4 = 2.776445          # Student t, 0.975 quantile, 4 degrees of freedom (tables)


def _t_two_sided_p_df4(t):
    """Two-sided p of Student t with 4 degrees of freedom, in closed form: with
    u = t / sqrt(4 + t²), F(t) = 1/2 + 3u/4 − u³/4."""
    u = t / math.sqrt(4 + t * t)
    return 2 * (1 - (0.5 + 0.75 * u - 0.25 * u ** 3))


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("paired")
    write_study(root, name="p", epochs=3, n_search=0, seeds=5,
                eval_final={"gce_sym0.8": GCE, "lci_gce_sym0.8": LCI}, sweep_final={},
                label_issue_samples=0)
    return analysis.table1(analysis.load(root)), root


def test_paired_table_matches_hand_computation(table):
    t, _ = table
    cells = t.cells.set_index("row")
    gce, lci = cells.loc["gce"], cells.loc["lci"]
    # 95% intervals of the means: mean ± t(4) · sd / sqrt(5)
    assert gce["ci_low"] == pytest.approx(79 - T975_DF4 * 1 / math.sqrt(5), rel=1e-6)
    assert gce["ci_high"] == pytest.approx(79 + T975_DF4 * 1 / math.sqrt(5), rel=1e-6)
    assert lci["ci_high"] == pytest.approx(81 + T975_DF4 * math.sqrt(2.5) / math.sqrt(5),
                                           rel=1e-6)
    # lci against the best (only) baseline, paired by seed
    assert lci["vs"] == "gce" and lci["n_paired"] == 5
    assert lci["diff"] == pytest.approx(2.0)
    half = T975_DF4 * math.sqrt(3.5) / math.sqrt(5)               # 2.32294
    assert lci["diff_ci_low"] == pytest.approx(2 - half, rel=1e-5)
    assert lci["diff_ci_high"] == pytest.approx(2 + half, rel=1e-5)
    t_stat = 2 / (math.sqrt(3.5) / math.sqrt(5))                  # 2.390457
    assert lci["p_t"] == pytest.approx(_t_two_sided_p_df4(t_stat), rel=1e-9)
    assert lci["p_t"] == pytest.approx(0.07513, abs=1e-5)
    # sign flips of |d| = 2 4 1 3 2 (sum 12): |Σ ± d| >= 10 only when nothing, or the 1
    # alone, is flipped away from the observed signs -- and the two mirror images: 4 of 32
    assert lci["p_signflip"] == pytest.approx(4 / 32)
    assert lci["p_improve"] == pytest.approx(4 / 5)               # seed 3 (79 < 80) loses
    # effect 2 / sqrt(3.5) = 1.07 sd: the paired t-test reaches 80 % power at 9 seeds
    # (the normal approximation ((1.96 + 0.84) / 1.07)² ≈ 6.9 plus the t's heavier tails)
    assert lci["seeds_needed"] == 9
    assert gce["vs"] == "" and math.isnan(gce["p_t"])             # the baseline itself
    assert lci["marker"] == ""                                    # p = 0.075: not marked
    md = t.markdown()
    assert "| lci | **81.00 ± 1.58** [paper 91.13] |" in md and "†" not in md.split("\n\n")[0]


def test_paired_figures_reach_csv_and_report(table, tmp_path):
    t, root = table
    csv = pd.read_csv(t.write(tmp_path)["csv"]).set_index("row")
    assert csv.loc["lci", "p_signflip"] == pytest.approx(0.125)
    assert csv.loc["lci", "p_improve"] == pytest.approx(0.8)
    text = analysis.report(root, tmp_path / "report").read_text()
    assert ("| sym 80% | lci | 5 | 81.00 | [79.04, 82.96] | gce | 5 | +2.00 [-0.32, +4.32] "
            "| 0.0751 | 0.125 | 0.80 | 9 |  |") in text
    assert "0.0625 for 5" in text and "at least 6 seeds" in text


def test_sign_flip_floor_and_edge_cases():
    assert sign_flip_p([1.0] * 5) == pytest.approx(2 / 32)        # 0.0625: never < 0.05
    assert sign_flip_p([1.0] * 6) == pytest.approx(2 / 64)
    assert min_signflip_seeds() == 6
    assert sign_flip_p([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(sign_flip_p([]))
    assert paired_t_p([1.0, 1.0, 1.0]) == 0.0 and paired_t_p([0.0, 0.0]) == 1.0
    assert math.isnan(paired_t_p([1.0]))
    assert seeds_needed(1.0, 0.0) == 6 and math.isnan(seeds_needed(0.0, 1.0))
    # only the seeds both have are paired
    r = paired({0: 1.0, 1: 2.0, 2: 5.0}, {1: 1.0, 2: 1.0, 3: 9.0})
    assert r["n_paired"] == 2 and r["diff"] == pytest.approx(2.5) and r["p_improve"] == 1.0
    # beyond the exact range: a seeded Monte Carlo estimate near the exact value
    big = [1.0] * 10 + [-1.0] * 8                                 # sum 2 of 18 unit steps
    est = sign_flip_p(big)
    assert est == sign_flip_p(big) and est == pytest.approx(0.8145, abs=0.01)
