"""Log-space kernels of the passes, each one autograd node with a hand-written backward.

- Log-space reductions with exact ``-inf`` handling (:func:`logsumexp`, :func:`log_nonneg`):
  ``-inf`` where the true value is ``log 0`` and a zero (never NaN) gradient there, so
  zero-probability branches never poison gradients; each is one forward op and one
  backward op (fewer kernels than composing ``where``/``isfinite`` guards).
- The fused ``outer`` step of the upward pass (:mod:`circuits.upward`), and the shift and
  matrix product it shares with the ``dense`` step: a dense block whose children are the
  products of two child lists, computed as the weights times the outer product of the two
  lists' shifted exponentials, without materialising the products.
  :class:`OuterMatmul` is the step as one autograd node whose backward reuses the saved
  outer product (where autograd would run broadcast products and their reductions over
  ``[G, K, B]``); :class:`OuterMatmulTwice` is the same with a differentiable backward
  (:class:`_OuterGrad`), for the leave-one-out gradient's second order. :func:`bmm`
  multiplies batches narrower than :data:`NARROW` columns in transposed form (CPU BLAS is
  slow on batched matrix-vector products).
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

__all__ = ["NARROW", "OuterMatmul", "OuterMatmulTwice", "bmm", "compiling", "factor_sums",
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
    """``a [G, X, Y] @ b [G, Y, B]``. Below :data:`NARROW` columns, computed as
    ``(b^T a^T)^T``: CPU BLAS runs batched matrix-vector products far below its
    matrix-matrix speed, but not the transposed form."""
    if b.shape[2] < NARROW:
        return torch.bmm(b.mT, a.mT).mT
    return torch.bmm(a, b)


NARROW = 16


class OuterMatmul(torch.autograd.Function):
    """:func:`outer_values` as one autograd node, from shared log-weights ``logw [1, G, M,
    K]`` (exponentiated inside, so the weights' gradient is ``(grad_w * w)`` in place, with
    no separate exponential node). Its backward reads the saved outer product ``e [G, K,
    B]`` once: ``z = (w^T (grad / s)) * e`` summed over either factor is the gradient of the
    left or right children, the exponentials' backward folded in, where autograd would run
    two broadcast products and their reductions. ``s`` is returned for the guard, not
    differentiable; ``log 0 = -inf`` gets a zero gradient."""

    @staticmethod
    def forward(ctx, logw, both, width):
        out, s, w, e = _outer_forward(ctx, logw, both, width)
        ctx.save_for_backward(w, e, s)
        return out, s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_s):
        w, e, s = ctx.saved_tensors
        # never differentiated again (once_differentiable: trying raises), so the `where`
        # trick against NaN second derivatives of `log_nonneg` is not needed
        gs = over_s(grad, s)                                         # [G, M, B]
        grad_w = grad_both = None
        if ctx.needs_input_grad[0]:
            grad_w = bmm(gs, e.mT).mul_(w[0]).unsqueeze(0)           # [1, G, M, K]
        if ctx.needs_input_grad[1]:
            grad_both = factor_sums(bmm(w[0].mT, gs).mul_(e), ctx.width)
        return grad_w, grad_both, None


def over_s(grad: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``grad / s`` ``[G, M, B]``, made 0 where it is +-inf or NaN, i.e. where ``s == 0``:
    there every product ``w_mk e_kb`` of the column is 0, so any finite value gives the same
    gradients. Where ``s > 0`` it is at least the step's limit (smaller columns are
    recomputed exactly and pass no gradient here), so no finite quotient is lost. One pass
    with no boolean mask (comparisons and ``where`` are slow on CPU)."""
    return torch.div(grad, s).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def _outer_forward(ctx, logw, both, width):
    """The fused outer step's forward for :class:`OuterMatmul` and its twice-differentiable
    form: ``(out, s, w, e)`` (``s`` marked non-differentiable, ``ctx.width`` set)."""
    w = torch.exp(logw)
    out, s, e = outer_values(w, both, width)
    ctx.width = width
    ctx.mark_non_differentiable(s)
    return out, s, w, e


def factor_sums(z: torch.Tensor, width: int) -> torch.Tensor:
    """``z [G, A * A2, B]`` over the outer product's pairs ``(i, j)`` summed over ``j`` and
    over ``i``, side by side: ``[G, A + A2, B]`` (the left then the right children's)."""
    z = z.view(z.shape[0], width, -1, z.shape[2])                     # [G, A, A2, B]
    return torch.cat([z.sum(2), z.sum(1)], 1)


class OuterMatmulTwice(torch.autograd.Function):
    """:class:`OuterMatmul` whose gradient can be differentiated again (``run(twice=True)``,
    the leave-one-out gradient): the backward is :class:`_OuterGrad`, itself an autograd
    node with a hand-written backward, instead of autograd's graph of the formula (its
    broadcast products and reductions over ``[G, A, A2, B]``, then theirs differentiated)."""

    @staticmethod
    def forward(ctx, logw, both, width):
        out, s, w, e = _outer_forward(ctx, logw, both, width)
        ctx.save_for_backward(logw, both, w, e, s)
        return out, s

    @staticmethod
    def backward(ctx, grad, _grad_s):
        logw, both, w, e, s = ctx.saved_tensors
        grad_w, grad_both = _OuterGrad.apply(grad, logw, both, w, e, s, ctx.width)
        return grad_w, grad_both, None


class _OuterGrad(torch.autograd.Function):
    """The outer step's gradients ``(grad_logw [1, G, M, K], grad_both [G, A + A2, B])``
    from the gradient ``g [G, M, B]`` of its output, as :class:`OuterMatmul` computes them
    (``u = g / s``, 0 where ``s == 0``; ``t = w^T u``; ``grad_logw = (u e^T) w``; the
    children's from ``z = t e`` summed over either factor), as a function of ``g``, ``logw``
    and ``both`` (``w``, ``e``, ``s`` are theirs, passed in so as not to recompute them).

    Backward, for cotangents ``C [1, G, M, K]`` of ``grad_logw`` and ``c_l, c_r`` of the
    children's gradients: with ``c_k = c_l[i] + c_r[j]`` on ``k = (i, j)``, the second-order
    loss is ``sum_{m, k} w_mk e_k u_m (c_k + C_mk)``, so with ``r = w (e c) + (w C) e``
    ``[G, M, B]``: ``dg = r / s``, ``ds = -r u / s``; ``dw = u (e c)^T + ds e^T + C (u e^T)``
    (times ``w`` for ``logw``); ``de = c t + w^T ds + (w C)^T u``, and each child's gradient
    is ``de e`` summed over the other factor. ``s == 0`` columns give 0 throughout.
    """

    @staticmethod
    def forward(ctx, grad, logw, both, w, e, s, width):
        inv = torch.reciprocal(s).nan_to_num_(posinf=0.0)                    # [G, M, B]
        u = over_s(grad, s)
        t = bmm(w[0].mT, u)                                                 # [G, K, B]
        grad_both = factor_sums(t * e, width)
        grad_w = bmm(u, e.mT).mul_(w[0]).unsqueeze(0)
        ctx.save_for_backward(w, e, inv, u, t)
        ctx.width = width
        ctx.set_materialize_grads(False)
        return grad_w, grad_both

    @staticmethod
    def backward(ctx, c_w, c_both):
        w, e, inv, u, t = ctx.saved_tensors
        weights = w[0]                                                       # [G, M, K]
        g, k, batch = e.shape
        # few [G, K, B] buffers: each is as large as the outer product (in place where
        # possible; on CPU a fresh one of several MB costs its page faults)
        ct = ec = None
        r = u.new_zeros(()).expand_as(u)                       # no cotangent: no second order
        if c_both is not None:
            left, right = c_both[:, :ctx.width], c_both[:, ctx.width:]
            ec = (left.unsqueeze(2) + right.unsqueeze(1)).view(g, k, batch)   # c [G, K, B]
            ct = ec * t
            ec.mul_(e)
            r = bmm(weights, ec)
        if c_w is not None:
            wc = c_w[0] * weights
            r = r + bmm(wc, e)
        grad_g = r * inv
        ds = (r * u).mul_(inv).neg_()
        dw = bmm(ds, e.mT)
        if ec is not None:
            dw = dw + bmm(u, ec.mT)
        if c_w is not None:
            dw = dw + c_w[0] * bmm(u, e.mT)
        de = bmm(weights.mT, ds)
        if ct is not None:
            de.add_(ct)
        if c_w is not None:
            de.add_(bmm(wc.mT, u))
        return (grad_g, (dw * weights).unsqueeze(0), factor_sums(de.mul_(e), ctx.width),
                None, None, None, None)


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
