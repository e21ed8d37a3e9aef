"""Leave-one-out through dense blocks: the log-derivatives pull against a log-space
reference and the flows route, with weights skewed far below the dtype's range."""

import numpy as np
import pytest
import torch

from circuits import Circuit
from circuits import leave_one_out as loo
from circuits.structures import random_tensorized
from tests.circuits import oracle
from tests.circuits.helpers import all_assignments, assert_log_close


def small_rat(scale: float, seed: int) -> Circuit:
    """A float64 RAT-SPN over 4 ternary variables with its logits multiplied by ``scale``."""
    rat = random_tensorized(num_vars=4, num_states=3, depth=1, num_repetitions=2, num_sums=3,
                            num_input_distributions=2, seed=seed)
    c = Circuit(rat.root, dtype=torch.float64)
    with torch.no_grad():
        c.logits.mul_(scale)
    return c


def reference_loo(c, x: torch.Tensor) -> np.ndarray:
    """``log p(x) - log p(x_-i)`` from the upward pass with variable ``i`` marginalised (in
    log space, so weights far below the dtype's range stay exact)."""
    out = []
    for i in range(x.shape[1]):
        rest = x.clone()
        rest[:, i] = -1
        out.append((c.log_prob(x) - c.log_prob(rest)).detach())
    return torch.stack(out, 1).numpy()


def test_reference_matches_enumeration():
    c = small_rat(1.0, 0)
    x = all_assignments(c.num_states)
    joint = torch.exp(c.log_prob(x)).detach().numpy().reshape(c.num_states)
    expected = np.stack([oracle.leave_one_out(joint, row.tolist()) for row in x])
    assert_log_close(torch.from_numpy(reference_loo(c, x)), expected, atol=1e-9)


def log_derivatives_route(c, x: torch.Tensor) -> torch.Tensor:
    """``log p(x_i | x_-i)`` by log-derivatives (:func:`circuits.downward.log_derivatives`)."""
    dist = c.distribution()
    return loo.by_log_derivatives(dist._plan, dist._params_for(x.shape[0]), x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_pull_through_dense_blocks_matches_enumeration(seed):
    c = small_rat(1.0, seed)
    assert any(g.kind == "dense" for g in c._plans[torch.device("cpu")].groups())
    x = all_assignments(c.num_states)
    assert_log_close(log_derivatives_route(c, x), reference_loo(c, x), atol=1e-9)
    assert_log_close(c.leave_one_out_log_prob(x), reference_loo(c, x), atol=1e-9)


def test_tiny_weights_stay_exact():
    """Weights so skewed that a shared shift would underflow: the pull must not lose them."""
    c = small_rat(5000.0, 0)
    x = all_assignments(c.num_states)
    assert_log_close(log_derivatives_route(c, x), reference_loo(c, x), atol=1e-9)
    assert_log_close(c.leave_one_out_log_prob(x), reference_loo(c, x), atol=1e-9)


def test_the_pull_gradients_match_the_flows_route():
    c = small_rat(1.0, 3)
    x = all_assignments(c.num_states)[::5]
    dist = c.distribution()
    plan, ext = dist._plan, dist._params_for(x.shape[0])
    flows, finite = loo.by_flows(plan, ext, x, loo.passes._leaf_values(plan, ext, x, x.shape[0]))
    assert bool(finite.all())
    expected, = torch.autograd.grad(flows.sum(), c.logits, retain_graph=True)
    got, = torch.autograd.grad(loo.by_log_derivatives(plan, ext, x).sum(), c.logits)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
