"""CircuitDistribution: torch.distributions shape rules and state-conditioned parameters."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.nn.utils import parameters_to_vector

from circuits import Categorical, Circuit, CircuitDistribution, Product, Sum
from circuits.structures import mean_field, selective
from tests.circuits import oracle
from tests.circuits.helpers import (PROPERTY, all_assignments, as_numpy, assert_close,
                                    assert_log_close, build, engine_joint, joint, log)
from tests.circuits.strategies import evidences, random_circuits


def random_params(c, batch: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    """Random logits ``[batch, num_params]``."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, c.num_params, generator=g, dtype=torch.float64)


def own_params(c) -> torch.Tensor:
    return parameters_to_vector(c.parameters()).detach()


@PROPERTY
@given(random_circuits())
def test_unbatched_distribution_shapes(rc):
    c = build(rc)
    n, k = c.num_vars, c.max_states
    d = c.distribution()
    assert isinstance(d, CircuitDistribution)
    assert isinstance(d, torch.distributions.Distribution)
    assert d.batch_shape == () and d.event_shape == (n,)
    assert d.sample().shape == (n,)
    x = d.sample((5, 2))
    assert x.shape == (5, 2, n) and x.dtype == torch.long
    assert d.log_prob(x).shape == (5, 2)
    assert d.mode.shape == (n,)
    assert d.marginals().shape == (n, k)
    assert d.leave_one_out_log_prob(x[0, 0]).shape == (n,)


@PROPERTY
@given(random_circuits(min_vars=3), st.integers(0, 2**31))
def test_batched_distribution_shapes(rc, seed):
    c = build(rc)
    assume(c.num_params > 0)  # parameter-free: test_parameter_free_circuit_takes_empty_params
    n, k, b = c.num_vars, c.max_states, 3
    d = c.distribution(random_params(c, b, seed))
    assert isinstance(d, CircuitDistribution)
    assert d.batch_shape == (b,) and d.event_shape == (n,)
    assert d.sample().shape == (b, n)
    x = d.sample((4,))
    assert x.shape == (4, b, n)
    assert d.log_prob(x).shape == (4, b)
    assert d.log_prob(x[0]).shape == (b,)
    assert d.mode.shape == (b, n)
    assert d.marginals().shape == (b, n, k)
    assert d.scope_marginals([(0, 1), (2, 1)]).shape == (b, 2, k, k)
    assert d.scope_marginals([(0, 1, 2)]).shape == (b, 1, k, k, k)
    assert d.leave_one_out_log_prob(x[0]).shape == (b, n)
    free = torch.full((n,), -1)
    assert d.condition(free).batch_shape == (b,)
    assert d.condition(free.expand(b, n)).batch_shape == (b,)
    if c.is_deterministic:
        assert d.entropy().shape == (b,)


@PROPERTY
@given(random_circuits())
def test_own_parameters_as_a_batch_of_one(rc):
    c, p = build(rc), joint(rc)
    assume(c.num_params > 0)
    own = own_params(c)
    assert own.shape == (c.num_params,)
    d = c.distribution(own[None])
    x = all_assignments(rc.num_states)[:, None, :]
    assert_log_close(d.log_prob(x)[:, 0], log(p).reshape(-1))
    assert_close(d.marginals()[0], oracle.marginals(p, c.max_states))
    assert_close(c.distribution().marginals(), d.marginals()[0])


@PROPERTY
@given(random_circuits(), st.integers(0, 2**31))
def test_arbitrary_parameters_give_a_normalised_distribution_with_the_same_support(rc, seed):
    """Positive weights leave the support unchanged, so it must match the oracle's."""
    c = build(rc)
    assume(c.num_params > 0)  # parameter-free: test_parameter_free_circuit_takes_empty_params
    d = c.distribution(random_params(c, 2, seed))
    table = engine_joint(d, rc.num_states)
    np.testing.assert_allclose(table.reshape(2, -1).sum(-1), 1.0, rtol=1e-9)
    support = joint(rc) > 0
    for row in table:
        np.testing.assert_array_equal(row > 0, support)


@PROPERTY
@given(random_circuits(min_vars=2), st.integers(0, 2**31), st.data())
def test_batched_queries_match_enumeration_of_each_row(rc, seed, data):
    """Every query on ``c.distribution(params)`` against the oracle applied to that row's joint."""
    c = build(rc)
    assume(c.num_params > 0)  # parameter-free: test_parameter_free_circuit_takes_empty_params
    b, k = 3, c.max_states
    d = c.distribution(random_params(c, b, seed))
    tables = engine_joint(d, rc.num_states)
    evs = data.draw(st.lists(evidences(rc.num_states), min_size=b, max_size=b))
    logp = d.log_prob(torch.tensor(evs))
    scopes = [(1, 0)] + ([(0, 2)] if c.num_vars > 2 else [])
    pair = d.scope_marginals(scopes)
    marginals = d.marginals()
    for row, table in enumerate(tables):
        assert_log_close(logp[row], oracle.log_prob(table, evs[row]))
        assert_close(marginals[row], oracle.marginals(table, k))
        assert_close(pair[row], [oracle.scope_marginal(table, s, k) for s in scopes])
    if c.is_deterministic:
        assert_close(d.entropy(), [oracle.entropy(t) for t in tables])
        mode = d.mode
        for row, table in enumerate(tables):
            assert tuple(mode[row].tolist()) in oracle.mpe_set(table, rtol=1e-6)[1]


@PROPERTY
@given(random_circuits(min_vars=2), st.integers(0, 2**31), st.data())
def test_batch_rows_equal_single_row_distributions(rc, seed, data):
    c = build(rc)
    assume(c.num_params > 0)  # parameter-free: test_parameter_free_circuit_takes_empty_params
    b = 3
    params = random_params(c, b, seed)
    d = c.distribution(params)
    torch.manual_seed(seed)
    x = torch.tensor(data.draw(st.lists(evidences(rc.num_states), min_size=b, max_size=b)))
    logp, marg, loo_x = d.log_prob(x), d.marginals(), d.sample()
    loo = d.leave_one_out_log_prob(loo_x)
    for row in range(b):
        single = c.distribution(params[row:row + 1])
        assert_log_close(logp[row:row + 1], as_numpy(single.log_prob(x[row:row + 1])))
        assert_close(marg[row], single.marginals()[0])
        assert_log_close(loo[row], as_numpy(single.leave_one_out_log_prob(loo_x[row:row + 1])[0]))


@PROPERTY
@given(random_circuits(min_vars=2), st.integers(0, 2**31), st.data())
def test_evidence_per_batch_element(rc, seed, data):
    c = build(rc)
    assume(c.num_params > 0)  # parameter-free: test_parameter_free_circuit_takes_empty_params
    b = 3
    d = c.distribution(random_params(c, b, seed))
    evs = data.draw(st.lists(evidences(rc.num_states, min_observed=1), min_size=b, max_size=b))
    tables = engine_joint(d, rc.num_states)
    assume(all(oracle.prob(t, e) > 0 for t, e in zip(tables, evs)))
    cond = d.condition(torch.tensor(evs))
    assert cond.batch_shape == (b,)
    cond_tables = engine_joint(cond, rc.num_states)
    for row in range(b):
        np.testing.assert_allclose(cond_tables[row], oracle.condition(tables[row], evs[row]),
                                   rtol=1e-6, atol=1e-9)
    shared = d.condition(torch.tensor(evs[0]))
    for row in range(b):
        if oracle.prob(tables[row], evs[0]) > 0:
            np.testing.assert_allclose(engine_joint(shared, rc.num_states)[row],
                                       oracle.condition(tables[row], evs[0]), rtol=1e-6, atol=1e-9)


def test_condition_on_a_batch_raises_if_any_element_has_zero_probability():
    c = Circuit(Product([Categorical(0, 3, support=[0, 1]), Categorical(1, 3)])).double()
    d = c.distribution(torch.zeros(2, c.num_params, dtype=torch.float64))
    assert d.condition(torch.tensor([[0, -1], [1, 2]])).batch_shape == (2,)
    with pytest.raises(ValueError, match="evidence"):
        d.condition(torch.tensor([[0, -1], [2, -1]]))


@pytest.mark.parametrize("root, only", [
    (Sum([Product([Categorical.indicator(0, 1, 2), Categorical(1, 1)])]), [1, 0]),
    (Product([Categorical(0, 3, support=[2]), Categorical(1, 1)]), [2, 0]),
], ids=["single_child_sum", "indicators"])
def test_parameter_free_circuit_takes_empty_params(root, only):
    c = Circuit(root)
    assert c.num_params == 0
    d = c.distribution(torch.zeros(2, 0))
    assert d.batch_shape == (2,)
    x = torch.tensor([only, only])
    assert torch.equal(d.log_prob(x), torch.zeros(2))
    assert d.marginals().shape == (2, 2, c.max_states)
    assert torch.equal(d.mode, x)


def test_two_dimensional_batch_shape():
    c = selective(4, 3, width=4).double()
    params = torch.randn(6, c.num_params, dtype=torch.float64)
    d = c.distribution(params.reshape(2, 3, -1))
    assert d.batch_shape == (2, 3)
    x = d.sample((5,))
    assert x.shape == (5, 2, 3, 4)
    assert d.log_prob(x).shape == (5, 2, 3)
    assert d.marginals().shape == (2, 3, 4, 3)
    assert d.scope_marginals([(0, 1)]).shape == (2, 3, 1, 3, 3)
    assert d.entropy().shape == (2, 3) and d.mode.shape == (2, 3, 4)
    assert d.leave_one_out_log_prob(x[0]).shape == (2, 3, 4)
    cond = d.condition(x[0].clone().masked_fill_(torch.arange(4) > 1, -1))
    assert cond.batch_shape == (2, 3) and cond.mode.shape == (2, 3, 4)
    assert_close(d.marginals().reshape(6, 4, 3), c.distribution(params).marginals())


def test_empty_batches():
    c = selective(4, 3, width=4)
    assert c.sample(0).shape == (0, 4)
    empty = torch.zeros(0, 4, dtype=torch.long)
    assert c.log_prob(empty).shape == (0,)
    assert c.leave_one_out_log_prob(empty).shape == (0, 4)


def test_parameters_change_the_distribution():
    c = mean_field(3, 4).double()
    d = c.distribution(random_params(c, 2, seed=0))
    m = d.marginals()
    assert not torch.allclose(m[0], m[1])
    assert_close(m.sum(-1), np.ones((2, 3)))


def test_dtype_follows_the_parameters():
    c = selective(4, 3, width=4)
    for dtype in (torch.float32, torch.float64):
        d = c.distribution(torch.zeros(2, c.num_params, dtype=dtype))
        assert d.log_prob(d.sample()).dtype == dtype
        assert d.marginals().dtype == dtype
        assert d.entropy().dtype == dtype
    assert c.double().distribution().marginals().dtype == torch.float64


def test_circuit_queries_delegate_to_its_own_distribution():
    c = selective(4, 3, width=5).double()
    with torch.no_grad():
        for p in c.parameters():
            p.copy_(torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(1)))
    d = c.distribution()
    x = d.sample((7,))
    assert_close(c.log_prob(x), d.log_prob(x))
    assert_close(c.marginals(), d.marginals())
    assert_close(c.entropy(), d.entropy())
    assert_close(c.scope_marginals([(0, 3)]), d.scope_marginals([(0, 3)]))
    assert torch.equal(c.mpe(), d.mode)
    assert_close(c.leave_one_out_log_prob(x[0]), d.leave_one_out_log_prob(x[0]))
