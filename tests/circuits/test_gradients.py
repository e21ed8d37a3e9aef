"""Gradients w.r.t. the parameter logits: float64 gradcheck on small random circuits."""

import numpy as np
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from circuits.structures import selective
from tests.circuits import oracle
from tests.circuits.helpers import EXAMPLES, PROPERTY, build, joint
from tests.circuits.strategies import evidences, random_circuits

SMALL = random_circuits(max_vars=4, max_states=3, max_depth=2)
FEW = settings(PROPERTY, max_examples=max(1, EXAMPLES // 4))


def params_for(c, seed: int, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, c.num_params, generator=g, dtype=torch.float64).requires_grad_()


def check(fn, params) -> None:
    assume(params.shape[-1] > 0)
    assert gradcheck(fn, (params,), eps=1e-6, atol=1e-5, rtol=1e-4)


def positive_rows(rc, data, size: int, partial: bool) -> torch.Tensor:
    """Assignments (``partial``: with some -1) of nonzero probability under any positive weights."""
    p = joint(rc)
    rows = []
    for _ in range(size):
        if partial:
            e = data.draw(evidences(rc.num_states))
            assume(oracle.prob(p, e) > 0)
        else:
            support = np.argwhere(p > 0)
            e = support[data.draw(st.integers(0, len(support) - 1))].tolist()
        rows.append(e)
    return torch.tensor(rows)


@FEW
@given(SMALL, st.integers(0, 1000), st.data())
def test_log_prob_gradients(rc, seed, data):
    c = build(rc)
    x = positive_rows(rc, data, 2, partial=True)
    check(lambda q: c.distribution(q).log_prob(x), params_for(c, seed))


@FEW
@given(SMALL, st.integers(0, 1000))
def test_marginal_gradients(rc, seed):
    c = build(rc)
    check(lambda q: c.distribution(q).marginals(), params_for(c, seed))


@FEW
@given(random_circuits(min_vars=2, max_vars=4, max_states=3, max_depth=2), st.integers(0, 1000))
def test_scope_marginal_gradients(rc, seed):
    c = build(rc)
    scopes = [(1, 0)] if c.num_vars < 3 else [(0, 2, 1)]
    check(lambda q: c.distribution(q).scope_marginals(scopes), params_for(c, seed))


@FEW
@given(random_circuits(max_vars=4, max_states=3, max_depth=2, deterministic=True),
       st.integers(0, 1000))
def test_entropy_gradients(rc, seed):
    c = build(rc)
    check(lambda q: c.distribution(q).entropy(), params_for(c, seed))


@FEW
@given(SMALL, st.integers(0, 1000), st.data())
def test_leave_one_out_gradients(rc, seed, data):
    c = build(rc)
    x = positive_rows(rc, data, 2, partial=False)
    check(lambda q: c.distribution(q).leave_one_out_log_prob(x), params_for(c, seed))


@FEW
@given(SMALL, st.integers(0, 1000), st.data())
def test_conditional_log_prob_gradients(rc, seed, data):
    c = build(rc)
    evidence = positive_rows(rc, data, 1, partial=True)[0]
    x = positive_rows(rc, data, 1, partial=False)[0]
    assume(all(e < 0 or e == v for e, v in zip(evidence.tolist(), x.tolist())))
    check(lambda q: c.distribution(q).condition(evidence).log_prob(x[None].expand(2, -1)),
          params_for(c, seed))


def test_gradients_reach_the_circuit_parameters():
    c = selective(5, 3, width=6).double()
    x = c.sample(16, generator=torch.Generator().manual_seed(0))
    loss = -c.log_prob(x).mean() - c.entropy()
    loss.backward()
    grads = [p.grad for p in c.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_gradients_finite_with_restricted_supports_and_extreme_logits():
    c = selective(4, 3, width=4).double()
    params = torch.zeros(2, c.num_params, dtype=torch.float64)
    params[0, ::2] = 40.0
    params[1, 1::3] = -40.0
    params.requires_grad_()
    d = c.distribution(params)
    x = d.mode
    total = (d.log_prob(x).sum() + d.entropy().sum() + d.marginals().sum()
             + d.leave_one_out_log_prob(x).sum())
    (grad,) = torch.autograd.grad(total, params)
    assert torch.isfinite(grad).all()


def test_marginals_and_tables_of_one_distribution_share_a_pass_and_its_gradients():
    """One distribution computes its flows once; a loss using both queries (as the exact
    expectation does) gets the sum of each query's own gradient."""
    c = selective(4, 3, width=4).double()
    q = torch.randn(3, c.num_params, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scopes = [(0, 1), (3, 1)]

    def grad(fn):
        p = q.clone().requires_grad_()
        (g,) = torch.autograd.grad(fn(c.distribution(p)), p)
        return g

    weights = torch.linspace(0.5, 2.0, 3 * 4 * 3, dtype=torch.float64).view(3, 4, 3)

    def unary(d):
        return (d.marginals() * weights).sum()

    def pairs(d):
        return d.scope_marginals(scopes)[..., 0, :].sum()

    together = grad(lambda d: unary(d) + pairs(d))
    torch.testing.assert_close(together, grad(unary) + grad(pairs))
    assert grad(unary).abs().sum() > 0 and grad(pairs).abs().sum() > 0
