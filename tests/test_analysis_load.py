"""analysis.load / analysis.history on Tune experiment trees and lci train run folders."""
import json

import pytest

import analysis
from synthetic import (BASE_CONFIG, EVAL_FINAL, SWEEP_FINAL, epoch_metrics, label_issues,
                                write_run, write_study, write_tune_trial)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    return write_study(root, name="paper-demo", epochs=6, n_search=5)


@pytest.fixture(scope="module")
def runs(study):
    return analysis.load(study.parent)


def test_one_row_per_trial_with_phase_cell_seed(runs):
    n_eval = sum(len(v) for v in EVAL_FINAL.values())
    n_sweep = sum(len(v) for v in SWEEP_FINAL.values())
    n_search = 5 * 2                                   # two full-LCI cells are searched
    assert len(runs) == n_eval + n_sweep + n_search
    assert runs.groupby("phase").size().to_dict() == {
        "evaluation": n_eval, "search": n_search, "sweep": n_sweep}
    ev = runs[(runs.phase == "evaluation") & (runs.cell == "lci_gce_sym0.8")]
    assert sorted(ev.seed) == [0, 1, 2, 3, 4]
    assert set(ev.study) == {"paper-demo"}
    assert (ev.n_expected == 5).all()
    sw = runs[runs.phase == "sweep"]
    assert (sw.n_expected == 3).all()                  # study.json's sweep.seeds
    assert runs[runs.phase == "search"].n_expected.isna().all()


def test_config_flattened_and_tune_keys_dropped(runs):
    assert "robust_loss_params.q" in runs.columns
    assert runs.loc[runs.method == "lci", "robust_loss_params.q"].notna().all()
    for key in ("config", "hostname", "pid", "node_ip", "date", "done", "time_this_iter_s"):
        assert key not in runs.columns
    for key in ("trial_id", "training_iteration", "test_acc", "val_acc", "path", "status"):
        assert key in runs.columns
    assert "lr_milestones" in runs.columns and isinstance(runs.lr_milestones.iloc[0], str)
    assert set(runs.attrs["config_columns"]) >= {"m", "lam", "rho", "alpha", "seed", "noise"}


def test_final_metrics_are_last_report(runs):
    ev = runs[(runs.phase == "evaluation") & (runs.cell == "lci_gce_sym0.8")].sort_values("seed")
    assert ev.test_acc.tolist() == pytest.approx(EVAL_FINAL["lci_gce_sym0.8"])
    assert (ev.training_iteration == 6).all()
    assert (ev.best_test_acc >= ev.test_acc).all()
    # baselines report no robust_test_acc
    ce = runs[runs.method == "ce"]
    assert ce.robust_test_acc.isna().all()


def test_failed_and_incomplete_trials_are_kept(runs):
    err = runs[runs.status == "failed"]
    assert len(err) == 1
    row = err.iloc[0]
    assert (row.cell, row.seed) == ("gce_asym0.4", 4)
    assert row.error == "RuntimeError: CUDA error: an illegal memory access was encountered"
    inc = runs[(runs.status == "incomplete") & (runs.phase == "evaluation")]
    assert len(inc) == 1 and inc.iloc[0].cell == "lci-two-models_gce_sym0.8"
    assert inc.iloc[0].epochs_done == 3
    assert (runs[runs.phase == "search"].status == "incomplete").sum() == 2


def test_label_issues_found_and_checkpoints_ignored(runs):
    lci = runs[(runs.phase == "evaluation") & runs.method.str.startswith("lci")]
    done = lci[lci.status == "finished"]
    assert done.label_issues.notna().all()
    # the trainable's final checkpoint is the run folder: label_issues.csv lives there
    assert done.label_issues.str.contains(r"checkpoint_000005/label_issues.csv", regex=False).all()
    assert lci[lci.status != "finished"].label_issues.isna().all()
    assert runs[runs.method == "ce"].label_issues.isna().all()
    assert not runs.path.str.contains("checkpoint_").any()


def test_history_one_row_per_epoch(study):
    h = analysis.history(study)
    one = h[(h.phase == "evaluation") & (h.cell == "lci_gce_sym0.8") & (h.seed == 2)]
    assert one.epoch.tolist() == [1, 2, 3, 4, 5, 6]
    assert one.test_acc.iloc[-1] == pytest.approx(0.92)
    assert {"robust_test_acc", "train_acc_clean", "train_acc_noisy", "m"} <= set(h.columns)
    assert "timestamp" not in h.columns


def test_restored_trial_keeps_last_report_per_epoch(tmp_path):
    cfg = dict(BASE_CONFIG, epochs=4, seed=0, cell="c", phase="evaluation")
    ms = epoch_metrics(cfg, 0.9)
    # crashed after epoch 3, restored from the epoch-2 checkpoint: epoch 3 reported twice
    again = dict(ms[2], test_acc=0.77)
    d = write_tune_trial(tmp_path / "exp", "t0", cfg, ms[:3] + [again, ms[3]])
    h = analysis.history(d)
    assert h.epoch.tolist() == [1, 2, 3, 4]
    assert h.test_acc.iloc[2] == pytest.approx(0.77)
    r = analysis.load(d)
    assert r.status.iloc[0] == "finished" and r.epochs_done.iloc[0] == 4


def test_torn_last_line_and_error_after_recovery(tmp_path):
    cfg = dict(BASE_CONFIG, epochs=3, seed=1, cell="c", phase="evaluation")
    d = write_tune_trial(tmp_path / "exp", "t0", cfg, epoch_metrics(cfg, 0.8),
                         error="ValueError: transient")
    # Tune kept error.txt although the retried trial finished: it counts as finished
    with open(d / "result.json", "a") as f:
        f.write('{"test_acc": 0.1, "epo')           # a line cut short by a crash
    r = analysis.load(tmp_path)
    assert r.status.iloc[0] == "finished"
    assert r.test_acc.iloc[0] == pytest.approx(0.8)


def test_lci_train_run_folders(tmp_path):
    for s in range(3):
        cfg = dict(BASE_CONFIG, dataset="digits", seed=s, epochs=4, robust_loss_params={"q": 0.5})
        write_run(tmp_path / f"run{s}", cfg, epoch_metrics(cfg, 0.8 + 0.01 * s),
                  label_issues_df=label_issues(50, 0.5, s))
    cfg = dict(BASE_CONFIG, dataset="digits", seed=3, epochs=4)
    write_run(tmp_path / "run3", cfg, epoch_metrics(cfg, 0.5, 2), finished=False,
              meta={"phase": "evaluation", "cell": "mine", "study": "manual"})
    r = analysis.load([tmp_path / "run0", tmp_path])     # overlapping paths: no duplicates
    assert len(r) == 4
    plain = r[r.phase == "run"].sort_values("seed")
    assert plain.cell.unique().tolist() == ["lci_gce_sym0.8"]
    assert plain.status.unique().tolist() == ["finished"]
    assert plain["robust_loss_params.q"].tolist() == [0.5, 0.5, 0.5]
    assert plain.wall_s.tolist() == [9.0, 9.0, 9.0]      # from result.json
    assert len(plain.config_id.unique()) == 1            # seeds of one cell
    meta = r[r.phase == "evaluation"].iloc[0]
    assert (meta.cell, meta.study, meta.status) == ("mine", "manual", "incomplete")
    h = analysis.history(tmp_path)
    assert len(h) == 3 * 4 + 2


def test_run_inside_trial_folder_is_not_counted_twice(tmp_path):
    cfg = dict(BASE_CONFIG, epochs=2, seed=0, cell="c", phase="search")
    d = write_tune_trial(tmp_path / "exp", "t0", cfg, epoch_metrics(cfg, 0.8))
    write_run(d / "run", dict(BASE_CONFIG, epochs=2), epoch_metrics(cfg, 0.8),
              label_issues_df=label_issues(20, 0.5, 0))
    r = analysis.load(tmp_path)
    assert len(r) == 1 and r.kind.iloc[0] == "tune"
    assert r.label_issues.iloc[0].endswith("run/label_issues.csv")


def test_pending_trial_and_phase_from_folder_name(tmp_path):
    d = tmp_path / "lci_gce_sym0.8__eval" / "trial_a"
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps({**BASE_CONFIG, "robust_loss_params": {"q": 0.7}}))
    r = analysis.load(tmp_path)
    assert r.phase.iloc[0] == "evaluation"
    assert r.status.iloc[0] == "incomplete" and r.epochs_done.iloc[0] == 0


def test_missing_path_raises_and_empty_folder_gives_empty_frame(tmp_path):
    with pytest.raises(FileNotFoundError):
        analysis.load(tmp_path / "nope")
    empty = analysis.load(tmp_path)
    assert empty.empty and "status" in empty.columns
    assert analysis.history(tmp_path).empty


@pytest.mark.parametrize("noise,setting", [("sym:0.8", "sym-0.8"), ("asym:0.4", "asym-0.4"),
                                           ("none", "none"), ("sym:80", "sym-0.8")])
def test_setting_ids(noise, setting):
    assert analysis.setting_id(noise) == setting


def test_auto_fields_resolved_from_latest_checkpoint(tmp_path):
    cfg = dict(BASE_CONFIG, epochs=4, seed=0)
    params = dict(cfg, epochs="auto", lr="auto", cell="c", phase="evaluation")
    d = write_tune_trial(tmp_path / "exp", "t0", params, epoch_metrics(cfg, 0.8, 3))
    (d / "checkpoint_000002" / "config.json").write_text(json.dumps(cfg))   # resolved by lci
    (d / "checkpoint_000001").mkdir()                                       # an older one
    r = analysis.load(tmp_path).iloc[0]
    assert (r.epochs, r.lr) == (4, 0.1)
    assert r.status == "incomplete" and r.epochs_done == 3


def test_fused_trial_folder_is_skipped_and_its_seeds_read(tmp_path):
    """A fused trial's own folder holds its checkpoint, not a run: study.trials skips it (and
    what is below it), so analysis/ counts the seeds' folders beside it, once each."""
    from lci.names import FUSED_KEY, fused_member_folder

    cfg = dict(BASE_CONFIG, epochs=2, cell="c", phase="evaluation")
    box = write_tune_trial(tmp_path / "trials", "c__eval-f0", {**cfg, FUSED_KEY: [0, 1]},
                           epoch_metrics(cfg, 0.8))
    for s in (0, 1):
        write_tune_trial(tmp_path / "trials", fused_member_folder(box.name, s),
                         dict(cfg, seed=s), epoch_metrics(cfg, 0.8 + 0.01 * s))
    r = analysis.load(tmp_path).sort_values("seed")
    assert r.seed.tolist() == [0, 1] and set(r.status) == {"finished"}
    assert not r.path.str.endswith("c__eval-f0").any()


def test_run_folder_in_the_study_words(tmp_path):
    """An lci train run folder gets the study's status words: failed with the last line of
    its error.txt, incomplete without result.json, finished with it."""
    cfg = dict(BASE_CONFIG, dataset="digits", seed=0, epochs=4)
    d = write_run(tmp_path / "a", cfg, epoch_metrics(cfg, 0.5, 2), finished=False)
    (d / "error.txt").write_text("Traceback ...\nDivergenceError: loss is nan at epoch 3\n")
    write_run(tmp_path / "b", dict(cfg, seed=1), epoch_metrics(cfg, 0.5, 2), finished=False)
    write_run(tmp_path / "c", dict(cfg, seed=2), epoch_metrics(cfg, 0.8))
    r = analysis.load(tmp_path).set_index("seed")
    assert r.status.to_dict() == {0: "failed", 1: "incomplete", 2: "finished"}
    assert r.error[0] == "DivergenceError: loss is nan at epoch 3" and r.error.iloc[1:].isna().all()
