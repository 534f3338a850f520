"""analysis.report and `lci report` (analysis.cli.main)."""
import re

import pandas as pd
import pytest

import analysis
from analysis import cli
from synthetic import BASE_CONFIG, epoch_metrics, label_issues, write_run, write_study

FINAL = {
    "gce_sym0.8": [0.78, 0.80, 0.79],
    "lci_gce_sym0.8": [0.90, 0.91, 0.92],
    "lci_gce_asym0.4": [0.92, 0.93, None],
}


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    write_study(root, name="rep", epochs=3, n_search=4, seeds=3, eval_final=FINAL,
                sweep_final={-1.0: [0.85, 0.86], 1.0: [0.88, 0.87]}, label_issue_samples=100)
    return root


@pytest.fixture(scope="module")
def report_md(storage, tmp_path_factory):
    return analysis.report(storage, tmp_path_factory.mktemp("out") / "report")


def test_report_writes_tables_figures_and_links(report_md):
    out = report_md.parent
    assert report_md.name == "report.md"
    for name in ("table1", "table2"):
        for ext in ("md", "csv", "tex"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
    assert (out / "runs.csv").is_file() and (out / "cells.csv").is_file()
    text = report_md.read_text()
    assert "| lci | **91.00 ± 1.00**† [paper 91.13] | **92.50 ± 0.71** (2/3) [paper 93.17] |" in text
    images = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", text)
    kinds = {p.split("/")[1].split("__")[0] for p in images}
    assert kinds == {"fig3", "fig4", "search", "confidence"}
    for rel in images:
        assert (out / rel).stat().st_size > 1000
        assert (out / rel).with_suffix(".svg").is_file()
    assert "RuntimeError: CUDA error" in text                  # the failed trial is listed
    assert "Cells with fewer seeds than asked for" in text
    cells = pd.read_csv(out / "cells.csv")
    lci = cells[(cells.phase == "evaluation") & (cells.cell == "lci_gce_sym0.8")].iloc[0]
    assert lci["mean"] == pytest.approx(0.91) and lci["n"] == 3


def test_report_default_out_dir(tmp_path):
    for s in range(2):
        cfg = dict(BASE_CONFIG, dataset="digits", seed=s, epochs=2)
        write_run(tmp_path / "exp" / f"r{s}", cfg, epoch_metrics(cfg, 0.8),
                  label_issues_df=label_issues(30, 0.5, s))
    path = analysis.report(tmp_path / "exp")
    assert path == tmp_path / "exp" / "report" / "report.md"
    assert "80.00 ± 0.00" in path.read_text()
    # a second report over the same folder does not pick up the first one's files
    assert len(analysis.load(tmp_path / "exp")) == 2


def test_report_without_runs_raises(tmp_path):
    with pytest.raises(analysis.NoRunsFound):
        analysis.report(tmp_path)


def test_cli_report(tmp_path, capsys):
    cfg = dict(BASE_CONFIG, dataset="digits", epochs=2)
    write_run(tmp_path / "one", cfg, epoch_metrics(cfg, 0.7))
    out = tmp_path / "r"
    assert cli.main([str(tmp_path / "one"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    assert "70.00" in (out / "report.md").read_text()
    assert cli.main(["report", str(tmp_path / "one")]) == 0      # argv as `lci` passes it on
    assert (tmp_path / "one" / "report" / "report.md").is_file()


@pytest.mark.parametrize("args,needle", [
    (["{missing}"], "no such experiment folder"),
    (["{empty}"], "no runs found under"),
    ([], "required"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, args, needle):
    (tmp_path / "empty").mkdir()
    argv = [a.format(missing=tmp_path / "missing", empty=tmp_path / "empty") for a in args]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert needle in err[-1]
    if args:
        assert len(err) == 1 and err[0].startswith("lci report: ")
