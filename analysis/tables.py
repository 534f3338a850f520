"""The paper's tables from aggregated cells: Markdown, CSV and LaTeX.

Table 1: methods × noise settings. Table 2: GCE, single model, two models and full LCI at
sym-80 and asym-40. Each cell is ``mean ± std`` over seeds of the final-epoch metric in %;
per column the best mean is bold and the second underlined; a cell with fewer finished seeds
than the study asked for shows ``(n/N)``; where the paper published a figure for the same data
set, setting and method it is shown beside ours as ``[paper x]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd

from .paper import (METHOD_ORDER, PAPER_SOURCE, dataset_label, method_label, paper_value,
                    setting_label, setting_sort_key)
from lci.names import BASELINE_METHODS

from .frames import FINAL_PHASES
from .stats import ALPHA, aggregate, min_signflip_seeds, paired, seed_values

TABLE2_METHODS = ["gce", "lci-single", "lci-two-models", "lci"]
TABLE2_SETTINGS = ["sym-0.8", "asym-0.4"]
TABLE2_LABELS = {"gce": "GCE (gce)", "lci-single": "single model (lci-single)",
                 "lci-two-models": "two models (lci-two-models)", "lci": "full LCI (lci)"}
DASH = "—"


def percent_scale(values) -> float:
    """100 when accuracies are stored as fractions (all ≤ 1), else 1."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    return 100.0 if len(v) and float(v.abs().max()) <= 1.0 + 1e-9 else 1.0


@dataclass
class Table:
    """A methods × settings table; ``cells`` is the long, numeric form (one row per entry)."""
    name: str
    title: str
    metric: str
    rows: List[str]
    columns: List[str]
    column_labels: Dict[str, str]
    cells: pd.DataFrame
    scale: float
    row_labels: Dict[str, str] = field(default_factory=dict)   # display names of rows

    # ---------------------------------------------------------------------- cell text
    def _entry(self, row: str, col: str) -> Optional[pd.Series]:
        hit = self.cells[(self.cells["row"] == row) & (self.cells["column"] == col)]
        return hit.iloc[0] if len(hit) else None

    def _parts(self, e: Optional[pd.Series], pm: str):
        """(number text, annotation text, rank) for one entry."""
        if e is None or not (e["n"] > 0):
            note = ""
            if e is not None and e["n_expected"] > 0:
                note = f" (0/{int(e['n_expected'])})"
            return DASH, note, None
        num = f"{e['mean']:.2f}"
        if math.isfinite(e["std"]):
            num += f" {pm} {e['std']:.2f}"
        note = e.get("marker") or ""
        if not e["complete"]:
            note += f" ({int(e['n'])}/{int(e['n_expected'])})"
        if pd.notna(e["paper"]):
            note += f" [paper {e['paper']:.2f}]"
        return num, note, e["rank"]

    def markdown(self) -> str:
        head = ["method"] + [self.column_labels[c] for c in self.columns]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            out = [self.row_labels.get(r, r)]
            for c in self.columns:
                num, note, rank = self._parts(self._entry(r, c), "±")
                if rank == 1:
                    num = f"**{num}**"
                elif rank == 2:
                    num = f"<u>{num}</u>"
                out.append(num + note)
            lines.append("| " + " | ".join(out) + " |")
        return "\n".join(lines) + "\n\n" + self.caption() + "\n"

    def caption(self) -> str:
        unit = "%" if self.scale == 100 or self.metric.endswith("acc") else ""
        datasets = sorted({c.split("|")[0] for c in self.columns})
        on = f" on {dataset_label(datasets[0])}" if len(datasets) == 1 else ""
        return (f"{self.title}{on}: mean ± std over seeds of the final-epoch `{self.metric}`"
                f"{' (' + unit + ')' if unit else ''}; best per column in bold, second "
                f"underlined; (n/N): only n of the N seeds the study asked for finished; "
                f"[paper x]: {PAPER_SOURCE}; {MARK_T}: differs from the best baseline of its "
                f"column, paired by seed, paired t-test p < {ALPHA:g}; {MARK_BOTH}: the exact "
                f"sign-flip test too (it needs at least {min_signflip_seeds()} seeds: with 5 its "
                f"smallest p is 0.0625).")

    def latex(self) -> str:
        def esc(s: str) -> str:
            return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%") \
                    .replace("&", r"\&").replace("#", r"\#")
        lines = [r"\begin{tabular}{l" + "c" * len(self.columns) + "}", r"\toprule",
                 " & ".join(["Method"] + [esc(self.column_labels[c]) for c in self.columns])
                 + r" \\", r"\midrule"]
        for r in self.rows:
            out = [esc(self.row_labels.get(r, r))]
            for c in self.columns:
                num, note, rank = self._parts(self._entry(r, c), r"$\pm$")
                num = "--" if num == DASH else num
                if rank == 1:
                    num = rf"\textbf{{{num}}}"
                elif rank == 2:
                    num = rf"\underline{{{num}}}"
                for mark, tex in ((MARK_BOTH, r"$^\ddagger$"), (MARK_T, r"$^\dagger$")):
                    if note.startswith(mark):
                        note = note[len(mark):]
                        num += tex
                out.append(num + esc(note))
            lines.append(" & ".join(out) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        return self.cells.to_csv(index=False)

    def write(self, out_dir: Path) -> Dict[str, Path]:
        """``<name>.md``, ``<name>.csv`` (long, numeric) and ``<name>.tex`` in ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"md": out_dir / f"{self.name}.md", "csv": out_dir / f"{self.name}.csv",
                 "tex": out_dir / f"{self.name}.tex"}
        paths["md"].write_text(f"## {self.title}\n\n" + self.markdown())
        paths["csv"].write_text(self.to_csv())
        paths["tex"].write_text(self.latex())
        return paths

    def _repr_markdown_(self) -> str:          # shown as a table in notebooks
        return self.markdown()

    def __str__(self) -> str:
        return self.markdown()


def method_table(
    runs: pd.DataFrame,
    *,
    name: str = "table",
    title: str = "Test accuracy",
    metric: str = "test_acc",
    methods: Optional[Sequence[str]] = None,
    settings: Optional[Sequence[str]] = None,
    phases: Sequence[str] = FINAL_PHASES,
    n_expected: Optional[int] = None,
    row_labels: Optional[Dict[str, str]] = None,
) -> Table:
    """Methods (rows) × data set and noise setting (columns) from ``load(...)`` rows.

    ``methods`` fixes the rows (missing ones shown as ``—``); ``settings`` (e.g. ``"sym-0.8"``)
    fixes the columns, for every data set present. Where several configurations of one method
    share a column (e.g. runs at different ``m``), the one with most finished seeds, then the
    highest mean, is shown and ``n_configs`` in the CSV says how many there were.
    """
    agg = aggregate(runs, metric, phases=phases, n_expected=n_expected)
    scale = percent_scale(agg["mean"]) if len(agg) else 100.0
    if len(agg):
        agg = agg.assign(row=[method_label(m, r) for m, r in zip(agg["method"], agg["robust_loss"])],
                         column=[f"{d}|{s}" for d, s in zip(agg["dataset"], agg["setting"])])
    else:
        agg = agg.assign(row=pd.Series(dtype=str), column=pd.Series(dtype=str))
    datasets = sorted({str(d) for d in agg.get("dataset", [])})
    if settings is not None:
        present = [f"{d}|{s}" for d in datasets for s in settings if f"{d}|{s}" in set(agg["column"])]
        columns = present or sorted(set(agg["column"]))
    else:
        columns = sorted(set(agg["column"]))
    columns.sort(key=lambda c: (c.split("|")[0], setting_sort_key(c.split("|", 1)[1])))
    agg = agg[agg["column"].isin(columns)]
    if methods is not None:
        rows = list(methods)
    else:
        found = set(agg["row"])
        rows = [m for m in METHOD_ORDER if m in found] + sorted(found - set(METHOD_ORDER))
    many = len({c.split("|")[0] for c in columns}) > 1
    labels = {c: (f"{dataset_label(c.split('|')[0])} " if many else "")
              + setting_label(c.split("|", 1)[1]) for c in columns}

    records = []
    for col in columns:
        for row in rows:
            g = agg[(agg["row"] == row) & (agg["column"] == col)]
            if not len(g):
                continue
            best = g.sort_values(["n", "mean"], ascending=False, na_position="last").iloc[0]
            dataset, setting = col.split("|", 1)
            paper = paper_value(dataset, setting, best["method"], best["robust_loss"])
            records.append(dict(
                row=row, column=col, dataset=dataset, setting=setting, method=best["method"],
                robust_loss=best["robust_loss"], metric=metric,
                mean=best["mean"] * scale, std=best["std"] * scale,
                ci_low=best["ci_low"] * scale, ci_high=best["ci_high"] * scale,
                n=int(best["n"]), n_expected=int(best["n_expected"]),
                complete=bool(best["complete"]), n_failed=int(best["n_failed"]),
                n_incomplete=int(best["n_incomplete"]), seeds=best["seeds"],
                n_configs=len(g), phase=best.get("phase"), cell=best.get("cell"),
                config_id=best.get("config_id"),
                paper=float(paper) if paper is not None else float("nan"),
            ))
    cells = pd.DataFrame.from_records(records, columns=[
        "row", "column", "dataset", "setting", "method", "robust_loss", "metric", "mean", "std",
        "ci_low", "ci_high", "n", "n_expected", "complete", "n_failed", "n_incomplete", "seeds",
        "n_configs", "phase", "cell", "config_id", "paper"])
    cells = compare_to_best_baseline(cells, runs, metric, scale)
    # rank 1 = best mean in the column, 2 = second (ties share a rank)
    cells["rank"] = (cells.groupby("column")["mean"].rank(method="min", ascending=False)
                     if len(cells) else pd.Series(dtype=float))
    cells["paper"] = cells["paper"].astype(float)
    return Table(name, title, metric, rows, columns, labels, cells, scale, dict(row_labels or {}))


#: Columns :func:`compare_to_best_baseline` adds to a table's cells.
COMPARISON_COLUMNS = ["vs", "n_paired", "diff", "diff_std", "diff_ci_low", "diff_ci_high", "p_t",
                      "p_signflip", "p_improve", "seeds_needed", "marker"]
#: Markers of a significant difference from the best baseline (two-sided, ALPHA).
MARK_T, MARK_BOTH = "†", "‡"


def _cell_seeds(runs: pd.DataFrame, e: pd.Series, metric: str, scale: float) -> Dict[int, float]:
    keys = {k: e[k] for k in ("phase", "cell", "config_id") if k in e.index}
    return {s: v * scale for s, v in seed_values(runs, metric, **keys).items()}


def compare_to_best_baseline(cells: pd.DataFrame, runs: pd.DataFrame, metric: str,
                             scale: float) -> pd.DataFrame:
    """Per column, every entry against the column's best baseline (highest mean among
    :data:`~lci.names.BASELINE_METHODS`), paired by seed (:func:`analysis.stats.paired`):
    ``vs`` (that baseline's row), ``n_paired``, ``diff`` and its interval, ``p_t``,
    ``p_signflip``, ``p_improve``, ``seeds_needed`` (in the table's units: percentage points
    for accuracies) and ``marker``: ``†`` where the paired t-test gives p < ALPHA, ``‡``
    where the exact sign-flip test does too. The best baseline itself and columns without a
    baseline get NaN and no marker."""
    cells = cells.copy()
    for c in COMPARISON_COLUMNS:
        cells[c] = "" if c in ("vs", "marker") else float("nan")
    for col, g in cells.groupby("column", sort=False):
        base = g[g["method"].isin(BASELINE_METHODS) & (g["n"] > 0)]
        if not len(base):
            continue
        best = base.sort_values("mean", ascending=False).iloc[0]
        ref = _cell_seeds(runs, best, metric, scale)
        for i, e in g.iterrows():
            if i == best.name:
                continue
            r = paired(_cell_seeds(runs, e, metric, scale), ref)
            mark = ""
            if r["p_t"] < ALPHA:
                mark = MARK_BOTH if r["p_signflip"] < ALPHA else MARK_T
            for k, v in dict(r, vs=best["row"], marker=mark).items():
                cells.at[i, k] = v
    return cells


def table1(runs: pd.DataFrame, *, metric: str = "test_acc", **kw) -> Table:
    """Table 1: every method present × every data set and noise setting present."""
    return method_table(runs, name="table1", title="Table 1 — methods × label noise",
                        metric=metric, **kw)


def table2(runs: pd.DataFrame, *, metric: str = "test_acc", **kw) -> Table:
    """Table 2: GCE, single model, two models and full LCI × sym-80 / asym-40 (all settings
    present when neither is)."""
    kw.setdefault("methods", TABLE2_METHODS)
    kw.setdefault("settings", TABLE2_SETTINGS)
    kw.setdefault("row_labels", TABLE2_LABELS)
    return method_table(runs, name="table2", title="Table 2 — ablation of LCI", metric=metric, **kw)
