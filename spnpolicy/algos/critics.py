"""Critics of the actor-critic family: factor graphs by name and twin FactorQ networks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from factor_q import FactorGraph, FactorValues
from factor_q.q import check_arguments, check_state, low_rank_table
from factor_q.values import table_index

__all__ = ["FACTOR_GRAPHS", "TwinFactorQ", "TwinValues", "build_factor_graph", "expectations"]

FACTOR_GRAPHS = ("auto", "complete", "random", "line", "ring", "star", "none")


def build_factor_graph(kind: str, num_agents: int, num_factors: int = 20, order: int = 2,
                       seed: int = 0) -> FactorGraph:
    """The critic's factor graph over ``num_agents`` agents.

    ``auto``: ``FactorGraph.random(n, num_factors, order, seed)`` when that many
    factors exist (ordered scopes; 20 pairs for 6 agents), else the complete graph (every set
    of ``order`` agents; 2-agent games get their single pair). ``random`` always the former,
    ``line`` / ``ring`` / ``star`` pairwise, ``none`` no factors (unary terms only).
    """
    if kind not in FACTOR_GRAPHS:
        raise ValueError(f"factor_graph must be one of {FACTOR_GRAPHS}, got {kind!r}")
    if kind == "auto":
        kind = "random" if num_factors <= math.perm(num_agents, order) else "complete"
    if kind == "random":
        return FactorGraph.random(num_agents, num_factors, order=order, seed=seed)
    if kind == "complete":
        return FactorGraph.complete(num_agents, order=order)
    if kind == "none":
        return FactorGraph(num_agents, [])
    return getattr(FactorGraph, kind)(num_agents)


class _TwinLinear(nn.Module):
    """Two independent ``nn.Linear(in_dim, out_dim)`` as one batched matmul:
    ``[2, B, in_dim]`` (or ``[B, in_dim]``, fed to both) -> ``[2, B, out_dim]``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default initialisation
        self.weight = nn.Parameter(torch.empty(2, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(2, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return torch.baddbmm(self.bias, x.expand(2, -1, -1), self.weight)
        return torch.baddbmm(self.bias, x, self.weight)


class _TwinHead(nn.Module):
    """A payoff head: two independent ``nn.Linear(in_dim, out_dim)`` stored as
    ``weight [2, out_dim, in_dim]`` (each critic's rows are its output columns, as in
    ``nn.Linear``), so that the columns one joint action picks are rows to gather.

    ``forward(h [2, B, in_dim]) -> [2, B, out_dim]`` is the dense head;
    :meth:`picked` sums only the outputs that joint actions pick, without the dense tables.
    """

    # version 2 stores the weight as [2, out, in]; version 1 (a _TwinLinear) as [2, in, out]
    _version = 2

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default initialisation
        self.weight = nn.Parameter(torch.empty(2, in_dim, out_dim).uniform_(-bound, bound)
                                   .transpose(1, 2).contiguous())
        self.bias = nn.Parameter(torch.empty(2, 1, out_dim).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, h, self.weight.transpose(1, 2))

    def picked(self, h: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """``sum_c forward(h)[j, b, columns[b, c]]`` ``[2, B]`` for ``columns [B, C]`` (the
        same columns for both critics)."""
        return _PickedColumns.apply(h, self.weight, self.bias, columns)[0]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if local_metadata.get("version", 1) < 2:  # a checkpoint of the [2, in, out] layout
            key = prefix + "weight"
            if key in state_dict:
                state_dict[key] = state_dict[key].transpose(1, 2).contiguous()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


class _PickedColumns(torch.autograd.Function):
    """``q[j, b] = sum_c (h[j, b] . weight[j, columns[b, c]] + bias[j, 0, columns[b, c]])``.

    The forward gathers and sums each row's ``C`` weight rows (one ``embedding_bag``)
    instead of computing all ``out_dim`` outputs; the backward adds each row's gradient into
    the ``C`` weight rows it read (one ``index_add_``, cheaper than a matmul with the rows'
    column counts). Equal to the dense head's
    outputs gathered and summed (tests/spnpolicy/algos/test_twin_values.py), at a fraction
    of its cost when ``C << out_dim`` (the critic loss reads 20 of 720 payoff outputs on 6
    agents).
    """

    @staticmethod
    def forward(h, weight, bias, columns):
        """``q [2, B]``, and for the backward the summed weight rows ``[2, B, H]`` and the
        rows read ``[2 B, C]`` (outputs without gradients: the torch.func form of a
        Function, which ``TracedSteps`` differentiates)."""
        twins, out_dim, width = weight.shape
        batch, count = columns.shape
        shift = torch.arange(twins, device=columns.device).mul_(out_dim).view(twins, 1, 1)
        rows = (columns.unsqueeze(0) + shift).view(twins * batch, count)
        summed = F.embedding_bag(rows, weight.view(twins * out_dim, width), mode="sum")
        summed = summed.view(twins, batch, width)                          # [2, B, H]
        q = torch.linalg.vecdot(h, summed)
        q = q + bias.reshape(-1).index_select(0, rows.view(-1)).view(twins, batch, count).sum(2)
        return q, summed, rows

    @staticmethod
    def setup_context(ctx, inputs, output):
        h, weight = inputs[:2]
        _, summed, rows = output
        ctx.mark_non_differentiable(summed, rows)
        ctx.save_for_backward(h, summed, rows)
        ctx.out_dim = weight.shape[1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _summed, _rows):
        h, summed, rows = ctx.saved_tensors          # rows [2 B, C]: twin j's at j * out_dim
        twins, batch, width = h.shape
        count, picked = rows.shape[1], rows.view(-1)
        grad_h = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_h = grad.unsqueeze(2) * summed
        if ctx.needs_input_grad[1]:
            scaled = (grad.unsqueeze(2) * h).unsqueeze(2)                        # [2, B, 1, H]
            grad_weight = h.new_zeros(twins * ctx.out_dim, width).index_add_(
                0, picked, scaled.expand(-1, -1, count, -1).reshape(-1, width))
            grad_weight = grad_weight.view(twins, ctx.out_dim, width)
        if ctx.needs_input_grad[2]:
            grad_bias = h.new_zeros(twins * ctx.out_dim).index_add_(
                0, picked, grad.unsqueeze(2).expand(-1, -1, count).reshape(-1))
            grad_bias = grad_bias.view(twins, 1, ctx.out_dim)
        return grad_h, grad_weight, grad_bias, None


class TwinValues(list):
    """The two critics' :class:`~factor_q.FactorValues` (a list of two), with their tensors
    also kept stacked (``unary [2, B, n, k]``, ``tables {order: [2, B, F, k, ...]}``) so
    that both expectations under one policy are one set of ops (:meth:`expectations`)."""

    def __init__(self, values: list[FactorValues], unary: torch.Tensor | None,
                 tables: dict[int, torch.Tensor]):
        super().__init__(values)
        self.unary, self.tables = unary, tables

    def expectations(self, dist) -> torch.Tensor:
        """``[E_dist[Q_1], E_dist[Q_2]]`` ``[2, B]``, each equal to
        :meth:`FactorValues.expectation` (``dist`` with batch shape ``[B]``)."""
        first = self[0]
        n, k, batch = first.graph.num_agents, first.num_actions, first.batch_size
        marg = dist.marginals()
        if tuple(marg.shape) != (batch, n, k):
            return torch.stack([v.expectation(dist) for v in self])
        unary = self.unary if self.unary is not None else first.unary[None]
        result = (marg * unary).sum((-2, -1)).expand(2, batch)
        for scopes, _ in first.groups():
            joint = dist.scope_marginals(list(scopes))
            result = result + (joint * self.tables[len(scopes[0])]).flatten(2).sum(-1)
        return result


    def evaluate(self, actions: torch.Tensor) -> torch.Tensor:
        """``[Q_1(s, u), Q_2(s, u)]`` ``[2, B]`` for joint actions ``[B, n]``, each equal to
        :meth:`FactorValues.evaluate` (checked once, one gather per factor order)."""
        first = self[0]
        actions = first._check_actions(actions)
        k, batch = first.num_actions, first.batch_size
        if self.unary is None:
            q = actions.new_zeros((2, batch), dtype=first.unary.dtype)
        else:
            index = actions[None, :, :, None].expand(2, -1, -1, 1)
            q = self.unary.gather(3, index).squeeze(-1).sum(-1)
        for scopes, _ in first.groups():
            flat = table_index(actions, first._scope_index(scopes), k)       # [B, F]
            index = flat[None, :, :, None].expand(2, -1, -1, 1)
            q = q + self.tables[len(scopes[0])].flatten(3).gather(3, index).squeeze(-1).sum(-1)
        return q


def expectations(values, dist) -> torch.Tensor:
    """``E_dist[Q_j]`` of every critic in ``values`` stacked ``[J, B]`` (one set of ops for
    a :class:`TwinValues`)."""
    if isinstance(values, TwinValues):
        return values.expectations(dist)
    return torch.stack([v.expectation(dist) for v in values])


class TwinFactorQ(nn.Module):
    """Two independently initialised factor-graph critics on one graph, computed together.

    Each critic is a :class:`~factor_q.FactorQ` with one output head per factor order
    (``share_params=False``): a ReLU MLP torso, a unary head and per-order payoff heads,
    full tables or CP rank ``rank``. The two critics' layers are stacked into batched
    matmuls (half the ops and parameter tensors of two separate networks), so
    ``forward(state [B, S])`` returns a list of two :class:`~factor_q.FactorValues` (a
    :class:`TwinValues`, whose ``expectations`` takes both at once). :meth:`evaluate`
    gives both critics' ``Q(s, u)`` for replayed joint actions without building the
    tables (the critic loss needs only the entries the actions pick).
    """

    def __init__(self, graph: FactorGraph, state_dim: int, num_actions: int,
                 hidden: Sequence[int] = (128, 128), unary: bool = True, rank: int | None = None):
        super().__init__()
        hidden = check_arguments(graph, state_dim, num_actions, hidden, unary, rank)
        self.graph, self.state_dim, self.num_actions, self.rank = graph, state_dim, num_actions, rank
        layers: list[nn.Module] = []
        width = state_dim
        for h in hidden:
            layers += [_TwinLinear(width, h), nn.ReLU()]
            width = h
        self.torso = nn.Sequential(*layers)
        n, k = graph.num_agents, num_actions
        self.unary_head = _TwinLinear(width, n * k) if unary else None
        self.payoff = nn.ModuleDict()
        for order in graph.orders:
            per_factor = k**order if rank is None else order * rank * k
            self.payoff[str(order)] = _TwinHead(width, len(graph.scopes(order)) * per_factor)
            # each factor's agents and its first output column, for evaluate
            scopes = torch.tensor(graph.scopes(order), dtype=torch.long)
            self.register_buffer(f"_scopes_{order}", scopes, persistent=False)
            self.register_buffer(f"_offsets_{order}", torch.arange(len(scopes)) * k**order,
                                 persistent=False)

    def forward(self, state: torch.Tensor) -> TwinValues:
        check_state(state, self.state_dim)
        return self.values(state)

    def values(self, state: torch.Tensor) -> TwinValues:
        """:meth:`forward` without the check of ``state`` (for states the training loop
        already holds: replayed float32 ``[B, state_dim]`` rows of the environment's)."""
        h = self.torso(state) if len(self.torso) else state.expand(2, -1, -1)
        batch, n, k = state.shape[0], self.graph.num_agents, self.num_actions
        unary = (None if self.unary_head is None
                 else self.unary_head(h).view(2, batch, n, k))
        tables = {}
        for key, head in self.payoff.items():
            order, factors = int(key), len(self.graph.scopes(int(key)))
            if self.rank is None:
                tables[order] = head(h).view((2, batch, factors) + (k,) * order)
            else:
                vectors = head(h).view(2 * batch, factors, order, self.rank, k)
                tables[order] = low_rank_table(vectors).view(
                    (2, batch, factors) + (k,) * order)
        return TwinValues([FactorValues.trusted(self.graph, None if unary is None else unary[j],
                                                tables[2][j] if 2 in tables else None,
                                                tables[3][j] if 3 in tables else None)
                           for j in range(2)], unary, tables)

    def evaluate(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``[Q_1(s, u), Q_2(s, u)]`` ``[2, B]`` for replayed states ``[B, state_dim]`` and
        joint actions ``[B, n]`` (unchecked, as :meth:`values`): equal to
        ``values(state).evaluate(actions)``, but the payoff heads compute only the table
        entries ``u`` picks (full tables only with ``rank``)."""
        if self.rank is not None:
            return self.values(state).evaluate(actions)
        h = self.torso(state) if len(self.torso) else state.expand(2, -1, -1)
        batch, n, k = state.shape[0], self.graph.num_agents, self.num_actions
        if self.unary_head is None:
            q = h.new_zeros(2, batch)
        else:
            index = actions[None, :, :, None].expand(2, -1, -1, 1)
            q = self.unary_head(h).view(2, batch, n, k).gather(3, index).squeeze(-1).sum(-1)
        for key, head in self.payoff.items():
            q = q + head.picked(h, self._columns(int(key), actions))
        return q

    def _columns(self, order: int, actions: torch.Tensor) -> torch.Tensor:
        """The payoff head's output that ``actions [B, n]`` pick in each factor's table:
        ``[B, F]``, factor ``f``'s entry ``(u_a, u_b, ...)`` at ``f k^order + u_a k^(order-1)
        + ...`` (the row-major layout of :meth:`values`' tables)."""
        scopes, offsets = getattr(self, f"_scopes_{order}"), getattr(self, f"_offsets_{order}")
        return table_index(actions, scopes, self.num_actions) + offsets
