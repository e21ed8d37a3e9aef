"""The upward executor: :func:`run` walks a plan's :class:`~circuits.schedule.Schedule`
under a semiring (:data:`LOG_SUM_EXP` or :data:`MAX_PRODUCT`).

Each layer's output is its own node-major tensor ``[n_l, B]`` (layer 0: the leaves), the
concatenation of its steps' outputs. Steps:

- ``product``: children ``[M, W]``, log-values added.
- ``sum``: children ``[M, A]`` (padded with a child of weight log 0): exact log-sum-exp.
- ``dense``: ``G`` blocks of ``M`` sums sharing a child list ``[G, K]``: weights times the
  children's shifted exponentials, one batched matrix product.
- ``outer``: a dense block whose ``K = A * A2`` children are the products of two lists
  ``[G, A]``, ``[G, A2]`` used by no other node: the products are never materialised
  (:func:`circuits.kernels.outer_values`).

Where a ``dense`` or ``outer`` sum falls below what its shared shift represents
(``K * tiny / eps``) while its children are not all ``-inf``, those batch columns are
recomputed by exact log-sum-exp.
"""

from __future__ import annotations

import torch

from circuits.kernels import OuterMatmul, log_nonneg, logsumexp, matmul, max_shift, outer_values
from circuits.schedule import KeptWeights, Schedule, Step, kept, kept_structure

__all__ = ["LOG_SUM_EXP", "MAX_PRODUCT", "run", "root", "node_values", "weight_exps",
           "piece_steps"]


def run(plan, logp_ext: torch.Tensor, leaf_vals: torch.Tensor | None, *,
        semiring: dict | None = None, exact: bool = False, exps: KeptWeights | None = None,
        first: torch.Tensor | None = None, twice: bool = False) -> list:
    """Every layer's values: the leaf layer ``[n_0, B]`` -> list of ``[n_l, B]`` tensors.

    ``logp_ext [B' (1 or B), P + 2]``: extended normalised log-parameters. ``semiring``:
    :data:`LOG_SUM_EXP` (default) or :data:`MAX_PRODUCT`. The shared-shift steps record
    their smallest sums; if one fell below its limit the pass reruns with exact guards
    (``exact``: guards from the start). ``exps``: :func:`weight_exps` of ``logp_ext``.
    ``first``: the first layer ``[n_1, B]`` (:class:`circuits.schedule.LeafProducts`), then
    ``leaf_vals`` is None. ``twice``: every step's gradient is differentiable again.
    """
    steps = LOG_SUM_EXP if semiring is None else semiring
    schedule = plan.schedule
    ctx = _Pass(logp_ext, schedule.cuts, exact, exps, twice)
    outs = _walk(schedule, steps, ctx, leaf_vals, first)
    if ctx.mins and bool((torch.stack(ctx.mins) < _limits(schedule, ctx.limits, logp_ext)).any()):
        outs = _walk(schedule, steps, _Pass(logp_ext, schedule.cuts, True, exps, twice),
                     leaf_vals, first)
    return outs


def _walk(schedule: Schedule, steps: dict, ctx: _Pass, leaf_vals: torch.Tensor | None,
          first: torch.Tensor | None) -> list:
    outs = [leaf_vals if first is None else first[:0], *([] if first is None else [first])]
    empty = None
    for layer in schedule.layers[len(outs) - 1:]:
        if not layer:                                 # a layer of fused products only
            empty = outs[0][:0] if empty is None else empty
            outs.append(empty)
            continue
        parts = [steps[step.kind](step, _source(outs, step.sources), ctx) for step in layer]
        outs.append(parts[0] if len(parts) == 1 else torch.cat(parts))
    return outs


def weight_exps(plan, logp_ext: torch.Tensor) -> KeptWeights | None:
    """:class:`KeptWeights` of ``logp_ext``, for passes with unchanged parameters; None when
    no step has a piece."""
    schedule = plan.schedule
    if not schedule.cuts:
        return None
    steps = piece_steps(schedule)
    exps = tuple(torch.exp(piece) if i in steps else None
                 for i, piece in enumerate(torch.split(logp_ext, schedule.cuts, dim=1)))
    safe = frozenset(i for i, step in steps.items() if exps[i].numel()
                     and bool(exps[i].amin() >= 2 * _limit(step, logp_ext.dtype)))
    return KeptWeights(exps, safe)


def piece_steps(schedule: Schedule) -> dict:
    """``{piece: step}`` of the steps that read a piece of ``logp_ext`` (kept on the schedule)."""
    return kept(schedule.__dict__, "_piece_steps", lambda: {
        step.piece: step for layer in schedule.layers for step in layer if step.piece is not None})


def root(plan, outs: list) -> torch.Tensor:
    """The root's log-values ``[B]`` from :func:`run`'s output."""
    return outs[plan.schedule.root_layer][plan.schedule.root_pos]


def node_values(plan, outs: list) -> torch.Tensor:
    """All node log-values ``[N, B]`` in node-id order (row 0, the padding node, is 0)."""
    schedule = plan.schedule
    batch = outs[0].shape[1]
    parts = [outs[0].new_zeros(1, batch), *outs]
    for layer, index in schedule.outers:
        step = schedule.layers[layer - 1][index]
        src = _source(outs, step.sources)
        left, right = _gather(src, step.children), _gather(src, step.right)
        parts.append((left.unsqueeze(2) + right.unsqueeze(1)).flatten(0, 2))
    return torch.cat(parts).index_select(0, schedule.node_index)


# --- execution --------------------------------------------------------------------------------
class _Pass:
    """Per-pass state: each step's log-weights and weights (its piece of ``logp_ext``, or
    gathered by slot), and the shared-shift steps' smallest sums with their limits."""

    def __init__(self, logp_ext: torch.Tensor, cuts: tuple, exact: bool,
                 exps: KeptWeights | None, twice: bool):
        self.logp_ext, self.cuts, self.exps, self.exact, self.twice = logp_ext, cuts, exps, exact, twice
        self._pieces = self._exp = None
        self.mins: list = []
        self.limits: list = []

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
        """Keep ``s``'s minimum for :func:`run`'s check; ``out [G, M, B]`` -> ``[G * M, B]``."""
        if s.numel() and (self.exps is None or step.piece not in self.exps.safe):
            self.mins.append(s.detach().amin() if s.requires_grad else s.amin())
            self.limits.append(_limit(step, s.dtype))
        return out.flatten(0, 1)


def _limits(schedule: Schedule, values: list, like: torch.Tensor) -> torch.Tensor:
    """The limits ``values`` as a tensor like ``like`` (kept on the schedule)."""
    kept = schedule.__dict__.setdefault("_limit_tensors", {})
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
    if step.children.shape[1] == 2:
        return src.index_select(0, step.children[:, 0]) + src.index_select(0, step.children[:, 1])
    return _gather(src, step.children).sum(1)


def _sum(step: Step, src: torch.Tensor, weights: _Pass) -> torch.Tensor:
    logw = weights.log(step).permute(1, 2, 0)                        # [M, A, B']
    x = _gather(src, step.children) + logw
    return logsumexp(x, 1)


def _has_finite(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Whether some entry along ``dim`` (kept) is above ``-inf``."""
    return (x.detach() > float("-inf")).any(dim, keepdim=True)


def _log(s: torch.Tensor) -> torch.Tensor:
    return log_nonneg(s) if s.requires_grad else torch.log(s)


def _dense(step: Step, src: torch.Tensor, weights: _Pass) -> torch.Tensor:
    ch = _gather(src, step.children)                                 # [G, K, B]
    m = max_shift(ch, 1)
    w, e = weights.exp(step), torch.exp(ch - m)
    s = matmul(w, e)                                                # [G, M, B]
    out = _log(s) + m
    if not weights.exact:
        return weights.record(step, out, s)
    return _guard(step, out, s, lambda: _has_finite(ch, 1),
                  lambda cols: ch.index_select(2, cols), weights)


def _outer(step: Step, src: torch.Tensor, weights: _Pass) -> torch.Tensor:
    width = step.children.shape[1]
    both = _paired(step, src)                                        # [G, A + A2, B]
    if (step.piece is not None and torch.is_grad_enabled() and weights.logp_ext.shape[0] == 1
            and (weights.logp_ext.requires_grad or both.requires_grad) and not weights.twice):
        out, s = OuterMatmul.apply(weights.log(step), both, width)
    else:
        w = weights.exp(step)
        out, s, _ = outer_values(w, both, width)
    if not weights.exact:
        return weights.record(step, out, s)

    def children(cols):
        picked = both.index_select(2, cols)
        return (picked[:, :width].unsqueeze(2) + picked[:, width:].unsqueeze(1)).flatten(1, 2)
    return _guard(step, out, s, lambda: _has_finite(both[:, :width], 1) & _has_finite(both[:, width:], 1),
                  children, weights)


def _pair(step: Step) -> torch.Tensor:
    """An outer step's child lists side by side ``[G, A + A2]``, kept on the step with
    ``step._pair_in_order`` (whether they are the source's rows ``0, 1, ...``)."""
    pair = getattr(step, "_pair", None)
    if pair is None:
        with kept_structure():
            pair = torch.cat([step.children, step.right], 1)
            step._pair_in_order = torch.equal(pair.reshape(-1), torch.arange(pair.numel()).to(pair))
            step._pair = pair
    return pair


def _paired(step: Step, src: torch.Tensor) -> torch.Tensor:
    """An outer step's children's values ``[G, A + A2, B]`` from ``src [n, B]`` (a view
    where they are its first rows in order)."""
    pair = _pair(step)
    if step._pair_in_order:
        return src[:pair.numel()].reshape(*pair.shape, src.shape[1])
    return _gather(src, pair)


def _guard(step: Step, out, s, finite, children, weights: _Pass) -> torch.Tensor:
    """Recompute exactly the batch columns where the shared shift lost precision (``out``,
    ``s`` ``[G, M, B]``; ``finite()`` ``[G, 1, B]``: some child above ``-inf``)."""
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


def _max_sum(step: Step, src: torch.Tensor, weights: _Pass) -> torch.Tensor:
    logw = weights.log(step).permute(1, 2, 0)                        # [M, A, B']
    return (_gather(src, step.children) + logw).max(1).values


def _max_block(logw: torch.Tensor, children: torch.Tensor) -> torch.Tensor:
    """``max_k logw[., g, m, k] + children[g, k, .]``: log-weights ``[B', G, M, K]``,
    children ``[G, K, B]`` -> ``[G * M, B]``."""
    x = logw.permute(1, 2, 3, 0) + children.unsqueeze(1)             # [G, M, K, B]
    return x.max(2).values.flatten(0, 1)


def _max_dense(step: Step, src: torch.Tensor, weights: _Pass) -> torch.Tensor:
    return _max_block(weights.log(step), _gather(src, step.children))


def _max_outer(step: Step, src: torch.Tensor, weights: _Pass) -> torch.Tensor:
    width = step.children.shape[1]
    both = _paired(step, src)                                        # [G, A + A2, B]
    children = (both[:, :width].unsqueeze(2) + both[:, width:].unsqueeze(1)).flatten(1, 2)
    return _max_block(weights.log(step), children)


LOG_SUM_EXP = {"product": _product, "sum": _sum, "dense": _dense, "outer": _outer}
"""Each sum is the log-sum-exp of its weighted children."""

MAX_PRODUCT = {"product": _product, "sum": _max_sum, "dense": _max_dense, "outer": _max_outer}
"""Each sum is the largest of its weighted children (``max``: its gradient goes to one
child, so the root's gradient w.r.t. the leaves marks one most probable induced tree)."""
