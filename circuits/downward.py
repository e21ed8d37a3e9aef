"""Top-down queries over a compiled :class:`~circuits.compile.Plan`.

- :func:`flows`: node flows ``[B', N]``, the probability that each node is in the induced
  tree (no evidence, no upward pass: a normalised circuit's nodes all have value 1); each
  layer accumulates into its own tensor. :func:`entropy`, :func:`leaf_marginals` and
  :mod:`circuits.tables` read them.
- :func:`log_derivatives`: ``log dZ/dv`` of every node under evidence, pulled layer by
  layer (nodes bucketed by in-degree, one log-sum-exp per bucket).
- :func:`mode`: one most probable induced tree per row, from the gradient of the
  max-product pass w.r.t. the leaves.
- :func:`sample`: one induced tree per row from the root, one uniform per sum and leaf,
  in chunks of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuits import passes, upward
from circuits.compile import Group, Plan
from circuits.kernels import logsumexp, zero_log_zero
from circuits.schedule import kept

__all__ = ["entropy", "flows", "leaf_marginals", "log_derivatives", "mode",
           "per_variable_logsumexp", "sample"]

CHUNK_ELEMENTS = 1 << 24   # bound on rows * (nodes + widest group) per sampling chunk


# --- node flows -------------------------------------------------------------------------
@dataclass
class _Target:
    """The edges at ``positions`` of a group's flat child matrix (None: all) enter layer
    ``layer`` at local node indices ``local``."""

    layer: int
    positions: torch.Tensor | None
    local: torch.Tensor


@dataclass
class _FlowPlan:
    starts: list          # per layer (0 = leaves), its first node id
    sizes: list           # per layer, its number of nodes
    groups: list          # per layer (1..): [(group, [targets])], in plan order
    root_layer: int
    root_local: int


def _flow_plan(plan: Plan) -> _FlowPlan:
    return kept(plan.__dict__, "_flow_plan", lambda: _build_flow_plan(plan))


def _build_flow_plan(plan: Plan) -> _FlowPlan:
    starts = [1] + [layer[0].start for layer in plan.layers]
    sizes = [plan.num_leaves] + [layer[-1].stop - layer[0].start for layer in plan.layers]
    layer_of = plan.layer_of.to(plan.leaf_var.device)
    first = torch.tensor(starts, device=layer_of.device)
    groups = []
    for layer in plan.layers:
        items = []
        for group in layer:
            children = group.children.reshape(-1)
            real = None if bool(group.edge_mask.all()) else torch.nonzero(group.edge_mask.reshape(-1)).flatten()
            ids = children if real is None else children[real]
            targets = []
            child_layers = layer_of[ids]
            distinct = torch.unique(child_layers).tolist()
            for target in distinct:
                if len(distinct) == 1:
                    positions = real
                    local = ids - starts[target]
                else:
                    where = torch.nonzero(child_layers == target).flatten()
                    positions = where if real is None else real[where]
                    local = ids[where] - first[target]
                targets.append(_Target(target, positions, local))
            items.append((group, targets))
        groups.append(items)
    root_layer = int(plan.layer_of[plan.root])
    return _FlowPlan(starts, sizes, groups, root_layer, plan.root - starts[root_layer])


def flows(plan: Plan, logp_ext: torch.Tensor) -> torch.Tensor:
    """Flows ``[B', N]`` of normalised log-parameters ``logp_ext [B', P + 2]``. Differentiable."""
    rows = logp_ext.shape[0]
    fp = _flow_plan(plan)
    acc: list = [None] * len(fp.sizes)
    root = logp_ext.new_zeros(rows, fp.sizes[fp.root_layer])
    root[:, fp.root_local] = 1.0
    acc[fp.root_layer] = root
    for index in range(len(fp.groups), 0, -1):
        layer = acc[index]
        if layer is None:                        # nothing above reaches this layer
            layer = acc[index] = logp_ext.new_zeros(rows, fp.sizes[index])
        for group, targets in fp.groups[index - 1]:
            start = group.start - fp.starts[index]
            parent = layer[:, start:start + group.stop - group.start]           # [B', M]
            if group.kind == "product":
                contrib = parent.unsqueeze(-1).expand(-1, -1, group.children.shape[1])
            elif group.kind == "sum":
                contrib = parent.unsqueeze(-1) * torch.exp(logp_ext[:, group.weights])
            else:                                                               # dense: [G, C]
                blocks, width = group.children.shape
                sums = (group.stop - group.start) // blocks
                w = torch.exp(logp_ext[:, group.weights]).view(rows, blocks, sums, width)
                contrib = torch.einsum("bgm,bgmc->bgc", parent.reshape(rows, blocks, sums), w)
            contrib = contrib.flatten(1)
            for target in targets:
                src = contrib if target.positions is None else contrib.index_select(1, target.positions)
                below = acc[target.layer]
                if below is None:
                    below = logp_ext.new_zeros(rows, fp.sizes[target.layer])
                acc[target.layer] = below.index_add(1, target.local, src)
    if acc[0] is None:
        acc[0] = logp_ext.new_zeros(rows, fp.sizes[0])
    return torch.cat([logp_ext.new_zeros(rows, 1)] + acc, 1)


def entropy(plan: Plan, logp_ext: torch.Tensor, node_flows: torch.Tensor) -> torch.Tensor:
    """Exact entropy ``[B']`` of a deterministic circuit (the caller checks): ``-sum`` over
    the parameters of the owner's flow times ``w log w``; zero weights add 0."""
    logp = logp_ext[:, :plan.num_params]
    plogp = torch.exp(logp) * zero_log_zero(logp)                      # [B', P]: w log w
    owner = torch.where(plan.param_node >= 0, plan.param_node, plan.param_leaf + 1)
    return -(plogp * node_flows.index_select(1, owner)).sum(-1)


# --- under evidence, mode and samples ---------------------------------------------------
def leaf_marginals(plan: Plan, logp_ext: torch.Tensor, node_flows: torch.Tensor) -> torch.Tensor:
    """Single-variable marginals ``[B', V, K]`` from the leaves' flows and distributions."""
    theta = torch.exp(logp_ext[:, plan.leaf_slots])                   # [B', L, K]
    per_leaf = node_flows[:, 1:plan.num_leaves + 1].unsqueeze(-1) * theta
    out = per_leaf.new_zeros(per_leaf.shape[0], plan.num_vars, plan.max_states)
    return out.index_add(1, plan.leaf_var, per_leaf)


@dataclass
class _Pull:
    """Per layer below the root's, top-down, buckets of the nodes with ``D`` incoming edges:
    ``(nodes [n], parents [n, D], sibling_slots [n, D] | None, weight_slots [n, D] | None)``;
    the last sibling slot is a zero row (sum edges), weight slot ``P + 1`` log 1 (product
    edges)."""

    steps: list
    var_leaves: torch.Tensor      # [V, most leaves of one variable]: leaf indices, padding L


def _pull(plan: Plan) -> _Pull:
    return kept(plan.__dict__, "_pull", lambda: _build_pull(plan))


def _build_pull(plan: Plan) -> _Pull:
    one = plan.num_params + 1
    parents, children, siblings, weights, offset = [], [], [], [], 0
    for group in plan.groups():
        matrix = group.child_matrix()
        mask = group.edge_mask.reshape(matrix.shape)
        rows, cols = torch.nonzero(mask, as_tuple=True)
        parents.append(group.start + rows)
        children.append(matrix[rows, cols])
        if group.kind == "product":
            siblings.append(offset + rows * matrix.shape[1] + cols)
            weights.append(torch.full_like(rows, one))
            offset += matrix.numel()
        else:
            siblings.append(torch.full_like(rows, -1))
            weights.append(group.weights.reshape(matrix.shape)[rows, cols])
    device = plan.leaf_var.device
    parent, child, sibling, weight = (torch.cat(t).to(device) if t else torch.zeros(0, dtype=torch.long, device=device)
                                      for t in (parents, children, siblings, weights))
    sibling = torch.where(sibling < 0, offset, sibling)
    order = torch.argsort(child, stable=True)
    parent, child, sibling, weight = parent[order], child[order], sibling[order], weight[order]
    degree = torch.bincount(child, minlength=plan.num_nodes)
    first = torch.cumsum(degree, 0) - degree                          # first edge of each node
    steps = []
    for layer in range(int(plan.layer_of.max()) - 1, -1, -1):
        nodes = torch.nonzero((plan.layer_of.to(device) == layer) & (degree > 0)).flatten()
        buckets = []
        for d in torch.unique(degree[nodes]).tolist():
            members = nodes[degree[nodes] == d]
            edge = first[members].unsqueeze(1) + torch.arange(d, device=device)
            sib, w = sibling[edge], weight[edge]
            buckets.append((members, parent[edge], sib if bool((sib < offset).any()) else None,
                            w if bool((w != one).any()) else None))
        steps.append(buckets)
    return _Pull(steps, _var_leaves(plan.leaf_var.to(device), plan.num_vars))


def _var_leaves(leaf_var: torch.Tensor, num_vars: int) -> torch.Tensor:
    order = torch.argsort(leaf_var, stable=True)
    count = torch.bincount(leaf_var, minlength=num_vars)
    width = int(count.max()) if count.numel() else 0
    rank = torch.arange(leaf_var.numel(), device=leaf_var.device) - (torch.cumsum(count, 0) - count)[leaf_var[order]]
    out = torch.full((num_vars, width), leaf_var.numel(), dtype=torch.long, device=leaf_var.device)
    out[leaf_var[order], rank] = order
    return out


def per_variable_logsumexp(plan: Plan, leaf_rows: torch.Tensor) -> torch.Tensor:
    """``out[i] = logsumexp`` of ``leaf_rows [L, B]`` over the leaves of variable ``i``: ``[V, B]``."""
    index = _pull(plan).var_leaves
    padded = torch.cat([leaf_rows, leaf_rows.new_full((1, leaf_rows.shape[1]), float("-inf"))])
    return logsumexp(padded.index_select(0, index.reshape(-1)).view(*index.shape, -1), 1)


def log_derivatives(plan: Plan, logp_ext: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """``G[n, b] = log dZ/dv_n`` ``[N, B]`` from the node log-values ``vals [N, B]`` (``Z``
    the root's value). Product edges carry the siblings' log-values (exclusive prefix and
    suffix sums, exact with ``-inf``). Differentiable."""
    pull = _pull(plan)
    batch = vals.shape[1]
    products = [group for group in plan.groups() if group.kind == "product"]
    children = vals.index_select(0, torch.cat([g.children.reshape(-1) for g in products])) \
        if products else vals[:0]
    parts = children.split([g.children.numel() for g in products])
    terms = [_sibling_terms(g, part) for g, part in zip(products, parts)]
    terms = torch.cat(terms + [vals.new_zeros(1, batch)])              # [sibling slots + 1, B]
    wanted = [s.reshape(-1) for buckets in pull.steps for _, _, s, _ in buckets if s is not None]
    sibling_rows = iter(terms.index_select(0, torch.cat(wanted)).split([len(s) for s in wanted])
                        if wanted else [])
    shared = logp_ext.shape[0] == 1
    grads = vals.new_full((plan.num_nodes, batch), float("-inf"))
    grads[plan.root] = 0.0
    for buckets in pull.steps:
        for nodes, parents, siblings, weights in buckets:
            n, d = parents.shape
            contrib = grads.index_select(0, parents.reshape(-1)).view(n, d, batch)
            if siblings is not None:
                contrib = contrib + next(sibling_rows).view(n, d, batch)
            if weights is not None:
                logw = logp_ext.index_select(1, weights.reshape(-1))    # [B', n * d]
                contrib = contrib + (logw.view(n, d, 1) if shared else logw.T.reshape(n, d, batch))
            grads.index_copy_(0, nodes, logsumexp(contrib, 1))
    return grads


def _sibling_terms(group: Group, children: torch.Tensor) -> torch.Tensor:
    """Per slot ``[M * A, B]`` of a product group: the sum of the other children's
    log-values (exclusive prefix plus suffix sums)."""
    rows, width = group.children.shape
    batch = children.shape[1]
    ch = children.view(rows, width, batch)
    if width == 2:
        return ch.flip(1).reshape(rows * width, batch)
    zero = ch.new_zeros(rows, 1, batch)
    prefix = torch.cat([zero, ch[:, :-1].cumsum(1)], 1)
    suffix = torch.cat([ch[:, 1:].flip(1).cumsum(1).flip(1), zero], 1)
    return (prefix + suffix).reshape(rows * width, batch)


def mode(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor | None, rows: int) -> torch.Tensor:
    """The assignment ``[rows, V]`` of one most probable induced tree per row under
    ``logp_ext [B' (1 or rows), P + 2]`` and evidence ``x [rows, V]`` (-1 free; None).
    Leaf values are their best log-probabilities; the max-product root's gradient w.r.t.
    them is 1 on the chosen tree's leaves, each giving its best state."""
    if torch.is_inference_mode_enabled():     # autograd records no inference tensor: copies
        with torch.inference_mode(False):
            return mode(plan, logp_ext.clone(), None if x is None else x.clone(), rows)
    with torch.enable_grad():
        theta = passes.leaf_log_probs(plan, logp_ext.detach(), x).expand(rows, -1, -1)
        best, states = theta.max(-1)                                      # [rows, L]
        best.requires_grad_()
        layer = best.T.index_select(0, plan.schedule.row_leaf)
        outs = upward.run(plan, logp_ext.detach(), layer, semiring=upward.MAX_PRODUCT)
        reached, = torch.autograd.grad(upward.root(plan, outs).sum(), best)
    values = torch.where(reached > 0, states, torch.zeros_like(states))
    out = torch.zeros(rows, plan.num_vars, dtype=torch.long, device=logp_ext.device)
    return out.scatter_add_(1, plan.leaf_var.expand(rows, -1), values)


def sample(plan: Plan, logp_ext: torch.Tensor, rows: int, generator=None) -> torch.Tensor:
    """Exact ancestral samples ``[rows, V]``; row ``r`` uses parameter row ``r % B'`` of
    ``logp_ext [B', P + 2]`` (so ``[*sample_shape, *batch]`` rows flatten naturally)."""
    widest = max([g.child_matrix().numel() for g in plan.groups()] + [plan.num_leaves * plan.max_states])
    chunk = max(1, CHUNK_ELEMENTS // (plan.num_nodes + widest))
    parts = [_sample_chunk(plan, logp_ext, start, min(rows, start + chunk), generator)
             for start in range(0, rows, chunk)]
    if not parts:
        return torch.zeros(0, plan.num_vars, dtype=torch.long, device=logp_ext.device)
    return torch.cat(parts)


def _sample_chunk(plan: Plan, logp_ext: torch.Tensor, start: int, stop: int, generator) -> torch.Tensor:
    """Rows ``start:stop`` of :func:`sample`: one induced tree per row from the root down."""
    rows = stop - start
    shared = logp_ext.shape[0] == 1
    ext = logp_ext if shared else logp_ext.index_select(
        0, torch.arange(start, stop, device=logp_ext.device) % logp_ext.shape[0])
    leaf_states = _invert(ext[:, plan.leaf_slots], rows, shared, generator)  # [rows, L]
    hits = torch.zeros(rows, plan.num_nodes, dtype=torch.uint8, device=ext.device)
    hits[:, plan.root] = 1
    for group in reversed(list(plan.groups())):
        active = hits[:, group.start:group.stop]                      # [rows, M] (a view)
        children = group.child_matrix()
        if group.kind == "product":
            src = (active.unsqueeze(-1) & group.edge_mask.to(torch.uint8)).flatten(1)
            hits.index_add_(1, children.reshape(-1), src)
        else:
            pick = _invert(ext[:, group.weights], rows, shared, generator)   # [rows, M]
            hits.scatter_add_(1, children.gather(1, pick.T).T, active.clone())
    reached = hits[:, 1:plan.num_leaves + 1].bool()
    values = torch.where(reached, leaf_states, torch.zeros_like(leaf_states))
    x = torch.zeros(rows, plan.num_vars, dtype=torch.long, device=ext.device)
    return x.scatter_add_(1, plan.leaf_var.expand(rows, -1), values)


def _invert(log_weights: torch.Tensor, rows: int, shared: bool, generator) -> torch.Tensor:
    """One uniform per row and categorical ``log_weights [B' (1 or rows), M, A]``, inverted
    through the cumulative weights: ``[rows, M]``."""
    cum = torch.exp(log_weights).cumsum(-1)                           # [B', M, A]
    total = cum[..., -1:]
    # The last positive child catches a draw that rounding pushed to the total.
    last = (log_weights > float("-inf")).cumsum(-1).argmax(-1, keepdim=True)   # [B', M, 1]
    m = log_weights.shape[1]
    u = torch.rand(rows, m, generator=generator, dtype=cum.dtype, device=cum.device)
    if shared:
        pick = torch.searchsorted(cum[0], (u * total[0, :, 0]).T.contiguous(), right=True)  # [M, rows]
        return torch.minimum(pick, last[0]).T
    pick = torch.searchsorted(cum, (u.unsqueeze(-1) * total).contiguous(), right=True)     # [rows, M, 1]
    return torch.minimum(pick, last)[..., 0]
