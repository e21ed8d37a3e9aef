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


def normalise(plan: Plan, params: torch.Tensor, name: str = "params") -> torch.Tensor:
    """Log-softmax of ``params [B, P]`` within each leaf's and each sum's parameter group.

    Raises ValueError naming ``name`` when every logit of some group is ``-inf`` (that leaf or
    sum would have zero total mass).
    """
    if plan.num_params == 0:
        return params
    group = plan.param_group.to(params.device)
    batch = params.shape[0]
    index = group.expand(batch, -1)
    top = params.new_full((batch, plan.num_param_groups), float("-inf"))
    top = top.scatter_reduce(1, index, params.detach(), "amax", include_self=True)
    if bool(torch.isneginf(top).any()):
        _raise_zero_mass(plan, top, name)
    shifted = params - top.gather(1, index)                          # <= 0, one 0 per group
    total = shifted.new_zeros(batch, plan.num_param_groups).scatter_add(1, index, torch.exp(shifted))
    return shifted - torch.log(total).gather(1, index)


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
