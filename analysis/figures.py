"""The paper's figures and the search plots, with matplotlib.

Every function takes frames from :func:`analysis.load` / :func:`analysis.history` and returns
``{name: Figure}`` (one figure per cell); :func:`save_figure` writes PNG and SVG. Figures are
built with ``matplotlib.figure.Figure`` directly (no pyplot state), so they render with the
Agg canvas anywhere and display inline in notebooks.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lci.methods import has_two_models
from lci.names import LCI_METHODS, default_cell

from study.phases import SEARCH, SWEEP
from study.trials import FINISHED, STUDY_FILE

from .frames import FINAL_PHASES, RUNTIME_KEYS
from .paper import dataset_label, method_label, setting_label
from .stats import CELL_KEYS, aggregate
from .tables import percent_scale

COLORS = {"theta_star": "#1f77b4", "theta": "#d62728", "clean": "#2ca02c", "noisy": "#ff7f0e",
          "ce": "#7f7f7f", "gce": "#9467bd"}


def slug(text: str) -> str:
    """A file-name-safe version of a cell id."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(text)).strip("_") or "cell"


def save_figure(fig: Figure, stem, formats: Sequence[str] = ("png", "svg"), dpi: int = 130) -> List[Path]:
    """Write ``stem.png`` and ``stem.svg`` (parents created); returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        p = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(p, format=fmt, dpi=dpi)
        out.append(p)
    return out


def _unique(name: str, used: Dict[str, Figure]) -> str:
    k, i = name, 2
    while k in used:
        k, i = f"{name}_{i}", i + 1
    return k


def _describe(row) -> str:
    """``CIFAR-10 sym 80% — lci`` for a row of load()/history()."""
    return (f"{dataset_label(row.get('dataset'))} {setting_label(row.get('setting'))} — "
            f"{method_label(row.get('method'), row.get('robust_loss'))}")


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    """Finished trials only, unless none has finished (then all, to show something)."""
    if "status" in df.columns and (df["status"] == FINISHED).any():
        return df[df["status"] == FINISHED]
    return df


def _span(n: pd.Series) -> str:
    lo, hi = int(n.min()), int(n.max())
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


_METRIC_LABELS = {"test_acc": "test accuracy", "val_acc": "validation accuracy (noisy labels)",
                  "robust_test_acc": "test accuracy of θ"}


def _metric_label(metric: str, scale: float) -> str:
    name = _METRIC_LABELS.get(metric, metric)
    return f"{name} (%)" if scale == 100 else name


# ---------------------------------------------------------------------------- Figure 3
def _epoch_band(ax, g: pd.DataFrame, col: str, scale: float, *, style: str, color, label: str,
                alpha: float) -> None:
    """``col`` of ``g`` per epoch: the mean over seeds as a line, ± std as a band."""
    s = (g.assign(_v=pd.to_numeric(g[col], errors="coerce") * scale)
         .groupby("epoch")["_v"].agg(["mean", "std"]).reset_index())
    (line,) = ax.plot(s["epoch"], s["mean"], style, color=color, label=label, lw=1.8)
    if s["std"].notna().any():
        ax.fill_between(s["epoch"], s["mean"] - s["std"].fillna(0), s["mean"] + s["std"].fillna(0),
                        color=line.get_color(), alpha=alpha, lw=0)


_PANELS = [  # (title, y label, [(column, model, style)])
    ("Test accuracy", "accuracy on the clean test set (%)",
     [("test_acc", "theta_star", "-"), ("robust_test_acc", "theta", "--")]),
    ("Clean training samples", "predicted = given (clean) label (%)",
     [("train_acc_clean", "theta_star", "-"), ("robust_train_acc_clean", "theta", "--")]),
    ("Noisy training samples (memorization)", "predicted = given (noisy) label (%)",
     [("train_acc_noisy", "theta_star", "-"), ("robust_train_acc_noisy", "theta", "--")]),
]


def training_curves(
    hist: pd.DataFrame,
    *,
    methods: Optional[Sequence[str]] = LCI_METHODS,
    phases: Sequence[str] = FINAL_PHASES,
) -> Dict[str, Figure]:
    """Figure 3: per-epoch test, clean-train and noisy-train accuracy of θ* (solid) and θ
    (dashed), mean ± std over the seeds of each cell. ``methods=None`` for every method."""
    h = hist
    if "phase" in h.columns:
        h = h[h["phase"].isin(list(phases))]
    if methods is not None and "method" in h.columns:
        h = h[h["method"].isin(list(methods))]
    figs: Dict[str, Figure] = {}
    if h.empty or "epoch" not in h.columns:
        return figs
    metrics = [c for _, _, lines in _PANELS for c, _, _ in lines if c in h.columns]
    scale = percent_scale(h[metrics].to_numpy().ravel()) if metrics else 1.0
    keys = [k for k in CELL_KEYS if k in h.columns]
    for _, g in h.groupby(keys, dropna=False, sort=True):
        g = _ok(g)
        first = g.iloc[0]
        two_models = has_two_models(first.get("method"))
        n_seeds = g["path"].nunique() if "path" in g.columns else 1
        fig = Figure(figsize=(13, 4.0), layout="constrained")
        axes = fig.subplots(1, 3)
        for ax, (title, ylabel, lines) in zip(axes, _PANELS):
            for col, model, style in lines:
                if col not in g.columns or not pd.to_numeric(g[col], errors="coerce").notna().any():
                    continue
                label = ("θ* (inference model)" if model == "theta_star" else "θ (noise-robust model)") \
                    if two_models else ("model" if model == "theta_star" else "θ")
                _epoch_band(ax, g, col, scale, style=style, color=COLORS[model], label=label,
                            alpha=0.2)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(loc="best", fontsize=8)
        fig.suptitle(f"Figure 3 — {_describe(first)}: mean ± std over {n_seeds} seed(s) "
                     f"[{first.get('phase')}]")
        figs[_unique(f"fig3__{slug(first.get('cell'))}", figs)] = fig
    return figs


def memorisation_curves(
    hist: pd.DataFrame,
    *,
    metric: str = "test_acc",
    phases: Sequence[str] = FINAL_PHASES,
) -> Dict[str, Figure]:
    """Memorisation: ``metric`` over epochs of every method side by side, mean ± std band
    over seeds, one figure per data set and noise setting that has two methods or more. With
    noisy labels CE's test accuracy rises, then falls as it memorises the wrong labels; the
    robust methods' does not (the paper's Figure 3 argument)."""
    h = hist
    if "phase" in h.columns:
        h = h[h["phase"].isin(list(phases))]
    figs: Dict[str, Figure] = {}
    if h.empty or "epoch" not in h.columns or metric not in h.columns:
        return figs
    scale = percent_scale(h[metric].to_numpy())
    keys = [k for k in ("study", "dataset", "setting") if k in h.columns]
    line_keys = [k for k in ("method", "robust_loss") if k in h.columns]
    for _, g in h.groupby(keys, dropna=False, sort=True):
        g = _ok(g)
        lines = list(g.groupby(line_keys, dropna=False, sort=False))
        if len(lines) < 2:
            continue
        first = g.iloc[0]
        fig = Figure(figsize=(7, 4.2), layout="constrained")
        ax = fig.subplots()
        seeds = []
        for _, lg in lines:
            row = lg.iloc[0]
            seeds.append(lg["path"].nunique() if "path" in lg.columns else 1)
            _epoch_band(ax, lg, metric, scale, style="-", color=COLORS.get(row.get("method")),
                        label=method_label(row.get("method"), row.get("robust_loss")), alpha=0.15)
        ax.set_title(f"{_metric_label(metric, 1).capitalize()} per epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(_metric_label(metric, scale))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        where = f"{dataset_label(first.get('dataset'))} {setting_label(first.get('setting'))}"
        fig.suptitle(f"Memorisation — {where}: mean ± std over {_span(pd.Series(seeds))} seed(s)")
        figs[_unique(f"memorisation__{slug(first.get('dataset'))}_{slug(first.get('setting'))}",
                     figs)] = fig
    return figs


# ---------------------------------------------------------------------------- Figure 4
def _reference(runs: pd.DataFrame, dataset, setting, method: str, metric: str):
    """(mean, std, n) of the best-seeded cell of a baseline at this data set and setting."""
    r = runs[(runs["method"] == method) & (runs["dataset"] == dataset) & (runs["setting"] == setting)]
    if "phase" in r.columns:
        r = r[r["phase"] != SEARCH]
    if r.empty:
        return None
    a = aggregate(r, metric, phases=None)
    a = a[a["n"] > 0].sort_values(["n", "mean"], ascending=False)
    return None if a.empty else a.iloc[0]


def sensitivity(
    runs: pd.DataFrame,
    *,
    param: str = "m",
    metric: str = "test_acc",
    references: Sequence[str] = ("ce", "gce"),
) -> Dict[str, Figure]:
    """Figure 4: ``metric`` against ``param`` (mean ± std band over seeds), one figure per
    data set, setting and method where ``param`` takes two or more values; trials of phase
    ``sweep`` when there are any, else evaluation and plain runs. Horizontal lines give the CE
    and GCE levels at the same data set and setting when those methods are in ``runs``.
    Points from fewer seeds than asked for are drawn hollow."""
    figs: Dict[str, Figure] = {}
    if runs.empty or param not in runs.columns or metric not in runs.columns:
        return figs
    src = runs[runs["phase"] == SWEEP] if (runs["phase"] == SWEEP).any() \
        else runs[runs["phase"].isin(list(FINAL_PHASES))]
    src = src[pd.to_numeric(src[param], errors="coerce").notna()]
    scale = percent_scale(runs[metric])
    gkeys = [k for k in ("study", "dataset", "setting", "method", "robust_loss") if k in src.columns]
    for _, g in src.groupby(gkeys, dropna=False, sort=True):
        if g["method"].iloc[0] in references and g["method"].iloc[0] not in LCI_METHODS:
            continue
        a = aggregate(g.assign(**{param: pd.to_numeric(g[param])}), metric, by=[param], phases=None)
        a = a[a["n"] > 0].sort_values(param)
        if len(a) < 2:
            continue
        first = g.iloc[0]
        x, mean, std = a[param].to_numpy(float), a["mean"].to_numpy() * scale, \
            a["std"].fillna(0).to_numpy() * scale
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.subplots()
        ax.fill_between(x, mean - std, mean + std, color=COLORS["theta_star"], alpha=0.2, lw=0,
                        label="± std over seeds")
        ax.plot(x, mean, "-", color=COLORS["theta_star"], lw=1.8,
                label=f"{method_label(first['method'], first.get('robust_loss'))} (mean)")
        full = a["complete"].to_numpy(bool)
        ax.plot(x[full], mean[full], "o", color=COLORS["theta_star"])
        if (~full).any():
            ax.plot(x[~full], mean[~full], "o", mfc="white", color=COLORS["theta_star"],
                    label="fewer seeds than asked")
        for ref in references:
            r = _reference(runs, first["dataset"], first["setting"], ref, metric)
            if r is None:
                continue
            c = COLORS.get(ref, "black")
            ax.axhline(r["mean"] * scale, color=c, ls="--", lw=1.4,
                       label=f"{ref.upper()} ({int(r['n'])} seeds)")
            if math.isfinite(r["std"]):
                ax.axhspan((r["mean"] - r["std"]) * scale, (r["mean"] + r["std"]) * scale,
                           color=c, alpha=0.08, lw=0)
        ax.set_xlabel("m (shift of the label-confidence mapping)" if param == "m" else param)
        ax.set_ylabel(_metric_label(metric, scale))
        ax.set_title(f"Figure 4 — {_describe(first)}: {metric} vs {param}\n"
                     f"mean ± std over seeds (n = {_span(a['n'])} per point)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        name = f"fig4__{slug(default_cell(first))}"
        figs[_unique(name, figs)] = fig
    return figs


# ---------------------------------------------------------------------------- Optuna search
def _search_params(g: pd.DataFrame) -> List[str]:
    """Searched parameters: ``search_params`` of the cell (or the study) in study.json, else
    the config columns that vary."""
    sdir = g["study_dir"].dropna().iloc[0] if "study_dir" in g.columns and g["study_dir"].notna().any() else None
    if sdir:
        try:
            spec = json.loads((Path(sdir) / STUDY_FILE).read_text())
            params = spec.get("search_params") or []
            for c in spec.get("cells") or []:          # the cell's own list, when it has one
                if isinstance(c, dict) and c.get("id") == g["cell"].iloc[0] and c.get("search_params"):
                    params = c["search_params"]
            params = [str(p).replace("/", ".") for p in params]
            if params:
                return [p for p in params if p in g.columns]
        except (OSError, ValueError):
            pass
    cfg = g.attrs.get("config_columns") or []
    return [c for c in cfg if c in g.columns and c != "seed" and c not in RUNTIME_KEYS
            and g[c].nunique(dropna=True) > 1]


def _study_matches(name: str, cell: str) -> bool:
    """An Optuna study name that is the cell id or ends with it after a separator."""
    return name == cell or any(name.endswith(sep + cell) for sep in ("__", "/", ":", "."))


#: Seed of the fANOVA random forest, so a report redrawn from the same database is the same.
FANOVA_SEED = 0


def _optuna_importances(g: pd.DataFrame, only_cell: bool = False) -> Optional[Tuple[Dict[str, float], str]]:
    """fANOVA importances from an ``optuna.db`` next to the trials, or None. ``only_cell``:
    this is the only searched cell, so a database holding one study is taken as its.

    The evaluator is named (Optuna's default changed to PED-ANOVA in Optuna 5) and seeded."""
    cell = str(g["cell"].iloc[0])
    dbs = []
    for col, up in (("study_dir", 0), ("path", 1)):
        if col in g.columns:
            for p in g[col].dropna().unique():
                d = Path(p)
                for _ in range(up):
                    d = d.parent
                if (d / "optuna.db").is_file() and d / "optuna.db" not in dbs:
                    dbs.append(d / "optuna.db")
    if not dbs:
        return None
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for db in dbs:
        url = f"sqlite:///{db}"
        try:
            names = optuna.get_all_study_names(storage=url)
            hits = [n for n in names if _study_matches(n, cell)]
            if not hits and len(names) == 1 and only_cell:
                hits = names
            if not hits:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study = optuna.load_study(study_name=min(hits, key=len), storage=url)
                evaluator = optuna.importance.FanovaImportanceEvaluator(seed=FANOVA_SEED)
                imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
            return {k.replace("/", "."): float(v) for k, v in imp.items()}, \
                f"fANOVA (Optuna, seed {FANOVA_SEED}, {db.name})"
        except Exception as e:  # a locked, old or foreign database: fall back, say why
            warnings.warn(f"optuna importances from {db} failed: {e}", stacklevel=3)
    return None


def spearman_importances(g: pd.DataFrame, params: Sequence[str], metric: str = "val_acc") -> Dict[str, float]:
    """|Spearman ρ| of each numeric parameter with ``metric`` over finished trials."""
    y = pd.to_numeric(g[metric], errors="coerce")
    out = {}
    for p in params:
        x = pd.to_numeric(g[p], errors="coerce")
        ok = x.notna() & y.notna()
        if ok.sum() < 3 or x[ok].nunique() < 2 or y[ok].nunique() < 2:
            continue
        out[p] = float(abs(x[ok].corr(y[ok], method="spearman")))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def search_history(runs: pd.DataFrame, *, metric: str = "val_acc") -> Dict[str, Figure]:
    """The Optuna search of each cell: ``metric`` of every search trial in the order the
    trials started, with the running best, and the importance of each searched parameter
    (fANOVA from ``optuna.db`` when present, else |Spearman ρ|; the title says which)."""
    figs: Dict[str, Figure] = {}
    if runs.empty or "phase" not in runs.columns:
        return figs
    s = runs[runs["phase"] == SEARCH]
    for _, g in s.groupby([k for k in ("study", "cell") if k in s.columns], dropna=False, sort=True):
        g = g.copy()
        g.attrs = runs.attrs
        sort = [c for c in ("started", "trial_id", "path") if c in g.columns]
        g = g.sort_values(sort, na_position="last", kind="stable").reset_index(drop=True)
        order = np.arange(1, len(g) + 1)
        y = pd.to_numeric(g[metric], errors="coerce") if metric in g.columns else pd.Series(np.nan, index=g.index)
        scale = percent_scale(y)
        ok = (g["status"] == FINISHED).to_numpy() if "status" in g.columns else np.ones(len(g), bool)
        first = g.iloc[0]
        fig = Figure(figsize=(12, 4.2), layout="constrained")
        ax, bx = fig.subplots(1, 2, width_ratios=[1.6, 1])
        yv = (y * scale).to_numpy()
        ax.plot(order[ok], yv[ok], "o", color=COLORS["theta_star"], label="finished trial")
        if (~ok).any():
            bad = np.where(np.isfinite(yv), yv, np.nanmin(yv[ok]) if ok.any() and np.isfinite(yv[ok]).any() else 0)
            ax.plot(order[~ok], bad[~ok], "x", color=COLORS["theta"], ms=8,
                    label="failed / unfinished trial (last value)")
        best = pd.Series(np.where(ok, yv, np.nan)).cummax()
        ax.step(order, best, where="post", color="black", lw=1.4, label="best so far")
        ax.set_xlabel("trial (in order of start)")
        ax.set_ylabel(_metric_label(metric, scale))
        ax.set_title(f"Optimization history — {len(g)} trials")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)

        params = _search_params(g)
        res = _optuna_importances(g, only_cell=s["cell"].nunique() == 1)
        if res is None:
            imp, how = spearman_importances(g[ok], params, metric), f"|Spearman ρ| with {metric}"
        else:
            imp, how = res
        if imp:
            names = list(imp)[::-1]
            bx.barh(names, [imp[n] for n in names], color=COLORS["gce"])
            bx.set_xlim(0, max(1.0, max(imp.values())))
        else:
            bx.text(0.5, 0.5, "not enough finished trials", ha="center", va="center",
                    transform=bx.transAxes)
        bx.set_xlabel(how)
        bx.set_title(f"Parameter importance — {how}", fontsize=10)
        bx.grid(alpha=0.3, axis="x")
        fig.suptitle(f"Optuna search — {first.get('study') or ''} {first.get('cell')}".strip())
        figs[_unique(f"search__{slug(first.get('cell'))}", figs)] = fig
    return figs


# ---------------------------------------------------------------------------- label confidence
def auroc(scores: Iterable[float], positive: Iterable[bool]) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` (ties count one half); NaN when
    one class is missing. The same scikit-learn call as ``conf_auroc`` in ``lci.metrics``
    (not imported from there: that module loads torch, and analysis only reads files)."""
    from sklearn.metrics import roc_auc_score

    s = np.asarray(list(scores), dtype=float)
    pos = np.asarray(list(positive), dtype=bool)
    if pos.all() or not pos.any():
        return float("nan")
    return float(roc_auc_score(pos, s))


def _bool(s: pd.Series) -> pd.Series:
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "1.0", "yes"])


def confidence_histograms(
    runs: pd.DataFrame,
    *,
    phases: Sequence[str] = FINAL_PHASES,
    bins: int = 40,
) -> Dict[str, Figure]:
    """Histograms of the label confidence C of clean and noisy training samples, pooled over
    the seeds of each cell, from each trial's ``label_issues.csv``; the title gives the AUROC
    of C for telling clean from noisy."""
    figs: Dict[str, Figure] = {}
    if runs.empty or "label_issues" not in runs.columns:
        return figs
    r = runs[runs["label_issues"].notna()]
    if "phase" in r.columns:
        r = r[r["phase"].isin(list(phases))]
    keys = [k for k in CELL_KEYS if k in r.columns]
    for _, g in r.groupby(keys, dropna=False, sort=True):
        g = _ok(g)
        parts = []
        for p in g["label_issues"]:
            try:
                parts.append(pd.read_csv(p))
            except (OSError, ValueError) as e:
                warnings.warn(f"cannot read {p}: {e}", stacklevel=2)
        parts = [p for p in parts if "label_confidence" in p.columns]
        if not parts:
            continue
        li = pd.concat(parts, ignore_index=True)
        conf = pd.to_numeric(li["label_confidence"], errors="coerce")
        first = g.iloc[0]
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.subplots()
        lo, hi = float(np.nanmin(conf)), float(np.nanmax(conf))
        edges = np.linspace(min(0.0, lo), max(1.0, hi), bins + 1)
        title = f"Label confidence — {_describe(first)} ({len(parts)} seed(s))"
        if "is_noisy" in li.columns:
            noisy = _bool(li["is_noisy"])
            ax.hist(conf[~noisy].dropna(), bins=edges, density=True, alpha=0.55,
                    color=COLORS["clean"], label=f"clean labels (n = {int((~noisy).sum())})")
            ax.hist(conf[noisy].dropna(), bins=edges, density=True, alpha=0.55,
                    color=COLORS["noisy"], label=f"noisy labels (n = {int(noisy.sum())})")
            title += f"\nAUROC (clean vs noisy) = {auroc(conf.fillna(-1), ~noisy):.3f}"
        else:
            ax.hist(conf.dropna(), bins=edges, density=True, alpha=0.7, color=COLORS["theta_star"],
                    label=f"all samples (n = {len(conf)}; clean/noisy unknown)")
        ax.set_xlabel("label confidence C")
        ax.set_ylabel("density")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", fontsize=8)
        figs[_unique(f"confidence__{slug(first.get('cell'))}", figs)] = fig
    return figs
