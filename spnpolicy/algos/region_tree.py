"""Dense exact queries for circuits over a binary region tree (the small-circuit path for RL).

A circuit such as :func:`circuits.structures.selective` is built region by region: a leaf
region holds the indicators of one variable, an inner region the complete product of its
two child regions' nodes, dealt into sums (each product in exactly one sum, so every sum is
deterministic) or kept as they are. :class:`RegionTree` reads that layout off a compiled
:class:`~circuits.Circuit` once; its :class:`TreeDistribution` then answers the queries an
actor-critic update needs with a few batched tensor ops per region instead of one op per
layer group and edge pattern:

- weights: one gather and one ``log_softmax`` for every sum of the circuit;
- ``entropy``, ``marginals``: one top-down pass of reach probabilities ``F`` (the circuit
  is normalised, so no upward pass): ``H = sum_n F_n H_local(n)`` (deterministic sums);
- ``scope_marginals`` of pairs: at the pair's lowest common region ``R``,
  ``p(x_i, x_j) = sum_{a,b} F_R(a, b) q_a(x_i) q_b(x_j)``, with ``q`` the marginals of each
  child node's sub-circuit from one upward pass;
- ``log_prob``, ``sample``, ``mode``: the unique induced tree of an assignment, ancestral
  sampling and max-product, one gather per region.

Every value equals the circuit engine's on the same parameters (tests compare them); what
the tree cannot answer (``condition``, scopes of three, ...) is delegated to the engine's
:class:`~circuits.CircuitDistribution` on the same parameters.

```python
tree = RegionTree.from_circuit(selective(3, 6, 16))   # None for other layouts
dist = tree.distribution(params)                       # params [B, num_params]
dist.entropy(), dist.marginals(), dist.scope_marginals([(0, 1), (2, 1)])
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Distribution, constraints

from circuits import Categorical, Circuit, Product, Sum

__all__ = ["RegionTree", "TreeDistribution"]


@dataclass
class _Region:
    """One region: a leaf (``var``, its indicator nodes) or an inner region (two children).

    An inner region's products are numbered ``p = a * mR + b`` for left node ``a`` and right
    node ``b``. If its nodes are sums, ``slots [m, G]`` holds each sum's parameter columns
    (padding: the log-0 column) and product ``p`` is child ``pos_of_prod[p] % G`` of sum
    ``group_of_prod[p]``; ``prod_of_pos [m * G]`` inverts that (0 on padding). If its nodes
    are the products themselves, node ``i`` is product ``prod_of_pos[i]`` and
    ``pos_of_prod`` the inverse.
    """

    scope: tuple[int, ...]                  # variables, left child's then right child's
    num_nodes: int
    var: int = -1                           # leaf: the variable
    node_state: torch.Tensor | None = None  # leaf: [m] state of each indicator node
    onehot: torch.Tensor | None = None      # leaf: [m, k] float one-hot of node_state
    identity: bool = False                  # leaf: node s is state s
    left: "_Region | None" = None
    right: "_Region | None" = None
    summed: bool = False
    slots: torch.Tensor | None = None
    pos_of_prod: torch.Tensor | None = None
    prod_of_pos: torch.Tensor | None = None
    group_of_prod: torch.Tensor | None = None
    slot_of_prod: torch.Tensor | None = None  # summed: [P] parameter column of each product
    left_slot: torch.Tensor | None = None     # summed: [P] g * mL + a for product (a, b) in g
    right_slot: torch.Tensor | None = None    # summed: [P] g * mR + b

    TENSORS = ("node_state", "onehot", "slots", "pos_of_prod", "prod_of_pos", "group_of_prod",
               "slot_of_prod", "left_slot", "right_slot")

    @property
    def is_leaf(self) -> bool:
        return self.left is None

    @property
    def width(self) -> int:
        return self.slots.shape[1]


class _Layout(Exception):
    """The circuit is not a binary region tree of indicators (the tree path does not apply)."""


class RegionTree:
    """The region-tree layout of a circuit, with its index tensors (per device).

    Build with :meth:`from_circuit`; ``distribution(params [B, num_params])`` returns a
    :class:`TreeDistribution` equal to ``circuit.distribution(params)``.
    """

    def __init__(self, circuit: Circuit, root: _Region, root_slots: torch.Tensor,
                 regions: list[_Region]):
        self.circuit, self.root, self.root_slots = circuit, root, root_slots
        self.regions = regions  # children before parents
        self.num_vars, self.num_params = circuit.num_vars, circuit.num_params
        self.num_states = circuit.max_states
        self._devices: dict = {root_slots.device: self}
        lca = {}
        for region in regions:
            if not region.is_leaf:
                for i in region.left.scope:
                    for j in region.right.scope:
                        lca[(i, j)] = (region, False)
                        lca[(j, i)] = (region, True)
        self.lca = lca
        self.leaves = sorted((r for r in regions if r.is_leaf), key=lambda r: r.var)
        self._pair_plans: dict = {}

    @classmethod
    def from_circuit(cls, circuit: Circuit) -> RegionTree | None:
        """The layout of ``circuit``, or ``None`` when it is not a binary region tree of
        indicator leaves with a sum at the root."""
        try:
            return _build(circuit)
        except _Layout:
            return None

    def pair_plan(self, scopes: tuple) -> tuple[list, torch.Tensor | None]:
        """For pair scopes: per lowest common region ``(region, left axes, right axes,
        transposed)`` and the order that puts the results back in the order of ``scopes``
        (None when they already are)."""
        if scopes not in self._pair_plans:
            device = self.root_slots.device
            by_region: dict = {}
            for slot, (i, j) in enumerate(scopes):
                region, flipped = self.lca[(i, j)]
                a, b = (j, i) if flipped else (i, j)
                by_region.setdefault(id(region), (region, []))[1].append((slot, a, b, flipped))
            groups, order = [], []
            for region, items in by_region.values():
                for flipped in (False, True):
                    chosen = [item for item in items if item[3] == flipped]
                    if chosen:
                        groups.append((region, torch.tensor(
                            [region.left.scope.index(a) for _, a, _, _ in chosen], device=device),
                            torch.tensor([region.right.scope.index(b) for _, _, b, _ in chosen],
                                         device=device), flipped))
                        order += [slot for slot, *_ in chosen]
            inverse = (None if order == sorted(order)
                       else torch.tensor(order, device=device).argsort())
            self._pair_plans[scopes] = (groups, inverse)
        return self._pair_plans[scopes]

    def to(self, device) -> RegionTree:
        device = torch.device(device)
        if device not in self._devices:
            moved = {}

            def move(region: _Region) -> _Region:
                if id(region) not in moved:
                    new = _Region(**vars(region))
                    for name in _Region.TENSORS:
                        if getattr(region, name) is not None:
                            setattr(new, name, getattr(region, name).to(device))
                    if not region.is_leaf:
                        new.left, new.right = move(region.left), move(region.right)
                    moved[id(region)] = new
                return moved[id(region)]

            regions = [move(r) for r in self.regions]
            tree = RegionTree(self.circuit, move(self.root), self.root_slots.to(device), regions)
            tree._devices = self._devices
            self._devices[device] = tree
        return self._devices[device]

    def distribution(self, params: torch.Tensor) -> TreeDistribution:
        """``pi`` for unnormalised logits ``params [B, num_params]`` (batch shape ``[B]``)."""
        if params.dim() != 2 or params.shape[1] != self.num_params:
            raise ValueError(f"params must have shape [B, num_params={self.num_params}], "
                             f"got {list(params.shape)}")
        return TreeDistribution(self.to(params.device), params)


def _build(circuit: Circuit) -> RegionTree:
    plan = circuit._plan_on(torch.device("cpu"))
    slot_of = {(int(n), int(c)): p for p, (n, c) in
               enumerate(zip(plan.param_node.tolist(), plan.param_child.tolist())) if n >= 0}
    k, num_params = circuit.max_states, circuit.num_params
    pad, one = num_params, num_params + 1  # columns appended to params: log 0 and log 1
    regions: list[_Region] = []

    def sum_slots(node: Sum) -> list[int]:
        if len(node.children) == 1:
            return [one]
        nid = plan.node_of[node]
        return [slot_of[(nid, plan.node_of[c])] for c in node.children]

    def region(nodes: list) -> _Region:
        if all(isinstance(n, Categorical) for n in nodes):
            states = [n.support[0] if len(n.support) == 1 else -1 for n in nodes]
            if (len({n.var for n in nodes}) != 1 or sorted(states) != list(range(k))
                    or any(n.num_states != k for n in nodes)):
                raise _Layout
            r = _Region(scope=(nodes[0].var,), num_nodes=len(nodes), var=nodes[0].var,
                        node_state=torch.tensor(states),
                        onehot=torch.eye(k, dtype=torch.float64)[states],
                        identity=states == list(range(k)))
            regions.append(r)
            return r
        if all(isinstance(n, Product) for n in nodes):
            groups, summed = [[n] for n in nodes], False
        elif all(isinstance(n, Sum) and all(isinstance(c, Product) for c in n.children)
                 for n in nodes):
            groups, summed = [list(n.children) for n in nodes], True
        else:
            raise _Layout
        products = [p for g in groups for p in g]
        if any(len(p.children) != 2 for p in products):
            raise _Layout
        lefts = list(dict.fromkeys(p.children[0] for p in products))
        rights = list(dict.fromkeys(p.children[1] for p in products))
        ml, mr = len(lefts), len(rights)
        if len({(p.children[0], p.children[1]) for p in products}) != len(products) or \
                len(products) != ml * mr:
            raise _Layout
        left, right = region(lefts), region(rights)
        if set(left.scope) & set(right.scope):
            raise _Layout
        a_of = {n: i for i, n in enumerate(lefts)}
        b_of = {n: i for i, n in enumerate(rights)}
        number = [a_of[p.children[0]] * mr + b_of[p.children[1]] for p in products]
        r = _Region(scope=left.scope + right.scope, num_nodes=len(nodes), left=left,
                    right=right, summed=summed)
        if summed:
            width = max(len(g) for g in groups)
            rows = [sum_slots(n) for n in nodes]
            r.slots = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
            r.pos_of_prod = torch.empty(len(products), dtype=torch.long)
            r.prod_of_pos = torch.zeros(len(nodes) * width, dtype=torch.long)
            r.slot_of_prod = torch.empty(len(products), dtype=torch.long)
            i = 0
            for g, group in enumerate(groups):
                for c in range(len(group)):
                    r.pos_of_prod[number[i]] = g * width + c
                    r.prod_of_pos[g * width + c] = number[i]
                    r.slot_of_prod[number[i]] = rows[g][c]
                    i += 1
            r.group_of_prod = torch.div(r.pos_of_prod, width, rounding_mode="floor")
            index = torch.arange(len(products))
            r.left_slot = r.group_of_prod * ml + torch.div(index, mr, rounding_mode="floor")
            r.right_slot = r.group_of_prod * mr + index % mr
        else:
            r.prod_of_pos = torch.tensor(number)
            r.pos_of_prod = r.prod_of_pos.argsort()
        regions.append(r)
        return r

    root_node = circuit.root
    if not isinstance(root_node, Sum):
        raise _Layout
    top = region(list(root_node.children))
    if sorted(top.scope) != list(range(circuit.num_vars)):
        raise _Layout
    return RegionTree(circuit, top, torch.tensor(sum_slots(root_node)), regions)


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

    def _root_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-weights and weights ``[B, m_top]`` of the root sum."""
        if "root" not in self._cache:
            logw = torch.log_softmax(self._ext()[:, self.tree.root_slots], dim=-1)
            self._cache["root"] = (logw, logw.exp())
        return self._cache["root"]

    def _product_weights(self, r: _Region) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-weight and weight ``[B, P]`` of each product of summed region ``r`` in its sum."""
        key = ("w", id(r))
        if key not in self._cache:
            ext = self._ext()
            log_norm = torch.logsumexp(ext[:, r.slots], dim=-1)              # [B, m]
            lw = ext[:, r.slot_of_prod] - log_norm[:, r.group_of_prod]
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
