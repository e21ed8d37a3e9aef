"""Structure builders: validity, exactness on small instances, size and expressiveness."""

import math

import numpy as np
import pytest
import torch

from circuits import Circuit, NotDeterministicError
from circuits.structures import mean_field, mixture, random_tensorized, selective
from tests.circuits import oracle
from tests.circuits.helpers import (all_assignments, assert_close, assert_log_close,
                                    engine_joint, float64_default, log)

SMALL = {
    "mean_field": lambda: mean_field(4, 3),
    "mean_field_binary": lambda: mean_field(5, 2),
    "selective": lambda: selective(4, 3, width=4),
    "selective_narrow": lambda: selective(5, 2, width=2),
    "selective_odd": lambda: selective(3, 4, width=5),
    "mixture": lambda: mixture(4, 3, 3),
    "random_tensorized": lambda: random_tensorized(4, 3, depth=2, num_repetitions=2,
                                                   num_sums=3, num_input_distributions=2),
}


def randomise(c: Circuit, seed: int = 0) -> Circuit:
    """Give the circuit's own parameters random values (builders may start uniform)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in c.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return c


def edges(root) -> int:
    return sum(len(node.children) for node in oracle.topological(root))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_builders_return_valid_circuits_that_match_enumeration(name):
    with float64_default():
        c = SMALL[name]()
    assert isinstance(c, Circuit)
    assert c.is_smooth and c.is_decomposable
    p = oracle.joint_table(c.root)
    assert p.shape == tuple(c.num_states)
    assert math.isclose(p.sum(), 1.0, rel_tol=1e-9)
    assert_log_close(c.log_prob(all_assignments(c.num_states)), log(p).reshape(-1))
    assert_close(c.marginals(), oracle.marginals(p, c.max_states))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_builders_stay_normalised_under_random_parameters(name):
    c = randomise(SMALL[name]().double(), seed=3)
    table = engine_joint(c.distribution(), c.num_states)
    assert math.isclose(table.sum(), 1.0, rel_tol=1e-9)
    assert_close(c.marginals(), oracle.marginals(table, c.max_states))
    if c.is_deterministic:
        assert math.isclose(c.entropy().item(), oracle.entropy(table), rel_tol=1e-7)


def test_mean_field_is_a_product_of_its_marginals():
    c = randomise(mean_field(4, 3).double())
    assert c.is_deterministic
    assert c.num_params == 4 * 3
    m = c.marginals().detach().numpy()
    independent = np.einsum("a,b,c,d->abcd", *m)
    np.testing.assert_allclose(engine_joint(c.distribution(), c.num_states), independent,
                               rtol=1e-9)
    assert math.isclose(c.entropy().item(), float(-(m * np.log(m)).sum()), rel_tol=1e-9)


@pytest.mark.parametrize("n, k, width", [(4, 2, 2), (4, 3, 4), (5, 2, 3), (3, 3, 27)])
def test_selective_is_deterministic_smooth_decomposable(n, k, width):
    c = selective(n, k, width)
    assert c.is_deterministic and c.is_smooth and c.is_decomposable
    assert c.num_vars == n and tuple(c.num_states) == (k,) * n
    assert oracle.semantically_deterministic(c.root)
    c = randomise(c.double(), seed=n + k + width)
    table = engine_joint(c.distribution(), c.num_states)
    assert math.isclose(c.entropy().item(), oracle.entropy(table), rel_tol=1e-7)
    assert tuple(c.mpe().tolist()) in oracle.mpe_set(table, rtol=1e-6)[1]


def test_selective_size_is_polynomial_in_the_number_of_variables():
    k, width = 3, 6
    sizes = {n: edges(selective(n, k, width).root) for n in (16, 32, 64)}
    assert sizes[64] <= 4 * 64 * width**2, sizes  # O(num_vars * width**2)
    assert sizes[64] <= 2.5 * sizes[32] and sizes[32] <= 2.5 * sizes[16], sizes


def fit(c: Circuit, target: np.ndarray, steps: int = 300) -> np.ndarray:
    """Maximum-likelihood fit of ``c.distribution(params)`` to ``target``; the fitted joint."""
    params = torch.zeros(1, c.num_params, dtype=torch.float64, requires_grad=True)
    x = all_assignments(c.num_states)[:, None, :]
    weights = torch.tensor(target.reshape(-1), dtype=torch.float64)
    opt = torch.optim.LBFGS([params], lr=1, max_iter=steps, tolerance_grad=1e-12,
                            tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -(weights * c.distribution(params).log_prob(x)[:, 0]).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return engine_joint(c.distribution(params.detach()), c.num_states)[0]


@pytest.mark.parametrize("n, k", [(3, 2), (2, 3), (2, 4)])
def test_selective_with_width_k_to_the_n_represents_any_joint(n, k):
    target = np.random.default_rng(n * 10 + k).dirichlet(np.ones(k**n)).reshape((k,) * n)
    fitted = fit(selective(n, k, width=k**n).double(), target)
    np.testing.assert_allclose(fitted, target, atol=1e-5)


def test_selective_of_width_one_cannot_represent_correlation():
    target = np.zeros((2, 2, 2))
    target[0, 0, 0] = target[1, 1, 1] = 0.5
    fitted = fit(selective(3, 2, width=1).double(), target)
    assert np.abs(fitted - target).max() > 0.1


def test_mixture_is_not_deterministic():
    c = mixture(3, 3, 4)
    assert not c.is_deterministic
    with pytest.raises(NotDeterministicError):
        c.entropy()
    assert c.num_params > 3 * 3


def test_random_tensorized_is_seeded_and_not_deterministic():
    def build(seed):
        return random_tensorized(5, 3, depth=2, num_repetitions=3, num_sums=2,
                                 num_input_distributions=2, seed=seed).double()

    a, b = build(0), build(0)
    assert not a.is_deterministic
    assert a.num_params == b.num_params > 0
    x = all_assignments(a.num_states)
    assert torch.equal(a.log_prob(x), b.log_prob(x))
    assert not torch.allclose(a.log_prob(x), build(1).log_prob(x))
    assert math.isclose(torch.logsumexp(a.log_prob(x), 0).item(), 0.0, abs_tol=1e-9)
