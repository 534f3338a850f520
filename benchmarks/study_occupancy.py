"""How busy a study keeps its trial slots.

Runs a study of many small cells (4 methods x 3 noise settings = 12 cells by default, 2 seeds,
no search, 6 epochs on digits) on local Ray with ``--slots`` CPUs, one trial per CPU, twice:
with experiments running at once (the study scheduler) and one experiment at a time (the
order the runner used before; ``--no-sequential`` skips it). From the trials' own start and
end times (Tune's ``timestamp`` of the first and last result, less the first iteration):

- ``occupancy`` = Σ trial durations ÷ (slots × (last trial end − first trial start));
- ``wall_s`` against ``ideal_s`` = Σ trial durations ÷ slots.

    python benchmarks/study_occupancy.py [--slots 4] [--epochs 6] [--seeds 2] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Dict, List, Tuple

METHODS = ["ce", "gce", "sce", "lci"]
NOISE = ["sym:0.8", "asym:0.4", "sym:0.4"]


def trial_spans(study_dir: str) -> List[Tuple[float, float]]:
    """(start, end) wall-clock times of every trial of a study folder."""
    from study.trials import read_study_trials

    spans = []
    for rec in (r for recs in read_study_trials(study_dir).values() for r in recs):
        lines = rec.results()
        if lines:
            spans.append((lines[0]["timestamp"] - lines[0].get("time_this_iter_s", 0.0),
                          lines[-1]["timestamp"]))
    return spans


def occupancy(spans: List[Tuple[float, float]], slots: int) -> Dict[str, float]:
    busy = sum(e - s for s, e in spans)
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return {"trials": len(spans), "busy_slot_s": round(busy, 2), "wall_s": round(wall, 2),
            "ideal_s": round(busy / slots, 2), "occupancy": round(busy / (slots * wall), 4),
            "wall_over_ideal": round(wall / (busy / slots), 3)}


def run(args, sequential: bool) -> Dict[str, float]:
    import ray

    from study.connect import connect
    from study.preflight import check_resources
    from study.runner import StudyRunner
    from study.spec import load_spec

    storage = tempfile.mkdtemp(prefix="lci-occupancy-")
    spec = load_spec({
        "name": "occupancy", "storage": storage,
        "fixed": {"dataset": "digits", "epochs": args.epochs, "eval_train": False},
        "noise": NOISE[:args.noise], "methods": METHODS, "robust_losses": ["gce"],
        "evaluation": {"seeds": args.seeds}, "resources": {"cpu": 1, "gpu": 0},
    })
    connect(None, num_cpus=args.slots)
    try:
        runner = StudyRunner(spec, echo=lambda s: None, max_experiments=1 if sequential else None)
        runner.slots = check_resources(spec)
        runner.prepare()
        t0 = time.perf_counter()
        runner.run()
        driver_wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    res = occupancy(trial_spans(spec.study_dir), args.slots)
    res.update(cells=len(spec.cells), driver_wall_s=round(driver_wall, 2))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=4, help="local Ray CPUs = trial slots")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--noise", type=int, default=3, choices=[1, 2, 3],
                    help="noise settings (cells = 4 methods x this)")
    ap.add_argument("--no-sequential", dest="sequential", action="store_false",
                    help="skip the one-experiment-at-a-time comparison run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    out = {"slots": args.slots, "concurrent": run(args, sequential=False)}
    if args.sequential:
        out["sequential"] = run(args, sequential=True)
    c = out["concurrent"]
    print(f"{c['cells']} cells, {c['trials']} trials x {args.epochs} epochs on {args.slots} slots")
    print(f"{'experiments':<22} {'occupancy':>9} {'wall s':>8} {'ideal s':>8} {'wall/ideal':>10}")
    for name in ("concurrent", "sequential"):
        if name in out:
            r = out[name]
            label = "at once" if name == "concurrent" else "one at a time"
            print(f"{label:<22} {r['occupancy']:>9.2f} {r['wall_s']:>8.1f} {r['ideal_s']:>8.1f} "
                  f"{r['wall_over_ideal']:>10.2f}")
    if "sequential" in out:
        out["speedup"] = round(out["sequential"]["wall_s"] / c["wall_s"], 3)
        print(f"speed-up of the study: {out['speedup']:.2f}x")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
