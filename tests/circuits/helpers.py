"""Shared test helpers: hypothesis settings, circuit construction and tolerant comparisons."""

from __future__ import annotations

import itertools
import os
from contextlib import contextmanager
from collections.abc import Sequence

import numpy as np
import torch
from hypothesis import HealthCheck, settings

from circuits import Circuit, CircuitDistribution, passes
from tests.circuits import oracle
from tests.circuits.strategies import RandomCircuit

EXAMPLES = int(os.environ.get("CIRCUITS_MAX_EXAMPLES", "60"))
"""Random circuits per property; raise it (e.g. ``CIRCUITS_MAX_EXAMPLES=1000``) to hunt bugs."""

PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""Settings for property tests over random circuits (bounded so the suite stays fast)."""

RTOL, ATOL = 1e-6, 1e-8


def build(rc: RandomCircuit) -> Circuit:
    """The compiled circuit in float64, so comparisons with the oracle can be tight.

    Built under a float64 default dtype: ``Circuit(root).double()`` would first round the
    nodes' logits to float32 and lose about 1e-7 relative precision.
    """
    return circuit64(rc.root)


def engine(circuit: Circuit, params: torch.Tensor) -> CircuitDistribution:
    """The engine's distribution for ``params [B, num_params]`` (its routes, on any circuit
    whatever its plan's layout; ``circuit.distribution`` picks the layout's)."""
    ext = passes.normalise(circuit._plan_on(params.device), params, extended=True)
    return CircuitDistribution(circuit, ext, params.shape[:1])


def circuit64(root) -> Circuit:
    with float64_default():
        return Circuit(root)


@contextmanager
def float64_default():
    """Temporarily make float64 torch's default dtype (circuits built inside are float64)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def joint(rc: RandomCircuit) -> np.ndarray:
    return oracle.joint_table(rc.root, rc.num_states)


def all_assignments(num_states: Sequence[int]) -> torch.Tensor:
    """``[prod(num_states), num_vars]`` every joint assignment, in C order of the joint table."""
    rows = list(itertools.product(*(range(k) for k in num_states)))
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), len(num_states))


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def assert_close(actual: torch.Tensor, expected, rtol: float = RTOL, atol: float = ATOL) -> None:
    if isinstance(expected, torch.Tensor):
        expected = as_numpy(expected)
    np.testing.assert_allclose(as_numpy(actual), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)


def assert_log_close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    """Log-values agree: ``-inf`` exactly where expected, finite entries within ``atol``."""
    actual = as_numpy(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert not np.isnan(actual).any(), actual
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=0, atol=atol)


def engine_joint(dist, num_states: Sequence[int]) -> np.ndarray:
    """The joint table ``[*batch_shape, *num_states]`` read off ``dist.log_prob`` by enumeration.

    Lets batched-parameter results be checked against enumeration of the engine's own density.
    """
    x = all_assignments(num_states)                                  # [N, n]
    x = x.reshape(-1, *([1] * len(dist.batch_shape)), len(num_states))
    x = x.expand(-1, *dist.batch_shape, -1)
    logp = dist.log_prob(x)                                          # [N, *batch]
    table = as_numpy(logp.exp()).reshape(len(x), -1).T               # [B, N]
    return table.reshape(*dist.batch_shape, *num_states)


def log(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(p)


ZERO_WEIGHT_CASES = ["-inf logits", "underflowing weights", "huge logits"]


def zero_weight_params(case: str, num_params: int, generator: torch.Generator,
                       rows: int = 4) -> torch.Tensor:
    """Float64 logits ``[rows, num_params]`` whose distribution has zero weights: from
    ``-inf`` logits (a mask is needed), from logits 900 below the rest (weights underflow to
    0, log-weights stay finite) or from logits of ``-1e300`` (finite, but too large for a
    gradient to multiply). Requires grad."""
    params = torch.randn(rows, num_params, dtype=torch.float64, generator=generator)
    if case == "-inf logits":
        params[:, [0, 4, 8]] = -torch.inf
    elif case == "underflowing weights":
        params[:, ::3] -= 900.0
    elif case == "huge logits":
        params[:, ::3] = -1e300
    else:
        raise ValueError(case)
    return params.requires_grad_(True)


def check_entropy_by_enumeration(make_dist, params: torch.Tensor, num_vars: int,
                                 num_states: int, generator: torch.Generator) -> None:
    """``make_dist(params).entropy()`` and its gradient equal ``-sum_x p(x) log p(x)`` over
    all ``num_states ** num_vars`` assignments of ``make_dist(params).log_prob`` (0 log 0 =
    0), and are finite."""
    got = make_dist(params).entropy()
    rows = params.shape[0]
    x = torch.tensor(list(itertools.product(range(num_states), repeat=num_vars)))
    logp = make_dist(params).log_prob(x[:, None, :].expand(-1, rows, -1))       # [k**n, B]
    expected = -(logp.exp() * torch.where(logp > -torch.inf, logp, 0.0)).sum(0)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected)
    weights = torch.randn(rows, dtype=torch.float64, generator=generator)
    grad_got, = torch.autograd.grad((got * weights).sum(), params)
    grad_expected, = torch.autograd.grad((expected * weights).sum(), params)
    assert torch.isfinite(grad_got).all()
    torch.testing.assert_close(grad_got, grad_expected)
