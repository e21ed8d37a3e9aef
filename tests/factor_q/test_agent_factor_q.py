"""AgentFactorQ: shapes, symmetry in each scope's listing, its tables against a direct
reference computation, centred tables, ensembles, gradients, parameter sharing and bad
input."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from factor_q import AgentFactorQ, FactorGraph, NearestGraph

GRAPHS = {
    "unary": FactorGraph(4, []),
    "pairwise": FactorGraph(4, [(0, 1), (2, 1), (3, 0)]),
    "triple": FactorGraph(4, [(0, 1, 2), (3, 1, 0)]),
    "mixed": FactorGraph(5, [(0, 1), (3, 1, 4), (2, 4), (0, 2, 3)]),
}


def _inputs(q, batch=6, seed=0):
    """Random float64 inputs ``[B, n, input_dim]`` and a state (None when ``state_dim=0``)."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, q.graph.num_agents, q.input_dim, generator=g,
                         dtype=torch.float64)
    state = (torch.randn(batch, q.state_dim, generator=g, dtype=torch.float64)
             if q.state_dim else None)
    return inputs, state


@st.composite
def networks(draw, ensemble=True):
    """A float64 AgentFactorQ on a random graph of order 2, 3 or both (scopes listed in
    random orders), with or without unary terms, state, low rank, ensemble and agent ids."""
    n = draw(st.integers(2, 5), label="agents")
    kind = draw(st.sampled_from(["pairs", "triples", "mixed"] if n >= 3 else ["pairs"]))
    seed = draw(st.integers(0, 2**16), label="seed")
    factors = []
    if kind != "triples":
        factors += FactorGraph.random(n, draw(st.integers(1, min(5, n * (n - 1) // 2))), 2,
                                      seed=seed).factors
    if kind != "pairs":
        count = draw(st.integers(1, min(4, math.comb(n, 3))))
        factors += FactorGraph.random(n, count, 3, seed=seed + 1).factors
    factors = [draw(st.permutations(f), label="scope order") for f in factors]
    torch.manual_seed(seed)
    return AgentFactorQ(FactorGraph(n, factors), input_dim=draw(st.integers(1, 3)),
                        num_actions=draw(st.integers(2, 3), label="actions"),
                        hidden=(6,), unary=draw(st.booleans(), label="unary"),
                        state_dim=draw(st.sampled_from([0, 2]), label="state_dim"),
                        rank=draw(st.sampled_from([None, 1, 2]), label="rank"),
                        payoff_hidden=draw(st.sampled_from([0, 5]), label="payoff_hidden"),
                        ensemble=draw(st.sampled_from([None, 2]) if ensemble else st.none(),
                                      label="ensemble"),
                        agent_ids=draw(st.booleans(), label="agent_ids")).double()


def _head(q, order, x):
    """The payoff head of ``order`` on concatenated embeddings ``x`` ``[(E,) ..., in]``:
    its first layer, then (``payoff_hidden``) ReLU and the output layer."""
    out = q._rows(q.payoff[str(order)], x)
    if q.payoff_hidden:
        out = q._rows(q.payoff_out[str(order)], torch.relu(out))
    return out


def reference_tables(q, inputs, state):
    """Each factor order's tables ``[(E,) B, F, k, ...]``, one factor at a time: the
    agents' embeddings gathered per factor and concatenated, the head applied, then

    - full tables: in every ordering of the scope, each mapped back to scope order, averaged;
    - rank r: position p's vectors ``[r, k]`` the head on ``[h_a, sum of the others' h]``,
      the table the sum over r of their outer product."""
    h = q._embed(inputs, state)                                         # [(E,) B, n, H]
    k, out = q.num_actions, {}
    for order in q.graph.orders:
        tables = []
        for scope in q.graph.scopes(order):
            agent = [h[..., a, :] for a in scope]                       # [(E,) B, H] each
            if q.rank is None:
                total = 0
                for perm in itertools.permutations(range(order)):
                    t = _head(q, order, torch.cat([agent[p] for p in perm], -1))
                    t = t.unflatten(-1, (k,) * order)                   # axis p: scope[perm[p]]
                    lead = t.dim() - order
                    total = total + t.permute(*range(lead), *(lead + perm.index(j)
                                                              for j in range(order)))
                tables.append(total / math.factorial(order))
            else:
                vectors = [_head(q, order, torch.cat([agent[p], sum(agent[j] for j in range(order)
                                                                    if j != p)], -1))
                           .unflatten(-1, (q.rank, k)) for p in range(order)]
                spec = "...ri,...rj->...ij" if order == 2 else "...ri,...rj,...rl->...ijl"
                tables.append(torch.einsum(spec, *vectors))
        out[order] = torch.stack(tables, -order - 1)
    return out


def _member(ensemble: AgentFactorQ, j: int) -> AgentFactorQ:
    """A plain AgentFactorQ holding member ``j``'s parameters of an ensemble one (every
    layer an EnsembleLinear: weight ``[E, in, out]``, bias ``[E, 1, out]``)."""
    one = AgentFactorQ(ensemble.graph, ensemble.input_dim, ensemble.num_actions,
                       hidden=[layer.weight.shape[-1] for layer in ensemble.torso[::2]],
                       unary=ensemble.unary_head is not None, state_dim=ensemble.state_dim,
                       rank=ensemble.rank, payoff_hidden=ensemble.payoff_hidden,
                       agent_ids=ensemble.agent_ids is not None).double()
    one.load_state_dict({name: value[j][0] if name.endswith("bias") else value[j].T
                         for name, value in ensemble.state_dict().items()})
    return one


# --- shapes ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", GRAPHS)
@pytest.mark.parametrize("ensemble", [None, 2])
@pytest.mark.parametrize("state_dim", [0, 3])
@pytest.mark.parametrize("rank", [None, 2])
def test_output_shapes(kind, ensemble, state_dim, rank):
    graph = GRAPHS[kind]
    q = AgentFactorQ(graph, input_dim=4, num_actions=3, hidden=(8, 8), state_dim=state_dim,
                     rank=rank, ensemble=ensemble).double()
    v = q(*_inputs(q))
    lead, n = (() if ensemble is None else (ensemble,)), graph.num_agents
    assert v.ensemble == ensemble and v.unary.shape == (*lead, 6, n, 3)
    for grouped, order in ((v.pairwise, 2), (v.triple, 3)):
        count = len(graph.factor_ids(order))
        assert (grouped is None) == (count == 0)
        if count:
            assert grouped.shape == (*lead, 6, count) + (3,) * order
            # the agents' ids tell factors apart: one shared head, distinct tables
            assert not torch.allclose(grouped[..., 0, :, :], grouped[..., 1, :, :])


# --- symmetry ----------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(q=networks(), data=st.data())
def test_tables_do_not_depend_on_how_a_scope_is_listed(q, data):
    """The same weights on the graph with every scope listed in another order: each table
    is the original with its axes permuted, and Q is the same for every joint action."""
    factors = [tuple(data.draw(st.permutations(f))) for f in q.graph.factors]
    other = AgentFactorQ(FactorGraph(q.graph.num_agents, factors), q.input_dim,
                         q.num_actions, hidden=(6,), unary=q.unary_head is not None,
                         state_dim=q.state_dim, rank=q.rank, payoff_hidden=q.payoff_hidden,
                         ensemble=q.ensemble, agent_ids=q.agent_ids is not None).double()
    other.load_state_dict(q.state_dict())
    inputs, state = _inputs(q, batch=3)
    a, b = q(inputs, state), other(inputs, state)
    lead = a.unary.dim() - 2
    for scope, relisted, ta, tb in zip(q.graph.factors, factors, a.tables, b.tables):
        axes = [lead + scope.index(agent) for agent in relisted]
        torch.testing.assert_close(tb, ta.permute(*range(lead), *axes))
    torch.testing.assert_close(b.table(), a.table())


# --- against a reference -----------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(q=networks())
def test_tables_equal_the_direct_reference(q):
    """The per-agent projections gathered per factor (values) equal applying the head to
    each factor's concatenated embeddings."""
    inputs, state = _inputs(q, batch=3)
    values, expected = q(inputs, state), reference_tables(q, inputs, state)
    for order, grouped in ((2, values.pairwise), (3, values.triple)):
        if order in expected:
            torch.testing.assert_close(grouped, expected[order])
    if q.unary_head is not None:
        torch.testing.assert_close(values.unary, q._rows(q.unary_head, q._embed(inputs, state)))


def _interaction(table: torch.Tensor, order: int) -> torch.Tensor:
    """The interaction term of an analysis of variance of each ``[k] * order`` table,
    written out: order 2, ``T - row means - column means + grand mean``; order 3, the same
    with the three pair means, the three single means and the grand mean."""
    def m(*axes):
        return table.mean([a - order for a in axes], keepdim=True)
    if order == 2:
        return table - m(0) - m(1) + m(0, 1)
    return (table - m(0) - m(1) - m(2) + m(0, 1) + m(0, 2) + m(1, 2) - m(0, 1, 2))


@settings(max_examples=30, deadline=None)
@given(q=networks(), data=st.data())
def test_centred_tables_are_the_interaction_part_of_the_plain_ones(q, data):
    """The same weights with ``centred=True``: each table is the plain one's interaction term
    (every axis mean zero), the utilities are unchanged, and Q still equals the enumerated
    table at any joint action."""
    if q.unary_head is None:
        return
    centred = AgentFactorQ(q.graph, q.input_dim, q.num_actions, hidden=(6,), unary=True,
                           state_dim=q.state_dim, rank=q.rank, payoff_hidden=q.payoff_hidden,
                           ensemble=q.ensemble, agent_ids=q.agent_ids is not None,
                           centred=True).double()
    centred.load_state_dict(q.state_dict())
    inputs, state = _inputs(q, batch=3)
    plain, values = q(inputs, state), centred(inputs, state)
    torch.testing.assert_close(values.unary, plain.unary)
    for order, got, was in ((2, values.pairwise, plain.pairwise),
                            (3, values.triple, plain.triple)):
        if was is None:
            continue
        torch.testing.assert_close(got, _interaction(was, order))
        for axis in range(-order, 0):
            assert got.mean(axis).abs().max() < 1e-12
    n, k = q.graph.num_agents, q.num_actions
    seed = data.draw(st.integers(0, 2**16), label="seed")
    actions = torch.randint(k, (3, n), generator=torch.Generator().manual_seed(seed))
    flat = sum(actions[:, i] * k ** (n - 1 - i) for i in range(n))
    torch.testing.assert_close(centred.evaluate(inputs, actions, state),
                               values.table().flatten(-n)[..., torch.arange(3), flat])


def test_centred_tables_on_nearest_pairs():
    """Per-state pairs: the kept tables are centred, a mutual pair's second slot stays 0."""
    torch.manual_seed(0)
    q = AgentFactorQ(NearestGraph(5, 2), input_dim=3, num_actions=4, hidden=(8,),
                     centred=True).double()
    inputs = torch.randn(6, 5, 3, dtype=torch.float64)
    positions = torch.randint(0, 4, (6, 5, 2)).double()
    values = q(inputs, positions=positions)
    _, kept = q.graph.scopes(positions)
    assert values.pairwise.mean(-1).abs().max() < 1e-12
    assert values.pairwise.mean(-2).abs().max() < 1e-12
    assert (values.pairwise[~kept] == 0).all() and values.pairwise[kept].abs().max() > 0


def test_low_rank_tables_have_at_most_that_rank():
    q = AgentFactorQ(GRAPHS["mixed"], input_dim=4, num_actions=5, hidden=(16,),
                     rank=2).double()
    v = q(*_inputs(q))
    assert (torch.linalg.matrix_rank(v.pairwise) <= 2).all()
    for axis in range(3):  # every unfolding of a CP-rank-2 tensor has matrix rank <= 2
        unfolded = v.triple.movedim(2 + axis, 2).flatten(3)
        assert (torch.linalg.matrix_rank(unfolded) <= 2).all()
    full = AgentFactorQ(GRAPHS["mixed"], input_dim=4, num_actions=5, hidden=(16,)).double()
    assert (torch.linalg.matrix_rank(full(*_inputs(full)).pairwise) == 5).all()


@settings(max_examples=20, deadline=None)
@given(q=networks(), seed=st.integers(0, 2**16))
def test_evaluate_is_the_enumerated_table_at_the_actions(q, seed):
    inputs, state = _inputs(q, batch=4)
    n, k = q.graph.num_agents, q.num_actions
    actions = torch.randint(k, (4, n), generator=torch.Generator().manual_seed(seed))
    table = q.values(inputs, state).table().flatten(-n)                 # [(E,) B, k**n]
    flat = sum(actions[:, i] * k ** (n - 1 - i) for i in range(n))      # row-major index
    torch.testing.assert_close(q.evaluate(inputs, actions, state),
                               table[..., torch.arange(4), flat])


# --- ensembles, gradients, parameters -----------------------------------------------------
@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("state_dim", [0, 3])
@pytest.mark.parametrize("payoff_hidden", [0, 4])
def test_each_ensemble_member_is_an_agent_factor_q_of_its_own(rank, state_dim, payoff_hidden):
    torch.manual_seed(0)
    ensemble = AgentFactorQ(GRAPHS["mixed"], input_dim=4, num_actions=3, hidden=(8, 6),
                            state_dim=state_dim, rank=rank, payoff_hidden=payoff_hidden,
                            ensemble=3).double()
    inputs, state = _inputs(ensemble)
    actions = torch.randint(3, (6, 5))
    values, q = ensemble(inputs, state), ensemble.evaluate(inputs, actions, state)
    for j in range(3):
        own = _member(ensemble, j)(inputs, state)
        for name in ("unary", "pairwise", "triple"):
            torch.testing.assert_close(getattr(values[j], name), getattr(own, name))
        torch.testing.assert_close(q[j], own.evaluate(actions))
    assert not torch.allclose(values[0].pairwise, values[1].pairwise)   # independent members


@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("ensemble", [None, 2])
@pytest.mark.parametrize("state_dim", [0, 3])
def test_gradients_reach_every_parameter(rank, ensemble, state_dim):
    q = AgentFactorQ(GRAPHS["mixed"], input_dim=4, num_actions=3, hidden=(8, 8),
                     state_dim=state_dim, rank=rank, ensemble=ensemble).double()
    inputs, state = _inputs(q)
    q.evaluate(inputs, torch.randint(3, (6, 5)), state).sum().backward()
    missing = [name for name, p in q.named_parameters()
               if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("ensemble", [None, 2])
def test_parameters_do_not_grow_with_the_factors_and_agents_only_by_the_id_input(rank,
                                                                                 ensemble):
    def count(graph):
        q = AgentFactorQ(graph, input_dim=4, num_actions=6, hidden=(32, 16), state_dim=3,
                         rank=rank, ensemble=ensemble)
        return sum(p.numel() for p in q.parameters())
    few, many = FactorGraph.random(12, 6, 2, seed=0), FactorGraph.random(12, 40, 2, seed=0)
    assert count(few) == count(many)
    # 12 -> 24 agents: 12 more one-hot inputs to the first layer of 32 units, nothing else
    assert count(FactorGraph.random(24, 6, 2, seed=0)) - count(few) == 12 * 32 * (ensemble or 1)


@pytest.mark.parametrize("state_dim", [0, 3])
@pytest.mark.parametrize("ensemble", [None, 2])
def test_without_ids_the_same_weights_fit_every_team_size(state_dim, ensemble):
    small = AgentFactorQ(FactorGraph.ring(3), input_dim=4, num_actions=3, hidden=(8, 8),
                         state_dim=state_dim, ensemble=ensemble, agent_ids=False).double()
    large = AgentFactorQ(FactorGraph.random(7, 9, 2, seed=1), input_dim=4, num_actions=3,
                         hidden=(8, 8), state_dim=state_dim, ensemble=ensemble,
                         agent_ids=False).double()
    large.load_state_dict(small.state_dict())                           # strict: same shapes
    inputs, state = _inputs(large)
    inputs[:, 5] = inputs[:, 2]
    h = large._embed(inputs, state)
    # an agent's embedding is the torso on its own input (and the state), nothing else
    x = inputs if ensemble is None else inputs.expand(ensemble, -1, -1, -1)
    if state_dim:
        g = torch.relu(large.state_in(state))                         # [(E,) B, H0]
        x = torch.cat([x, g.unsqueeze(-2).expand(*g.shape[:-1], 7, g.shape[-1])], -1)
    torch.testing.assert_close(h, large._rows(large.torso, x))
    unary = large(inputs, state).unary
    torch.testing.assert_close(unary[..., 5, :], unary[..., 2, :])
    assert "agent_ids=False" in repr(large)
    with_ids = AgentFactorQ(FactorGraph.ring(3), input_dim=4, num_actions=3, hidden=(8, 8),
                            state_dim=state_dim, ensemble=ensemble)
    ids_inputs = sum(p.numel() for p in with_ids.parameters()) \
        - sum(p.numel() for p in small.parameters())
    assert ids_inputs == 3 * 8 * (ensemble or 1)


# --- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(input_dim=0), ValueError, "input_dim must be an int >= 1"),
    (dict(num_actions=1), ValueError, "num_actions"),
    (dict(rank=0), ValueError, "rank must be None or a positive int"),
    (dict(hidden=()), ValueError, "hidden must have at least one layer"),
    (dict(hidden=(8, -1)), ValueError, "hidden must be a sequence of positive ints"),
    (dict(state_dim=-1), ValueError, "state_dim must be an int >= 0"),
    (dict(state_dim=1.5), ValueError, "state_dim must be an int >= 0"),
    (dict(payoff_hidden=-1), ValueError, "payoff_hidden must be an int >= 0"),
    (dict(payoff_hidden=True), ValueError, "payoff_hidden must be an int >= 0"),
    (dict(ensemble=0), ValueError, "ensemble must be None or a positive int"),
    (dict(ensemble=True), ValueError, "ensemble must be None or a positive int"),
    (dict(agent_ids=1), ValueError, "agent_ids must be True or False, got 1"),
    (dict(centred=1), ValueError, "centred must be True or False, got 1"),
    (dict(centred=True, unary=False), ValueError, "centred=True .* needs unary=True"),
    (dict(graph="ring"), TypeError, "graph must be a FactorGraph"),
    (dict(graph=FactorGraph(3, []), unary=False), ValueError, "identically 0"),
])
def test_bad_construction(kwargs, error, match):
    args = dict(graph=FactorGraph.ring(3), input_dim=2, num_actions=3) | kwargs
    with pytest.raises(error, match=match):
        AgentFactorQ(**args)


def test_bad_inputs_and_states():
    plain = AgentFactorQ(FactorGraph.ring(3), input_dim=2, num_actions=3, hidden=(4,))
    with pytest.raises(ValueError, match=r"inputs must have shape \[B, num_agents=3, "
                                         r"input_dim=2\], got \[4, 2, 2\]"):
        plain(torch.randn(4, 2, 2))
    with pytest.raises(ValueError, match=r"inputs must have shape .*got \[4, 3, 3\]"):
        plain(torch.randn(4, 3, 3))
    with pytest.raises(ValueError, match=r"inputs must have shape .*got \[4, 6\]"):
        plain(torch.randn(4, 6))
    with pytest.raises(TypeError, match="inputs must be a floating-point tensor"):
        plain(torch.ones(4, 3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="inputs must be a floating-point tensor"):
        plain([[[0.0, 0.0]] * 3])
    with pytest.raises(ValueError, match="inputs contain NaN"):
        plain(torch.tensor([[[0.0, math.nan]] * 3]))
    with pytest.raises(ValueError, match="state given, but this AgentFactorQ has state_dim=0"):
        plain(torch.randn(4, 3, 2), torch.randn(4, 5))
    with_state = AgentFactorQ(FactorGraph.ring(3), input_dim=2, num_actions=3, hidden=(4,),
                              state_dim=5)
    inputs = torch.randn(4, 3, 2)
    with pytest.raises(ValueError, match=r"reads a global state \[B, 5\].*got state=None"):
        with_state(inputs)
    with pytest.raises(ValueError, match=r"state must have shape \[B, state_dim=5\]"):
        with_state(inputs, torch.randn(4, 4))
    with pytest.raises(ValueError, match="state has 3 rows, inputs 4"):
        with_state(inputs, torch.randn(3, 5))
    with pytest.raises(ValueError, match="state contains NaN"):
        with_state(inputs, torch.full((4, 5), math.nan))
    with pytest.raises(TypeError, match="state must be a floating-point tensor"):
        with_state(inputs, torch.ones(4, 5, dtype=torch.long))
