"""Sibling pairs: a circuit policy whose agents take their places in the circuit per state.

A selective circuit fixes which agents are siblings (share a two-agent region): agents
``0, 1``, ``2, 3`` and so on. Correlating two agents is cheap in the circuit where they are
siblings (one sum over their ``k**2`` joint actions) and hard where they meet only near the
root. With sibling pairs the policy chooses per state which agents fill the circuit's
places (*slots*): :func:`pair_order` matches agents whose inputs are nearest (agents that
see alike: in coverage, agents on one cell) into the circuit's sibling slots, and
:class:`Reordered` answers every query of the circuit's distribution over slots as a
distribution over the agents.

```python
pairs, singles = sibling_slots(fixed, n)           # [Q, 2] slot pairs, [S] lone slots
order = pair_order(inputs, pairs, singles)         # inputs [B, n, D] -> order [B, n]
dist = Reordered(circuit.distribution(params), order)   # queries over the agents
```

``order[b, s]`` is the agent in slot ``s`` at state ``b``. The order is a function of the
state alone, so ``pi(u | s)`` is still one distribution per state and every query is exact.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch.distributions import Distribution

from circuits.distribution import check_scopes
from factor_q.values import state_pair_marginals

__all__ = ["Reordered", "pair_order", "sibling_slots"]


def sibling_slots(fixed: list, num_vars: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The circuit's sibling slots: pairs of variables whose joint states some parameters
    fix together and alone (the sums of a two-variable region over its indicator
    products), and the variables in no such pair.

    Args:
        fixed: each parameter's ``(variable, state)`` pairs that it fixes.
        num_vars: ``n``.

    Returns ``(pairs [Q, 2], singles [S])`` (long, ``2 Q + S = n``). Raises ValueError when
    the circuit has no such pair, or a variable in two of them.
    """
    found = {tuple(sorted({v for v, _ in f})) for f in fixed}
    found = {agents for agents in found if len(agents) == 2}
    pairs = sorted(found)
    if not pairs:
        raise ValueError("sibling pairs need a circuit whose sums choose two agents' joint "
                         "actions (a selective circuit with width below k**2); this circuit "
                         "has none")
    seen = [v for pair in pairs for v in pair]
    if len(set(seen)) != len(seen):
        raise ValueError(f"sibling pairs need disjoint pairs of agents; this circuit's pairs "
                         f"{pairs} share agents")
    singles = [v for v in range(num_vars) if v not in set(seen)]
    return torch.tensor(pairs, dtype=torch.long).view(-1, 2), torch.tensor(singles,
                                                                             dtype=torch.long)


@torch.compiler.disable
@torch.no_grad()
def pair_order(inputs: torch.Tensor, pairs: torch.Tensor, singles: torch.Tensor) -> torch.Tensor:
    """Which agent fills each slot, per state: agents matched greedily into the sibling
    slot pairs, the two agents with the nearest inputs (Euclidean distance, ties to the
    lower indices) first, each pair into the next free slot pair in ``pairs``' order,
    the lower agent into the pair's first slot; the agents left over into ``singles`` in
    increasing order. It runs eagerly under ``torch.compile``: its number of matching
    rounds depends on the inputs.

    Args:
        inputs: ``[B, n, D]`` each agent's input.
        pairs: ``[Q, 2]`` slot pairs; ``singles``: ``[S]`` lone slots (``2 Q + S = n``).

    Returns:
        ``order`` ``[B, n]`` long: ``order[b, s]`` is the agent in slot ``s``.

    Raises ValueError when the slots do not cover the agents, or when an input is not
    finite (or two inputs' distance overflows float64).
    """
    batch, n = inputs.shape[:2]
    if 2 * pairs.shape[0] + singles.shape[0] != n:
        raise ValueError(f"pairs [{pairs.shape[0]}, 2] and singles [{singles.shape[0]}] must "
                         f"cover the {n} agents of inputs {list(inputs.shape)}")
    order = torch.empty(batch, n, dtype=torch.long, device=inputs.device)
    if pairs.shape[0]:
        distance = _distances(inputs.flatten(2).to(torch.float64))
        if not bool(torch.isfinite(distance.sum())):
            raise ValueError(f"inputs {list(inputs.shape)} must be finite, with distances "
                             f"that fit in float64: the matching orders agents by distance")
        first, second = _greedy_pairs(distance, pairs.shape[0])
        order[:, pairs[:, 0]], order[:, pairs[:, 1]] = first, second
    if singles.numel():
        matched = order[:, pairs.flatten()]                                 # [B, 2 Q]
        used = torch.zeros(batch, n, dtype=torch.bool, device=inputs.device).scatter_(
            1, matched, True)
        # the free agents in increasing order: a stable sort puts the used ones last
        left = torch.sort(used.to(torch.int8), dim=1, stable=True).indices[:, :singles.numel()]
        order[:, singles] = left
    return order


#: Rows of the distance matrix per ``cdist`` call in :func:`_distances`.
_BLOCK_ROWS = 8


def _distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``[B, n, n]`` between the rows of ``x`` ``[B, n, D]`` (float64).

    Exact differences (no matrix-product shortcut), so that equal inputs are at distance
    0. ``cdist`` computes each entry from its two rows alone, so the blocks of rows on and
    above the diagonal hold the entries of ``cdist(x, x)``, and the entries below are
    their mirror images (``|a - b| = |b - a|``).
    """
    batch, n = x.shape[:2]
    distance = x.new_empty(batch, n, n)
    for start in range(0, n, _BLOCK_ROWS):
        rows = slice(start, start + _BLOCK_ROWS)
        block = torch.cdist(x[:, rows], x[:, start:],
                            compute_mode="donot_use_mm_for_euclid_dist")   # [B, r, n - start]
        distance[:, rows, start:] = block
        distance[:, start:, rows] = block.transpose(1, 2)
    return distance


def _greedy_pairs(distance: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` pairs of the greedy matching: the pair ``i < j`` of free agents
    least in ``(distance[i, j], i n + j)`` first, then again among the agents left.

    Args:
        distance: ``[B, n, n]`` symmetric distances (overwritten), ``2 count <= n``.

    Returns ``(first, second)``, each ``[B, count]`` long, in the order of the picks,
    ``first < second``.

    The greedy matching under a strict total order of the pairs is the one that rounds of
    mutual nearest neighbours build (each such pair is the least at both its agents, so
    greedy takes it), and its picks come in increasing order; the order of the pairs is
    strict because a row's ``i n + j`` grows with the partner, so the row minima with ties
    to the lowest index follow it.
    """
    n = distance.shape[1]
    distance.diagonal(dim1=1, dim2=2).fill_(math.inf)
    partner, weight, free = _mutual_nearest_rounds(distance)
    agents = torch.arange(n, device=distance.device)
    # every matched pair once, at its lower agent: a stable sort then orders equal
    # distances by the lower agent, which orders them by i n + j as well
    weight = weight.masked_fill(free | (partner < agents), math.inf)
    first = weight.sort(dim=1, stable=True).indices[:, :count]
    return first, partner.gather(1, first)


def _mutual_nearest_rounds(distance: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matches mutual nearest free agents, round after round, until none are left.

    Args:
        distance: ``[B, n, n]`` finite symmetric distances, ``+inf`` on the diagonal.

    Returns ``(partner, weight, free)``, each ``[B, n]``: a matched agent's partner and
    their distance, and the agents left unmatched (at most one per state). A free agent's
    nearest free agent (ties to the lower index) is recomputed only when its nearest is
    matched, since the free agents only shrink.
    """
    batch, n = distance.shape[:2]
    weight, partner = distance.min(-1)                                      # [B, n]
    free = torch.ones(batch, n, dtype=torch.bool, device=distance.device)
    agents = torch.arange(n, device=distance.device)
    rows = distance.view(batch * n, n)
    while True:
        # a lone free agent's row is all inf: its argmin (index 0) is no partner
        mutual = free & (weight < math.inf) & (partner.gather(1, partner) == agents)
        free &= ~mutual
        stale = (free & mutual.gather(1, partner)).view(-1).nonzero().squeeze(1)   # [K]
        if not stale.numel():
            return partner, weight, free
        nearest = rows[stale].masked_fill_(~free[stale // n], math.inf).min(-1)   # [K]
        weight.view(-1)[stale], partner.view(-1)[stale] = nearest.values, nearest.indices


_COMBINATIONS: dict[tuple[int, int], tuple[list[tuple[int, ...]], torch.Tensor]] = {}


def _combinations(n: int, m: int) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Every increasing ``m``-tuple of ``range(n)``, and ``lookup`` ``[n] * m`` (long): a
    tuple's index in that list (``-1`` off the increasing tuples). Kept per ``(n, m)`` in a
    plain dict, which torch.compile traces (it warns on ``functools`` caches)."""
    if (n, m) not in _COMBINATIONS:
        combos = list(itertools.combinations(range(n), m))
        lookup = torch.full((n,) * m, -1, dtype=torch.long)
        lookup[tuple(torch.tensor(combos).T)] = torch.arange(len(combos))
        _COMBINATIONS[n, m] = combos, lookup
    return _COMBINATIONS[n, m]


class Reordered(Distribution):
    """A distribution over ``n`` agents' actions from a circuit distribution over ``n``
    slots and the agent in each slot.

    Args:
        base: a circuit distribution with batch shape ``[B]`` over the slots.
        order: ``[B, n]`` long, ``order[b, s]`` the agent in slot ``s`` (a permutation per
            row).

    Every query maps its input to slots and its answer back to agents: ``log_prob``,
    ``sample``, ``sample_with``, ``mode``, ``entropy`` (unchanged), ``marginals``,
    ``scope_marginals`` (from the slots' tables of every scope of its length, gathered per
    state), ``state_pair_marginals`` (each state's own pairs, from its slots' tables),
    ``condition`` and ``leave_one_out_log_prob``.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, base, order: torch.Tensor) -> None:
        if len(base.batch_shape) != 1 or order.shape != (base.batch_shape[0],
                                                         base.event_shape[0]):
            raise ValueError(f"order must have shape [B, n] = "
                             f"{list(base.batch_shape) + list(base.event_shape)} (the base's "
                             f"batch and variables), got {list(order.shape)}")
        self.base, self.order = base, order
        self.slot_of = torch.argsort(order, dim=1)                          # [B, n]
        super().__init__(batch_shape=base.batch_shape, event_shape=base.event_shape,
                         validate_args=False)

    @property
    def support(self):
        return self.base.support

    def _to_slots(self, value: torch.Tensor) -> torch.Tensor:
        """Agents' entries ``[*S, B, n]`` -> slots' entries (slot ``s`` gets agent
        ``order[s]``'s)."""
        return value.gather(-1, self.order.expand(value.shape))

    def _to_agents(self, value: torch.Tensor) -> torch.Tensor:
        """Slots' entries ``[*S, B, n]`` -> agents' entries."""
        return value.gather(-1, self.slot_of.expand(value.shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``value [*S, B, n]`` (``-1``: marginalised out) -> ``[*S, B]``."""
        if not isinstance(value, torch.Tensor) or value.shape[-2:] != self.order.shape:
            raise ValueError(f"value must be a tensor [*sample, B, n] = [*sample, "
                             f"{', '.join(map(str, self.order.shape))}], got "
                             f"{list(getattr(value, 'shape', [])) or type(value).__name__}")
        return self.base.log_prob(self._to_slots(value))

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None):
        return self._to_agents(self.base.sample(sample_shape, generator=generator))

    def sample_with(self, noise, sample_shape=torch.Size()) -> torch.Tensor:
        return self._to_agents(self.base.sample_with(noise, sample_shape))

    @property
    def mode(self) -> torch.Tensor:
        return self._to_agents(self.base.mode)

    def entropy(self) -> torch.Tensor:
        return self.base.entropy()

    def marginals(self) -> torch.Tensor:
        """``[B, n, k]`` single-agent marginals."""
        marginals = self.base.marginals()
        return marginals.gather(1, self.slot_of[..., None].expand_as(marginals))

    def scope_marginals(self, scopes) -> torch.Tensor:
        """``[B, len(scopes), k, ..., k]`` joint tables, axes in each scope's order."""
        n = self.order.shape[1]
        scopes = torch.tensor(check_scopes(scopes, n), device=self.order.device)   # [F, m]
        m = scopes.shape[1]
        combos, lookup = _combinations(n, m)
        tables = self.base.scope_marginals(combos)                          # [B, C, k, ..]
        k = tables.shape[-1]
        # each state's slots of each scope, the combination they form, and their ranks in it
        slots = self.slot_of[:, scopes]                                     # [B, F, m]
        ordered = slots.sort(-1).values
        row = lookup.to(slots.device)[tuple(ordered.unbind(-1))]            # [B, F]
        rank = slots.argsort(-1).argsort(-1)                                # [B, F, m]
        # entry (u_1..u_m) in scope order is the table's entry with u_p on axis rank_p
        grid = torch.cartesian_prod(*[torch.arange(k, device=slots.device)] * m).view(-1, m)
        weight = k ** (m - 1 - rank)                                        # [B, F, m]
        column = (grid[None, None] * weight[:, :, None, :]).sum(-1)         # [B, F, k^m]
        picked = tables.flatten(2).gather(1, row[..., None].expand(-1, -1, k ** m))
        return picked.gather(-1, column).view(*row.shape, *(k,) * m)

    def state_pair_marginals(self, scopes: torch.Tensor) -> torch.Tensor:
        """Each state's own pair tables ``[B, F, k, k]`` for agent pairs ``scopes``
        ``[B, F, 2]`` (axes in each pair's order): the base's tables of the pairs' slots, by
        the base's own per-state route where it has one."""
        slots = self.slot_of.gather(1, scopes.flatten(1)).view_as(scopes)
        return state_pair_marginals(self.base, slots, self.order.shape[1])

    def condition(self, evidence: torch.Tensor) -> Reordered:
        """The conditional given ``evidence`` ``[n]`` or ``[B, n]`` (agents' actions,
        ``-1`` free)."""
        evidence = torch.as_tensor(evidence, device=self.order.device).expand(self.order.shape)
        return Reordered(self.base.condition(self._to_slots(evidence)), self.order)

    def leave_one_out_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(u_i | u_-i)`` for every agent: ``value [*S, B, n]`` -> same shape."""
        return self._to_agents(self.base.leave_one_out_log_prob(self._to_slots(value)))

    def __repr__(self) -> str:
        return f"Reordered(batch_shape={list(self.batch_shape)}, num_agents={self.order.shape[1]})"
