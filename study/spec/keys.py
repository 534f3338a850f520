"""The keys of a study spec, each with its one-line meaning, and the default search space.

The meanings are printed in error messages and the README's "Writing a study spec". The
default search space lives here, and only here: searching is the study layer's job (``lci``
trains one given configuration and never needs a range), so both the LCI parameters' ranges
and each robust loss's own ranges are study facts, kept side by side in one table.
"""
from __future__ import annotations

from typing import Dict, Tuple

from lci.errors import ConfigError
from ..phases import PHASES  # noqa: F401  (their one home; the spec package names them too)


class SpecError(ConfigError):
    """A study spec that is not valid; the message names the key and what is allowed."""


#: Top-level keys of a spec, with a one-line meaning each (printed in errors and the README).
SPEC_KEYS: Dict[str, str] = {
    "name": "study name: the folder <storage>/<name> (default: the file's stem)",
    "description": "free text",
    "fixed": "TrainConfig settings shared by every trial",
    "datasets": "optional list of data sets (an axis of the cells; else fixed.dataset)",
    "noise": "list of noise settings, e.g. ['sym:0.8', 'asym:0.4'] (one axis of the cells)",
    "methods": "list of methods (lci, lci-two-models, lci-single and the baselines)",
    "robust_losses": "robust losses of the lci methods (baselines ignore this axis)",
    "overrides": "list of {when: {dataset/method/noise/robust_loss/cell: value(s)}, set: {...}}",
    "search": "the Optuna search phase (omit: no search, cells use their fixed settings)",
    "evaluation": "the evaluation phase: best config x seeds on the full training set",
    "sweep": "optional one-parameter sweep x seeds (Figure 4)",
    "scheduler": "optional ASHA early stopping of the search phase",
    "resources": "per-trial resources {cpu, gpu} (fractions allowed)",
    "max_concurrent": "most trials running at once (default: as many as resources allow)",
    "max_failures": "retries of a failed trial, from its last checkpoint (default 1)",
    "keep_checkpoints": "checkpoints kept per trial (default 2; the last one is the run folder)",
    "storage": "where experiments go: absolute path, relative (made absolute) or s3://...",
    "optuna_storage": "'sqlite' (<study>/optuna.db, default), 'journal' (<study>/optuna.journal, "
                      "for NFS/EFS; chosen by itself on a network file system), 'none', or a "
                      "database URL",
    "tracking": "optional experiment tracking, e.g. {mlflow: {uri: ..., experiment: ...}}",
    "budget": "optional {gpu_hours: N, gpu: H200}: refuse a study whose GPU-hours exceed N",
}
SEARCH_KEYS: Dict[str, str] = {
    "trials": "Optuna trials per searched cell",
    "metric": "the searched metric (default val_acc; never a test-set metric)",
    "mode": "max or min (default max)",
    "seed": "seed of the TPE sampler (default 0)",
    "n_startup_trials": "random trials before TPE models the space (default min(10, trials//2))",
    "val_fraction": "noisy validation split held out during the search (default 0.1)",
    "methods": "methods whose cells are searched (default: the lci methods of the study)",
    "params": "search space: name -> [low, high] | {low, high, log} | {values: [...]} | value",
    "default_space": "start from the default space of docs/method.md §3 (default true)",
    "fixed": "settings for the search phase only (e.g. fewer epochs)",
    "max_concurrent": "concurrent trials of a search (default: the study's max_concurrent)",
}
EVAL_KEYS: Dict[str, str] = {
    "seeds": "number of seeds (0..N-1) or a list of seeds (default 5)",
    "metric": "headline metric (default test_acc)",
    "fixed": "settings for the evaluation phase only",
    "methods": "methods whose cells are evaluated (default: all)",
    "fuse_seeds": "train a cell's seeds as one fused network in one trial (default false)",
}
SWEEP_KEYS: Dict[str, str] = {
    "param": "the swept parameter, e.g. m (or gce.q)",
    "values": "list of values, or {start, stop, num} for an evenly spaced list",
    "seeds": "number of seeds or a list (default: the evaluation's)",
    "methods": "methods swept (default: those the parameter applies to)",
    "noise": "noise settings swept (default: all of the study's)",
    "datasets": "data sets swept (default: all of the study's)",
    "robust_losses": "robust losses swept (default: all)",
    "fixed": "settings for the sweep only",
    "metric": "headline metric (default test_acc)",
    "fuse_seeds": "train the seeds of each value as one fused network (default: evaluation's)",
}
SCHEDULER_KEYS: Dict[str, str] = {
    "type": "asha",
    "grace_period": "epochs every trial runs before it may be stopped (default 1)",
    "reduction_factor": "keep the top 1/reduction_factor at each rung (default 3)",
    "max_t": "epochs of a full trial (default: the search's epochs)",
}
RESOURCE_KEYS = {"cpu": "CPUs per trial (default 1)", "gpu": "GPUs per trial (default 0)"}
OVERRIDE_KEYS = {"when": "conditions", "set": "settings"}
WHEN_KEYS = ("dataset", "method", "noise", "robust_loss", "cell")

#: Cell-defining keys: given by the axes, not by ``fixed``/``overrides``/phase settings.
AXIS_KEYS = ("noise", "method", "robust_loss")
#: Keys the phases set themselves.
PHASE_KEYS = ("val_fraction",)

#: Default search space of the LCI parameters (docs/method.md §3): name -> (low, high, log).
DEFAULT_SPACE: Dict[str, Tuple[float, float, bool]] = {
    "m": (-5.0, 5.0, False),
    "lam": (1e-5, 1e-1, True),
    "rho": (0.0, 5.0, False),
    "alpha": (0.1, 10.0, True),
}
#: Default ranges ``{loss: {param: (low, high, log)}}`` of each robust loss's own parameters,
#: searched as ``<loss>.<param>`` (``gce.q``) in the cells of that loss only.
#: ``mae.scale`` is not searched: it only rescales the gradient (a learning-rate factor) and,
#: in LCI, the loss values that the confidence's ``m`` already shifts; it stays at 2
#: (‖p−y‖₁).
LOSS_SEARCH_SPACE: Dict[str, Dict[str, Tuple[float, float, bool]]] = {
    "ce": {},
    "bs": {"t": (0.0, 0.5, False)},
    "ls": {"eps": (0.0, 0.5, False)},
    "mae": {},
    "gce": {"q": (0.1, 1.0, False)},
    "sce": {"a": (0.01, 1.0, True), "b": (0.1, 10.0, True)},
    "nce_rce": {"a": (0.1, 10.0, True), "b": (0.1, 10.0, True)},
    "js": {"pi1": (0.1, 0.9, False)},
    "gjs": {"pi1": (0.1, 0.9, False)},
}
# Which lci-only parameters each method uses is a method fact: lci.methods (Method.params).
#: Other float fields a search or sweep may vary for every method.
GENERAL_PARAMS = ("lr", "momentum", "weight_decay")
