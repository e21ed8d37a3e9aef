"""Log-space kernels of the passes, each one autograd node with a hand-written backward.

- :func:`logsumexp`, :func:`log_nonneg`: ``-inf`` where the true value is ``log 0``, with a
  zero (never NaN) gradient there.
- The fused ``outer`` step (:mod:`circuits.upward`): a dense block whose children are the
  products of two child lists, computed as the weights times the outer product of the
  lists' shifted exponentials (:func:`outer_values`); :class:`OuterMatmul` is one autograd
  node for a first-order gradient.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

__all__ = ["NARROW", "OuterMatmul", "bmm", "compiling", "factor_sums",
           "log_nonneg", "logsumexp", "matmul", "max_shift", "may_hold_log_zero", "outer_values",
           "over_s", "zero_log_zero"]


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
    if not (x.requires_grad and torch.is_grad_enabled()):
        return torch.logsumexp(x, dim)
    return _LogSumExp.apply(x, dim)


def log_nonneg(s: torch.Tensor) -> torch.Tensor:
    """``log(s)`` of a non-negative tensor; ``-inf`` with zero gradient where ``s == 0``."""
    return _LogNonneg.apply(s)


def zero_log_zero(logw: torch.Tensor) -> torch.Tensor:
    """``logw`` for ``flow * log w`` sums (a zero weight's edge has flow 0): clamped at
    ``-sqrt(max float)`` where :func:`may_hold_log_zero`, so ``0 * logw`` is 0 with finite,
    vanishing gradients."""
    if not may_hold_log_zero(logw):
        return logw
    return logw.clamp_min(-math.sqrt(torch.finfo(logw.dtype).max))


def compiling() -> bool:
    """Whether torch.compile is tracing the caller (False on a torch without the query)."""
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(is_compiling()) if is_compiling is not None else False


def may_hold_log_zero(logw: torch.Tensor) -> bool:
    """Whether ``logw`` may hold ``-inf``, NaN or a value below ``-sqrt(max float)`` (then
    ``w log w`` sums need a guard). Always True off the CPU and under ``torch.compile``
    (no data-dependent branch there)."""
    if logw.device.type != "cpu" or compiling():
        return True
    limit = -math.sqrt(torch.finfo(logw.dtype).max)
    return logw.numel() > 0 and not bool(logw.detach().min() > limit)


# --- the fused outer step ------------------------------------------------------------
def max_shift(x: torch.Tensor, dim: int) -> torch.Tensor:
    """A detached max over ``dim`` (kept), 0 where it is ``-inf``."""
    return (x.detach() if x.requires_grad else x).amax(dim, keepdim=True).nan_to_num_(neginf=0.0)


def matmul(w: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``w [B', G, M, K]`` times ``e [G, K, B]`` -> ``[G, M, B]``."""
    if w.shape[0] == 1:
        return bmm(w.view(w.shape[1:]), e)                          # a view: no select backward
    return torch.einsum("bgmk,gkb->gmb", w, e)


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a [G, X, Y] @ b [G, Y, B]``; below :data:`NARROW` columns as ``(b^T a^T)^T``."""
    if b.shape[2] < NARROW:
        return torch.bmm(b.mT, a.mT).mT
    return torch.bmm(a, b)


NARROW = 16


class OuterMatmul(torch.autograd.Function):
    """:func:`outer_values` as one autograd node, from shared log-weights ``logw [1, G, M,
    K]``; returns ``(out, s)``, ``s`` not differentiable. Backward from the saved outer
    product ``e [G, K, B]``: ``grad_logw = (u e^T) w`` and the children's gradients
    ``(w^T u) e`` summed over either factor, ``u = grad / s`` (0 where ``s == 0``)."""

    @staticmethod
    def forward(ctx, logw, both, width):
        w = torch.exp(logw)
        out, s, e = outer_values(w, both, width)
        ctx.width = width
        ctx.mark_non_differentiable(s)
        ctx.save_for_backward(w, e, s)
        return out, s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_s):
        w, e, s = ctx.saved_tensors
        gs = over_s(grad, s)                                         # [G, M, B]
        grad_w = grad_both = None
        if ctx.needs_input_grad[0]:
            grad_w = bmm(gs, e.mT).mul_(w[0]).unsqueeze(0)           # [1, G, M, K]
        if ctx.needs_input_grad[1]:
            grad_both = factor_sums(bmm(w[0].mT, gs).mul_(e), ctx.width)
        return grad_w, grad_both, None


def over_s(grad: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``grad / s`` ``[G, M, B]``, 0 where ``s == 0`` (every term of the column is 0 there)."""
    return torch.div(grad, s).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def factor_sums(z: torch.Tensor, width: int) -> torch.Tensor:
    """``z [G, A * A2, B]`` over the outer product's pairs ``(i, j)`` summed over ``j`` and
    over ``i``, side by side: ``[G, A + A2, B]`` (the left then the right children's)."""
    z = z.view(z.shape[0], width, -1, z.shape[2])                     # [G, A, A2, B]
    return torch.cat([z.sum(2), z.sum(1)], 1)


def outer_values(w: torch.Tensor, both: torch.Tensor, width: int):
    """The fused outer step on ``both [G, A + A2, B]`` (left children then right, ``A =
    width``) with weights ``w [B', G, M, A * A2]``: ``out = log(w @ e) + ml + mr`` where
    ``e [G, K, B]`` is the outer product of the two lists' shifted exponentials. Returns
    ``(out, s, e)``, ``s = w @ e`` ``[G, M, B]``."""
    g, total, batch = both.shape
    if 2 * width == total:                            # equal lists: shift and exp them as one
        two = both.view(g, 2, width, batch)
        m = max_shift(two, 2)                                        # [G, 2, 1, B]
        left, right = (two - m).exp_().unbind(1)
        e = left.unsqueeze(2) * right.unsqueeze(1)                    # [G, A, A, B]
        shift = m.sum(1)
    else:
        left, right = both[:, :width], both[:, width:]
        ml, mr = max_shift(left, 1), max_shift(right, 1)
        e = torch.exp(left - ml).unsqueeze(2) * torch.exp(right - mr).unsqueeze(1)
        shift = ml + mr
    e = e.flatten(1, 2)
    s = matmul(w, e)
    if s.requires_grad:
        return log_nonneg(s) + shift, s, e
    return torch.log(s).add_(shift), s, e
