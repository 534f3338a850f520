"""The phases of a study, named once: every layer (the spec, the scheduler of the study's one
Tune run, analysis/) takes the names and their order from here.

A module of its own, importing nothing, so that ``analysis`` can use the names without the
spec package (which needs torch to validate configs) or Ray.
"""
from __future__ import annotations

SEARCH, EVALUATION, SWEEP = "search", "evaluation", "sweep"
#: The phases in the order a study runs them: a search finds the configuration that the
#: evaluation retrains with N seeds, and the sweep varies one parameter around it.
PHASES = (SEARCH, EVALUATION, SWEEP)
