"""Input checks for circuit queries: every error names the argument, what was expected and
what was given."""

from __future__ import annotations

import torch

from circuits.compile import Plan

__all__ = ["check_assignment", "check_params", "check_scopes"]


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
    if bool(torch.isnan(params).any()) or bool((params == float("inf")).any()):
        bad = torch.nonzero(torch.isnan(params) | (params == float("inf")))[0].tolist()
        raise ValueError(f"params contains NaN or +inf (first at index {bad})")
    return params


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
