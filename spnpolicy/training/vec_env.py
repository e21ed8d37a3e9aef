"""A small vectorised multi-agent environment protocol and its adapters.

Training code sees every environment as ``E`` copies stepped together with a fixed number
of agents ``n`` that all act every step:

```python
envs = make_vec_env("coverage", num_envs=8, seed=0, num_agents=3, grid_size=6)
state, obs = envs.reset()               # [E, state_dim], [E, n, obs_dim] float32
out = envs.step(actions)                # actions [E, n] ints -> VecStep
```

Copies reset themselves when their episode ends (auto-reset): ``VecStep.state`` / ``obs``
are then the first state / observations of the next episode, and ``final_state`` /
``final_obs`` the last ones of the episode that ended (what a replay buffer stores as the
next state). Rewards are team rewards, counted once per step.

- :class:`BatchedVec` wraps a batched numpy env: :class:`CoverageVec` the
  :class:`~spnpolicy.envs.CoverageVecEnv`, :class:`PredatorPreyVec` the
  :class:`~spnpolicy.envs.predator_prey_vec.PredatorPreyVecEnv`, :class:`VmasVec` the
  VMAS tasks' :class:`~spnpolicy.envs.vmas_vec.VmasVecEnv` (one torch batch).
- :class:`ParallelEnvVec` steps ``E`` copies of any PettingZoo ``ParallelEnv`` in a loop.

All support ``state_dict()`` / ``load_state_dict()`` for exact resumption of a run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from spnpolicy.envs import CoverageVecEnv, coverage_core, make_env
from spnpolicy.envs.predator_prey_vec import PredatorPreyVecEnv
from spnpolicy.envs.registry import VMAS_PREFIX
from spnpolicy.envs.vmas_tasks import TASKS as VMAS_TASKS
from spnpolicy.envs.vmas_vec import VmasVecEnv
from spnpolicy.envs.validation import check_joint_actions
from spnpolicy.training.observations import (  # noqa: F401  (also importable from here)
    FLAT_SPACES, flatten_observation, global_state, max_obs_dim, observation_dict,
    stack_observations)

__all__ = ["VecEnv", "VecStep", "BatchedVec", "CoverageVec", "PredatorPreyVec", "ParallelEnvVec",
           "VmasVec", "make_vec_env"]


class VecStep(NamedTuple):
    """One step of ``E`` copies (``n`` agents); arrays have a leading ``[E]`` axis."""

    state: np.ndarray        #: [E, state_dim] float32, after any auto-reset
    obs: np.ndarray          #: [E, n, obs_dim] float32, after any auto-reset
    reward: np.ndarray       #: [E] float32 team reward of the step
    terminated: np.ndarray   #: [E] bool
    truncated: np.ndarray    #: [E] bool
    final_state: np.ndarray  #: [E, state_dim] state the step reached, before any reset
    final_obs: np.ndarray    #: [E, n, obs_dim] observations the step reached
    success: np.ndarray      #: [E] bool task success flag of the step (False if undefined)
    #: [E, n] the joint actions the env executed, where it may override the chosen ones
    #: (an agent that failed this step); None when it executed what it was given
    executed: np.ndarray | None = None


class VecEnv(Protocol):
    """What the runner, buffer and evaluation need from a batch of environments."""

    num_envs: int
    num_agents: int
    num_actions: int
    state_dim: int
    obs_dim: int
    has_success: bool  # whether VecStep.success is meaningful for this env
    can_copy: bool  # whether copy_copies works (one copy set to another's state)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def step(self, actions: np.ndarray) -> VecStep: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]: ...

    def settled(self) -> np.ndarray | None:
        """``[E, n]`` bool: the agents whose own part of the task is done in the current
        state (coverage: standing on a goal); ``None`` for an env with no such notion."""
        ...

    def copy_copies(self, source: np.ndarray, target: np.ndarray) -> None:
        """Set the copies ``target [m]`` to the current states of the copies ``source [m]``
        (each keeps its own random generator); ValueError where the env cannot
        (``can_copy`` is False)."""
        ...

    def close(self) -> None: ...


class BatchedVec:
    """A batched numpy env behind the :class:`VecEnv` protocol; a subclass names the env.

    The env, ``env_class(num_envs, seed=seed, **env_kwargs)``, has the attributes of
    :class:`VecEnv` and ``reset(seed) -> obs``, ``state()``, ``step(actions) -> (obs,
    reward, terminated, truncated, info)`` with auto-reset (``info`` holding
    ``final_state``, ``final_observation`` and ``success``), and ``snapshot()`` /
    ``restore(snapshot) -> obs``, as :class:`~spnpolicy.envs.CoverageVecEnv` has.
    """

    env_class: Callable[..., Any]
    has_success = True

    def __init__(self, num_envs: int, seed: int | None = None, **env_kwargs: Any) -> None:
        self.env = self.env_class(num_envs, seed=seed, **env_kwargs)
        self.num_envs, self.num_agents = self.env.num_envs, self.env.num_agents
        self.num_actions, self.state_dim = self.env.num_actions, self.env.state_dim
        self.obs_dim = self.env.obs_dim

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        obs = self.env.reset(seed=seed)
        return self.env.state(), obs

    def step(self, actions: np.ndarray) -> VecStep:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        return VecStep(self.env.state(), obs, reward, terminated, truncated,
                       info["final_state"], info["final_observation"], info["success"])

    def state_dict(self) -> dict[str, Any]:
        """The env's snapshot: its copies' state and every copy's generator state."""
        return self.env.snapshot()

    def load_state_dict(self, state: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        obs = self.env.restore(state)
        return self.env.state(), obs

    def settled(self) -> np.ndarray | None:
        """None: the env reports no per-agent progress (a subclass may)."""
        return None

    @property
    def can_copy(self) -> bool:
        """Whether :meth:`copy_copies` works: the env has ``copy_copies(source, target)``."""
        return hasattr(self.env, "copy_copies")

    def copy_copies(self, source: np.ndarray, target: np.ndarray) -> None:
        if not self.can_copy:
            raise ValueError(f"{type(self.env).__name__} cannot set one copy to another's "
                             f"state (it has no copy_copies)")
        self.env.copy_copies(source, target)

    def close(self) -> None:
        """Nothing to release."""


class CoverageVec(BatchedVec):
    """:class:`~spnpolicy.envs.CoverageVecEnv` behind the :class:`VecEnv` protocol, with the
    goal relabelling and potential that hindsight and shaping use.

    Arguments are ``CoverageVecEnv``'s. ``success`` is the env's ``info["success"]``
    (every goal holds an agent).
    """

    env_class = CoverageVecEnv

    def relabel_goals(self, states: np.ndarray, goal_states: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Hindsight goals for :class:`~spnpolicy.training.Hindsight`: ``states [M, S]``
        with the goals on the agents' cells in ``goal_states [M, S]``, in a random order.

        Returns ``(states [M, S], obs [M, n, obs_dim], reward [M], terminated [M],
        valid [M])``: the reward and termination of a step arriving in each relabelled state
        (the env's reward; only ``sparse`` terminates), and whether the row is ``valid``
        (its agents occupy distinct cells in ``goal_states``, as goals must).
        """
        order = rng.permuted(np.broadcast_to(np.arange(self.num_agents),
                                             (len(states), self.num_agents)), axis=-1)
        relabelled, reward, terminated, valid = coverage_core.relabel_goals(
            states, goal_states, order, self.env.config)
        obs = coverage_core.observations(relabelled, self.env.config)
        return relabelled, obs, reward, terminated, valid

    def potential(self, states: np.ndarray) -> np.ndarray:
        """The env's ``infos["potential"]`` of global states ``[M, S]`` -> ``[M]`` float64
        (for :class:`~spnpolicy.training.shaping.PotentialShaping`)."""
        return coverage_core.state_potential(states, self.env.config)

    def settled(self) -> np.ndarray:
        """``[E, n]`` bool: the agents standing on a goal now."""
        return self.env.settled()

    def agent_positions(self, states):
        """The agents' cells ``[M, n, 2]`` (row, column, as floats) in global states ``[M,
        S]``, a numpy array or a torch tensor (returned as the same kind)."""
        n, size = self.num_agents, self.env.config.grid_size
        return states[..., : 2 * n].reshape(*states.shape[:-1], n, 2) * size


class PredatorPreyVec(BatchedVec):
    """:class:`~spnpolicy.envs.predator_prey_vec.PredatorPreyVecEnv` behind the
    :class:`VecEnv` protocol.

    Arguments are ``PredatorPreyVecEnv``'s. ``success`` is the env's ``info["success"]``
    (every prey captured).
    """

    env_class = PredatorPreyVecEnv


class VmasVec(BatchedVec):
    """:class:`~spnpolicy.envs.vmas_vec.VmasVecEnv` (a VMAS task's copies stepped as one
    torch batch) behind the :class:`VecEnv` protocol.

    Arguments are ``VmasVecEnv``'s (``task`` and the task's). ``success`` is the env's
    ``info["success"]`` (the scenario's ``done()``: its goal reached).
    """

    env_class = VmasVecEnv


class ParallelEnvVec:
    """``num_envs`` copies of a PettingZoo ``ParallelEnv`` stepped in a Python loop.

    Args:
        env_fn: makes one environment.
        num_envs: number of copies ``E``.
        seed: copy ``e``'s ``j``-th episode is reset with a seed drawn from
            ``SeedSequence([seed, e, j])``, so runs are reproducible and a copy's state can
            be rebuilt from its episode seed and the actions taken since (how
            :meth:`load_state_dict` restores exactly, for any env that is deterministic
            given its reset seed and actions, as ``parallel_seed_test`` checks).
            ``None`` leaves episodes unseeded (and restores approximately: episodes in
            flight restart).

    Conventions (all agents in ``possible_agents`` act every step):
        - actions: every agent a ``Discrete`` space; ``k`` is the largest ``n``, and an
          agent with ``n_i < k`` actions executes ``start_i + a % n_i`` for ``a`` in
          ``range(k)`` (its actions repeat: no mask is needed, and every ``a`` is valid).
        - obs: each agent's observation flattened (zero-padded to the largest): a Box's
          values, a Discrete's one-hot, MultiDiscrete / MultiBinary / Tuple / Dict spaces
          as ``gymnasium.spaces.flatten`` gives them; agents that already left the episode
          observe zeros and their actions are dropped.
        - state: ``env.state()`` flattened when the env implements it, else the
          concatenation of all agents' observations.
        - team reward: ``infos[agent]["team_reward"]`` when any agent's info has it (the
          toolkit's envs do), else the **mean** of the agents' rewards (equal to the common
          reward when every agent receives the same one).
        - an episode ends when every agent is terminated or truncated; it counts as
          terminated if any agent terminated.
        - success: the step's ``infos[agent]["success"]``, else ``["optimal"]`` (matrix
          games: the joint action was optimal), else False.
        - executed actions: ``infos[agent]["executed_action"]`` where the env reports one
          (it overrode the chosen action), else the chosen action.
        - shaping (``shaping=True``): the env's ``state_potential(state) -> float``, a
          function of the flattened global state alone, when it has one.
    """

    def __init__(self, env_fn: Callable[[], ParallelEnv], num_envs: int,
                 seed: int | None = None) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        self.envs = [env_fn() for _ in range(num_envs)]
        env = self.envs[0]
        self.agents = list(env.possible_agents)
        action_spaces = [env.action_space(a) for a in self.agents]
        if not all(isinstance(s, spaces.Discrete) for s in action_spaces):
            raise ValueError(f"every agent needs a Discrete action space, got "
                             f"{dict(zip(self.agents, action_spaces))}")
        self.num_envs, self.num_agents = num_envs, len(self.agents)
        # k = the largest action count; an agent with n_i < k actions executes a % n_i (its
        # actions repeat), from its space's start
        self.num_actions = max(int(s.n) for s in action_spaces)
        self._action_counts = [int(s.n) for s in action_spaces]
        self._action_starts = [int(s.start) for s in action_spaces]
        self.obs_dim = max_obs_dim(env)
        self.obs_spaces = {a: env.observation_space(a) for a in self.agents}
        if callable(getattr(env, "state_potential", None)):   # what shaping needs
            self.potential = self._potential
        self.seed = seed
        self._episode = np.zeros(num_envs, dtype=np.int64)   # episodes started per copy
        self._history: list[list[list[int]]] = [[] for _ in range(num_envs)]
        self._live: list[list[str]] = [[] for _ in range(num_envs)]
        state, _ = self._reset_copy(0)
        self.state_dim = state.shape[0]
        self.has_success = False  # set once a step's infos carry "success" or "optimal"
        self._state: np.ndarray | None = None
        self._obs: np.ndarray | None = None

    def _episode_seed(self, e: int) -> int | None:
        if self.seed is None:
            return None
        sequence = np.random.SeedSequence([self.seed, e, int(self._episode[e])])
        return int(sequence.generate_state(1)[0])

    def _reset_copy(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        observations, _ = self.envs[e].reset(seed=self._episode_seed(e))
        self._live[e] = list(self.envs[e].agents)
        self._history[e] = []
        return self._state_of(e, observations), self._obs_of(observations)

    def _obs_of(self, observations: dict[str, np.ndarray]) -> np.ndarray:
        return stack_observations(observations, self.agents, self.obs_dim, self.obs_spaces)

    def _state_of(self, e: int, observations: dict[str, np.ndarray]) -> np.ndarray:
        return global_state(self.envs[e], observations, self.obs_dim)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Reset every copy; with ``seed``, episode seeds restart from that seed."""
        if seed is not None:
            self.seed = seed
            self._episode[:] = 0
        states, obs = zip(*(self._reset_copy(e) for e in range(self.num_envs)))
        self._state, self._obs = np.stack(states), np.stack(obs)
        _check_finite(reset_state=self._state, reset_observations=self._obs)
        return self._state.copy(), self._obs.copy()

    def _step_copy(self, e: int, joint: np.ndarray):
        env = self.envs[e]
        live = self._live[e]
        actions = {a: self._action_starts[i] + int(joint[i]) % self._action_counts[i]
                   for i, a in enumerate(self.agents) if a in live}
        observations, rewards, terms, truncs, infos = env.step(actions)
        self._history[e].append([int(u) for u in joint])
        self._live[e] = list(env.agents)
        team = next((info["team_reward"] for info in infos.values() if "team_reward" in info),
                    None)
        if team is None:
            team = float(np.mean(list(rewards.values()))) if rewards else 0.0
        flags = [bool(info[key]) for key in ("success", "optimal")
                 for info in infos.values() if key in info]
        self.has_success = self.has_success or bool(flags)
        done = not env.agents or all(terms.get(a, False) or truncs.get(a, False) for a in live)
        terminated = done and any(terms.get(a, False) for a in live)
        executed = None
        if any("executed_action" in info for info in infos.values()):
            executed = [int(infos[a]["executed_action"]) - self._action_starts[i]
                        if "executed_action" in infos.get(a, {}) else int(joint[i])
                        for i, a in enumerate(self.agents)]
        return observations, float(team), terminated, done and not terminated, \
            bool(flags and flags[0]), executed

    def step(self, actions: np.ndarray) -> VecStep:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        actions = check_joint_actions(actions, self.num_envs, self.num_agents, self.num_actions)
        E = self.num_envs
        reward = np.zeros(E, dtype=np.float32)
        terminated, truncated, success = (np.zeros(E, dtype=bool) for _ in range(3))
        final_state, final_obs = self._state.copy(), self._obs.copy()
        executed = None
        for e in range(E):
            observations, reward[e], terminated[e], truncated[e], success[e], overridden = \
                self._step_copy(e, actions[e])
            if overridden is not None:
                executed = actions.copy() if executed is None else executed
                executed[e] = overridden
            final_state[e] = self._state_of(e, observations)
            final_obs[e] = self._obs_of(observations)
            if terminated[e] or truncated[e]:
                self._episode[e] += 1
                self._state[e], self._obs[e] = self._reset_copy(e)
            else:
                self._state[e], self._obs[e] = final_state[e], final_obs[e]
        _check_finite(reward=reward, state=final_state, observations=final_obs,
                      reset_state=self._state, reset_observations=self._obs)
        return VecStep(self._state.copy(), self._obs.copy(), reward, terminated, truncated,
                       final_state, final_obs, success, executed)

    def _potential(self, states: np.ndarray) -> np.ndarray:
        """``env.state_potential(state)`` of global states ``[M, S]`` -> ``[M]`` float64 (an
        env method of the flattened global state alone; set as ``potential`` only for envs
        that have it, for :class:`~spnpolicy.training.shaping.PotentialShaping`)."""
        env = self.envs[0]
        return np.array([float(env.state_potential(s)) for s in np.asarray(states)],
                        dtype=np.float64).reshape(len(states))

    def state_dict(self) -> dict[str, Any]:
        """Episode counters and the actions of every copy's episode in flight."""
        return {"seed": self.seed, "episode": self._episode.tolist(),
                "history": [[list(step) for step in h] for h in self._history]}

    def load_state_dict(self, state: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Rebuild every copy: reset with its episode seed, replay its in-flight actions."""
        self.seed = state["seed"]
        self._episode[:] = np.asarray(state["episode"])
        self.reset()
        if self.seed is not None:
            for e, history in enumerate(state["history"]):
                for i, joint in enumerate(history):
                    if not self.envs[e].agents:
                        raise RuntimeError(
                            f"cannot rebuild env copy {e} of the checkpoint: replaying its "
                            f"episode from the seed ended after {i} of {len(history)} steps, "
                            f"so the env does not repeat an episode given its reset seed and "
                            f"actions (what resuming needs)")
                    observations = self._step_copy(e, np.asarray(joint))[0]
                    self._state[e] = self._state_of(e, observations)
                    self._obs[e] = self._obs_of(observations)
        return self._state.copy(), self._obs.copy()

    def settled(self) -> None:
        """None: a PettingZoo env reports no per-agent progress here."""
        return None

    #: a PettingZoo env's state cannot be copied from one instance to another here
    can_copy = False

    def copy_copies(self, source: np.ndarray, target: np.ndarray) -> None:
        raise ValueError("ParallelEnvVec cannot set one copy to another's state")

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _check_finite(**arrays: np.ndarray) -> None:
    """ValueError naming the first array ``[E, ...]`` with a NaN or infinite entry and its env
    copies: a non-finite reward, state or observation would turn every loss NaN."""
    for name, array in arrays.items():
        bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
        if bad.any():
            copies = np.flatnonzero(bad).tolist()
            raise ValueError(f"the env gave a non-finite {name.replace('_', ' ')} (NaN or "
                             f"inf) in env copies {copies}: training needs finite rewards, "
                             f"states and observations")


def make_vec_env(name: str, num_envs: int, seed: int | None = None,
                 **env_kwargs: Any) -> VecEnv:
    """``num_envs`` copies of the registry env ``name`` (see :func:`spnpolicy.make_env`).

    ``coverage`` uses the batched numpy :class:`CoverageVec` (``render_mode`` is not
    accepted), ``predator-prey`` the batched numpy :class:`PredatorPreyVec`, ``vmas/<task>``
    the batched torch :class:`VmasVec`; every other env is stepped through
    :class:`ParallelEnvVec`.
    """
    if name == "coverage":
        if env_kwargs.get("render_mode") is not None:
            raise ValueError("render_mode: the vectorised coverage env does not render")
        env_kwargs = {k: v for k, v in env_kwargs.items() if k != "render_mode"}
        make_env(name, **env_kwargs)  # validates names and values with the env's own messages
        return CoverageVec(num_envs, seed=seed, **env_kwargs)
    if name == "predator-prey":
        make_env(name, **env_kwargs)
        return PredatorPreyVec(num_envs, seed=seed, **env_kwargs)
    if name.startswith(VMAS_PREFIX) and name[len(VMAS_PREFIX):] in VMAS_TASKS:
        return VmasVec(num_envs, seed=seed, task=name[len(VMAS_PREFIX):], **env_kwargs)
    make_env(name, **env_kwargs)
    return ParallelEnvVec(lambda: make_env(name, **env_kwargs), num_envs, seed=seed)
