"""The engine's speed paths give the same numbers as the plain ones.

- ``Circuit`` keeps its normalised parameters while ``logits`` is unchanged and no gradient
  can flow: every in-place change through the parameter must invalidate them.
- The fused outer step's hand-written backward (``kernels.OuterMatmul``) against autograd
  of the same formula and against finite differences, including ``-inf`` children; and the
  outer step's twice-differentiable form (``kernels.outer_values`` by autograd, which
  ``upward.run(twice=True)`` takes), second derivatives included.
- Narrow batches (``kernels.bmm``'s transposed product) and run-wise normalisation
  (``passes.normalise``) against float64 references.
- The first layer read from the leaf tables (the ``first layer`` rewrite,
  ``plan.schedule.first``) against the leaf layer's pass, values and gradients.
"""

from __future__ import annotations

import copy

import pytest
import torch

from circuits import Categorical, Circuit, Product, Sum, kernels, passes, schedule, upward
from circuits.structures import random_tensorized

RAT = dict(num_vars=8, num_states=3, depth=2, num_repetitions=2, num_sums=3,
           num_input_distributions=3, seed=1)


def _x(batch: int, seed: int = 0) -> torch.Tensor:
    x = torch.randint(0, 3, (batch, RAT["num_vars"]), generator=torch.Generator().manual_seed(seed))
    x[::3, 0] = -1
    return x


def _fresh(c: Circuit, x: torch.Tensor) -> torch.Tensor:
    """log p(x) from a circuit rebuilt around the current logits (nothing cached)."""
    twin = copy.deepcopy(c)
    twin._own_params = None
    return twin.log_prob(x)


def test_cached_parameters_follow_in_place_updates():
    c = random_tensorized(**RAT)
    x = _x(16)
    opt = torch.optim.SGD(c.parameters(), lr=0.5)
    with torch.no_grad():
        before = c.log_prob(x)
        assert torch.equal(c.log_prob(x), before)            # the cached path, same values
    loss = -c.log_prob(x).sum()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = c.log_prob(x)
    assert not torch.allclose(after, before)
    assert torch.allclose(after, _fresh(c, x), atol=1e-6)
    with torch.no_grad():
        c.logits.copy_(torch.randn(c.num_params, generator=torch.Generator().manual_seed(3)))
        copied = c.log_prob(x)
    assert torch.allclose(copied, _fresh(c, x), atol=1e-6)
    state = copy.deepcopy(c.state_dict())
    with torch.no_grad():
        c.logits.zero_()
        assert torch.allclose(c.log_prob(x), _fresh(c, x), atol=1e-6)
    c.load_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(c.log_prob(x), copied, atol=1e-6)
        c.double()
        assert c.log_prob(x).dtype == torch.float64
        assert torch.allclose(c.log_prob(x).float(), copied, atol=1e-5)


def test_cached_parameters_never_block_gradients():
    c = random_tensorized(**RAT)
    x = _x(8)
    with torch.no_grad():
        c.log_prob(x)                                        # fills the cache
    out = c.log_prob(x).sum()
    assert out.requires_grad
    (grad,) = torch.autograd.grad(out, c.logits)
    assert float(grad.abs().sum()) > 0
    c.logits.requires_grad_(False)
    assert not c.log_prob(x).requires_grad
    assert torch.equal(c.log_prob(x), c.distribution().log_prob(x))


def _outer_inputs(dtype, batch: int, neg_inf: bool):
    gen = torch.Generator().manual_seed(batch)
    g, a, a2, m = 3, 4, 3, 5
    w = torch.rand(1, g, m, a * a2, generator=gen, dtype=dtype).log()     # log-weights
    both = torch.randn(g, a + a2, batch, generator=gen, dtype=dtype) * 3
    if neg_inf:
        both[0, :a, 0] = float("-inf")                      # a whole left list at log 0
        both[1, 1, :] = float("-inf")                       # one child at log 0
        w[0, 2, 0, :] = float("-inf")                       # zero weights
    return w, both, a


@pytest.mark.parametrize("batch", [1, 5, 40])
@pytest.mark.parametrize("neg_inf", [False, True])
def test_outer_backward_equals_autograd_of_the_formula(batch, neg_inf):
    w, both, a = _outer_inputs(torch.float64, batch, neg_inf)
    w1, b1 = w.clone().requires_grad_(), both.clone().requires_grad_()
    out, _ = kernels.OuterMatmul.apply(w1, b1, a)
    w2, b2 = w.clone().requires_grad_(), both.clone().requires_grad_()
    left, right = b2[:, :a], b2[:, a:]
    terms = left.unsqueeze(2) + right.unsqueeze(1)                   # [G, A, A2, B]
    expected = kernels.logsumexp(terms.flatten(1, 2).unsqueeze(1) + w2[0].unsqueeze(-1), 2)
    finite = torch.isfinite(expected)
    assert torch.equal(torch.isfinite(out), finite)
    assert torch.allclose(out[finite], expected[finite], rtol=1e-12, atol=1e-12)
    upstream = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    (out * upstream).sum().backward()
    torch.where(finite, expected * upstream, 0.0).sum().backward()
    assert torch.allclose(w1.grad, w2.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(b1.grad, b2.grad, rtol=1e-10, atol=1e-12)
    assert not torch.isnan(b1.grad).any()


def test_outer_backward_gradcheck():
    w, both, a = _outer_inputs(torch.float64, 3, False)
    w.requires_grad_()
    both.requires_grad_()
    assert torch.autograd.gradcheck(lambda w_, b_: kernels.OuterMatmul.apply(w_, b_, a)[0], (w, both))


def test_outer_backward_cannot_be_differentiated_again():
    """Its backward is hand-written for first order only: a second derivative must fail
    loudly, not come out silently wrong (``upward.run(twice=True)`` is the way to one)."""
    w, both, a = _outer_inputs(torch.float64, 3, False)
    both.requires_grad_()
    out, _ = kernels.OuterMatmul.apply(w.requires_grad_(), both, a)
    grad, = torch.autograd.grad(out.square().sum(), both, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


def _formula(w, both, a):
    """The outer step by autograd's own ops: ``logsumexp_k (w_mk + left_i + right_j)``."""
    terms = both[:, :a].unsqueeze(2) + both[:, a:].unsqueeze(1)          # [G, A, A2, B]
    return kernels.logsumexp(terms.flatten(1, 2).unsqueeze(1) + w[0].unsqueeze(-1), 2)


def _twice(w, both, a):
    """The outer step as ``upward.run(twice=True)`` takes it: autograd of its own ops."""
    return kernels.outer_values(torch.exp(w), both, a)[0]


def test_outer_twice_gradgradcheck():
    """The step whose gradient can be differentiated again (``run(twice=True)``): first and
    second derivatives against finite differences, every output's cotangent included."""
    w, both, a = _outer_inputs(torch.float64, 4, False)
    w.requires_grad_()
    both.requires_grad_()
    step = lambda w_, b_: _twice(w_, b_, a)                                    # noqa: E731
    assert torch.autograd.gradcheck(step, (w, both))
    assert torch.autograd.gradgradcheck(step, (w, both))


@pytest.mark.parametrize("batch", [1, 5, 40])
@pytest.mark.parametrize("neg_inf", [False, True])
def test_outer_twice_second_derivatives_equal_autograd_of_the_formula(batch, neg_inf):
    """A second-order loss of both gradients (the children's squared, the weights' summed)
    differentiated through the outer step and through autograd of the log-sum-exp
    formula: equal, with ``-inf`` children and zero weights, and never NaN."""
    w, both, a = _outer_inputs(torch.float64, batch, neg_inf)
    upstream = torch.randn(3, 5, batch, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(batch))
    results = []
    for step in (lambda w_, b_: _twice(w_, b_, a),
                 lambda w_, b_: _formula(w_, b_, a)):
        w1, b1 = w.clone().requires_grad_(), both.clone().requires_grad_()
        out = step(w1, b1)
        out = torch.where(torch.isfinite(out), out, 0.0)
        grad_b, grad_w = torch.autograd.grad((out * upstream).sum(), (b1, w1), create_graph=True)
        loss = (torch.where(torch.isfinite(grad_b), grad_b, 0.0) ** 2).sum() \
            + 0.3 * torch.where(torch.isfinite(grad_w), grad_w, 0.0).sum()
        results.append(torch.autograd.grad(loss, (w1, b1)))
    (got_w, got_b), (expected_w, expected_b) = results
    for got, expected in ((got_w, expected_w), (got_b, expected_b)):
        assert not torch.isnan(got).any()
        torch.testing.assert_close(got, expected.nan_to_num(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch", [1, 2, kernels.NARROW - 1, kernels.NARROW, 33])
def test_float32_matches_float64_on_both_sides_of_the_narrow_batch_switch(batch):
    c32 = random_tensorized(**RAT)
    c64 = Circuit(c32.root, dtype=torch.float64)
    x = _x(batch, seed=batch)
    assert torch.allclose(c32.log_prob(x).double(), c64.log_prob(x), atol=1e-5)
    c32.log_prob(x).sum().backward()
    c64.log_prob(x).sum().backward()
    assert torch.allclose(c32.logits.grad.double(), c64.logits.grad, atol=1e-4)


def _scatter_reference(plan, params: torch.Tensor) -> torch.Tensor:
    """Group-wise log-softmax in float64, group by group."""
    out = torch.empty_like(params, dtype=torch.float64)
    for g in range(plan.num_param_groups):
        members = torch.nonzero(plan.param_group == g).flatten()
        out[:, members] = torch.log_softmax(params[:, members].double(), -1)
    return out


def test_normalise_by_runs_equals_group_by_group():
    c = random_tensorized(**RAT)
    plan = c._plan_on(torch.device("cpu"))
    assert any(size for _, _, size, _, _ in plan.param_runs)          # dense runs are exercised
    params = torch.randn(3, plan.num_params, generator=torch.Generator().manual_seed(0)) * 50
    params[0, 0] = float("-inf")
    params[1, -1] = float("-inf")
    got = passes.normalise(plan, params)
    expected = _scatter_reference(plan, params)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    finite = torch.isfinite(expected)
    assert torch.allclose(got.double()[finite], expected[finite], atol=1e-4)


def test_normalise_mixed_and_single_size_stretches_equal_group_by_group():
    # group sizes 2, 3, 2, 3 then 2: no run of 4 groups, one mixed stretch (scatter); the
    # RAT-SPN's root sum alone after the runs is a stretch of one size (a dense run)
    leaves = [Categorical(0, 2), Categorical(1, 3)]
    mixed = Circuit(Sum([Product(leaves), Product([Categorical(0, 2), Categorical(1, 3)])]))
    rat = random_tensorized(**RAT)
    for c, sizes in ((mixed, [0]), (rat, [3, 9, 6])):
        plan = c._plan_on(torch.device("cpu"))
        assert [size for _, _, size, _, _ in plan.param_runs] == sizes
        params = torch.randn(2, plan.num_params, generator=torch.Generator().manual_seed(1)) * 20
        params.requires_grad_(True)
        got = passes.normalise(plan, params)
        reference = _scatter_reference(plan, params.detach())
        assert torch.allclose(got.double(), reference, atol=1e-5)
        weights = torch.randn(got.shape, generator=torch.Generator().manual_seed(2))
        grad, = torch.autograd.grad((got * weights).sum(), params)
        double = params.detach().double().requires_grad_(True)
        expected_out = torch.cat([torch.log_softmax(double[:, plan.param_group == g], -1)
                                  for g in range(plan.num_param_groups)], 1)
        expected, = torch.autograd.grad((expected_out * weights.double()).sum(), double)
        assert torch.allclose(grad.double(), expected, atol=1e-5)


def test_normalise_names_an_all_minus_inf_group():
    root = Sum([Product([Categorical(0, 2), Categorical(1, 2)]),
                Product([Categorical(0, 2), Categorical(1, 2)])])
    c = Circuit(root)
    params = torch.zeros(2, c.num_params)
    params[1, :2] = float("-inf")
    with pytest.raises(ValueError, match="row 1"):
        passes.normalise(c._plan_on(torch.device("cpu")), params)


@pytest.mark.parametrize("zero_state", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_leaf_products_equal_the_unfused_pass(dtype, zero_state, monkeypatch):
    """With autograd a finite leaf table is summed by a one-hot matmul; one holding log 0
    (a zero-probability state, picked by some rows) by the gather, as 0 * -inf is NaN."""
    c = Circuit(random_tensorized(**RAT).root, dtype=dtype)
    plan = c._plan_on(torch.device("cpu"))
    fused = plan.schedule.first
    assert fused is not None
    x = _x(40, seed=5)
    x[1] = -1                                                          # nothing observed
    ext = passes.extend(passes.normalise(plan, c.logits.unsqueeze(0)))
    if zero_state:
        ext = ext.detach().clone()
        ext[0, fused.gather_slots[0, 0, 0, 1 + int(x[0, fused.variables[0]])]] = float("-inf")
    one_hot_calls = []
    one_hot = schedule.LeafProducts._one_hot_sum
    monkeypatch.setattr(schedule.LeafProducts, "_one_hot_sum",
                        lambda self, *a: one_hot_calls.append(1) or one_hot(self, *a))
    ext_plain = ext.detach().clone().requires_grad_()
    ext_fused = ext.detach().clone().requires_grad_()
    plain = upward.root(plan, upward.run(
        plan, ext_plain, passes._leaf_values(plan, ext_plain, x, 40)))
    got = passes.root_log_values(plan, ext_fused, x, 40)
    assert torch.equal(got, plain)
    with torch.no_grad():   # the row lookup of the no-autograd layout: the same numbers
        assert torch.equal(passes.root_log_values(plan, ext_fused, x, 40), plain)
    assert bool(torch.isinf(plain).any()) == zero_state
    assert bool(one_hot_calls) != zero_state
    finite = torch.isfinite(plain)
    plain[finite].sum().backward()
    got[finite].sum().backward()
    assert not torch.isnan(ext_fused.grad).any()
    assert torch.allclose(ext_fused.grad, ext_plain.grad, rtol=1e-6 if dtype == torch.float32 else 1e-12)


def test_leaf_products_decline_a_first_layer_that_is_not_products_of_leaves():
    mixture = Sum([Categorical(0, 2), Categorical(0, 2, probs=[.3, .7])])
    c = Circuit(Product([mixture, Categorical(1, 2)]))
    assert c._plan_on(torch.device("cpu")).schedule.first is None
    x = torch.tensor([[0, 1], [1, -1]])
    expected = torch.log(torch.tensor([0.5 * (0.5 + 0.3) * 0.5, 0.5 * (0.5 + 0.7)]))
    assert torch.allclose(c.log_prob(x), expected, atol=1e-6)


def test_kept_weights_skip_the_underflow_check_only_where_no_weight_is_tiny():
    c = Circuit(random_tensorized(**RAT).root, dtype=torch.float64)
    plan = c._plan_on(torch.device("cpu"))
    x = _x(12, seed=2)
    with torch.no_grad():
        kept = c._normalised()[2]
        assert kept is not None and kept.safe                           # RAT weights are not tiny
        logits = c.logits.clone()
        pieces = [s for layer in plan.schedule.layers for s in layer if s.piece is not None]
        first = pieces[0].weights.reshape(-1)
        c.logits[first[:3]] = -800.0                                    # weights ~1e-348: tiny
        assert pieces[0].piece not in c._normalised()[2].safe
        # leaf values far apart: the shared shift underflows, the exact fallback must run
        c.logits[:plan.num_params // 4] *= 200
        got = c.log_prob(x)
    expected = Circuit(c.root, dtype=torch.float64)
    with torch.no_grad():
        expected.logits.copy_(c.logits)
        ext = passes.extend(passes.normalise(plan, expected.logits.unsqueeze(0)))
        plain = upward.root(plan, upward.run(plan, ext, passes._leaf_values(plan, ext, x, 12)))
    assert torch.allclose(got, plain, rtol=1e-12, atol=1e-12)
    assert not torch.equal(c.logits, logits)


def test_kept_weights_derive_the_leaf_tables_and_sum_weights_once_per_parameter_version():
    # a root sum over products of leaves: a fused first layer and a sparse sum at the root
    c = Circuit(random_tensorized(**RAT).root, dtype=torch.float64)
    x = _x(10, seed=4)
    with torch.no_grad():
        first = c.log_prob(x)
        kept = c._normalised()[2]
        owners = [entry[0] for entry in kept.derived.values()]
        assert any(isinstance(o, schedule.LeafProducts) for o in owners)
        assert any(isinstance(o, upward.Step) and o.kind == "sum" for o in owners)
        tensors = [entry[1] for entry in kept.derived.values()]
        assert torch.equal(c.log_prob(x), first)
        assert [entry[1] for entry in c._normalised()[2].derived.values()] == tensors  # reused
        c.logits.mul_(3.0)                                     # a new parameter version
        renewed = c._normalised()[2]
        assert renewed is not kept and not renewed.derived
        assert torch.allclose(c.log_prob(x), _fresh(c, x), rtol=1e-12, atol=1e-12)
        assert not torch.allclose(c.log_prob(x), first)


def test_kept_weights_never_hand_one_object_another_objects_tensor():
    kept = upward.KeptWeights((), frozenset())
    a, b = object(), object()
    assert kept.get(a, lambda: "a") == "a"
    assert kept.get(a, lambda: "never made") == "a"
    kept.derived[id(b)] = (a, "a")                             # an id reused by another object
    assert kept.get(b, lambda: "b") == "b"
