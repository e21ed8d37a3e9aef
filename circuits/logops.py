"""Log-space reductions with exact ``-inf`` handling, as single autograd nodes.

Both give ``-inf`` where the true value is ``log 0`` and a zero (never NaN) gradient there,
so zero-probability branches never poison gradients; each is one forward op and one
backward op (fewer kernels than composing ``where``/``isfinite`` guards).
"""

from __future__ import annotations

import torch

__all__ = ["logsumexp", "log_nonneg"]


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
