"""Synthetic experiment folders in the exact on-disk formats :mod:`analysis` reads.

A test helper (not shipped: it lives under ``tests/``, imported as ``synthetic`` because
pytest puts this folder on ``sys.path``), used by the analysis tests and the notebook checks,
and an executable description of what the Tune trainables and ``lci train`` write:
``write_tune_trial`` / ``write_run`` write one trial or run; ``write_study`` a whole study
tree (search, evaluation and sweep phases, a failed and an unfinished trial,
label_issues.csv files) whose final accuracies are known in advance.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from lci.methods import LCI_METHODS, has_two_models

#: Tune keys written beside our metrics on every result line (dropped by analysis).
_TUNE_EXTRA = ("timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id",
               "date", "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip",
               "config", "time_since_restore", "iterations_since_restore")

BASE_CONFIG = dict(
    dataset="cifar10", data_dir="/data", noise="sym:0.8", noise_convention="gjs",
    noise_transition=None, val_fraction=0.0, method="lci", robust_loss="gce",
    robust_loss_params={"q": 0.7}, m=0.0, lam=1e-3, rho=1.0, alpha=1.0, slope=0.5,
    mu_momentum=0.7, ce_norm="mean", penalty="l2", init="shared", correction_start=0.25,
    correction_weight=0.5, correction_source="clean", fuse_views=False,
    model="preact_resnet34", pretrained=None, epochs=6, batch_size=128, lr=0.1, momentum=0.9,
    nesterov=True, weight_decay=5e-4, lr_schedule="multistep", lr_milestones=[0.5, 0.75],
    augment="weak", seed=0, device="cuda", amp="bf16", channels_last=True, compile=False,
    num_workers=0, threads=0, checkpoint_every=1, eval_train=True,
)


def curve(final: float, epochs: int, start: float = 0.1) -> List[float]:
    """A rising accuracy curve that ends exactly at ``final``."""
    return [final - (final - start) * ((epochs - e) / epochs) ** 2 for e in range(1, epochs + 1)]


def epoch_metrics(config: Mapping[str, Any], final_acc: float, epochs: Optional[int] = None,
                  *, val_acc: Optional[float] = None) -> List[Dict[str, Any]]:
    """Per-epoch metrics (docs/interfaces.md names) ending at ``final_acc`` for ``test_acc``."""
    n = int(epochs if epochs is not None else config["epochs"])
    total = int(config["epochs"])
    lci = config["method"] in LCI_METHODS
    two = has_two_models(config["method"])
    test = curve(final_acc, total)[:n]
    rows = []
    for e in range(1, n + 1):
        frac = e / total
        r = dict(epoch=e, test_acc=test[e - 1],
                 val_acc=(val_acc if val_acc is not None else 0.2 + 0.1 * final_acc) * min(1, 0.5 + frac),
                 train_acc_clean=min(0.99, test[e - 1] + 0.05), train_acc_noisy=0.02 + 0.3 * frac ** 2,
                 train_acc_noisy_true=0.5 * test[e - 1], conf_auroc=0.6 + 0.3 * frac,
                 conf_mean_clean=0.5 + 0.3 * frac, conf_mean_noisy=0.5 - 0.3 * frac,
                 dce_fraction=0.3, loss=2.0 / e, loss_ce=2.5 / e, realized_noise_rate=0.72,
                 epoch_s=1.5, samples_per_s=30000.0)
        if lci:
            r.update(loss_robust=0.9 / e, loss_penalty=1e-3 / e)
        if two:
            r.update(robust_test_acc=0.85 * test[e - 1], robust_train_acc_clean=0.8 * test[e - 1],
                     robust_train_acc_noisy=0.02 + 0.05 * frac, loss_jsd=0.1 / e)
        rows.append(r)
    return rows


def label_issues(n: int, noise_rate: float, seed: int) -> "pandas.DataFrame":  # noqa: F821
    """A ``label_issues.csv`` table: noisy samples get lower confidence than clean ones."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    noisy = rng.random(n) < noise_rate
    conf = np.where(noisy, rng.beta(2, 5, n), rng.beta(5, 2, n))
    given = rng.integers(0, 10, n)
    pred = np.where(noisy, rng.integers(0, 10, n), given)
    df = pd.DataFrame(dict(index=np.arange(n), given_label=given, predicted_label=pred,
                           label_confidence=conf, is_label_issue=conf < 0.5, is_noisy=noisy))
    return df.sort_values("label_confidence").reset_index(drop=True)


def write_tune_trial(exp_dir: Path, name: str, params: Mapping[str, Any],
                     metrics: Sequence[Mapping[str, Any]], *, trial_id: str = "00000_00000",
                     error: Optional[str] = None, label_issues_df=None,
                     start_time: float = 1.7e9) -> Path:
    """One Tune trial folder: ``params.json``, ``result.json`` (JSON lines with Tune's own
    keys), ``error.txt`` if ``error``, and the latest ``checkpoint_NNNNNN`` folder holding the
    run folder (``config.json``, ``history.csv``; with ``label_issues_df`` also
    ``result.json`` and ``label_issues.csv``, as after the final report)."""
    d = Path(exp_dir) / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "params.json").write_text(json.dumps(dict(params), indent=2))
    with open(d / "result.json", "w") as f:
        t = 0.0
        for i, m in enumerate(metrics, 1):
            t += 1.5
            line = dict(m, timestamp=int(start_time + t), checkpoint_dir_name=f"checkpoint_{i - 1:06d}",
                        done=False, training_iteration=i, trial_id=trial_id,
                        date=time.strftime("%Y-%m-%d_%H-%M-%S", time.gmtime(start_time + t)),
                        time_this_iter_s=1.5, time_total_s=t, pid=1234, hostname="node-1",
                        node_ip="10.0.0.1", config=dict(params), time_since_restore=t,
                        iterations_since_restore=i)
            f.write(json.dumps(line) + "\n")
    if metrics:
        # our trainable uploads its whole run folder as the checkpoint; the last one also
        # holds result.json and label_issues.csv
        import pandas as pd

        ck = d / f"checkpoint_{len(metrics) - 1:06d}"
        ck.mkdir(exist_ok=True)
        (ck / "checkpoint.pt").write_bytes(b"\0" * 16)
        cfg = {k: v for k, v in params.items() if k not in ("cell", "phase", "study", "experiment")}
        (ck / "config.json").write_text(json.dumps(cfg, indent=2))
        pd.DataFrame.from_records(list(metrics)).to_csv(ck / "history.csv", index=False)
        if label_issues_df is not None:
            (ck / "result.json").write_text(json.dumps(dict(metrics[-1]), indent=2))
            label_issues_df.to_csv(ck / "label_issues.csv", index=False)
    if error:
        (d / "error.txt").write_text(
            "Failure # 1 (occurred at 2025-01-01_00-00-00)\n"
            "ray::ImplicitFunc.train() (pid=1234, ip=10.0.0.1)\n"
            "Traceback (most recent call last):\n  File \"trainables/lci_trainable.py\", line 1\n"
            f"{error}\n")
    return d


def write_run(out_dir: Path, config: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]], *,
              finished: bool = True, meta: Optional[Mapping[str, Any]] = None,
              label_issues_df=None) -> Path:
    """One ``lci train`` folder: ``config.json``, ``history.csv``, ``result.json`` (when
    finished), ``label_issues.csv`` and optional ``meta.json``."""
    import pandas as pd

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(dict(config), indent=2))
    pd.DataFrame.from_records(list(metrics)).to_csv(d / "history.csv", index=False)
    if finished and metrics:
        (d / "result.json").write_text(json.dumps(dict(metrics[-1], wall_s=9.0), indent=2))
    if meta:
        (d / "meta.json").write_text(json.dumps(dict(meta)))
    if label_issues_df is not None:
        label_issues_df.to_csv(d / "label_issues.csv", index=False)
    return d


#: Final test accuracies of the evaluation seeds 0..4 of each cell of :func:`write_study`.
#: ``None``: that seed's trial failed (error.txt); a float in a tuple ``(acc, epochs_done)``:
#: the trial stopped early.
EVAL_FINAL: Dict[str, List[Any]] = {
    "ce_sym0.8":                 [0.62, 0.64, 0.66, 0.61, 0.67],
    "gce_sym0.8":                [0.78, 0.80, 0.79, 0.77, 0.81],
    "lci-single_gce_sym0.8":     [0.83, 0.84, 0.85, 0.82, 0.86],
    "lci-two-models_gce_sym0.8": [0.86, 0.87, 0.88, (0.50, 3), 0.89],
    "lci_gce_sym0.8":            [0.90, 0.91, 0.92, 0.89, 0.93],
    "gce_asym0.4":               [0.85, 0.86, 0.87, 0.88, None],
    "lci_gce_asym0.4":           [0.92, 0.93, 0.94, 0.91, 0.95],
}
#: Sweep of m for ``lci_gce_sym0.8``: m → final accuracies of seeds 0..2.
SWEEP_FINAL: Dict[float, List[float]] = {
    -2.0: [0.80, 0.82, 0.81], 0.0: [0.90, 0.91, 0.92], 2.0: [0.86, 0.85, 0.87],
}


def _cell_config(cell: str) -> Dict[str, Any]:
    """``lci_gce_sym0.8`` → method, robust loss, noise (the study's cell ids)."""
    *head, tag = cell.split("_")
    kind = "asym" if tag.startswith("asym") else "sym" if tag.startswith("sym") else tag
    noise = f"{kind}:{tag[len(kind):]}" if kind in ("sym", "asym") else kind
    if head[0] in LCI_METHODS:
        return dict(method=head[0], robust_loss="_".join(head[1:]), noise=noise)
    return dict(method="_".join(head), robust_loss="gce", noise=noise)


def write_study(root: Path, *, name: str = "paper-demo", dataset: str = "cifar10",
                epochs: int = 6, n_search: int = 8, seeds: int = 5,
                eval_final: Optional[Mapping[str, List[Any]]] = None,
                sweep_final: Optional[Mapping[float, List[float]]] = None,
                label_issue_samples: int = 200) -> Path:
    """A study folder ``root/name`` as our trainables write it; returns its path.

    - ``study.json`` with the cells, ``seeds`` and ``search_params``;
    - ``<cell>__search/``: ``n_search`` trials (phase ``search``) for the full-LCI cells;
    - ``<cell>__eval/``: one trial per seed (phase ``evaluation``), final ``test_acc`` from
      ``eval_final`` (default :data:`EVAL_FINAL`), with a failed and an unfinished trial;
    - ``sweep_m__lci_gce_sym0.8/``: phase ``sweep``, m values × 3 seeds (:data:`SWEEP_FINAL`).

    Cell ids follow the study's scheme: ``lci_gce_sym0.8`` (method, robust loss, noise) or
    ``ce_sym0.8`` for baselines.
    """
    eval_final = EVAL_FINAL if eval_final is None else eval_final
    sweep_final = SWEEP_FINAL if sweep_final is None else sweep_final
    study_dir = Path(root) / name
    study_dir.mkdir(parents=True, exist_ok=True)
    searched = ["m", "lam", "rho", "alpha", "robust_loss_params.q"]
    cells = [dict(id=c, **_cell_config(c)) for c in eval_final]
    for c in cells:
        c.update(searched=c["method"] == "lci", search_params=searched if c["method"] == "lci" else [])
    sweep_cell = "lci_gce_sym0.8"
    spec = dict(name=name, dataset=dataset, seeds=seeds, seed_values=list(range(seeds)),
                metric="test_acc", search_metric="val_acc", mode="max", cells=cells,
                search_params=searched,
                sweep=dict(param="m", values=sorted(sweep_final), seeds=3, seed_values=[0, 1, 2],
                           cells=[sweep_cell]),
                experiments=[f"{c}__{p}" for c in eval_final for p in ("search", "eval")])
    spec["trial_counts"] = {"evaluation": seeds * len(cells)}
    (study_dir / "study.json").write_text(json.dumps(spec, indent=2))
    rng = np.random.default_rng(0)
    base = dict(BASE_CONFIG, dataset=dataset, epochs=epochs)
    t0 = 1.7e9
    tid = 0

    for cell in eval_final:
        cc = _cell_config(cell)
        # ----- search (full LCI cells only, as a study with a searched method would)
        if cc["method"] == "lci":
            exp = study_dir / f"{cell}__search"
            for i in range(n_search):
                p = dict(base, **cc, val_fraction=0.1, seed=0, cell=cell, phase="search", study=name,
                         m=float(rng.uniform(-3, 3)), lam=float(10 ** rng.uniform(-4, -2)),
                         rho=float(rng.uniform(0.5, 2)), alpha=float(rng.uniform(0.5, 2)),
                         robust_loss_params={"q": float(rng.uniform(0.3, 0.9))})
                val = 0.7 - 0.03 * (p["m"] - 0.5) ** 2 + 0.01 * rng.standard_normal()
                n_ep = epochs if i != n_search - 1 else 2   # the last trial was stopped
                write_tune_trial(exp, f"trial_{tid:05d}", p, epoch_metrics(p, 0.85, n_ep, val_acc=val),
                                 trial_id=f"a{tid:04d}_{i:05d}", start_time=t0 + 100 * i)
                tid += 1
        # ----- evaluation, one trial per seed
        exp = study_dir / f"{cell}__eval"
        for seed, final in enumerate(eval_final[cell]):
            p = dict(base, **cc, seed=seed, cell=cell, phase="evaluation", study=name)
            if cc["method"] not in LCI_METHODS:
                p["robust_loss_params"] = {}
            error = None
            if final is None:                   # failed after 2 epochs
                metrics = epoch_metrics(p, 0.5, 2)
                error = "RuntimeError: CUDA error: an illegal memory access was encountered"
            elif isinstance(final, tuple):      # still running / stopped early
                metrics = epoch_metrics(p, final[0], final[1])
            else:
                metrics = epoch_metrics(p, final)
            finished = error is None and not isinstance(final, tuple)
            li = label_issues(label_issue_samples, 0.72, seed) if label_issue_samples and \
                cc["method"].startswith("lci") and finished else None
            write_tune_trial(exp, f"trial_{tid:05d}", p, metrics, trial_id=f"e{tid:04d}_{seed:05d}",
                             error=error, label_issues_df=li, start_time=t0 + 10_000 + 100 * seed)
            tid += 1

    # ----- sweep of m
    exp = study_dir / f"sweep_m__{sweep_cell}"
    for m, finals in sweep_final.items():
        for seed, final in enumerate(finals):
            p = dict(base, **_cell_config(sweep_cell), m=float(m), seed=seed, cell=sweep_cell,
                     phase="sweep", study=name)
            write_tune_trial(exp, f"trial_{tid:05d}", p, epoch_metrics(p, final),
                             trial_id=f"s{tid:04d}_{seed:05d}", start_time=t0 + 20_000)
            tid += 1
    return study_dir
