"""The method registry (lci.methods) is the one source of the method facts: the config's
allowed methods, the engine's step, active terms and models, the spec's parameters, the
protocol view's and the figures' models all read it."""
import dataclasses

import pytest
import torch

from lci.augment import Augmenter
from lci.config import METHODS, TrainConfig
from lci.engine import Engine
from lci.errors import ConfigError
from lci.methods import (LCI_ONLY_PARAMS, METHODS_REGISTRY, STEPS, TERMS, Method, get_method,
                         has_two_models, loss_of, uses_param)
from lci.models import create_model
from study.protocol_view import views_of
from study.spec import param_applies


def test_every_allowed_method_is_registered_and_nothing_else():
    assert list(METHODS) == list(METHODS_REGISTRY)
    for name in METHODS:
        m = get_method(name)
        assert isinstance(m, Method) and m.name == name and m.step in STEPS
    with pytest.raises(ConfigError, match="unknown method 'lci-triple'.*'lci-single'"):
        get_method("lci-triple")
    with pytest.raises(ConfigError, match="unknown method 'lci-triple'"):
        TrainConfig(method="lci-triple")


@pytest.mark.parametrize("name", METHODS)
def test_an_entry_is_consistent(name):
    m = get_method(name)
    fields = set(TrainConfig.field_names())
    assert set(m.params) <= fields and set(m.params) <= set(LCI_ONLY_PARAMS)
    # terms: a subsequence of TERMS; a second model exists exactly where the penalty ties them
    assert m.terms == tuple(t for t in TERMS if t in m.terms) and m.terms[0] == "loss_robust"
    assert (m.models == 2) == ("loss_penalty" in m.terms) == ("lam" in m.params)
    assert ("loss_jsd" in m.terms) == ("rho" in m.params)
    assert m.is_lci == ("loss_ce" in m.terms) == bool(m.params)
    assert loss_of(name, "gce") == ("gce" if m.is_lci else name)


def _engine(method):
    cfg = TrainConfig(method=method, model="small_cnn", epochs=1, batch_size=4, lr=0.01,
                      weight_decay=0.0, augment="none", lr_schedule="constant", device="cpu")
    aug = Augmenter([0.5], [0.25], pad=0, hflip=False, mode="none",
                    generator=torch.Generator().manual_seed(0))
    return Engine(cfg, lambda: create_model("small_cnn", num_classes=3, in_channels=1,
                                            image_size=8),
                  num_classes=3, augmenter=aug, device=torch.device("cpu"), total_steps=4)


@pytest.mark.parametrize("name", ["lci", "lci-two-models", "lci-single", "gjs"])
def test_the_engine_follows_the_registry(name, monkeypatch):
    eng = _engine(name)
    m = get_method(name)
    assert eng.active_terms() == m.terms
    assert len(eng.models()) == m.models == (2 if TrainConfig(method=name).two_models else 1)
    out = eng.step(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8),
                   torch.tensor([0, 1, 2, 0]))
    assert [k for k in TERMS if out[k] is not None] == list(m.terms)
    # a changed entry changes the engine: the registry is read, not a second table
    fewer = dataclasses.replace(m, terms=m.terms[:1])
    monkeypatch.setitem(METHODS_REGISTRY._items, name, fewer)
    assert _engine(name).active_terms() == ("loss_robust",)


def test_the_spec_the_protocol_view_and_the_figures_read_the_registry(monkeypatch):
    assert param_applies("rho", "lci", "gce") and not param_applies("rho", "lci-two-models", "gce")
    assert param_applies("m", "lci-single", "gce") and not param_applies("m", "gce", "gce")
    assert has_two_models("lci") and not has_two_models("lci-single")
    assert not has_two_models("unknown") and not has_two_models(float("nan"))
    cfg = TrainConfig(method="lci-two-models", augment="weak")
    assert views_of(cfg) == "θ: 1 weak (x'); θ*: 1 weak (x')"
    single = dataclasses.replace(get_method("lci-single"), params=("alpha",))
    monkeypatch.setitem(METHODS_REGISTRY._items, "lci-single", single)
    assert not uses_param("lci-single", "m") and not param_applies("m", "lci-single", "gce")
    assert param_applies("alpha", "lci-single", "gce")
