"""Layer-by-layer execution of a compiled :class:`~circuits.compile.Plan`.

Every pass loops over layers and groups (never over nodes) and keeps node values in one
``[batch, num_nodes]`` buffer written slice by slice. Parameters arrive as ``logp``: the
normalised flat log-parameters ``[B', num_params]`` with ``B'`` either 1 (shared) or the
batch size; :func:`extend` appends the two constant slots (log 0, log 1).

All log-space reductions are "safe": a reduction over only ``-inf`` gives ``-inf`` with a
zero (not NaN) gradient, so zero-probability branches never poison gradients.
"""

from __future__ import annotations

import torch

from circuits.compile import Group, Plan

__all__ = ["normalise", "extend", "leaf_log_probs", "log_values", "log_derivatives",
           "entropy", "max_product", "descend", "posterior", "safe_logsumexp",
           "scatter_logsumexp"]

NEG_INF = float("-inf")


def safe_log(x: torch.Tensor) -> torch.Tensor:
    positive = x > 0
    return torch.where(positive, torch.log(torch.where(positive, x, torch.ones_like(x))), NEG_INF)


def _shift(m: torch.Tensor) -> torch.Tensor:
    m = m.detach()
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def safe_logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    m = _shift(x.amax(dim, keepdim=True))
    return safe_log(torch.exp(x - m).sum(dim)) + m.squeeze(dim)


def scatter_logsumexp(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``out[b, j] = logsumexp(src[b, e] for e with index[e] == j)``; src ``[B, E]`` -> ``[B, size]``."""
    batch = src.shape[0]
    idx = index.expand(batch, -1)
    m = torch.full((batch, size), NEG_INF, dtype=src.dtype, device=src.device)
    m = _shift(m.scatter_reduce(1, idx, src.detach(), "amax", include_self=True))
    total = torch.zeros((batch, size), dtype=src.dtype, device=src.device)
    total = total.scatter_add(1, idx, torch.exp(src - m.gather(1, idx)))
    return safe_log(total) + m


def normalise(plan: Plan, params: torch.Tensor) -> torch.Tensor:
    """Log-softmax of ``params [B, P]`` within each leaf's and each sum's parameter group."""
    if plan.num_params == 0:
        return params
    group = plan.param_group.to(params.device)
    lse = scatter_logsumexp(params, group, plan.num_param_groups)
    return params - lse.index_select(1, group)


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


def _children(vals: torch.Tensor, group: Group) -> torch.Tensor:
    """Child values ``[B, M, A]`` from batch-major values ``vals [B, N]`` (dense blocks expanded)."""
    children = group.child_matrix()
    rows, width = children.shape
    return vals.index_select(1, children.reshape(-1)).view(vals.shape[0], rows, width)


def _group_values(group: Group, vals: torch.Tensor, logp_ext: torch.Tensor) -> torch.Tensor:
    """Log-values ``[M, B]`` of one group from node-major values ``vals [N, B]``."""
    batch = vals.shape[1]
    if group.kind == "product":
        if group.children.shape[1] > 4:
            rows, width = group.children.shape
            return vals.index_select(0, group.children.reshape(-1)).view(rows, width, batch).sum(1)
        columns = group.children.T                                   # few children: add rows
        out = vals.index_select(0, columns[0])
        for column in columns[1:]:
            out = out + vals.index_select(0, column)
        return out
    logw = logp_ext[:, group.weights].permute(1, 2, 0)               # [M, A, B']
    if group.kind == "sum":
        rows, width = group.children.shape
        ch = vals.index_select(0, group.children.reshape(-1)).view(rows, width, batch)
        return safe_logsumexp(ch + logw, 1)
    blocks, width = group.children.shape
    ch = vals.index_select(0, group.children.reshape(-1)).view(blocks, width, batch)
    m = _shift(ch.amax(1, keepdim=True))                             # [G, 1, B]
    e = torch.exp(ch - m)
    w = torch.exp(logw).view(blocks, -1, width, logw.shape[-1])      # [G, M, C, B']
    s = torch.bmm(w[..., 0], e) if w.shape[-1] == 1 else torch.einsum("gmcb,gcb->gmb", w, e)
    return (safe_log(s) + m).reshape(-1, batch)


def _leaf_values(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor | None, batch: int):
    """Leaf log-values ``[L, B]``."""
    if x is None:
        return logp_ext.new_zeros(plan.num_leaves, batch)
    # Column K of each leaf's row holds log 1: a missing value (-1) reads it.
    missing = torch.full((plan.num_leaves, 1), logp_ext.shape[1] - 1, dtype=torch.long,
                         device=x.device)
    slots = torch.cat([plan.leaf_slots, missing], 1).view(-1)
    theta = logp_ext.index_select(1, slots)                          # [B', L * (K + 1)]
    states = torch.where(x < 0, plan.max_states, x).T                # [V, B]
    flat = plan.leaf_offsets.unsqueeze(1) + states.index_select(0, plan.leaf_var)
    return theta[0].take(flat) if theta.shape[0] == 1 else theta.gather(1, flat.T).T


def log_values(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor | None, batch: int) -> torch.Tensor:
    """Log-value of every node ``[B, N]`` under evidence ``x [B, V]`` (-1 = marginalised).

    Computed node-major (``[N, B]``: every gather copies whole rows and dense blocks are
    matrix products with the batch as columns), returned as a transposed view.
    """
    vals = logp_ext.new_empty(plan.num_nodes, batch)
    vals[0] = 0.0
    vals[1:plan.num_leaves + 1] = _leaf_values(plan, logp_ext, x, batch)
    for layer in plan.layers:
        for group in layer:
            vals[group.start:group.stop] = _group_values(group, vals, logp_ext)
    return vals.T


def _edge_terms(plan: Plan, vals: torch.Tensor, logp_ext: torch.Tensor) -> torch.Tensor:
    """Per real edge, log of d(parent)/d(child) relative to the parent: ``[B, E]``.

    Sum edges: the log-weight. Product edges: the sum of the siblings' log-values, from
    exclusive prefix and suffix sums (no subtraction, so ``-inf`` siblings stay exact).
    """
    batch = vals.shape[0]
    terms = []
    for group in plan.groups():
        if group.kind == "product":
            ch = _children(vals, group)
            zero = ch.new_zeros(ch.shape[:-1] + (1,))
            prefix = torch.cat([zero, ch[..., :-1].cumsum(-1)], -1)
            suffix = torch.cat([ch[..., 1:].flip(-1).cumsum(-1).flip(-1), zero], -1)
            term = prefix + suffix
        else:
            term = logp_ext[:, group.weights].expand(batch, -1, -1)
        terms.append(term.reshape(batch, term.shape[1] * term.shape[2])[:, group.edge_mask.reshape(-1)])
    return torch.cat(terms, dim=1) if terms else vals.new_zeros(batch, 0)


def log_derivatives(plan: Plan, logp_ext: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """``G[b, n] = log dZ/dv_n`` for every node (``Z`` the root), one top-down pass: ``[B, N]``.

    For a leaf ``l`` of variable ``i``, ``exp(G_l)`` is the mass of the evidence with
    ``l``'s value replaced by 1; summing over variable ``i``'s leaves gives ``p(x_-i)``
    (leaves are normalised). Without evidence, ``exp(G_n)`` is the probability that node
    ``n`` is in the induced tree (its flow).
    """
    edges = plan.edges
    terms = _edge_terms(plan, vals, logp_ext)
    grads = torch.full_like(vals, NEG_INF)
    grads[:, plan.root] = 0.0
    for start, stop, edge_ids, local in reversed(edges.into_layer):
        contrib = grads.index_select(1, edges.parent[edge_ids]) + terms.index_select(1, edge_ids)
        grads[:, start:stop] = scatter_logsumexp(contrib, local, stop - start)
    return grads


def entropy(plan: Plan, logp_ext: torch.Tensor) -> torch.Tensor:
    """Exact entropy ``[B']`` of a deterministic circuit (the caller checks determinism)."""
    theta = leaf_log_probs(plan, logp_ext)
    finite = torch.isfinite(theta)
    safe = torch.where(finite, theta, torch.zeros_like(theta))
    leaf_h = -(torch.exp(safe) * safe * finite).sum(-1)
    h = logp_ext.new_zeros(logp_ext.shape[0], plan.num_nodes)
    h[:, 1:plan.num_leaves + 1] = leaf_h
    for group in plan.groups():
        ch = _children(h, group)
        if group.kind == "product":
            out = ch.sum(-1)
        else:
            logw = logp_ext[:, group.weights]
            fin = torch.isfinite(logw)
            logw_safe = torch.where(fin, logw, torch.zeros_like(logw))
            w = torch.exp(logw_safe) * fin
            out = (w * (ch - logw_safe)).sum(-1)
        h[:, group.start:group.stop] = out
    return h[:, plan.root]


def max_product(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor | None, batch: int):
    """Max-product upward pass. Returns the leaf table used ``[B, L, K]`` and, per sum group,
    the index of the maximising child ``[B, M]``."""
    theta = leaf_log_probs(plan, logp_ext, x).expand(batch, -1, -1)
    vals = logp_ext.new_zeros(batch, plan.num_nodes)
    vals[:, 1:plan.num_leaves + 1] = theta.amax(-1)
    choices = {}
    for index, group in enumerate(plan.groups()):
        ch = _children(vals, group)
        if group.kind == "product":
            out = ch.sum(-1)
        else:
            out, choices[index] = (ch + logp_ext[:, group.weights]).max(-1)
        vals[:, group.start:group.stop] = out
    return theta, choices


def descend(plan: Plan, batch: int, choose_child, leaf_states: torch.Tensor) -> torch.Tensor:
    """Follow one induced tree per batch row from the root down; return ``x [B, V]``.

    ``choose_child(index, group)`` gives the chosen child position ``[B, M]`` of each sum
    in group ``index``; ``leaf_states [B, L]`` the state each leaf emits if reached.
    """
    device = leaf_states.device
    hits = torch.zeros(batch, plan.num_nodes, dtype=torch.long, device=device)
    hits[:, plan.root] = 1
    groups = list(plan.groups())
    for index in reversed(range(len(groups))):
        group = groups[index]
        active = hits[:, group.start:group.stop].clone()            # [B, M]
        children = group.child_matrix()
        if group.kind == "product":
            src = active.unsqueeze(-1).expand(-1, -1, children.shape[1]).reshape(batch, children.numel())
            hits.scatter_add_(1, children.reshape(1, -1).expand(batch, -1), src)
        else:
            pick = choose_child(index, group)                        # [B, M]
            chosen = children.expand(batch, -1, -1).gather(2, pick.unsqueeze(-1)).squeeze(-1)
            hits.scatter_add_(1, chosen, active)
    reached = hits[:, 1:plan.num_leaves + 1] > 0
    x = torch.zeros(batch, plan.num_vars, dtype=torch.long, device=device)
    values = torch.where(reached, leaf_states, torch.zeros_like(leaf_states))
    return x.scatter_add_(1, plan.leaf_var.expand(batch, -1), values)


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
