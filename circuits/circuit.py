"""``Circuit``: a validated, compiled sum-product network as a torch module."""

from __future__ import annotations

import math

import torch
from torch import nn

from circuits import passes, upward
from circuits.analysis import analyse
from circuits.compile import Plan, compile_plan
from circuits.distribution import (CircuitDistribution, check_assignment, check_dtype,
                                   check_params, warn_if_approximate)
from circuits.nodes import Node
from circuits.schedule import kept, kept_structure
from circuits.region_tree import RegionTree
from circuits.tables import TablePlan, build_table_plan
from circuits.tree_distribution import TreeDistribution

__all__ = ["Circuit"]

CPU = torch.device("cpu")


class Circuit(nn.Module):
    """A smooth, decomposable circuit over variables ``0..num_vars-1``, validated
    (:class:`~circuits.CircuitError` names the node by its path from the root) and compiled
    once. Its learnable parameters are one flat vector ``logits [num_params]``;
    ``distribution(params)`` evaluates the structure with a batch of external logits.

    Example::

        >>> import torch
        >>> from circuits import Categorical, Sum, Product, Circuit
        >>> root = Sum([Product([Categorical(0, 2, probs=[.9, .1]), Categorical(1, 2)]),
        ...             Product([Categorical(0, 2, probs=[.2, .8]), Categorical(1, 2)])])
        >>> c = Circuit(root)
        >>> c.log_prob(torch.tensor([[0, -1]])).exp()
        tensor([0.5500], grad_fn=<ExpBackward0>)
    """

    @kept_structure()  # its logits too: a circuit built in inference mode must train
    def __init__(self, root: Node, dtype: torch.dtype | None = None):
        """Validate and compile ``root``; ``dtype`` of the parameters (default: torch's)."""
        super().__init__()
        self.root = root
        self._structure = analyse(root)
        self._plans: dict = {CPU: compile_plan(self._structure)}   # by device
        self._kept: dict = {}                      # table plans by (scopes, device), the region tree
        self._own_params: tuple | None = None      # (key, logp, logp_ext, exps) of unchanged logits
        self.logits = nn.Parameter(self._plans[CPU].init_logits.to(check_dtype(dtype)))

    # --- structure ---------------------------------------------------------------------------
    @property
    def num_vars(self) -> int:
        return len(self._structure.num_states)

    @property
    def num_states(self) -> tuple[int, ...]:
        """Number of states of each variable."""
        return self._structure.num_states

    @property
    def max_states(self) -> int:
        return max(self._structure.num_states)

    @property
    def num_params(self) -> int:
        return self._plans[CPU].num_params

    @property
    def num_nodes(self) -> int:
        return len(self._structure.order)

    @property
    def num_edges(self) -> int:
        """Number of parent-child links of sum and product nodes."""
        return sum(len(n.children) for n in self._structure.order)

    @property
    def is_smooth(self) -> bool:
        """Always True: construction rejects non-smooth circuits."""
        return True

    @property
    def is_decomposable(self) -> bool:
        """Always True: construction rejects non-decomposable circuits."""
        return True

    @property
    def is_deterministic(self) -> bool:
        """Structural determinism (a sufficient condition): each pair of a sum's children is
        disjoint on some variable."""
        return self._structure.is_deterministic

    def extra_repr(self) -> str:
        return (f"num_vars={self.num_vars}, num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
                f"num_params={self.num_params}, deterministic={self.is_deterministic}")

    # --- execution ---------------------------------------------------------------------------
    def _plan_on(self, device: torch.device) -> Plan:
        device = torch.device(device)
        return kept(self._plans, device, lambda: self._plans[CPU].to(device))

    def _table_plan(self, scopes: tuple, device: torch.device) -> TablePlan:
        return kept(self._kept, (scopes, torch.device(device)),
                    lambda: build_table_plan(self._plans[CPU], self.root, list(scopes)).to(device))

    def _tree_on(self, device: torch.device | str) -> RegionTree | None:
        """The plan's region-tree layout on ``device`` (decided once, on first use), or None
        when the circuit is not a binary region tree of indicators."""
        tree = kept(self._kept, "region tree",
                    lambda: RegionTree.from_plan(self._plans[CPU]))
        return None if tree is None else tree.to(device)   # kept per device

    def distribution(self, params: torch.Tensor | None = None) -> CircuitDistribution:
        """The distribution for unnormalised logits ``params [*batch, num_params]`` (default:
        the circuit's own ``logits``, batch shape ``[]``); on the region-tree layout a
        :class:`~circuits.tree_distribution.TreeDistribution`."""
        if params is None:
            ext, batch_shape = self._normalised()[1], torch.Size()
        else:
            params = check_params(params, self.num_params)
            batch_shape = params.shape[:-1]
            flat = params.reshape(math.prod(batch_shape), self.num_params)
            ext = passes.normalise(self._plan_on(params.device), flat, extended=True)
        tree = self._tree_on(ext.device) is not None
        return (TreeDistribution if tree else CircuitDistribution)(self, ext, batch_shape)

    def locally_normalised(self, log_weights: torch.Tensor) -> torch.Tensor:
        """Logits ``[*batch, num_params]``, each group normalised, whose
        :meth:`distribution` is ``p(x)`` proportional to the circuit's value at ``x`` under
        the unnormalised sum-edge log-weights ``log_weights [*batch, num_params]`` (a
        deterministic circuit: the product of ``exp(log_weights)`` over ``x``'s induced
        tree); the leaves' entries are normalised on their own. A sum's weights absorb the
        partition functions of its children's sub-circuits (one upward pass, then the
        conditioning route's reweighting with no evidence)."""
        log_weights = check_params(log_weights, self.num_params)
        batch_shape = log_weights.shape[:-1]
        flat = log_weights.reshape(math.prod(batch_shape), self.num_params)
        plan = self._plan_on(flat.device)
        leaf = plan.param_leaf.to(flat.device) >= 0
        raw = torch.where(leaf, passes.normalise(plan, flat, "log_weights"), flat)
        vals = passes.log_values(plan, passes.extend(raw), None, flat.shape[0])
        free = torch.full((flat.shape[0], plan.num_vars), -1, device=flat.device)
        return passes.posterior(plan, raw, vals, free).reshape(log_weights.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` for ``x [..., num_vars]`` (-1 = marginalised) -> ``[...]``, as
        ``distribution().log_prob(x)``."""
        if self._tree_on(self.logits.device) is not None:     # the layout's route
            return self.distribution().log_prob(x)
        plan = self._plan_on(self.logits.device)
        x = check_assignment(x, plan, "value", allow_missing=True).to(self.logits.device)
        flat = x.reshape(-1, plan.num_vars)
        _, ext, exps = self._normalised()
        root = passes.root_log_values(plan, ext, flat, flat.shape[0], exps)
        return root if x.dim() == 2 else root.reshape(x.shape[:-1])

    def _normalised(self) -> tuple:
        """``(logp [1, P], logp_ext [1, P + 2], exps)`` of ``logits`` (``exps``:
        :func:`upward.weight_exps`, None with a gradient). Without a gradient they are kept
        while ``logits`` has the same identity and version counter."""
        logits = self.logits
        plan = self._plan_on(logits.device)
        if torch.is_grad_enabled() and logits.requires_grad:
            logp = passes.normalise(plan, logits.unsqueeze(0), "logits")
            return logp, passes.extend(logp), None
        key = (id(logits), logits._version, logits.data_ptr(), logits.device, logits.dtype,
               torch.is_inference_mode_enabled())
        if self._own_params is None or self._own_params[0] != key:
            with torch.no_grad():
                logp = passes.normalise(plan, logits.unsqueeze(0), "logits")
                ext = passes.extend(logp)
                self._own_params = (key, logp, ext, upward.weight_exps(plan, ext))
        return self._own_params[1:]

    def marginals(self) -> torch.Tensor:
        """Single-variable marginals ``[num_vars, max_states]``."""
        return self.distribution().marginals()

    def scope_marginals(self, scopes) -> torch.Tensor:
        """Joint tables ``[len(scopes), K, K(, K)]`` for scopes of 2 or 3 variables."""
        return self.distribution().scope_marginals(scopes)

    def condition(self, evidence: torch.Tensor) -> CircuitDistribution:
        """The conditional distribution given ``evidence [num_vars]`` (-1 = free)."""
        return self.distribution().condition(evidence)

    def sample(self, num_samples: int, evidence: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact samples ``[num_samples, num_vars]``, conditional on ``evidence`` if given."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
            raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
        dist = self.distribution() if evidence is None else self.condition(evidence)
        return dist.sample((num_samples,), generator=generator)

    def mpe(self, evidence: torch.Tensor | None = None) -> torch.Tensor:
        """Most probable completion ``[num_vars]`` of ``evidence`` (:attr:`CircuitDistribution.mode`)."""
        warn_if_approximate(self, "mpe()")
        dist = self.distribution() if evidence is None else self.condition(evidence)
        return dist._max_product()

    def entropy(self) -> torch.Tensor:
        """Exact entropy (scalar); raises NotDeterministicError unless deterministic."""
        return self.distribution().entropy()

    def leave_one_out_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x_i | x_-i)`` for every variable: ``[..., num_vars]``."""
        return self.distribution().leave_one_out_log_prob(x)
