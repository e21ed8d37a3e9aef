"""Top-down queries over a compiled :class:`~circuits.compile.Plan`.

- :func:`descend`: follow one induced tree per row from the root (sampling, modes),
  marking reached nodes in a ``uint8 [rows, num_nodes]`` buffer (a decomposable circuit
  reaches each node at most once per tree, so marks never exceed 1).
- :func:`sample`: ancestral sampling with one uniform draw per sum node (and per leaf)
  per row, inverted through the cumulative weights; rows go in chunks so memory stays
  ``O(chunk * (nodes + edges))`` whatever the number of samples.
"""

from __future__ import annotations

import torch

from circuits.compile import Group, Plan

__all__ = ["descend", "sample"]

CHUNK_ELEMENTS = 1 << 24
"""Rows per chunk are chosen so that ``rows * (nodes + widest group)`` stays below this."""


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
            src = (active.unsqueeze(-1) & group.edge_mask.to(torch.uint8)).reshape(rows, -1)
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
