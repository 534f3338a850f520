"""Label confidence C = sigmoid(s·(−L + μ + m)), the μ moving average and the CE term."""
import math

import pytest
import torch

from lci.confidence import label_confidence, update_mu, weighted_ce_term
from lci.errors import ConfigError


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_confidence_values_by_hand():
    L = torch.tensor([0.0, 1.0, 3.0])
    C = label_confidence(L, mu=1.0, m=0.5, slope=0.5)
    # s·(−L + μ + m) = 0.5·[1.5, 0.5, −1.5]
    assert C.dtype == torch.float32 and C.shape == (3,)
    for c, z in zip(C.tolist(), [0.75, 0.25, -0.75]):
        assert c == pytest.approx(sigmoid(z), rel=1e-6)


def test_confidence_is_half_at_mu_plus_m():
    mu = torch.tensor(0.8)
    C = label_confidence(torch.tensor([0.8 - 0.3]), mu, m=-0.3)
    assert C.item() == pytest.approx(0.5, abs=1e-7)


def test_confidence_decreases_strictly_with_the_loss():
    L = torch.linspace(0, 10, 101)
    C = label_confidence(L, mu=torch.tensor(2.0), m=0.0)
    assert (C[1:] < C[:-1]).all()


def test_confidence_is_detached():
    L = torch.tensor([0.2, 1.4], requires_grad=True)
    mu = torch.tensor(0.5, requires_grad=True)
    C = label_confidence(L * 2, mu, m=0.0)
    assert not C.requires_grad and C.grad_fn is None
    # a loss built from C and L only gets gradient through the L term
    (C.sum() + L.sum()).backward()
    assert torch.equal(L.grad, torch.ones(2))
    assert mu.grad is None


def test_confidence_float32_from_bf16():
    C = label_confidence(torch.tensor([1.0, 2.0], dtype=torch.bfloat16), 0.0, 0.0)
    assert C.dtype == torch.float32


def test_update_mu_arithmetic():
    mu = update_mu(0.0, torch.tensor([1.0, 2.0, 3.0]))  # 0.7·0 + 0.3·2
    assert isinstance(mu, torch.Tensor) and mu.dim() == 0 and mu.dtype == torch.float32
    assert mu.item() == pytest.approx(0.6)
    mu = update_mu(mu, torch.tensor([4.0]))              # 0.7·0.6 + 0.3·4 = 1.62
    assert mu.item() == pytest.approx(1.62)
    mu = update_mu(mu, torch.tensor([0.0]), momentum=0.5)  # 0.81
    assert mu.item() == pytest.approx(0.81)


def test_update_mu_is_detached():
    L = torch.tensor([1.0, 3.0], requires_grad=True)
    mu = update_mu(torch.tensor(1.0), L * 1.0)
    assert not mu.requires_grad
    assert mu.item() == pytest.approx(0.7 + 0.6)


def test_weighted_ce_mean():
    C = torch.tensor([1.0, 0.5, 0.0, 0.25])
    ce = torch.tensor([2.0, 4.0, 100.0, 8.0])
    out = weighted_ce_term(C, ce)
    assert out.dim() == 0 and out.dtype == torch.float32
    assert out.item() == pytest.approx((2 + 2 + 0 + 2) / 4)


def test_weighted_ce_complement():
    C = torch.tensor([1.0, 0.5, 0.0, 0.25])
    ce = torch.tensor([2.0, 4.0, 100.0, 8.0])
    # Σ C·CE = 6, Σ(1 − C) = 0 + 0.5 + 1 + 0.75 = 2.25
    assert weighted_ce_term(C, ce, "complement").item() == pytest.approx(6 / 2.25)


def test_weighted_ce_complement_all_confident_is_finite():
    out = weighted_ce_term(torch.ones(3), torch.ones(3), "complement")
    assert torch.isfinite(out) and out.item() == pytest.approx(3 / 1e-6, rel=1e-4)


def test_weighted_ce_gradient_flows_to_ce_only():
    ce = torch.tensor([1.0, 2.0], requires_grad=True)
    C = label_confidence(torch.tensor([0.0, 5.0]), 0.0, 0.0)
    weighted_ce_term(C, ce).backward()
    torch.testing.assert_close(ce.grad, C / 2)


def test_weighted_ce_unknown_norm():
    with pytest.raises(ConfigError, match="'mean', 'complement'"):
        weighted_ce_term(torch.ones(2), torch.ones(2), "sum")
