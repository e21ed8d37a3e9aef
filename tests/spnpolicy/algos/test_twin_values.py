"""Twin critics as an ensemble (``FactorQ(ensemble=2)``): the ensemble's queries equal each
critic's own FactorValues queries, its picked-output ``evaluate`` the dense tables', and
the critic loss on them equals the sum of the two critics' losses."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.nn.functional as F

from circuits.structures import selective
from factor_q import FactorGraph, FactorQ, FactorValues
from spnpolicy.algos.critics import TwinFactorQ
from spnpolicy.algos.spn_ac import critic_loss
from tests.circuits.helpers import engine

GRAPHS = [FactorGraph.complete(3), FactorGraph(3, [(0, 1, 2), (2, 0)]), FactorGraph(3, [])]


@pytest.mark.parametrize("graph", GRAPHS, ids=["pairs", "mixed", "none"])
@pytest.mark.parametrize("unary", [True, False])
@pytest.mark.parametrize("rank", [None, 2])
def test_twin_queries_equal_each_critic(graph, unary, rank):
    if not unary and graph.num_factors == 0:
        pytest.skip("no terms")
    torch.manual_seed(0)
    critic = FactorQ(graph, state_dim=5, num_actions=3, hidden=(8,), unary=unary, rank=rank,
                     ensemble=2).double()
    values = critic(torch.randn(4, 5, dtype=torch.float64))
    assert isinstance(values, FactorValues) and values.ensemble == 2
    members = [values[0], values[1]]
    assert all(m.ensemble is None for m in members) and len(list(values)) == 2
    actions = torch.tensor(list(itertools.product(range(3), repeat=3)))[[0, 5, 13, 26]]
    torch.testing.assert_close(values.evaluate(actions),
                               torch.stack([v.evaluate(actions) for v in members]))
    torch.testing.assert_close(values.min_evaluate(actions),
                               torch.stack([v.evaluate(actions) for v in members]).min(0).values)
    circuit = selective(3, 3, 4)
    params = torch.randn(4, circuit.num_params, dtype=torch.float64)
    for dist in (engine(circuit.double(), params), circuit.distribution(params)):
        each = torch.stack([v.expectation(dist) for v in members])
        torch.testing.assert_close(values.expectation(dist), each)
        torch.testing.assert_close(values.min_expectation(dist), each.min(0).values)
    target = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(critic_loss(values.evaluate(actions), target),
                               sum(F.mse_loss(v.evaluate(actions), target) for v in members))


def test_twin_evaluate_checks_actions():
    critic = FactorQ(FactorGraph.complete(3), state_dim=5, num_actions=3, hidden=(8,),
                     ensemble=2)
    values = critic(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"range\(3\)"):
        values.evaluate(torch.tensor([[0, 1, 3], [0, 0, 0]]))


def _random_graph(draw_seed: int, n: int, orders: tuple[int, ...]) -> FactorGraph:
    generator = torch.Generator().manual_seed(draw_seed)
    scopes, seen = [], set()
    for order in orders:
        for _ in range(int(torch.randint(1, 5, (), generator=generator))):
            scope = tuple(torch.randperm(n, generator=generator)[:order].tolist())
            if frozenset(scope) not in seen:
                seen.add(frozenset(scope))
                scopes.append(scope)
    return FactorGraph(n, scopes)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(3, 5), k=st.integers(2, 4),
       orders=st.sampled_from([(), (2,), (3,), (2, 3)]), unary=st.booleans(),
       rank=st.sampled_from([None, None, 2]), batch=st.integers(1, 6),
       hidden=st.sampled_from([(6,), (6,), ()]))
def test_evaluate_equals_the_tables_with_gradients(seed, n, k, orders, unary, rank, batch,
                                                   hidden):
    """``FactorQ.evaluate`` of an ensemble (payoff heads summing only the picked outputs)
    equals the dense tables' ``evaluate``, and so do the gradients of every parameter and
    the state."""
    graph = _random_graph(seed, n, orders)
    if not unary and graph.num_factors == 0:
        unary = True
    torch.manual_seed(seed)
    critic = FactorQ(graph, state_dim=4, num_actions=k, hidden=hidden, unary=unary,
                     rank=rank, ensemble=2).double()
    state = torch.randn(batch, 4, dtype=torch.float64, requires_grad=True)
    actions = torch.randint(k, (batch, n))
    weights = torch.randn(2, batch, dtype=torch.float64)
    results = []
    for q in (lambda: critic.evaluate(state, actions),
              lambda: critic.values(state).evaluate(actions)):
        critic.zero_grad(set_to_none=True)
        state.grad = None
        value = q()
        (value * weights).sum().backward()
        results.append((value.detach(), [p.grad.clone() for p in critic.parameters()]
                        + [state.grad.clone()]))
    (fast, fast_grads), (dense, dense_grads) = results
    torch.testing.assert_close(fast, dense)
    for a, b in zip(fast_grads, dense_grads):
        torch.testing.assert_close(a, b)


def test_evaluate_enumerates_every_joint_action():
    """On every joint action of 3 agents with 3 actions (27 rows, one state repeated)."""
    torch.manual_seed(0)
    critic = FactorQ(FactorGraph(3, [(0, 1, 2), (2, 0), (1, 2)]), state_dim=5,
                     num_actions=3, hidden=(8,), ensemble=2).double()
    actions = torch.tensor(list(itertools.product(range(3), repeat=3)))
    state = torch.randn(1, 5, dtype=torch.float64).expand(27, -1)
    values = critic.values(state[:1])
    expected = torch.stack([torch.stack([v.unary[0, torch.arange(3), a].sum()
                                         + sum(t[0][tuple(a[list(s)])] for s, t in
                                               zip(v.graph.scopes(2), v.pairwise.unbind(1)))
                                         + sum(t[0][tuple(a[list(s)])] for s, t in
                                               zip(v.graph.scopes(3), v.triple.unbind(1)))
                                         for a in actions]) for v in values])
    torch.testing.assert_close(critic.evaluate(state, actions), expected)


def test_picked_outputs_have_no_second_derivative():
    critic = FactorQ(FactorGraph.complete(3), state_dim=5, num_actions=3, hidden=(8,),
                     ensemble=2)
    q = critic.evaluate(torch.randn(4, 5), torch.zeros(4, 3, dtype=torch.long))
    head = critic.payoff["2"].weight
    grad, = torch.autograd.grad(q.pow(2).sum(), head, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


def test_checkpoints_of_the_earlier_payoff_layout_load(tmp_path):
    """Payoff weights saved as ``[2, in, out]`` (version 1) load transposed; the current
    layout round-trips as it is (real ``torch.save`` / ``torch.load`` files). spn-ac's twin
    critics (``TwinFactorQ``, a ``FactorQ`` with ``ensemble=2``) keep the layout and the
    parameter names they had as a class of their own."""
    torch.manual_seed(0)
    graph = FactorGraph.random(4, 5, 2, seed=0)
    critic = TwinFactorQ(graph, state_dim=5, num_actions=3, hidden=(8,))
    assert isinstance(critic, FactorQ) and critic.ensemble == 2
    assert sorted(critic.state_dict()) == ["payoff.2.bias", "payoff.2.weight", "torso.0.bias",
                                           "torso.0.weight", "unary_head.bias",
                                           "unary_head.weight"]
    state, actions = torch.randn(6, 5), torch.randint(3, (6, 4))
    expected = critic.evaluate(state, actions)
    old = critic.state_dict()
    old["payoff.2.weight"] = old["payoff.2.weight"].transpose(1, 2).contiguous()
    old._metadata["payoff.2"]["version"] = 1
    for name, state_dict in (("old.pt", old), ("new.pt", critic.state_dict())):
        torch.save(state_dict, tmp_path / name)
        torch.manual_seed(1)
        fresh = TwinFactorQ(graph, state_dim=5, num_actions=3, hidden=(8,))
        fresh.load_state_dict(torch.load(tmp_path / name, weights_only=True))
        torch.testing.assert_close(fresh.evaluate(state, actions), expected)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), graph_index=st.sampled_from(range(len(GRAPHS) - 1)),
       unary=st.booleans())
def test_mean_values_and_critic_mode_equal_enumeration(seed, graph_index, unary):
    """``values.mean()`` is the twins' mean Q on every joint action, and its argmax (what
    spn-ac's mode guidance targets) is the enumerated best joint action."""
    graph = GRAPHS[graph_index]
    torch.manual_seed(seed)
    critic = FactorQ(graph, state_dim=5, num_actions=3, hidden=(8,), unary=unary,
                     ensemble=2).double()
    states = torch.randn(6, 5, dtype=torch.float64)
    values = critic(states)
    mean = values.mean()
    assert mean.ensemble is None
    joint = torch.tensor(list(itertools.product(range(3), repeat=3)))
    table = torch.stack([critic.evaluate(states, u.expand(6, 3)).mean(0) for u in joint])
    torch.testing.assert_close(torch.stack([mean.evaluate(u.expand(6, 3)) for u in joint]),
                               table)
    best = mean.argmax()
    torch.testing.assert_close(mean.evaluate(best), table.max(0).values)
