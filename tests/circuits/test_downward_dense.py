"""Leave-one-out through dense blocks: the matrix-product pull and its exact fallback."""

import numpy as np
import pytest
import torch

from circuits import Circuit, downward
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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dense_pull_matches_enumeration(seed):
    c = small_rat(1.0, seed)
    plan = c._plans[torch.device("cpu")]
    assert any(groups for groups, _ in downward._pull(plan).dense), "no dense pull to test"
    x = all_assignments(c.num_states)
    assert_log_close(c.leave_one_out_log_prob(x), reference_loo(c, x), atol=1e-9)


def test_tiny_weights_fall_back_to_the_exact_pull(monkeypatch):
    """Weights so skewed that a shared shift underflows: the pull must not lose them."""
    c = small_rat(5000.0, 0)
    calls = []
    pull_dense = downward._pull_dense
    monkeypatch.setattr(downward, "_pull_dense", lambda *a: calls.append(pull_dense(*a)) or calls[-1])
    x = all_assignments(c.num_states)
    loo = c.leave_one_out_log_prob(x)
    assert False in calls, "the fallback was not exercised"
    assert_log_close(loo, reference_loo(c, x), atol=1e-9)


def test_dense_pull_gradients_match_the_exact_pull():
    c = small_rat(1.0, 3)
    x = all_assignments(c.num_states)[::5]
    c.zero_grad()
    c.leave_one_out_log_prob(x).sum().backward()
    fast = c.logits.grad.clone()
    plan = c._plans[torch.device("cpu")]
    pull = downward._pull(plan)
    saved, pull.dense = pull.dense, [([], []) for _ in pull.dense]
    try:
        steps = pull.steps
        pull.steps = [buckets + exact for buckets, (_, exact) in zip(steps, saved)]
        c.zero_grad()
        c.leave_one_out_log_prob(x).sum().backward()
    finally:
        pull.steps, pull.dense = steps, saved
    torch.testing.assert_close(fast, c.logits.grad, rtol=1e-10, atol=1e-12)
