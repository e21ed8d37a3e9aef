"""Numerical stability: many variables, deep circuits and extreme logits stay finite."""

import math

import pytest
import torch

from circuits import Categorical, Product, Sum
from circuits.structures import mean_field, mixture, random_tensorized, selective
from tests.circuits.helpers import circuit64


def assert_finite(t: torch.Tensor, what: str) -> None:
    assert torch.isfinite(t).all(), f"{what} not finite: {t}"


@pytest.mark.parametrize("build", [lambda: mean_field(500, 5), lambda: selective(500, 3, width=3)],
                         ids=["mean_field", "selective"])
def test_500_variables(build):
    c = build()
    g = torch.Generator().manual_seed(0)
    x = c.sample(8, generator=g)
    assert x.shape == (8, 500)
    logp = c.log_prob(x)
    assert_finite(logp, "log_prob")
    assert (logp < -100).all()  # ~500 factors below 1: the value really is tiny
    half = x.clone()
    half[:, ::2] = -1
    assert_finite(c.log_prob(half), "log_prob with marginalised vars")
    h = c.entropy()
    assert_finite(h, "entropy")
    assert h.item() > 100
    assert_finite(c.marginals(), "marginals")
    assert_finite(c.leave_one_out_log_prob(x[0]), "leave_one_out_log_prob")
    assert c.mpe().shape == (500,)


def deep_chain(num_vars: int, k: int = 2) -> Sum:
    """A right-deep deterministic circuit: each level splits on one variable and shares the
    sub-circuit below between its children (depth 2 * num_vars, 2**num_vars induced trees)."""
    below = Categorical(num_vars - 1, k, probs=[0.3] + [0.7 / (k - 1)] * (k - 1))
    for var in reversed(range(num_vars - 1)):
        below = Sum([Product([Categorical.indicator(var, s, k), below]) for s in range(k)],
                    weights=[0.6] + [0.4 / (k - 1)] * (k - 1))
    return below


def bernoulli_entropy(q: float) -> float:
    return -(q * math.log(q) + (1 - q) * math.log(1 - q))


def test_deep_selective_circuit():
    n = 300
    c = circuit64(deep_chain(n))
    assert c.is_deterministic
    x = torch.zeros(1, n, dtype=torch.long)
    expected = (n - 1) * math.log(0.6) + math.log(0.3)
    assert math.isclose(c.log_prob(x).item(), expected, rel_tol=1e-9)
    h = c.entropy()
    assert math.isclose(h.item(), (n - 1) * bernoulli_entropy(0.6) + bernoulli_entropy(0.3),
                        rel_tol=1e-9)
    assert torch.equal(c.mpe(), torch.tensor([0] * (n - 1) + [1]))
    assert_finite(c.marginals(), "marginals")
    assert_finite(c.leave_one_out_log_prob(x[0]), "leave_one_out_log_prob")


EXTREME = {
    "selective": lambda: selective(6, 3, width=6),
    "mixture": lambda: mixture(6, 3, 4),
    "random_tensorized": lambda: random_tensorized(6, 3, depth=2, num_repetitions=2,
                                                   num_sums=3, num_input_distributions=3),
}


@pytest.mark.parametrize("name", sorted(EXTREME))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_of_plus_minus_50_give_no_nan(name, dtype):
    c = EXTREME[name]()
    g = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, (4, c.num_params), generator=g).to(dtype) * 2 - 1
    params = (50 * signs).requires_grad_()
    d = c.distribution(params)
    x = d.sample((16,))
    logp = d.log_prob(x)
    assert not torch.isnan(logp).any() and (logp <= 1e-4).all()
    assert torch.isfinite(logp).all(), "sampled assignments must have positive probability"
    m = d.marginals()
    assert_finite(m, "marginals")
    torch.testing.assert_close(m.sum(-1), torch.ones(4, 6, dtype=dtype))
    mode = d.mode
    assert_finite(d.log_prob(mode), "log_prob of the mode")
    cond = d.condition(torch.cat([mode[:, :2], torch.full((4, 4), -1)], dim=1))
    assert_finite(cond.marginals(), "conditional marginals")
    assert torch.equal(cond.mode[:, :2], mode[:, :2])
    assert_finite(d.leave_one_out_log_prob(mode), "leave_one_out_log_prob")
    assert_finite(d.scope_marginals([(0, 5), (2, 3)]), "scope_marginals")
    total = logp.sum() + m.sum()
    if c.is_deterministic:
        h = d.entropy()
        assert_finite(h, "entropy")
        assert (h >= -1e-4).all()
        total = total + h.sum()
    (grad,) = torch.autograd.grad(total, params)
    assert not torch.isnan(grad).any()


@pytest.mark.parametrize("scale", [1e6, 1e8, 1e30])
def test_equal_huge_logits_give_uniform_marginals(scale):
    m = mean_field(1, 3).distribution(torch.full((1, 3), scale)).marginals()
    torch.testing.assert_close(m, torch.full((1, 1, 3), 1 / 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_random_logits_keep_total_mass_one(dtype):
    c = selective(4, 3, width=4)
    g = torch.Generator().manual_seed(0)
    params = ((torch.randint(0, 2, (8, c.num_params), generator=g) * 2 - 1) * 1e4).to(dtype)
    d = c.distribution(params)
    x = torch.cartesian_prod(*[torch.arange(3)] * 4)                 # every joint assignment
    logp = d.log_prob(x.unsqueeze(1).expand(-1, 8, -1))              # [81, 8]
    torch.testing.assert_close(torch.logsumexp(logp.double(), 0), torch.zeros(8, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    reference = c.distribution(params.double()).log_prob(x.unsqueeze(1).expand(-1, 8, -1))
    finite = torch.isfinite(reference)
    assert torch.equal(torch.isfinite(logp), finite)
    torch.testing.assert_close(logp.double()[finite], reference[finite], atol=1e-3, rtol=1e-5)


def test_float32_leave_one_out_never_exceeds_zero():
    c = selective(500, 6, width=8)
    g = torch.Generator().manual_seed(0)
    params = torch.randn(4, c.num_params, generator=g) * 3
    d = c.distribution(params)
    x = d.sample((8,), generator=g)
    loo = d.leave_one_out_log_prob(x)
    assert torch.isfinite(loo).all() and (loo <= 0).all(), loo.max()
