"""Searched, swept and fixed parameters: their spec names (``m``, ``gce.q``), config paths,
which cells they apply to, and the parsing of ``search.params`` values."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from lci.errors import allowed
from lci.losses import LOSS_DEFAULTS
from lci.methods import LCI_ONLY_PARAMS, uses_param

from .keys import DEFAULT_SPACE, GENERAL_PARAMS, LOSS_SEARCH_SPACE, SpecError
from .values import number


@dataclass(frozen=True)
class Param:
    """One searched or fixed parameter. ``name`` is the spec's (``m``, ``gce.q``);
    ``path`` the config path (``("m",)``, ``("robust_loss_params", "q")``)."""

    name: str
    kind: str                         # "float", "int", "categorical" or "fixed"
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[Tuple[Any, ...]] = None
    value: Any = None

    @property
    def path(self) -> Tuple[str, ...]:
        return param_path(self.name)

    @property
    def optuna_name(self) -> str:
        # "/" is the separator OptunaSearch unflattens on: robust_loss_params/q -> nested dict
        return "/".join(self.path)

    def describe(self) -> str:
        if self.kind == "fixed":
            v = f"{self.value:g}" if isinstance(self.value, float) else repr(self.value)
            return f"{self.name}={v}"
        if self.kind == "categorical":
            return f"{self.name} in {list(self.choices)}"
        return f"{self.name} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")

    def to_dict(self) -> Dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items() if v is not None and v is not False}


def param_path(name: str) -> Tuple[str, ...]:
    if "." in name:
        loss, p = name.split(".", 1)
        return ("robust_loss_params", p)
    return (name,)


def param_applies(name: str, method: str, loss: str) -> bool:
    """Whether parameter ``name`` changes a run of ``method`` whose loss is ``loss`` (the
    robust loss for lci methods, the method itself for baselines)."""
    if "." in name:
        return name.split(".", 1)[0] == loss
    if name in LCI_ONLY_PARAMS:
        return uses_param(method, name)
    return True


def _allowed_param_names() -> List[str]:
    losses = [f"{l}.{p}" for l in sorted(LOSS_DEFAULTS) for p in LOSS_DEFAULTS[l]]
    return list(LCI_ONLY_PARAMS) + list(GENERAL_PARAMS) + losses


def _check_param_name(name: str, where: str) -> None:
    if "." in name:
        loss, p = name.split(".", 1)
        if loss not in LOSS_DEFAULTS:
            raise SpecError(f"{where}: unknown loss {loss!r} in parameter {name!r}; allowed "
                            f"losses: {allowed(sorted(LOSS_DEFAULTS))}")
        if p not in LOSS_DEFAULTS[loss]:
            ok = allowed(LOSS_DEFAULTS[loss]) if LOSS_DEFAULTS[loss] else "none (it has no parameters)"
            raise SpecError(f"{where}: loss {loss!r} has no parameter {p!r}; allowed: {ok}")
        return
    if name not in LCI_ONLY_PARAMS and name not in GENERAL_PARAMS:
        raise SpecError(f"{where}: {name!r} cannot be searched or swept; allowed: "
                        f"{', '.join(_allowed_param_names())}")


def parse_param(name: str, value: Any, where: str) -> Param:
    """``[lo, hi]`` | ``{low, high, log, step}`` | ``{values: [...]}`` | a constant."""
    _check_param_name(name, where)
    w = f"{where}.{name}"
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise SpecError(f"{w}={list(value)!r}: a range is [low, high]; for a list of values "
                            "write {values: [...]}")
        value = {"low": value[0], "high": value[1]}
    if isinstance(value, Mapping):
        keys = set(value)
        if "values" in keys:
            extra = keys - {"values"}
            if extra:
                raise SpecError(f"{w}: unknown key {sorted(extra)[0]!r} beside 'values'")
            vals = value["values"]
            if not isinstance(vals, (list, tuple)) or not vals:
                raise SpecError(f"{w}.values must be a non-empty list")
            return Param(name, "categorical", choices=tuple(number(x, w) for x in vals))
        ok = {"low", "high", "log", "step", "int"}
        extra = keys - ok
        if extra:
            raise SpecError(f"{w}: unknown key {sorted(extra)[0]!r}; allowed: "
                            f"{allowed(sorted(ok))} or 'values'")
        if "low" not in keys or "high" not in keys:
            raise SpecError(f"{w} needs both 'low' and 'high'")
        low, high = number(value["low"], f"{w}.low"), number(value["high"], f"{w}.high")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise SpecError(f"{w}.log={log!r} must be true or false")
        if not low < high:
            raise SpecError(f"{w}: low={low:g} must be below high={high:g}")
        if log and low <= 0:
            raise SpecError(f"{w}: a log range needs low > 0, got {low:g}")
        step = number(value["step"], f"{w}.step") if value.get("step") is not None else None
        if step is not None and log:
            raise SpecError(f"{w}: step and log cannot be combined")
        return Param(name, "float", low=low, high=high, log=log, step=step)
    if value is None:
        raise SpecError(f"{w} is empty; give a range [low, high], {{values: [...]}} or a value")
    return Param(name, "fixed", value=number(value, w))


def default_params(loss_names: Sequence[str]) -> Dict[str, Param]:
    """The default space: m, lam, rho, alpha and each robust loss's own parameters."""
    out = {n: Param(n, "float", low=lo, high=hi, log=lg) for n, (lo, hi, lg) in DEFAULT_SPACE.items()}
    for loss in loss_names:
        for p, (lo, hi, lg) in LOSS_SEARCH_SPACE.get(loss, {}).items():
            out[f"{loss}.{p}"] = Param(f"{loss}.{p}", "float", low=lo, high=hi, log=lg)
    return out


def set_path(d: Dict[str, Any], path: Tuple[str, ...], value: Any) -> None:
    """``d[path[0]][path[1]]... = value``, creating the nested mappings on the way."""
    for k in path[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise SpecError(f"cannot set {'.'.join(path)}: {k} is not a mapping")
    d[path[-1]] = value


def with_params(cfg: Dict[str, Any], params: Mapping[str, Any]) -> Dict[str, Any]:
    """``cfg`` with spec-named parameters (``m``, ``gce.q``) set at their config paths."""
    out = copy.deepcopy(cfg)
    for name, value in params.items():
        set_path(out, param_path(name), value)
    return out
