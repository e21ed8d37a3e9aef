"""``log p(x)`` with its gradient w.r.t. the circuit's logits as one autograd node: the
upward pass's reverse written by hand (:meth:`circuits.Circuit.log_prob`).

At small batch the gradient's cost is per op, not per number: through autograd,
``log_prob``'s backward runs a node for every view, every children's ``index_select``,
every split and concatenation of the parameters and every custom step's Python. Here the
forward runs without autograd, through the same walker (:func:`circuits.upward.run`, which
fills a tape with what each step's reverse reads), and the backward walks the layers down
once: per step the vector-Jacobian product of its kind, the children's gradients added
into their layer's rows, the log-weights' into the gradient of ``logp_ext``; then the leaf
layer's (an ``index_add`` at the slots it read, or for the fused first layer a matmul of
the products' gradients with the states' one-hot columns) and the normalisation's.

Per step kind (:mod:`circuits.upward`), with ``g`` the gradient of the step's output:

- product: ``g`` to every child;
- sum: ``g * exp(x - out)`` to the children and to their log-weights (``x``: the children
  plus the log-weights; 0 where ``out = -inf``, as :func:`circuits.logops.logsumexp`);
- dense and outer: with ``u = g / s`` (0 where ``s = 0``): ``(u e^T) w`` to the
  log-weights and ``(w^T u) e`` to the children (for an outer step summed over either
  factor), as :class:`circuits.outer_step.OuterMatmul`.

A pass that needs the exact guards (a shifted sum below its shared shift's limit) records
no tape; its gradient is then autograd's of the plain path, recomputed in the backward, as
is any gradient that is to be differentiated again (``create_graph``).
"""

from __future__ import annotations

import itertools

import torch

from circuits import outer_step, parameters, passes, upward
from circuits.compile import Plan
from circuits.leaf_products import leaf_products
from circuits.program import kept_structure

__all__ = ["log_prob", "MAX_BATCH"]

MAX_BATCH = 2048
"""The largest batch :meth:`circuits.Circuit.log_prob` answers here. What this route saves
is per-op cost, which large batches amortise; above this size ``log_prob`` takes
autograd's path."""


def log_prob(plan: Plan, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log p(x)`` ``[B]`` for assignments ``x [B, V]`` (-1 = marginalised) under the flat
    ``logits [P]``, differentiable w.r.t. ``logits`` (one autograd node)."""
    return _TapedLogProb.apply(logits, plan, x)


def _plain(plan: Plan, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The same values through autograd's path (for the exact guards and second orders)."""
    ext = passes.extend(parameters.normalise(plan, logits.unsqueeze(0), "logits"))
    return passes.root_log_values(plan, ext, x, x.shape[0])


class _TapedLogProb(torch.autograd.Function):
    """:func:`log_prob`: the forward without autograd, recording a tape; the backward by
    :func:`_reverse` (or autograd's path, see the module's docstring)."""

    @staticmethod
    def forward(ctx, logits, plan, x):
        ext, weights, smallest = parameters.normalise_extended(
            plan, logits, weights_only=_weights_only_runs(plan))
        kept = upward.pass_weights(plan.program, weights, smallest)  # the steps' weights, and
        # the normalisation's in the backward
        tape: list = []
        fused = leaf_products(plan.program)
        if fused is not None:
            program, slots = fused.program, None
            outs = upward.run(program, ext, None, exps=kept, tape=tape,
                              first=fused.values(ext, x, kept))
        else:
            program, slots = plan.program, passes.leaf_layer_slots(plan, x)
            outs = upward.run(program, ext, ext.reshape(-1).take(slots), exps=kept, tape=tape)
        ctx.save_for_backward(logits, x)
        ctx.plan = plan
        if outs is None:                              # the exact guards: autograd's path
            ctx.taped = None
            return _plain(plan, logits, x)
        ctx.taped = (program, outs, tape, weights, fused, slots)
        return upward.root(program, outs)

    @staticmethod
    def backward(ctx, grad):
        logits, x = ctx.saved_tensors
        plan = ctx.plan
        if ctx.taped is None or torch.is_grad_enabled():
            return _autograd_grad(plan, logits, x, grad), None, None
        program, outs, tape, weights, fused, slots = ctx.taped
        ctx.taped = None          # freed with it (a retained graph's next backward recomputes)
        g_ext = _gradient_buffer(program, weights)
        below = _reverse(program, outs, tape, g_ext, grad)
        if fused is None:
            g_ext.view(-1).index_add_(0, slots.reshape(-1), below.reshape(-1))
        else:
            _fused_reverse(fused, x, below, g_ext)
        return parameters.normalise_backward(plan, g_ext, weights)[0], None, None


def _weights_only_runs(plan: Plan) -> frozenset:
    """The parameter runs (indices of ``plan.param_runs``) whose columns lie within the
    pieces that the taped pass reads as weights alone (:func:`circuits.upward.weight_columns`):
    their log-parameters are never read, so :func:`~circuits.parameters.normalise_extended`
    skips them (kept on the plan after the first call)."""
    runs = getattr(plan, "_weights_only_runs", None)
    if runs is None:
        merged: list = []                             # adjacent pieces joined
        for first, last in upward.weight_columns(plan.program):
            if merged and merged[-1][1] == first:
                merged[-1][1] = last
            else:
                merged.append([first, last])
        runs = plan._weights_only_runs = frozenset(
            i for i, (start, stop, *_) in enumerate(plan.param_runs)
            if any(first <= start and stop <= last for first, last in merged))
    return runs


def _autograd_grad(plan: Plan, logits: torch.Tensor, x: torch.Tensor, grad: torch.Tensor):
    """``logits``' gradient by autograd of :func:`_plain`, with a graph where the backward
    runs under ``create_graph``."""
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        source = logits if create_graph else logits.detach().requires_grad_()
        grad_logits, = torch.autograd.grad(_plain(plan, source, x), source, grad,
                                           create_graph=create_graph)
    return grad_logits


def _reverse(program, outs: list, tape: list, g_ext: torch.Tensor, grad: torch.Tensor):
    """Walk the taped layers down from the root's gradient ``grad [B]``: the log-weights'
    gradients go into ``g_ext [1, P + 2]`` (:func:`_gradient_buffer`: a step with a piece
    writes it whole, the others add at their slots); returns the gradient of the layer
    below the tape ``[n, B]`` (the leaf layer, or the fused first layer)."""
    grads = [None] * len(outs)
    if program.root_layer == len(outs) - 1 and outs[-1].shape[0] == 1:
        grads[-1] = grad.unsqueeze(0)          # the root alone on the top layer, read by no step
    else:
        top = grads[program.root_layer] = torch.zeros_like(outs[program.root_layer])
        top[program.root_pos] = grad
    starts = list(itertools.accumulate(program.cuts, initial=0))
    flat = g_ext.view(-1)
    first = len(outs) - len(tape)                    # the first layer on the tape
    for layer in range(len(outs) - 1, first - 1, -1):
        g, grads[layer] = grads[layer], None
        steps = program.layers[layer - 1]
        if g is None:                     # read by no step (fused products only: no pieces)
            for step in steps:
                if step.piece is not None:
                    flat.narrow(0, starts[step.piece], step.weights.numel()).zero_()
            continue
        at = 0
        for step, saved in zip(steps, tape[layer - first]):
            rows = step.children.shape[0] if step.kind in ("product", "sum") else \
                step.weights.shape[0] * step.weights.shape[1]
            piece = None if step.piece is None else \
                flat.narrow(0, starts[step.piece], step.weights.numel()).view(step.weights.shape)
            values, logw = _VJPS[step.kind](step, g if len(steps) == 1 else g[at:at + rows], saved,
                                            piece)
            at += rows
            _add_rows(grads, outs, step.sources, _rows(step), values)
            if logw is not None and piece is None:
                flat.index_add_(0, step.weights.reshape(-1), logw.reshape(-1))
    below = grads[first - 1]
    return torch.zeros_like(outs[first - 1]) if below is None else below


def _gradient_buffer(program, weights: torch.Tensor) -> torch.Tensor:
    """The log-parameters' gradient ``g_ext``, like ``weights [1, P + 2]``: zeros but for the
    pieces of ``logp_ext`` (``program.cuts``) that a dense or outer step reads, which
    :func:`_reverse` writes whole (not a zero-fill and an addition of the largest part)."""
    owned = upward.piece_steps(program)
    if not owned:
        return torch.zeros_like(weights)
    g_ext = torch.empty_like(weights)
    for i, part in enumerate(torch.split(g_ext, program.cuts, 1)):
        if i not in owned:
            part.zero_()
    return g_ext


def _rows(step) -> tuple:
    """``(ids, order)``: the rows of the step's source that its VJP's values ``[R, B]`` go to
    (in the forward's order of its children), and, where ``ids`` is a permutation of
    ``0..R-1``, the values' rows in source order (None for the identity; else absent:
    ``False``). Made once per step and kept on it."""
    kept = getattr(step, "_reverse_rows", None)
    if kept is None:
        with kept_structure():
            ids = (step.children.T if step.kind == "product" else
                   upward._pair(step) if step.kind == "outer" else step.children).reshape(-1)
            every = torch.arange(ids.numel(), device=ids.device)
            order = (None if torch.equal(ids, every) else
                     torch.argsort(ids) if torch.equal(ids.sort().values, every) else False)
            kept = step._reverse_rows = (ids, order)
    return kept


def _add_rows(grads: list, outs: list, sources: tuple, rows: tuple, values: torch.Tensor):
    """Add ``values [R, B]`` at rows ``ids`` of the step's source (its layers concatenated);
    ``rows = (ids, order)`` as :func:`_rows`. A permutation of a whole layer not yet written
    is that layer's gradient (reordered, or as it is), with no zero-fill and addition."""
    ids, order = rows
    if len(sources) == 1:
        i = sources[0]
        if grads[i] is None:
            if order is not False and ids.numel() == outs[i].shape[0]:
                grads[i] = values if order is None else values.index_select(0, order)
                return
            grads[i] = torch.zeros_like(outs[i])
        grads[i].index_add_(0, ids, values)
        return
    sizes = [outs[i].shape[0] for i in sources]
    total = values.new_zeros(sum(sizes), values.shape[1]).index_add_(0, ids, values)
    for i, part in zip(sources, total.split(sizes)):
        grads[i] = part if grads[i] is None else grads[i].add_(part)


def _product(step, g, saved, piece):
    return g.repeat(step.children.shape[1], 1), None


def _sum(step, g, saved, piece):
    x, out = saved                                                     # [M, A, B], [M, B]
    shift = torch.nan_to_num(out, neginf=0.0).unsqueeze(1)          # all -inf: flows 0
    flows = torch.exp(x - shift).mul_(g.unsqueeze(1))                  # [M, A, B]
    return flows.view(-1, g.shape[1]), flows.sum(2)


def _dense(step, g, saved, piece):
    children, logw = _weighted(g, *saved, piece)
    return children.reshape(-1, g.shape[1]), logw


def _outer(step, g, saved, piece):
    children, logw = _weighted(g, *saved, piece)
    return outer_step.factor_sums(children, step.children.shape[1]).view(-1, g.shape[1]), logw


def _weighted(g, w, e, s, piece):
    """A matrix product step's ``(w^T u) e`` ``[G, K, B]`` (the children's gradients) and
    ``(u e^T) w`` ``[G, M, K]`` (the log-weights', written into ``piece`` where given),
    ``u = g / s``, from the saved weights ``w [1, G, M, K]``, shifted children ``e [G, K,
    B]`` and sums ``s [G, M, B]``. Below :data:`circuits.outer_step.NARROW` columns ``w^T u``
    is ``(u^T w)^T``, as the forward's."""
    w = w[0]
    u = outer_step.over_s(g.view(s.shape), s)
    t = torch.bmm(u.mT, w).mT if u.shape[2] < outer_step.NARROW else torch.bmm(w.mT, u)
    return t.mul_(e), _times_transposed(u, e, piece).mul_(w)


def _times_transposed(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None):
    """``a [G, X, B] @ b [G, Y, B]^T`` ``[G, X, Y]`` (into ``out`` where given); at one column
    a broadcast product (CPU BLAS is slow on such outer products)."""
    if a.shape[2] == 1:
        return torch.mul(a, b.mT, out=out)
    return torch.bmm(a, b.mT, out=out)


_VJPS = {"product": _product, "sum": _sum, "dense": _dense, "outer": _outer}


def _fused_reverse(fused, x: torch.Tensor, g_first: torch.Tensor, g_ext: torch.Tensor) -> None:
    """Add the leaf parameters' gradient from the fused first layer's ``g_first [M, B]``
    into ``g_ext``: per tuple of variables one matmul of the products' gradients with the
    states' one-hot columns gives every table entry's ``[U, I, W * (K + 1)]``."""
    u, w, k1, i = fused.slots.shape
    batch = x.shape[0]
    grouped = g_first if fused.order is None else \
        g_first.new_zeros(u * i, batch).index_add_(0, fused.order, g_first)
    one_hot = g_first.new_zeros(u, w, k1, batch).scatter_(2, fused._columns(x).view(u, w, 1, batch), 1.0)
    table = _times_transposed(grouped.view(u, i, batch), one_hot.view(u, w * k1, batch))
    g_ext.view(-1).index_add_(0, fused.gather_slots.reshape(-1), table.reshape(-1))
