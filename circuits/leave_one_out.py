"""``log p(x_i | x_-i)`` for every variable ``i``: two exact routes and the choice per row.

``Z`` is multilinear in the leaves of one variable, so summing ``x_i`` out replaces each
leaf ``l`` of ``i`` by 1 and ``p(x_-i) / p(x) = sum_l f_l / v_l``, ``f_l = d log Z / d log
v_l`` the leaf's flow: ``log p(x_i | x_-i) = -logsumexp_l (log f_l - log v_l)``.

- :func:`by_flows`: the flows as the gradient of one upward pass w.r.t. the leaf layer
  (with ``upward.run(twice=True)`` where the result needs a gradient).
- :func:`by_log_derivatives`: ``log dZ/dv`` in log space
  (:func:`circuits.downward.log_derivatives`), exact for any leaf value including 0.

Flows are linear-space, so a row takes the flows route only when every leaf log-value is at
least ``log(1e6 * L * tiny / eps)`` (the lost terms stay below ``1e-6`` eps relative) and
``log p(x)`` is finite; other rows take the log-derivatives route.
"""

from __future__ import annotations

import math

import torch

from circuits import downward, passes, upward
from circuits.compile import Plan

__all__ = ["leave_one_out"]


def leave_one_out(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log p(x_i | x_-i)`` ``[B, V]`` for complete ``x [B, V]`` under ``logp_ext [B' (1 or
    B), P + 2]``, each row by the route the module docstring gives it."""
    rows = x.shape[0]
    leaf = passes._leaf_values(plan, logp_ext, x, rows)                 # [n_0, B]
    fast = torch.nonzero(leaf.detach().amin(0) >= _floor(plan, leaf.dtype)).flatten()
    if fast.numel() == 0:
        return by_log_derivatives(plan, logp_ext, x)
    if fast.numel() == rows:
        out, finite = by_flows(plan, logp_ext, x, leaf)
        if bool(finite.all()):
            return out
    else:
        out, finite = by_flows(plan, _rows(logp_ext, fast), x.index_select(0, fast),
                               leaf.index_select(1, fast))
    done = fast[finite]                                  # rows the flows route answered
    slow = torch.ones(rows, dtype=torch.bool, device=x.device).index_fill_(0, done, False)
    slow = torch.nonzero(slow).flatten()
    merged = out.new_empty(rows, out.shape[1]).index_copy(0, done, out[finite])
    return merged.index_copy(0, slow, by_log_derivatives(plan, _rows(logp_ext, slow),
                                                         x.index_select(0, slow)))


def by_flows(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor, leaf: torch.Tensor):
    """The flows route from the leaf layer ``leaf [n_0, B]`` of ``x``: ``([B, V], log p(x)
    finite [B])``."""
    if torch.is_inference_mode_enabled():     # autograd records no inference tensor: copies
        with torch.inference_mode(False), torch.no_grad():
            return by_flows(plan, logp_ext.clone(), x, leaf.clone())
    need_graph = torch.is_grad_enabled() and (logp_ext.requires_grad or leaf.requires_grad)
    with torch.enable_grad():
        values = leaf if need_graph else leaf.detach().requires_grad_()
        outs = upward.run(plan, logp_ext, values, twice=need_graph)
        log_z = upward.root(plan, outs)                         # [B]
        flows, = torch.autograd.grad(log_z.sum(), values, create_graph=need_graph)
    if not need_graph:
        flows, values, log_z = flows.detach(), values.detach(), log_z.detach()
    # 1 / v_l: with shared parameters read from the inverse parameters' leaf layer
    if logp_ext.shape[0] == 1:
        inverse = passes._leaf_values(plan, torch.exp(-logp_ext), x, x.shape[0])
        if not need_graph:
            inverse = inverse.detach()
    else:
        inverse = torch.exp(-values)
    ratio = flows * inverse                                               # [n_0, B]
    schedule = plan.schedule
    if schedule.leaf_table is not None:           # the leaf layer is [V, Lv] (padding: flow 0)
        total = ratio.view(plan.num_vars, -1, ratio.shape[1]).sum(1)
    else:                                        # row l is leaf l
        total = ratio.new_zeros(plan.num_vars, ratio.shape[1]).index_add_(
            0, plan.leaf_var.index_select(0, schedule.row_leaf), ratio)
    return (-torch.log(total)).T.clamp(max=0.0), torch.isfinite(log_z.detach())


def by_log_derivatives(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The log-derivatives route: one upward pass and one top-down pass ``[B, V]``."""
    vals = passes.log_values(plan, logp_ext, x, x.shape[0]).T             # node-major [N, B]
    grads = downward.log_derivatives(plan, logp_ext, vals)
    rest = downward.per_variable_logsumexp(plan, grads[1:plan.num_leaves + 1]).T   # [B, V]
    log_z = vals[plan.root].unsqueeze(1).expand_as(rest)
    # p(x_-i) = 0: -inf (x has probability zero); the log is at most 0
    return torch.where(torch.isneginf(rest), torch.full_like(rest, float("-inf")),
                       (log_z - rest).clamp(max=0.0))


def _floor(plan: Plan, dtype: torch.dtype) -> float:
    """The smallest leaf log-value the flows route accepts."""
    info = torch.finfo(dtype)
    return math.log(1e6 * max(plan.num_leaves, 1) * info.tiny / info.eps)


def _rows(logp_ext: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of per-row parameters (shared ones ``[1, P + 2]`` stay as they are)."""
    return logp_ext if logp_ext.shape[0] == 1 else logp_ext.index_select(0, index)
