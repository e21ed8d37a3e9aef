"""Node flows: the probability that each node is in the induced tree (no evidence), and
the entropy of a deterministic circuit read from them.

``flow(root) = 1`` and each edge passes on its parent's flow, times the weight on sum
edges. Every node's value is 1 in a normalised circuit, so no upward pass is needed;
marginals and scope tables read the flows.

The pass goes layer by layer from the root. A layer's flows are final once every layer
above it has passed its contributions down, so each layer accumulates into its own
``[B', nodes of the layer]`` tensor (out-of-place ``index_add``: the backward never copies
a ``[B', N]`` buffer per group) and the result is one concatenation in node-id order.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from circuits.compile import Plan
from circuits.kernels import may_hold_log_zero
from circuits.program import kept_structure

__all__ = ["entropy", "flows"]


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


_PLANS: dict = {}


def _flow_plan(plan: Plan) -> _FlowPlan:
    """The per-layer targets of ``plan``, built once per plan object."""
    key = id(plan)
    if key in _PLANS and _PLANS[key][0]() is plan:
        return _PLANS[key][1]
    with kept_structure():
        flow_plan = _build_flow_plan(plan)
    _PLANS[key] = (weakref.ref(plan), flow_plan)
    return flow_plan


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
