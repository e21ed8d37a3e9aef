"""Observations as the training stack reads them: PettingZoo observation dicts flattened
into per-agent arrays ``[n, obs_dim]`` (zero-padded to the largest agent's size) and the
global state ``[state_dim]``.

Used by :class:`~spnpolicy.training.vec_env.ParallelEnvVec` while training, and by an
agent's ``act`` on a dict of observations (:func:`observation_dict`, :func:`global_state`),
so that acting reads exactly what training saw; every trained agent's ``act`` reads its array
input through :func:`agent_input`. Every name here but :func:`agent_input` is also
importable from :mod:`spnpolicy.training.vec_env`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv

__all__ = ["FLAT_SPACES", "agent_input", "flatten_observation", "global_state", "max_obs_dim",
           "observation_dict", "stack_observations"]


def max_obs_dim(env: ParallelEnv) -> int:
    """The largest flattened observation of ``env``'s agents: the padded obs size."""
    return max(_flat_dim(env.observation_space(a), f"observation space of {a}")
               for a in env.possible_agents)


def stack_observations(observations: dict[str, np.ndarray], agents: list[str],
                       obs_dim: int, spaces_of: Mapping[str, spaces.Space] | None = None
                       ) -> np.ndarray:
    """``[n, obs_dim]``: each agent's observation flattened (:func:`flatten_observation`
    with its space from ``spaces_of``; without it, read as a Box) and zero-padded (zeros
    for an agent absent from ``observations``)."""
    out = np.zeros((len(agents), obs_dim), dtype=np.float32)
    for i, agent in enumerate(agents):
        if agent in observations:
            flat = flatten_observation(None if spaces_of is None else spaces_of[agent],
                                       observations[agent])
            out[i, :flat.size] = flat
    return out


def flatten_observation(space: spaces.Space | None, obs: Any) -> np.ndarray:
    """One agent's observation as a float32 vector: a Box's values (also for ``space=None``),
    a ``Discrete``'s one-hot, and for ``MultiDiscrete``, ``MultiBinary``, ``Tuple`` and
    ``Dict`` spaces ``gymnasium.spaces.flatten`` (one-hots and values concatenated)."""
    if space is None or isinstance(space, spaces.Box):
        return np.asarray(obs, dtype=np.float32).reshape(-1)
    return np.asarray(spaces.flatten(space, obs), dtype=np.float32)


def observation_dict(observations: Mapping[str, Any], num_agents: int,
                     obs_dim: int | None) -> np.ndarray:
    """A PettingZoo observation dict ``{agent: obs}`` as the per-agent array ``[n, obs_dim]``
    that an agent's ``act`` takes (rows in the dict's order, each read as a Box, flattened
    and zero-padded; a Discrete observation, a single number, is a ValueError).

    ``obs_dim=None``: the agent reads global states, which a dict of observations does not
    hold; TypeError saying what to pass instead. ValueError for the wrong number of agents,
    an observation longer than ``obs_dim``, or a NaN or infinite entry (naming the agent)."""
    if obs_dim is None:
        raise TypeError("this agent acts on global states [B, state_dim], not on a dict of "
                        "per-agent observations: pass "
                        "spnpolicy.training.vec_env.global_state(env, observations)")
    if len(observations) != num_agents:
        raise ValueError(f"observations hold {len(observations)} agents "
                         f"({', '.join(map(str, observations))}); the agent acts for "
                         f"{num_agents}")
    for agent, obs in observations.items():
        if np.ndim(obs) == 0:   # a Discrete observation: its one-hot needs the space
            raise ValueError(f"observations[{agent!r}] is a single number; act reads "
                             f"observations as training flattened them: "
                             f"flatten_observation(env.observation_space(agent), obs) "
                             f"(spnpolicy.training.vec_env) for each agent")
        if np.size(obs) > obs_dim:
            raise ValueError(f"observations[{agent!r}] has {np.size(obs)} numbers; the agent "
                             f"reads {obs_dim} per agent")
    stacked = stack_observations(dict(observations), list(observations), obs_dim)
    bad = np.argwhere(~np.isfinite(stacked))
    if len(bad):
        row, entry = bad[0]
        raise ValueError(f"observations[{list(observations)[row]!r}] holds {stacked[row, entry]} "
                         f"at entry {entry}: act needs finite observations (no NaN or inf)")
    return stacked


def agent_input(observations: Any, shape: tuple[int, ...], device: torch.device
                ) -> tuple[torch.Tensor, bool]:
    """What a trained agent's ``act`` reads: ``observations`` (array, list or tensor) holding
    one input of ``shape`` or a batch of them, as a float32 tensor ``[B, *shape]`` on
    ``device``, and whether one input was given (``B = 1``).

    ``shape``: ``(n, obs_dim)`` for per-agent observations, ``(state_dim,)`` for global
    states. ValueError for any other shape, and for a NaN or infinite entry (after the
    conversion to float32), naming its index in ``observations`` and what it is: a network
    maps such an input to actions without complaint.

    >>> agent_input([[0.5, 1.0]], (2,), torch.device("cpu"))
    (tensor([[0.5000, 1.0000]]), False)
    """
    if len(shape) == 2:
        what, parts = "per-agent observations [B, n, obs_dim]", ("input", "agent", "entry")
    else:
        what, parts = "global states [B, state_dim]", ("state", "entry")
    x = torch.as_tensor(observations if isinstance(observations, torch.Tensor)
                        else np.asarray(observations), dtype=torch.float32, device=device)
    single = x.dim() == len(shape)
    x = x.unsqueeze(0) if single else x
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"observations must be {what} = [B, {', '.join(map(str, shape))}] "
                         f"or one of them, got shape {list(np.shape(observations))}")
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        first = torch.nonzero(bad)[0].tolist()
        value = x[tuple(first)].item()
        index, parts = (first[1:], parts[1:]) if single else (first, parts)  # as given
        where = ", ".join(f"{part} {i}" for part, i in zip(parts, index))
        rows = int(bad.flatten(1).any(1).sum())
        raise ValueError(f"observations{index} is {value} ({what}: {where}; {rows} of "
                         f"{x.shape[0]} inputs hold NaN or inf): act needs finite inputs")
    return x, single


def global_state(env: ParallelEnv, observations: dict[str, np.ndarray],
                 obs_dim: int | None = None) -> np.ndarray:
    """The state the training stack sees ``[state_dim]``: ``env.state()`` flattened, else
    the agents' padded observations (:func:`stack_observations`) concatenated."""
    try:
        return np.asarray(env.state(), dtype=np.float32).reshape(-1)
    except NotImplementedError:
        agents = list(env.possible_agents)
        obs_dim = max_obs_dim(env) if obs_dim is None else obs_dim
        return stack_observations(observations, agents, obs_dim,
                                  {a: env.observation_space(a) for a in agents}).reshape(-1)


#: observation spaces the training stack flattens (:func:`flatten_observation`)
FLAT_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def _flat_dim(space: spaces.Space, what: str) -> int:
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    parts = list(space.spaces.values()) if isinstance(space, spaces.Dict) else \
        list(space.spaces) if isinstance(space, spaces.Tuple) else [space]
    for part in parts:
        if isinstance(part, (spaces.Dict, spaces.Tuple)):
            _flat_dim(part, what)
        elif not isinstance(part, FLAT_SPACES):
            raise ValueError(f"{what} must be a gymnasium Box, Discrete, MultiDiscrete, "
                             f"MultiBinary, or a Tuple / Dict of them; got {space}")
    return int(spaces.flatdim(space))
