"""One fact in one place: the names of the files in run, trial and study folders, and the
phase names, are string literals only in their one home; everywhere else they are imported."""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("lci", "trainables", "study", "analysis", "lci_study", "benchmarks")
HOMES = {
    "config.json": {"lci/outputs.py"}, "history.csv": {"lci/outputs.py"},
    "label_issues.csv": {"lci/outputs.py"}, "checkpoint.pt": {"lci/outputs.py"},
    # Tune's per-trial results and a run's final result share the name
    "result.json": {"lci/outputs.py", "lci/names.py"},
    "params.json": {"lci/names.py"}, "error.txt": {"lci/names.py"},
    "study.json": {"study/trials.py"}, "study_state.json": {"study/trials.py"},
    "summary.json": {"study/trials.py"},
}
#: phase names: the spec's sections share them ("search:" in a spec, and in study.json), so
#: the modules that read or write those keys use the words as keys; every other module imports
#: the phase names from their home
PHASE_HOME, PHASES = "study/phases.py", ("search", "evaluation", "sweep")
PHASE_CHECKED = ("lci", "trainables", "analysis", "study")
SPEC_KEY_MODULES = ("study/spec/keys.py", "study/spec/load.py", "study/spec/model.py",
                    "study/state.py")


def _literals(path: pathlib.Path):
    """Every plain string constant of a module (docstrings and f-string text excluded)."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}
    inside_f = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs \
                and id(n) not in inside_f:
            yield n.value, n.lineno


def _modules():
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            yield str(p.relative_to(ROOT)), p


def test_file_names_are_literals_only_in_their_home():
    found = [f"{rel}:{line}: {value!r} (home: {sorted(HOMES[value])})"
             for rel, p in _modules() for value, line in _literals(p)
             if value in HOMES and rel not in HOMES[value]]
    assert found == []


def test_phase_names_are_literals_only_in_their_home():
    found = [f"{rel}:{line}: {value!r}" for rel, p in _modules()
             if rel.split("/")[0] in PHASE_CHECKED and rel != PHASE_HOME
             and rel not in SPEC_KEY_MODULES
             for value, line in _literals(p) if value in PHASES]
    assert found == []


def test_the_check_finds_a_literal(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""study.json in a docstring is fine"""\nX = "study.json"\nY = f"{X}/error.txt"\n')
    assert [v for v, _ in _literals(bad)] == ["study.json"]
