"""The VMAS scenarios the toolkit serves (`vmas/<task>`), with their global states and the
discrete move table; see :mod:`spnpolicy.envs.vmas` for the tasks' documentation.

Every task is a VMAS scenario with holonomic point agents; an agent's move is a pair of
per-axis choices (0 none, 1 negative, 2 positive: VMAS's multi-discrete action, a force of
plus or minus the agent's `u_range` along that axis). `MOVES` `[5, 2]` are the moves
noop, left, right, down, up; with `diagonal_moves` `MOVES_DIAGONAL` `[9, 2]` adds
left-down, left-up, right-down, right-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ACTION_NAMES", "ACTION_NAMES_DIAGONAL", "MOVES", "MOVES_DIAGONAL", "TASKS",
           "VmasTask"]

ACTION_NAMES = ("noop", "left", "right", "down", "up")
ACTION_NAMES_DIAGONAL = (*ACTION_NAMES, "left-down", "left-up", "right-down", "right-up")
# per-axis choices (x, y): 0 none, 1 towards -inf, 2 towards +inf
MOVES = torch.tensor([[0, 0], [1, 0], [2, 0], [0, 1], [0, 2]])
MOVES_DIAGONAL = torch.cat([MOVES, torch.tensor([[1, 1], [1, 2], [2, 1], [2, 2]])])


@dataclass(frozen=True)
class VmasTask:
    """One VMAS scenario as a task of the toolkit."""

    scenario: str
    """VMAS's scenario name."""
    arguments: tuple[str, ...]
    """The scenario's keyword arguments besides ``n_agents`` (VMAS's defaults apply)."""
    state: Callable[[Any], torch.Tensor]
    """The global state of a VMAS ``Environment``'s copies, ``[E, state_dim]`` float32."""
    state_layout: str
    """What ``state`` holds, in order."""
    success: str
    """When the scenario ends in success (its ``done()``)."""
    goal: str
    """The team's goal, one line."""


def _moving(entity) -> list[torch.Tensor]:
    return [entity.state.pos, entity.state.vel]


def _flag(value: torch.Tensor) -> torch.Tensor:
    return value.to(torch.float32).unsqueeze(-1)


def _dispersion_state(env) -> torch.Tensor:
    world = env.world
    parts = [p for agent in world.agents for p in _moving(agent)]
    parts += [p for food in world.landmarks for p in (food.state.pos, _flag(food.eaten))]
    return torch.cat(parts, dim=-1)


def _navigation_state(env) -> torch.Tensor:
    parts = [p for agent in env.world.agents for p in (*_moving(agent), agent.goal.state.pos)]
    return torch.cat(parts, dim=-1)


def _transport_state(env) -> torch.Tensor:
    world, packages = env.world, env.scenario.packages
    parts = [p for agent in world.agents for p in _moving(agent)]
    parts.append(world.landmarks[0].state.pos)  # the goal
    parts += [p for package in packages for p in (*_moving(package), _flag(package.on_goal))]
    return torch.cat(parts, dim=-1)


TASKS: dict[str, VmasTask] = {
    "dispersion": VmasTask(
        "dispersion",
        ("n_food", "share_reward", "penalise_by_time", "food_radius", "pos_range"),
        _dispersion_state,
        "per agent its position and velocity (4 floats), then per food its position and "
        "whether it is eaten (3 floats)",
        "every food has been eaten",
        "the agents start together at the centre and must spread out to eat n_food foods "
        "(default n_agents) placed at random"),
    "navigation": VmasTask(
        "navigation",
        ("collisions", "world_spawning_x", "world_spawning_y", "enforce_bounds",
         "agents_with_same_goal", "split_goals", "observe_all_goals", "lidar_range",
         "agent_radius", "comms_range", "n_lidar_rays", "shared_rew", "pos_shaping_factor",
         "final_reward", "agent_collision_penalty"),
        _navigation_state,
        "per agent its position, velocity and goal position (6 floats)",
        "every agent is on its goal",
        "each agent must reach its own goal without colliding with the others; rewards "
        "for progress towards the goals, a penalty per collision"),
    "transport": VmasTask(
        "transport",
        ("n_packages", "package_width", "package_length", "package_mass"),
        _transport_state,
        "per agent its position and velocity (4 floats), the goal's position (2), then "
        "per package its position, velocity and whether it is on the goal (5 floats)",
        "every package is on the goal",
        "the agents must push packages too heavy for one of them (package_mass 50) onto a "
        "goal together; reward for the packages' progress towards it"),
}
