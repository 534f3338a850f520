"""Study specs: a YAML file -> a validated :class:`StudySpec` -> cells, phases and trial configs.

A study is a set of **cells** (each combination of a noise setting, a method and, for the lci
methods, a robust loss) and up to three **phases** per cell, each one experiment of the
study (its trials are ``<storage>/<name>/trials/<experiment>-<trial id>``):

- ``<cell>__search``: an Optuna (seeded TPE) search of the cell's parameters on a noisy
  validation split (``val_fraction > 0``; the metric is never a test-set metric);
- ``<cell>__eval``: the best configuration (or the fixed one when the cell is not searched)
  retrained on the full training set with N seeds, reporting ``test_acc``;
- ``sweep_<param>__<cell>``: one parameter over a list of values x seeds (Figure 4), other
  parameters at the best / fixed values.

This package imports neither Ray nor Optuna, so ``lci sweep --dry-run`` is quick. The YAML
format is documented in the README ("Writing a study spec") and in :data:`SPEC_KEYS`.

Modules, bottom up: ``keys`` (the spec's keys and the default search space), ``values``
(checks of single values), ``params`` (searched/swept parameters), ``cells`` (cells; their ids
are spelled by :func:`lci.names.cell_id`), ``model`` (the spec dataclasses), ``load`` (reading and validating a spec).
"""
from .cells import Cell, build_cells
from .keys import (AXIS_KEYS, DEFAULT_SPACE, EVAL_KEYS, GENERAL_PARAMS, LOSS_SEARCH_SPACE,
                   OVERRIDE_KEYS, PHASE_KEYS, PHASES, RESOURCE_KEYS, SCHEDULER_KEYS, SEARCH_KEYS,
                   SPEC_KEYS, SWEEP_KEYS, WHEN_KEYS, SpecError)
from .load import load_spec
from .paths import absolute_storage, preset_names, presets_dir, resolve_spec_path
from .model import EvalSpec, SchedulerSpec, SearchSpec, StudySpec, SweepSpec
from .params import (Param, default_params, param_applies, param_path, parse_param, set_path,
                     with_params)

__all__ = [
    "AXIS_KEYS", "DEFAULT_SPACE", "EVAL_KEYS", "GENERAL_PARAMS", "LOSS_SEARCH_SPACE", "OVERRIDE_KEYS", "PHASE_KEYS", "PHASES", "RESOURCE_KEYS",
    "SCHEDULER_KEYS", "SEARCH_KEYS", "SPEC_KEYS", "SWEEP_KEYS", "WHEN_KEYS",
    "Cell", "EvalSpec", "Param", "SchedulerSpec", "SearchSpec", "SpecError", "StudySpec",
    "SweepSpec",
    "absolute_storage", "build_cells", "default_params", "load_spec", "param_applies", "param_path", "parse_param", "preset_names", "presets_dir",
    "resolve_spec_path", "set_path", "with_params",
]
