"""An EinsumNetworks-style evaluator of RAT-SPNs, the dense reference of ``engine.py``.

It reads the region structure back from a ``random_tensorized`` node DAG (every inner
region: a block of sums over all products of two child regions' nodes; leaf regions: input
products of categoricals) and evaluates it level by level as EinsumNetworks do: per level,
gather the two child regions' values ``[R, K, B]``, subtract each one's max, multiply their
exponentials as an outer product ``[R, K*K, B]``, one batched matmul with the weights
``[R, S, K*K]``, then log and add the shifts back. The root mixes the top regions' sums.
Written for the comparison (not used by the package), and tested equal to the engine.
"""

from __future__ import annotations

import torch

from circuits.nodes import Node, Product, Sum

__all__ = ["EinsumReference"]


class EinsumReference:
    """``log p(x)`` of a RAT-SPN root, level-batched; ``x [B, V]`` long -> ``[B]``."""

    def __init__(self, root: Sum, dtype: torch.dtype = torch.float32):
        self.levels: list[tuple] = []          # (left idx, right idx, log weights [R, S, K*K]) per level
        leaf_regions: list[list[Node]] = []
        regions = _blocks(root.children)       # top regions: blocks of sums sharing children
        self.root_logw = torch.tensor(root.log_weights, dtype=dtype)
        self.top = regions
        frontier = regions
        while frontier:
            lefts, rights, weights, children = [], [], [], []
            for block in frontier:
                products = block[0].children
                left = list(dict.fromkeys(p.children[0] for p in products))
                right = list(dict.fromkeys(p.children[1] for p in products))
                order = {(a, b): i for i, (a, b) in enumerate((p.children[0], p.children[1])
                                                               for p in products)}
                perm = [order[(a, b)] for a in left for b in right]
                weights.append(torch.tensor([[s.log_weights[j] for j in perm] for s in block],
                                            dtype=dtype))
                lefts.append(left)
                rights.append(right)
                children += [left, right]
            below = [c for c in children if not isinstance(c[0], Sum)]
            if below and len(below) != len(children):
                raise ValueError("EinsumReference: leaf and inner regions mixed on one level")
            ids = {id(c[0]): i for i, c in enumerate(children)}
            self.levels.append((torch.tensor([ids[id(l[0])] for l in lefts]),
                                torch.tensor([ids[id(r[0])] for r in rights]), torch.stack(weights)))
            if below:
                leaf_regions = children
                break
            frontier = children
        self.levels.reverse()
        self._leaves(leaf_regions, dtype)

    def _leaves(self, regions: list[list[Node]], dtype) -> None:
        """Input tables ``[R, I, Vr, C]`` and variables ``[R, Vr]`` of the leaf regions."""
        tables, variables = [], []
        for inputs in regions:
            factors = [list(n.children) if isinstance(n, Product) else [n] for n in inputs]
            variables.append([c.var for c in factors[0]])
            tables.append([[c.logits for c in sorted(f, key=lambda c: c.var)] for f in factors])
            variables[-1].sort()
        if len({len(v) for v in variables}) != 1:
            raise ValueError("EinsumReference: leaf regions must have equal numbers of variables "
                             "(num_vars divisible by 2**depth)")
        self.leaf_logp = torch.tensor(tables, dtype=dtype)                 # [R, I, Vr, C]
        self.leaf_vars = torch.tensor(variables)                         # [R, Vr]

    def to(self, device) -> EinsumReference:
        """Move every table to ``device`` (in place); returns self."""
        self.levels = [(l.to(device), r.to(device), w.to(device)) for l, r, w in self.levels]
        self.root_logw = self.root_logw.to(device)
        self.leaf_logp, self.leaf_vars = self.leaf_logp.to(device), self.leaf_vars.to(device)
        return self

    def parameters(self) -> list[torch.Tensor]:
        """The log-weights and leaf tables (set ``requires_grad`` on them to time a backward)."""
        return [w for _, _, w in self.levels] + [self.root_logw, self.leaf_logp]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        regions, inputs, per_region, states = self.leaf_logp.shape
        states_x = x.T[self.leaf_vars]                                    # [R, Vr, B]
        table = self.leaf_logp.permute(0, 2, 3, 1)                        # [R, Vr, C, I]
        picked = torch.gather(table, 2, states_x.unsqueeze(-1).expand(-1, -1, -1, inputs)
                              .reshape(regions, per_region, -1, inputs))  # [R, Vr, B, I]
        vals = picked.sum(1).permute(0, 2, 1)                             # [R, I, B]
        for left_idx, right_idx, logw in self.levels:
            left, right = vals[left_idx], vals[right_idx]                 # [R', K, B]
            ml = left.amax(1, keepdim=True)
            mr = right.amax(1, keepdim=True)
            outer = torch.exp(left - ml).unsqueeze(2) * torch.exp(right - mr).unsqueeze(1)
            s = torch.bmm(torch.exp(logw), outer.flatten(1, 2))           # [R', S, B]
            vals = torch.log(s) + ml + mr
        flat = vals.reshape(-1, vals.shape[-1])                           # [tops * S, B]
        return torch.logsumexp(flat + self.root_logw.unsqueeze(1), 0)


def _blocks(sums) -> list[list[Sum]]:
    """Consecutive sums sharing one child tuple, as blocks (regions)."""
    blocks: dict = {}
    for s in sums:
        blocks.setdefault(s.children, []).append(s)
    return list(blocks.values())

