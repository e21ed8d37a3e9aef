"""Rules of the predator-prey gridworld with punishment as batched numpy functions.

The PettingZoo environment (`predator_prey_v0`, one copy) and the vectorised twin
(`predator_prey_vec`, `E` copies) both call these functions on a `World` with a leading
`[E]` axis (`E = 1` for the PettingZoo env), so the two can only differ in bookkeeping
(seeding, resets), which the tests compare step for step. The rules themselves are
documented in `predator_prey_v0`.

Shapes: `E` copies, `n` predators (the agents), `m` prey, `G = grid_size`, window side
`w = 2 obs_radius + 1`; positions are int64 `(row, col)` pairs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import numpy as np

from spnpolicy.envs.validation import check_int, check_number

ACTION_NAMES = ("up", "down", "left", "right", "stay", "catch")
NUM_ACTIONS = len(ACTION_NAMES)
UP, DOWN, LEFT, RIGHT, STAY, CATCH = range(NUM_ACTIONS)
# (row, col) displacement of each action; "up" decreases the row index.
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1], [0, 0], [0, 0]], dtype=np.int64)
#: The 24 orders in which a prey can try its four moves (indices into `MOVES`).
PREY_ORDERS = np.array(list(itertools.permutations(range(4))), dtype=np.int64)
CHANNELS = ("predators", "prey")
STATES = ("agents", "grid")


@dataclass(frozen=True)
class PredatorPreyConfig:
    """Validated settings of one predator-prey gridworld (meaning in `predator_prey_v0`).

    The field defaults are the DCG paper's relative-overgeneralisation task and the
    defaults of `predator_prey_v0.parallel_env` and `PredatorPreyVecEnv`.
    """

    num_agents: int = 8
    """Predators, the learning agents (a capture needs two)."""
    num_prey: int = 8
    """Prey, moving at random."""
    grid_size: int = 10
    """Cells per side of the square, bounded grid."""
    obs_radius: int = 2
    """A predator sees the `(2 obs_radius + 1)^2` cells centred on itself."""
    punishment: float = 2.0
    """Magnitude p >= 0: a lone capture attempt adds `-punishment` to the team reward."""
    capture_reward: float = 10.0
    """Team reward for each captured prey."""
    max_steps: int = 200
    """Episodes are truncated after this many steps."""
    state: str = "agents"
    """Global state layout: "grid" (the paper's: the two channels over the grid, which do not
    say which predator is where) or "agents" (the grid, then each predator's observation
    window and the one-hot row and column of its cell, in agent order)."""

    def __post_init__(self) -> None:
        n = check_int("num_agents", self.num_agents, 2)
        m = check_int("num_prey", self.num_prey, 1)
        size = check_int("grid_size", self.grid_size, 2)
        if size * size < n + m:
            raise ValueError(
                f"grid_size must be >= {math.isqrt(n + m - 1) + 1} so that num_agents={n} "
                f"predators and num_prey={m} prey fit on distinct cells (grid_size**2 >= "
                f"{n + m}), got grid_size={size}")
        object.__setattr__(self, "num_agents", n)
        object.__setattr__(self, "num_prey", m)
        object.__setattr__(self, "grid_size", size)
        object.__setattr__(self, "obs_radius", check_int("obs_radius", self.obs_radius, 0))
        object.__setattr__(self, "punishment", check_number("punishment", self.punishment, 0))
        object.__setattr__(self, "capture_reward",
                           check_number("capture_reward", self.capture_reward))
        object.__setattr__(self, "max_steps", check_int("max_steps", self.max_steps, 1))
        if self.state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {self.state!r}")

    @property
    def window(self) -> int:
        """Side `w = 2 obs_radius + 1` of a predator's view."""
        return 2 * self.obs_radius + 1

    @property
    def state_dim(self) -> int:
        """Length of the global state: `2 G^2` (two channels over the grid), plus
        `n (2 w^2 + 2 G)` with `state="agents"`."""
        grid = len(CHANNELS) * self.grid_size ** 2
        if self.state == "grid":
            return grid
        return grid + self.num_agents * (self.obs_dim + 2 * self.grid_size)

    @property
    def obs_dim(self) -> int:
        """Length of one predator's observation: `2 w^2` (two channels over its window)."""
        return len(CHANNELS) * self.window ** 2

    @property
    def draws_per_step(self) -> int:
        """Uniforms one step consumes: `n` predator-order keys, `m` prey-order keys and
        `m` picks of the order in which each prey tries its moves."""
        return self.num_agents + 2 * self.num_prey


class World:
    """Positions and presence of every entity of `E` copies (arrays written in place by
    the vectorised env's resets; `step` returns a new `World`).

    Attributes:
        predators: `[E, n, 2]` int64 cells.
        active: `[E, n]` bool, False once a predator took part in a capture (it left the
            grid: it no longer blocks, is seen, moves or catches).
        prey: `[E, m, 2]` int64 cells.
        alive: `[E, m]` bool, False once captured.
    """

    __slots__ = ("predators", "active", "prey", "alive")

    def __init__(self, predators: np.ndarray, active: np.ndarray, prey: np.ndarray,
                 alive: np.ndarray) -> None:
        self.predators, self.active, self.prey, self.alive = predators, active, prey, alive

    @classmethod
    def empty(cls, num_envs: int, config: PredatorPreyConfig) -> World:
        n, m = config.num_agents, config.num_prey
        return cls(np.zeros((num_envs, n, 2), dtype=np.int64), np.ones((num_envs, n), bool),
                   np.zeros((num_envs, m, 2), dtype=np.int64), np.ones((num_envs, m), bool))

    def captures(self) -> np.ndarray:
        """`[E]` int64 prey captured since reset."""
        return (~self.alive).sum(axis=-1)


class Outcome(NamedTuple):
    """What one step did, per copy (all `[E]`)."""

    reward: np.ndarray       #: float32: capture_reward * captured - punishment * lone
    captured: np.ndarray     #: int64 prey captured this step
    lone: np.ndarray         #: int64 prey that exactly one predator tried to catch
    terminated: np.ndarray   #: bool: every prey captured, or every predator gone


def sample_layout(rng: np.random.Generator,
                  config: PredatorPreyConfig) -> tuple[np.ndarray, np.ndarray]:
    """One episode's start: `(predators [n, 2], prey [m, 2])` on n + m distinct cells, drawn
    uniformly by `rng.choice(G^2, n + m, replace=False)` (cells numbered row-major; the
    first n are the predators')."""
    size, n = config.grid_size, config.num_agents
    cells = rng.choice(size * size, size=n + config.num_prey, replace=False)
    positions = np.stack(np.divmod(cells, size), axis=-1).astype(np.int64)
    return positions[:n], positions[n:]


def draw_step(rng: np.random.Generator, config: PredatorPreyConfig) -> np.ndarray:
    """The uniforms `[draws_per_step]` in [0, 1) that one step of one copy consumes."""
    return rng.random(config.draws_per_step)


@cache
def _walls(num_envs: int, size: int) -> np.ndarray:
    """`[E (G + 2)^2]` bool, read-only: True on the border ring of every copy's padded grid."""
    ring = np.ones((size + 2, size + 2), dtype=bool)
    ring[1:-1, 1:-1] = False
    walls = np.tile(ring.ravel(), num_envs)
    walls.flags.writeable = False
    return walls


def _cells(positions: np.ndarray, size: int) -> np.ndarray:
    """Cell numbers `[E, k]` of positions `[E, k, 2]`: `e (G + 2)^2 + (row + 1)(G + 2) + col + 1`,
    every copy's grid inside a border ring of its own."""
    side = size + 2
    first = (np.arange(len(positions)) * side * side)[:, None]
    return first + (positions[..., 0] + 1) * side + positions[..., 1] + 1


def _positions(cells: np.ndarray, size: int) -> np.ndarray:
    """Inverse of `_cells`: positions `[E, k, 2]` of cell numbers `[E, k]`."""
    side = size + 2
    return cells[..., None] // np.array([side, 1]) % side - 1


@cache
def _prey_tries(size: int) -> np.ndarray:
    """`[24, 4]` cell-number offsets of the four prey moves in each order of `PREY_ORDERS`."""
    side = size + 2
    return np.array([-side, side, -1, 1])[PREY_ORDERS]


def step(world: World, actions: np.ndarray, uniforms: np.ndarray,
         config: PredatorPreyConfig) -> tuple[World, Outcome]:
    """Advance every copy by the joint actions `[E, n]` with the uniforms `[E, draws_per_step]`
    (`draw_step`); returns the new `World` (the input is not modified) and the `Outcome`.

    Predators move one at a time in the order of `argsort(uniforms[:, :n])`, then prey take
    their turns in the order of `argsort(uniforms[:, n:n + m])`; the prey of turn t tries
    its four moves in the order `PREY_ORDERS[floor(24 uniforms[:, n + m + t])]` and takes
    the first free one (a uniform choice among the free ones). Turns run in lockstep over
    copies, on arrays put in turn order once.
    """
    n, m, size = config.num_agents, config.num_prey, config.grid_size
    E = len(actions)
    column = np.arange(E)[:, None]
    side = size + 2
    # cells as numbered by `_cells`; the border ring is always taken, so a move off the grid
    # is a move into a taken cell, and cell 0 (a corner of it) stands for "no move"
    occupied = _walls(E, size).copy()
    catching = actions == CATCH
    predator_cells = _cells(world.predators, size)                     # [E, n]
    prey_cells = _cells(world.prey, size)                              # [E, m]
    occupied[predator_cells[world.active]] = True
    occupied[prey_cells[world.alive]] = True

    order = np.argsort(uniforms[:, :n], axis=1)                        # [E, n] turn -> predator
    source = predator_cells[column, order]                             # [E, n] in turn order
    chosen = actions[column, order]
    step_of = np.array([-side, side, -1, 1, 0, 0])                     # cell offset per action
    target = np.where(world.active[column, order] & (chosen < STAY),
                      source + step_of[chosen], 0)
    moved = np.zeros((E, n), dtype=bool)
    for t in range(n):
        go = ~occupied[target[:, t]]
        occupied[np.where(go, source[:, t], 0)] = False               # leave, then enter: cell
        occupied[np.where(go, target[:, t], 0)] = True                # 0 ends up taken again
        moved[:, t] = go
    predator_cells[column, order] = np.where(moved, target, source)

    active = world.active.copy()
    order = np.argsort(uniforms[:, n:n + m], axis=1)                   # [E, m] turn -> prey
    source = prey_cells[column, order]                                 # [E, m] in turn order
    alive = world.alive[column, order]
    pick = (uniforms[:, n + m:] * len(PREY_ORDERS)).astype(np.int64)   # [E, m] order of tries
    target = source[..., None] + _prey_tries(size)[pick]               # [E, m, 4]
    # [E, m, n]: predator i chose catch and is 4-adjacent to the prey of turn t (two cells
    # of a grid are 4-adjacent when their numbers differ by 1 or G + 2; prey move only on
    # their own turn and predators no longer move, so this holds until that turn)
    gap = np.abs(source[..., None] - predator_cells[:, None, :])
    adjacent = ((gap == 1) | (gap == side)) & catching[:, None]
    contested = np.flatnonzero(((adjacent & active[:, None]).any(axis=-1) & alive).any(axis=0))
    contested = set(contested.tolist())
    counts = np.zeros((E, m), dtype=np.int64)                          # catchers of live prey
    for t in range(m):
        if t in contested:
            catchers = adjacent[:, t] & active                         # [E, n]
            counts[:, t] = np.where(alive[:, t], catchers.sum(axis=-1), 0)
            caught = counts[:, t] >= 2
            if caught.any():
                alive[caught, t] = False
                occupied[source[caught, t]] = False
                leaving = catchers & caught[:, None]                   # [E, n]
                active &= ~leaving
                occupied[predator_cells[leaving]] = False
        # a live prey moves to its first free cell in its order, if it has one
        free = ~occupied[target[:, t]]                                 # [E, 4]
        cell = target[column[:, 0], t, free.argmax(axis=-1)]
        go = alive[:, t] & ~occupied[cell]
        occupied[np.where(go, source[:, t], 0)] = False
        occupied[np.where(go, cell, 0)] = True
        source[:, t] = np.where(go, cell, source[:, t])
    prey_cells[column, order] = source
    still = np.empty_like(world.alive)
    still[column, order] = alive

    captures, lones = (counts >= 2).sum(axis=-1), (counts == 1).sum(axis=-1)
    reward = (config.capture_reward * captures - config.punishment * lones).astype(np.float32)
    terminated = ~still.any(axis=-1) | ~active.any(axis=-1)
    world = World(_positions(predator_cells, size), active, _positions(prey_cells, size), still)
    return world, Outcome(reward, captures, lones, terminated)


def grids(world: World, config: PredatorPreyConfig, margin: int = 0) -> np.ndarray:
    """`[E, 2, G + 2 margin, G + 2 margin]` float32: 1.0 on the cells of active predators
    (channel 0) and of live prey (channel 1), inside a border of `margin` empty cells."""
    side = config.grid_size + 2 * margin
    out = np.zeros((len(world.active), len(CHANNELS), side, side), dtype=np.float32)
    for channel, (positions, present) in enumerate(((world.predators, world.active),
                                                    (world.prey, world.alive))):
        copies, _ = np.nonzero(present)
        cells = positions[present] + margin
        out[copies, channel, cells[:, 0], cells[:, 1]] = 1.0
    return out


def global_state(world: World, config: PredatorPreyConfig) -> np.ndarray:
    """Global states `[E, state_dim]` float32: `grids` flattened (channel, row, col); with
    `state="agents"` then, per predator in agent order, its `observations` row and the
    one-hot row `[G]` and column `[G]` of its cell (zeros once it has left the grid)."""
    E = len(world.active)
    grid = grids(world, config).reshape(E, -1)
    if config.state == "grid":
        return grid
    size = config.grid_size
    cells = np.zeros((E, config.num_agents, 2, size), dtype=np.float32)
    copies, agents = np.nonzero(world.active)
    rows, cols = world.predators[copies, agents].T
    cells[copies, agents, 0, rows] = 1.0
    cells[copies, agents, 1, cols] = 1.0
    agents = np.concatenate([observations(world, config), cells.reshape(E, config.num_agents, -1)],
                            axis=-1)
    return np.concatenate([grid, agents.reshape(E, -1)], axis=-1)


def observations(world: World, config: PredatorPreyConfig) -> np.ndarray:
    """Per-predator observations `[E, n, 2 w^2]` float32: the `[2, w, w]` window of `grids`
    centred on the predator (channel, row, col; cells off the grid read 0), all zeros for a
    predator that is no longer active."""
    E, w = len(world.active), config.window
    padded = grids(world, config, margin=config.obs_radius)
    # window (e, c, y, x) is the w x w block of padded whose top-left corner is (y, x): the
    # one centred on grid cell (y, x)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (w, w), axis=(2, 3))
    view = windows[np.arange(E)[:, None], :, world.predators[..., 0], world.predators[..., 1]]
    view = view * world.active[:, :, None, None, None]                 # [E, n, 2, w, w]
    return view.reshape(E, config.num_agents, config.obs_dim)
