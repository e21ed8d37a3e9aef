"""``leave_one_out_log_prob``'s two routes (circuits/leave_one_out.py): by the leaves' flows
and by log-derivatives, against brute force, against each other (values and gradients), and
which rows take which route."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from circuits import Categorical, Circuit, Product, Sum
from circuits import leave_one_out as loo
from circuits.structures import mixture, random_tensorized, selective
from tests.circuits import oracle
from tests.circuits.helpers import PROPERTY, assert_log_close, build, joint
from tests.circuits.strategies import random_circuits


def _routes(circuit: Circuit, params: torch.Tensor, x: torch.Tensor):
    """Both routes on the same rows ``x [B, V]`` (``params [B or 1, P]``)."""
    dist = circuit.distribution(params)
    plan, ext = dist._plan, dist._params_for(x.shape[0])
    leaf = loo.passes._leaf_values(plan, ext, x, x.shape[0])
    fast, finite = loo.by_flows(plan, ext, x, leaf)
    assert bool(finite.all())
    return fast, loo.by_log_derivatives(plan, ext, x)


RAT = dict(num_vars=6, num_states=3, depth=2, num_repetitions=2, num_sums=3,
           num_input_distributions=3)


def _assert_routes_agree(seed: int, shared: bool, rows: int) -> None:
    """Both routes on a random RAT-SPN (float64): equal values, and equal gradients of a
    random weighted sum of them (the flows route's by second-order autograd), never NaN."""
    circuit = random_tensorized(**RAT, seed=seed).double()
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(1 if shared else rows, circuit.num_params, generator=g,
                         dtype=torch.float64, requires_grad=True)
    x = torch.randint(0, 3, (rows, 6), generator=g)
    fast, slow = _routes(circuit, params, x)
    torch.testing.assert_close(fast, slow)
    weights = torch.randn(rows, 6, generator=g, dtype=torch.float64)
    got, = torch.autograd.grad((fast * weights).sum(), params, retain_graph=True)
    expected, = torch.autograd.grad((slow * weights).sum(), params)
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shared", [True, False])
def test_the_routes_agree_in_value_and_gradient(seed, shared):
    _assert_routes_agree(seed, shared, rows=5)


@pytest.mark.parametrize("seed", range(2))
def test_the_flows_route_gradient_with_every_column_recomputed_exactly(seed, monkeypatch):
    """The second-order pass in exact mode, every batch column of every dense and outer step
    taken as below its shift's limit and recomputed by the exact log-sum-exp (the fused
    outer step's gradient is then zero there, and the recomputed values carry it): the
    gradient still equals the log-derivatives route's."""
    run = loo.upward.run
    monkeypatch.setattr(loo.upward, "run", lambda *a, **k: run(*a, **(k | {"exact": True})))
    monkeypatch.setattr(loo.upward, "_limit", lambda step, dtype: 1e300)
    _assert_routes_agree(seed, shared=True, rows=7)


def test_flows_route_gradient_by_gradcheck():
    circuit = mixture(3, 3, 2).double()
    params = torch.randn(2, circuit.num_params, dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[0, 2, 1], [1, 1, 0]])

    def fast(q):
        dist = circuit.distribution(q)
        ext = dist._params_for(2)
        return loo.by_flows(dist._plan, ext, x, loo.passes._leaf_values(dist._plan, ext, x, 2))[0]

    assert torch.autograd.gradcheck(fast, (params,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_rows_with_a_zero_leaf_take_the_log_derivatives(monkeypatch):
    """Row 0 reads a zero-probability state (log v = -inf), row 1 does not: each route gets
    its row, and the result equals brute force."""
    seen = {}
    for name in ("by_flows", "by_log_derivatives"):
        original = getattr(loo, name)

        def spy(plan, ext, x, *rest, _name=name, _original=original):
            seen[_name] = x.tolist()
            return _original(plan, ext, x, *rest)
        monkeypatch.setattr(loo, name, spy)
    root = Sum([Product([Categorical(0, 3, probs=[0.5, 0.5, 0.0]), Categorical(1, 2, probs=[0.3, 0.7])]),
                Product([Categorical(0, 3, probs=[0.2, 0.3, 0.5]), Categorical(1, 2, probs=[0.6, 0.4])])],
               weights=[0.4, 0.6])
    circuit = Circuit(root, dtype=torch.float64)
    x = torch.tensor([[2, 1], [0, 0]])
    got = circuit.leave_one_out_log_prob(x)
    assert seen == {"by_flows": [[0, 0]], "by_log_derivatives": [[2, 1]]}
    p = oracle.joint_table(root)
    for row in range(2):
        np.testing.assert_allclose(got[row].detach().numpy(),
                                   oracle.leave_one_out(p, x[row].tolist()), atol=1e-12)


def test_indicator_circuits_take_the_log_derivatives_alone(monkeypatch):
    monkeypatch.setattr(loo, "by_flows", lambda *a: pytest.fail("indicator leaves are 0"))
    circuit = selective(3, 3, 4)
    x = circuit.sample(4, generator=torch.Generator().manual_seed(0))
    assert circuit.leave_one_out_log_prob(x).shape == (4, 3)


@PROPERTY
@given(random_circuits(), st.data())
def test_either_route_equals_brute_force(rc, data):
    """Random structures (some with zero-probability states): whichever route each row
    takes, ``log p(x_i | x_-i)`` is the enumerated one."""
    c, p = build(rc), joint(rc)
    support = np.argwhere(p > 0)
    rows = data.draw(st.lists(st.integers(0, len(support) - 1), min_size=1, max_size=5))
    x = torch.tensor(support[rows], dtype=torch.long)
    assert_log_close(c.leave_one_out_log_prob(x),
                     [oracle.leave_one_out(p, row.tolist()) for row in x])


def _uneven() -> Circuit:
    """Variable 2 has eight leaves, 0 and 1 one each: the leaf layer is not ``[V, Lv]``."""
    a, b = Categorical(0, 2, probs=[0.3, 0.7]), Categorical(1, 3, probs=[0.2, 0.5, 0.3])
    leaves = [Categorical(2, 3, probs=torch.softmax(torch.randn(3, generator=torch.Generator()
                                                                .manual_seed(i)), 0).tolist())
              for i in range(8)]
    return Circuit(Product([a, b, Sum(leaves)]), dtype=torch.float64)


@pytest.mark.parametrize("make,by_variable", [(_uneven, False),
                                              (lambda: random_tensorized(**RAT, seed=0).double(), True)])
def test_both_leaf_layouts(make, by_variable):
    circuit = make()
    assert (circuit._plan_on("cpu").schedule.leaf_table is not None) == by_variable
    params = torch.randn(3, circuit.num_params, dtype=torch.float64, requires_grad=True)
    x = circuit.distribution(params).sample(generator=torch.Generator().manual_seed(1))
    fast, slow = _routes(circuit, params, x)
    torch.testing.assert_close(fast, slow)
    if not by_variable:      # the circuit's own parameters against brute force
        p = oracle.joint_table(circuit.root)
        got = circuit.leave_one_out_log_prob(x)
        for row in range(3):
            np.testing.assert_allclose(got[row].detach().numpy(),
                                       oracle.leave_one_out(p, x[row].tolist()), atol=1e-12)


def test_grad_modes():
    """Under no_grad and inference_mode, and with frozen logits, the flows route gives the
    same values and hands back no graph; with a gradient it does."""
    circuit = random_tensorized(**RAT, seed=1)
    x = circuit.sample(4, generator=torch.Generator().manual_seed(2))
    with_grad = circuit.leave_one_out_log_prob(x)
    assert with_grad.requires_grad
    with torch.no_grad():
        plain = circuit.leave_one_out_log_prob(x)
    with torch.inference_mode():
        inference = circuit.leave_one_out_log_prob(x)
    circuit.logits.requires_grad_(False)
    frozen = circuit.leave_one_out_log_prob(x)
    for out in (plain, inference, frozen):
        assert not out.requires_grad
        torch.testing.assert_close(out, with_grad.detach())


#: depth 1: the leaf regions' products are read by the fused first layer (for these seeds;
#: seed 2 splits the variables unevenly, and the fused layer declines it)
RAT_FUSED = dict(RAT, depth=1)


@pytest.mark.parametrize("seed", [0, 1, 3, 4, 5])
def test_the_flows_route_with_a_fused_first_layer_agrees_in_value_and_gradient(seed):
    """Shared parameters on a RAT-SPN whose first layer the upward pass reads from the leaf
    tables: the flows route against log-derivatives, in value and in the gradient of a
    weighted sum (its second-order autograd), and against brute force."""
    circuit = random_tensorized(**RAT_FUSED, seed=seed).double()
    plan = circuit._plan_on("cpu")
    assert plan.schedule.first is not None
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(1, circuit.num_params, generator=g, dtype=torch.float64,
                         requires_grad=True)
    x = torch.randint(0, 3, (7, 6), generator=g)
    ext = circuit.distribution(params)._params_for(7)

    def flows_route():
        return loo.by_flows(plan, ext, x, loo.passes._leaf_values(plan, ext, x, 7))
    got, finite = flows_route()
    expected = loo.by_log_derivatives(plan, ext, x)
    assert bool(finite.all())
    torch.testing.assert_close(got, expected)
    weights = torch.randn(7, 6, generator=g, dtype=torch.float64)
    got_grad, = torch.autograd.grad((got * weights).sum(), params, retain_graph=True)
    expected_grad, = torch.autograd.grad((expected * weights).sum(), params)
    torch.testing.assert_close(got_grad, expected_grad)
    with torch.no_grad():
        torch.testing.assert_close(flows_route()[0], expected)
    with torch.inference_mode():
        torch.testing.assert_close(circuit.distribution(params[0].detach())
                                   .leave_one_out_log_prob(x), expected.detach())
    grid = torch.cartesian_prod(*[torch.arange(3)] * 6)           # every assignment
    with torch.no_grad():
        p = circuit.distribution(params[0]).log_prob(grid).exp().view([3] * 6).numpy()
    for row in range(7):
        np.testing.assert_allclose(got[row].detach().numpy(),
                                   oracle.leave_one_out(p, x[row].tolist()), atol=1e-10)


def test_a_leaf_below_the_floor_still_gives_the_enumerated_values():
    """Shared parameters with one leaf state below the flows route's floor: the rows that
    read it take log-derivatives, and every row gives the enumerated values."""
    circuit = random_tensorized(**RAT_FUSED, seed=3).double()
    x = circuit.sample(5, generator=torch.Generator().manual_seed(0))
    slot = int(circuit._plan_on("cpu").schedule.first.slots[0, 0, 1, 0])
    with torch.no_grad():
        circuit.logits[slot] = -1e4          # one leaf state at about exp(-1e4): below the floor
    got = circuit.leave_one_out_log_prob(x)
    with torch.no_grad():
        p = circuit.log_prob(torch.cartesian_prod(*[torch.arange(3)] * 6)).exp()
    p = p.view([3] * 6).numpy()
    for row in range(5):
        np.testing.assert_allclose(got[row].detach().numpy(),
                                   oracle.leave_one_out(p, x[row].tolist()), atol=1e-10)
