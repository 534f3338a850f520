"""Aggregation over seeds and the Table 1 / Table 2 output, against hand-computed numbers."""
import math
import statistics

import pandas as pd
import pytest

import analysis
from synthetic import EVAL_FINAL, _cell_config, write_study

# synthetic.EVAL_FINAL (None = failed trial, (acc, epochs) = unfinished trial) plus an
# MAE-based LCI cell
FINAL = {**EVAL_FINAL, "lci_mae_asym0.4": [0.70, 0.72, 0.74, 0.76, 0.78]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    write_study(root, name="t", epochs=4, n_search=2, eval_final=FINAL, label_issue_samples=0)
    return analysis.load(root)


def _hand(values):
    v = [x * 100 for x in values]
    return statistics.mean(v), statistics.stdev(v)


def test_summarize_matches_hand_computation():
    s = analysis.summarize([0.90, 0.91, 0.92, 0.89, 0.93])
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(0.91)
    assert s["std"] == pytest.approx(math.sqrt(0.00025))        # squared deviations sum 0.001, /4
    # t(0.975, df=4) = 2.776445
    assert s["ci95"] == pytest.approx(2.776445 * math.sqrt(0.00025) / math.sqrt(5), rel=1e-5)
    assert s["ci_low"] == pytest.approx(0.91 - s["ci95"])
    one = analysis.summarize([0.5])
    assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["std"])
    assert analysis.summarize([float("nan")])["n"] == 0
    assert analysis.t_quantile(1) == pytest.approx(12.7062, rel=1e-4)
    assert analysis.t_quantile(40) == pytest.approx(2.0211, rel=1e-4)  # beyond any df=1..30 table


def test_summarize_is_the_study_summary():
    """One function serves the study's end-of-study table and analysis; it keeps finite real
    numbers only (a metric missing from a result line arrives as None, a flag as a bool)."""
    from study.summary_stats import summarize

    assert analysis.summarize is summarize
    s = summarize([0.9, None, True, "0.5", float("inf"), float("nan"), 0.92])
    assert s["n"] == 2 and s["mean"] == pytest.approx(0.91) and s["max"] == 0.92


def test_aggregate_cells_and_completeness(runs):
    agg = analysis.aggregate(runs, "test_acc")
    ev = agg[agg.phase == "evaluation"].set_index("cell")
    assert set(ev.index) == set(FINAL)
    lci = ev.loc["lci_gce_sym0.8"]
    assert (lci.n, lci.n_expected, lci.complete) == (5, 5, True)
    assert lci["mean"] == pytest.approx(0.91) and lci["std"] == pytest.approx(0.015811, rel=1e-4)
    assert lci.seeds == "0,1,2,3,4"
    gce = ev.loc["gce_asym0.4"]                  # seed 4 failed
    assert (gce.n, gce.n_expected, gce.complete, gce.n_failed) == (4, 5, False, 1)
    assert gce["mean"] == pytest.approx(statistics.mean([0.85, 0.86, 0.87, 0.88]))
    two = ev.loc["lci-two-models_gce_sym0.8"]   # seed 3 unfinished: not averaged in
    assert (two.n, two.complete, two.n_incomplete, two.seeds) == (4, False, 1, "0,1,2,4")
    assert two["mean"] == pytest.approx(statistics.mean([0.86, 0.87, 0.88, 0.89]))
    sweep = agg[agg.phase == "sweep"].sort_values("m")
    assert sweep.m.tolist() == [-2.0, 0.0, 2.0]
    assert sweep["mean"].tolist() == pytest.approx([0.81, 0.91, 0.86])
    assert not (agg.phase == "search").any()


def test_aggregate_without_study_uses_fallback(runs):
    bare = runs.drop(columns=["n_expected"])
    agg = analysis.aggregate(bare, phases=["evaluation"])
    assert (agg.n_expected == 5).all()
    agg = analysis.aggregate(bare, phases=["evaluation"], n_expected=6)
    assert not agg.complete.any()


def test_table1_numbers_marks_and_paper(runs):
    t = analysis.table1(runs)
    cells = t.cells.set_index(["row", "setting"])
    for cell, vals in FINAL.items():
        ok = [v for v in vals if isinstance(v, float)]
        mean, std = _hand(ok)
        cc = _cell_config(cell)
        row = analysis.method_label(cc["method"], cc["robust_loss"])
        e = cells.loc[(row, analysis.setting_id(cc["noise"]))]
        assert e["mean"] == pytest.approx(mean) and e["std"] == pytest.approx(std)
        assert e["n"] == len(ok)
    md = t.markdown()
    # †: paired t-test against the column's best baseline (gce) p < 0.05 (lci beats it by 11-13
    # points on every seed); 5 seeds: the sign-flip test cannot reach 0.05, so never ‡
    assert "| lci | **91.00 ± 1.58**† [paper 91.13] | **93.00 ± 1.58**† [paper 93.17] |" in md
    assert "<u>87.50 ± 1.29</u>† (4/5)" in md                  # second best, one seed short
    assert "<u>86.50 ± 1.29</u> (4/5) [paper 87.00]" in md
    assert "| lci (mae) | — | 74.00 ± 3.16† |" in md         # no paper figure for a MAE robust model
    assert "| ce | 64.00 ± 2.55† [paper 66.51] | — |" in md       # worse than gce, also marked
    assert "| gce | 79.00 ± 1.58 [paper 79.19] |" in md           # the baseline itself: none
    assert "‡" not in md.split("\n\n")[0]
    rows = [line.split("|")[1].strip() for line in md.splitlines()[2:] if line.startswith("| ")]
    assert rows == ["ce", "gce", "lci-single", "lci-two-models", "lci", "lci (mae)"]
    assert cells.loc[("lci", "sym-0.8"), "paper"] == pytest.approx(91.13)
    assert math.isnan(cells.loc[("lci-single", "sym-0.8"), "paper"])


def test_table2_rows_and_outputs(runs, tmp_path):
    t = analysis.table2(runs)
    assert t.rows == ["gce", "lci-single", "lci-two-models", "lci"]
    assert t.columns == ["cifar10|sym-0.8", "cifar10|asym-0.4"]
    md = t.markdown()
    assert "| full LCI (lci) | **91.00 ± 1.58**† [paper 91.13] | **93.00 ± 1.58**† [paper 93.17] |" in md
    assert "| single model (lci-single) | 84.00 ± 1.58† | — |" in md
    paths = t.write(tmp_path)
    csv = pd.read_csv(paths["csv"])
    lci = csv[(csv.row == "lci") & (csv.setting == "sym-0.8")].iloc[0]
    assert lci["mean"] == pytest.approx(91.0) and lci["n"] == 5 and lci["rank"] == 1
    assert lci["ci_high"] - lci["mean"] == pytest.approx(2.776445 * 1.581139 / math.sqrt(5), rel=1e-4)
    tex = paths["tex"].read_text()
    assert r"\textbf{91.00 $\pm$ 1.58}$^\dagger$ [paper 91.13]" in tex
    assert r"\underline{87.50 $\pm$ 1.29}$^\dagger$ (4/5)" in tex
    assert r"sym 80\%" in tex and r"\toprule" in tex
    assert paths["md"].read_text().startswith("## Table 2")


def test_table_on_settings_the_paper_lacks(runs):
    t = analysis.method_table(runs, settings=["sym-0.2"])   # not present: all settings shown
    assert len(t.columns) == 2
    empty = analysis.table1(runs.iloc[0:0])
    assert empty.cells.empty and "method" in empty.markdown()
