"""A study as a graph of Tune experiments.

Each cell has up to three experiments: its search, its evaluation (one trial per seed) and its
sweep. The evaluation and the sweep of a searched cell use the search's best parameters, so
they wait for it; nothing else waits for anything. Every experiment whose inputs are ready can
run at once inside the study's one Tune run (:mod:`study.multiplex`), and Ray's resource
scheduler shares the cluster between their trials.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .phases import EVALUATION, SEARCH, SWEEP
from .spec import Cell, StudySpec


@dataclass(frozen=True)
class ExperimentNode:
    name: str                 # the experiment folder under the study folder
    cell: Cell
    phase: str                # search | evaluation | sweep
    trials: int
    needs: Tuple[str, ...]    # names of the experiments this one waits for
    cap: Optional[int] = None  # its own concurrency cap (a search's max_concurrent)

    @property
    def width(self) -> int:
        """The most trials of this experiment that can run at once."""
        return min(self.trials, self.cap) if self.cap else self.trials


def build_graph(spec: StudySpec) -> List[ExperimentNode]:
    nodes: List[ExperimentNode] = []
    searched = set()
    if spec.search:
        for c in spec.search_cells():
            name = spec.experiment_name(c, SEARCH)
            searched.add(c.id)
            nodes.append(ExperimentNode(name, c, SEARCH, spec.phase_trials(SEARCH), (),
                                        spec.search.max_concurrent))
    for c in spec.eval_cells():
        needs = (spec.experiment_name(c, SEARCH),) if c.id in searched else ()
        nodes.append(ExperimentNode(spec.experiment_name(c, EVALUATION), c, EVALUATION,
                                    spec.phase_trials(EVALUATION), needs))
    if spec.sweep:
        n = spec.phase_trials(SWEEP)
        for c in spec.sweep_cells():
            needs = (spec.experiment_name(c, SEARCH),) if c.id in searched else ()
            nodes.append(ExperimentNode(spec.experiment_name(c, SWEEP), c, SWEEP, n, needs))
    return nodes


def study_width(nodes: List[ExperimentNode], max_concurrent: Optional[int] = None,
                slots: Optional[int] = None) -> int:
    """The most trials that can run at once. Per cell, either its search runs or (once it is
    done) its evaluation and sweep do, so the widest moment takes the larger of the two for
    every cell; then the study-wide cap and the cluster's slots bound it."""
    per_cell: Dict[str, Dict[str, int]] = {}
    for n in nodes:
        d = per_cell.setdefault(n.cell.id, {SEARCH: 0, "after": 0})
        d[SEARCH if n.phase == SEARCH else "after"] += n.width
    width = sum(max(d[SEARCH], d["after"]) for d in per_cell.values())
    for bound in (max_concurrent, slots):
        if bound:
            width = min(width, bound)
    return width


def describe_graph(nodes: List[ExperimentNode], max_concurrent: Optional[int] = None,
                   slots: Optional[int] = None) -> str:
    """The dry run's view of the graph: experiments, what each waits for, trial counts, and
    the width for the given resources."""
    lines = [f"experiments ({len(nodes)}; those without 'waits for' start at once):"]
    w = max([len(n.name) for n in nodes] + [10])
    for n in nodes:
        cap = f" (at most {n.cap} at once)" if n.cap and n.cap < n.trials else ""
        after = f"  waits for {', '.join(n.needs)}" if n.needs else ""
        lines.append(f"  {n.name:<{w}}  {n.trials:>4} trials{cap}{after}")
    bound = []
    if max_concurrent:
        bound.append(f"max_concurrent {max_concurrent}")
    if slots:
        bound.append(f"{slots} slots")
    lines.append(f"width: {study_width(nodes, max_concurrent, slots)} trials can run at once "
                 f"({', '.join(bound) if bound else 'unlimited resources'}; "
                 f"{study_width(nodes)} without limits)")
    return "\n".join(lines)
