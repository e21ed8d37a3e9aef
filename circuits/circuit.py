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
from circuits.program import kept_structure
from circuits.region_tree import RegionTree
from circuits.tables import TablePlan, build_table_plan

__all__ = ["Circuit"]


class Circuit(nn.Module):
    """A smooth, decomposable circuit over variables ``0..num_vars-1``.

    Construction validates the node DAG (raising :class:`~circuits.CircuitError` that names
    the offending node by its path from the root) and compiles it once into layers of
    index tensors. The learnable parameters are one flat vector ``logits`` of length
    ``num_params``; queries on the circuit itself use them, and ``distribution(params)``
    evaluates the same structure with a batch of external logits (a policy head's output).

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
        """Validate and compile ``root``; ``dtype`` of the parameters (default: torch's default
        dtype). Pass ``torch.float64`` rather than calling ``.double()`` afterwards, which
        cannot restore the precision lost in a float32 copy of the node weights."""
        super().__init__()
        structure = analyse(root)
        self.root = root
        self._structure = structure
        self._plans: dict = {}
        self._plans[torch.device("cpu")] = compile_plan(structure)
        self._table_plans: dict = {}
        self._tree: RegionTree | None = None       # the region-tree layout, once read
        self._region_tree_read = False
        self._own_params: tuple | None = None      # (key, logp, logp_ext, exps) of unchanged logits
        self._bounds: dict = {}                    # device -> (-1, largest state) per variable
        plan = self._plans[torch.device("cpu")]
        self.logits = nn.Parameter(plan.init_logits.to(check_dtype(dtype)))

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
        return self._plans[torch.device("cpu")].num_params

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
        """Structural determinism: each pair of a sum's children is disjoint on some variable.
        A sufficient condition: a circuit that fails it may still be deterministic."""
        return self._structure.is_deterministic

    def extra_repr(self) -> str:
        return (f"num_vars={self.num_vars}, num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
                f"num_params={self.num_params}, deterministic={self.is_deterministic}")

    # --- execution ---------------------------------------------------------------------------
    def _plan_on(self, device: torch.device) -> Plan:
        device = torch.device(device)
        if device not in self._plans:
            with kept_structure():
                self._plans[device] = self._plans[torch.device("cpu")].to(device)
        return self._plans[device]

    def _table_plan(self, scopes: tuple, device: torch.device) -> TablePlan:
        key = (scopes, torch.device(device))
        if key not in self._table_plans:
            with kept_structure():
                cpu = build_table_plan(self._plans[torch.device("cpu")], self.root, list(scopes))
                self._table_plans[key] = cpu.to(device)
        return self._table_plans[key]

    def region_tree(self, device: torch.device | str = "cpu") -> RegionTree | None:
        """The circuit's :class:`~circuits.region_tree.RegionTree` on ``device`` (read off the
        structure once), or None when the circuit is not a binary region tree of indicators
        (as :func:`circuits.structures.selective` builds). Its ``distribution(params)``
        answers the queries a policy update needs with a few ops per region."""
        if not self._region_tree_read:
            with kept_structure():
                self._tree = RegionTree.from_plan(self._plans[torch.device("cpu")], self.distribution)
                self._region_tree_read = True
        return None if self._tree is None else self._tree.to(device)   # kept per device

    def distribution(self, params: torch.Tensor | None = None) -> CircuitDistribution:
        """The distribution of this circuit.

        Args:
            params: optional unnormalised logits ``[B, num_params]`` (any leading batch
                shape): one parameter set per batch element. Default: the circuit's own
                ``logits`` (batch shape ``[]``).
        """
        if params is None:
            return CircuitDistribution(self, self._normalised()[0], torch.Size())
        params = check_params(params, self.num_params)
        batch_shape = params.shape[:-1]
        flat = params.reshape(math.prod(batch_shape), self.num_params)
        logp = passes.normalise(self._plan_on(params.device), flat)
        return CircuitDistribution(self, logp, batch_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` for ``x [..., num_vars]`` (-1 = marginalised) -> ``[...]``: the same as
        ``distribution().log_prob(x)``, without building the distribution; differentiable
        w.r.t. ``logits`` by autograd."""
        plan = self._plan_on(self.logits.device)
        x = self._checked(x, plan).to(self.logits.device)
        flat = x.reshape(-1, plan.num_vars)
        _, ext, exps = self._normalised()
        root = passes.root_log_values(plan, ext, flat, flat.shape[0], exps)
        return root if x.dim() == 2 else root.reshape(x.shape[:-1])

    def _checked(self, x, plan: Plan) -> torch.Tensor:
        """``check_assignment(x, ...)`` (-1 allowed), with the per-variable bounds kept per
        device for the common case of a valid LongTensor; its errors otherwise."""
        if (isinstance(x, torch.Tensor) and x.dtype == torch.long and x.dim() > 0
                and x.shape[-1] == plan.num_vars):
            bounds = self._bounds.get(x.device)
            if bounds is None:
                top = torch.tensor(plan.num_states, device=x.device) - 1
                bounds = self._bounds[x.device] = (torch.full_like(top, -1), top)
            if torch.equal(x.clamp(*bounds), x):      # every value in -1..num_states - 1
                return x
        return check_assignment(x, plan, "value", allow_missing=True)

    def _normalised(self) -> tuple:
        """``logits`` normalised, ``[1, num_params]``, extended (:func:`passes.extend`), and
        the weights the upward pass exponentiates (:func:`upward.weight_exps`; None when a
        gradient flows, the pass then computes them).

        Where no gradient can flow to ``logits`` (``torch.no_grad()``, or ``logits`` frozen),
        the result is kept and reused while ``logits`` is the same tensor with the same
        version counter, which every in-place change through the parameter (optimiser steps,
        ``copy_``, ``load_state_dict``, ``.to``) advances; writes through ``logits.data``
        bypass the counter, as they bypass autograd's own checks.
        """
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
                self._own_params = (key, logp, ext, upward.weight_exps(plan.program, ext))
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
        """Most probable completion ``[num_vars]`` of ``evidence``: exact when the circuit is
        deterministic (:attr:`is_deterministic`); otherwise the max-product approximation
        (see :attr:`CircuitDistribution.mode`), with an
        :class:`~circuits.ApproximateMPEWarning`."""
        warn_if_approximate(self, "mpe()")
        dist = self.distribution() if evidence is None else self.condition(evidence)
        return dist._max_product()

    def entropy(self) -> torch.Tensor:
        """Exact entropy (scalar); raises NotDeterministicError unless deterministic."""
        return self.distribution().entropy()

    def leave_one_out_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x_i | x_-i)`` for every variable: ``[..., num_vars]``."""
        return self.distribution().leave_one_out_log_prob(x)
