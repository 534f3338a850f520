"""``lci sweep`` as a real driver process whose trials are ``faultkit.held_trainable``:
``python tests/held_driver.py CONTROL_DIR sweep-args...`` (see tests/test_faults.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import faultkit  # noqa: E402


def main() -> int:
    faultkit.configure(sys.argv[1])
    import trainables

    trainables.make_trainable = lambda cpu=1.0, gpu=0.0, extra=None: \
        faultkit.make_held_trainable(cpu)
    from lci.errors import LCIError
    from study.cli import sweep_main

    try:
        return sweep_main(sys.argv[2:])
    except LCIError as e:
        print(f"lci sweep: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
