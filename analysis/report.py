"""``analysis.report``: every table and figure of finished experiments, linked from report.md."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Union

import pandas as pd

from study.trials import FINISHED

from .figures import (confidence_histograms, memorisation_curves, save_figure, search_history,
                      sensitivity, training_curves)
from .folders import Paths
from .frames import NoRunsFound, history, load
from .provenance import check_tables, data_table, provenance_table
from .stats import ALPHA, POWER, aggregate, min_signflip_seeds
from .tables import MARK_BOTH, MARK_T, Table, table1, table2

_SECTIONS = [  # (heading, figure function, what it shows)
    ("Memorisation — test accuracy of every method over epochs", "memorisation",
     "Test accuracy per epoch of each method at one noise setting, mean ± std band over seeds. "
     "CE's rises, then falls as it memorises the wrong labels; LCI's keeps close to its peak "
     "(the argument of the paper's Figure 3)."),
    ("Figure 3 — training curves of θ and θ*", "curves",
     "Per-epoch test accuracy and accuracy on clean and noisy training samples, mean ± std "
     "band over seeds; θ* solid, θ dashed."),
    ("Figure 4 — sensitivity to m", "sensitivity",
     "Test accuracy against the shift m of the confidence mapping, mean ± std over seeds, with "
     "CE and GCE levels where present."),
    ("Optuna searches", "searches",
     "Validation accuracy (noisy labels) of each search trial in order of start with the running "
     "best, and the importance of each searched parameter."),
    ("Label confidence of clean and noisy samples", "confidence",
     "Histogram of the final label confidence C from each trial's label_issues.csv, pooled over "
     "seeds."),
]


def _as_list(paths: Paths) -> List[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _md_frame(df: pd.DataFrame, floatfmt: str = "{:.4g}") -> str:
    """A small frame as a Markdown table (no tabulate dependency)."""
    if df.empty:
        return "_none_\n"
    def fmt(v):
        if isinstance(v, float):
            return "" if pd.isna(v) else floatfmt.format(v)
        return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v).replace("|", "\\|")
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _num(v: float, fmt: str = "{:.2f}") -> str:
    return "" if pd.isna(v) else fmt.format(v)


def statistics_frame(t: Table) -> pd.DataFrame:
    """Every entry of ``t`` with its 95% interval of the mean, and its paired comparison with
    the best baseline of its column (see :func:`analysis.tables.compare_to_best_baseline`)."""
    rows = []
    for e in t.cells.itertuples(index=False):
        rows.append({
            "setting": t.column_labels.get(e.column, e.column), "method": e.row, "n": e.n,
            "mean": _num(e.mean), "95% CI": f"[{_num(e.ci_low)}, {_num(e.ci_high)}]"
            if pd.notna(e.ci_low) else "",
            "vs": e.vs, "paired seeds": "" if pd.isna(e.n_paired) else int(e.n_paired),
            "difference [95% CI]": "" if pd.isna(e.diff) else
            f"{e.diff:+.2f} [{_num(e.diff_ci_low, '{:+.2f}')}, {_num(e.diff_ci_high, '{:+.2f}')}]",
            "p (t-test)": _num(e.p_t, "{:.3g}"), "p (sign-flip)": _num(e.p_signflip, "{:.3g}"),
            "P(improve)": _num(e.p_improve),
            "seeds needed": "" if pd.isna(e.seeds_needed) else
            ("> 1000" if e.seeds_needed == float("inf") else str(int(e.seeds_needed))),
            "": e.marker,
        })
    return pd.DataFrame(rows)


def _statistics_text(t: Table) -> List[str]:
    n = t.cells["n_paired"].dropna()
    most = int(n.max()) if len(n) else 5
    n_text = f"{2 / 2 ** most:.4g} for {most}; " if most != 5 else ""
    return [
        f"Per entry the 95% t-interval of the mean over seeds; and against the best baseline "
        f"of its column (`vs`), paired by seed (the same seed gives every method the same noisy "
        f"labels and data order): the mean difference in points with its 95% interval, the "
        f"two-sided paired t-test p, the exact sign-flip permutation p, and P(improve), the "
        f"share of seeds where the method beats the baseline. {MARK_T} in the table: t-test "
        f"p < {ALPHA:g}; {MARK_BOTH}: the sign-flip test too. With n paired seeds the exact "
        f"sign-flip test cannot go below p = 2/2^n ({n_text}0.0625 for 5), "
        f"so it needs at least {min_signflip_seeds()} seeds to reach {ALPHA:g}. *Seeds "
        f"needed*: the fewest seeds at which a paired t-test detects a difference of the "
        f"observed size and seed-to-seed spread with {POWER:.0%} power at {ALPHA:g} "
        f"(and at least {min_signflip_seeds()}).", ""]


def provenance_section(runs: pd.DataFrame, tables, out: Path) -> List[str]:
    """The report's provenance tables (also ``out/provenance.csv``) and its warnings (also
    issued as :class:`~analysis.provenance.ProvenanceWarning`)."""
    found = check_tables(runs, tables)
    prov = provenance_table(runs)
    prov.to_csv(out / "provenance.csv", index=False)
    md = ["## Provenance", "",
          "Code version (`version commit`, `+dirty`: uncommitted changes), software, device and "
          "host of the runs (from each run's `result.json`, key `provenance`; `unknown`: runs "
          "that record none); also as [provenance.csv](provenance.csv).", "", _md_frame(prov),
          "Training data per data set (sha256 of the arrays, or of the image file list with "
          "sizes; first 12 hex digits):", "", _md_frame(data_table(runs))]
    if found:
        md += ["**Warnings**", ""] + [f"- {w}" for w in found] + [""]
    elif not any(c.startswith("provenance.") for c in runs.columns):
        md += ["No run records its provenance (runs written before it was recorded): code "
               "versions, data and noisy labels cannot be checked.", ""]
    else:
        md += ["Within each table, all runs share one code version and one copy of each data "
               "set, and runs of one seed and noise setting trained on the same noisy labels.", ""]
    return md


def report(experiment_dirs: Paths, out_dir: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Tables (Markdown, CSV, LaTeX), figures (PNG, SVG) and ``report.md`` for the Tune
    experiments and ``lci train`` runs under ``experiment_dirs``; returns the path of
    ``report.md``. ``out_dir`` defaults to ``<first dir>/report``. Raises
    :class:`FileNotFoundError` for a missing folder and :class:`NoRunsFound` when nothing is
    found."""
    dirs = _as_list(experiment_dirs)
    if not dirs:
        raise NoRunsFound("no experiment folder given")
    out = Path(out_dir) if out_dir is not None else dirs[0] / "report"
    runs = load(dirs)
    if runs.empty:
        raise NoRunsFound("no runs found under " + ", ".join(str(d) for d in dirs)
                          + " (looked for Tune trial folders with params.json and lci train "
                          "folders with config.json + history.csv)")
    hist = history(dirs)
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"

    runs.to_csv(out / "runs.csv", index=False)
    agg = aggregate(runs, "test_acc")
    agg.to_csv(out / "cells.csv", index=False)
    t1, t2 = table1(runs), table2(runs)
    t1.write(out)
    t2.write(out)

    figures = {
        "memorisation": memorisation_curves(hist),
        "curves": training_curves(hist),
        "sensitivity": sensitivity(runs),
        "searches": search_history(runs),
        "confidence": confidence_histograms(runs),
    }
    written: Dict[str, List[str]] = {}
    for key, figs in figures.items():
        written[key] = []
        for name, fig in figs.items():
            save_figure(fig, fig_dir / name)
            written[key].append(name)

    md = [f"# LCI study report", "",
          f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from: "
          + ", ".join(f"`{d}`" for d in dirs), ""]
    counts = (runs.groupby(["phase", "status"], dropna=False).size()
              .unstack("status", fill_value=0).reset_index())
    md += ["## Trials", "", _md_frame(counts),
           "Files: [runs.csv](runs.csv) (one row per trial), [cells.csv](cells.csv) "
           "(test accuracy aggregated per cell over seeds, with 95% t-intervals).", ""]
    bad = runs[runs["status"] != FINISHED]
    if len(bad):
        md += ["### Failed and unfinished trials", "",
               _md_frame(bad[["phase", "cell", "seed", "status", "epochs_done", "error", "path"]]), ""]
    short = agg[~agg["complete"]]
    if len(short):
        md += ["### Cells with fewer seeds than asked for", "",
               "These cells are shown with `(n/N)` in the tables; their mean is over the finished "
               "seeds only.", "",
               _md_frame(short[["phase", "cell", "n", "n_expected", "n_failed", "n_incomplete",
                                "seeds"]]), ""]
    for t in (t1, t2):
        md += [f"## {t.title}", "", t.markdown(),
               f"Also as [CSV]({t.name}.csv) and [LaTeX]({t.name}.tex).", ""]
        if len(t.cells):
            md += [f"### {t.title.split(' — ')[0]}: intervals and paired comparisons", "",
                   *_statistics_text(t), _md_frame(statistics_frame(t)), ""]
    md += provenance_section(runs, (t1, t2), out)
    for heading, key, what in _SECTIONS:
        md += [f"## {heading}", "", what, ""]
        if not written[key]:
            md += ["_No data for this figure in these experiments._", ""]
        for name in written[key]:
            md += [f"![{name}](figures/{name}.png)", "",
                   f"[{name}.svg](figures/{name}.svg)", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
