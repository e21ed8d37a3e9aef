"""``Circuit.locally_normalised``: unnormalised sum-edge log-weights -> the normalised logits of
the distribution proportional to the circuit's value, against a brute-force evaluation of the
node DAG under those weights, over many random circuits."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from circuits import Categorical, Product
from circuits.structures import mean_field, selective
from tests.circuits import oracle
from tests.circuits.helpers import PROPERTY, all_assignments, build
from tests.circuits.strategies import random_circuits


def _unnormalised_joint(circuit, log_weights: np.ndarray) -> np.ndarray:
    """The normalised joint table of ``p(x)`` proportional to the node DAG's value with sum
    edges weighted ``exp(log_weights)`` and each leaf normalised on its own (numpy, float64)."""
    plan = circuit._plan_on(torch.device("cpu"))
    node_id = plan.node_of
    edges, leaf_logit = {}, {}                 # sum id -> its edges' log-weights, in order
    for p in range(plan.num_params):
        if int(plan.param_node[p]) >= 0:
            edges.setdefault(int(plan.param_node[p]), []).append(log_weights[p])
        else:
            leaf_logit[(int(plan.param_leaf[p]), int(plan.param_state[p]))] = log_weights[p]
    order = [node for node in plan.nodes if isinstance(node, Categorical)]
    leaf_index = {id(node): i for i, node in enumerate(order)}
    num_states = plan.num_states
    n = len(num_states)
    tables = {}
    for node in oracle.topological(circuit.root):
        if isinstance(node, Categorical):
            shape = [1] * n
            shape[node.var] = node.num_states
            logits = np.full(node.num_states, -np.inf)
            for s in node.support:
                logits[s] = leaf_logit.get((leaf_index[id(node)], s), 0.0)
            probs = np.exp(logits - np.logaddexp.reduce(logits))
            tables[id(node)] = probs.reshape(shape)
        elif isinstance(node, Product):
            table = np.ones([1] * n)
            for child in node.children:
                table = table * tables[id(child)]
            tables[id(node)] = table
        else:                                  # a one-child sum has no parameter
            weights = edges.get(node_id[node], [0.0] * len(node.children))
            tables[id(node)] = sum(math.exp(w) * tables[id(child)]
                                   for w, child in zip(weights, node.children, strict=True))
    joint = np.broadcast_to(tables[id(circuit.root)], num_states)
    return joint / joint.sum()


@PROPERTY
@given(random_circuits(), st.integers(0, 2**16))
def test_the_distribution_is_the_normalised_circuit_value(rc, seed):
    circuit = build(rc)
    rng = np.random.default_rng(seed)
    log_weights = rng.normal(0.0, 2.0, size=(2, circuit.num_params))
    logits = circuit.locally_normalised(torch.tensor(log_weights))
    x = all_assignments(rc.num_states)
    got = circuit.distribution(logits).log_prob(x[:, None, :].expand(-1, 2, -1)).T   # [2, X]
    for row in range(2):
        expected = _unnormalised_joint(circuit, log_weights[row]).reshape(-1)
        np.testing.assert_allclose(got[row].exp().numpy(), expected, atol=1e-10)


def test_each_group_comes_out_normalised_and_normalised_weights_are_kept():
    torch.manual_seed(0)
    circuit = selective(4, 3, 5).double()
    plan = circuit._plan_on(torch.device("cpu"))
    logits = circuit.locally_normalised(3 * torch.randn(3, circuit.num_params,
                                                        dtype=torch.float64))
    mass = torch.zeros(3, plan.num_param_groups, dtype=torch.float64)
    mass.index_add_(1, plan.param_group, logits.exp())
    torch.testing.assert_close(mass, torch.ones_like(mass))
    # already locally normalised weights describe their own distribution: unchanged
    torch.testing.assert_close(circuit.locally_normalised(logits), logits)


def test_zero_sum_weights_give_a_product_of_the_leaves():
    # a mean-field circuit: no sums, the leaves normalised on their own
    torch.manual_seed(1)
    circuit = mean_field(3, 4).double()
    log_weights = torch.randn(2, circuit.num_params, dtype=torch.float64)
    torch.testing.assert_close(circuit.distribution(circuit.locally_normalised(log_weights))
                               .marginals(),
                               circuit.distribution(log_weights).marginals())


def test_gradients_flow_and_bad_input_is_named():
    circuit = selective(3, 3, 4)
    log_weights = torch.randn(2, circuit.num_params, requires_grad=True)
    circuit.distribution(circuit.locally_normalised(log_weights)).entropy().sum().backward()
    assert log_weights.grad is not None and torch.isfinite(log_weights.grad).all()
    with pytest.raises(ValueError, match="num_params"):
        circuit.locally_normalised(torch.zeros(2, circuit.num_params + 1))
    with pytest.raises(ValueError, match="NaN"):
        circuit.locally_normalised(torch.full((1, circuit.num_params), float("nan")))
