"""``lci train`` and ``lci ensemble``: each a function taking argv and returning an exit status.

The ``lci`` command, whose dispatcher sits above the layers, calls them and turns every
:class:`~lci.errors.LCIError` they raise into one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from typing import List

from .errors import DivergenceError, LCIError
from .outputs import CONFIG_FILE

#: exit status of `lci train` when the loss becomes non-finite (2 is bad input)
EXIT_DIVERGED = 3


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lci train", description="Train one run (LCI or a baseline).")
    p.add_argument("--config", help="YAML/JSON file of TrainConfig keys")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set method=lci --set noise=sym:0.8")
    p.add_argument("--out", help="output folder (default: runs/<time>-<method>-<id>)")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def default_out_dir(method: str) -> str:
    return os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{method}-{uuid.uuid4().hex[:6]}")


def train_main(argv: List[str]) -> int:
    from .config import TrainConfig, load_config_file, parse_set_args

    args = _train_parser().parse_args(argv)
    values = load_config_file(args.config) if args.config else {}
    if args.resume and not args.config and not args.sets and args.out:
        # resuming with no config given: the run's own config.json is the config
        cfg_path = os.path.join(args.out, CONFIG_FILE)
        if os.path.isfile(cfg_path):
            values = load_config_file(cfg_path)
    values.update(parse_set_args(args.sets))
    cfg = TrainConfig.from_dict(values)
    if args.resume and not args.out:
        raise LCIError("--resume needs --out DIR, the folder of the run to continue")
    out = args.out or default_out_dir(cfg.method)

    from tqdm.auto import tqdm

    from .fitloop import fit

    bar = None

    def on_epoch(trainer, m):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=trainer.cfg.epochs, initial=trainer.epoch - 1, unit="epoch",
                       desc=f"{trainer.cfg.method} {trainer.cfg.noise}", disable=args.quiet,
                       dynamic_ncols=True)
        bar.update(1)
        bar.set_postfix(loss=f"{m['loss']:.3f}", test_acc=f"{m['test_acc']:.4f}")

    try:
        res = fit(cfg, out, resume=args.resume, on_epoch=on_epoch)
    except DivergenceError as e:
        # not bad input (exit 2) and not a crash: the run itself diverged (exit 3)
        if bar is not None:
            bar.close()
            bar = None
        print(f"lci train: diverged: {e}; try a smaller lr (the run folder {out} keeps the "
              "epochs before)", file=sys.stderr)
        return EXIT_DIVERGED
    finally:
        if bar is not None:
            bar.close()
    robust = (f"  robust_test_acc={res['robust_test_acc']:.4f}" if "robust_test_acc" in res
              else "")
    auroc = f"  conf_auroc={res['conf_auroc']:.3f}" if "conf_auroc" in res else ""
    rate = (f" (realized {res['realized_noise_rate']:.4%})" if "realized_noise_rate" in res
            else "")
    print(f"done: {cfg.method} on {cfg.dataset} noise={cfg.resolved().noise}{rate}  "
          f"test_acc={res['test_acc']:.4f}"
          f"{robust}{auroc}  epochs={res['epochs_done']}  wall={res['wall_s']:.1f}s  -> {out}")
    return 0


def ensemble_main(argv: List[str]) -> int:
    import json

    from .ensemble import ensemble_eval

    p = argparse.ArgumentParser(prog="lci ensemble",
                                description="Test accuracy of averaged softmax over runs ('(E)').")
    p.add_argument("runs", nargs="+", help="run folders (from lci train) with checkpoint.pt")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = p.parse_args(argv)
    res = ensemble_eval(args.runs)
    if args.json:
        print(json.dumps(res))
        return 0
    def accs(m):
        return "  ".join(f"{k}={v:.4f}" for k, v in m.items() if k.endswith(("_acc", "_top5")))

    for m in res["members"]:
        print(f"  {m['run']}: {accs(m)}")
    print(f"ensemble of {res['n_members']}: {accs(res)}")
    return 0
