"""``TreeDistribution``: ``circuit.distribution(params)`` of a circuit whose plan has the
region-tree layout (:mod:`circuits.region_tree`), answering on the tree what it answers
faster than the engine, every other query by the engine's route (its base class,
:class:`~circuits.CircuitDistribution`).

``entropy``, ``marginals`` and pair ``scope_marginals`` come from reach probabilities
(flows) ``F`` of every region's nodes and products, one top-down pass: ``H = -sum`` over
sum edges of ``F log w``; a pair's table at its lowest common region ``R`` is
``q_L^T F_R q_R``, ``q`` the marginals of each child node's sub-circuit (one upward
pass). ``log_prob`` (complete values), ``sample`` and ``mode`` (unconditioned) follow the
induced tree, one gather per region. Eagerly the tensors are batch-first ``[B', ...]``;
while ``torch.compile`` traces, :class:`BatchLast` computes the same flow queries on
``[structure..., B']`` tensors (the layout inductor vectorises).
"""

from __future__ import annotations

import functools
import itertools
import math

import torch

from circuits.distribution import CircuitDistribution
from circuits.kernels import compiling, zero_log_zero

__all__ = ["BatchLast", "TreeDistribution"]


@functools.lru_cache(maxsize=8)
def _every_pair(n: int) -> tuple:
    """``((0, 1), (0, 2), ..., (n - 2, n - 1))``: pair ``(i, j)`` at ``i (2n - i - 1) / 2 +
    j - i - 1``."""
    return tuple(itertools.combinations(range(n), 2))


class TreeDistribution(CircuitDistribution):
    """:class:`~circuits.CircuitDistribution` on the region tree ``circuit._tree_on(device)``
    (the same arguments); see the module docstring for which queries the tree answers."""

    def __init__(self, circuit, logp_ext: torch.Tensor, batch_shape: torch.Size, base=None):
        super().__init__(circuit, logp_ext, batch_shape, base)
        self.tree = circuit._tree_on(logp_ext.device)

    def _layout(self) -> BatchLast | None:
        """The batch-last layout while torch.compile traces, else None."""
        return self._once("batch last", lambda: BatchLast(self.tree, self._ext())) \
            if compiling() else None

    # --- shared pieces -----------------------------------------------------------------
    def _weights(self) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Log-weights and weights ``[B', m_top + sum P]`` of the root's children and every
        summed region's products, and their pieces per region."""
        def compute():
            logw = self._ext().index_select(1, self.tree.weight_pos)
            w, sizes = logw.exp(), self.tree.weight_sizes
            return logw, w, list(zip(logw.split(sizes, 1), w.split(sizes, 1)))
        return self._once("weights", compute)

    def _piece(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-weights and weights ``[B', P]`` of the root's children (``index`` 0) or of the
        products of the summed region of ``weight_index`` ``index`` in their sums."""
        return self._weights()[2][index]

    def _padded_log_weights(self, r) -> torch.Tensor:
        """``[B', m, G]`` log-weights of each sum's children (padding -inf)."""
        ext = self._ext()
        return ext.index_select(1, r.pad_pos).view(ext.shape[0], r.num_nodes, r.width)

    def _reach(self) -> tuple[dict, dict]:
        """Reach probability of every region's nodes ``[B', m]`` and products ``[B', mL, mR]``."""
        return self._once("reach", lambda: _region_flows(self.tree, [w for _, w in self._weights()[2]], 1))

    def _subcircuit_marginals(self, r) -> torch.Tensor | None:
        """``q_a(x_v)`` ``[B', m, |scope| * k]`` for each node ``a`` of ``r``; None for a leaf
        (the identity)."""
        if r.is_leaf:
            return None

        def compute():
            ql, qr = self._subcircuit_marginals(r.left), self._subcircuit_marginals(r.right)
            ml, mr, batch = r.left.num_nodes, r.right.num_nodes, self._ext().shape[0]
            if r.summed:  # q_g = sum_{(a, b) in g} w_ab [q_a, q_b]
                w = self._piece(r.weight_index)[1]
                to = w.new_zeros(batch, r.num_nodes * (ml + mr))
                to = to.index_add_(1, r.left_slot, w).index_add_(1, r.right_slot, w)
                to = to.view(batch, r.num_nodes, ml + mr)   # [sum_b w_ab, sum_a w_ab] of g
                if ql is None and qr is None:
                    return to
                left, right = to.split([ml, mr], dim=2)
                left = left if ql is None else torch.bmm(left, ql)
                right = right if qr is None else torch.bmm(right, qr)
            else:
                prod = r.prod_of_pos
                left = self._explicit(ql, ml).index_select(1, torch.div(prod, mr, rounding_mode="floor"))
                right = self._explicit(qr, mr).index_select(1, prod % mr)
            return torch.cat([left, right], dim=2)
        return self._once(("q", id(r)), compute)

    def _explicit(self, q: torch.Tensor | None, m: int) -> torch.Tensor:
        """``q`` of :meth:`_subcircuit_marginals`, the identity ``[B', m, m]`` made explicit."""
        if q is not None:
            return q
        ext = self._ext()
        return torch.eye(m, dtype=ext.dtype, device=ext.device).expand(ext.shape[0], -1, -1)

    def _region_pairs(self, r, pairs=None) -> torch.Tensor:
        """``p(x_i = x, x_j = y)`` ``[B', |left scope| * k * |right scope| * k]`` for ``i`` in
        ``r``'s left and ``j`` in its right child; with ``pairs = (left [P], right [P])``
        (positions in the children's scopes) those only, ``[B', P * k * k]``."""
        def compute():
            joint = self._reach()[1][id(r)]
            ql = self._subcircuit_marginals(r.left)     # [B', mL, sL * k] or None (identity)
            qr = self._subcircuit_marginals(r.right)    # [B', mR, sR * k] or None
            if pairs is not None:
                return self._some_pairs(joint, ql, qr, *pairs)
            joint = joint if qr is None else torch.bmm(joint, qr)
            return (joint if ql is None else torch.bmm(ql.transpose(1, 2), joint)).flatten(1)
        return self._once(("region pairs", id(r), None if pairs is None else id(pairs)), compute)

    def _some_pairs(self, joint: torch.Tensor, ql: torch.Tensor | None, qr: torch.Tensor | None,
                    left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """``sum_{a,b} F(a, b) q_a(x_i) q_b(x_j)`` for the pairs ``(left[p], right[p])``:
        ``joint [B', mL, mR]`` -> ``[B', P * k * k]``."""
        k, batch, count = self.tree.num_states, joint.shape[0], left.numel()
        if qr is not None:                              # F q_R on the variables asked for
            joint = torch.bmm(joint, _select_vars(qr, right, k))
        else:                                           # a leaf: q_R is the identity
            joint = joint.repeat(1, 1, count)
        g = joint.view(batch, joint.shape[1], count, k)                       # [B', mL, P, k]
        if ql is None:                                  # a leaf: q_L is the identity
            return g.transpose(1, 2).flatten(1)
        q = _select_vars(ql, left, k).view(batch, ql.shape[1], count, k)
        return torch.einsum("bapx,bapy->bpxy", q, g).flatten(1)

    # --- the tree's answers --------------------------------------------------------------
    def _entropy(self) -> torch.Tensor:
        """``[B']``: ``-sum`` over sums' edges of flow times log-weight."""
        if self._layout() is not None:
            return self._layout().entropy()
        logw, w, _ = self._weights()
        _, products = self._reach()
        flows = [w[:, :self.tree.weight_sizes[0]]] + [products[id(r)].flatten(1)
                                                      for r in self.tree.summed]
        return -(torch.cat(flows, 1) * zero_log_zero(logw)).sum(-1)

    def _marginals(self) -> torch.Tensor:
        """``[B', n, k]``."""
        if self._layout() is not None:
            return self._layout().marginals()
        nodes = self._reach()[0]
        return torch.stack([nodes[id(r)] for r in self.tree.leaves], 1)

    def _scope_marginals(self, scopes: list) -> torch.Tensor:
        """Pair tables ``[B', len(scopes), k, k]``; scopes of three by the engine."""
        if not all(s in self.tree.lca for s in scopes):
            return super()._scope_marginals(scopes)
        if self._layout() is not None:
            return self._layout().scope_marginals(tuple(scopes))
        joint, index = self._pair_columns(tuple(scopes))
        k = self.tree.num_states
        return joint.index_select(1, index).view(joint.shape[0], len(scopes), k, k)

    def _pair_columns(self, scopes: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """The lowest common regions' tables of ``scopes`` concatenated, ``[B', C]``, and
        the columns ``[len(scopes) * k * k]`` of each scope's table in its axis order."""
        regions, index = self.tree.pair_plan(scopes)
        parts = [self._region_pairs(r, pairs) for r, pairs in regions]
        return (torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]), index

    def state_pair_marginals(self, scopes: torch.Tensor) -> torch.Tensor:
        """Each state's own pair tables: ``scopes`` ``[B, F, 2]`` (two distinct variables per
        slot, ``B`` this distribution's batch rows, or any ``B`` where it has one row) ->
        ``[B, F, k, k]``, axes in each slot's variable order.

        The regions' tables of every pair are computed once for the batch and each state's
        slots gathered from them, without laying out all ``n (n - 1) / 2`` tables."""
        n, k = self.tree.num_vars, self.tree.num_states
        rows = self._ext().shape[0]
        if (not isinstance(scopes, torch.Tensor) or scopes.dim() != 3 or scopes.shape[-1] != 2
                or rows not in (1, scopes.shape[0])):
            got = list(scopes.shape) if isinstance(scopes, torch.Tensor) else type(scopes).__name__
            raise ValueError(f"scopes must be a tensor [B={rows}, F, 2] of variable pairs, got {got}")
        first, second = scopes.unbind(-1)
        if bool(((first == second) | (scopes < 0).any(-1) | (scopes >= n).any(-1)).any()):
            raise ValueError(f"scopes must pair two distinct variables in range({n}); got "
                             f"values from {int(scopes.min())} to {int(scopes.max())}, "
                             f"{int((first == second).sum())} slots with one variable twice")
        low, high = torch.minimum(first, second), torch.maximum(first, second)
        pair = low * (2 * n - low - 1) // 2 + high - low - 1                  # [B, F]
        every = _every_pair(n)
        if self._layout() is not None:
            joint = self._scope_marginals(list(every)).flatten(1)             # [B', P k k]
            index = torch.arange(joint.shape[1], device=joint.device)
        else:
            joint, index = self._pair_columns(every)
        columns = index.view(len(every), k * k).index_select(0, pair.flatten())
        joint = joint.expand(scopes.shape[0], -1)
        columns = columns.view(scopes.shape[0], pair.shape[1] * k * k)
        tables = joint.gather(1, columns).view(*pair.shape, k, k)
        return torch.where((first > second)[..., None, None], tables.transpose(-1, -2), tables)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Complete rows by the induced tree's weights; rows with -1 by the engine."""
        if x.numel() and bool((x < 0).any()):
            return super()._log_prob(x)
        rows = self._ext().shape[0]
        x = x.view(x.shape[0] // max(rows, 1), rows, x.shape[1])           # [S, B', n]
        logw, _ = self._piece(0)
        total = torch.zeros(x.shape[:2], dtype=logw.dtype, device=x.device)
        node = {}
        for r in self.tree.regions:
            if r.is_leaf:
                node[id(r)] = x[..., r.var]
                continue
            prod = node[id(r.left)] * r.right.num_nodes + node[id(r.right)]
            if r.summed:
                lw = self._piece(r.weight_index)[0].expand(x.shape[0], -1, -1)
                total = total + lw.gather(2, prod.unsqueeze(-1)).squeeze(-1)
                node[id(r)] = r.group_of_prod[prod]
            else:
                node[id(r)] = r.pos_of_prod[prod]
        root = logw.expand(x.shape[0], -1, -1)
        total = total + root.gather(2, node[id(self.tree.root)].unsqueeze(-1)).squeeze(-1)
        return total.reshape(-1)

    def _descend(self, rows: int, choose) -> torch.Tensor:
        """Assignments ``[rows, n]`` from the root down; ``choose(r, nodes)`` picks the child
        position of each row's sum in region ``r`` (``r=None``: the root's child)."""
        tree = self.tree
        x = torch.empty(rows, tree.num_vars, dtype=torch.long, device=self._logp_ext.device)
        stack = [(tree.root, choose(None, None))]
        while stack:
            r, nodes = stack.pop()
            if r.is_leaf:
                x[:, r.var] = nodes
                continue
            prod = (r.prod_of_pos[nodes * r.width + choose(r, nodes)] if r.summed
                    else r.prod_of_pos[nodes])
            mr = r.right.num_nodes
            stack += [(r.left, torch.div(prod, mr, rounding_mode="floor")), (r.right, prod % mr)]
        return x

    def _sample(self, rows: int, generator) -> torch.Tensor:
        """:meth:`sample_with` the uniforms of :meth:`RegionTree.draw_noise`."""
        ext = self._ext()
        return self._draw(self.tree.draw_noise(rows, generator, ext.dtype, ext.device), rows)

    def sample_with(self, noise: list[torch.Tensor], sample_shape=torch.Size()) -> torch.Tensor:
        """:meth:`sample` ``[*sample_shape, *batch, n]`` from the uniforms
        ``RegionTree.draw_noise(prod(sample_shape) * prod(batch_shape))`` (Gumbel-max at each
        sum on the path; pure tensor ops, so it traces under torch.compile)."""
        sample_shape = torch.Size(sample_shape)
        rows = math.prod(sample_shape) * self._rows
        with torch.no_grad():
            x = self._draw(noise, rows)
        return x.reshape(*sample_shape, *self.batch_shape, self.tree.num_vars)

    def _draw(self, noise: list[torch.Tensor], rows: int) -> torch.Tensor:
        if rows == 0:
            return torch.empty(0, self.tree.num_vars, dtype=torch.long, device=self._logp_ext.device)
        draws = iter(noise)

        def gumbel_argmax(scores: torch.Tensor) -> torch.Tensor:
            u, tiny = next(draws), torch.finfo(scores.dtype).tiny
            return (scores - torch.log(-torch.log(u.clamp(tiny, 1 - 1e-7)))).argmax(-1)

        def choose(r, nodes):
            if r is None:
                return gumbel_argmax(logits.index_select(1, self.tree.root_pos))
            # each row's sum: its G children's columns of the log-weights [rows, G]
            slots = r.pad_pos[nodes.unsqueeze(1) * r.width + children[:r.width]]
            return gumbel_argmax(logits.gather(1, slots))

        ext = self._ext()
        logits = ext if ext.shape[0] == rows else (
            ext.expand(rows, -1) if ext.shape[0] == 1 else ext.repeat(rows // ext.shape[0], 1))
        children = torch.arange(self.tree.max_width, device=ext.device)
        return self._descend(rows, choose)

    def _max_product(self) -> torch.Tensor:
        """The unconditioned mode: max-product per region, then a descent (a conditioned
        distribution's by the engine)."""
        if self._base is not None:
            return super()._max_product()
        batch = self._ext().shape[0]
        best, picks = {}, {}
        with torch.no_grad():
            for r in self.tree.regions:   # best[r]: None for a leaf (all zeros)
                if r.is_leaf:
                    best[id(r)] = None
                    continue
                left, right = best[id(r.left)], best[id(r.right)]
                if left is None and right is None:
                    m = None
                else:
                    left = left.unsqueeze(2) if left is not None else \
                        self._ext().new_zeros(batch, r.left.num_nodes, 1)
                    m = (left + right.unsqueeze(1) if right is not None else
                         left.expand(-1, -1, r.right.num_nodes)).flatten(1)
                    m = m.index_select(1, r.prod_of_pos)
                if r.summed:
                    scores = self._padded_log_weights(r)
                    scores = (scores if m is None
                              else m.view(batch, r.num_nodes, scores.shape[2]) + scores)
                    best[id(r)], picks[id(r)] = scores.max(-1)
                else:
                    best[id(r)] = m if m is not None else \
                        self._ext().new_zeros(batch, r.num_nodes)
            top = self._ext().index_select(1, self.tree.root_pos)
            top = (top if best[id(self.tree.root)] is None
                   else top + best[id(self.tree.root)]).argmax(-1)

            def choose(r, nodes):
                return top if r is None else picks[id(r)].gather(1, nodes.unsqueeze(1)).squeeze(1)

            x = self._descend(batch, choose)
        return x.reshape(tuple(self.batch_shape) + (self.tree.num_vars,))


def _region_flows(tree, weights: list, dim: int) -> tuple[dict, dict]:
    """Reach probability of every region's nodes and products, from the weights of the
    root's children and of each summed region's products (the ``tree.weight_sizes`` pieces),
    with the node axes at ``dim``: 1 batch-first, 0 batch-last."""
    nodes, products = {id(tree.root): weights[0]}, {}
    for r in reversed(tree.regions):
        if r.is_leaf:
            continue
        f = nodes[id(r)]
        if r.summed:
            f = f.index_select(dim, r.group_of_prod) * weights[r.weight_index]
        elif not r.in_order:
            f = f.index_select(dim, r.pos_of_prod)
        f = f.view(f.shape[:dim] + (r.left.num_nodes, r.right.num_nodes) + f.shape[dim + 1:])
        products[id(r)] = f
        nodes[id(r.left)], nodes[id(r.right)] = f.sum(dim + 1), f.sum(dim)
    return nodes, products


def _select_vars(q: torch.Tensor, positions: torch.Tensor, k: int) -> torch.Tensor:
    """``q [B, m, s * k]`` at the scope's variables ``positions [P]``: ``[B, m, P * k]``."""
    batch, m = q.shape[:2]
    return q.view(batch * m, q.shape[2] // k, k).index_select(1, positions).view(
        batch, m, positions.numel() * k)


# --- the training queries batch-last, for torch.compile --------------------------------
class BatchLast:
    """:class:`TreeDistribution`'s flow queries on the extended log-parameters ``ext [B',
    P + 2]``, computed batch-last (the same steps), returned batch-first."""

    def __init__(self, tree, ext: torch.Tensor) -> None:
        self.tree, self.flat = tree, ext.t()                    # [P + 2, B']
        self._cache: dict = {}

    def _once(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # --- shared pieces -----------------------------------------------------------------

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Log-weights and weights ``[m_top + sum P, B]`` and their pieces per region."""
        def compute():
            logw = self.flat.index_select(0, self.tree.weight_pos)
            w = logw.exp()
            return logw, w, w.split(self.tree.weight_sizes, 0)
        return self._once("weights", compute)

    def _flows(self) -> tuple[dict, dict]:
        """Reach probability of every region's nodes ``[m, B]`` and products ``[mL, mR, B]``."""
        return self._once("flows", lambda: _region_flows(self.tree, self._weights()[2], 0))

    def _subcircuit_marginals(self, r) -> torch.Tensor | None:
        """``q_a(x_v)`` ``[m, |scope| * k, B]``; None for a leaf."""
        if r.is_leaf:
            return None

        def compute():
            ml, mr, batch = r.left.num_nodes, r.right.num_nodes, self.flat.shape[1]
            if r.summed:   # node g: sum over its G slots of w_slot [q_a, q_b] (padding: w 0)
                w = self.flat.index_select(0, r.pad_pos).exp()
                w = w.view(r.num_nodes, r.width, 1, w.shape[-1])                 # [m, G, 1, B]
                prod = r.prod_of_pos.view(r.num_nodes, r.width)
            else:          # node i: product prod_of_pos[i] itself
                w, prod = None, r.prod_of_pos.view(r.num_nodes, 1)
            sides = []
            for child, index, m in ((r.left, torch.div(prod, mr, rounding_mode="floor"), ml),
                                    (r.right, prod % mr, mr)):
                q = self._subcircuit_marginals(child)
                if q is None:      # the identity, explicit
                    q = torch.eye(m, dtype=self.flat.dtype, device=self.flat.device)[..., None]
                picked = q.index_select(0, index.flatten()).view(*index.shape, *q.shape[1:])
                side = picked[:, 0] if w is None else (w * picked).sum(1)           # [m, j, B]
                sides.append(side.expand(-1, -1, batch))
            return torch.cat(sides, 1)
        return self._once(("q", id(r)), compute)

    def _region_pairs(self, r, pairs=None) -> torch.Tensor:
        """:meth:`TreeDistribution._region_pairs` as rows ``[..., B]``."""
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
        """Pair tables ``[B, len(scopes), k, k]``."""
        regions, index = self.tree.pair_plan(scopes)
        parts = [self._region_pairs(r, pairs) for r, pairs in regions]
        joint = torch.cat(parts) if len(parts) > 1 else parts[0]
        k = self.tree.num_states
        return joint.index_select(0, index).view(len(scopes), k, k, -1).permute(3, 0, 1, 2)


def _contract(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sum_c x[a, c, b] y[c, j, b]``: ``x [A, C, B]``, ``y [C, J, B]`` -> ``[A, J, B]``."""
    return (x[:, :, None] * y[None]).sum(1)
