"""``Circuit.log_prob``'s hand-written reverse (``circuits.reverse``) against autograd of the
plain path (``parameters.normalise`` + ``passes.root_log_values``): values and gradients
w.r.t. the logits over random structures (every step kind, shared children, restricted
supports, missing values), the RAT-SPN's fused first layer in both dtypes, the exact
guards' fallback, second derivatives, and batches above ``reverse.MAX_BATCH``."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import replace
from unittest.mock import patch

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from circuits import Categorical, Circuit, Product, Sum, leaf_products, parameters, passes, reverse, upward
from circuits.structures import random_tensorized
from tests.circuits.helpers import PROPERTY, build
from tests.circuits.strategies import evidences, random_circuits

RAT = dict(num_vars=8, num_states=3, depth=2, num_repetitions=2, num_sums=3,
           num_input_distributions=3, seed=1)


def _plain(c: Circuit, x: torch.Tensor) -> torch.Tensor:
    plan = c._plan_on(torch.device("cpu"))
    ext = passes.extend(parameters.normalise(plan, c.logits.unsqueeze(0), "logits"))
    return passes.root_log_values(plan, ext, x, x.shape[0])


def _both(c: Circuit, x: torch.Tensor, seed: int = 0):
    """``(values, gradient)`` of a random weighting of ``log p(x)``, taped and plain."""
    weights = torch.randn(x.shape[0], generator=torch.Generator().manual_seed(seed),
                          dtype=c.logits.dtype)
    out = []
    for fn in (c.log_prob, lambda x_: _plain(c, x_)):
        values = fn(x)
        grad, = torch.autograd.grad((values * weights).sum(), c.logits)
        out.append((values.detach(), grad))
    return out


@pytest.fixture
def calls(monkeypatch):
    """How often each route ran: the taped forward and autograd's recomputed gradient."""
    seen = {"taped": 0, "autograd": 0}
    forward, recompute = reverse._TapedLogProb.forward, reverse._autograd_grad

    def counted_forward(ctx, *args):
        seen["taped"] += 1
        return forward(ctx, *args)

    def counted_recompute(*args):
        seen["autograd"] += 1
        return recompute(*args)
    monkeypatch.setattr(reverse._TapedLogProb, "forward", staticmethod(counted_forward))
    monkeypatch.setattr(reverse, "_autograd_grad", counted_recompute)
    return seen


@PROPERTY
@given(rc=random_circuits(max_vars=4, max_states=3), data=st.data(),
       seed=st.integers(0, 2 ** 16))
def test_reverse_equals_autograd_on_random_circuits(rc, data, seed):
    c = build(rc)
    with torch.no_grad():
        c.logits.normal_(generator=torch.Generator().manual_seed(seed)).mul_(2.0)
    rows = [data.draw(evidences(rc.num_states)) for _ in range(data.draw(st.integers(1, 5)))]
    x = torch.tensor(rows)
    assert type(c.log_prob(x).grad_fn).__name__ == "_TapedLogProbBackward"
    (taped, g_taped), (plain, g_plain) = _both(c, x, seed)
    finite = torch.isfinite(plain)
    assert torch.equal(finite, torch.isfinite(taped))
    if bool(finite.all()):                        # autograd's gradient through log 0 is NaN
        assert torch.allclose(taped, plain, rtol=1e-12, atol=1e-12)
        assert torch.allclose(g_taped, g_plain, rtol=1e-9, atol=1e-11)


def test_reverse_equals_autograd_on_dense_blocks_and_a_sum_at_log_zero(calls):
    # two sums over one child list per variable (dense steps, not fused: the children are
    # leaves) and a sparse sum whose children are all log 0 at x_0 = 2 (its flows are 0)
    leaves = [Categorical(0, 3, probs=p) for p in ([.2, .3, .5], [.6, .2, .2], [.1, .1, .8])]
    pair = [Categorical(1, 2, probs=p) for p in ([.3, .7], [.9, .1])]
    dead = Sum([Categorical(0, 3, support=[0]), Categorical(0, 3, support=[0, 1])])
    root = Sum([Product([Sum(leaves, weights=[.2, .3, .5]), Sum(pair, weights=[.4, .6])]),
                Product([Sum(leaves, weights=[.5, .4, .1]), Sum(pair, weights=[.7, .3])]),
                Product([dead, Categorical(1, 2)])])
    c = Circuit(root, dtype=torch.float64)
    kinds = {step.kind for layer in c._plan_on(torch.device("cpu")).program.layers for step in layer}
    assert kinds == {"sum", "dense", "product"}
    x = torch.tensor([[2, 1], [0, 0], [-1, 1], [1, -1]])
    (taped, g_taped), (plain, g_plain) = _both(c, x)
    assert calls == {"taped": 1, "autograd": 0}
    assert torch.allclose(taped, plain, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(g_taped).all()
    assert torch.allclose(g_taped, g_plain, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 5, 40])
def test_reverse_equals_autograd_on_the_fused_first_layer(dtype, batch, calls):
    c = Circuit(random_tensorized(**RAT).root, dtype=dtype)
    fused = leaf_products.leaf_products(c._plan_on(torch.device("cpu")).program)
    assert fused is not None and fused.order is None and fused.program is not c._plan_on("cpu").program
    with torch.no_grad():
        c.logits.normal_(generator=torch.Generator().manual_seed(batch)).mul_(3.0)
    x = torch.randint(0, 3, (batch, RAT["num_vars"]), generator=torch.Generator().manual_seed(1))
    x[::2, 1] = -1
    (taped, g_taped), (plain, g_plain) = _both(c, x)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    assert torch.allclose(taped, plain, **tol)
    assert torch.allclose(g_taped, g_plain, **tol)
    assert calls == {"taped": 1, "autograd": 0}


def test_reverse_falls_back_to_autograd_where_the_exact_guards_run(monkeypatch, calls):
    c = Circuit(random_tensorized(**RAT).root, dtype=torch.float64)
    x = torch.randint(0, 3, (6, RAT["num_vars"]), generator=torch.Generator().manual_seed(2))
    expected = _both(c, x)
    assert calls == {"taped": 1, "autograd": 0}
    monkeypatch.setattr(upward, "_limit", lambda step, dtype: 1e300)   # every sum "underflows"
    (taped, g_taped), (plain, g_plain) = _both(c, x)
    assert calls == {"taped": 2, "autograd": 1}
    for got, want in zip((taped, g_taped), expected[1]):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    assert torch.allclose(g_plain, g_taped, rtol=1e-12, atol=1e-12)


def test_reverse_second_derivatives_are_autograds():
    c = Circuit(random_tensorized(**RAT).root, dtype=torch.float64)
    x = torch.randint(0, 3, (4, RAT["num_vars"]), generator=torch.Generator().manual_seed(3))
    direction = torch.randn(c.num_params, generator=torch.Generator().manual_seed(4),
                            dtype=torch.float64)
    hvps = []
    for fn in (c.log_prob, lambda x_: _plain(c, x_)):
        grad, = torch.autograd.grad(fn(x).sum(), c.logits, create_graph=True)
        hvp, = torch.autograd.grad((grad * direction).sum(), c.logits)
        hvps.append(hvp)
    assert float(hvps[1].abs().max()) > 0
    assert torch.allclose(hvps[0], hvps[1], rtol=1e-10, atol=1e-12)


def test_batches_above_max_batch_take_autograds_path(monkeypatch, calls):
    c = Circuit(random_tensorized(**RAT).root, dtype=torch.float64)
    monkeypatch.setattr(reverse, "MAX_BATCH", 4)
    x = torch.randint(0, 3, (5, RAT["num_vars"]), generator=torch.Generator().manual_seed(5))
    (taped, g_taped), (plain, g_plain) = _both(c, x)
    assert calls["taped"] == 0
    assert torch.equal(taped, plain) and torch.equal(g_taped, g_plain)
    c.log_prob(x[:4]).sum().backward()
    assert calls["taped"] == 1


def test_a_retained_graphs_second_backward_recomputes_the_same_gradient(calls):
    c = Circuit(random_tensorized(**RAT).root, dtype=torch.float64)
    x = torch.randint(0, 3, (5, RAT["num_vars"]), generator=torch.Generator().manual_seed(6))
    total = c.log_prob(x).sum()
    first, = torch.autograd.grad(total, c.logits, retain_graph=True)
    second, = torch.autograd.grad(total, c.logits)
    assert calls == {"taped": 1, "autograd": 1}
    assert torch.allclose(first, second, rtol=1e-12, atol=1e-12)


WIDE = dict(RAT, num_sums=5, num_input_distributions=4)   # inner groups of 25 children


def _run_kinds(plan) -> set:
    return {"wide" if size >= parameters.NARROW else "narrow" if size else "mixed"
            for _, _, size, *_ in plan.param_runs}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 7])
def test_reverse_equals_autograd_with_wide_groups(dtype, batch, calls):
    # groups of at least parameters.NARROW: the weights from a softmax, the log-weights'
    # gradient of a one-column batch a broadcast product
    c = Circuit(random_tensorized(**WIDE).root, dtype=dtype)
    assert "wide" in _run_kinds(c._plan_on("cpu"))
    with torch.no_grad():
        c.logits.normal_(generator=torch.Generator().manual_seed(batch)).mul_(3.0)
    x = torch.randint(0, 3, (batch, WIDE["num_vars"]), generator=torch.Generator().manual_seed(1))
    (taped, g_taped), (plain, g_plain) = _both(c, x)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    assert torch.allclose(taped, plain, **tol)
    assert torch.allclose(g_taped, g_plain, **tol)
    assert calls == {"taped": 1, "autograd": 0}


def _normalise_cases():
    """Circuits whose parameter runs are wide, narrow and mixed (each kind at least once)."""
    mixed = Sum([Product([Categorical(0, 2), Categorical(1, 3)]),      # sizes 2, 3, 2, 3, 2
                 Product([Categorical(0, 2), Categorical(1, 3)])])
    circuits = [Circuit(random_tensorized(**WIDE).root, dtype=torch.float64),
                Circuit(random_tensorized(**RAT).root, dtype=torch.float64),
                Circuit(mixed, dtype=torch.float64)]
    kinds = set().union(*(_run_kinds(c._plan_on("cpu")) for c in circuits))
    assert kinds == {"wide", "narrow", "mixed"}
    return circuits


def test_normalise_extended_and_its_backward_equal_normalise_and_autograd():
    for i, c in enumerate(_normalise_cases()):
        plan = c._plan_on(torch.device("cpu"))
        logits = torch.randn(c.num_params, generator=torch.Generator().manual_seed(i),
                             dtype=torch.float64).mul_(4.0).requires_grad_()
        want = passes.extend(parameters.normalise(plan, logits.unsqueeze(0)))
        with torch.no_grad():
            ext, weights, smallest = parameters.normalise_extended(plan, logits)
        assert torch.allclose(ext, want, rtol=1e-12, atol=1e-12)
        assert torch.allclose(weights, torch.exp(want), rtol=1e-12, atol=1e-14)
        assert smallest == float(weights[0, :c.num_params].min())
        cotangent = torch.randn(1, c.num_params + 2, generator=torch.Generator().manual_seed(9),
                                dtype=torch.float64)
        expected, = torch.autograd.grad(want, logits, cotangent)
        got = parameters.normalise_backward(plan, cotangent.clone(), weights)
        assert got.shape == (1, c.num_params)
        assert torch.allclose(got[0], expected, rtol=1e-12, atol=1e-12)


def test_normalise_extended_leaves_the_weights_only_runs_log_parameters_unwritten():
    skipped = set()
    for i, c in enumerate(_normalise_cases()):
        plan = c._plan_on(torch.device("cpu"))
        logits = torch.randn(c.num_params, generator=torch.Generator().manual_seed(i),
                             dtype=torch.float64).mul_(4.0)
        want, want_weights, want_smallest = parameters.normalise_extended(plan, logits)
        dense = frozenset(j for j, (_, _, size, *_) in enumerate(plan.param_runs) if size)
        skipped |= {"wide" if plan.param_runs[j][2] >= parameters.NARROW else "narrow" for j in dense}
        ext, weights, smallest = parameters.normalise_extended(plan, logits, weights_only=dense)
        assert torch.allclose(weights, want_weights, rtol=1e-12, atol=1e-14)
        assert smallest == pytest.approx(want_smallest, rel=1e-12)
        for j, (start, stop, size, *_) in enumerate(plan.param_runs):
            if j not in dense:                      # a mixed run: both rows, as before
                assert torch.equal(ext[:, start:stop], want[:, start:stop])
        assert torch.equal(ext[:, -2:], want[:, -2:])
    assert skipped == {"wide", "narrow"}


@contextmanager
def _unwritten_logs_poisoned():
    """The taped forward with NaN in every column that ``normalise_extended`` leaves
    unwritten, so that a read of one shows in the values or the gradient."""
    normalise = parameters.normalise_extended

    def poisoned(plan, logits, name="logits", weights_only=frozenset()):
        ext, weights, smallest = normalise(plan, logits, name, weights_only)
        for j in weights_only:
            start, stop, size, *_ = plan.param_runs[j]
            if size:
                ext[:, start:stop] = math.nan
        return ext, weights, smallest
    with patch.object(parameters, "normalise_extended", poisoned):
        yield


def _dense_narrow_blocks() -> Circuit:
    """Two sums over the same three leaves per variable (dense steps of groups of 3: a
    narrow run read as weights alone) under a root of two products."""
    leaves = {v: [Categorical(v, 2) for _ in range(3)] for v in range(4)}
    sums = {v: [Sum(leaves[v]) for _ in range(2)] for v in range(4)}
    return Circuit(Sum([Product([sums[v][i] for v in range(4)]) for i in range(2)]),
                   dtype=torch.float64)


@pytest.mark.parametrize("case", ["rat", "wide", "dense narrow"])
@pytest.mark.parametrize("batch", [1, 6])
def test_the_taped_pass_reads_no_log_parameter_of_a_weights_only_run(case, batch, calls):
    # a RAT-SPN's inner sums (wide or narrow groups) are read by outer steps as weights
    # alone, the dense blocks' sums by dense steps; the leaves' and the root's runs are read
    # as log-parameters (the runs: leaves, inner sums by size, root)
    if case == "dense narrow":
        c = _dense_narrow_blocks()
    else:
        c = Circuit(random_tensorized(**(RAT if case == "rat" else WIDE)).root, dtype=torch.float64)
    plan = c._plan_on(torch.device("cpu"))
    runs = len(plan.param_runs)
    assert runs >= 3 and reverse._weights_only_runs(plan) == set(range(1, runs - 1))
    with torch.no_grad():
        c.logits.normal_(generator=torch.Generator().manual_seed(batch)).mul_(3.0)
    x = torch.randint(0, 2, (batch, plan.num_vars), generator=torch.Generator().manual_seed(2))
    x[::3, 0] = -1
    with _unwritten_logs_poisoned():
        (taped, g_taped), (plain, g_plain) = _both(c, x)
    assert calls == {"taped": 1, "autograd": 0}
    assert torch.allclose(taped, plain, rtol=1e-12, atol=1e-12)
    assert torch.allclose(g_taped, g_plain, rtol=1e-12, atol=1e-12)


def test_normalise_extended_rejects_an_all_minus_inf_group_of_every_run_kind():
    for c in _normalise_cases():
        plan = c._plan_on(torch.device("cpu"))
        for start, stop, size, first_group, _ in plan.param_runs:
            logits = torch.zeros(c.num_params, dtype=torch.float64)
            logits[(plan.param_group == first_group).nonzero().flatten()] = -math.inf
            with pytest.raises(ValueError, match="zero total mass"):
                parameters.normalise_extended(plan, logits)
            with torch.no_grad():
                c.logits.copy_(logits)
            with pytest.raises(ValueError, match="logits: every logit .* zero total mass"):
                c.log_prob(torch.zeros(1, plan.num_vars, dtype=torch.long))
        with torch.no_grad():
            c.logits.zero_()[0] = math.nan                # a NaN logit alone passes, as normalise's
        c.log_prob(torch.zeros(1, plan.num_vars, dtype=torch.long))


def test_the_reverse_writes_layer_gradients_whole_only_for_permutations():
    # the RAT-SPN's first outer step reads its layer permuted, the next ones in order; a sum
    # whose children repeat a row is added by index
    c = Circuit(random_tensorized(**RAT).root, dtype=torch.float64)
    program = leaf_products.leaf_products(c._plan_on("cpu").program).program
    outers = [s for layer in program.layers for s in layer if s.kind == "outer"]
    orders = [reverse._rows(s)[1] for s in outers]
    assert orders[0] is not None and orders[0] is not False and all(o is None for o in orders[1:])
    ids, order = reverse._rows(outers[0])
    assert torch.equal(ids[order], torch.arange(ids.numel()))
    assert all(s._pair_in_order for s in outers[1:]) and not outers[0]._pair_in_order
    step = [s for layer in program.layers for s in layer if s.kind == "sum"][0]
    twice = replace(step, children=step.children.repeat(1, 2), weights=step.weights.repeat(1, 2))
    assert reverse._rows(twice)[1] is False
