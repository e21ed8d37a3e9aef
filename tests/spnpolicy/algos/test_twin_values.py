"""Both critics at once (TwinValues) equal each critic's own FactorValues queries, and the
critic loss on them equals the sum of the two critics' losses."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from circuits.structures import selective
from factor_q import FactorGraph
from spnpolicy.algos.critics import TwinFactorQ, TwinValues, expectations
from circuits.region_tree import RegionTree
from spnpolicy.algos.spn_ac import critic_loss

GRAPHS = [FactorGraph.complete(3), FactorGraph(3, [(0, 1, 2), (2, 0)]), FactorGraph(3, [])]


@pytest.mark.parametrize("graph", GRAPHS, ids=["pairs", "mixed", "none"])
@pytest.mark.parametrize("unary", [True, False])
@pytest.mark.parametrize("rank", [None, 2])
def test_twin_queries_equal_each_critic(graph, unary, rank):
    if not unary and graph.num_factors == 0:
        pytest.skip("no terms")
    torch.manual_seed(0)
    critic = TwinFactorQ(graph, state_dim=5, num_actions=3, hidden=(8,), unary=unary,
                         rank=rank).double()
    values = critic(torch.randn(4, 5, dtype=torch.float64))
    assert isinstance(values, TwinValues) and len(values) == 2
    actions = torch.tensor(list(itertools.product(range(3), repeat=3)))[[0, 5, 13, 26]]
    torch.testing.assert_close(values.evaluate(actions),
                               torch.stack([v.evaluate(actions) for v in values]))
    circuit = selective(3, 3, 4)
    params = torch.randn(4, circuit.num_params, dtype=torch.float64)
    for dist in (circuit.double().distribution(params),
                 RegionTree.from_circuit(circuit).distribution(params)):
        torch.testing.assert_close(expectations(values, dist),
                                   torch.stack([v.expectation(dist) for v in values]))
        torch.testing.assert_close(expectations(list(values), dist),
                                   torch.stack([v.expectation(dist) for v in values]))
    target = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(critic_loss(values, actions, target),
                               sum(F.mse_loss(v.evaluate(actions), target) for v in values))


def test_twin_evaluate_checks_actions():
    critic = TwinFactorQ(FactorGraph.complete(3), state_dim=5, num_actions=3, hidden=(8,))
    values = critic(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"range\(3\)"):
        values.evaluate(torch.tensor([[0, 1, 3], [0, 0, 0]]))
