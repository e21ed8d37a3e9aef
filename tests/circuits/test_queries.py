"""Every circuit query against brute-force enumeration, over many random circuits."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from circuits import (ApproximateMPEWarning, Categorical, Circuit, NotDeterministicError,
                      Product, Sum)
from circuits.structures import mean_field, selective
from tests.circuits import oracle
from tests.circuits.helpers import (PROPERTY, ZERO_WEIGHT_CASES, all_assignments, assert_close,
                                    assert_log_close, build, check_entropy_by_enumeration,
                                    circuit64, joint, log, zero_weight_params)
from tests.circuits.strategies import evidences, random_circuits


@PROPERTY
@given(random_circuits())
def test_log_prob_of_every_assignment_matches_enumeration(rc):
    c, p = build(rc), joint(rc)
    logp = c.log_prob(all_assignments(rc.num_states))
    assert logp.dtype == torch.float64
    assert_log_close(logp, log(p).reshape(-1))
    assert math.isclose(torch.logsumexp(logp, 0).item(), 0.0, abs_tol=1e-9)


@PROPERTY
@given(random_circuits(), st.data())
def test_log_prob_with_marginalised_variables(rc, data):
    c, p = build(rc), joint(rc)
    evs = data.draw(st.lists(evidences(rc.num_states), min_size=1, max_size=6))
    logp = c.log_prob(torch.tensor(evs))
    assert logp.shape == (len(evs),)
    assert_log_close(logp, [oracle.log_prob(p, e) for e in evs])
    nothing_observed = torch.full((1, len(rc.num_states)), -1)
    assert abs(c.log_prob(nothing_observed).item()) < 1e-9


@PROPERTY
@given(random_circuits(min_vars=2), st.data())
def test_log_prob_keeps_leading_batch_dimensions(rc, data):
    c, p = build(rc), joint(rc)
    evs = data.draw(st.lists(evidences(rc.num_states), min_size=6, max_size=6))
    logp = c.log_prob(torch.tensor(evs).reshape(2, 3, -1))
    assert logp.shape == (2, 3)
    assert_log_close(logp, np.reshape([oracle.log_prob(p, e) for e in evs], (2, 3)))


@PROPERTY
@given(random_circuits())
def test_marginals(rc):
    c, p = build(rc), joint(rc)
    m = c.marginals()
    assert m.shape == (len(rc.num_states), max(rc.num_states))
    assert_close(m, oracle.marginals(p, max(rc.num_states)))


def _scopes(num_vars, size):
    return st.lists(st.permutations(range(num_vars)).map(lambda order: tuple(order[:size])),
                    min_size=1, max_size=4)


@PROPERTY
@given(random_circuits(min_vars=2), st.data())
def test_pairwise_scope_marginals(rc, data):
    c, p = build(rc), joint(rc)
    k = max(rc.num_states)
    scopes = data.draw(_scopes(len(rc.num_states), 2))
    tables = c.scope_marginals(scopes)
    assert tables.shape == (len(scopes), k, k)
    assert_close(tables, [oracle.scope_marginal(p, s, k) for s in scopes])


@PROPERTY
@given(random_circuits(min_vars=3), st.data())
def test_triple_scope_marginals(rc, data):
    c, p = build(rc), joint(rc)
    k = max(rc.num_states)
    scopes = data.draw(_scopes(len(rc.num_states), 3))
    tables = c.scope_marginals(scopes)
    assert tables.shape == (len(scopes), k, k, k)
    assert_close(tables, [oracle.scope_marginal(p, s, k) for s in scopes])


@PROPERTY
@given(random_circuits(), st.data())
def test_condition_matches_renormalised_joint(rc, data):
    c, p = build(rc), joint(rc)
    evidence = data.draw(evidences(rc.num_states, min_observed=1))
    if oracle.prob(p, evidence) == 0:
        with pytest.raises(ValueError, match="evidence"):
            c.condition(torch.tensor(evidence))
        return
    conditional = oracle.condition(p, evidence)
    cond = c.condition(torch.tensor(evidence))
    assert_log_close(cond.log_prob(all_assignments(rc.num_states)), log(conditional).reshape(-1))
    assert_close(cond.marginals(), oracle.marginals(conditional, max(rc.num_states)))
    more = data.draw(evidences(rc.num_states))
    assert_log_close(cond.log_prob(torch.tensor([more])), [oracle.log_prob(conditional, more)])


@PROPERTY
@given(random_circuits(min_vars=2), st.data())
def test_every_query_on_a_conditioned_distribution(rc, data):
    c, p = build(rc), joint(rc)
    k = max(rc.num_states)
    evidence = data.draw(evidences(rc.num_states, min_observed=1))
    assume(oracle.prob(p, evidence) > 0)
    conditional = oracle.condition(p, evidence)
    cond = c.condition(torch.tensor(evidence))
    assert_close(cond.scope_marginals([(1, 0)]), [oracle.scope_marginal(conditional, (1, 0), k)])
    support = np.argwhere(conditional > 0)
    x = support[data.draw(st.integers(0, len(support) - 1))].tolist()
    assert_log_close(cond.leave_one_out_log_prob(torch.tensor(x)),
                     oracle.leave_one_out(conditional, x))
    mode = tuple(cond.mode.tolist())
    assert all(e < 0 or e == v for e, v in zip(evidence, mode))
    if c.is_deterministic:
        assert math.isclose(cond.entropy().item(), oracle.entropy(conditional),
                            rel_tol=1e-6, abs_tol=1e-8)
        assert mode in oracle.mpe_set(conditional, rtol=1e-6)[1]


@PROPERTY
@given(random_circuits(min_vars=2), st.data())
def test_conditioning_twice_is_conditioning_on_both(rc, data):
    c, p = build(rc), joint(rc)
    first = data.draw(evidences(rc.num_states, min_observed=1))
    second = data.draw(evidences(rc.num_states, min_observed=1))
    both = [a if a >= 0 else b for a, b in zip(first, second)]
    second = [b if a < 0 else -1 for a, b in zip(first, second)]
    assume(oracle.prob(p, both) > 0)
    twice = c.condition(torch.tensor(first)).condition(torch.tensor(second))
    x = all_assignments(rc.num_states)
    assert_log_close(twice.log_prob(x), log(oracle.condition(p, both)).reshape(-1))
    if c.is_deterministic:
        assert tuple(twice.mode.tolist()) in oracle.mpe_set(p, both, rtol=1e-6)[1]


@PROPERTY
@given(random_circuits(), st.data())
def test_leave_one_out_conditionals(rc, data):
    c, p = build(rc), joint(rc)
    support = np.argwhere(p > 0)
    rows = data.draw(st.lists(st.integers(0, len(support) - 1), min_size=1, max_size=4))
    x = torch.tensor(support[rows], dtype=torch.long)
    loo = c.leave_one_out_log_prob(x)
    assert loo.shape == x.shape
    assert_log_close(loo, [oracle.leave_one_out(p, row.tolist()) for row in x])


@PROPERTY
@given(random_circuits(), st.data())
def test_leave_one_out_of_impossible_assignments(rc, data):
    """``log p(x_i | x_-i)`` is ``-inf`` when ``p(x) = 0 < p(x_-i)``; when ``p(x_-i) = 0`` it is
    undefined, but a log-probability must still never come out positive."""
    c, p = build(rc), joint(rc)
    x = [data.draw(st.integers(0, k - 1)) for k in rc.num_states]
    loo = c.leave_one_out_log_prob(torch.tensor(x)).detach().numpy()
    assert not (loo > 1e-9).any(), (x, loo)
    for i in range(len(x)):
        rest = [-1 if j == i else v for j, v in enumerate(x)]
        if oracle.prob(p, rest) > 0:
            expected = oracle.log_prob(p, x) - oracle.log_prob(p, rest)
            assert (loo[i] == expected == -math.inf) or abs(loo[i] - expected) < 1e-6


@PROPERTY
@given(random_circuits(), st.data())
def test_float32_circuits_agree_to_single_precision(rc, data):
    c, p = Circuit(rc.root), joint(rc)
    logp = c.log_prob(all_assignments(rc.num_states))
    assert logp.dtype == torch.float32
    assert_log_close(logp, log(p).reshape(-1), atol=1e-3)
    assert_close(c.marginals(), oracle.marginals(p, c.max_states), rtol=1e-4, atol=1e-5)
    support = np.argwhere(p > 0)
    x = support[data.draw(st.integers(0, len(support) - 1))].tolist()
    assert_log_close(c.leave_one_out_log_prob(torch.tensor(x)), oracle.leave_one_out(p, x),
                     atol=1e-3)
    if c.is_deterministic:
        assert math.isclose(c.entropy().item(), oracle.entropy(p), rel_tol=1e-4, abs_tol=1e-4)


@PROPERTY
@given(random_circuits())
def test_entropy_exact_when_deterministic_refused_otherwise(rc):
    c, p = build(rc), joint(rc)
    if rc.deterministic:
        assert c.is_deterministic
    if c.is_deterministic:
        assert oracle.semantically_deterministic(rc.root, rc.num_states)
        h = c.entropy()
        assert h.shape == ()
        assert math.isclose(h.item(), oracle.entropy(p), rel_tol=1e-6, abs_tol=1e-8)
    else:
        with pytest.raises(NotDeterministicError, match="determinis"):
            c.entropy()




@pytest.mark.parametrize("structure", ["mean_field", "selective"])
@pytest.mark.parametrize("case", ZERO_WEIGHT_CASES)
def test_entropy_with_zero_weights_matches_enumeration(structure, case):
    """Zero weights add nothing to the engine's entropy or its gradient, whether their
    log-weight is -inf (masked) or finite (underflowed: no mask)."""
    c = (mean_field(3, 3) if structure == "mean_field" else selective(3, 3, 4)).double()
    gen = torch.Generator().manual_seed(3)
    check_entropy_by_enumeration(c.distribution, zero_weight_params(case, c.num_params, gen),
                                 3, 3, gen)

def _assert_mpe(rc, mpe, evidence=None):
    p = joint(rc)
    x = tuple(mpe.tolist())
    assert mpe.shape == (len(rc.num_states),) and mpe.dtype == torch.long
    if evidence is not None:
        assert all(e < 0 or e == v for e, v in zip(evidence, x)), (evidence, x)
    best, winners = oracle.mpe_set(p, evidence, rtol=1e-6)
    if build(rc).is_deterministic:
        assert x in winners, (x, sorted(winners), best)
    else:
        # Max-product picks one induced tree; its assignment has at least the tree's mass.
        assert p[x] >= oracle.max_product_value(rc.root, evidence) * (1 - 1e-6) > 0


def _mpe_warned(c, evidence=None) -> tuple[torch.Tensor, bool]:
    """``c.mpe(evidence)`` and whether it warned that it is the max-product approximation."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mpe = c.mpe(None if evidence is None else torch.tensor(evidence))
    return mpe, any(issubclass(w.category, ApproximateMPEWarning) for w in caught)


@PROPERTY
@given(random_circuits())
def test_mpe(rc):
    c = build(rc)
    mpe, warned = _mpe_warned(c)
    _assert_mpe(rc, mpe)
    assert warned == (not c.is_deterministic)


@PROPERTY
@given(random_circuits(), st.data())
def test_mpe_with_evidence(rc, data):
    evidence = data.draw(evidences(rc.num_states, min_observed=1))
    assume(oracle.prob(joint(rc), evidence) > 0)
    c = build(rc)
    mpe, warned = _mpe_warned(c, evidence)
    _assert_mpe(rc, mpe, evidence)
    assert warned == (not c.is_deterministic)


@pytest.mark.parametrize("structure", ["selective", "mean_field"])
def test_mode_of_policy_circuits_is_exact_and_silent(structure):
    """The circuits spn-ac's policies use are deterministic: their mode is the enumerated
    argmax of every batch row, with no warning."""
    torch.manual_seed(0)
    c = (selective(3, 3, 4) if structure == "selective" else mean_field(3, 3)).double()
    params = 3 * torch.randn(16, c.num_params, dtype=torch.float64)
    x = all_assignments((3, 3, 3))                                     # [27, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dist = c.distribution(params)
        mode = dist.mode                                               # [16, 3]
        conditioned = dist.condition(torch.tensor([-1, 2, -1])).mode   # [16, 3]
        mpe = c.mpe()
    logp = dist.log_prob(x[:, None, :].expand(-1, 16, -1))             # [27, 16]
    for row in range(16):
        best, winners = oracle.mpe_set(logp[:, row].exp().reshape(3, 3, 3).numpy(), rtol=1e-9)
        assert tuple(mode[row].tolist()) in winners
        best, winners = oracle.mpe_set(logp[:, row].exp().reshape(3, 3, 3).numpy(),
                                       [-1, 2, -1], rtol=1e-9)
        assert tuple(conditioned[row].tolist()) in winners
    own = c.log_prob(x).exp().reshape(3, 3, 3).detach().numpy()
    assert tuple(mpe.tolist()) in oracle.mpe_set(own, rtol=1e-9)[1]


def test_mpe_of_a_mixture_warns_that_it_is_max_product():
    # p = [0.30, 0.35, 0.35]; the most probable induced tree (0.5 * 0.6) selects x = 0
    c = circuit64(Sum([Categorical(0, 3, probs=[.6, .2, .2]), Categorical(0, 3, support=[1, 2])],
                      weights=[.5, .5]))
    assert_close(c.log_prob(torch.tensor([[0], [1], [2]])).exp(), [.30, .35, .35])
    assert not c.is_deterministic
    with pytest.warns(ApproximateMPEWarning, match=r"mpe\(\) of a circuit that is not "
                                                   r"\(structurally\) deterministic is the "
                                                   r"max-product approximation"):
        assert c.mpe().tolist() == [0]
    with pytest.warns(ApproximateMPEWarning, match=r"^mode of a circuit"):
        assert c.distribution().mode.tolist() == [0]
    assert issubclass(ApproximateMPEWarning, UserWarning)


def test_the_approximation_warning_points_at_the_callers_line():
    c = circuit64(Sum([Categorical(0, 2), Categorical(0, 2)]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c.mpe()
        c.distribution().mode
    assert [w.filename for w in caught] == [__file__, __file__]


@PROPERTY
@given(random_circuits(deterministic=True))
def test_mpe_exact_on_generated_deterministic_circuits(rc):
    c = build(rc)
    best, winners = oracle.mpe_set(joint(rc), rtol=1e-6)
    assert tuple(c.mpe().tolist()) in winners
    assert math.isclose(c.log_prob(c.mpe()[None]).item(), math.log(best), abs_tol=1e-6)


@PROPERTY
@given(random_circuits())
def test_circuit_properties(rc):
    c = build(rc)
    assert c.num_vars == len(rc.num_states)
    assert tuple(c.num_states) == rc.num_states
    assert c.max_states == max(rc.num_states)
    assert c.is_smooth and c.is_decomposable
    assert sum(p.numel() for p in c.parameters()) == c.num_params


@pytest.mark.parametrize("k", [1, 2, 4])
def test_a_single_leaf_is_a_circuit(k):
    probs = [(s + 1) / (k * (k + 1) / 2) for s in range(k)]
    c = circuit64(Categorical(0, k, probs=probs))
    assert c.num_vars == 1 and c.num_params == (k if k > 1 else 0)
    x = torch.arange(k)[:, None]
    assert_close(c.log_prob(x).exp(), probs)
    assert_close(c.marginals(), [probs])
    assert_close(c.leave_one_out_log_prob(x), np.log(probs)[:, None])
    assert math.isclose(c.entropy().item(), -sum(p * math.log(p) for p in probs), abs_tol=1e-12)
    assert c.mpe().tolist() == [k - 1]
    assert c.condition(torch.tensor([0])).log_prob(torch.tensor([0])).item() == 0.0


def test_zero_weight_child_contributes_nothing():
    a, b = Categorical(0, 2, probs=[.9, .1]), Categorical(0, 2, probs=[.2, .8])
    c = circuit64(Product([Sum([a, b], weights=[0.0, 1.0]), Categorical(1, 3)]))
    assert_close(c.marginals()[0, :2], [.2, .8])
    assert_close(c.log_prob(torch.tensor([[1, 2]])), [math.log(.8 / 3)])


def test_design_example_by_hand():
    a0 = Categorical(var=0, num_states=3, probs=[.2, .3, .5])
    a1 = Categorical(var=1, num_states=3, support=[0, 2])
    ind = Categorical.indicator(var=1, value=1, num_states=3)
    c = circuit64(Sum([Product([a0, a1]), Product([Categorical(0, 3), ind])], weights=[.4, .6]))
    assert c.is_deterministic
    assert_close(c.log_prob(torch.tensor([[0, 1], [2, 2], [-1, 1], [1, -1]])).exp(),
                 [.2, .1, .6, .4 * .3 + .2])
    assert_close(c.marginals()[1], [.2, .6, .2])
    assert c.mpe()[1].item() == 1
    h = -(3 * .2 * math.log(.2) + sum(q * math.log(q) for q in [.04, .04, .06, .06, .1, .1]))
    assert math.isclose(c.entropy().item(), h, rel_tol=1e-9)
