"""The on-policy loop shared by every on-policy actor-critic (ia2c, maa2c, ippo, mappo, coma,
pac, dpo, mdpo), with its rollout storage and return estimators.

```python
# a learner (cfg, envs) -> .agent, .update(rollout), .state_dict(), ...
AlgorithmSpec("ia2c", "...", A2CConfig, A2CLearner, loop=train_onpolicy)
```

Each iteration: every env copy takes ``rollout_steps`` steps with actions sampled from the
agent (``agent.sample(obs, generator)``); the steps become one :class:`Rollout`
(time-major tensors ``[T, E, ...]``); ``learner.update(rollout)`` returns training metrics,
averaged between evaluations and, with the training episodes' returns and lengths, between
training records (``session.log_due``, :class:`~spnpolicy.training.TrainingMeans`).
Evaluations and checkpoints happen between rollouts, so a checkpoint holds no partial
rollout and a resumed run repeats the uninterrupted one exactly.

With ``cfg.shaping`` the rollout's rewards are shaped, ``r + gamma (1 - terminated) Phi(s')
- Phi(s)``, or with ``cfg.shaping_form = "progress"`` ``r + (1 - terminated) Phi(s') -
Phi(s)`` (:class:`~spnpolicy.training.shaping.PotentialShaping`); evaluation keeps the
env's reward.

Returns are computed with the episode boundaries of auto-resetting envs: a step that
``terminated`` bootstraps from nothing; one that was truncated (time limit) bootstraps from
the value of its final state (``next_state``), and no return runs across a ``done`` step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from spnpolicy.training.evaluation import evaluate_run
from spnpolicy.training.nstep import NStepTransition
from spnpolicy.training.offpolicy import LoopState
from spnpolicy.training.runner import Runner, Transition
from spnpolicy.training.seeding import seed_everything
from spnpolicy.training.session import Session
from spnpolicy.training.shaping import PotentialShaping
from spnpolicy.training.vec_env import make_vec_env

__all__ = ["Rollout", "RolloutStorage", "gae_advantages", "nstep_returns", "train_onpolicy"]


class Rollout(NamedTuple):
    """``T`` steps of ``E`` env copies, time-major; ``n`` agents."""

    state: torch.Tensor         #: [T, E, state_dim] states the actions were taken in
    obs: torch.Tensor           #: [T, E, n, obs_dim]
    actions: torch.Tensor       #: [T, E, n] int64
    reward: torch.Tensor        #: [T, E] team reward
    next_state: torch.Tensor    #: [T, E, state_dim] state reached (the final one at an episode end)
    next_obs: torch.Tensor      #: [T, E, n, obs_dim]
    next_actions: torch.Tensor  #: [T, E, n] actions at next_state: those taken at t + 1 within
    #: an episode, else drawn from the policy at next_state (bootstraps of action-value critics)
    terminated: torch.Tensor    #: [T, E] 1.0 where the episode terminated (no bootstrap)
    done: torch.Tensor          #: [T, E] 1.0 where the episode ended (terminated or truncated)
    step: int                   #: env steps done before this rollout (for schedules)


def _broadcast(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x [T, E]`` viewed with ``like``'s trailing axes (per-agent values ``[T, E, n]``)."""
    return x.view(*x.shape, *(1,) * (like.dim() - x.dim()))


def nstep_returns(reward: torch.Tensor, next_value: torch.Tensor, terminated: torch.Tensor,
                  done: torch.Tensor, gamma: float, n: int) -> torch.Tensor:
    """n-step returns ``[T, E, ...]``, shaped like ``next_value``.

    ``G_t = sum_{i<m} gamma^i r_{t+i} + gamma^m (1 - terminated_{t+m-1}) next_value_{t+m-1}``
    with ``m`` the smallest of ``n``, the steps to the episode's end (a ``done`` step
    included) and the steps left in the rollout. ``next_value[t]`` is the value of the
    state reached by step ``t``.
    """
    T = reward.shape[0]
    reward, terminated, done = (_broadcast(x, next_value) for x in (reward, terminated, done))
    returns = torch.zeros_like(next_value)
    for t in range(T):
        end = min(t + n, T)
        total = torch.zeros_like(next_value[t])
        alive = torch.ones_like(done[t])
        for j in range(t, end):
            discount = gamma ** (j - t)
            total = total + alive * discount * reward[j]
            stop = done[j] if j < end - 1 else torch.ones_like(done[j])
            total = total + alive * stop * gamma * discount * (1 - terminated[j]) * next_value[j]
            alive = alive * (1 - stop)
        returns[t] = total
    return returns


def gae_advantages(reward: torch.Tensor, value: torch.Tensor, next_value: torch.Tensor,
                   terminated: torch.Tensor, done: torch.Tensor, gamma: float,
                   lam: float) -> torch.Tensor:
    """Generalised advantage estimates ``[T, E, ...]`` (Schulman et al. 2016).

    ``delta_t = r_t + gamma (1 - terminated_t) next_value_t - value_t`` and
    ``A_t = delta_t + gamma lam (1 - done_t) A_{t+1}`` (``A_T = 0``); ``A_t + value_t`` is
    the lambda-return.
    """
    reward, terminated, done = (_broadcast(x, value) for x in (reward, terminated, done))
    delta = reward + gamma * (1 - terminated) * next_value - value
    advantages = torch.zeros_like(value)
    running = torch.zeros_like(value[0])
    for t in reversed(range(value.shape[0])):
        running = delta[t] + gamma * lam * (1 - done[t]) * running
        advantages[t] = running
    return advantages


class RolloutStorage:
    """Collects :class:`~spnpolicy.training.runner.Transition` s into a :class:`Rollout`."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._steps: list[Transition] = []

    def __len__(self) -> int:
        return len(self._steps)

    def add(self, transition: Transition) -> None:
        self._steps.append(transition)

    def rollout(self, step: int, draw: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                ) -> Rollout:
        """The collected steps as a Rollout (and the storage emptied).

        ``draw(next_state [T*E, S], next_obs [T*E, n, D]) -> actions [T*E, n]`` samples the
        policy's actions where no next action was taken in the rollout (its last step and
        the steps that ended an episode).
        """
        def stack(field: str, dtype=None) -> torch.Tensor:
            array = np.stack([getattr(s, field) for s in self._steps])
            return torch.as_tensor(array, dtype=dtype, device=self.device)

        state, obs = stack("state", torch.float32), stack("obs", torch.float32)
        actions = stack("actions", torch.int64)
        next_state, next_obs = stack("next_state", torch.float32), stack("next_obs", torch.float32)
        reward, terminated = stack("reward", torch.float32), stack("terminated", torch.float32)
        done = torch.maximum(terminated, stack("truncated", torch.float32))
        T, E = actions.shape[:2]
        drawn = draw(next_state.reshape(T * E, -1), next_obs.reshape(T * E, *next_obs.shape[2:]))
        next_actions = drawn.view(T, E, -1).clone()
        within = done[:-1].unsqueeze(-1) == 0                      # [T-1, E, 1]
        next_actions[:-1] = torch.where(within, actions[1:], next_actions[:-1])
        self._steps = []
        return Rollout(state, obs, actions, reward, next_state, next_obs,
                       next_actions, terminated, done, int(step))


def train_onpolicy(cfg: Any, env: str, env_kwargs: dict, seed: int, session: Session,
                   build: Callable[[Any, Any], Any]):
    """Run the on-policy loop with the learner ``build(cfg, envs)``; returns its trained agent.

    ``cfg`` needs ``num_envs``, ``rollout_steps``, ``total_steps``, ``eval_episodes``,
    ``eval_stochastic``, ``shaping``, ``shaping_form``, ``gamma`` and ``device``. The
    learner has ``agent`` (with ``sample(obs, generator)`` and ``act(obs, deterministic)``),
    ``update(rollout) -> metrics`` and ``state_dict()`` / ``load_state_dict()`` (networks,
    optimisers and any other state).
    """
    seed_everything(seed)
    device = torch.device(cfg.device)
    envs = make_vec_env(env, cfg.num_envs, seed=seed, **cfg.training_env_kwargs(env_kwargs))
    runner = Runner(envs)
    runner.reset(seed=seed)
    shaping = PotentialShaping(envs, cfg.gamma, cfg.shaping_form) if cfg.shaping else None
    learner = build(cfg, envs)
    agent = learner.agent
    storage = RolloutStorage(device)
    act_generator = torch.Generator(device).manual_seed(seed)
    progress = LoopState(runner, act_generator)
    stats, training = progress.stats, progress.training

    @torch.no_grad()
    def sample(obs: torch.Tensor) -> torch.Tensor:
        return agent.sample(obs, act_generator)

    def evaluate(step: int) -> dict[str, float]:
        def sampler(generator: torch.Generator):
            return lambda state, obs: agent.act(obs, deterministic=False, generator=generator)

        return evaluate_run(env, env_kwargs, seed, step, cfg.eval_episodes,
                            lambda state, obs: agent.act(obs, deterministic=True),
                            sampler if cfg.eval_stochastic else None, cfg.device)

    payload = session.restore()
    if payload is not None:
        learner.load_state_dict(payload["learner"])
        progress.load_state_dict(payload)
    elif session.init_from is not None:
        session.warm_start(learner, "learner")
    step = session.begin(payload)

    while True:
        if session.eval_due(step):
            session.record(step, evaluate(step) | stats.pop())
        if session.checkpoint_due(step):
            session.save(step, progress.state_dict() | {"learner": learner.state_dict()})
        if step >= cfg.total_steps:
            break

        # collect a rollout (the last one shortened to the budget)
        start = step
        length = min(cfg.rollout_steps, -(-(cfg.total_steps - step) // cfg.num_envs))
        for _ in range(length):
            obs = torch.as_tensor(runner.obs, dtype=torch.float32, device=device)
            transition = runner.step(sample(obs).cpu().numpy())
            if shaping is not None:
                steps = np.ones(len(transition.reward), dtype=np.int64)
                shaped = shaping(NStepTransition(*transition[:7], steps=steps))
                transition = transition._replace(reward=shaped.reward)
            storage.add(transition)
            step += cfg.num_envs
            session.advance(cfg.num_envs)
        training.add_episodes(runner.pop_episodes())
        rollout = storage.rollout(start, lambda state, obs: sample(obs))

        # update -> log
        metrics = learner.update(rollout)
        stats.add(**metrics)
        training.add_update(metrics)
        if session.log_due(step):
            session.record_training(step, training.pop(envs.has_success))

    envs.close()
    session.close()
    return agent.eval()
