"""Write the notebooks of this folder (without outputs): ``python analysis/notebooks/build_notebooks.py``.

Each notebook is a few cells calling :mod:`analysis`; it reads the experiment folder from the
``LCI_EXPERIMENT`` environment variable (default ``../../results/demo``, where ``lci demo``
writes, relative to this folder). Edit the cells here, not in the .ipynb files.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
%matplotlib inline
import os
from pathlib import Path

from IPython.display import Markdown, display

import analysis

# the experiment folder: a Tune study folder, a storage folder of several, or lci train runs
EXPERIMENT = Path(os.environ.get("LCI_EXPERIMENT", "../../results/demo"))
runs = analysis.load(EXPERIMENT)
runs.groupby(["phase", "status"]).size()"""

INTRO = ("Set `LCI_EXPERIMENT` to the experiment folder before starting Jupyter "
         "(default `../../results/demo`, written by `lci demo`). Each trial's `status` is the "
         "study's: `finished`, `failed` (`error` says why), `stopped` or `incomplete`; only "
         "finished trials count. Cells with fewer seeds than the study asked for are marked "
         "`(n/N)` in tables and `complete = False` in aggregates.")

NOTEBOOKS = {
    "noise_table.ipynb": [
        new_markdown_cell("# Table 1 — methods × label noise\n\n" + INTRO),
        new_code_cell(SETUP),
        new_code_cell("t1 = analysis.table1(runs)\ndisplay(Markdown(t1.markdown()))"),
        new_markdown_cell("Every entry with its 95% t-interval, seeds and the paper's figure:"),
        new_code_cell("t1.cells"),
    ],
    "ablation_table.ipynb": [
        new_markdown_cell("# Table 2 — ablation: GCE, single model, two models, full LCI\n\n" + INTRO),
        new_code_cell(SETUP),
        new_code_cell("t2 = analysis.table2(runs)\ndisplay(Markdown(t2.markdown()))"),
        new_code_cell("t2.cells"),
    ],
    "figure4_sensitivity.ipynb": [
        new_markdown_cell("# Figure 4 — test accuracy against m\n\n" + INTRO),
        new_code_cell(SETUP),
        new_code_cell("for name, fig in analysis.sensitivity(runs, param=\"m\").items():\n"
                      "    display(fig)"),
        new_markdown_cell("The points of the figure (phase `sweep`):"),
        new_code_cell("points = analysis.aggregate(runs, \"test_acc\", by=[\"cell\", \"m\"], phases=[\"sweep\"])\n"
                      "points[[\"cell\", \"m\", \"n\", \"n_expected\", \"complete\", \"mean\", \"std\", "
                      "\"ci_low\", \"ci_high\"]]"),
    ],
    "training_curves.ipynb": [
        new_markdown_cell("# Figure 3 — training curves of θ and θ*, and label confidence\n\n" + INTRO),
        new_code_cell(SETUP),
        new_code_cell("hist = analysis.history(EXPERIMENT)\n"
                      "for name, fig in analysis.training_curves(hist).items():\n"
                      "    display(fig)"),
        new_markdown_cell("Label confidence of clean and noisy training samples (`label_issues.csv`):"),
        new_code_cell("for name, fig in analysis.confidence_histograms(runs).items():\n"
                      "    display(fig)"),
        new_markdown_cell("The Optuna searches:"),
        new_code_cell("for name, fig in analysis.search_history(runs).items():\n"
                      "    display(fig)"),
    ],
}


def build(out_dir: Path = HERE) -> list:
    paths = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                           "name": "python3"},
            "language_info": {"name": "python"},
        })
        for i, cell in enumerate(nb.cells):      # stable ids: no diff noise on rebuild
            cell["id"] = f"{Path(name).stem.replace('_', '-')}-{i}"
        nbformat.validate(nb)
        path = Path(out_dir) / name
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build():
        print(p)
