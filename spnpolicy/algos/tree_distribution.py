"""``TreeDistribution``: a circuit policy's distribution answered on its region tree.

See :mod:`spnpolicy.algos.region_tree` for the layout and the method; every query here
equals the circuit engine's on the same parameters (tests/spnpolicy/algos/test_region_tree.py).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, constraints

from spnpolicy.algos.region_tree import RegionTree, _Region

__all__ = ["TreeDistribution"]


class TreeDistribution(Distribution):
    """``circuit.distribution(params)`` evaluated on the region tree; batch shape ``[B]``.

    Query results are computed once and shared: ``entropy``, ``marginals`` and
    ``scope_marginals`` of one distribution reuse the same weights and reach probabilities.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, tree: RegionTree, params: torch.Tensor):
        self.tree, self.params = tree, params
        self._cache: dict = {}
        super().__init__(batch_shape=params.shape[:1],
                         event_shape=torch.Size([tree.num_vars]), validate_args=False)

    @property
    def support(self):
        return constraints.integer_interval(0, self.tree.num_states - 1)

    def engine(self):
        """The circuit engine's distribution on the same parameters (for other queries)."""
        if "engine" not in self._cache:
            self._cache["engine"] = self.tree.circuit.distribution(self.params)
        return self._cache["engine"]

    def condition(self, evidence: torch.Tensor):
        """The engine's :meth:`~circuits.CircuitDistribution.condition`."""
        return self.engine().condition(evidence)

    def leave_one_out_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The engine's :meth:`~circuits.CircuitDistribution.leave_one_out_log_prob`."""
        return self.engine().leave_one_out_log_prob(value)

    # --- shared pieces -----------------------------------------------------------------
    def _ext(self) -> torch.Tensor:
        """``params`` with a log-0 and a log-1 column appended: ``[B, P + 2]``."""
        if "ext" not in self._cache:
            p = self.params
            consts = torch.tensor([-math.inf, 0.0], dtype=p.dtype, device=p.device)
            self._cache["ext"] = torch.cat([p, consts.expand(p.shape[0], 2)], dim=1)
        return self._cache["ext"]

    def _table(self) -> torch.Tensor:
        """Normalised log-weights of every sum, flattened: ``[B, sums * G]`` (padding -inf)."""
        if "table" not in self._cache:
            self._cache["table"] = torch.log_softmax(self._ext()[:, self.tree.slots],
                                                     dim=-1).flatten(1)
        return self._cache["table"]

    def _root_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-weights and weights ``[B, m_top]`` of the root sum."""
        if "root" not in self._cache:
            logw = self._table()[:, self.tree.root_pos]
            self._cache["root"] = (logw, logw.exp())
        return self._cache["root"]

    def _product_weights(self, r: _Region) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-weight and weight ``[B, P]`` of each product of summed region ``r`` in its sum."""
        key = ("w", id(r))
        if key not in self._cache:
            lw = self._table()[:, r.table_pos]
            self._cache[key] = (lw, lw.exp())
        return self._cache[key]

    def _padded_log_weights(self, r: _Region) -> torch.Tensor:
        """``[B, m, G]`` log-weights of each sum's children (padding -inf)."""
        lw = self._product_weights(r)[0][:, r.prod_of_pos].view(-1, r.num_nodes, r.width)
        return lw.masked_fill(r.slots == self.tree.num_params, -math.inf)

    def _flows(self) -> dict:
        """Reach probability of every region's nodes ``[B, m]`` and products ``[B, mL, mR]``."""
        if "flows" not in self._cache:
            tree = self.tree
            nodes = {id(tree.root): self._root_weights()[1]}
            products = {}
            for r in reversed(tree.regions):
                if r.is_leaf:
                    continue
                f = nodes[id(r)]
                if r.summed:
                    f = f[:, r.group_of_prod] * self._product_weights(r)[1]
                else:
                    f = f[:, r.pos_of_prod]
                f = f.view(-1, r.left.num_nodes, r.right.num_nodes)
                products[id(r)] = f
                nodes[id(r.left)], nodes[id(r.right)] = f.sum(2), f.sum(1)
            self._cache["flows"] = (nodes, products)
        return self._cache["flows"]

    def _subcircuit_marginals(self, r: _Region) -> torch.Tensor:
        """``q_a(x_v)`` for each node ``a`` of ``r`` and ``v`` in its scope: ``[B, m, |scope|, k]``."""
        key = ("q", id(r))
        if key not in self._cache:
            k, batch = self.tree.num_states, self.params.shape[0]
            if r.is_leaf:
                q = r.onehot.to(self.params.dtype)[None, :, None, :].expand(batch, -1, -1, -1)
            else:
                ql, qr = self._subcircuit_marginals(r.left), self._subcircuit_marginals(r.right)
                ml, mr = r.left.num_nodes, r.right.num_nodes
                if r.summed:  # q_g = sum_{(a, b) in g} w_ab [q_a, q_b]
                    w = self._product_weights(r)[1]
                    to_left = w.new_zeros(batch, r.num_nodes * ml).index_add_(1, r.left_slot, w)
                    to_right = w.new_zeros(batch, r.num_nodes * mr).index_add_(1, r.right_slot, w)
                    left = to_left.view(batch, r.num_nodes, ml) @ ql.flatten(2)
                    right = to_right.view(batch, r.num_nodes, mr) @ qr.flatten(2)
                else:
                    prod = r.prod_of_pos
                    left = ql.flatten(2)[:, torch.div(prod, mr, rounding_mode="floor")]
                    right = qr.flatten(2)[:, prod % mr]
                q = torch.cat([left.view(batch, r.num_nodes, -1, k),
                               right.view(batch, r.num_nodes, -1, k)], dim=2)
            self._cache[key] = q
        return self._cache[key]

    def _region_pairs(self, r: _Region) -> torch.Tensor:
        """``p(x_i, x_j)`` for every ``i`` of ``r``'s left and ``j`` of its right child:
        ``[B, |left scope|, |right scope|, k, k]`` = ``q_L^T F_r q_R`` (two matmuls)."""
        key = ("region pairs", id(r))
        if key not in self._cache:
            _, products = self._flows()
            ql = self._subcircuit_marginals(r.left)     # [B, mL, sL, k]
            qr = self._subcircuit_marginals(r.right)    # [B, mR, sR, k]
            batch, k = ql.shape[0], self.tree.num_states
            sl, sr = len(r.left.scope), len(r.right.scope)
            joint = ql.flatten(2).transpose(1, 2) @ (products[id(r)] @ qr.flatten(2))
            self._cache[key] = joint.view(batch, sl, k, sr, k).transpose(2, 3)
        return self._cache[key]

    # --- queries -------------------------------------------------------------------------
    def entropy(self) -> torch.Tensor:
        """Exact entropy ``[B]``: ``-sum`` over sums' edges of flow times log-weight."""
        if "entropy" not in self._cache:
            logw, w = self._root_weights()
            h = -(w * logw.masked_fill(w == 0, 0.0)).sum(-1)
            _, products = self._flows()
            for r in self.tree.regions:
                if r.summed:
                    h = h - (products[id(r)].flatten(1) * self._product_weights(r)[0]).sum(-1)
            self._cache["entropy"] = h
        return self._cache["entropy"]

    def marginals(self) -> torch.Tensor:
        """Single-variable marginals ``[B, n, k]``."""
        if "marginals" not in self._cache:
            nodes, _ = self._flows()
            dtype = self.params.dtype
            self._cache["marginals"] = torch.stack(
                [nodes[id(r)] if r.identity else nodes[id(r)] @ r.onehot.to(dtype)
                 for r in self.tree.leaves], dim=1)
        return self._cache["marginals"]

    def scope_marginals(self, scopes) -> torch.Tensor:
        """Joint tables ``[B, len(scopes), k, k]`` of pairs, axes in each scope's order
        (scopes of three go to the engine)."""
        scopes = [tuple(int(v) for v in s) for s in scopes]
        if not scopes or any(len(s) != 2 or s not in self.tree.lca for s in scopes):
            return self.engine().scope_marginals(scopes)
        key = ("pairs", tuple(scopes))
        if key not in self._cache:
            groups, inverse = self.tree.pair_plan(tuple(scopes))
            parts = []
            for region, li, ri, flipped in groups:
                part = self._region_pairs(region)[:, li, ri]
                parts.append(part.transpose(-1, -2) if flipped else part)
            joint = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            self._cache[key] = joint if inverse is None else joint[:, inverse]
        return self._cache[key]

    def _check_value(self, value: torch.Tensor) -> torch.Tensor:
        n, k, batch = self.tree.num_vars, self.tree.num_states, self.params.shape[0]
        if not isinstance(value, torch.Tensor) or value.is_floating_point() or \
                value.dtype == torch.bool:
            raise TypeError(f"value must be an integer tensor [*sample, B={batch}, n={n}], "
                            f"got {getattr(value, 'dtype', type(value).__name__)}")
        if value.dim() < 2 or value.shape[-1] != n or value.shape[-2] != batch:
            raise ValueError(f"value must have shape [*sample, B={batch}, n={n}], "
                             f"got {list(value.shape)}")
        if value.numel() and (value.min() < 0 or value.max() >= k):
            raise ValueError(f"value must hold actions in range({k}), got values from "
                             f"{int(value.min())} to {int(value.max())}")
        return value.to(self.params.device).long()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(value)``: assignments ``[*sample, B, n]`` -> ``[*sample, B]`` (-1 marks a
        marginalised variable; such values go to the engine)."""
        if isinstance(value, torch.Tensor) and not value.is_floating_point() and \
                value.numel() and bool((value == -1).any()):
            return self.engine().log_prob(value)
        value = self._check_value(value)
        lead = value.shape[:-1]
        x = value.reshape(-1, *value.shape[-2:])            # [S, B, n]
        logw, _ = self._root_weights()
        total = torch.zeros(x.shape[:2], dtype=logw.dtype, device=x.device)
        node = {}
        for r in self.tree.regions:
            if r.is_leaf:
                node[id(r)] = r.node_state.argsort()[x[..., r.var]]
                continue
            prod = node[id(r.left)] * r.right.num_nodes + node[id(r.right)]
            if r.summed:
                lw = self._product_weights(r)[0].expand(x.shape[0], -1, -1)
                total = total + lw.gather(2, prod.unsqueeze(-1)).squeeze(-1)
                node[id(r)] = r.group_of_prod[prod]
            else:
                node[id(r)] = r.pos_of_prod[prod]
        root = logw.expand(x.shape[0], -1, -1)
        total = total + root.gather(2, node[id(self.tree.root)].unsqueeze(-1)).squeeze(-1)
        return total.reshape(lead)

    def _descend(self, rows: int, choose) -> torch.Tensor:
        """Assignments ``[rows, n]`` from the root down; ``choose(r, nodes)`` picks the child
        position of each row's sum in region ``r`` (``r=None``: the root's child)."""
        tree = self.tree
        x = torch.empty(rows, tree.num_vars, dtype=torch.long, device=self.params.device)
        stack = [(tree.root, choose(None, None))]
        while stack:
            r, nodes = stack.pop()
            if r.is_leaf:
                x[:, r.var] = r.node_state[nodes]
                continue
            prod = (r.prod_of_pos[nodes * r.width + choose(r, nodes)] if r.summed
                    else r.prod_of_pos[nodes])
            mr = r.right.num_nodes
            stack += [(r.left, torch.div(prod, mr, rounding_mode="floor")), (r.right, prod % mr)]
        return x

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None):
        """Exact ancestral samples ``[*sample_shape, B, n]`` (one Gumbel draw per child of
        each sum on the sampled path)."""
        sample_shape = torch.Size(sample_shape)
        s, batch = math.prod(sample_shape), self.params.shape[0]
        rows = torch.arange(s * batch, device=self.params.device)

        def gumbel_argmax(scores: torch.Tensor) -> torch.Tensor:
            u = torch.rand(scores.shape, generator=generator, dtype=scores.dtype,
                           device=scores.device)
            tiny = torch.finfo(scores.dtype).tiny
            return (scores - torch.log(-torch.log(u.clamp(tiny, 1 - 1e-7)))).argmax(-1)

        def choose(r, nodes):
            if r is None:
                return gumbel_argmax(self._root_weights()[0].repeat(s, 1))
            block = self._padded_log_weights(r).repeat(s, 1, 1)      # [S * B, m, G]
            return gumbel_argmax(block[rows, nodes])

        with torch.no_grad():
            x = self._descend(s * batch, choose)
        return x.reshape(*sample_shape, batch, self.tree.num_vars)

    @property
    def mode(self) -> torch.Tensor:
        """The most probable joint action ``[B, n]`` (max-product; exact: deterministic)."""
        batch = self.params.shape[0]
        best, picks = {}, {}
        with torch.no_grad():
            for r in self.tree.regions:
                if r.is_leaf:
                    best[id(r)] = self.params.new_zeros(batch, r.num_nodes)
                    continue
                m = (best[id(r.left)].unsqueeze(2) + best[id(r.right)].unsqueeze(1)).flatten(1)
                if r.summed:
                    scores = m[:, r.prod_of_pos].view(batch, r.num_nodes, -1) + \
                        self._padded_log_weights(r)
                    best[id(r)], picks[id(r)] = scores.max(-1)
                else:
                    best[id(r)] = m[:, r.prod_of_pos]
            top = (self._root_weights()[0] + best[id(self.tree.root)]).argmax(-1)
            rows = torch.arange(batch, device=top.device)

            def choose(r, nodes):
                return top if r is None else picks[id(r)][rows, nodes]

            return self._descend(batch, choose)

    def __repr__(self) -> str:
        return f"TreeDistribution(batch_shape={list(self.batch_shape)}, num_vars={self.tree.num_vars})"
