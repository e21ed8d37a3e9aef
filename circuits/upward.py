"""The upward pass as a program of per-layer steps, built once per :class:`~circuits.compile.Plan`.

Layout: each layer's output is its own node-major tensor ``[n_l, B]`` (layer 0: the
leaves, leaf node ``l`` at row ``l - 1``), made by concatenating the outputs of the
layer's steps once. A step reads its children from one earlier layer's tensor, or from
the concatenation of the few layers it needs (made once per step), so neither the pass
nor its backward ever rebuilds a whole-circuit buffer.

Steps:

- ``product``: products of ``W`` children each: children ``[M, W]``, log-values added.
- ``sum``: sparse sums, children ``[M, A]`` padded with a real child of weight log 0; an
  exact per-node log-sum-exp.
- ``dense``: ``G`` blocks of ``M`` sums sharing one child list ``[G, K]``: one batched
  matrix product of the weights with the children's shifted exponentials (the
  EinsumNetworks trick).
- ``outer``: a dense block whose ``K`` children are exactly the products of two child
  lists ``[G, A]`` and ``[G, A2]`` (``K = A * A2``) used by no other node: the products are
  never materialised, the block multiplies the shifted exponentials of the two lists
  (an outer product) and then the weights ``[G, M, K]``.

The shifts of ``dense`` and ``outer`` are shared by a block's sums. Where a sum's value
falls below what the shared shift can represent (``K * tiny / eps``) while its children
are not all ``-inf``, the step recomputes those batch columns with the exact per-node
log-sum-exp, so every value is exact to the dtype's precision.

Speed: an ``outer`` step with shared weights is one autograd node (:class:`_OuterMatmul`)
whose backward reuses the saved outer product instead of running autograd's broadcast
products over ``[G, K, B]`` (where the gradient is differentiated again, as for the
leave-one-out gradient, :class:`_OuterMatmulTwice` does the same for the second order);
batches narrower than :data:`NARROW` multiply in transposed form (CPU BLAS is slow on
batched matrix-vector products); a caller that keeps the normalised parameters across
passes can keep their exponentials too (:func:`weight_exps`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.autograd.function import once_differentiable

from circuits.logops import log_nonneg, logsumexp
from circuits.program import Program, Step, kept_structure

__all__ = ["run", "root", "node_values", "weight_exps", "pass_weights", "KeptWeights"]


def run(program: Program, logp_ext: torch.Tensor, leaf_vals: torch.Tensor | None,
        exact: bool = False, exps: KeptWeights | None = None,
        first: torch.Tensor | None = None, twice: bool = False,
        tape: list | None = None) -> list | None:
    """Every layer's log-values: the leaf layer ``[n_0, B]`` -> list of ``[n_l, B]`` tensors.

    ``logp_ext [B', P + 2]`` are the extended normalised log-parameters, ``B'`` 1 or ``B``.
    The dense steps record the smallest value of their shifted sums; only if one fell below
    what the shared shift can represent is the pass run again with ``exact`` guards (which
    recompute the affected batch columns by exact log-sum-exp), so the common case costs one
    synchronisation per pass, not one per step. ``exps``: :func:`weight_exps` of the same
    ``logp_ext``, when the caller keeps them across passes. ``first``: the first layer's
    values ``[n_1, B]`` computed by the caller (:mod:`circuits.leaf_products`), which then
    passes no leaf layer (``leaf_vals`` None; no later step may read it). ``twice``: every
    step's gradient can be differentiated again: composed of torch ops, or, for the fused
    outer step, :class:`_OuterMatmulTwice`, whose backward has a hand-written backward.
    ``tape``: a list that a pass without autograd fills, layer by layer, with what each
    step's hand-written reverse reads (:mod:`circuits.reverse`); such a pass returns None
    where it would need the exact guards.
    """
    outs = [leaf_vals if first is None else first[:0], *([] if first is None else [first])]
    ctx = _Pass(logp_ext, program.cuts, exact, exps)
    ctx.twice = twice
    ctx.tape = tape
    empty = None
    for steps in program.layers[len(outs) - 1:]:
        if tape is not None:
            tape.append([])
        if not steps:                                 # a layer of fused products only
            empty = outs[0][:0] if empty is None else empty
            outs.append(empty)
            continue
        parts = [_STEPS[step.kind](step, _source(outs, step.sources), ctx) for step in steps]
        outs.append(parts[0] if len(parts) == 1 else torch.cat(parts))
    if ctx.mins:
        if bool((torch.stack(ctx.mins) < _limits(program, ctx.limits, logp_ext)).any()):
            if tape is not None:
                return None
            return run(program, logp_ext, leaf_vals, exact=True, exps=exps, first=first,
                       twice=twice)
    return outs


@dataclass(frozen=True)
class KeptWeights:
    """What :func:`weight_exps` keeps for passes with unchanged parameters: ``exps``, the
    weights ``exp(piece)`` of every piece a dense or outer step reads (None for the
    others), and ``safe``, the pieces whose every weight is at least twice the step's limit
    (``K * tiny / eps``). Such a step needs no underflow check: its shifted children
    include one exactly 1 (the maximum, ``exp(0)``; for an outer step the product of both
    maxima), so each sum of non-negative terms is at least that child's weight.

    ``derived``: other tensors that depend on the parameters alone, made by the first pass
    that needs them and reused by the next ones (the log-weights of a step whose slots are
    not one contiguous piece, gathered; the fused first layer's leaf tables,
    :mod:`circuits.leaf_products`)."""

    exps: tuple
    safe: frozenset
    derived: dict = field(default_factory=dict, compare=False, repr=False)

    def get(self, owner, make):
        """What ``make()`` derives for ``owner`` (a step, the fused first layer), made on
        first use (held with ``owner``, so an id is never read for another object)."""
        entry = self.derived.get(id(owner))
        if entry is None or entry[0] is not owner:
            entry = self.derived[id(owner)] = (owner, make())
        return entry[1]


def weight_exps(program: Program, logp_ext: torch.Tensor) -> KeptWeights | None:
    """The weights of ``logp_ext``'s pieces and which steps are safe (:class:`KeptWeights`),
    to reuse across passes with unchanged parameters; None when no step has a piece."""
    if not program.cuts:
        return None
    steps = {step.piece: step for layer in program.layers for step in layer if step.piece is not None}
    exps = tuple(torch.exp(piece) if i in steps else None
                 for i, piece in enumerate(torch.split(logp_ext, program.cuts, dim=1)))
    safe = frozenset(i for i, step in steps.items() if exps[i].numel()
                     and bool(exps[i].amin() >= 2 * _limit(step, logp_ext.dtype)))
    return KeptWeights(exps, safe)


def pass_weights(program: Program, weights: torch.Tensor) -> KeptWeights | None:
    """The pieces of ``weights = exp(logp_ext)`` that dense and outer steps read, for one
    pass (none marked safe: the check would cost more than it saves); None when no step
    has a piece."""
    if not program.cuts:
        return None
    read = {step.piece for layer in program.layers for step in layer if step.piece is not None}
    return KeptWeights(tuple(piece if i in read else None for i, piece in
                             enumerate(torch.split(weights, program.cuts, dim=1))), frozenset())


def root(program: Program, outs: list) -> torch.Tensor:
    """The root's log-values ``[B]`` from :func:`run`'s output."""
    return outs[program.root_layer][program.root_pos]


def node_values(program: Program, outs: list) -> torch.Tensor:
    """All node log-values ``[N, B]`` in node-id order (row 0, the padding node, is 0)."""
    batch = outs[0].shape[1]
    parts = [outs[0].new_zeros(1, batch), *outs]
    for layer, index in program.outers:
        step = program.layers[layer - 1][index]
        src = _source(outs, step.sources)
        left, right = _gather(src, step.children), _gather(src, step.right)
        parts.append((left.unsqueeze(2) + right.unsqueeze(1)).flatten(0, 2))
    return torch.cat(parts).index_select(0, program.node_index)


# --- execution --------------------------------------------------------------------------------
class _Pass:
    """Per-pass state: log-weights and weights per step (a view of the step's piece of
    ``logp_ext``, split on first use, where its slots are contiguous; else gathered by
    slot), and the dense steps' smallest sums with their limits (``K * tiny / eps``)."""

    def __init__(self, logp_ext: torch.Tensor, cuts: tuple, exact: bool,
                 exps: KeptWeights | None):
        self.logp_ext = logp_ext
        self.cuts = cuts
        self._pieces = None
        self.exps = exps
        self._exp = None
        self.exact = exact
        self.mins: list = []
        self.limits: list = []
        self.twice = False
        self.tape = None

    def keep(self, *saved) -> None:
        """Where a tape is recorded: what this step's reverse reads, in step order."""
        if self.tape is not None:
            self.tape[-1].append(saved)

    @property
    def pieces(self) -> tuple:
        if self._pieces is None:
            self._pieces = torch.split(self.logp_ext, self.cuts, dim=1)
        return self._pieces

    def log(self, step: Step) -> torch.Tensor:
        if step.piece is not None:
            return self.pieces[step.piece].view(-1, *step.weights.shape)
        if self.exps is not None:
            return self.exps.get(step, lambda: self._gathered_log(step))
        return self._gathered_log(step)

    def _gathered_log(self, step: Step) -> torch.Tensor:
        return self.logp_ext.index_select(1, step.weights.reshape(-1)).view(-1, *step.weights.shape)

    def exp(self, step: Step) -> torch.Tensor:
        if step.piece is not None:
            if self.exps is not None:
                return self.exps.exps[step.piece].view(-1, *step.weights.shape)
            return torch.exp(self.pieces[step.piece]).view(-1, *step.weights.shape)
        if self._exp is None:
            self._exp = torch.exp(self.logp_ext)
        return self._exp[:, step.weights]

    def record(self, step: Step, out: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Outside exact mode: keep ``s``'s minimum for :func:`run`'s check; ``out [G, M, B]``
        flattened to ``[G * M, B]``."""
        if s.numel() and (self.exps is None or step.piece not in self.exps.safe):
            self.mins.append(s.detach().amin() if s.requires_grad else s.amin())
            self.limits.append(_limit(step, s.dtype))
        return out.flatten(0, 1)


def _limits(program: Program, values: list, like: torch.Tensor) -> torch.Tensor:
    """The recorded steps' limits ``values`` as a tensor of ``like``'s dtype and device,
    kept on the program (a program meets only a few distinct lists)."""
    kept = program.__dict__.setdefault("_limit_tensors", {})
    key = (like.dtype, like.device, tuple(values))
    if key not in kept:
        kept[key] = torch.tensor(values, dtype=like.dtype, device=like.device)
    return kept[key]


def _limit(step: Step, dtype: torch.dtype) -> float:
    """The smallest shifted sum a dense step's shared shift represents: ``K * tiny / eps``."""
    info = torch.finfo(dtype)
    return step.weights.shape[-1] * info.tiny / info.eps


def _source(outs: list, sources: tuple) -> torch.Tensor:
    if len(sources) == 1:
        return outs[sources[0]]
    return torch.cat([outs[i] for i in sources])


def _gather(src: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``src [n, B]`` rows ``ids [*S]`` -> ``[*S, B]``."""
    return src.index_select(0, ids.reshape(-1)).view(*ids.shape, src.shape[1])


def _product(step: Step, src: torch.Tensor, weights: _Pass) -> torch.Tensor:
    weights.keep()
    if step.children.shape[1] == 2:
        return src.index_select(0, step.children[:, 0]) + src.index_select(0, step.children[:, 1])
    return _gather(src, step.children).sum(1)


def _sum(step: Step, src: torch.Tensor, weights: _Pass) -> torch.Tensor:
    logw = weights.log(step).permute(1, 2, 0)                        # [M, A, B']
    x = _gather(src, step.children) + logw
    out = logsumexp(x, 1) if x.requires_grad else torch.logsumexp(x, 1)
    weights.keep(x, out)
    return out


def _shift(x: torch.Tensor, dim: int) -> torch.Tensor:
    """A detached max over ``dim`` (kept), 0 where it is ``-inf``."""
    return (x.detach() if x.requires_grad else x).amax(dim, keepdim=True).nan_to_num_(neginf=0.0)


def _has_finite(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Whether some entry along ``dim`` (kept) is above ``-inf``."""
    return (x.detach() > float("-inf")).any(dim, keepdim=True)


def _matmul(w: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``w [B', G, M, K]`` times ``e [G, K, B]`` -> ``[G, M, B]``."""
    if w.shape[0] == 1:
        return _bmm(w.view(w.shape[1:]), e)                          # a view: no select backward
    return torch.einsum("bgmk,gkb->gmb", w, e)


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a [G, X, Y] @ b [G, Y, B]``. Below :data:`NARROW` columns, computed as
    ``(b^T a^T)^T``: CPU BLAS runs batched matrix-vector products far below its
    matrix-matrix speed (4x slower at ``B = 1`` on a 21 x 441 block), but not the
    transposed form."""
    if b.shape[2] < NARROW:
        return torch.bmm(b.mT, a.mT).mT
    return torch.bmm(a, b)


NARROW = 16


class _OuterMatmul(torch.autograd.Function):
    """:func:`_outer_values` as one autograd node, from shared log-weights ``logw [1, G, M,
    K]`` (exponentiated inside, so the weights' gradient is ``(grad_w * w)`` in place, with
    no separate exponential node). Its backward reads the saved outer product ``e [G, K, B]`` once: ``z = (w^T (grad / s)) * e``
    summed over either factor is the gradient of the left or right children, the
    exponentials' backward folded in, where autograd would run two broadcast products and
    their reductions. ``s`` is returned for the guard, not differentiable; ``log 0 = -inf``
    gets a zero gradient."""

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
        # trick against NaN second derivatives in `logops` is not needed
        gs = _over_s(grad, s)                                         # [G, M, B]
        grad_w = grad_both = None
        if ctx.needs_input_grad[0]:
            grad_w = _bmm(gs, e.mT).mul_(w[0]).unsqueeze(0)           # [1, G, M, K]
        if ctx.needs_input_grad[1]:
            grad_both = _factor_sums(_bmm(w[0].mT, gs).mul_(e), ctx.width)
        return grad_w, grad_both, None


def _over_s(grad: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``grad / s`` ``[G, M, B]``, made 0 where it is +-inf or NaN, i.e. where ``s == 0``:
    there every product ``w_mk e_kb`` of the column is 0, so any finite value gives the same
    gradients. Where ``s > 0`` it is at least the step's limit (smaller columns are
    recomputed exactly and pass no gradient here), so no finite quotient is lost. One pass,
    where the comparison and two ``where``s cost 5x as much on CPU."""
    return torch.div(grad, s).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def _outer_forward(ctx, logw, both, width):
    """The fused outer step's forward for :class:`_OuterMatmul` and its twice-differentiable
    form: ``(out, s, w, e)`` (``s`` marked non-differentiable, ``ctx.width`` set)."""
    w = torch.exp(logw)
    out, s, e = _outer_values(w, both, width)
    ctx.width = width
    ctx.mark_non_differentiable(s)
    return out, s, w, e


def _factor_sums(z: torch.Tensor, width: int) -> torch.Tensor:
    """``z [G, A * A2, B]`` over the outer product's pairs ``(i, j)`` summed over ``j`` and
    over ``i``, side by side: ``[G, A + A2, B]`` (the left then the right children's)."""
    z = z.view(z.shape[0], width, -1, z.shape[2])                     # [G, A, A2, B]
    return torch.cat([z.sum(2), z.sum(1)], 1)


class _OuterMatmulTwice(torch.autograd.Function):
    """:class:`_OuterMatmul` whose gradient can be differentiated again (``run(twice=True)``,
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
    from the gradient ``g [G, M, B]`` of its output, as :class:`_OuterMatmul` computes them
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
        u = _over_s(grad, s)
        t = _bmm(w[0].mT, u)                                                 # [G, K, B]
        grad_both = _factor_sums(t * e, width)
        grad_w = _bmm(u, e.mT).mul_(w[0]).unsqueeze(0)
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
            r = _bmm(weights, ec)
        if c_w is not None:
            wc = c_w[0] * weights
            r = r + _bmm(wc, e)
        grad_g = r * inv
        ds = (r * u).mul_(inv).neg_()
        dw = _bmm(ds, e.mT)
        if ec is not None:
            dw = dw + _bmm(u, ec.mT)
        if c_w is not None:
            dw = dw + c_w[0] * _bmm(u, e.mT)
        de = _bmm(weights.mT, ds)
        if ct is not None:
            de.add_(ct)
        if c_w is not None:
            de.add_(_bmm(wc.mT, u))
        return (grad_g, (dw * weights).unsqueeze(0), _factor_sums(de.mul_(e), ctx.width),
                None, None, None, None)


def _outer_values(w: torch.Tensor, both: torch.Tensor, width: int):
    """The fused outer step on ``both [G, A + A2, B]`` (left children then right, ``A =
    width``) with weights ``w [B', G, M, A * A2]``: ``out = log(w @ e) + ml + mr`` where
    ``e [G, K, B]`` is the outer product of the two lists' shifted exponentials. Returns
    ``(out, s, e)``, ``s = w @ e`` ``[G, M, B]``."""
    g, total, batch = both.shape
    if 2 * width == total:                            # equal lists: shift and exp them as one
        two = both.view(g, 2, width, batch)
        m = _shift(two, 2)                                            # [G, 2, 1, B]
        left, right = (two - m).exp_().unbind(1)
        e = left.unsqueeze(2) * right.unsqueeze(1)                    # [G, A, A, B]
        shift = m.sum(1)
    else:
        left, right = both[:, :width], both[:, width:]
        ml, mr = _shift(left, 1), _shift(right, 1)
        e = torch.exp(left - ml).unsqueeze(2) * torch.exp(right - mr).unsqueeze(1)
        shift = ml + mr
    e = e.flatten(1, 2)
    s = _matmul(w, e)
    if s.requires_grad:
        return log_nonneg(s) + shift, s, e
    return torch.log(s).add_(shift), s, e


def _log(s: torch.Tensor) -> torch.Tensor:
    return log_nonneg(s) if s.requires_grad else torch.log(s)


def _dense(step: Step, src: torch.Tensor, weights: _Pass) -> torch.Tensor:
    ch = _gather(src, step.children)                                 # [G, K, B]
    m = _shift(ch, 1)
    w, e = weights.exp(step), torch.exp(ch - m)
    s = _matmul(w, e)                                                # [G, M, B]
    weights.keep(w, e, s)
    out = _log(s) + m
    if not weights.exact:
        return weights.record(step, out, s)
    return _guard(step, out, s, lambda: _has_finite(ch, 1),
                  lambda cols: ch.index_select(2, cols), weights)


def _outer(step: Step, src: torch.Tensor, weights: _Pass) -> torch.Tensor:
    width = step.children.shape[1]
    both = _gather(src, _pair(step))                                 # [G, A + A2, B]
    if (step.piece is not None and torch.is_grad_enabled() and weights.logp_ext.shape[0] == 1
            and (weights.logp_ext.requires_grad or both.requires_grad)):
        fused = _OuterMatmulTwice if weights.twice else _OuterMatmul
        out, s = fused.apply(weights.log(step), both, width)
    else:
        w = weights.exp(step)
        out, s, e = _outer_values(w, both, width)
        weights.keep(w, e, s)
    if not weights.exact:
        return weights.record(step, out, s)

    def children(cols):
        picked = both.index_select(2, cols)
        return (picked[:, :width].unsqueeze(2) + picked[:, width:].unsqueeze(1)).flatten(1, 2)
    return _guard(step, out, s, lambda: _has_finite(both[:, :width], 1) & _has_finite(both[:, width:], 1),
                  children, weights)


def _pair(step: Step) -> torch.Tensor:
    """An outer step's left and right child lists side by side, ``[G, A + A2]`` (made once
    per step and kept on it)."""
    pair = getattr(step, "_pair", None)
    if pair is None:
        with kept_structure():
            pair = step._pair = torch.cat([step.children, step.right], 1)
    return pair


def _guard(step: Step, out, s, finite, children, weights: _Pass) -> torch.Tensor:
    """In exact mode, recompute exactly the batch columns where the shared shift lost
    precision: ``out`` and ``s`` ``[G, M, B]``; ``finite()`` ``[G, 1, B]``, whether the block
    has a child above ``-inf`` (else ``s == 0`` is exact)."""
    if s.numel() == 0:
        return out.flatten(0, 1)
    bad = (s.detach() < _limit(step, s.dtype)) & finite()
    if not bool(bad.any()):
        return out.flatten(0, 1)
    cols = torch.nonzero(bad.flatten(0, 1).any(0)).flatten()
    ch = children(cols)                                              # [G, K, C]
    logw = weights.log(step)                                         # [B', G, M, K]
    if logw.shape[0] > 1:
        logw = logw.index_select(0, cols)
    exact = logsumexp(ch.unsqueeze(1) + logw.permute(1, 2, 3, 0), 2)  # [G, M, C]
    fixed = torch.where(bad.index_select(2, cols), exact, out.index_select(2, cols))
    return out.index_copy(2, cols, fixed).flatten(0, 1)


_STEPS = {"product": _product, "sum": _sum, "dense": _dense, "outer": _outer}
