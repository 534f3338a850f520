"""Figure 3, Figure 4, the Optuna search plots and the label-confidence histograms."""
import numpy as np
import pytest

import analysis
from synthetic import write_study

FINAL = {
    "ce_sym0.8": [0.62, 0.64, 0.66],
    "gce_sym0.8": [0.78, 0.80, 0.79],
    "lci-single_gce_sym0.8": [0.83, 0.84, 0.85],
    "lci_gce_sym0.8": [0.90, 0.91, 0.92],
}
SWEEP = {-2.0: [0.80, 0.82, 0.81], 0.0: [0.90, 0.91, 0.92], 2.0: [0.86, 0.85, (0.87)]}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    return write_study(root, name="figs", epochs=4, n_search=6, seeds=3, eval_final=FINAL,
                       sweep_final=SWEEP, label_issue_samples=300)


@pytest.fixture(scope="module")
def runs(study):
    return analysis.load(study)


def _labelled(fig):
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() or ax.get_xlabel()
        assert ax.get_title()
    assert fig.get_suptitle() or all(ax.get_title() for ax in fig.axes)


def test_training_curves_theta_and_theta_star(study):
    figs = analysis.training_curves(analysis.history(study))
    assert set(figs) == {"fig3__lci_gce_sym0.8", "fig3__lci-single_gce_sym0.8"}
    fig = figs["fig3__lci_gce_sym0.8"]
    _labelled(fig)
    test_ax, clean_ax, noisy_ax = fig.axes
    labels = [line.get_label() for line in test_ax.lines]
    assert labels == ["θ* (inference model)", "θ (noise-robust model)"]
    assert len(noisy_ax.lines) == 2 and test_ax.get_legend() is not None
    # mean over seeds at the last epoch, in %
    assert test_ax.lines[0].get_ydata()[-1] == pytest.approx(91.0)
    assert list(test_ax.lines[0].get_xdata()) == [1, 2, 3, 4]
    single = figs["fig3__lci-single_gce_sym0.8"]
    assert [l.get_label() for l in single.axes[0].lines] == ["model"]   # one network
    assert analysis.training_curves(analysis.history(study), methods=None).keys() >= {
        "fig3__ce_sym0.8"}


def test_memorisation_curves_put_every_method_of_a_setting_side_by_side(study):
    figs = analysis.memorisation_curves(analysis.history(study))
    assert list(figs) == ["memorisation__cifar10_sym-0.8"]  # one setting: one figure
    (fig,) = figs.values()
    _labelled(fig)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.lines}
    assert set(lines) == {analysis.method_label(m, l) for m, l in
                          (("ce", None), ("gce", None), ("lci-single", "gce"), ("lci", "gce"))}
    # the evaluation phase only (the sweep's lci trials at other m are not averaged in):
    # each line ends at the mean over seeds of that cell's final test accuracy, in %
    finals = {analysis.method_label("ce", None): 64.0, analysis.method_label("lci", "gce"): 91.0}
    for label, final in finals.items():
        assert lines[label].get_ydata()[-1] == pytest.approx(final)
        assert list(lines[label].get_xdata()) == [1, 2, 3, 4]
    assert "3 seed(s)" in fig.get_suptitle()


def test_sensitivity_mean_band_and_reference_lines(runs):
    figs = analysis.sensitivity(runs)
    assert list(figs) == ["fig4__lci_gce_sym0.8"]
    ax = figs["fig4__lci_gce_sym0.8"].axes[0]
    _labelled(figs["fig4__lci_gce_sym0.8"])
    mean = next(l for l in ax.lines if l.get_label() == "lci (mean)")
    assert list(mean.get_xdata()) == [-2.0, 0.0, 2.0]
    assert list(mean.get_ydata()) == pytest.approx([81.0, 91.0, 86.0])
    refs = {l.get_label(): l.get_ydata()[0] for l in ax.lines if l.get_label().startswith(("CE", "GCE"))}
    assert refs == pytest.approx({"CE (3 seeds)": 64.0, "GCE (3 seeds)": 79.0})
    assert ax.get_legend() is not None
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].max() == pytest.approx(92.0)          # mean + std at m = 0


def test_search_history_spearman_fallback(runs):
    figs = analysis.search_history(runs)
    fig = figs["search__lci_gce_sym0.8"]
    _labelled(fig)
    hist_ax, imp_ax = fig.axes
    assert "Spearman" in imp_ax.get_title()
    finished = hist_ax.lines[0]
    assert len(finished.get_xdata()) == 5                     # the sixth trial was stopped
    names = [t.get_text() for t in imp_ax.get_yticklabels()]
    assert set(names) <= {"m", "lam", "rho", "alpha", "robust_loss_params.q"} and names


def test_search_history_uses_optuna_db(runs, study):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{study / 'optuna.db'}"
    s = optuna.create_study(study_name="figs__lci_gce_sym0.8", storage=url, direction="maximize",
                            sampler=optuna.samplers.RandomSampler(seed=0))
    s.optimize(lambda t: -(t.suggest_float("m", -3, 3) - 0.5) ** 2 + 0 * t.suggest_float("lam", 0, 1),
               n_trials=12)
    try:
        fig = analysis.search_history(runs)["search__lci_gce_sym0.8"]
        imp_ax = fig.axes[1]
        assert "fANOVA" in imp_ax.get_title()
        names = [t.get_text() for t in imp_ax.get_yticklabels()]
        assert names[-1] == "m"                                # the most important, on top
        # the seeded fANOVA evaluator, not Optuna's default (PED-ANOVA in Optuna 5)
        want = optuna.importance.get_param_importances(
            s, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        bars = {n: p.get_width() for n, p in zip(names, imp_ax.patches)}
        assert bars == pytest.approx(want)
    finally:
        (study / "optuna.db").unlink()


def test_confidence_histograms(runs):
    figs = analysis.confidence_histograms(runs)
    assert set(figs) == {"confidence__lci_gce_sym0.8", "confidence__lci-single_gce_sym0.8"}
    ax = figs["confidence__lci_gce_sym0.8"].axes[0]
    _labelled(figs["confidence__lci_gce_sym0.8"])
    assert "AUROC" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("clean labels") and labels[1].startswith("noisy labels")


def test_spearman_importances_by_hand():
    import pandas as pd

    g = pd.DataFrame({"m": [1, 2, 3, 4, 5], "lam": [1, 2, 3, 4, 5], "rho": [5, 4, 3, 2, 1],
                      "val_acc": [0.2, 0.1, 0.4, 0.3, 0.5]})
    imp = analysis.spearman_importances(g.assign(lam=g["m"] ** 3), ["m", "lam", "rho"])
    # rank differences (-1, 1, -1, 1, 0): rho = 1 - 6 * 4 / (5 * 24) = 0.8; reversed x: -0.8
    assert imp == pytest.approx({"m": 0.8, "lam": 0.8, "rho": 0.8})


def test_auroc_by_hand():
    assert analysis.auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert analysis.auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    assert np.isnan(analysis.auroc([0.1], [True]))


def test_save_figure_png_and_svg(runs, tmp_path):
    fig = next(iter(analysis.sensitivity(runs).values()))
    png, svg = analysis.save_figure(fig, tmp_path / "sub" / "f")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in svg.read_bytes()[:500]


def test_confidence_histogram_without_noise_mask(tmp_path):
    from synthetic import BASE_CONFIG, epoch_metrics, label_issues, write_run

    cfg = dict(BASE_CONFIG, dataset="clothing1m", noise="none", epochs=2)
    li = label_issues(40, 0.3, 0).drop(columns=["is_noisy"])     # real noise: no ground truth
    write_run(tmp_path / "r", cfg, epoch_metrics(cfg, 0.7), label_issues_df=li)
    figs = analysis.confidence_histograms(analysis.load(tmp_path))
    ax = next(iter(figs.values())).axes[0]
    assert "AUROC" not in ax.get_title()
    assert ax.get_legend().get_texts()[0].get_text().startswith("all samples")
