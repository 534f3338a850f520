"""The method registry: what each training method of docs/method.md is, stated once.

Like the loss, model and data set registries (:mod:`lci.registry`), a name maps to an entry;
here the entry is a :class:`Method`, facts that every layer reads:

- ``step``: which step of :class:`lci.engine.Engine` trains it (``lci``, ``two_models``,
  ``single``, ``baseline``);
- ``terms``: the loss terms that step computes (a subset of :data:`TERMS`, in its order);
- ``models``: 1 (θ alone) or 2 (θ and θ*, the inference model);
- ``params``: the lci parameters (config fields of docs/method.md §3) the step reads, which a
  study searches or sweeps only where they apply.

The config validates ``method`` against it, the engine picks its step and active terms from it,
the study spec asks it which parameters apply, the protocol view and the figures which models
there are. :mod:`lci.names` takes the method names from here.

This module imports nothing but :mod:`lci.errors` and :mod:`lci.registry`, so that ``analysis``
and the study spec may use it without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

from .registry import Registry

#: Loss-term names, in the order the engine accumulates them; a step's ``loss`` is their sum.
TERMS = ("loss_robust", "loss_ce", "loss_jsd", "loss_penalty")
#: The engine's steps (:meth:`lci.engine.Engine._method` maps each to its code).
STEPS = ("lci", "two_models", "single", "baseline")


@dataclass(frozen=True)
class Method:
    """One registered method (see the module docstring)."""

    name: str
    step: str
    terms: Tuple[str, ...]
    models: int = 1
    params: Tuple[str, ...] = ()

    @property
    def is_lci(self) -> bool:
        """Trained with label confidence (a robust loss of its own choice); a baseline is not:
        its loss is its name."""
        return self.step != "baseline"

    @property
    def star_views(self) -> int:
        """Augmented views θ* sees per step: two where the JSD between them is a term."""
        return 2 if "loss_jsd" in self.terms else 1


METHODS_REGISTRY: Registry[Method] = Registry("method")


def _register(method: Method) -> None:
    METHODS_REGISTRY.register(method.name)(method)


# The full method (Algorithm 1): θ* is trained on two views (JSD, ρ) with label correction.
_register(Method("lci", "lci", TERMS, models=2,
                 params=("m", "lam", "rho", "alpha", "slope", "mu_momentum", "correction_start",
                         "correction_weight")))
# Table 2's ablations: two models without the JSD term and label correction; one model θ
# weighting its own CE by C (no θ*, hence no λ penalty and no ρ).
_register(Method("lci-two-models", "two_models", ("loss_robust", "loss_ce", "loss_penalty"),
                 models=2, params=("m", "lam", "alpha", "slope", "mu_momentum")))
_register(Method("lci-single", "single", ("loss_robust", "loss_ce"),
                 params=("m", "alpha", "slope", "mu_momentum")))
# Single-model baselines of Table 1: the method's name is also its loss's name.
for _loss in ("ce", "bs", "ls", "mae", "gce", "sce", "nce_rce", "js", "gjs"):
    _register(Method(_loss, "baseline", ("loss_robust",)))

#: Methods whose training uses label confidence, then the baselines (registration order).
LCI_METHODS = tuple(n for n in METHODS_REGISTRY if METHODS_REGISTRY.get(n).is_lci)
BASELINE_METHODS = tuple(n for n in METHODS_REGISTRY if not METHODS_REGISTRY.get(n).is_lci)
METHODS = LCI_METHODS + BASELINE_METHODS
#: Every lci parameter some method reads (a search or sweep of one applies to those methods).
LCI_ONLY_PARAMS = tuple(sorted({p for n in METHODS_REGISTRY
                                for p in METHODS_REGISTRY.get(n).params}))


def get_method(name: str) -> Method:
    """The registered method ``name``; a :class:`~lci.errors.ConfigError` lists the others."""
    return METHODS_REGISTRY.get(name)


def has_two_models(method: Any) -> bool:
    """Whether runs of ``method`` train θ and θ* (False for a name that is not registered:
    records read by ``analysis`` may hold anything)."""
    known = isinstance(method, str) and method in METHODS_REGISTRY
    return known and METHODS_REGISTRY.get(method).models == 2


def uses_param(method: str, param: str) -> bool:
    """Whether the lci parameter ``param`` changes a run of ``method``."""
    return method in METHODS_REGISTRY and param in METHODS_REGISTRY.get(method).params


def loss_of(method: str, robust_loss: str) -> str:
    """The loss θ trains with: an lci method's robust loss, a baseline's own name."""
    return robust_loss if get_method(method).is_lci else method
