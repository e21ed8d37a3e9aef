"""Input checks for circuit queries: every error names the argument, what was expected and
what was given."""

from __future__ import annotations

import operator

import torch

from circuits.compile import Plan

__all__ = ["check_assignment", "check_dtype", "check_generator", "check_params", "check_sample_shape",
           "check_scopes"]


def check_assignment(x, plan: Plan, name: str, allow_missing: bool) -> torch.Tensor:
    """Validate a LongTensor ``[..., num_vars]`` of states (-1 = missing when allowed)."""
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
    """Validate state-conditioned logits ``[..., num_params]``."""
    if not isinstance(params, torch.Tensor) or not params.dtype.is_floating_point:
        got = params.dtype if isinstance(params, torch.Tensor) else type(params).__name__
        raise ValueError(f"params must be a floating-point tensor [B, num_params={num_params}], "
                         f"got {got}")
    if params.dim() < 1 or params.shape[-1] != num_params:
        raise ValueError(f"params must have shape [B, num_params={num_params}], "
                         f"got shape {list(params.shape)}")
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
