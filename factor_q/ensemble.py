"""Linear layers of an ensemble of ``E`` independent networks, computed as batched matmuls:
the layers of :class:`~factor_q.FactorQ` with ``ensemble=E`` (spn-ac's twin critics).

Each member ``j`` is an ``nn.Linear(in_dim, out_dim)`` with its own weights, initialised
as ``nn.Linear`` does; inputs and outputs carry the ensemble axis first, ``[E, B, dim]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["EnsembleHead", "EnsembleLinear"]


class EnsembleLinear(nn.Module):
    """``E`` independent ``nn.Linear(in_dim, out_dim)`` as one batched matmul:
    ``[E, B, in_dim]`` (or ``[B, in_dim]``, fed to every member) -> ``[E, B, out_dim]``.
    Parameters ``weight [E, in_dim, out_dim]``, ``bias [E, 1, out_dim]``."""

    def __init__(self, ensemble: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default initialisation
        self.weight = nn.Parameter(torch.empty(ensemble, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return torch.baddbmm(self.bias, x.expand(self.weight.shape[0], -1, -1), self.weight)
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleHead(nn.Module):
    """A payoff head: ``E`` independent ``nn.Linear(in_dim, out_dim)`` stored as
    ``weight [E, out_dim, in_dim]`` (each member's rows are its output columns, as in
    ``nn.Linear``), so that the columns one joint action picks are rows to gather.

    ``forward(h [E, B, in_dim]) -> [E, B, out_dim]`` is the dense head;
    :meth:`picked` sums only the outputs that joint actions pick, without the dense tables.
    """

    # version 2 stores the weight as [E, out, in]; version 1 as [E, in, out]
    _version = 2

    def __init__(self, ensemble: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default initialisation
        self.weight = nn.Parameter(torch.empty(ensemble, in_dim, out_dim)
                                   .uniform_(-bound, bound).transpose(1, 2).contiguous())
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_dim).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, h, self.weight.transpose(1, 2))

    def picked(self, h: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """``sum_c forward(h)[j, b, columns[b, c]]`` ``[E, B]`` for ``columns [B, C]`` (the
        same columns for every member)."""
        return _PickedColumns.apply(h, self.weight, self.bias, columns)[0]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if local_metadata.get("version", 1) < 2:  # a checkpoint of the [E, in, out] layout
            key = prefix + "weight"
            if key in state_dict:
                state_dict[key] = state_dict[key].transpose(1, 2).contiguous()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


class _PickedColumns(torch.autograd.Function):
    """``q[j, b] = sum_c (h[j, b] . weight[j, columns[b, c]] + bias[j, 0, columns[b, c]])``.

    The forward gathers and sums each row's ``C`` weight rows (one ``embedding_bag``)
    instead of computing all ``out_dim`` outputs; the backward adds each row's gradient into
    the ``C`` weight rows it read (one ``index_add_``). Equal to the dense head's outputs
    gathered and summed, at a fraction of its cost when ``C << out_dim`` (a critic loss
    reads one entry of each factor's ``k**order``).
    """

    @staticmethod
    def forward(h, weight, bias, columns):
        """``q [E, B]``, and for the backward the summed weight rows ``[E, B, H]`` and the
        rows read ``[E B, C]`` (outputs without gradients: the torch.func form of a
        Function, which ``torch.func`` transforms can differentiate)."""
        members, out_dim, width = weight.shape
        batch, count = columns.shape
        shift = torch.arange(members, device=columns.device).mul_(out_dim).view(members, 1, 1)
        rows = (columns.unsqueeze(0) + shift).view(members * batch, count)
        summed = F.embedding_bag(rows, weight.view(members * out_dim, width), mode="sum")
        summed = summed.view(members, batch, width)                         # [E, B, H]
        q = torch.linalg.vecdot(h, summed)
        q = q + bias.reshape(-1).index_select(0, rows.view(-1)).view(members, batch,
                                                                     count).sum(2)
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
        h, summed, rows = ctx.saved_tensors      # rows [E B, C]: member j's at j * out_dim
        members, batch, width = h.shape
        count, picked = rows.shape[1], rows.view(-1)
        grad_h = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_h = grad.unsqueeze(2) * summed
        if ctx.needs_input_grad[1]:
            scaled = (grad.unsqueeze(2) * h).unsqueeze(2)                        # [E, B, 1, H]
            grad_weight = h.new_zeros(members * ctx.out_dim, width).index_add_(
                0, picked, scaled.expand(-1, -1, count, -1).reshape(-1, width))
            grad_weight = grad_weight.view(members, ctx.out_dim, width)
        if ctx.needs_input_grad[2]:
            grad_bias = h.new_zeros(members * ctx.out_dim).index_add_(
                0, picked, grad.unsqueeze(2).expand(-1, -1, count).reshape(-1))
            grad_bias = grad_bias.view(members, 1, ctx.out_dim)
        return grad_h, grad_weight, grad_bias, None
