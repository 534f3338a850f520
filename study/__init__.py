"""Study specs (YAML) -> Optuna search spaces -> ``tune.Tuner`` runs; ``presets/`` holds the
paper's tables and figures and the demo.

    >>> from study import load_spec, run_study
    >>> spec = load_spec("demo", storage="/tmp/results")   # a preset name or a YAML path
    >>> print(spec.describe())                              # what --dry-run prints
    >>> summary = run_study(spec)                           # local Ray; address=... for a cluster

Importing this package imports nothing else (not the spec, which needs torch for config
validation, nor Ray): analysis/ imports small Ray-free modules of it (``study.trials``,
``study.summary_stats``) without the rest.
"""
_SPEC_NAMES = ("SpecError", "StudySpec", "load_spec", "preset_names")


def __getattr__(name: str):
    if name in _SPEC_NAMES:
        from . import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'study' has no attribute {name!r}")


def run_study(spec, **kwargs):
    """Run a study; see :func:`study.runner.run_study`."""
    from .runner import run_study as _run

    return _run(spec, **kwargs)


__all__ = ["SpecError", "StudySpec", "load_spec", "preset_names", "run_study"]
