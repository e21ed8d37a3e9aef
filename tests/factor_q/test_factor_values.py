"""FactorValues queries against brute-force enumeration of all k^n joint actions."""

import itertools

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits import NotDeterministicError
from circuits.structures import mean_field, mixture, selective
from factor_q import AgentFactorQ, FactorGraph, FactorQ, FactorValues, elbo, log_partition

BATCH = 3


def joint_actions(n, k):
    """All joint actions, ``[k**n, n]`` in row-major (table) order."""
    return torch.tensor(list(itertools.product(range(k), repeat=n)), dtype=torch.long)


def brute_force_q(values):
    """``[B, k**n]`` Q of every joint action, by plain loops over actions and factors."""
    unary = values.unary.detach().numpy()
    tables = [t.detach().numpy() for t in values.tables]
    n, k = values.graph.num_agents, values.num_actions
    out = np.zeros((values.batch_size, k**n))
    for j, u in enumerate(itertools.product(range(k), repeat=n)):
        out[:, j] = sum(unary[:, i, u[i]] for i in range(n))
        for scope, table in zip(values.graph.factors, tables):
            out[:, j] += table[(slice(None),) + tuple(u[a] for a in scope)]
    return torch.from_numpy(out)


@st.composite
def random_values(draw, max_agents=5, max_actions=4, ensemble=False):
    """FactorValues (float64) from a random FactorQ (on a state) or AgentFactorQ (on
    per-agent inputs) on a random graph of order 2, 3 or both; with ``ensemble`` an ensemble
    of 1 to 3 of them (``ensemble=E``)."""
    n = draw(st.integers(2, max_agents), label="agents")
    k = draw(st.integers(2, max_actions), label="actions")
    kind = draw(st.sampled_from(["pairs", "triples", "mixed"] if n >= 3 else ["pairs"]))
    seed = draw(st.integers(0, 2**16), label="seed")
    pairs = draw(st.integers(1, min(6, n * (n - 1) // 2))) if kind != "triples" else 0
    triples = draw(st.integers(1, min(4, n * (n - 1) * (n - 2) // 6))) if kind != "pairs" else 0
    factors = []
    if pairs:
        factors += FactorGraph.random(n, pairs, 2, seed=seed).factors
    if triples:
        factors += FactorGraph.random(n, triples, 3, seed=seed + 1).factors
    graph = FactorGraph(n, [f[::-1] if i % 3 == 1 else f for i, f in enumerate(factors)])
    unary = draw(st.booleans(), label="unary")
    rank = draw(st.sampled_from([None, 1, 2, 3]), label="rank")
    per_agent = draw(st.booleans(), label="per-agent inputs")
    members = draw(st.integers(1, 3), label="ensemble") if ensemble else None
    torch.manual_seed(seed)
    if per_agent:
        q = AgentFactorQ(graph, input_dim=3, num_actions=k, hidden=(8,), unary=unary,
                         rank=rank, ensemble=members).double()
        return q(torch.randn(BATCH, n, 3, dtype=torch.float64))
    q = FactorQ(graph, state_dim=3, num_actions=k, hidden=(8,), unary=unary, rank=rank,
                ensemble=members).double()
    return q(torch.randn(BATCH, 3, dtype=torch.float64))


def circuit_distribution(kind, n, k, seed):
    """A random, batched circuit distribution over (n, k): selective or mean field."""
    circuit = selective(n, k, width=2 * k) if kind == "selective" else mean_field(n, k)
    params = torch.randn(BATCH, circuit.num_params, generator=torch.Generator().manual_seed(seed))
    return circuit.distribution(2 * params.double())


def enumerated_probs(dist, n, k):
    """``[B, k**n]`` probabilities of every joint action by ``dist.log_prob``."""
    u = joint_actions(n, k)[:, None, :].expand(-1, BATCH, -1)
    return dist.log_prob(u).exp().T


@settings(max_examples=40, deadline=None)
@given(values=random_values(), seed=st.integers(0, 2**16))
def test_evaluate_and_table_match_brute_force(values, seed):
    n, k = values.graph.num_agents, values.num_actions
    expected = brute_force_q(values)
    torch.testing.assert_close(values.table().flatten(1), expected)
    index = torch.randint(k**n, (BATCH,), generator=torch.Generator().manual_seed(seed))
    actions = joint_actions(n, k)[index]
    torch.testing.assert_close(values.evaluate(actions), expected[torch.arange(BATCH), index])


def brute_force_local_values(expected, actions, n, k):
    """``[*E, B, n, k]``: each agent's row of Q of every joint action ``expected [*E, B,
    k**n]`` with the others at ``actions [B, n]``, by looking each variant up."""
    out = torch.zeros(*expected.shape[:-1], n, k, dtype=expected.dtype)
    for b, u in enumerate(actions.tolist()):
        for i in range(n):
            for a in range(k):
                v = u[:i] + [a] + u[i + 1:]
                out[..., b, i, a] = expected[..., b, sum(x * k ** (n - 1 - j)
                                                          for j, x in enumerate(v))]
    return out


@settings(max_examples=40, deadline=None)
@given(values=random_values(ensemble=True), seed=st.integers(0, 2**16))
def test_local_values_match_brute_force(values, seed):
    n, k = values.graph.num_agents, values.num_actions
    expected = torch.stack([brute_force_q(values[m]) for m in range(values.ensemble)])
    actions = torch.randint(k, (BATCH, n), generator=torch.Generator().manual_seed(seed))
    local = values.local_values(actions)
    torch.testing.assert_close(local, brute_force_local_values(expected, actions, n, k))
    torch.testing.assert_close(values[0].local_values(actions), local[0])
    # each agent's own action reads Q(s, u)
    torch.testing.assert_close(local.gather(-1, actions.expand(len(local), -1, -1)[..., None])
                               [..., 0], values.evaluate(actions)[..., None].expand(-1, -1, n))


@pytest.mark.parametrize("kind", ["selective", "mean_field"])
@settings(max_examples=25, deadline=None)
@given(values=random_values(), seed=st.integers(0, 2**16))
def test_expectation_and_elbo_match_enumeration(kind, values, seed):
    n, k = values.graph.num_agents, values.num_actions
    dist = circuit_distribution(kind, n, k, seed)
    probs = enumerated_probs(dist, n, k)
    q = brute_force_q(values)
    torch.testing.assert_close(values.expectation(dist), (probs * q).sum(1))
    entropy = -(probs * probs.clamp_min(1e-300).log()).sum(1)
    torch.testing.assert_close(elbo(values, dist, alpha=0.7), (probs * q).sum(1) + 0.7 * entropy)
    assert (elbo(values, dist, alpha=0.7) <= log_partition(values, alpha=0.7) + 1e-9).all()


@settings(max_examples=30, deadline=None)
@given(values=random_values(ensemble=True), kind=st.sampled_from(["selective", "mean_field"]),
       seed=st.integers(0, 2**16))
def test_ensemble_queries_match_brute_force_per_member(values, kind, seed):
    """An ensemble's queries are each member's, checked by enumeration; ``mean`` is the
    members' mean Q on every joint action, the ``min_`` queries the smallest member's."""
    n, k, members = values.graph.num_agents, values.num_actions, values.ensemble
    q = torch.stack([brute_force_q(values[j]) for j in range(members)])         # [E, B, k**n]
    dist = circuit_distribution(kind, n, k, seed)
    probs = enumerated_probs(dist, n, k)
    expected = (probs * q).sum(-1)                                               # [E, B]
    entropy = -(probs * probs.clamp_min(1e-300).log()).sum(1)
    index = torch.randint(k**n, (BATCH,), generator=torch.Generator().manual_seed(seed))
    actions, rows = joint_actions(n, k)[index], torch.arange(BATCH)
    torch.testing.assert_close(values.table().flatten(2), q)
    torch.testing.assert_close(values.evaluate(actions), q[:, rows, index])
    torch.testing.assert_close(values.min_evaluate(actions), q[:, rows, index].min(0).values)
    torch.testing.assert_close(values.expectation(dist), expected)
    torch.testing.assert_close(values.min_expectation(dist), expected.min(0).values)
    torch.testing.assert_close(elbo(values, dist, alpha=0.7), expected + 0.7 * entropy)
    torch.testing.assert_close(log_partition(values, alpha=0.5),
                               0.5 * torch.logsumexp(q / 0.5, dim=-1))
    mean = values.mean()
    assert mean.ensemble is None
    torch.testing.assert_close(brute_force_q(mean), q.mean(0))
    torch.testing.assert_close(mean.evaluate(mean.argmax()), q.mean(0).max(1).values)
    again = FactorValues.stack(list(values))
    assert again.ensemble == members and torch.equal(again.unary, values.unary)
    assert all(torch.equal(a, b) for a, b in zip(again.tables, values.tables))


def test_ensemble_shapes_and_errors():
    g = FactorGraph(4, [(0, 2, 3), (1, 2), (0, 3)])
    one = FactorQ(g, state_dim=5, num_actions=3, hidden=(8,))(torch.randn(7, 5))
    v = FactorQ(g, state_dim=5, num_actions=3, hidden=(8,), ensemble=2)(torch.randn(7, 5))
    assert (v.ensemble, v.batch_size, one.ensemble) == (2, 7, None)
    assert [tuple(t.shape) for t in v.tables] == [(2, 7, 3, 3, 3), (2, 7, 3, 3), (2, 7, 3, 3)]
    assert v.table().shape == (2, 7, 3, 3, 3, 3) and "ensemble=2" in repr(v)
    assert torch.equal(v[-1].unary, v.unary[1])
    with pytest.raises(IndexError, match="member 2 of an ensemble of 2"):
        v[2]
    with pytest.raises(ValueError, match="argmax of an ensemble of 2"):
        v.argmax()
    with pytest.raises(TypeError, match=r"mean\(\) needs an ensemble"):
        one.mean()
    with pytest.raises(TypeError, match="indexing needs an ensemble"):
        one[0]
    torch.testing.assert_close(one.min_evaluate(torch.zeros(7, 4, dtype=torch.long)),
                               one.evaluate(torch.zeros(7, 4, dtype=torch.long)))
    with pytest.raises(ValueError, match="members must be single Q-functions"):
        FactorValues.stack([v])
    with pytest.raises(ValueError, match="members must share one graph"):
        FactorValues.stack([one, FactorQ(FactorGraph.ring(4), 5, 3, hidden=())(torch.randn(7, 5))])
    with pytest.raises(TypeError, match="members must be a non-empty sequence"):
        FactorValues.stack([])
    line = FactorGraph.line(3)
    with pytest.raises(ValueError, match=r"pairwise must have shape \[2, 4, 2, 3, 3\] "
                                         r"\(ensemble, batch"):
        FactorValues(line, torch.randn(2, 4, 3, 3), torch.randn(3, 4, 2, 3, 3))
    with pytest.raises(ValueError, match="pairwise must have 5 dimensions"):
        FactorValues(line, torch.randn(2, 4, 3, 3), torch.randn(4, 2, 3, 3))


@settings(max_examples=40, deadline=None)
@given(values=random_values())
def test_log_partition_matches_brute_force(values):
    torch.testing.assert_close(log_partition(values, alpha=0.5),
                               0.5 * torch.logsumexp(brute_force_q(values) / 0.5, dim=1))


@settings(max_examples=40, deadline=None)
@given(values=random_values())
def test_argmax_by_elimination_is_exact(values):
    actions, exact = values.argmax(return_exact=True)
    assert exact and actions.dtype == torch.long and actions.shape == (BATCH, values.graph.num_agents)
    torch.testing.assert_close(values.evaluate(actions), brute_force_q(values).max(1).values)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 6), k=st.integers(2, 4), seed=st.integers(0, 2**16), unary=st.booleans())
def test_max_plus_is_exact_on_trees(n, k, seed, unary):
    tree = nx.random_labeled_tree(n, seed=seed)
    graph = FactorGraph.from_networkx(tree)
    torch.manual_seed(seed)
    q = FactorQ(graph, state_dim=2, num_actions=k, hidden=(), unary=unary).double()
    values = q(torch.randn(BATCH, 2, dtype=torch.float64))
    actions, exact = values.argmax("max_plus", return_exact=True)
    assert not exact
    torch.testing.assert_close(values.evaluate(actions), brute_force_q(values).max(1).values)


@settings(max_examples=20, deadline=None)
@given(values=random_values())
def test_max_plus_fallback_is_anytime_on_loopy_graphs(values):
    actions, exact = values.argmax(max_table_size=1, return_exact=True)
    assert not exact
    best = brute_force_q(values).max(1).values
    found = [values.evaluate(values.argmax("max_plus", iterations=t)) for t in (0, 2, 10)]
    assert torch.equal(values.evaluate(actions), values.evaluate(values.argmax("max_plus")))
    assert (found[0] >= values.evaluate(values.unary.argmax(-1))).all()
    assert (found[0] <= found[1]).all() and (found[1] <= found[2]).all()
    assert (found[2] <= best + 1e-9).all()


@pytest.mark.parametrize("build", [lambda: selective(4, 3, width=5), lambda: mixture(4, 3, components=3)])
def test_expectation_under_conditioned_and_non_deterministic_circuits(build):
    graph = FactorGraph(4, [(0, 1), (3, 1), (1, 2, 3)])
    values = FactorQ(graph, state_dim=2, num_actions=3, hidden=(4,)).double()(
        torch.randn(BATCH, 2, dtype=torch.float64))
    circuit = build()
    dist = circuit.distribution(torch.randn(BATCH, circuit.num_params, dtype=torch.float64))
    for d in (dist, dist.condition(torch.tensor([-1, 2, -1, -1]))):
        expected = (enumerated_probs(d, 4, 3) * brute_force_q(values)).sum(1)
        torch.testing.assert_close(values.expectation(d), expected)
    if not circuit.is_deterministic:
        with pytest.raises(NotDeterministicError):
            elbo(values, dist)


def test_contract_shapes_and_tables_view():
    g = FactorGraph(4, [(0, 2, 3), (1, 2), (0, 3)])
    v = FactorQ(g, state_dim=5, num_actions=3, hidden=(16,))(torch.randn(7, 5))
    assert v.unary.shape == (7, 4, 3)
    assert [tuple(t.shape) for t in v.tables] == [(7, 3, 3, 3), (7, 3, 3), (7, 3, 3)]
    assert torch.equal(v.tables[0], v.triple[:, 0]) and torch.equal(v.tables[2], v.pairwise[:, 1])
    assert v.table().shape == (7, 3, 3, 3, 3)
    assert v.evaluate(torch.zeros(7, 4, dtype=torch.long)).shape == (7,)
    assert v.argmax().shape == (7, 4)


@pytest.mark.parametrize("method", ["elimination", "max_plus"])
def test_an_empty_batch_gives_empty_results(method):
    # elimination's back-substitution reshaped a 0-row table with -1 and raised
    g = FactorGraph(4, [(0, 2, 3), (1, 2), (0, 3)])
    v = FactorQ(g, state_dim=5, num_actions=3, hidden=(16,))(torch.randn(0, 5))
    assert v.argmax(method).shape == (0, 4)
    assert v.evaluate(torch.zeros(0, 4, dtype=torch.long)).shape == (0,)
    assert v.table().shape == (0, 3, 3, 3, 3)
    circuit = selective(4, 3, width=4)
    assert v.expectation(circuit.distribution(torch.randn(0, circuit.num_params))).shape == (0,)


def test_from_tables_round_trip():
    g = FactorGraph(3, [(0, 1), (0, 1, 2), (2, 1)])
    tables = [torch.randn(2, 2, 2), torch.randn(2, 2, 2, 2), torch.randn(2, 2, 2)]
    v = FactorValues.from_tables(g, tables, unary=torch.randn(2, 3, 2))
    assert all(torch.equal(a, b) for a, b in zip(v.tables, tables))


def test_expectation_broadcasts_a_batch_one_distribution():
    g = FactorGraph.ring(3)
    v = FactorQ(g, state_dim=2, num_actions=2, hidden=()).double()(torch.randn(4, 2, dtype=torch.float64))
    circuit = selective(3, 2, width=4)
    params = torch.randn(1, circuit.num_params, dtype=torch.float64)
    one = v.expectation(circuit.distribution(params))
    many = v.expectation(circuit.distribution(params.expand(4, -1)))
    assert one.shape == (4,)
    torch.testing.assert_close(one, many)


def test_gradients_flow_through_the_elbo_to_policy_and_critic():
    g = FactorGraph.random(4, 5, 2, seed=1)
    q = FactorQ(g, state_dim=3, num_actions=3, hidden=(8,))
    circuit = selective(4, 3, width=6)
    params = torch.randn(2, circuit.num_params, requires_grad=True)
    elbo(q(torch.randn(2, 3)), circuit.distribution(params), alpha=0.1).sum().backward()
    assert params.grad is not None and params.grad.abs().sum() > 0
    assert all(p.grad is not None for p in q.parameters())


def test_bad_inputs_are_named():
    g = FactorGraph.line(3)
    v = FactorValues.from_tables(g, [torch.randn(2, 3, 3)] * 2)
    with pytest.raises(TypeError, match="actions must be an integer tensor"):
        v.evaluate(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"actions must have shape \[2, 3\]"):
        v.evaluate(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"actions must be in range\(3\)"):
        v.evaluate(torch.full((2, 3), 3))
    with pytest.raises(ValueError, match="tables: got 1 tables for 2 factors"):
        FactorValues.from_tables(g, [torch.randn(2, 3, 3)])
    with pytest.raises(ValueError, match="pairwise must have shape"):
        FactorValues(g, torch.randn(2, 3, 3), torch.randn(2, 2, 3, 4))
    with pytest.raises(ValueError, match="pairwise tables are missing"):
        FactorValues(g, torch.randn(2, 3, 3))
    with pytest.raises(ValueError, match="method must be one of"):
        v.argmax("greedy")
    with pytest.raises(ValueError, match="variable elimination needs"):
        v.argmax("elimination", max_table_size=4)
    with pytest.raises(ValueError, match="MAX_TABLE_ENTRIES"):
        FactorValues.from_tables(FactorGraph.line(40), [torch.randn(1, 2, 2)] * 39).table()
    with pytest.raises(ValueError, match="dist must be over 3 variables with 3 states"):
        v.expectation(mean_field(4, 3).distribution(torch.zeros(2, mean_field(4, 3).num_params)))
    with pytest.raises(TypeError, match="dist must be a CircuitDistribution"):
        v.expectation(torch.distributions.Categorical(logits=torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="alpha must be"):
        elbo(v, mean_field(3, 3).distribution(torch.zeros(2, mean_field(3, 3).num_params)), -1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_and_alpha_are_rejected(bad):
    g = FactorGraph.line(3)
    table = torch.randn(2, 3, 3)
    table[1, 2, 0] = bad
    with pytest.raises(ValueError, match=rf"tables\[1\] \(factor \(1, 2\)\) must hold finite "
                                         rf"values, got {bad}"):
        FactorValues.from_tables(g, [torch.randn(2, 3, 3), table])
    with pytest.raises(ValueError, match="pairwise must hold finite values"):
        FactorValues(g, None, torch.stack([table, table], dim=1))
    unary = torch.zeros(2, 3, 3)
    unary[0, 0, 0] = bad
    with pytest.raises(ValueError, match="unary must hold finite values"):
        FactorValues(g, unary, torch.zeros(2, 2, 3, 3))
    v = FactorValues.from_tables(g, [torch.randn(2, 3, 3)] * 2)
    dist = mean_field(3, 3).distribution(torch.zeros(2, mean_field(3, 3).num_params))
    with pytest.raises(ValueError, match=r"alpha must be a finite non-negative number"):
        elbo(v, dist, alpha=bad)
    with pytest.raises(ValueError, match=r"alpha must be finite and non-negative, got a tensor"):
        elbo(v, dist, alpha=torch.tensor([0.5, bad]))
    with pytest.raises(ValueError, match=r"alpha must be a finite positive number"):
        log_partition(v, alpha=bad)


def random_evidence(values, seed):
    """``[B, n]`` evidence: each agent fixed (to a random action) with probability 1/2."""
    generator = torch.Generator().manual_seed(seed)
    shape = (values.batch_size, values.graph.num_agents)
    actions = torch.randint(values.num_actions, shape, generator=generator)
    return torch.where(torch.rand(shape, generator=generator) < 0.5, actions, -1)


def agreeing_maximum(values, evidence):
    """``[B]`` brute-force maximum of Q over the joint actions that agree with ``evidence``."""
    q = brute_force_q(values)
    u = joint_actions(values.graph.num_agents, values.num_actions)         # [k**n, n]
    agree = ((evidence[:, None, :] < 0) | (u[None] == evidence[:, None, :])).all(-1)
    return q.masked_fill(~agree, -torch.inf).max(1).values


@settings(max_examples=40, deadline=None)
@given(values=random_values(), seed=st.integers(0, 2**16))
def test_clamped_argmax_is_the_best_joint_action_with_the_evidence(values, seed):
    evidence = random_evidence(values, seed)
    clamped = values.clamp(evidence)
    actions, exact = clamped.argmax(return_exact=True)
    assert exact and ((evidence < 0) | (actions == evidence)).all()
    torch.testing.assert_close(values.evaluate(actions), agreeing_maximum(values, evidence))
    torch.testing.assert_close(clamped.evaluate(actions), values.evaluate(actions))
    loopy = clamped.argmax("max_plus")           # approximate, but never breaks the evidence
    assert ((evidence < 0) | (loopy == evidence)).all()
    assert (values.evaluate(loopy) <= agreeing_maximum(values, evidence) + 1e-9).all()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 6), k=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_clamped_max_plus_is_exact_on_trees(n, k, seed):
    graph = FactorGraph.from_networkx(nx.random_labeled_tree(n, seed=seed))
    torch.manual_seed(seed)
    values = FactorQ(graph, state_dim=2, num_actions=k, hidden=()).double()(
        torch.randn(BATCH, 2, dtype=torch.float64))
    evidence = random_evidence(values, seed)
    actions = values.clamp(evidence).argmax("max_plus")
    assert ((evidence < 0) | (actions == evidence)).all()
    torch.testing.assert_close(values.evaluate(actions), agreeing_maximum(values, evidence))


@settings(max_examples=20, deadline=None)
@given(values=random_values(ensemble=True), seed=st.integers(0, 2**16))
def test_clamp_of_an_ensemble_is_each_members(values, seed):
    evidence = random_evidence(values, seed)
    clamped = values.clamp(evidence)
    for j in range(values.ensemble):
        torch.testing.assert_close(clamped[j].unary, values[j].clamp(evidence).unary)


def test_clamp_without_evidence_changes_nothing_and_checks_its_input():
    values = FactorValues(FactorGraph(3, [(0, 1), (1, 2)]), torch.randn(4, 3, 2),
                          torch.randn(4, 2, 2, 2))
    free = torch.full((4, 3), -1)
    assert torch.equal(values.clamp(free).unary, values.unary)
    with pytest.raises(ValueError, match=r"evidence must have shape \[4, 3\]"):
        values.clamp(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"action in range\(2\) or -1 .* from -1 to 2"):
        values.clamp(free.index_fill(1, torch.tensor([0]), 2))
    with pytest.raises(TypeError, match="evidence must be an integer tensor"):
        values.clamp(free.float())
