"""TrainConfig: validation with clear messages, coercion of CLI strings, resolution per data set."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from lci.config import METHODS, ROBUST_LOSSES, TrainConfig, parse_noise
from lci.errors import ConfigError, LCIError


def test_defaults_are_valid_and_resolve_for_digits():
    cfg = TrainConfig().resolved()
    assert cfg.model == "small_cnn" and isinstance(cfg.epochs, int) and cfg.lr > 0


def test_cifar_profiles_follow_gjs_settings():
    c10 = TrainConfig(dataset="cifar10", noise="sym:0.4").resolved()
    assert (c10.model, c10.epochs, c10.batch_size, c10.lr, c10.weight_decay) == \
        ("preact_resnet34", 400, 128, 0.1, 5e-4)
    assert TrainConfig(dataset="cifar10", noise="asym:0.4").resolved().weight_decay == 1e-3
    c100 = TrainConfig(dataset="cifar100", noise="asym:0.4").resolved()
    assert (c100.lr, c100.weight_decay) == (0.4, 1e-4)


@pytest.mark.parametrize("changes,needle", [
    ({"method": "foo"}, "unknown method 'foo'; allowed: 'lci'"),
    ({"robust_loss": "xx"}, "unknown robust_loss 'xx'"),
    ({"model": "vgg"}, "unknown model 'vgg'; allowed:"),
    ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
    ({"noise": "sym:1.2"}, "outside [0, 1]"),
    ({"noise": "sym:-0.1"}, "outside [0, 1]"),
    ({"noise": "gauss:0.1"}, "is not a noise setting"),
    ({"noise": "asym:0.4", "dataset": "x.npz"}, "has none"),
    ({"noise": "matrix"}, "needs noise_transition"),
    ({"val_fraction": 1.0}, "must be below 1"),
    ({"correction_start": 2.0}, "outside [0.0, 1.0]"),
    ({"slope": 0}, "slope=0.0 is outside (0.0, inf]"),
    ({"robust_loss_params": {"z": 1}}, "allowed: 'q'"),
    ({"epochs": 0}, "positive integer"),
    ({"ce_norm": "sum"}, "allowed: 'mean', 'complement'"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"nesterov": "maybe"}, "must be true or false"),
])
def test_bad_values_name_the_key_and_the_allowed_values(changes, needle):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict(changes)
    assert needle in str(e.value)


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match="unknown config key 'lamda'; allowed: dataset"):
        TrainConfig.from_dict({"lamda": 0.1})


def test_cli_strings_are_coerced():
    cfg = TrainConfig.from_dict({"m": "-1.5", "epochs": "3", "nesterov": "false",
                                 "robust_loss_params": '{"q": 0.5}', "lr_milestones": "0.3,0.6"})
    assert cfg.m == -1.5 and cfg.epochs == 3 and cfg.nesterov is False
    assert cfg.robust_loss_params == {"q": 0.5} and cfg.lr_milestones == (0.3, 0.6)


def test_round_trip_through_dict():
    cfg = TrainConfig(method="lci-two-models", m=2.0, robust_loss="sce",
                      robust_loss_params={"a": 0.2, "b": 1.0})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_parse_noise():
    assert parse_noise("sym:0.8") == ("sym", 0.8)
    assert parse_noise("none") == ("none", 0.0)
    assert parse_noise("ASYM:0.4") == ("asym", 0.4)


# Property: any mapping either builds a valid config or raises an LCIError — never another
# exception type from deep inside.
values = st.one_of(st.none(), st.booleans(), st.integers(-5, 500), st.floats(allow_nan=True),
                   st.text(max_size=12), st.sampled_from(list(METHODS) + list(ROBUST_LOSSES)),
                   st.lists(st.floats(0, 1), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                          st.floats(), max_size=2))
keys = st.sampled_from(TrainConfig.field_names() + ["bogus", "Method", ""])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=4))
def test_any_config_is_valid_or_a_clear_error(d):
    try:
        cfg = TrainConfig.from_dict(d)
    except LCIError as e:
        msg = str(e)
        assert msg and "\n" not in msg
        return
    assert 0.0 <= cfg.noise_rate <= 1.0
    assert math.isfinite(cfg.m)


def test_asym_noise_is_accepted_exactly_where_lci_noise_has_a_mapping(tmp_path, monkeypatch):
    from lci.noise import ASYM_MAPS

    # a user's image folder named "mnist": lci.noise maps its classes as digits'
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()
    assert TrainConfig(dataset="mnist", noise="asym:0.2").noise == "asym:0.2"
    with pytest.raises(ConfigError, match="asym noise is defined for " + ", ".join(
            repr(k) for k in ASYM_MAPS)):
        TrainConfig(dataset="x.npz", noise="asym:0.2")
