"""Top-down queries over a compiled :class:`~circuits.compile.Plan`.

- :func:`flows`: node flows, the probability that each node is in the induced tree (no
  evidence). ``flow(root) = 1`` and each edge passes on its parent's flow, times the
  weight on sum edges. Every node's value is 1 in a normalised circuit, so no upward pass
  is needed. The pass goes layer by layer from the root; a layer's flows are final once
  every layer above it has passed its contributions down, so each layer accumulates into
  its own ``[B', nodes of the layer]`` tensor (out-of-place ``index_add``: the backward
  never copies a ``[B', N]`` buffer per group) and the result is one concatenation in
  node-id order. :func:`entropy` (deterministic circuits), :func:`leaf_marginals` and the
  scope tables (:mod:`circuits.tables`) read them.
- :func:`log_derivatives`: ``log dZ/dv`` of every node under evidence (the differential
  approach), pulled layer by layer: each node gathers its incoming edges' terms from a
  padded ``[nodes, in-degree]`` index (nodes bucketed by in-degree) and reduces them with
  one dense log-sum-exp, so no per-edge scatter is needed; the children of a dense block
  (shared weights) are pulled with one batched matrix product instead, exactly where a
  shared shift would underflow.
- :func:`mode`: one most probable induced tree per row, read off the gradient of the
  max-product upward pass (:data:`circuits.upward.MAX_PRODUCT`) w.r.t. the leaves.
- :func:`descend`: follow one induced tree per row from the root (sampling),
  marking reached nodes in a ``uint8 [rows, num_nodes]`` buffer (a decomposable circuit
  reaches each node at most once per tree, so marks never exceed 1).
- :func:`sample`: ancestral sampling with one uniform draw per sum node (and per leaf)
  per row, inverted through the cumulative weights; rows go in chunks so memory stays
  ``O(chunk * (nodes + edges))`` whatever the number of samples.

The index tensors each top-down pass needs are built once per plan object
(:func:`_per_plan`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from circuits import passes, upward
from circuits.compile import Group, Plan
from circuits.kernels import may_hold_log_zero
from circuits.program import kept_structure

__all__ = ["descend", "entropy", "flows", "leaf_marginals", "log_derivatives", "mode",
           "per_variable_logsumexp", "sample"]

CHUNK_ELEMENTS = 1 << 24
"""Rows per chunk are chosen so that ``rows * (nodes + widest group)`` stays below this."""


def _per_plan(cache: dict, plan: Plan, build):
    """``build(plan)``, made once per plan object and kept in ``cache`` (keyed by the plan's
    id and checked by a weak reference, so a later plan at a freed id is built anew)."""
    entry = cache.get(id(plan))
    if entry is None or entry[0]() is not plan:
        with kept_structure():
            entry = cache[id(plan)] = (weakref.ref(plan), build(plan))
    return entry[1]


# --- node flows -------------------------------------------------------------------------


@dataclass
class _Target:
    """Where part of a group's edge contributions go: the edges at ``positions`` of the
    flattened ``[M * A]`` (dense: ``[G * C]``) child matrix (None: all of them) enter layer
    ``layer`` at the local node indices ``local``."""

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


_FLOW_PLANS: dict = {}


def _flow_plan(plan: Plan) -> _FlowPlan:
    """The per-layer targets of ``plan``, built once per plan object."""
    return _per_plan(_FLOW_PLANS, plan, _build_flow_plan)


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
    """Exact entropy ``[B']`` of a deterministic circuit (the caller checks determinism).

    Every assignment has one induced tree, so ``-log p(x)`` is the sum of ``-log w`` over
    the tree's sum edges and ``-log theta`` over its leaves; in expectation each sum node
    contributes its flow times the entropy of its weights and each leaf its flow times its
    own entropy: one weighted sum over the parameters, no upward pass. Differentiable;
    zero weights contribute 0 (with zero gradient).
    """
    logp = logp_ext[:, :plan.num_params]
    if may_hold_log_zero(logp):
        finite = torch.isfinite(logp)
        safe = torch.where(finite, logp, torch.zeros_like(logp))
        plogp = torch.exp(safe) * safe * finite                        # [B', P]: w log w
    else:
        plogp = torch.exp(logp) * logp
    owner = torch.where(plan.param_node >= 0, plan.param_node, plan.param_leaf + 1)
    return -(plogp * node_flows.index_select(1, owner)).sum(-1)


# --- under evidence, descents and samples ---------------------------------------------


def leaf_marginals(plan: Plan, logp_ext: torch.Tensor, node_flows: torch.Tensor) -> torch.Tensor:
    """Single-variable marginals ``[B', V, K]`` from the leaves' flows and distributions."""
    theta = torch.exp(logp_ext[:, plan.leaf_slots])                   # [B', L, K]
    per_leaf = node_flows[:, 1:plan.num_leaves + 1].unsqueeze(-1) * theta
    out = per_leaf.new_zeros(per_leaf.shape[0], plan.num_vars, plan.max_states)
    return out.index_add(1, plan.leaf_var, per_leaf)


@dataclass
class _Pull:
    """Per layer below the root's, top-down, buckets of the nodes with ``D`` incoming edges:
    ``(nodes [n], parents [n, D], sibling_slots [n, D] or None, weight_slots [n, D] or None)``.
    A sibling slot indexes the product-edge terms (``num_sibling_slots``: a row of zeros, for
    sum edges); a weight slot indexes the extended log-parameters (``P + 1``, log 1, for
    product edges). ``None`` where no edge of the bucket needs that term."""

    steps: list
    num_sibling_slots: int
    var_leaves: torch.Tensor      # [V, most leaves of one variable]: leaf indices, padding L
    dense: list = None            # per step: dense groups whose children it pulls by matmul


def _dense_pulls(plan: Plan, degree: torch.Tensor) -> dict:
    """Dense groups whose children have no parents outside their block, in one layer:
    ``layer -> [group]``. Such children's ``G`` is a log of a matrix product of the block's
    shifted parent values with its weights (see :func:`_pull_dense`)."""
    out: dict = {}
    for group in plan.groups():
        if group.kind != "dense":
            continue
        blocks, width = group.children.shape
        kids = group.children.reshape(-1)
        per_block = (group.stop - group.start) // blocks
        layers = torch.unique(plan.layer_of[kids])
        if (len(layers) == 1 and bool((degree[kids] == per_block).all())
                and torch.unique(kids).numel() == kids.numel()):
            out.setdefault(int(layers[0]), []).append(group)
    return out


_PULLS: dict = {}


def _pull(plan: Plan) -> _Pull:
    """The pull index of ``plan``, built once per plan object."""
    return _per_plan(_PULLS, plan, _build_pull)


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
    dense_by_layer = _dense_pulls(plan, degree.cpu())
    steps, dense = [], []
    for layer in range(int(plan.layer_of.max()) - 1, -1, -1):
        nodes = torch.nonzero((plan.layer_of.to(device) == layer) & (degree > 0)).flatten()
        groups = dense_by_layer.get(layer, [])
        pulled = torch.zeros(plan.num_nodes, dtype=torch.bool, device=device)
        for group in groups:
            pulled[group.children.reshape(-1).to(device)] = True
        buckets, exact = [], []                   # exact: the pulled nodes' buckets (fallback)
        for d in torch.unique(degree[nodes]).tolist():
            for into, keep in ((buckets, ~pulled), (exact, pulled)):
                members = nodes[(degree[nodes] == d) & keep[nodes]]
                if members.numel() == 0:
                    continue
                edge = first[members].unsqueeze(1) + torch.arange(d, device=device)
                sib, w = sibling[edge], weight[edge]
                into.append((members, parent[edge], sib if bool((sib < offset).any()) else None,
                             w if bool((w != one).any()) else None))
        steps.append(buckets)
        dense.append(([_to(g, device) for g in groups], exact))
    var_leaves = _var_leaves(plan.leaf_var.to(device), plan.num_vars)
    return _Pull(steps, offset, var_leaves, dense)


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
    return _logsumexp(padded.index_select(0, index.reshape(-1)).view(*index.shape, -1), 1)


def log_derivatives(plan: Plan, logp_ext: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """``G[n, b] = log dZ/dv_n`` for every node, node-major ``[N, B]``, from the node
    log-values ``vals [N, B]`` of one upward pass (``Z`` = the root's value).

    For a leaf of variable ``i``, ``exp(G)`` is the mass of the evidence with that leaf's
    value replaced by 1, so summing over ``i``'s leaves gives ``p(x_-i)``. Product edges
    carry the sum of the siblings' log-values from exclusive prefix and suffix sums (no
    subtraction, so ``-inf`` siblings stay exact). Differentiable.
    """
    pull = _pull(plan)
    batch = vals.shape[1]
    # Big node-major tensors are read in one gather each where the order allows (the
    # backward of every gather fills a zero buffer the size of its source).
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
    for main, (groups, exact) in zip(pull.steps, pull.dense):
        buckets = [(bucket, True) for bucket in main]
        if groups and not (shared and all(_pull_dense(g, grads, logp_ext) for g in groups)):
            buckets += [(bucket, False) for bucket in exact]   # per-row weights, or too small
        for (nodes, parents, siblings, weights), gathered in buckets:
            n, d = parents.shape
            contrib = grads.index_select(0, parents.reshape(-1)).view(n, d, batch)
            if siblings is not None:
                rows = next(sibling_rows) if gathered else terms.index_select(0, siblings.reshape(-1))
                contrib = contrib + rows.view(n, d, batch)
            if weights is not None:
                logw = logp_ext.index_select(1, weights.reshape(-1))    # [B', n * d]
                contrib = contrib + (logw.view(n, d, 1) if shared else logw.T.reshape(n, d, batch))
            grads.index_copy_(0, nodes, _logsumexp(contrib, 1))
    return grads


def _pull_dense(group: Group, grads: torch.Tensor, logp_ext: torch.Tensor) -> bool:
    """Write ``G`` of a dense group's children (whose only parents are their block's sums)
    as ``log(W^T exp(G_sums - shift)) + shift``, one batched matrix product, shared weights
    ``logp_ext [1, P + 2]``. Returns False, writing nothing, where some child's shifted sum
    is so small (below ``M * tiny / eps``) that it would lose precision although it is not
    an exact zero; the caller then pulls those children exactly."""
    blocks, width = group.children.shape
    per_block = (group.stop - group.start) // blocks
    g = grads[group.start:group.stop].view(blocks, per_block, -1)                 # [G, M, B]
    logw = logp_ext[0, group.weights].view(blocks, per_block, width)             # [G, M, C]
    w = torch.exp(logw)
    top = g.detach().amax(1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = torch.bmm(w.transpose(1, 2), torch.exp(g - top))                      # [G, C, B]
    info = torch.finfo(total.dtype)
    small = total.detach() < per_block * info.tiny / info.eps
    if bool(small.any()):
        reachable = torch.bmm(torch.isfinite(logw.detach()).to(total.dtype).transpose(1, 2),
                              torch.isfinite(g.detach()).to(total.dtype)) > 0
        if bool((small & reachable).any()):
            return False
    positive = total > 0
    logs = torch.log(torch.where(positive, total, torch.ones_like(total))) + top
    grads.index_copy_(0, group.children.reshape(-1),
                      torch.where(positive, logs, float("-inf")).reshape(blocks * width, -1))
    return True


def _to(group: Group, device) -> Group:
    return group if group.children.device == torch.device(device) else Group(
        group.kind, group.start, group.stop, group.children.to(device), group.weights.to(device),
        group.edge_mask.to(device))


def _sibling_terms(group: Group, children: torch.Tensor) -> torch.Tensor:
    """Per slot ``[M * A, B]`` of a product group, from its children's log-values
    ``[M * A, B]``: the sum of the other children's log-values (exclusive prefix plus suffix
    sums: no subtraction, so ``-inf`` siblings stay exact)."""
    rows, width = group.children.shape
    batch = children.shape[1]
    ch = children.view(rows, width, batch)
    if width == 2:
        return ch.flip(1).reshape(rows * width, batch)
    zero = ch.new_zeros(rows, 1, batch)
    prefix = torch.cat([zero, ch[:, :-1].cumsum(1)], 1)
    suffix = torch.cat([ch[:, 1:].flip(1).cumsum(1).flip(1), zero], 1)
    return (prefix + suffix).reshape(rows * width, batch)


def _logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Log-sum-exp whose all ``-inf`` reductions give ``-inf`` with zero (not NaN) gradients."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return torch.logsumexp(x, dim)
    m = x.detach().amax(dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    total = torch.exp(x - m).sum(dim)
    positive = total > 0
    logs = torch.log(torch.where(positive, total, torch.ones_like(total)))
    return torch.where(positive, logs, float("-inf")) + m.squeeze(dim)


def mode(plan: Plan, logp_ext: torch.Tensor, x: torch.Tensor | None, rows: int) -> torch.Tensor:
    """The assignment ``[rows, V]`` of one most probable induced tree per row under the
    log-parameters ``logp_ext [B' (1 or rows), P + 2]`` and the evidence ``x [rows, V]``
    (-1 = free; None: none). Each leaf's value is its largest log-probability given the
    evidence; the max-product pass's root, differentiated w.r.t. those values, is 1 on the
    leaves of the tree it chose and 0 elsewhere, and each of those leaves gives its most
    probable state."""
    if torch.is_inference_mode_enabled():     # autograd records no inference tensor: copies
        with torch.inference_mode(False):
            return mode(plan, logp_ext.clone(), None if x is None else x.clone(), rows)
    with torch.enable_grad():
        theta = passes.leaf_log_probs(plan, logp_ext.detach(), x).expand(rows, -1, -1)
        best, states = theta.max(-1)                                      # [rows, L]
        best.requires_grad_()
        layer = best.T.index_select(0, plan.program.row_leaf)
        outs = upward.run(plan.program, logp_ext.detach(), layer, semiring=upward.MAX_PRODUCT)
        reached, = torch.autograd.grad(upward.root(plan.program, outs).sum(), best)
    values = torch.where(reached > 0, states, torch.zeros_like(states))
    out = torch.zeros(rows, plan.num_vars, dtype=torch.long, device=logp_ext.device)
    return out.scatter_add_(1, plan.leaf_var.expand(rows, -1), values)


def descend(plan: Plan, rows: int, choose_child, leaf_states: torch.Tensor) -> torch.Tensor:
    """Follow one induced tree per row from the root down; return ``x [rows, V]``.

    ``choose_child(index, group)`` gives the chosen child position ``[rows, M]`` of each sum
    of group ``index`` (in ``plan.groups()`` order); ``leaf_states [rows, L]`` the state
    each leaf emits if reached.
    """
    device = leaf_states.device
    hits = torch.zeros(rows, plan.num_nodes, dtype=torch.uint8, device=device)
    hits[:, plan.root] = 1
    groups = list(plan.groups())
    for index in reversed(range(len(groups))):
        group = groups[index]
        active = hits[:, group.start:group.stop]                      # [rows, M] (a view)
        children = group.child_matrix()
        if group.kind == "product":
            src = (active.unsqueeze(-1) & group.edge_mask.to(torch.uint8)).flatten(1)
            hits.index_add_(1, children.reshape(-1), src)
        else:
            pick = choose_child(index, group)                         # [rows, M]
            chosen = children.gather(1, pick.T).T
            hits.scatter_add_(1, chosen, active.clone())
    reached = hits[:, 1:plan.num_leaves + 1].bool()
    x = torch.zeros(rows, plan.num_vars, dtype=torch.long, device=device)
    values = torch.where(reached, leaf_states, torch.zeros_like(leaf_states))
    return x.scatter_add_(1, plan.leaf_var.expand(rows, -1), values)


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
    rows = stop - start
    shared = logp_ext.shape[0] == 1
    ext = logp_ext if shared else logp_ext.index_select(
        0, torch.arange(start, stop, device=logp_ext.device) % logp_ext.shape[0])
    theta = ext[:, plan.leaf_slots]                                  # [B', L, K]
    leaf_states = _invert(theta, rows, shared, generator)            # [rows, L]

    def choose(index: int, group: Group) -> torch.Tensor:
        return _invert(ext[:, group.weights], rows, shared, generator)

    return descend(plan, rows, choose, leaf_states)


def _invert(log_weights: torch.Tensor, rows: int, shared: bool, generator) -> torch.Tensor:
    """One uniform draw per row and distribution: the index ``[rows, M]`` whose cumulative
    weight interval holds it, for categoricals ``log_weights [B', M, A]`` (B' = 1 or rows)."""
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
