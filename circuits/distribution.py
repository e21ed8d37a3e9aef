"""``CircuitDistribution``: a compiled circuit with one parameter set per batch element
(``batch_shape``; ``event_shape`` is ``[num_vars]``), and the checks of query inputs that
:class:`~circuits.Circuit` shares (each error names the argument, expected and given).
"""

from __future__ import annotations

import math
import operator
import warnings

import torch
from torch.distributions import Distribution

from circuits import downward, passes
from circuits.compile import Plan
from circuits.kernels import compiling
from circuits.leave_one_out import leave_one_out
from circuits.nodes import ApproximateMPEWarning, NotDeterministicError
from circuits.schedule import kept_structure
from circuits.tables import scope_tables

__all__ = ["CircuitDistribution", "check_assignment", "check_dtype", "check_generator",
           "check_params", "check_sample_shape", "check_scopes", "warn_if_approximate"]


class CircuitDistribution(Distribution):
    """A distribution over ``num_vars`` discrete variables given by a circuit (built by
    ``circuit.distribution(params)``). Every query is exact, batched and differentiable.

    ``logp_ext``: normalised log-parameters, extended (:func:`circuits.passes.extend`),
    ``[prod(batch_shape) or 1, num_params + 2]``; ``base``: for a conditioned distribution,
    ``(logp_ext, evidence [B, num_vars])`` of the unconditioned one (for ``mode``). A query checks its input here and runs its route on the plan's
    layout in a ``_query`` method on ``B'`` parameter rows: this class's are the engine's
    (any circuit), :class:`~circuits.tree_distribution.TreeDistribution`'s the region
    tree's. Results shared by queries are computed once per distribution.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, circuit, logp_ext: torch.Tensor, batch_shape: torch.Size, base=None):
        self._circuit = circuit
        self._plan = circuit._plan_on(logp_ext.device)
        self._logp_ext = logp_ext
        self._base = base
        self._cache: dict = {}
        super().__init__(batch_shape=torch.Size(batch_shape),
                         event_shape=torch.Size([self._plan.num_vars]), validate_args=False)

    # --- helpers -------------------------------------------------------------------------
    @property
    def _rows(self) -> int:
        return math.prod(self.batch_shape)

    def _once(self, key, compute):
        """``compute()``, computed once per distribution (not kept when made without
        autograd from parameters that need it: a later query may need its gradient)."""
        if key in self._cache:
            return self._cache[key]
        value = compute()
        if torch.is_grad_enabled() or not self._logp_ext.requires_grad:
            self._cache[key] = value
        return value

    def _flows(self) -> torch.Tensor:
        """Node flows ``[B', N]``."""
        return self._once("flows", lambda: downward.flows(self._plan, self._ext()))

    def _ext(self) -> torch.Tensor:
        """The extended log-parameters ``[B', P + 2]``."""
        return self._logp_ext

    def _flatten(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Size]:
        """``[*sample, *batch, V]`` -> ``[S * rows, V]`` and the leading shape."""
        nb = len(self.batch_shape)
        lead = x.shape[:-1]
        if tuple(lead[len(lead) - nb:]) != tuple(self.batch_shape) or len(lead) < nb:
            raise ValueError(f"{name} must have shape [*sample_shape, *batch_shape="
                             f"{list(self.batch_shape)}, {self._plan.num_vars}], got {list(x.shape)}")
        return x.reshape(math.prod(lead), self._plan.num_vars), lead

    def _params_for(self, rows: int) -> torch.Tensor:
        """Extended params repeated to cover ``rows`` (a multiple of the batch rows)."""
        ext = self._ext()
        return ext if ext.shape[0] == 1 or ext.shape[0] == rows else ext.repeat(rows // ext.shape[0], 1)

    # --- queries -------------------------------------------------------------------------
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(value)``: value ``[*sample, *batch, num_vars]`` with -1 = marginalised -> ``[*sample, *batch]``."""
        value = check_assignment(value, self._plan, "value", allow_missing=True).to(self._logp_ext.device)
        flat, lead = self._flatten(value, "value")
        return self._log_prob(flat).reshape(lead)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``[rows, V]`` -> ``[rows]``, row ``r`` under parameter row ``r % B'``."""
        params = self._params_for(x.shape[0])
        return passes.root_log_values(self._plan, params, x, x.shape[0])

    def marginals(self) -> torch.Tensor:
        """Single-variable marginals ``[*batch, num_vars, max_states]`` (0 for missing states)."""
        return self._batched(self._marginals())

    def _marginals(self) -> torch.Tensor:
        return downward.leaf_marginals(self._plan, self._ext(), self._flows())

    def scope_marginals(self, scopes) -> torch.Tensor:
        """Joint marginal tables ``[*batch, len(scopes), K, K(, K)]`` for scopes of 2 or 3
        variables, axes in the order each scope lists its variables."""
        return self._batched(self._scope_marginals(check_scopes(scopes, self._plan.num_vars)))

    def _scope_marginals(self, scopes: list) -> torch.Tensor:
        table_plan = self._circuit._table_plan(tuple(scopes), self._logp_ext.device)
        ext = self._ext()
        theta = passes.leaf_log_probs(self._plan, ext)
        return scope_tables(self._plan, table_plan, ext, theta, self._flows())

    def entropy(self) -> torch.Tensor:
        """Exact entropy ``[*batch]``; deterministic circuits only (else NotDeterministicError)."""
        if not self._circuit.is_deterministic:
            raise NotDeterministicError(
                "entropy() is exact only for deterministic circuits and this circuit is not "
                "(structurally) deterministic; no estimate is returned")
        return self._batched(self._entropy())

    def _entropy(self) -> torch.Tensor:
        return downward.entropy(self._plan, self._ext(), self._flows())

    def condition(self, evidence: torch.Tensor) -> CircuitDistribution:
        """The conditional distribution given ``evidence`` ``[num_vars]`` or ``[*batch, num_vars]``
        (-1 = free). Raises ValueError when the evidence has probability zero."""
        plan = self._plan
        evidence = check_assignment(evidence, plan, "evidence", allow_missing=True).to(self._logp_ext.device)
        rows = self._rows
        if evidence.dim() == 1:
            evidence = evidence.expand(rows, -1)
        else:
            evidence, _ = self._flatten(evidence, "evidence")
            if evidence.shape[0] != rows:
                raise ValueError(f"evidence must have shape [num_vars] or [*batch_shape, num_vars] "
                                 f"with batch_shape {list(self.batch_shape)}, got {list(evidence.shape)}")
        ext = self._ext()
        vals = passes.log_values(plan, ext, evidence, rows)
        impossible = torch.isneginf(vals[:, plan.root])
        if bool(impossible.any()):
            row = int(torch.nonzero(impossible)[0])
            raise ValueError(f"evidence has probability zero (batch row {row}: "
                             f"{evidence[row].tolist()})")
        logp = passes.extend(passes.posterior(plan, ext[:, :plan.num_params], vals, evidence))
        base_logp, base_ev = self._base if self._base is not None else (ext, None)
        if base_ev is not None:
            evidence = torch.where(evidence >= 0, evidence, base_ev)
        return type(self)(self._circuit, logp, self.batch_shape, base=(base_logp, evidence))

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact ancestral samples ``[*sample_shape, *batch, num_vars]``."""
        sample_shape = check_sample_shape(sample_shape)
        generator = check_generator(generator, self._logp_ext.device)
        rows = math.prod(sample_shape) * self._rows
        with torch.no_grad():
            x = self._sample(rows, generator)
        return x.reshape(tuple(sample_shape) + tuple(self.batch_shape) + (self._plan.num_vars,))

    def _sample(self, rows: int, generator) -> torch.Tensor:
        """``[rows, V]``, row ``r`` under parameter row ``r % B'``."""
        return downward.sample(self._plan, self._ext(), rows, generator)

    @property
    def mode(self) -> torch.Tensor:
        """The most probable assignment ``[*batch, num_vars]`` by max-product: exact on
        deterministic circuits; otherwise the most probable induced tree's assignment, with
        an :class:`~circuits.ApproximateMPEWarning`."""
        warn_if_approximate(self._circuit, "mode")
        return self._max_product()

    def _max_product(self) -> torch.Tensor:
        """:attr:`mode`, without its warning."""
        ext, evidence = self._base if self._base is not None else (self._logp_ext, None)
        rows = self._rows if evidence is None else evidence.shape[0]
        x = downward.mode(self._plan, ext, evidence, rows)
        return x.reshape(tuple(self.batch_shape) + (self._plan.num_vars,))

    def leave_one_out_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(x_i | x_-i)`` for every ``i``: complete ``value [*sample, *batch, num_vars]``
        -> same shape (:mod:`circuits.leave_one_out`)."""
        plan = self._plan
        value = check_assignment(value, plan, "value", allow_missing=False).to(self._logp_ext.device)
        flat, lead = self._flatten(value, "value")
        params = self._params_for(flat.shape[0])
        out = leave_one_out(plan, params, flat)
        return out.reshape(tuple(lead) + (plan.num_vars,))

    # --- torch.distributions API ------------------------------------------------------------
    @property
    def support(self):
        return torch.distributions.constraints.integer_interval(0, self._plan.max_states - 1)

    def _batched(self, out: torch.Tensor) -> torch.Tensor:
        """``[B', ...]`` -> ``[*batch_shape, ...]`` (B' = 1 for an empty batch shape)."""
        out = out.expand(self._rows, *out.shape[1:])
        return out.reshape(tuple(self.batch_shape) + tuple(out.shape[1:]))

    def __repr__(self) -> str:
        conditioned = ", conditioned" if self._base is not None else ""
        return (f"{type(self).__name__}(batch_shape={list(self.batch_shape)}, "
                f"num_vars={self._plan.num_vars}{conditioned})")


def warn_if_approximate(circuit, query: str) -> None:
    """:class:`~circuits.ApproximateMPEWarning` when ``circuit`` is not deterministic,
    attributed to the caller of ``query``."""
    if not circuit.is_deterministic:
        warnings.warn(f"{query} of a circuit that is not (structurally) deterministic is the "
                      f"max-product approximation (the assignment of the most probable "
                      f"induced tree), not necessarily the most probable assignment",
                      ApproximateMPEWarning, stacklevel=3)


# --- input checks ----------------------------------------------------------------------
def check_assignment(x, plan: Plan, name: str, allow_missing: bool) -> torch.Tensor:
    """Validate a LongTensor ``[..., num_vars]`` of states (-1 = missing when allowed)."""
    if isinstance(x, torch.Tensor) and x.dtype == torch.long and x.dim() and x.shape[-1] == plan.num_vars:
        bounds = plan.__dict__.setdefault("_bounds", {})
        if x.device not in bounds:
            with kept_structure():
                top = torch.tensor(plan.num_states, device=x.device) - 1
                bounds[x.device] = (torch.full_like(top, -1), top)
        low, top = bounds[x.device]
        if torch.equal(x.clamp(low if allow_missing else low + 1, top), x):
            return x
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be an integer tensor [..., {plan.num_vars}], "
                             f"got {type(x).__name__}") from None
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor (torch.long), got dtype {x.dtype}")
    if x.dim() == 0 or x.shape[-1] != plan.num_vars:
        raise ValueError(f"{name} must have shape [..., num_vars={plan.num_vars}], "
                         f"got shape {list(x.shape)}")
    x = x.long()
    high = torch.tensor(plan.num_states, device=x.device)
    low = -1 if allow_missing else 0
    bad = (x < low) | (x >= high)
    if bool(bad.any()):
        where = torch.nonzero(bad)[0].tolist()
        var = where[-1]
        allowed = f"-1 (missing) or 0..{plan.num_states[var] - 1}" if allow_missing \
            else f"0..{plan.num_states[var] - 1}"
        raise ValueError(f"{name}{where}: value {int(x[tuple(where)])} for variable {var} is out "
                         f"of range; expected {allowed}")
    return x


def check_params(params, num_params: int) -> torch.Tensor:
    """Validate state-conditioned logits ``[..., num_params]`` (their values not while
    torch.compile traces)."""
    if not isinstance(params, torch.Tensor) or not params.dtype.is_floating_point:
        got = params.dtype if isinstance(params, torch.Tensor) else type(params).__name__
        raise ValueError(f"params must be a floating-point tensor [B, num_params={num_params}], "
                         f"got {got}")
    if params.dim() < 1 or params.shape[-1] != num_params:
        raise ValueError(f"params must have shape [B, num_params={num_params}], "
                         f"got shape {list(params.shape)}")
    if compiling() or not params.numel() or bool(params.max() < float("inf")):
        return params                   # (a NaN is the max; no branch inside torch.compile)
    bad = torch.isnan(params) | (params == float("inf"))
    if bool(bad.any()):
        where = torch.nonzero(bad)
        first = where[0].tolist()
        value = params[tuple(first)].item()
        rows = where[:, :-1].unique(dim=0).shape[0] if params.dim() > 1 else 1
        raise ValueError(f"params (the logits passed to distribution(params), shape "
                         f"{list(params.shape)}) contains NaN or +inf: {value} at index {first}, "
                         f"in {rows} batch row(s); allowed: finite values or -inf. If a network "
                         f"computed them, its input for those rows is the place to look")
    return params


def check_dtype(dtype) -> torch.dtype:
    """A floating-point ``torch.dtype`` from ``dtype`` (None: torch's default; a name such as
    ``"float64"`` is accepted)."""
    if dtype is None:
        return torch.get_default_dtype()
    named = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(named, torch.dtype) or not named.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype (torch.float32, torch.float64) "
                         f"or its name ('float64'), got {dtype!r}")
    return named


def check_sample_shape(sample_shape) -> torch.Size:
    """A ``torch.Size`` of non-negative ints (a bare int is a 1-d shape)."""
    given = sample_shape
    if isinstance(sample_shape, int) and not isinstance(sample_shape, bool):
        sample_shape = (sample_shape,)
    try:
        if any(isinstance(d, bool) for d in sample_shape):
            raise TypeError
        dims = tuple(operator.index(d) for d in sample_shape)
    except TypeError:
        dims = None
    if dims is None or any(d < 0 for d in dims):
        raise ValueError(f"sample_shape must be a tuple of non-negative ints (or torch.Size), "
                         f"got {given!r}")
    return torch.Size(dims)


def check_generator(generator, device: torch.device) -> torch.Generator | None:
    """``None`` or a ``torch.Generator`` on ``device``'s type."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__} "
                         f"{generator!r}")
    if generator.device.type != torch.device(device).type:
        raise ValueError(f"generator must be on the distribution's device ({torch.device(device)}), "
                         f"got a generator on {generator.device}")
    return generator


def check_scopes(scopes, num_vars: int) -> list[tuple[int, ...]]:
    """Validate a list of scopes: tuples of 2 or 3 distinct variables, all of one length."""
    try:
        scopes = [tuple(int(v) for v in s) for s in scopes]
    except (TypeError, ValueError):
        raise ValueError(f"scopes must be a list of tuples of variable indices, got {scopes!r}") from None
    if not scopes:
        raise ValueError("scopes must not be empty")
    lengths = {len(s) for s in scopes}
    if len(lengths) != 1 or lengths.pop() not in (2, 3):
        raise ValueError(f"scopes must all have 2 or all have 3 variables, got lengths "
                         f"{sorted({len(s) for s in scopes})}")
    for s in scopes:
        if len(set(s)) != len(s) or min(s) < 0 or max(s) >= num_vars:
            raise ValueError(f"scopes: {s} must list distinct variables in 0..{num_vars - 1}")
    return scopes
