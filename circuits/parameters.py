"""Normalising flat logits into log-parameters, one log-softmax per parameter group.

A parameter group is the support states of one leaf or the children of one sum (see
:mod:`circuits.compile`). Normalisation subtracts each group's maximum *before* summing,
so the result is exact for logits of any magnitude: ``logits - logsumexp(logits)`` done
naively loses everything once ``|logits|`` exceeds ``1 / eps`` (``1e8`` in float32 rounds
``1e8 + log 3`` back to ``1e8``).

:func:`normalise_extended` is the same for one pass without autograd (the hand-written
reverse of :mod:`circuits.reverse`): it writes the extended log-parameters and their
exponentials into two rows of one buffer, and :func:`normalise_backward` works in place.
"""

from __future__ import annotations

import math

import torch

from circuits.compile import Plan
from circuits.program import kept_structure

__all__ = ["normalise", "normalise_extended", "normalise_backward"]

NARROW = 16   # groups narrower than this are normalised along the transposed run


def normalise(plan: Plan, params: torch.Tensor, name: str = "params") -> torch.Tensor:
    """Log-softmax of ``params [B, P]`` within each leaf's and each sum's parameter group.

    Each run of equal-size groups (``plan.param_runs``) is one dense log-softmax, each mixed
    stretch one scatter-based log-softmax. Raises ValueError naming ``name`` when every logit
    of some group is ``-inf`` (that leaf or sum would have zero total mass).
    """
    if plan.num_params == 0:
        return params
    runs = plan.param_runs
    segments = torch.split(params, [stop - start for start, stop, *_ in runs], 1)  # one backward cat
    parts = []
    for (start, stop, size, first_group, stop_group), segment in zip(runs, segments):
        if size >= NARROW:
            parts.append(torch.log_softmax(segment.reshape(-1, size), -1).view(segment.shape))
        elif size:                                   # transposed: CPU kernels are slow on short rows
            rows = segment.reshape(-1, size).T
            parts.append(torch.log_softmax(rows, 0).T.reshape(segment.shape))
        else:
            group = plan.param_group[start:stop].to(params.device) - first_group
            parts.append(_scatter_log_softmax(segment, group, stop_group - first_group))
    out = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    if bool(out.detach().sum().isnan()):            # an all -inf group (or NaN logits)
        _check_mass(plan, params, name)
    return out


def normalise_extended(plan: Plan, logits: torch.Tensor, name: str = "logits",
                       weights_only: frozenset = frozenset()
                       ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """:func:`normalise` of ``logits [P]`` extended by the two constant slots (log 0, log 1;
    :func:`circuits.passes.extend`), ``[1, P + 2]``, its exponentials ``[1, P + 2]``, the
    weights, and the smallest of the ``P`` weights (NaN where a logit is NaN; ``inf`` for
    no parameters), for a pass without autograd: two rows of one buffer, into which each
    run writes straight (no concatenations); a run of wide groups takes its weights from a
    softmax, whose exponential is cheaper on CPU than ``torch.exp`` (the two agree to a few
    ulps). ``weights_only``: indices of ``plan.param_runs`` whose log-parameters the caller
    never reads; a dense run among them gets its weights alone (no log-softmax) and its
    columns of the first row are left **unwritten**. Raises as :func:`normalise`;
    the smallest weight is that check's reduction (a NaN minimum: an all ``-inf`` group,
    whose weights are all NaN)."""
    num = plan.num_params
    both = logits.new_empty(2, num + 2)
    both[:, num:] = _ends(logits)
    sizes = [stop - start for start, stop, *_ in plan.param_runs]
    for i, ((start, stop, size, first_group, stop_group), segment, out, exps) in enumerate(zip(
            plan.param_runs, logits.split(sizes), both[0, :num].split(sizes),
            both[1, :num].split(sizes))):
        if size >= NARROW:
            rows = segment.view(-1, size)
            if i not in weights_only:
                torch.log_softmax(rows, -1, out=out.view(-1, size))
            torch.softmax(rows, -1, out=exps.view(-1, size))
            continue
        if size and i in weights_only:
            exps.view(-1, size).T.copy_(torch.softmax(segment.view(-1, size).T, 0))
            continue
        if size:                                     # transposed, as in `normalise`
            out.view(-1, size).T.copy_(torch.log_softmax(segment.view(-1, size).T, 0))
        else:
            group = plan.param_group[start:stop].to(logits.device) - first_group
            out.copy_(_scatter_log_softmax(segment.unsqueeze(0), group, stop_group - first_group)[0])
        torch.exp(out, out=exps)
    smallest = float(both[1, :num].amin()) if num else math.inf
    if math.isnan(smallest):                        # an all -inf group (or NaN logits)
        _check_mass(plan, logits.unsqueeze(0), name)
    return both[:1], both[1:], smallest


_ENDS: dict = {}


def _ends(like: torch.Tensor) -> torch.Tensor:
    """The extension's two slots in :func:`normalise_extended`'s buffer ``[2, 2]``: log 0
    and log 1, then their exponentials (kept per dtype and device)."""
    ends = _ENDS.get((like.dtype, like.device))
    if ends is None:
        with kept_structure():
            ends = _ENDS[like.dtype, like.device] = torch.tensor(
                [[float("-inf"), 0.0], [0.0, 1.0]], dtype=like.dtype, device=like.device)
    return ends


def normalise_backward(plan: Plan, grad: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The gradient of the logits ``[1, P]`` from that of :func:`normalise`'s result, ``grad
    [1, P']``, and the result's exponentials ``weights [1, P']`` (``P' >= P``: columns past
    ``P``, such as the extension's, are ignored): ``grad - weights * sum(grad)`` over each
    group, run by run, written into ``grad``'s first ``P`` columns, which are returned (for
    the hand-written reverse of :mod:`circuits.reverse`, which has the weights from its
    forward)."""
    num = plan.num_params
    sizes = [stop - start for start, stop, *_ in plan.param_runs]
    for (start, stop, size, first_group, stop_group), g, w in zip(
            plan.param_runs, grad[0, :num].split(sizes), weights[0, :num].split(sizes)):
        if size:
            rows = g.view(-1, size)
            rows.addcmul_(w.view(-1, size), rows.sum(-1, keepdim=True), value=-1)
        else:
            group = plan.param_group[start:stop].to(grad.device) - first_group
            total = g.new_zeros(stop_group - first_group).index_add_(0, group, g)
            g.addcmul_(w, total.index_select(0, group), value=-1)
    return grad[:, :num]


def _group_max(params: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Per-group maximum ``[B, num_groups]`` of ``params [B, P]`` (detached)."""
    top = params.new_full((params.shape[0], num_groups), float("-inf"))
    return top.scatter_reduce(1, group.expand(params.shape[0], -1), params.detach(), "amax",
                              include_self=True)


def _scatter_log_softmax(params: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Log-softmax of ``params [B, P']`` within the groups ``group [P']`` (ids ``0..num_groups-1``)."""
    index = group.expand(params.shape[0], -1)
    shifted = params - _group_max(params, group, num_groups).gather(1, index)
    total = shifted.new_zeros(params.shape[0], num_groups).scatter_add(1, index, torch.exp(shifted))
    return shifted - torch.log(total).gather(1, index)


def _check_mass(plan: Plan, params: torch.Tensor, name: str) -> None:
    """Raise where some group of ``params [B, P]`` is all ``-inf`` (a NaN logit alone passes)."""
    top = _group_max(params, plan.param_group.to(params.device), plan.num_param_groups)
    if bool(torch.isneginf(top).any()):
        _raise_zero_mass(plan, top, name)


def _raise_zero_mass(plan: Plan, top: torch.Tensor, name: str) -> None:
    row, g = torch.nonzero(torch.isneginf(top))[0].tolist()
    members = torch.nonzero(plan.param_group.cpu() == g).flatten().tolist()
    first = members[0]
    if int(plan.param_leaf[first]) >= 0:
        var = int(plan.leaf_var[plan.param_leaf[first]])
        owner = f"the support states of a leaf over variable {var}"
    else:
        owner = f"the children of sum node {int(plan.param_node[first])}"
    where = f"row {row}, " if top.shape[0] > 1 else ""
    raise ValueError(f"{name}: every logit of a parameter group is -inf ({where}entries "
                     f"{members}: {owner}), so it has zero total mass; at least one logit "
                     f"per group must be finite")
