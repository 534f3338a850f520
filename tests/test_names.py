"""lci.names: the one place where methods, noise settings and cell ids are spelled."""
import math

import pytest

from lci.errors import ConfigError
from lci.names import (LCI_METHODS, METHODS, cell_id, default_cell, normalize_noise, noise_tag,
                       parse_noise, setting_id)
from study.spec import load_spec


@pytest.mark.parametrize("bad", ["sym:80", "sym 0.8", "gauss:0.2", "sym:x", None, 0.8])
def test_parse_noise_is_strict(bad):
    with pytest.raises(ConfigError, match="noise="):
        parse_noise(bad)


@pytest.mark.parametrize("noise,expected", [
    ("sym:0.8", ("sym", 0.8)), ("ASYM:0.4", ("asym", 0.4)), ("sym 80%", ("sym", 0.8)),
    ("asym_40", ("asym", 0.4)), ("sym-0.8", ("sym", 0.8)), ("clean", ("none", 0.0)),
    ("sym:0", ("none", 0.0)), ("sym:0.0", ("none", 0.0)), ("matrix", ("matrix", 1.0)),
])
def test_normalize_noise_reads_loose_spellings(noise, expected):
    assert normalize_noise(noise) == expected


def test_normalize_noise_never_raises():
    kind, rate = normalize_noise(None)
    assert kind == "unknown" and math.isnan(rate)
    kind, rate = normalize_noise("gauss 3")
    assert kind == "gauss 3" and math.isnan(rate)
    assert setting_id(float("nan")) == "unknown"


def test_cell_ids():
    assert cell_id("lci", "gce", "sym:0.8") == "lci_gce_sym0.8"
    assert cell_id("ce", "ce", "asym:0.4") == "ce_asym0.4"
    assert cell_id("lci", "mae", "none", "/data/my set.npz") == "my-set_lci_mae_none"
    assert noise_tag("sym:0.0") == "sym0" and noise_tag("matrix") == "matrix"
    with pytest.raises(ConfigError):
        noise_tag("sym 80%")


def test_a_run_without_a_cell_gets_the_studys_cell_id():
    # analysis names an `lci train` run as the study would have named its cell
    spec = load_spec({"name": "t", "fixed": {"dataset": "digits", "epochs": 1},
                      "noise": ["sym:0.0", "sym:0.8", "asym:0.4", "none"],
                      "methods": list(METHODS), "robust_losses": ["gce", "mae"],
                      "evaluation": {"seeds": 1}})
    assert {c.method for c in spec.cells} == set(METHODS)
    for c in spec.cells:
        assert default_cell(c.base) == c.id
    # a noise spelling the strict parser refuses is still named, leniently
    assert default_cell({"method": "ce", "noise": "sym 80%"}) == "ce_sym0.8"
    assert default_cell({"method": LCI_METHODS[0], "noise": None}) == "lci_gce_unknown"
