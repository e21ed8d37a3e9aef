"""``log p(x_i | x_-i)`` for every variable ``i``: two exact routes and the choice per row.

For a smooth, decomposable circuit the value ``Z`` is multilinear in the leaves of one
variable (every induced tree holds exactly one of them), so summing ``x_i`` out replaces
each leaf ``l`` of ``i`` by its total mass 1 and
``p(x_-i) / p(x) = sum_l (dZ/dv_l) / Z = sum_l f_l / v_l``, with ``f_l = d log Z / d log v_l``
the leaf's flow (the probability that it is in the induced tree of ``x``). Hence

    log p(x_i | x_-i) = -logsumexp_l (log f_l - log v_l).

- **By flows** (:func:`by_flows`): one upward pass with the leaf layer as an autograd input,
  its gradient (the flows, ``[L, B]``), and one weighted sum per variable: about one
  ``log_prob`` with its backward. Where the result needs a gradient, the upward pass runs
  with steps whose backward can itself be differentiated (``upward.run(twice=True)``), so
  the gradient to the parameters is exact second-order autograd.
- **By the products' flows** (:func:`by_product_flows`): with shared parameters and a
  fused first layer of leaf products (:func:`circuits.program.leaf_products`), the same
  sum taken over the first-layer products: each has one child leaf per variable of its scope, so
  ``sum_l f_l / v_l = sum_{p: i in scope(p)} g_p / v_c(p, i)`` with ``g_p`` the products'
  flows. No leaf layer is made. Taken when every leaf log-value is above the floor below.
- **By log-derivatives** (:func:`circuits.downward.log_derivatives`): ``log dZ/dv`` of every
  node pulled top-down in log space, exact for any leaf value including 0 (indicators).

Flows are computed in linear space, so one that falls below the dtype's smallest normal
number may be lost; the term it feeds, ``f_l / v_l``, can then matter only if ``v_l`` is
tiny too. The sum is at least 1 (``p(x_i | x_-i) <= 1``), so a row takes the flows route
when every leaf log-value is at least ``log(1e6 * L * tiny / eps)`` (``L`` leaves: the
lost terms together stay below ``1e-6`` eps relative) and its ``log p(x)`` is finite; every
other row (a zero-valued leaf, as every indicator circuit has, or a zero-probability
``x``) takes the log-derivatives route.
"""

from __future__ import annotations

import math

import torch

from circuits import downward, passes, upward
from circuits.compile import Plan
from circuits.program import LeafProducts, leaf_products

__all__ = ["leave_one_out"]


def leave_one_out(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log p(x_i | x_-i)`` ``[B, V]`` for complete assignments ``x [B, V]`` under the
    extended log-parameters ``logp_ext [B' (1 or B), P + 2]``; each row by flows where that
    is exact to the dtype, else by log-derivatives (see the module docstring)."""
    fused = leaf_products(plan.program) if logp_ext.shape[0] == 1 else None
    if fused is not None and bool(logp_ext.detach().reshape(-1).take(fused.slots).amin()
                                  >= _floor(plan, logp_ext.dtype)):
        out, finite = by_product_flows(plan, fused, logp_ext, x)
        if bool(finite.all()):
            return out
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
    """The flows route for rows whose leaf log-values ``leaf [n_0, B]`` (the upward pass's
    leaf layer for ``x``) are all above the floor: ``([B, V], log p(x) finite [B])``."""
    if torch.is_inference_mode_enabled():     # autograd records no inference tensor: copies
        with torch.inference_mode(False), torch.no_grad():
            return by_flows(plan, logp_ext.clone(), x, leaf.clone())
    need_graph = torch.is_grad_enabled() and (logp_ext.requires_grad or leaf.requires_grad)
    with torch.enable_grad():
        values = leaf if need_graph else leaf.detach().requires_grad_()
        outs = upward.run(plan.program, logp_ext, values, twice=need_graph)
        log_z = upward.root(plan.program, outs)                         # [B]
        flows, = torch.autograd.grad(log_z.sum(), values, create_graph=need_graph)
    if not need_graph:          # no graph to the caller's tensors: none to hand back either
        flows, values, log_z = flows.detach(), values.detach(), log_z.detach()
    # p(x_-i) / p(x) = sum of f_l / v_l over i's leaves: at least 1, and every 1 / v_l is
    # at most exp(-floor) (1e22 in float32), so the sum is taken in linear space. With
    # shared parameters 1 / v_l is read from the table of inverse parameters (the same
    # numbers as exp(-values): one gather where exp(-values) is two passes over [n_0, B]
    # and two more in the backward).
    if logp_ext.shape[0] == 1:
        inverse = passes._leaf_values(plan, torch.exp(-logp_ext), x, x.shape[0])
        if not need_graph:
            inverse = inverse.detach()
    else:
        inverse = torch.exp(-values)
    ratio = flows * inverse                                               # [n_0, B]
    program = plan.program
    if program.leaf_table is not None:           # the leaf layer is [V, Lv] (padding: flow 0)
        total = ratio.view(plan.num_vars, -1, ratio.shape[1]).sum(1)
    else:                                        # row l is leaf l
        total = ratio.new_zeros(plan.num_vars, ratio.shape[1]).index_add_(
            0, plan.leaf_var.index_select(0, program.row_leaf), ratio)
    return (-torch.log(total)).T.clamp(max=0.0), torch.isfinite(log_z.detach())


def by_product_flows(plan: Plan, fused: LeafProducts, logp_ext: torch.Tensor,
                     x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The flows route on the fused first layer (shared parameters whose every leaf
    log-value is above the floor): ``([B, V], log p(x) finite [B])``.

    Every leaf feeds first-layer products only, and each product ``p`` has exactly one
    child ``c(p, i)`` on each variable ``i`` of its scope, so with ``g_p = d log Z / d log p``
    (the products' flows) ``sum_l f_l / v_l = sum_{p: i in scope(p)} g_p / v_c(p, i)``: the
    products' flows times the inverse leaf values their lookup reads, summed per variable.
    No leaf layer ``[L, B]`` is made.
    """
    if torch.is_inference_mode_enabled():     # autograd records no inference tensor: copies
        with torch.inference_mode(False), torch.no_grad():
            return by_product_flows(plan, fused, logp_ext.clone(), x.clone())
    need_graph = torch.is_grad_enabled() and logp_ext.requires_grad
    with torch.enable_grad():
        grouped = fused.grouped(logp_ext, x)                                 # [U * I, B]
        if not need_graph:
            grouped = grouped.detach().requires_grad_()
        outs = upward.run(fused.program, logp_ext, None, first=fused.in_order(grouped),
                          twice=need_graph)
        log_z = upward.root(fused.program, outs)                             # [B]
        flows, = torch.autograd.grad(log_z.sum(), grouped, create_graph=need_graph)
    if not need_graph:
        flows, log_z = flows.detach(), log_z.detach()
    u, w, _, i = fused.slots.shape
    batch = x.shape[0]
    # sum_i g_p / v_c(p, i) per tuple position: the inverse leaf values are finite here
    # (every leaf log-value is above the floor)
    per_position = fused.weighted_children(torch.exp(-logp_ext), x, flows.view(u, i, batch))
    total = per_position.new_zeros(plan.num_vars, batch).index_add(
        0, fused.variables, per_position.reshape(u * w, batch))
    return (-torch.log(total)).T.clamp(max=0.0), torch.isfinite(log_z)


def by_log_derivatives(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The log-derivatives route: one upward pass and one top-down pass ``[B, V]``."""
    vals = passes.log_values(plan, logp_ext, x, x.shape[0]).T             # node-major [N, B]
    grads = downward.log_derivatives(plan, logp_ext, vals)
    rest = downward.per_variable_logsumexp(plan, grads[1:plan.num_leaves + 1]).T   # [B, V]
    log_z = vals[plan.root].unsqueeze(1).expand_as(rest)
    # p(x_-i) = 0 leaves p(x_i | x_-i) undefined; x itself then has probability zero: -inf.
    # p(x_i | x_-i) <= 1; rounding (float32) must not push its log above 0.
    return torch.where(torch.isneginf(rest), torch.full_like(rest, float("-inf")),
                       (log_z - rest).clamp(max=0.0))


def _floor(plan: Plan, dtype: torch.dtype) -> float:
    """The smallest leaf log-value the flows route accepts (module docstring)."""
    info = torch.finfo(dtype)
    return math.log(1e6 * max(plan.num_leaves, 1) * info.tiny / info.eps)


def _rows(logp_ext: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of per-row parameters (shared ones ``[1, P + 2]`` stay as they are)."""
    return logp_ext if logp_ext.shape[0] == 1 else logp_ext.index_select(0, index)
