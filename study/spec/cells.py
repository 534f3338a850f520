"""Cells: one per combination of data set, noise setting, method and (lci methods) robust
loss, each with its TrainConfig settings and the parameters a search varies in it."""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping

from lci.names import LCI_METHODS, cell_id, noise_applies

from .params import Param, param_applies

if TYPE_CHECKING:
    from .model import StudySpec


@dataclass
class Cell:
    id: str
    dataset: str
    method: str
    noise: str
    robust_loss: str                  # the robust loss of lci methods, the method for baselines
    base: Dict[str, Any]              # TrainConfig keys (fixed + overrides + axes)
    search_params: List[Param] = field(default_factory=list)  # searched (not fixed) ones
    fixed_params: List[Param] = field(default_factory=list)   # search params fixed by the spec

    @property
    def searched(self) -> bool:
        return bool(self.search_params)

    @property
    def is_lci(self) -> bool:
        return self.method in LCI_METHODS

    def to_dict(self) -> Dict[str, Any]:
        return {"id": self.id, "dataset": self.dataset, "method": self.method, "noise": self.noise,
                "robust_loss": self.robust_loss, "searched": self.searched,
                "search_params": [p.name for p in self.search_params],
                "fixed_params": {p.name: p.value for p in self.fixed_params}}


def _matches(when: Mapping[str, List[str]], c: Cell) -> bool:
    attrs = {"method": c.method, "noise": c.noise, "robust_loss": c.robust_loss, "cell": c.id,
             "dataset": c.dataset}
    return all(attrs[k] in vals for k, vals in when.items())


def build_cells(spec: StudySpec, dataset_axis: bool) -> List[Cell]:
    """The cells of ``spec``'s axes, with its overrides and search parameters applied."""
    cells: List[Cell] = []
    seen = set()
    for dataset, noise, method in itertools.product(spec.datasets, spec.noise, spec.methods):
        if not noise_applies(noise, dataset):  # CIFAR-N keys of the other CIFAR (human:noisy)
            continue
        # baselines have one loss, their own: one cell, not one per robust loss
        for loss in (spec.robust_losses if method in LCI_METHODS else [method]):
            cid = cell_id(method, loss, noise, dataset if dataset_axis else None)
            if cid in seen:
                continue
            seen.add(cid)
            base = dict(copy.deepcopy(spec.fixed), dataset=dataset, noise=noise,
                        method=method, robust_loss=loss)
            c = Cell(cid, dataset, method, noise, loss, base)
            for o in spec.overrides:
                if _matches(o["when"], c):
                    c.base.update(copy.deepcopy(o["set"]))
            if spec.search and method in spec.search.methods:
                for p in spec.search.params.values():
                    if param_applies(p.name, method, loss):
                        (c.fixed_params if p.kind == "fixed" else c.search_params).append(p)
            cells.append(c)
    return cells

