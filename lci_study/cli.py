"""The ``lci`` command: ``train`` and ``ensemble`` (lci/cli.py), ``sweep`` and ``demo``
(study/cli.py), ``report`` (analysis/cli.py).

The dispatcher lives here, above the layers, so that the method library ``lci`` never names
the layers built on it. A sub-command's module is imported only when it runs, so ``lci
train`` never imports Ray. Every :class:`~lci.errors.LCIError` becomes one line on stderr and
exit status 2.
"""
from __future__ import annotations

import importlib
import sys
from typing import List, Optional

from lci.errors import LCIError

#: sub-command -> "module:function" taking argv (without the sub-command) and returning an
#: exit status
COMMANDS = {"train": "lci.cli:train_main", "ensemble": "lci.cli:ensemble_main",
            "sweep": "study.cli:sweep_main", "demo": "study.cli:demo_main",
            "report": "analysis.cli:main"}

USAGE = """usage: lci {train,sweep,report,demo,ensemble} ...

  train   one run (LCI or a baseline), with a progress bar
  ensemble  averaged-softmax accuracy of several runs ('(E)')
  sweep   a study (Optuna search + seeds) on Ray Tune, local or on a cluster
  report  tables and figures from finished experiments
  demo    the digits study end to end (sweep + report)

`lci COMMAND --help` for its options."""


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd not in COMMANDS:
            raise LCIError(f"unknown command {cmd!r}; allowed: {', '.join(COMMANDS)}")
        mod_name, fn_name = COMMANDS[cmd].split(":")
        return int(getattr(importlib.import_module(mod_name), fn_name)(rest) or 0)
    except LCIError as e:
        from study.secrets import mask  # a URL in a message may carry a password

        print(f"lci {cmd}: error: {mask(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lci {cmd}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
