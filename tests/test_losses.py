"""Per-sample losses pinned to values worked out by hand (docs/method.md §6).

Most cases use logits [0, ln 3], whose softmax is p = [1/4, 3/4], and [0, 0] -> [1/2, 1/2].
"""
import math

import pytest
import torch
import torch.nn.functional as F

from lci.errors import ConfigError
from lci.losses import LOSS_DEFAULTS, available, check_params, get_loss, jsd, kl_div_logits

LN = math.log
P14 = torch.tensor([[0.0, LN(3.0)]])  # p = [1/4, 3/4]
HALF = torch.tensor([[0.0, 0.0]])     # p = [1/2, 1/2]
Y0 = torch.tensor([0])
Y1 = torch.tensor([1])
ALL = ["ce", "bs", "ls", "mae", "gce", "sce", "nce_rce", "js", "gjs"]


def call(name, logits, labels, **params):
    fn = get_loss(name, **params)
    return fn([logits] if name == "gjs" else logits, labels)


def close(t, value, tol=1e-6):
    assert t.dtype == torch.float32
    assert t.shape == (1,)
    assert t.item() == pytest.approx(value, rel=tol, abs=tol)


def test_available_is_the_spec_list():
    assert sorted(available()) == sorted(ALL)
    assert set(LOSS_DEFAULTS) == set(ALL)


def test_defaults_match_the_spec():
    assert LOSS_DEFAULTS == {
        "ce": {}, "bs": {"t": 0.2}, "ls": {"eps": 0.1}, "mae": {"scale": 2.0},
        "gce": {"q": 0.7}, "sce": {"a": 0.1, "b": 1.0}, "nce_rce": {"a": 1.0, "b": 1.0},
        "js": {"pi1": 0.5}, "gjs": {"pi1": 0.5}}


# ----------------------------------------------------------------------- hand values


def test_ce():
    close(call("ce", P14, Y0), LN(4))        # −ln(1/4)
    close(call("ce", P14, Y1), LN(4 / 3))    # −ln(3/4)


def test_ce_soft_target():
    # target [0.3, 0.7]: 0.3·ln 4 + 0.7·ln(4/3)
    close(call("ce", P14, torch.tensor([[0.3, 0.7]])), 0.3 * LN(4) + 0.7 * LN(4 / 3))
    # a one-hot float target equals the integer label
    close(call("ce", P14, torch.tensor([[1.0, 0.0]])), LN(4))


def test_bs():
    # target 0.8·[1,0] + 0.2·[1/4,3/4] = [0.85, 0.15]
    close(call("bs", P14, Y0), 0.85 * LN(4) + 0.15 * LN(4 / 3))
    close(call("bs", P14, Y0, t=0.0), LN(4))


def test_bs_bootstrap_target_is_not_detached():
    x = P14.clone().requires_grad_()
    get_loss("bs", t=1.0)(x, Y0).sum().backward()  # t=1: entropy of p, gradient != 0
    assert x.grad.abs().sum() > 0


def test_ls():
    # K=2, eps=0.1: target [0.9 + 0.05, 0.05] = [0.95, 0.05]
    close(call("ls", P14, Y0), 0.95 * LN(4) + 0.05 * LN(4 / 3))
    # torch's label_smoothing convention
    ref = F.cross_entropy(P14, Y0, label_smoothing=0.1)
    close(call("ls", P14, Y0), ref.item())


def test_mae():
    close(call("mae", P14, Y0), 1.5)  # 2·(1 − 1/4)
    close(call("mae", P14, Y1), 0.5)  # 2·(1 − 3/4) = ‖p − y‖₁ = 1/4 + 1/4
    close(call("mae", P14, Y1, scale=1.0), 0.25)


def test_gce():
    close(call("gce", P14, Y0, q=0.5), 1.0)                  # (1 − √(1/4))/0.5
    close(call("gce", P14, Y1, q=0.5), 2 - math.sqrt(3))     # (1 − √3/2)/0.5
    close(call("gce", P14, Y0, q=1.0), 0.75)                 # q=1 is MAE/2: 1 − 1/4
    close(call("gce", P14, Y0), (1 - 0.25 ** 0.7) / 0.7)     # default q = 0.7


def test_sce():
    # CE = ln 4; RCE = −(1/4·ln 1 + 3/4·ln 1e-4) = 0.75·ln 1e4
    close(call("sce", P14, Y0), 0.1 * LN(4) + 0.75 * LN(1e4))
    close(call("sce", P14, Y0, a=1.0, b=0.0), LN(4))


def test_nce_rce():
    # NCE = ln 4 / (ln 4 + ln(4/3)); RCE = 0.75·ln 1e4
    nce = LN(4) / (LN(4) + LN(4 / 3))
    close(call("nce_rce", P14, Y0), nce + 0.75 * LN(1e4))
    close(call("nce_rce", P14, Y0, a=2.0, b=0.0), 2 * nce)
    close(call("nce_rce", HALF, Y0, b=0.0), 0.5)  # uniform: ln 2 / (2·ln 2)


def test_js():
    # y = [1,0], p = [1/4,3/4], M = ½y + ½p = [5/8, 3/8]
    # KL(y‖M) = ln(8/5); KL(p‖M) = ¼·ln(2/5) + ¾·ln 2; Z = −½·ln ½ = ½·ln 2
    kl_y, kl_p = LN(8 / 5), 0.25 * LN(2 / 5) + 0.75 * LN(2)
    close(call("js", P14, Y0), (0.5 * kl_y + 0.5 * kl_p) / (0.5 * LN(2)))
    # pi1 = 0.3: M = [0.3 + 0.7/4, 0.7·3/4] = [0.475, 0.525]
    kl_y = LN(1 / 0.475)
    kl_p = 0.25 * LN(0.25 / 0.475) + 0.75 * LN(0.75 / 0.525)
    close(call("js", P14, Y0, pi1=0.3), (0.3 * kl_y + 0.7 * kl_p) / (-0.7 * LN(0.7)))


def test_js_of_a_perfect_prediction_is_zero_and_of_a_disjoint_one_is_entropy_over_z():
    far = torch.tensor([[1e4, -1e4]])
    close(call("js", far, Y0), 0.0)
    # disjoint y and p: KL(y‖M) = −ln π1, KL(p‖M) = −ln(1−π1) -> H(π)/Z; π1=½: ln 2 / (½ ln 2) = 2
    close(call("js", far, Y1), 2.0)


def test_gjs_two_views():
    # y = [1,0], p' = [1/4,3/4], p'' = [1/2,1/2], weights [½, ¼, ¼]
    # M = [½ + 1/16 + 1/8, 3/16 + 1/8] = [11/16, 5/16]
    kl_y = LN(16 / 11)
    kl_a = 0.25 * LN(4 / 11) + 0.75 * LN(12 / 5)    # ¼·ln((1/4)/(11/16)) + ¾·ln((3/4)/(5/16))
    kl_b = 0.5 * LN(8 / 11) + 0.5 * LN(8 / 5)
    expect = (0.5 * kl_y + 0.25 * kl_a + 0.25 * kl_b) / (0.5 * LN(2))
    close(get_loss("gjs")([P14, HALF], Y0), expect)
    close(get_loss("gjs")([HALF, P14], Y0), expect)  # views are exchangeable


def test_gjs_with_identical_views_or_one_view_equals_js():
    x = torch.randn(5, 4)
    y = torch.randint(0, 4, (5,))
    js = get_loss("js", pi1=0.3)(x, y)
    torch.testing.assert_close(get_loss("gjs", pi1=0.3)([x, x], y), js)
    torch.testing.assert_close(get_loss("gjs", pi1=0.3)([x], y), js)
    torch.testing.assert_close(get_loss("gjs", pi1=0.3)(x, y), js)  # a bare tensor is one view


def test_jsd_and_kl():
    # p = [1/4,3/4], q = [1/2,1/2], M = [3/8, 5/8]
    kl_p = 0.25 * LN(2 / 3) + 0.75 * LN(6 / 5)
    kl_q = 0.5 * LN(4 / 3) + 0.5 * LN(4 / 5)
    close(jsd(P14, HALF), 0.5 * kl_p + 0.5 * kl_q)
    close(jsd(HALF, P14), 0.5 * kl_p + 0.5 * kl_q)
    close(jsd(P14, P14), 0.0)
    # KL(p‖q) = ¼·ln(½) + ¾·ln(3/2); KL(q‖p) = ½·ln 2 + ½·ln(2/3)
    close(kl_div_logits(P14, HALF), 0.25 * LN(0.5) + 0.75 * LN(1.5))
    close(kl_div_logits(HALF, P14), 0.5 * LN(2) + 0.5 * LN(2 / 3))
    # disjoint predictions: JSD = ln 2
    close(jsd(torch.tensor([[1e4, -1e4]]), torch.tensor([[-1e4, 1e4]])), LN(2))


# ------------------------------------------------------------------ shapes and numerics


def _inputs(n=6, k=5, scale=1.0, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, k, generator=g) * scale).to(dtype)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


@pytest.mark.parametrize("name", ALL)
def test_per_sample_float32_under_bf16(name):
    x, y = _inputs(dtype=torch.bfloat16)
    out = call(name, x, y)
    assert out.shape == (6,) and out.dtype == torch.float32
    ref = call(name, x.float(), y)  # the same values as the float32 computation
    torch.testing.assert_close(out, ref)
    assert (out >= -1e-6).all()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_logits_give_finite_values_and_gradients(name, dtype):
    k = 4
    x = torch.full((2 * k, k), -1e4)
    x[torch.arange(2 * k), torch.arange(2 * k) % k] = 1e4  # saturated, right and wrong
    x = x.to(dtype).requires_grad_()
    y = torch.cat([torch.arange(k), (torch.arange(k) + 1) % k])
    out = call(name, x, y)
    assert torch.isfinite(out).all(), out
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    # also p -> 0 with moderately large logits, and a gjs with two different views
    if name == "gjs":
        a = (torch.randn(8, k) * 80).requires_grad_()
        b = (torch.randn(8, k) * 80).requires_grad_()
        out = get_loss("gjs")([a, b], y)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(a.grad).all()


@pytest.mark.parametrize("fn", [jsd, kl_div_logits])
def test_divergences_are_finite_at_extreme_logits(fn):
    a = torch.tensor([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]], dtype=torch.bfloat16, requires_grad=True)
    b = torch.tensor([[-1e4, 1e4, 0.0], [1e4, -1e4, 0.0]], requires_grad=True)
    out = fn(a, b)
    assert out.dtype == torch.float32 and out.shape == (2,)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


@pytest.mark.parametrize("name", ["bs", "ls", "sce", "nce_rce", "js", "gjs"])
def test_one_hot_soft_targets_equal_integer_labels(name):
    x, y = _inputs()
    soft = F.one_hot(y, 5).float()
    torch.testing.assert_close(call(name, x, soft), call(name, x, y))


@pytest.mark.parametrize("name", ["mae", "gce"])
def test_soft_targets_unsupported_raise(name):
    x, y = _inputs()
    with pytest.raises(ValueError, match="integer class labels"):
        call(name, x, F.one_hot(y, 5).float())


# -------------------------------------------------------------------------------- errors


def test_unknown_loss_lists_names():
    with pytest.raises(ConfigError) as e:
        get_loss("focal")
    for name in ALL:
        assert repr(name) in str(e.value)


def test_unknown_parameter_names_allowed_ones():
    with pytest.raises(ConfigError, match=r"unknown parameter 'z' for loss 'gce'; allowed: 'q'"):
        get_loss("gce", z=1.0)
    with pytest.raises(ConfigError, match=r"'a', 'b'"):
        check_params("sce", {"q": 0.5})
    with pytest.raises(ConfigError, match="no parameters"):
        check_params("ce", {"q": 0.5})


@pytest.mark.parametrize("name,params", [
    ("gce", {"q": 0.0}), ("gce", {"q": 1.5}), ("js", {"pi1": 0.0}), ("gjs", {"pi1": 1.0}),
    ("bs", {"t": -0.1}), ("ls", {"eps": 1.1}), ("mae", {"scale": -1.0}),
    ("sce", {"a": -0.1}), ("nce_rce", {"b": -2.0}), ("gce", {"q": float("nan")}),
    ("gce", {"q": "0.5"}), ("mae", {"scale": float("inf")}),
])
def test_out_of_range_parameters(name, params):
    key = next(iter(params))
    with pytest.raises(ConfigError, match=key):
        check_params(name, params)


def test_valid_parameters_pass():
    check_params("gce", {"q": 1.0})
    check_params("bs", {"t": 0})
    check_params("ce", {})
    check_params("nce_rce", {"a": 10, "b": 0.0})
