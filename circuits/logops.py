"""Log-space reductions with exact ``-inf`` handling, as single autograd nodes.

Both give ``-inf`` where the true value is ``log 0`` and a zero (never NaN) gradient there,
so zero-probability branches never poison gradients; each is one forward op and one
backward op (fewer kernels than composing ``where``/``isfinite`` guards).
"""

from __future__ import annotations

import math

import torch

__all__ = ["compiling", "logsumexp", "log_nonneg", "may_hold_log_zero", "zero_log_zero"]


class _LogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int) -> torch.Tensor:
        out = torch.logsumexp(x, dim)
        ctx.save_for_backward(x, out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, out = ctx.saved_tensors
        out = out.unsqueeze(ctx.dim)
        shift = torch.where(torch.isfinite(out), out, torch.zeros_like(out))
        return grad.unsqueeze(ctx.dim) * torch.exp(x - shift), None


class _LogNonneg(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(s)
        return torch.log(s)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (s,) = ctx.saved_tensors
        positive = s > 0
        return torch.where(positive, grad / torch.where(positive, s, torch.ones_like(s)),
                           torch.zeros_like(s))


def logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``log(sum(exp(x), dim))``; ``-inf`` with zero gradient where every entry is ``-inf``."""
    return _LogSumExp.apply(x, dim)


def log_nonneg(s: torch.Tensor) -> torch.Tensor:
    """``log(s)`` of a non-negative tensor; ``-inf`` with zero gradient where ``s == 0``."""
    return _LogNonneg.apply(s)


def zero_log_zero(logw: torch.Tensor) -> torch.Tensor:
    """``logw`` for ``flow * log w`` sums, whose zero weights must add 0 with a zero
    gradient: a zero weight's edge has flow 0, so where :func:`may_hold_log_zero` finds no
    ``-inf`` (or NaN, or value low enough to overflow a product) ``logw`` itself, else
    ``logw`` clamped at ``-sqrt(max float)``: ``0 * logw`` is then 0, and the gradients
    through it stay finite and vanish at the zero weight (``w`` is ``0`` there). A clamp
    rather than a mask ``w == 0``: inside torch.compile a mask would be saved for the
    backward, a boolean tensor that inductor stores element by element."""
    if not may_hold_log_zero(logw):
        return logw
    return logw.clamp_min(-math.sqrt(torch.finfo(logw.dtype).max))


def compiling() -> bool:
    """Whether torch.compile is tracing the caller (False on a torch without the query)."""
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(is_compiling()) if is_compiling is not None else False


def may_hold_log_zero(logw: torch.Tensor) -> bool:
    """Whether ``w log w``-style sums over the log-weights ``logw`` need a guard (a mask or
    a clamp) for zero weights: whether ``logw`` may hold ``log 0 = -inf`` (or NaN, or a value below
    ``-sqrt(max float)``, whose products with gradients could overflow).

    A weight that merely underflowed to 0 has a finite log-weight and adds ``0 * logw = 0``
    (with zero gradient through ``w``), so no guard is needed for it. On the CPU this is one
    ``min``, as comparison and ``masked_fill`` / ``where`` kernels there cost several times a
    multiplication of the same size; elsewhere it answers True (the guard is cheap there, and
    the check would synchronise with the device), as it does inside ``torch.compile``, where
    the guard fuses into its neighbours' kernel and a data-dependent branch would split the
    compiled graph.
    """
    if logw.device.type != "cpu" or compiling():
        return True
    limit = -math.sqrt(torch.finfo(logw.dtype).max)
    return logw.numel() > 0 and not bool(logw.detach().min() > limit)
