"""``lci sweep`` and ``lci demo`` (dispatched here by lci_study/cli.py, which turns every
:class:`~lci.errors.LCIError` into one line on stderr and exit status 2)."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import List, Optional

from lci.errors import LCIError

from .cost import check_budget
from .spec import load_spec, preset_names
from .trials import STUDY_FILE


def _sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lci sweep",
        description="Run a study (Optuna search per cell, evaluation over seeds, optional sweep) "
                    "on Ray Tune: local Ray, or an existing cluster with --address.")
    p.add_argument("spec", help="study spec YAML, or a preset name: " + ", ".join(preset_names()))
    p.add_argument("--address", help="Ray cluster address (e.g. 'auto' on a cluster's head "
                   "node, or HOST:6379); default: start Ray on this machine")
    p.add_argument("--storage", help="where experiments go (overrides the spec's storage; "
                   "an absolute path, or s3://bucket/folder on a cluster)")
    p.add_argument("--name", help="study name (overrides the spec's)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted study: finished phases and trials are kept")
    p.add_argument("--max-concurrent", type=int, metavar="N",
                   help="run at most N trials at once (overrides the spec)")
    p.add_argument("--num-cpus", type=int, metavar="N",
                   help="CPUs of the local Ray (default: all); ignored with --address")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the spec and print the cells, searched parameters and trial "
                        "counts without starting Ray")
    return p


def check_counts(args: argparse.Namespace, *names: str) -> None:
    """Command-line counts (``--num-cpus``, ``--max-concurrent``) are at least 1: one line
    and exit 2 here, not a Ray traceback later."""
    for name in names:
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise LCIError(f"--{name.replace('_', '-')}={v}: must be a whole number of at least 1")


def sweep_main(argv: List[str]) -> int:
    args = _sweep_parser().parse_args(argv)
    check_counts(args, "max_concurrent", "num_cpus")
    spec = load_spec(args.spec, storage=args.storage, name=args.name)
    if args.max_concurrent:
        spec.max_concurrent = args.max_concurrent
    if args.dry_run:
        print(dry_run(spec, num_cpus=args.num_cpus))
        check_budget(spec)  # after the cost lines, which say by how much
        return 0
    return _run(spec, address=args.address, resume=args.resume, num_cpus=args.num_cpus)


def dry_run(spec, num_cpus: Optional[int] = None) -> str:
    """The spec checked as a real run would check it (data sets of every cell included),
    and the graph of experiments with the study's width; starts nothing, writes nothing."""
    from .cost import study_cost
    from .graph import build_graph, describe_graph
    from .protocol_view import describe as describe_settings
    from .preflight import check_datasets

    notes = [f"data: {w}" for w in check_datasets(spec, named_sets_here=False)]
    slots = int(num_cpus // spec.cpu) if num_cpus and spec.cpu and not spec.gpu else None
    return "\n".join([spec.describe(), describe_settings(spec),
                      describe_graph(build_graph(spec), spec.max_concurrent, slots),
                      study_cost(spec).describe(), *notes])


def _run(spec, *, address=None, resume=False, num_cpus=None, reading=None) -> int:
    """Run the study and print its table (and ``reading(summary)``: what to read from it)."""
    from .runner import StorageFull, StudyInterrupted, run_study

    t0 = time.time()
    try:
        summary = run_study(spec, address=address, resume=resume, num_cpus=num_cpus)
    except StorageFull as e:
        print(f"lci sweep: {e}", file=sys.stderr)
        return 1
    except StudyInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        # 143 = 128 + SIGTERM, as shells report a job stopped by `kill`; 130 for Ctrl-C
        return 143 if getattr(e, "signal", None) == signal.SIGTERM else 130
    print()
    print(summary.table())
    if reading is not None:
        print(reading(summary))
    print(f"wall time {time.time() - t0:.0f}s")
    return 1 if summary.errors else 0


def _demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lci demo",
        description="The embedded-default study end to end on digits (scikit-learn's 8x8 "
                    "digits, no download): CE, GCE and LCI at sym-0.8 and asym-0.4 over 3 "
                    "seeds, where CE memorises the wrong labels and LCI does not; a small "
                    "Optuna search of m and lam, an m sweep, then the report. About 3 minutes "
                    "on 2 CPU cores. Run again to print the results (finished phases are kept).")
    p.add_argument("--out", default=os.path.join("results", "demo"),
                   help="study folder (default: ./results/demo)")
    p.add_argument("--num-cpus", type=int, metavar="N", help="CPUs of the local Ray (default: all)")
    return p


def demo_main(argv: List[str]) -> int:
    args = _demo_parser().parse_args(argv)
    check_counts(args, "num_cpus")
    out = os.path.abspath(args.out)
    spec = load_spec("demo", storage=os.path.dirname(out), name=os.path.basename(out))
    resume = os.path.isfile(os.path.join(out, STUDY_FILE))
    rc = _run(spec, resume=resume, num_cpus=args.num_cpus, reading=demo_reading)
    if rc == 130:
        return rc
    report_path = make_report(out)
    if report_path:
        print(f"report: {report_path}")
    return rc


#: the demo's headline setting: the paper's hardest symmetric rate, where CE memorises
DEMO_NOISE = "sym:0.8"


def demo_reading(summary) -> str:
    """One line under the demo's table: LCI against CE and GCE at :data:`DEMO_NOISE`."""
    acc = {c["method"]: c.get(summary.metric, {}) for c in summary.cells
           if c.get("noise") == DEMO_NOISE}
    mean = {m: 100 * a["mean"] for m, a in acc.items() if a.get("n")}
    if not {"lci", "ce", "gce"} <= set(mean):
        return f"read: the lci, ce and gce rows at {DEMO_NOISE} (some have no finished trial yet)"
    return (f"read: at {DEMO_NOISE} LCI {mean['lci']:.1f} % vs CE {mean['ce']:.1f} % "
            f"({mean['lci'] - mean['ce']:+.1f} points) and GCE {mean['gce']:.1f} %: CE memorises "
            "the wrong labels (its test accuracy peaks, then falls: the report's Memorisation "
            "figure), LCI keeps near its peak")


def make_report(study_dir: str) -> Optional[str]:
    """``analysis.report`` over the study, when analysis/ provides it."""
    try:
        from analysis import report
    except (ImportError, AttributeError):
        print("(analysis.report is not available: no report written)")
        return None
    try:
        return str(report([study_dir], out_dir=os.path.join(study_dir, "report")))
    except Exception as e:  # the study's results stand without the report
        print(f"(the report failed: {type(e).__name__}: {e})", file=sys.stderr)
        return None
