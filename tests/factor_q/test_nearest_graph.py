"""Pairwise factors chosen per state (NearestGraph): the graph against a plain-loop nearest
search, and every query of values on it against brute-force enumeration."""

import itertools
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits.structures import mean_field, selective
from factor_q import (AgentFactorQ, FactorGraph, FactorQ, FactorValues, NearestGraph, elbo,
                      log_partition)
from tests.factor_q.test_factor_values import brute_force_local_values

BATCH = 3


def loop_scopes(positions, neighbours):
    """Each state's slots and kept flags by plain loops: agent ``i``'s ``r`` nearest by
    (squared distance, index); ``(i, j)`` dropped when ``i > j`` and ``i`` is among ``j``'s."""
    out_scopes, out_kept = [], []
    for state in positions.tolist():
        n = len(state)
        nearest = []
        for i in range(n):
            others = sorted((sum((a - b) ** 2 for a, b in zip(state[i], state[j])), j)
                            for j in range(n) if j != i)
            nearest.append([j for _, j in others[:neighbours]])
        out_scopes.append([(i, j) for i in range(n) for j in nearest[i]])
        out_kept.append([not (i > j and i in nearest[j]) for i in range(n) for j in nearest[i]])
    return out_scopes, out_kept


@st.composite
def positions(draw, max_agents=7):
    n = draw(st.integers(2, max_agents), label="agents")
    neighbours = draw(st.integers(1, n - 1), label="neighbours")
    dims = draw(st.integers(1, 3), label="dims")
    seed = draw(st.integers(0, 2**16), label="seed")
    # a small grid, so that ties happen
    cells = np.random.default_rng(seed).integers(0, 4, size=(BATCH, n, dims))
    return NearestGraph(n, neighbours), torch.tensor(cells, dtype=torch.float32)


@settings(max_examples=60, deadline=None)
@given(case=positions())
def test_scopes_match_a_plain_nearest_search(case):
    graph, where = case
    scopes, kept = graph.scopes(where)
    expected_scopes, expected_kept = loop_scopes(where, graph.neighbours)
    assert scopes.shape == (BATCH, graph.num_factors, 2) and scopes.dtype == torch.long
    assert [[tuple(s) for s in row] for row in scopes.tolist()] == expected_scopes
    assert kept.tolist() == expected_kept
    for row, flags in zip(scopes.tolist(), kept.tolist()):   # each pair of agents once
        pairs = [frozenset(s) for s, keep in zip(row, flags) if keep]
        assert len(pairs) == len(set(pairs)) == len({frozenset(s) for s in row})


@pytest.mark.parametrize("neighbours", [1, 3, 39])
def test_scopes_break_many_ties_by_index(neighbours):
    """40 agents on a 6 x 6 grid: most distances tie, and the order is (distance, index)."""
    graph = NearestGraph(40, neighbours)
    where = torch.tensor(np.random.default_rng(neighbours).integers(0, 6, size=(BATCH, 40, 2)),
                         dtype=torch.float32)
    scopes, kept = graph.scopes(where)
    expected_scopes, expected_kept = loop_scopes(where, neighbours)
    assert [[tuple(s) for s in row] for row in scopes.tolist()] == expected_scopes
    assert kept.tolist() == expected_kept


def test_graph_checks_and_pickles():
    with pytest.raises(ValueError, match="num_agents must be an int >= 2"):
        NearestGraph(1, 1)
    with pytest.raises(ValueError, match="neighbours must be below num_agents=4"):
        NearestGraph(4, 4)
    with pytest.raises(ValueError, match="neighbours must be an int >= 1"):
        NearestGraph(4, 0)
    graph = NearestGraph(4, 2)
    with pytest.raises(ValueError, match=r"positions must be a tensor \[B, num_agents=4, d\], "
                                         r"got \[2, 3, 2\]"):
        graph.scopes(torch.zeros(2, 3, 2))
    assert pickle.loads(pickle.dumps(graph)) == graph and graph != NearestGraph(4, 1)
    with pytest.raises(AttributeError, match="immutable"):
        graph.neighbours = 3


# --------------------------------------------------------------------------- values on it
def brute_force_q(values):
    """``[B, k**n]`` (``[E, B, k**n]``) Q of every joint action by plain loops over actions
    and each state's own factors."""
    unary = values.unary.detach().double().numpy()
    tables = values.pairwise.detach().double().numpy()
    scopes = values.pair_scopes.tolist()
    n, k = values.graph.num_agents, values.num_actions
    out = np.zeros(unary.shape[:-2] + (k**n,))
    for j, u in enumerate(itertools.product(range(k), repeat=n)):
        for b in range(values.batch_size):
            out[..., b, j] = sum(unary[..., b, i, u[i]] for i in range(n))
            for f, (i, m) in enumerate(scopes[b]):
                out[..., b, j] += tables[..., b, f, u[i], u[m]]
    return torch.from_numpy(out)


@st.composite
def nearest_values(draw, ensemble=False):
    """Values of a random AgentFactorQ (float64) on a NearestGraph at random positions."""
    graph, where = draw(positions(max_agents=5))
    k = draw(st.integers(2, 3), label="actions")
    seed = draw(st.integers(0, 2**16), label="seed")
    rank = draw(st.sampled_from([None, 2]), label="rank")
    torch.manual_seed(seed)
    q = AgentFactorQ(graph, input_dim=3, num_actions=k, hidden=(8,), rank=rank,
                     unary=draw(st.booleans(), label="unary"),
                     ensemble=draw(st.integers(1, 3)) if ensemble else None).double()
    return q(torch.randn(BATCH, graph.num_agents, 3, dtype=torch.float64),
             positions=where.double())


def enumerated_probs(dist, n, k):
    u = torch.tensor(list(itertools.product(range(k), repeat=n)))[:, None, :].expand(-1, BATCH, -1)
    return dist.log_prob(u).exp().T


@settings(max_examples=30, deadline=None)
@given(values=nearest_values(ensemble=True), seed=st.integers(0, 2**16))
def test_evaluate_and_table_match_brute_force(values, seed):
    n, k = values.graph.num_agents, values.num_actions
    expected = brute_force_q(values)
    torch.testing.assert_close(values.table().flatten(-n), expected)
    index = torch.randint(k**n, (BATCH,), generator=torch.Generator().manual_seed(seed))
    actions = torch.tensor(list(itertools.product(range(k), repeat=n)))[index]
    torch.testing.assert_close(values.evaluate(actions), expected[..., torch.arange(BATCH), index])


@settings(max_examples=30, deadline=None)
@given(values=nearest_values(ensemble=True), seed=st.integers(0, 2**16))
def test_local_values_match_brute_force(values, seed):
    n, k = values.graph.num_agents, values.num_actions
    expected = brute_force_q(values)                                     # [E, B, k**n]
    actions = torch.randint(k, (BATCH, n), generator=torch.Generator().manual_seed(seed))
    want = brute_force_local_values(expected, actions, n, k)
    torch.testing.assert_close(values.local_values(actions).double(), want)


@pytest.mark.parametrize("kind", ["selective", "mean_field"])
@settings(max_examples=25, deadline=None)
@given(values=nearest_values(ensemble=True), seed=st.integers(0, 2**16))
def test_expectation_and_elbo_match_enumeration(kind, values, seed):
    n, k = values.graph.num_agents, values.num_actions
    circuit = selective(n, k, width=2 * k) if kind == "selective" else mean_field(n, k)
    params = torch.randn(BATCH, circuit.num_params, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(seed))
    dist = circuit.distribution(2 * params)
    probs = enumerated_probs(dist, n, k)
    q = brute_force_q(values)
    torch.testing.assert_close(values.expectation(dist), (probs * q).sum(-1))
    entropy = -(probs * probs.clamp_min(1e-300).log()).sum(-1)
    torch.testing.assert_close(elbo(values, dist, alpha=0.7), (probs * q).sum(-1) + 0.7 * entropy)
    assert (elbo(values, dist, alpha=0.7) <= log_partition(values, alpha=0.7) + 1e-9).all()
    torch.testing.assert_close(values.min_expectation(dist), (probs * q).sum(-1).reshape(
        -1, BATCH).min(0).values)
    one = circuit.distribution(2 * params[0])          # no batch shape: broadcast
    torch.testing.assert_close(values.expectation(one), (enumerated_probs(
        circuit.distribution(2 * params[:1].expand(BATCH, -1)), n, k) * q).sum(-1))


def test_expectation_is_differentiable_in_the_policy_and_the_tables():
    graph = NearestGraph(4, 2)
    q = AgentFactorQ(graph, input_dim=3, num_actions=3, hidden=(8,))
    values = q(torch.randn(BATCH, 4, 3), positions=torch.randn(BATCH, 4, 2))
    circuit = selective(4, 3, width=4)
    params = torch.randn(BATCH, circuit.num_params, requires_grad=True)
    values.expectation(circuit.distribution(params)).sum().backward()
    assert params.grad.abs().sum() > 0
    assert q.payoff["2"].weight.grad.abs().sum() > 0


@settings(max_examples=30, deadline=None)
@given(values=nearest_values(), evidence_seed=st.integers(0, 2**16))
def test_clamp_and_argmax_match_brute_force(values, evidence_seed):
    """max-plus is exact on one nearest neighbour (a forest); clamping keeps Q where the
    evidence agrees and puts every agreeing joint action above every other."""
    n, k = values.graph.num_agents, values.num_actions
    q = brute_force_q(values)
    if values.graph.neighbours == 1:
        best, exact = values.argmax(return_exact=True)
        assert not exact
        torch.testing.assert_close(values.evaluate(best).double(), q.max(-1).values)
    gen = torch.Generator().manual_seed(evidence_seed)
    evidence = torch.randint(-1, k, (BATCH, n), generator=gen)
    clamped = values.clamp(evidence)
    joint = torch.tensor(list(itertools.product(range(k), repeat=n)))
    agree = ((evidence[:, None] < 0) | (joint[None] == evidence[:, None])).all(-1)  # [B, k**n]
    cq = brute_force_q(clamped)
    torch.testing.assert_close(cq[agree], q[agree])
    assert (cq.masked_fill(~agree, -np.inf).max(-1).values
            > cq.masked_fill(agree, -np.inf).max(-1).values).all()


@pytest.mark.parametrize("rank", [None, 2])
def test_values_match_a_fixed_graph_critic_with_the_same_weights_per_state(rank):
    """Each state's values are those of an AgentFactorQ on that state's kept pairs as a
    fixed graph, with the same weights (the weights do not depend on the graph), full and
    low-rank tables."""
    torch.manual_seed(0)
    graph = NearestGraph(6, 2)
    q = AgentFactorQ(graph, input_dim=4, num_actions=3, hidden=(16,), rank=rank, ensemble=2)
    x, where = torch.randn(BATCH, 6, 4), torch.randint(0, 5, (BATCH, 6, 2)).float()
    values = q(x, positions=where)
    scopes, kept = graph.scopes(where)
    assert (values.pairwise[:, ~kept] == 0).all()
    for b in range(BATCH):
        fixed = FactorGraph(6, [tuple(s) for s, keep in zip(scopes[b].tolist(), kept[b].tolist())
                                if keep])
        other = AgentFactorQ(fixed, input_dim=4, num_actions=3, hidden=(16,), rank=rank,
                             ensemble=2)
        other.load_state_dict(q.state_dict())
        torch.testing.assert_close(values.table()[:, b], other(x[b:b + 1]).table()[:, 0])


def test_errors_name_the_input():
    graph, k = NearestGraph(3, 1), 2
    scopes = torch.tensor([[[0, 1], [1, 0], [2, 1]]])
    tables = torch.randn(1, 3, k, k)
    with pytest.raises(ValueError, match="need pairwise tables and their pair_scopes"):
        FactorValues(graph, torch.randn(1, 3, k))
    with pytest.raises(ValueError, match="pair_scopes are for a NearestGraph"):
        FactorValues(FactorGraph(3, [(0, 1)]), pairwise=torch.randn(1, 1, k, k),
                     pair_scopes=scopes[:, :1])
    with pytest.raises(ValueError, match=r"pair_scopes must have shape \[B=1, F, 2\]"):
        FactorValues(graph, pairwise=tables, pair_scopes=scopes[0])
    with pytest.raises(ValueError, match=r"agent indices in range\(3\)"):
        FactorValues(graph, pairwise=tables, pair_scopes=scopes + 1)
    with pytest.raises(ValueError, match="two agents must differ"):
        FactorValues(graph, pairwise=tables, pair_scopes=torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"pairwise must have shape \[1, 3, 2, 2\]"):
        FactorValues(graph, pairwise=tables[:, :2], pair_scopes=scopes)
    values = FactorValues(graph, pairwise=tables, pair_scopes=scopes)
    with pytest.raises(ValueError, match="use method='max_plus'"):
        values.argmax("elimination")
    q = AgentFactorQ(graph, input_dim=2, num_actions=k, hidden=(4,))
    with pytest.raises(ValueError, match=r"positions must be a floating-point tensor \[B=1, 3, d\]"):
        q(torch.randn(1, 3, 2))
    with pytest.raises(ValueError, match="positions given, but this AgentFactorQ's graph is fixed"):
        AgentFactorQ(FactorGraph.line(3), input_dim=2, num_actions=k)(
            torch.randn(1, 3, 2), positions=torch.randn(1, 3, 2))
    with pytest.raises(TypeError, match="graph must be a FactorGraph, got NearestGraph"):
        FactorQ(graph, state_dim=2, num_actions=k)


@pytest.mark.parametrize("structure", ["selective", "mean_field"])
def test_states_with_other_pairs_reuse_one_plan_of_the_circuit(structure):
    """However the states' pairs change from batch to batch, the circuit plans the pair
    tables once (a plan per batch would grow without bound over a training run)."""
    from circuits.region_tree import RegionTree
    circuit = selective(6, 3, width=4) if structure == "selective" else mean_field(6, 3)
    q = AgentFactorQ(NearestGraph(6, 2), input_dim=3, num_actions=3, hidden=(8,))
    params = torch.randn(BATCH, circuit.num_params)
    sizes = []
    for seed in range(4):
        where = torch.randn(BATCH, 6, 2, generator=torch.Generator().manual_seed(seed))
        q(torch.randn(BATCH, 6, 3), positions=where).expectation(circuit.distribution(params))
        tree = RegionTree.from_circuit(circuit)
        sizes.append((len(circuit._kept), 0 if tree is None else len(tree._pair_plans)))
    assert sizes[1:] == sizes[:-1], sizes
