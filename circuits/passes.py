"""Passes over a compiled :class:`~circuits.compile.Plan` that the queries share:
normalisation, leaf values, the entry points of :func:`circuits.upward.run`, posteriors.

``logp``: normalised log-parameters ``[B' (1 or batch), P]``, one log-softmax per parameter
group (a leaf's support states, a sum's children); :func:`extend` appends the constant
slots log 0 and log 1 (``logp_ext [B', P + 2]``).
"""

from __future__ import annotations

import torch

from circuits import upward as upward_steps
from circuits.compile import Plan
from circuits.kernels import NARROW, compiling
from circuits.schedule import KeptWeights

__all__ = ["extend", "leaf_log_probs", "log_values", "normalise", "posterior",
           "root_log_values"]

NEG_INF = float("-inf")
_CONSTS = torch.tensor([NEG_INF, 0.0])


def normalise(plan: Plan, params: torch.Tensor, name: str = "params",
              extended: bool = False) -> torch.Tensor:
    """Log-softmax of ``params [B, P]`` within each parameter group: one dense log-softmax
    per run of equal-size groups (``plan.param_runs``), a scatter-based one per mixed
    stretch; ``extended``: with the constant slots (:func:`extend`). ValueError naming
    ``name`` where a group is all ``-inf``."""
    if plan.num_params == 0:
        return extend(params) if extended else params
    runs = plan.param_runs
    segments = torch.split(params, [stop - start for start, stop, *_ in runs], 1)  # one backward cat
    parts = []
    for (start, stop, size, first_group, stop_group), segment in zip(runs, segments):
        if size >= NARROW:
            rows = segment.reshape(segment.shape[0], (stop - start) // size, size)
            parts.append(torch.log_softmax(rows, -1).view(segment.shape))
        elif size:                                   # short groups: over a middle axis
            rows = segment.reshape(segment.shape[0], (stop - start) // size, size).transpose(1, 2)
            parts.append(torch.log_softmax(rows, 1).transpose(1, 2).reshape(segment.shape))
        else:
            group = plan.param_group[start:stop].to(params.device) - first_group
            parts.append(_scatter_log_softmax(segment, group, stop_group - first_group))
    if extended:
        parts.append(_CONSTS.to(params).expand(params.shape[0], 2))
    out = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    if not compiling() and bool(out.detach().sum().isnan()):   # an all -inf group (or NaN)
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
    if not bool(torch.isneginf(top).any()):
        return
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


def extend(logp: torch.Tensor) -> torch.Tensor:
    """Append the constant slots: ``[B', P] -> [B', P + 2]`` (log 0, log 1)."""
    return torch.cat([logp, _CONSTS.to(logp).expand(logp.shape[0], 2)], dim=1)


def leaf_log_probs(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """Leaf log-probabilities ``[B', L, K]``; with evidence ``x [B, V]`` states other than the
    observed one are masked to -inf (``[B, L, K]``)."""
    theta = logp_ext[:, plan.leaf_slots]
    if x is None:
        return theta
    observed = x[:, plan.leaf_var]                                   # [B, L]
    states = torch.arange(plan.max_states, device=x.device)
    keep = (observed.unsqueeze(-1) < 0) | (observed.unsqueeze(-1) == states)
    return torch.where(keep, theta, NEG_INF)


def _leaf_values(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor | None, batch: int):
    """The leaf layer's log-values ``[n_0, B]``, rows in the schedule's leaf order."""
    schedule = plan.schedule
    if x is None:
        return logp_ext.new_zeros(schedule.row_leaf.numel(), batch)
    states = _states(plan, x)
    if schedule.leaf_table is not None and logp_ext.shape[0] == 1:
        table = logp_ext.reshape(-1).take(schedule.leaf_table)        # [V, Lv, K + 1]
        return _pick(table, states)
    slots, flat = _slots_and_columns(plan, states)
    theta = logp_ext.index_select(1, slots)                          # [B', L * (K + 1)]
    return theta.reshape(-1).take(flat) if theta.shape[0] == 1 else theta.gather(1, flat.T).T


def _states(plan: Plan, x: torch.Tensor) -> torch.Tensor:
    """``x [B, V]`` as ``[V, B]``, a missing value (-1) as state ``K``, which reads log 1."""
    return torch.where(x < 0, plan.max_states, x).T.contiguous()


def _pick(table: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Each variable's leaves' entries of ``table [V, Lv, K + 1]`` at ``states [V, B]``:
    ``[V * Lv, B]``, the leaf layer's rows."""
    picked = table.gather(2, states.unsqueeze(1).expand(-1, table.shape[1], -1))
    return picked.view(table.shape[0] * table.shape[1], states.shape[1])


def _slots_and_columns(plan: Plan, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(slots [L * (K + 1)], columns [n_0, B])``: each leaf's ``K + 1`` slots (column ``K``
    log 1, read by a missing value) and the one each leaf-layer value reads."""
    missing = torch.full((plan.num_leaves, 1), plan.num_params + 1, dtype=torch.long,
                         device=states.device)
    slots = torch.cat([plan.leaf_slots, missing], 1).view(-1)
    rows = plan.schedule.row_leaf
    columns = states.index_select(0, plan.leaf_var[rows]).add_(plan.leaf_offsets[rows].unsqueeze(1))
    return slots, columns


def root_log_values(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor | None, batch: int,
                    exps: KeptWeights | None = None) -> torch.Tensor:
    """The root's log-value ``[B]`` under evidence ``x [B, V]`` (-1 = marginalised);
    ``exps``: :func:`circuits.upward.weight_exps` of ``logp_ext``, if kept. With shared
    parameters the first layer is read from the leaf tables where the schedule allows
    (``plan.schedule.first``)."""
    fused = plan.schedule.first if x is not None and logp_ext.shape[0] == 1 else None
    if fused is None:
        leaves, first = _leaf_values(plan, logp_ext, x, batch), None
    else:
        leaves, first = None, fused.values(logp_ext, x, exps)
    return upward_steps.root(plan, upward_steps.run(plan, logp_ext, leaves, exps=exps,
                                                    first=first))


def log_values(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor | None, batch: int) -> torch.Tensor:
    """Log-value of every node ``[B, N]`` under evidence ``x [B, V]`` (a transposed view)."""
    leaves = _leaf_values(plan, logp_ext, x, batch)
    return upward_steps.node_values(plan, upward_steps.run(plan, logp_ext, leaves)).T


def posterior(plan: Plan, logp: torch.Tensor, vals: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Normalised log-parameters ``[B, P]`` of ``p(. | x)`` on the same structure: sum
    weights ``w_c v_c(x) / v_n(x)``, observed leaves point masses; unreachable nodes keep
    theirs."""
    batch = vals.shape[0]
    logp = logp.expand(batch, -1)
    out = logp
    is_edge = plan.param_node >= 0
    if bool(is_edge.any()):
        parent = vals.index_select(1, plan.param_node.clamp(min=0))
        child = vals.index_select(1, plan.param_child.clamp(min=0))
        reweighted = logp + child - torch.where(torch.isfinite(parent), parent, torch.zeros_like(parent))
        out = torch.where(is_edge & torch.isfinite(parent), reweighted, out)
    is_leaf = plan.param_leaf >= 0
    if bool(is_leaf.any()):
        leaf = plan.param_leaf.clamp(min=0)
        observed = x[:, plan.leaf_var[leaf]]                          # [B, P]
        at_obs = vals.index_select(1, 1 + leaf)
        point = torch.where(observed == plan.param_state, torch.zeros_like(logp), NEG_INF)
        restrict = is_leaf & (observed >= 0) & torch.isfinite(at_obs)
        out = torch.where(restrict, point, out)
    return out
