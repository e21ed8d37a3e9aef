"""Passes over a compiled :class:`~circuits.compile.Plan` that the queries share.

- the upward pass (:func:`upward`, :func:`root_log_values`, :func:`log_values`): layer by
  layer on per-layer tensors (:mod:`circuits.upward`, program built by
  :mod:`circuits.program`), node values gathered into node-id order only when asked;
- :func:`posterior` (the parameters of ``p(. | x)``), one pass over the parameters.

Parameters arrive as ``logp``: the normalised flat log-parameters ``[B', num_params]`` with
``B'`` either 1 (shared) or the batch size; :func:`extend` appends the two constant slots
(log 0, log 1). Top-down queries live in :mod:`circuits.downward` and :mod:`circuits.flows`.

All log-space reductions are "safe": a reduction over only ``-inf`` gives ``-inf`` with a
zero (not NaN) gradient, so zero-probability branches never poison gradients.
"""

from __future__ import annotations

import torch

from circuits import upward as upward_steps
from circuits.compile import Plan
from circuits.leaf_products import leaf_products

__all__ = ["extend", "leaf_log_probs", "leaf_values", "leaf_layer_slots", "upward", "upward_layers",
           "root_log_values", "log_values", "posterior"]

NEG_INF = float("-inf")


def extend(logp: torch.Tensor) -> torch.Tensor:
    """Append the constant slots: ``[B', P] -> [B', P + 2]`` (log 0, log 1)."""
    consts = torch.tensor([NEG_INF, 0.0], dtype=logp.dtype, device=logp.device)
    return torch.cat([logp, consts.expand(logp.shape[0], 2)], dim=1)


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
    """The leaf layer's log-values ``[n_0, B]``, rows in the program's leaf order
    (``plan.program.leaf_rows``; see :func:`circuits.program._leaf_layout`)."""
    program = plan.program
    if x is None:
        return logp_ext.new_zeros(program.row_leaf.numel(), batch)
    states = _states(plan, x)
    if program.leaf_table is not None and logp_ext.shape[0] == 1:
        table = logp_ext.reshape(-1).take(program.leaf_table)        # [V, Lv, K + 1]; a view, not
        # a select: its backward would zero-fill and copy the whole parameter vector
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
    """``(slots [L * (K + 1)], columns [n_0, B])``: each leaf's ``K + 1`` slots of ``logp_ext``
    (column ``K`` the log-1 slot that a missing value reads), and which of those each value
    of the leaf layer reads under ``states [V, B]``."""
    missing = torch.full((plan.num_leaves, 1), plan.num_params + 1, dtype=torch.long,
                         device=states.device)
    slots = torch.cat([plan.leaf_slots, missing], 1).view(-1)
    rows = plan.program.row_leaf
    columns = states.index_select(0, plan.leaf_var[rows]).add_(plan.leaf_offsets[rows].unsqueeze(1))
    return slots, columns


def leaf_layer_slots(plan: Plan, x: torch.Tensor) -> torch.Tensor:
    """The slot of ``logp_ext [1, P + 2]`` that each value of the leaf layer reads under
    ``x [B, V]`` (-1 reads log 1), ``[n_0, B]``, rows as :func:`_leaf_values`'s: the leaf
    layer is ``logp_ext.reshape(-1).take(slots)`` and its gradient an ``index_add``."""
    states = _states(plan, x)
    if plan.program.leaf_table is not None:
        return _pick(plan.program.leaf_table, states)
    slots, columns = _slots_and_columns(plan, states)
    return slots.take(columns)


def leaf_values(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor | None, batch: int) -> torch.Tensor:
    """Leaf log-values ``[B, L]`` under evidence ``x [B, V]`` (-1 = marginalised, None = all)."""
    return _leaf_values(plan, logp_ext, x, batch).index_select(0, plan.program.leaf_rows).T


def upward(plan: Plan, logp_ext: torch.Tensor, leaf_vals: torch.Tensor,
           all_nodes: bool = False) -> torch.Tensor:
    """The upward pass from given leaf log-values ``leaf_vals [B, L]`` (any values: autograd
    of the root w.r.t. them gives top-down quantities). Returns the root's log-values ``[B]``,
    or with ``all_nodes`` every node's ``[B, N]`` (column = node id; column 0 is 0)."""
    outs = upward_layers(plan, logp_ext, leaf_vals.T.index_select(0, plan.program.row_leaf))
    if all_nodes:
        return upward_steps.node_values(plan.program, outs).T
    return upward_steps.root(plan.program, outs)


def upward_layers(plan: Plan, logp_ext: torch.Tensor, leaf_vals: torch.Tensor) -> list:
    """Per-layer log-values (node-major): the leaf layer ``[n_0, B]`` (rows in the program's
    leaf order, :func:`_leaf_values`) -> list of ``[n_l, B]``."""
    return upward_steps.run(plan.program, logp_ext, leaf_vals)


def root_log_values(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor | None, batch: int,
                    exps: upward_steps.KeptWeights | None = None) -> torch.Tensor:
    """The root's log-value ``[B]`` under evidence ``x [B, V]`` (-1 = marginalised);
    ``exps``: :func:`circuits.upward.weight_exps` of ``logp_ext``, if kept by the caller.
    Where the first layer is products of leaves, it is read straight from the leaf tables
    (:mod:`circuits.leaf_products`)."""
    fused = leaf_products(plan.program) if x is not None and logp_ext.shape[0] == 1 else None
    if fused is None:
        outs = upward_steps.run(plan.program, logp_ext, _leaf_values(plan, logp_ext, x, batch),
                                exps=exps)
    else:
        outs = upward_steps.run(fused.program, logp_ext, None, exps=exps,
                                first=fused.values(logp_ext, x, exps))
        return upward_steps.root(fused.program, outs)
    return upward_steps.root(plan.program, outs)


def log_values(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor | None, batch: int) -> torch.Tensor:
    """Log-value of every node ``[B, N]`` under evidence ``x [B, V]`` (-1 = marginalised).

    Computed layer by layer (:mod:`circuits.upward`), node-major, and gathered into node-id
    order once at the end; returned as a transposed view.
    """
    outs = upward_layers(plan, logp_ext, _leaf_values(plan, logp_ext, x, batch))
    return upward_steps.node_values(plan.program, outs).T


def posterior(plan: Plan, logp: torch.Tensor, vals: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Normalised log-parameters ``[B, P]`` of p(. | x) as a circuit of the same structure.

    Sum weights become ``w_c v_c(x) / v_n(x)``; an observed leaf becomes a point mass on its
    observed state. Nodes the evidence makes unreachable keep their old parameters.
    """
    batch = vals.shape[0]
    logp = logp.expand(batch, -1)
    out = logp
    is_edge = plan.param_node >= 0
    if bool(is_edge.any()):
        parent = vals[:, plan.param_node.clamp(min=0)]
        child = vals[:, plan.param_child.clamp(min=0)]
        reweighted = logp + child - torch.where(torch.isfinite(parent), parent, torch.zeros_like(parent))
        out = torch.where(is_edge & torch.isfinite(parent), reweighted, out)
    is_leaf = plan.param_leaf >= 0
    if bool(is_leaf.any()):
        leaf = plan.param_leaf.clamp(min=0)
        observed = x[:, plan.leaf_var[leaf]]                          # [B, P]
        at_obs = vals[:, 1 + leaf]
        point = torch.where(observed == plan.param_state, torch.zeros_like(logp), NEG_INF)
        restrict = is_leaf & (observed >= 0) & torch.isfinite(at_obs)
        out = torch.where(restrict, point, out)
    return out
