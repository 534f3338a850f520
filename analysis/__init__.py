"""Experiment folders → tidy pandas frames → the paper's tables and figures.

``analysis`` reads files only (Tune experiment folders and ``lci train`` run folders); it
imports pandas, numpy and matplotlib, and optuna lazily for parameter importances.

>>> runs = analysis.load("results/demo")           # one row per trial / run
>>> cells = analysis.aggregate(runs, "test_acc")     # mean, std, n, 95% CI per cell
>>> print(analysis.table1(runs).markdown())
>>> analysis.report("results/demo")                  # everything, linked from report.md
"""
from .figures import (auroc, confidence_histograms, memorisation_curves, save_figure,
                      search_history, sensitivity, spearman_importances, training_curves)
from lci.names import normalize_noise, setting_id

from .folders import discover
from .frames import NoRunsFound, history, load
from .paper import PAPER, method_label, paper_value, setting_label
from .report import report
from .stats import aggregate, summarize, t_quantile
from .tables import Table, method_table, table1, table2

__all__ = [
    "load", "history", "discover", "aggregate", "summarize", "t_quantile",
    "table1", "table2", "method_table", "Table",
    "training_curves", "memorisation_curves", "sensitivity", "search_history", "confidence_histograms",
    "save_figure", "auroc", "spearman_importances",
    "report", "NoRunsFound", "PAPER", "paper_value", "method_label", "setting_label",
    "normalize_noise", "setting_id",
]
