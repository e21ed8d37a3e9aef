"""Argument checks shared by the environments: each raises one `ValueError` that names the
argument, what was expected and what was given."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable

import numpy as np


def as_integer(value: object) -> int | None:
    """`value` as a Python int (``operator.index``), or None for a bool or a non-integer."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_int(name: str, value: object, minimum: int) -> int:
    """`value` as a Python int >= `minimum` (bools refused), else a ValueError naming `name`."""
    number = as_integer(value)
    if number is None:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {number}")
    return number


def check_number(name: str, value: object, minimum: float | None = None) -> float:
    """`value` as a finite float (>= `minimum` when given; bools refused), else a ValueError
    naming `name`."""
    expected = f"{name} must be a finite number" + (f" >= {minimum:g}" if minimum is not None
                                                    else "")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{expected}, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or (minimum is not None and number < minimum):
        raise ValueError(f"{expected}, got {value!r}")
    return number


def check_indices(name: str, value: object, size: int) -> tuple[int, ...]:
    """`value`, a collection of indices in [0, size), as a sorted tuple without repeats."""
    expected = f"{name} must be a collection of indices in [0, {size}), got {value!r}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(expected)
    indices = set()
    for index in value:
        index = as_integer(index)
        if index is None or not 0 <= index < size:
            raise ValueError(expected)
        indices.add(index)
    return tuple(sorted(indices))


def check_joint_action(actions: object, live_agents: list[str], num_actions: int) -> list[int]:
    """The actions of `live_agents`, in their order, from a PettingZoo `actions` dict.

    Every live agent needs exactly one integer action in [0, num_actions); a finished
    episode (no live agents) raises RuntimeError.
    """
    if not live_agents:
        raise RuntimeError("step() called on a finished episode; call reset() first")
    if not isinstance(actions, dict) or set(actions) != set(live_agents):
        given = sorted(actions) if isinstance(actions, dict) else type(actions).__name__
        raise ValueError(f"actions must be a dict with one action for each agent in "
                         f"{live_agents}, got {given}")
    joint = []
    for agent in live_agents:
        action = actions[agent]
        if (np.ndim(action) != 0 or not np.issubdtype(np.asarray(action).dtype, np.integer)
                or not 0 <= action < num_actions):
            raise ValueError(f"actions[{agent!r}] must be an integer in [0, {num_actions}), "
                             f"got {action!r}")
        joint.append(int(action))
    return joint


def check_joint_actions(actions, num_envs: int, num_agents: int, num_actions: int) -> np.ndarray:
    """`actions` as an integer array `[num_envs, num_agents]` in `[0, num_actions)`."""
    actions = np.asarray(actions)
    expected = (num_envs, num_agents)
    if actions.shape != expected or not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(f"actions must be an integer array of shape {expected}, "
                         f"got {actions.dtype} {actions.shape}")
    if actions.min() < 0 or actions.max() >= num_actions:
        raise ValueError(f"actions must lie in [0, {num_actions}), got values in "
                         f"[{actions.min()}, {actions.max()}]")
    return actions
