"""CE, GCE and LCI (default settings) on digits at sym-80 and asym-40 over five seeds.

Prints mean ± std of the final test accuracy (θ* for LCI) and of LCI's noise-robust model θ.
Runs two trainings at a time with one torch thread each (2-core machines).

    python benchmarks/digits_table.py [--seeds 5] [--workers 2] [--json]
"""
from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

METHODS = ("ce", "gce", "lci")
NOISES = ("sym:0.8", "asym:0.4")


def run_one(job):
    method, noise, seed = job
    import torch

    import lci
    from lci.config import TrainConfig

    torch.set_num_threads(1)
    cfg = TrainConfig(dataset="digits", method=method, noise=noise, seed=seed, device="cpu",
                      eval_train=False, threads=1)
    res = lci.fit(cfg)
    return method, noise, seed, res["test_acc"], res.get("robust_test_acc")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args()

    jobs = [(m, n, s) for n in NOISES for m in METHODS for s in range(args.seeds)]
    t0 = time.time()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run_one, jobs))
    wall = time.time() - t0

    rows = []
    print(f"digits, {args.seeds} seeds, final-epoch test accuracy (mean ± std)")
    print(f"{'method':<8}" + "".join(f"{n:>22}" for n in NOISES))
    for m in METHODS:
        line, cells = f"{m:<8}", {}
        for n in NOISES:
            acc = np.array([r[3] for r in results if r[0] == m and r[1] == n]) * 100
            cells[n] = (acc.mean(), acc.std())
            line += f"{acc.mean():>15.2f} ± {acc.std():4.2f}"
            rows.append({"method": m, "noise": n, "mean": acc.mean(), "std": acc.std(),
                         "n": len(acc)})
        print(line)
        if m == "lci":
            line = f"{'lci θ':<8}"
            for n in NOISES:
                acc = np.array([r[4] for r in results if r[0] == m and r[1] == n]) * 100
                line += f"{acc.mean():>15.2f} ± {acc.std():4.2f}"
                rows.append({"method": "lci(robust θ)", "noise": n, "mean": acc.mean(),
                             "std": acc.std(), "n": len(acc)})
            print(line)
    best = {n: max((r for r in rows if r["noise"] == n and r["method"] in METHODS),
                   key=lambda r: r["mean"])["method"] for n in NOISES}
    print(f"best mean: " + ", ".join(f"{n}: {b}" for n, b in best.items()) + f"   ({wall:.0f} s)")
    if args.json:
        print(json.dumps({"rows": rows, "best": best, "wall_s": wall}))


if __name__ == "__main__":
    main()
