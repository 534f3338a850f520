"""What each cell of a study trains with: views, lr, weight decay, loss weights (protocol view).

:func:`cell_settings` resolves every cell's evaluation config the way a trial does
(``spec.phase_config(cell, EVALUATION)`` then :meth:`lci.TrainConfig.resolved`), so the
values are the ones in use, profile defaults included; :func:`format_cell_settings` prints
them as one markdown table, methods x noise settings (the README's protocol table is this
output for ``table1_cifar10``).
"""
from __future__ import annotations

from typing import Any, Dict, List

from lci.config import TrainConfig
from lci.methods import LCI_METHODS, get_method, loss_of

from .phases import EVALUATION

__all__ = ["views_of", "cell_settings", "format_cell_settings", "describe"]


def _views(n: int, augment: str) -> str:
    return f"2 {augment} (x', x'')" if n == 2 else f"1 {augment} (x')"


def views_of(cfg: TrainConfig) -> str:
    """Which augmented views of an image each model sees in one step (lci.engine's choice:
    gjs's two views for θ; θ*'s from the method registry, lci.methods)."""
    method = get_method(cfg.method)
    theta = _views(2 if loss_of(cfg.method, cfg.robust_loss) == "gjs" else 1, cfg.augment)
    if method.models == 2:
        return f"θ: {theta}; θ*: {_views(method.star_views, cfg.augment)}"
    return f"θ: {theta}" if method.is_lci else theta


def cell_settings(spec) -> List[Dict[str, Any]]:
    """One dict per cell of ``spec`` (a loaded study spec): the settings its evaluation
    trials use. Keys: cell, dataset, method, robust_loss, noise, views, augment, lr,
    weight_decay, pi1 (JS/GJS weight of the label, None for other losses), noise_convention,
    model, init_scheme, amp (precision: "off" = float32), epochs, batch_size, lr_schedule,
    lr_milestones, searched (names of the parameters the cell's search picks, whose values
    here are only the starting ones)."""
    rows = []
    for cell in spec.cells:
        cfg = TrainConfig.from_dict(spec.phase_config(cell, EVALUATION)).resolved()
        loss = loss_of(cfg.method, cfg.robust_loss)
        pi1 = cfg.robust_loss_params.get("pi1", 0.5) if loss in ("js", "gjs") else None
        rows.append({
            "cell": cell.id, "dataset": cfg.dataset, "method": cfg.method,
            "robust_loss": loss, "noise": cfg.noise, "views": views_of(cfg),
            "augment": cfg.augment, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
            "pi1": pi1, "noise_convention": cfg.noise_convention, "model": cfg.model,
            "init_scheme": cfg.init_scheme, "amp": cfg.amp,
            "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr_schedule": cfg.lr_schedule,
            "lr_milestones": list(cfg.lr_milestones),
            "searched": [p.name for p in cell.search_params],
        })
    return rows


def _num(v: float) -> str:
    """0.1, 0.01, 5e-4, 1e-3 (as the GJS scripts are read), not 0.0005."""
    if v == 0 or abs(v) >= 0.01:
        return f"{v:g}"
    mant, exp = f"{v:e}".split("e")
    return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"


def _entry(r: Dict[str, Any], with_views: bool) -> str:
    s = f"{_num(r['lr'])} / {_num(r['weight_decay'])}"
    if r["pi1"] is not None:
        s += f" / π1 {_num(r['pi1'])}"
    if r["searched"]:
        s += " (search: " + ", ".join(r["searched"]) + ")"
    if with_views:
        s += f" / {r['views']}"
    return s


def format_cell_settings(rows: List[Dict[str, Any]]) -> str:
    """A markdown table: one row per method (and robust loss), one column per noise setting
    (``dataset noise`` when the study has several data sets); each entry ``lr / weight decay``
    (``/ π1 x`` for JS and GJS). A method's views go in their own column when they are the
    same in all its cells, else into each entry."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))

    def col(r):
        return r["noise"] if len(datasets) == 1 else f"{r['dataset']} {r['noise']}"

    cols = list(dict.fromkeys(col(r) for r in rows))
    keys = list(dict.fromkeys((r["method"], r["robust_loss"]) for r in rows))
    lines = ["| method | views | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for method, loss in keys:
        mine = [r for r in rows if (r["method"], r["robust_loss"]) == (method, loss)]
        views = {r["views"] for r in mine}
        shared = len(views) == 1
        by_col = {col(r): _entry(r, not shared) for r in mine}
        name = method if method not in LCI_METHODS else f"{method} ({loss})"
        lines.append(f"| {name} | {views.pop() if shared else 'per cell'} | "
                     + " | ".join(by_col.get(c, "-") for c in cols) + " |")
    return "\n".join(lines)


def describe(spec) -> str:
    """The block a dry run prints: what every cell trains with, then the table."""
    rows = cell_settings(spec)
    common = {k: sorted({str(r[k]) for r in rows}) for k in
              ("model", "init_scheme", "amp", "epochs", "batch_size", "lr_schedule",
               "noise_convention")}
    head = ", ".join(f"{k} {'/'.join(v)}" for k, v in common.items())
    return (f"settings per cell ({head}); entries: lr / weight decay (/ π1 for JS, GJS)\n"
            + format_cell_settings(rows))
