"""The exact evidence lower bound for a circuit policy (docs/design.md, sections 3-4).

For a policy ``pi(u | s)`` and a multilinear Q-function,

    ELBO(s) = E_{u ~ pi}[Q(s, u)] + alpha * H(pi(. | s)) <= alpha * log sum_u exp(Q(s, u) / alpha),

with equality iff ``pi`` is the Boltzmann policy ``exp(Q / alpha) / Z``. Maximising it over the
policy is minimising ``KL(pi || exp(Q / alpha) / Z)``. For a deterministic circuit both
terms are exact and differentiable: the expectation via scope marginals, the entropy via
the circuit's closed form. Its negative is the actor loss of ``spn-ac``.

Example::

    >>> import torch
    >>> from circuits.structures import selective
    >>> from factor_q import FactorGraph, FactorValues, elbo, log_partition
    >>> g = FactorGraph.complete(3)
    >>> v = FactorValues.from_tables(g, [torch.randn(1, 2, 2) for _ in range(3)])
    >>> c = selective(3, 2, width=8)
    >>> bool(elbo(v, c.distribution(torch.zeros(1, c.num_params))) <= log_partition(v) + 1e-5)
    True
"""

from __future__ import annotations

import math

import torch

from circuits import CircuitDistribution
from factor_q.values import FactorValues

__all__ = ["elbo", "log_partition"]


def _check_alpha(alpha) -> None:
    if isinstance(alpha, torch.Tensor):
        bad = ~torch.isfinite(alpha) | (alpha < 0)
        if alpha.numel() and bool(bad.any()):
            raise ValueError(f"alpha must be finite and non-negative, got a tensor holding "
                             f"{alpha[bad].flatten()[0].item()}")
    elif (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
          or not math.isfinite(alpha) or not alpha >= 0):
        raise ValueError(f"alpha must be a finite non-negative number or tensor, got {alpha!r}")


def elbo(values: FactorValues, dist: CircuitDistribution, alpha: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Exact ``E_{u ~ dist}[Q(s, u)] + alpha * H(dist)`` -> ``[B]`` (``[E, B]`` for an
    ensemble of ``E`` Q-functions).

    Args:
        values: Q-values for a batch of ``B`` states.
        dist: a ``CircuitDistribution`` over the ``n`` agents' actions with batch size
            ``B`` (or 1); its circuit must be deterministic, since the entropy is exact
            (``NotDeterministicError`` otherwise).
        alpha: temperature, a non-negative number or a tensor broadcastable to ``[B]``.
    """
    if not isinstance(values, FactorValues):
        raise TypeError(f"values must be a FactorValues, got {type(values).__name__}")
    _check_alpha(alpha)
    return values.expectation(dist) + alpha * dist.entropy()


def log_partition(values: FactorValues, alpha: float = 1.0) -> torch.Tensor:
    """``alpha * log sum_u exp(Q(s, u) / alpha)`` -> ``[B]`` (``[E, B]`` for an ensemble),
    the maximum of :func:`elbo`.

    Enumerates all ``k ** n`` joint actions (through :meth:`FactorValues.table`), so it is
    for small ``n``: the reference optimum that an exact softmax policy attains.
    """
    if not isinstance(values, FactorValues):
        raise TypeError(f"values must be a FactorValues, got {type(values).__name__}")
    if (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
            or not math.isfinite(alpha) or not alpha > 0):
        raise ValueError(f"alpha must be a finite positive number, got {alpha!r}")
    joint = values.table().flatten(-values.graph.num_agents)               # [*E, B, k**n]
    return alpha * torch.logsumexp(joint / alpha, dim=-1)
