"""Study specs (YAML) -> Optuna search spaces -> ``tune.Tuner`` runs; ``presets/`` holds the
paper's tables and figures and the demo.

    >>> from study import load_spec, run_study
    >>> spec = load_spec("demo", storage="/tmp/results")   # a preset name or a YAML path
    >>> print(spec.describe())                              # what --dry-run prints
    >>> summary = run_study(spec)                           # local Ray; address=... for a cluster

Importing this package does not import Ray; ``run_study`` does.
"""
from .spec import SpecError, StudySpec, load_spec, preset_names


def run_study(spec, **kwargs):
    """Run a study; see :func:`study.runner.run_study`."""
    from .runner import run_study as _run

    return _run(spec, **kwargs)


__all__ = ["SpecError", "StudySpec", "load_spec", "preset_names", "run_study"]
