"""Normalising flat logits into log-parameters, one log-softmax per parameter group.

A parameter group is the support states of one leaf or the children of one sum (see
:mod:`circuits.compile`). Normalisation subtracts each group's maximum *before* summing,
so the result is exact for logits of any magnitude: ``logits - logsumexp(logits)`` done
naively loses everything once ``|logits|`` exceeds ``1 / eps`` (``1e8`` in float32 rounds
``1e8 + log 3`` back to ``1e8``).
"""

from __future__ import annotations

import torch

from circuits.compile import Plan

__all__ = ["normalise"]

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
