"""The region tree's training queries in a batch-last layout, for ``torch.compile``.

:class:`~circuits.tree_distribution.TreeDistribution` answers ``entropy``, ``marginals``
and pair ``scope_marginals`` on batch-first tensors ``[B, ...]``: gathers over a middle
axis, ``index_add`` and batched matmuls, the fastest form eagerly. Compiled by inductor,
the same gathers and scatters become loops over axes of 3 to 256 entries with an indirect
load (and bounds check) per element, vectorised at best over those short axes. So when
``torch.compile`` traces the queries, :class:`TreeDistribution` answers them here, where
every tensor is ``[structure..., B]``: a gather picks whole rows of ``B`` contiguous
values, and every contraction is a broadcast product reduced over a structure axis; both
become loops that inductor vectorises along the batch. Eagerly the same ops are slower
than the batch-first ones (the broadcast products are materialised), so eager calls keep
the batch-first layout.

The method is :mod:`circuits.region_tree`'s, step for step; the values equal the
batch-first queries' (tests/circuits/test_region_tree.py runs both against enumeration).
"""

from __future__ import annotations

import math

import torch

from circuits.kernels import zero_log_zero

__all__ = ["BatchLast"]


class BatchLast:
    """The training queries of ``tree.distribution(params)``, ``params [B, num_params]``,
    computed batch-last and returned batch-first; each piece is computed once."""

    def __init__(self, tree, params: torch.Tensor) -> None:
        self.tree, self.params = tree, params
        self._cache: dict = {}

    def _once(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # --- shared pieces -----------------------------------------------------------------
    def _flat(self) -> torch.Tensor:
        """Every sum's normalised log-weights in block order, then log 1 and log 0:
        ``[E + 2, B]`` (the rows of :meth:`TreeDistribution._flat`'s columns)."""
        def compute():
            tree, p = self.tree, self.params.t()
            if tree.order is not None:
                p = p.index_select(0, tree.order)
            sizes = [sums * children for _, sums, children in tree.blocks]
            parts = [torch.log_softmax(piece.view(children, sums, p.shape[1]), dim=0).flatten(0, 1)
                     for piece, (_, sums, children) in zip(p.split(sizes, 0), tree.blocks)]
            consts = torch.tensor([0.0, -math.inf], dtype=p.dtype, device=p.device)
            parts.append(consts[:, None].expand(2, p.shape[1]))
            return torch.cat(parts, 0)
        return self._once("flat", compute)

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Log-weights and weights ``[m_top + sum P, B]``: the root's children, then each
        summed region's products; and their pieces per region (``r.weight_index``)."""
        def compute():
            logw = self._flat().index_select(0, self.tree.weight_pos)
            w = logw.exp()
            return logw, w, w.split(self.tree.weight_sizes, 0)
        return self._once("weights", compute)

    def _flows(self) -> tuple[dict, dict]:
        """Reach probability of every region's nodes ``[m, B]`` and products ``[mL, mR, B]``."""
        def compute():
            tree, (_, _, pieces) = self.tree, self._weights()
            nodes, products = {id(tree.root): pieces[0]}, {}
            for r in reversed(tree.regions):
                if r.is_leaf:
                    continue
                f = nodes[id(r)]
                if r.summed:
                    f = f.index_select(0, r.group_of_prod) * pieces[r.weight_index]
                elif not r.in_order:
                    f = f.index_select(0, r.pos_of_prod)
                f = f.view(r.left.num_nodes, r.right.num_nodes, f.shape[-1])
                products[id(r)] = f
                nodes[id(r.left)], nodes[id(r.right)] = f.sum(1), f.sum(0)
            return nodes, products
        return self._once("flows", compute)

    def _subcircuit_marginals(self, r) -> torch.Tensor | None:
        """``q_a(x_v)`` for each node ``a`` of ``r`` and ``v`` in its scope: ``[m, |scope| *
        k, B]``; None for a leaf (node ``s`` is state ``s``)."""
        if r.is_leaf:
            return None

        def compute():
            ml, mr, batch = r.left.num_nodes, r.right.num_nodes, self.params.shape[0]
            if r.summed:   # node g: sum over its G slots of w_slot [q_a, q_b] (padding: w 0)
                w = self._flat().index_select(0, r.pad_pos).exp()
                w = w.view(r.num_nodes, r.width, 1, w.shape[-1])                 # [m, G, 1, B]
                prod = r.prod_of_pos.view(r.num_nodes, r.width)
            else:          # node i: product prod_of_pos[i] itself
                w, prod = None, r.prod_of_pos.view(r.num_nodes, 1)
            sides = []
            for child, index, m in ((r.left, torch.div(prod, mr, rounding_mode="floor"), ml),
                                    (r.right, prod % mr, mr)):
                q = self._subcircuit_marginals(child)
                if q is None:      # the identity, explicit
                    q = torch.eye(m, dtype=self.params.dtype, device=self.params.device)[..., None]
                picked = q.index_select(0, index.flatten()).view(*index.shape, *q.shape[1:])
                side = picked[:, 0] if w is None else (w * picked).sum(1)           # [m, j, B]
                sides.append(side.expand(-1, -1, batch))
            return torch.cat(sides, 1)
        return self._once(("q", id(r)), compute)

    def _region_pairs(self, r, pairs=None) -> torch.Tensor:
        """``p(x_i = x, x_j = y)`` at region ``r`` as rows ``[|left scope| * k * |right scope|
        * k, B]`` (axes ``i, x, j, y``), or with ``pairs = (left [P], right [P])`` those
        pairs only, ``[P * k * k, B]`` (axes ``p, x, y``), as
        :meth:`TreeDistribution._region_pairs` computes them batch-first."""
        def compute():
            _, products = self._flows()
            joint = products[id(r)]                                              # [mL, mR, B]
            ql = self._subcircuit_marginals(r.left)
            qr = self._subcircuit_marginals(r.right)
            if pairs is not None:
                return self._some_pairs(joint, ql, qr, *pairs)
            t = joint if qr is None else _contract(joint, qr)                    # [mL, J, B]
            out = t if ql is None else _contract(ql.transpose(0, 1), t)          # [I, J, B]
            return out.flatten(0, 1)
        return self._once(("pairs", id(r), None if pairs is None else id(pairs)), compute)

    def _some_pairs(self, joint, ql, qr, left, right) -> torch.Tensor:
        k, count = self.tree.num_states, left.numel()
        mL, batch = joint.shape[0], joint.shape[-1]
        if qr is None:                                  # a leaf: q_R is the identity
            g = joint[:, None].expand(mL, count, k, batch)                       # [mL, P, k, B]
        else:                                           # F q_R on the variables asked for
            q = qr.view(qr.shape[0], -1, k, batch).index_select(1, right)       # [mR, P, k, B]
            g = (joint[:, :, None, None] * q[None]).sum(1)                       # [mL, P, k, B]
        if ql is None:                                  # a leaf: q_L is the identity
            return g.transpose(0, 1).flatten(0, 2)                               # [P, x, y]
        q = ql.view(mL, -1, k, batch).index_select(1, left)                      # [mL, P, k, B]
        return (q[:, :, :, None] * g[:, :, None]).sum(0).flatten(0, 2)

    # --- queries (batch-first out) -----------------------------------------------------
    def entropy(self) -> torch.Tensor:
        """``[B]``: ``-sum`` over the sums' edges of flow times log-weight."""
        def compute():
            logw, _, pieces = self._weights()
            _, products = self._flows()
            flows = torch.cat([pieces[0]] + [products[id(r)].flatten(0, 1)
                                             for r in self.tree.summed])
            return -(flows * zero_log_zero(logw)).sum(0)
        return self._once("entropy", compute)

    def marginals(self) -> torch.Tensor:
        """``[B, n, k]``."""
        nodes, _ = self._flows()
        return torch.stack([nodes[id(r)] for r in self.tree.leaves]).permute(2, 0, 1)

    def scope_marginals(self, scopes: tuple) -> torch.Tensor:
        """Pair tables ``[B, len(scopes), k, k]`` (scopes of two distinct variables, as
        :meth:`TreeDistribution.scope_marginals` checks)."""
        regions, index = self.tree.pair_plan(scopes)
        parts = [self._region_pairs(r, pairs) for r, pairs in regions]
        joint = torch.cat(parts) if len(parts) > 1 else parts[0]
        k = self.tree.num_states
        return joint.index_select(0, index).view(len(scopes), k, k, -1).permute(3, 0, 1, 2)


def _contract(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sum_c x[a, c, b] y[c, j, b]``: ``x [A, C, B]``, ``y [C, J, B]`` -> ``[A, J, B]``, as a
    broadcast product reduced over ``C`` (a loop vectorised over ``B`` once compiled)."""
    return (x[:, :, None] * y[None]).sum(1)
