import itertools
import math

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factor_q import FactorGraph
from factor_q.argmax import elimination_order, elimination_plan


def test_contract_example():
    g = FactorGraph(num_agents=4, factors=[(0, 2), (1, 2), (0, 3), (1, 3)])
    assert g.num_agents == 4 and g.num_factors == 4 and g.orders == (2,)
    assert g.factors == ((0, 2), (1, 2), (0, 3), (1, 3))


def test_seed_000_setting_has_twenty_distinct_factors_covering_all_agents():
    g = FactorGraph.random(num_agents=6, num_factors=20, order=2, seed=0)
    assert g.num_factors == 20 and len(set(g.factors)) == 20
    assert {frozenset(f) for f in g.factors} == {frozenset(c) for c in itertools.combinations(range(6), 2)}


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), order=st.sampled_from([2, 3]), data=st.data())
def test_random_graphs(n, order, data):
    p = data.draw(st.integers(0, math.perm(n, order)), label="num_factors")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    g = FactorGraph.random(n, p, order, seed=seed)
    assert g.num_factors == p and all(len(f) == order for f in g.factors)
    assert len(set(g.factors)) == p
    if p <= math.comb(n, order):
        assert len({frozenset(f) for f in g.factors}) == p
    if p * order >= n:
        assert set().union(*g.factors) == set(range(n))
    assert FactorGraph.random(n, p, order, seed=seed) == g


def test_structured_constructors():
    assert FactorGraph.complete(4).factors == tuple(itertools.combinations(range(4), 2))
    assert FactorGraph.complete(5, order=3).num_factors == 10
    assert FactorGraph.line(4).factors == ((0, 1), (1, 2), (2, 3))
    assert FactorGraph.ring(4).factors == ((0, 1), (1, 2), (2, 3), (0, 3))
    assert FactorGraph.star(4, center=2).factors == ((2, 0), (2, 1), (2, 3))
    assert FactorGraph.line(1).num_factors == 0


def test_networkx_round_trip_and_plain_graphs():
    g = FactorGraph(5, [(0, 1, 2), (3, 1), (4, 0)])
    bip = g.to_networkx()
    assert nx.is_bipartite(bip)
    assert bip.number_of_nodes() == 8 and bip.number_of_edges() == 7
    assert bip.nodes[("factor", 1)]["scope"] == (3, 1)
    assert FactorGraph.from_networkx(bip) == g
    assert FactorGraph.from_networkx(nx.cycle_graph(4)) == FactorGraph(4, [(0, 1), (0, 3), (1, 2), (2, 3)])
    grid = FactorGraph.from_networkx(nx.grid_2d_graph(2, 3))
    assert grid.num_agents == 6 and grid.num_factors == 7


@pytest.mark.parametrize("num_agents, factors, match", [
    (3, [(0, 3)], "out of range"),
    (3, [(0, -1)], "out of range"),
    (3, [(1, 1)], "repeated agent"),
    (4, [(0, 1, 1)], "repeated agent"),
    (4, [(0,)], "order must be 2 or 3"),
    (5, [(0, 1, 2, 3)], "order must be 2 or 3"),
    (3, [(0, 1), (0, 1)], "repeats factor 0"),
    (0, [], "num_agents"),
    (3, 5, "factors must be"),
])
def test_invalid_graphs_name_the_problem(num_agents, factors, match):
    with pytest.raises(ValueError, match=match):
        FactorGraph(num_agents, factors)


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="more factors than exist"):
        FactorGraph.random(4, 13, 2, seed=0)
    with pytest.raises(ValueError, match="order must be 2 or 3"):
        FactorGraph.random(4, 2, 4)
    with pytest.raises(ValueError, match="order must be 2 or 3"):
        FactorGraph.complete(4, order=1)
    with pytest.raises(ValueError, match="num_agents"):
        FactorGraph.ring(2)
    with pytest.raises(ValueError, match="center"):
        FactorGraph.star(3, center=3)
    with pytest.raises(ValueError, match="undirected"):
        FactorGraph.from_networkx(nx.DiGraph([(0, 1)]))
    with pytest.raises(ValueError, match="repeated agent"):
        FactorGraph.from_networkx(nx.Graph([(0, 1), (1, 1)]))


def test_graph_is_immutable_and_hashable():
    g = FactorGraph.line(3)
    with pytest.raises(AttributeError):
        g.num_agents = 4
    assert {g: 1}[FactorGraph(3, [(0, 1), (1, 2)])] == 1


def test_graph_survives_pickle_and_deepcopy():
    import copy
    import pickle

    g = FactorGraph(4, [(0, 1), (2, 1, 3), (3, 0)])
    for clone in (pickle.loads(pickle.dumps(g)), copy.deepcopy(g)):
        assert clone == g and clone.factors == g.factors and clone.num_agents == 4


@pytest.mark.parametrize("graph, width", [
    (FactorGraph.line(8), 2),
    (FactorGraph.star(8), 2),
    (FactorGraph.ring(8), 3),
    (FactorGraph.complete(5), 5),
    (FactorGraph(6, [(0, 1, 2), (2, 3, 4), (4, 5, 0)]), 3),
])
def test_elimination_plan_has_min_fill_width(graph, width):
    assert sorted(elimination_order(graph)) == list(range(graph.num_agents))
    assert max(len(step.scope) for step in elimination_plan(graph)) == width
