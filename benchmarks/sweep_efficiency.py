"""How much of a study's wall time goes into training, and how much into Ray Tune and Optuna.

Runs a real study of 16 short LCI trials on digits on local Ray (14 Optuna-searched trials +
2 evaluation seeds), with one trial per CPU. Then, from the trials' own results:

- ``train_fraction``  = Σ time inside the trainable (Tune's ``time_total_s``: building the
  trainer, the epochs, evaluation, checkpoints) / (study wall time × trial slots);
- ``loop_fraction``   = the same with only the epochs' training loops (``epoch_s``);
- ``trials_per_min``  = trials / study wall time.

The study wall time starts after ``ray.init`` (Ray's start-up, a few seconds once per
session, is printed separately).

    python benchmarks/sweep_efficiency.py [--trials 16] [--epochs 20] [--cpus 2] [--json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time


def trial_times(study_dir: str):
    """(time in trainable, time in training loops) of every finished trial."""
    from study.trials import read_study_trials

    out = []
    for rec in (r for recs in read_study_trials(study_dir).values() for r in recs):
        lines = rec.results()
        if not lines:
            continue
        out.append((lines[-1]["time_total_s"], sum(r.get("epoch_s", 0.0) for r in lines)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=20, help="per trial (the demo's length)")
    ap.add_argument("--cpus", type=int, default=2, help="Ray CPUs = concurrent trials")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import ray

    from study.connect import connect
    from study.runner import StudyRunner
    from study.spec import load_spec

    storage = tempfile.mkdtemp(prefix="lci-sweep-eff-")
    spec = load_spec({
        "name": "efficiency",
        # a study's trial as `lci sweep` runs it: per-epoch evaluation on the training set
        # (Figure 3 metrics, label confidence) included, a checkpoint every 4 epochs
        "fixed": {"dataset": "digits", "epochs": args.epochs, "checkpoint_every": 4},
        "noise": ["sym:0.8"], "methods": ["lci"], "robust_losses": ["gce"],
        "search": {"trials": args.trials - 2, "metric": "val_acc", "mode": "max", "seed": 0,
                   "val_fraction": 0.1},
        "evaluation": {"seeds": 2},
        "resources": {"cpu": 1, "gpu": 0},
        "storage": storage,
    })
    t0 = time.perf_counter()
    connect(None, num_cpus=args.cpus)
    ray_start = time.perf_counter() - t0
    runner = StudyRunner(spec, echo=lambda s: None)
    runner.prepare()
    t1 = time.perf_counter()
    runner.run()
    wall = time.perf_counter() - t1
    ray.shutdown()

    times = trial_times(spec.study_dir)
    slots = args.cpus
    in_trainable = sum(t for t, _ in times)
    in_loop = sum(t for _, t in times)
    res = {
        "trials": len(times), "epochs": args.epochs, "slots": slots,
        "wall_s": round(wall, 2), "ray_start_s": round(ray_start, 2),
        "train_fraction": round(in_trainable / (wall * slots), 4),
        "loop_fraction": round(in_loop / (wall * slots), 4),
        "trials_per_min": round(len(times) / wall * 60, 2),
    }
    print(f"{res['trials']} trials x {args.epochs} epochs on {slots} slots: study wall "
          f"{wall:.1f} s (+ Ray start {ray_start:.1f} s)")
    print(f"time in trainables: {res['train_fraction']:.1%} of slot time "
          f"(training loops alone: {res['loop_fraction']:.1%}); "
          f"{res['trials_per_min']:.1f} trials/min")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
