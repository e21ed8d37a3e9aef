"""Empty batches and empty sample shapes give empty results of the right shape (they raised
reshape and division errors), on the engine, the region-tree layout and a policy."""

import pytest
import torch

from circuits.structures import random_tensorized, selective
from spnpolicy.algos.policies import JointPolicy
from tests.circuits.helpers import engine

N, K = 4, 3


def _selective():
    return selective(N, K, 4)


CASES = {
    "engine marginals": (lambda c, p, x: engine(c, p).marginals(), (0, N, K)),
    "engine entropy": (lambda c, p, x: engine(c, p).entropy(), (0,)),
    "engine log_prob": (lambda c, p, x: engine(c, p).log_prob(x), (0,)),
    "engine pairs": (lambda c, p, x: engine(c, p).scope_marginals([(0, 1)]), (0, 1, K, K)),
    "engine triples": (lambda c, p, x: engine(c, p).scope_marginals([(0, 1, 3)]),
                       (0, 1, K, K, K)),
    "engine leave-one-out": (lambda c, p, x: engine(c, p).leave_one_out_log_prob(x), (0, N)),
    "engine condition": (lambda c, p, x: engine(c, p).condition(torch.full((N,), -1))
                         .marginals(), (0, N, K)),
    "engine sample": (lambda c, p, x: engine(c, p).sample((3,)), (3, 0, N)),
    "engine mode": (lambda c, p, x: engine(c, p).mode, (0, N)),
    "tree marginals": (lambda c, p, x: c.distribution(p).marginals(), (0, N, K)),
    "tree pairs": (lambda c, p, x: c.distribution(p).scope_marginals([(0, 2)]),
                   (0, 1, K, K)),
    "tree entropy": (lambda c, p, x: c.distribution(p).entropy(), (0,)),
    "tree log_prob": (lambda c, p, x: c.distribution(p).log_prob(x), (0,)),
    "tree sample": (lambda c, p, x: c.distribution(p).sample((2,)), (2, 0, N)),
    "tree mode": (lambda c, p, x: c.distribution(p).mode, (0, N)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_an_empty_batch_gives_empty_results(name):
    query, shape = CASES[name]
    circuit = _selective()
    params = torch.randn(0, circuit.num_params, requires_grad=True)
    out = query(circuit, params, torch.zeros(0, N, dtype=torch.long))
    assert tuple(out.shape) == shape
    if out.is_floating_point():
        out.sum().backward()
        assert params.grad.shape == params.shape


def test_an_empty_sample_shape_and_policies_acting_on_no_state():
    circuit = _selective()
    params = torch.randn(2, circuit.num_params)
    assert circuit.distribution(params).sample((0,)).shape == (0, 2, N)
    assert engine(circuit, params).sample((0, 3)).shape == (0, 3, 2, N)
    rat = random_tensorized(num_vars=5, num_states=3, depth=2, num_repetitions=2, num_sums=3,
                            num_input_distributions=3, seed=0)
    assert rat.distribution().sample((0,)).shape == (0, 5)
    policy = JointPolicy(5, N, K, "selective", 4, (8,))
    for deterministic in (True, False):
        assert policy.act(torch.zeros(0, 5), deterministic=deterministic).shape == (0, N)
