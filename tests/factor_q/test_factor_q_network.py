import math

import pytest
import torch

from factor_q import FactorGraph, FactorQ


def mixed_graph():
    return FactorGraph(5, [(0, 1), (3, 1, 4), (2, 4), (0, 2, 3)])


@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("unary", [True, False])
def test_output_shapes_and_gradients(rank, unary):
    q = FactorQ(mixed_graph(), state_dim=4, num_actions=3, hidden=(16, 16), unary=unary,
                rank=rank)
    v = q(torch.randn(6, 4))
    assert v.unary.shape == (6, 5, 3) and v.pairwise.shape == (6, 2, 3, 3)
    assert v.triple.shape == (6, 2, 3, 3, 3)
    assert unary or torch.count_nonzero(v.unary) == 0
    (v.evaluate(torch.randint(3, (6, 5))).sum() + v.table().sum()).backward()
    assert all(p.grad is not None for p in q.parameters())


def test_low_rank_tables_have_at_most_that_rank():
    q = FactorQ(mixed_graph(), state_dim=4, num_actions=5, hidden=(16,), rank=2).double()
    v = q(torch.randn(3, 4, dtype=torch.float64))
    assert (torch.linalg.matrix_rank(v.pairwise) <= 2).all()
    for axis in range(3):  # every unfolding of a CP-rank-2 tensor has matrix rank <= 2
        unfolded = v.triple.movedim(2 + axis, 2).flatten(3)
        assert (torch.linalg.matrix_rank(unfolded) <= 2).all()
    full = FactorQ(mixed_graph(), state_dim=4, num_actions=5, hidden=(16,)).double()
    assert (torch.linalg.matrix_rank(full(torch.randn(3, 4, dtype=torch.float64)).pairwise) == 5).all()


def test_parameters_grow_with_the_number_of_factors():
    """One output head per factor (AgentFactorQ shares one instead)."""
    def count(graph):
        return sum(p.numel() for p in FactorQ(graph, 4, 6, hidden=(32,)).parameters())
    small, large = FactorGraph.random(12, 6, 2, seed=0), FactorGraph.random(12, 40, 2, seed=0)
    assert count(large) - count(small) == 34 * (32 + 1) * 36


def test_distinct_heads_per_factor_give_distinct_tables():
    v = FactorQ(FactorGraph.complete(3), 4, 3, hidden=(8,))(torch.randn(1, 4))
    assert not torch.allclose(v.pairwise[:, 0], v.pairwise[:, 1])


def test_hidden_empty_is_linear_in_the_state():
    q = FactorQ(FactorGraph.line(3), state_dim=2, num_actions=2, hidden=())
    s = torch.randn(2, 2)
    v0, v1, v2 = q(torch.zeros(1, 2)), q(s[:1]), q(2 * s[:1])
    torch.testing.assert_close(v2.pairwise - v0.pairwise, 2 * (v1.pairwise - v0.pairwise))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(state_dim=0), ValueError, "state_dim"),
    (dict(num_actions=1), ValueError, "num_actions"),
    (dict(rank=0), ValueError, "rank"),
    (dict(hidden=(8, -1)), ValueError, "hidden"),
    (dict(graph="ring"), TypeError, "graph must be a FactorGraph"),
    (dict(graph=FactorGraph(3, []), unary=False), ValueError, "identically 0"),
    (dict(ensemble=0), ValueError, "ensemble must be None or a positive int"),
])
def test_bad_construction(kwargs, error, match):
    args = dict(graph=FactorGraph.ring(3), state_dim=2, num_actions=3) | kwargs
    with pytest.raises(error, match=match):
        FactorQ(**args)


def test_bad_states():
    q = FactorQ(FactorGraph.ring(3), state_dim=2, num_actions=3, hidden=(4,))
    with pytest.raises(ValueError, match=r"state must have shape \[B, state_dim=2\]"):
        q(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"state must have shape"):
        q(torch.randn(2))
    with pytest.raises(TypeError, match="state must be a floating-point tensor"):
        q(torch.ones(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        q(torch.tensor([[0.0, math.nan]]))


def _member(ensemble: FactorQ, j: int) -> FactorQ:
    """A plain FactorQ holding member ``j``'s parameters of an ensemble FactorQ."""
    one = FactorQ(ensemble.graph, ensemble.state_dim, ensemble.num_actions,
                  hidden=[layer.weight.shape[-1] for layer in ensemble.torso[::2]],
                  unary=ensemble.unary_head is not None, rank=ensemble.rank).double()
    state = {}
    for name, value in ensemble.state_dict().items():
        layer = name.rsplit(".", 1)[0]
        own = value[j]                                  # [in, out], [1, out] or [out, in]
        if name.endswith("bias"):
            own = own[0]
        elif not layer.startswith("payoff"):            # EnsembleLinear stores [in, out]
            own = own.T
        state[name] = own
    one.load_state_dict(state)
    return one


@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("unary", [True, False])
@pytest.mark.parametrize("hidden", [(8, 6), ()])
def test_each_ensemble_member_is_a_factor_q_of_its_own(rank, unary, hidden):
    """``FactorQ(ensemble=3)``: member ``j``'s values (and ``evaluate``) are those of a
    plain FactorQ with member ``j``'s weights."""
    torch.manual_seed(0)
    ensemble = FactorQ(mixed_graph(), state_dim=4, num_actions=3, hidden=hidden, unary=unary,
                       rank=rank, ensemble=3).double()
    state = torch.randn(6, 4, dtype=torch.float64)
    actions = torch.randint(3, (6, 5))
    values = ensemble(state)
    assert values.ensemble == 3 and values.unary.shape == (3, 6, 5, 3)
    assert values.pairwise.shape == (3, 6, 2, 3, 3) and values.triple.shape == (3, 6, 2, 3, 3, 3)
    q = ensemble.evaluate(state, actions)
    for j in range(3):
        own = _member(ensemble, j)(state)
        for name in ("unary", "pairwise", "triple"):
            torch.testing.assert_close(getattr(values[j], name), getattr(own, name))
        torch.testing.assert_close(q[j], own.evaluate(actions))
    assert not torch.allclose(values[0].pairwise, values[1].pairwise)   # independent members
