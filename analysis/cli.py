"""``lci report EXPERIMENT_DIR... [--out DIR]``: the ``lci`` console script calls :func:`main`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lci report",
        description="Tables (Markdown, CSV, LaTeX) and figures (PNG, SVG) from finished Tune "
                    "experiments and lci train runs, linked from report.md.")
    p.add_argument("dirs", nargs="+", metavar="EXPERIMENT_DIR",
                   help="experiment folders, searched recursively for trials and runs")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="where to write the report (default: <first EXPERIMENT_DIR>/report)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``lci report``; ``argv`` without the program name (a leading ``report`` is
    accepted). Returns 0, or 2 with one line on stderr for bad input or no runs."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "report" and not (len(args) == 1 and Path("report").is_dir()):
        args = args[1:]
    try:
        ns = _parser().parse_args(args)
    except SystemExit as e:          # argparse already printed its one-line usage error
        return int(e.code or 0)
    missing = [d for d in ns.dirs if not Path(d).is_dir()]
    if missing:
        print(f"lci report: no such experiment folder: {missing[0]}", file=sys.stderr)
        return 2
    import warnings

    from .frames import NoRunsFound
    from .provenance import ProvenanceWarning
    from .report import report
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ProvenanceWarning)
            path = report(ns.dirs, ns.out)
    except NoRunsFound as e:
        print(f"lci report: {e}", file=sys.stderr)
        return 2
    for w in caught:  # the provenance table and its warnings on stderr; stdout is the path
        if issubclass(w.category, ProvenanceWarning):
            print(f"lci report: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    _print_provenance(path)
    print(path)
    return 0


def _print_provenance(path: Path) -> None:
    """The report's provenance table (``provenance.csv`` beside report.md) on stderr."""
    import pandas as pd

    csv = path.parent / "provenance.csv"
    if not csv.is_file():
        return
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    print("lci report: provenance of the runs:", file=sys.stderr)
    print(table.to_string(index=False), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
