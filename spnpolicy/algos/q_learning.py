"""The deep Q-learning loop shared by ``iql``, ``vdn``, ``qmix`` and ``dcg``.

Each of those algorithms is a :class:`QModel` (how to pick greedy joint actions and how to
value a joint action) plus a config subclassing :class:`QLearningConfig`; :class:`QLearner`
is its ``update(batch)`` (:func:`q_learner` binds the network), run by the shared off-policy loop
(:mod:`spnpolicy.training.offpolicy`), in EPyMARL's ``q_learner`` order:

- act epsilon-greedily, epsilon annealed linearly from ``epsilon_start`` to
  ``epsilon_finish`` over ``epsilon_anneal_steps`` env steps (each agent independently
  takes a uniform random action with probability epsilon; with ``exploration="shared"``
  the whole team takes one uniform action index together);
- store one-step (or ``n_step``) transitions in a uniform replay buffer;
- TD target with double Q-learning: ``u' = argmax Q(s', .)`` of the online network, valued
  by the target network, ``y = r + gamma^m (1 - terminated) Qbar(s', u')``; rewards
  optionally standardised by running statistics (EPyMARL ``standardise_rewards``);
- mean squared TD error, Adam, gradient-norm clipping;
- hard target update every ``target_update_interval`` env steps.

Differences from EPyMARL, for the step budgets of this toolkit: transitions are replayed
one at a time by feedforward networks (no RNN, no episode batches), and intervals count env
steps rather than episodes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from spnpolicy.algos.config import (COVERAGE_BUDGET, MATRIX_BUDGET, OffPolicyConfig, boolean,
                                    checked, fraction, integer, one_of, positive, widths)
from spnpolicy.training import VecEnv, make_target
from spnpolicy.training.buffer import Batch
from spnpolicy.training.offpolicy import (ActingAgent, OffPolicyAlgorithm, TargetSync,
                                          agent_loader)
from spnpolicy.training.optim import adam, gradient_step

__all__ = ["ENV_DEFAULTS", "EXPLORATIONS", "EpsilonGreedyLearner", "QLearner", "QLearningConfig",
           "QModel", "RunningMeanStd", "epsilon_greedy", "linear_epsilon", "q_agent_loader",
           "q_learner"]

#: How epsilon-greedy collection mixes in uniform actions (:func:`epsilon_greedy`).
EXPLORATIONS = ("independent", "shared")


@dataclass(frozen=True)
class QLearningConfig(OffPolicyConfig):
    """Hyperparameters shared by the Q-learning baselines (EPyMARL's defaults where it has one)."""

    eval_stochastic: bool = False
    """Also evaluate the epsilon-greedy policy at epsilon_finish (metrics prefixed stochastic_)."""
    hidden: tuple[int, ...] = checked((64, 64), widths)
    """Hidden widths of the Q network's MLP (EPyMARL: 64-unit feedforward agent)."""
    lr: float = checked(5e-4, positive)
    """Adam learning rate."""
    epsilon_start: float = checked(1.0, fraction)
    """Exploration rate at step 0."""
    epsilon_finish: float = checked(0.05, fraction)
    """Exploration rate after annealing."""
    epsilon_anneal_steps: int = checked(50_000, integer(1))
    """Env steps over which epsilon falls linearly from epsilon_start to epsilon_finish."""
    exploration: str = checked("independent", one_of(*EXPLORATIONS))
    """How collecting explores (see :func:`epsilon_greedy`): independent (each agent's action
    replaced by a uniform one with probability epsilon) or shared (with probability epsilon
    a row's whole joint action is replaced, every agent taking one action index drawn for
    the row: coordinated joint actions such as "all lift", which independent draws make
    k**-n rare; for agents whose action indices mean the same thing)."""
    target_update_interval: int = checked(10_000, integer(1))
    """Env steps between hard target-network copies (EPyMARL: 200 episodes)."""
    double_q: bool = checked(True, boolean)
    """Pick the bootstrap action with the online network, value it with the target one."""
    standardise_rewards: bool = checked(True, boolean)
    """Standardise sampled rewards by their running mean and std (EPyMARL's QMIX default)."""


#: Per-env-family defaults of the Q-learners (the algorithms' ``ENV_DEFAULTS`` start from them).
ENV_DEFAULTS = {
    # One-step games, spn-ac's budget: epsilon anneals over the first half so the values
    # see every joint action; no bootstrapping, so the target interval does not matter.
    "matrix": MATRIX_BUDGET | dict(learning_starts=200, batch_size=64, gradient_steps=2,
                                   hidden=(32,), lr=5e-3, epsilon_anneal_steps=1_000,
                                   target_update_interval=200),
    "coverage": COVERAGE_BUDGET,
}


class QModel(ActingAgent):
    """What :class:`QLearner` needs from a Q-learner's network; the trained agent's ``act``
    (greedy, or epsilon-greedy at ``explore_epsilon``) is :class:`ActingAgent`'s.

    Subclasses define ``greedy(state, obs)`` -> ``[B, n]`` LongTensor of greedy joint
    actions; ``evaluate(state, obs, actions)`` -> the values the TD error is taken on:
    ``[B]`` (a joint ``Q(s, u)``) or ``[B, n]`` (independent per-agent values);
    ``input_shape``, the shape of one input of :meth:`act`; and ``num_actions`` (``k``).
    ``state`` is ``[B, state_dim]``, ``obs`` ``[B, n, obs_dim]`` (``None`` unless
    ``needs_obs``: then :meth:`act` takes observations, else global states).
    """

    needs_obs: bool = True
    explore_epsilon: float = 0.05

    @property
    def input_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def greedy(self, state: torch.Tensor | None, obs: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, state: torch.Tensor, obs: torch.Tensor | None,
                 actions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def greedy_actions(self, x: torch.Tensor) -> torch.Tensor:
        return self.greedy(None, x) if self.needs_obs else self.greedy(x, None)

    def sampled_actions(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Epsilon-greedy at ``explore_epsilon`` (the config's epsilon_finish)."""
        return epsilon_greedy(self.greedy_actions(x), self.explore_epsilon, self.num_actions,
                              generator)


def linear_epsilon(step: int, cfg: QLearningConfig) -> float:
    """Epsilon at env step ``step``: linear from ``epsilon_start`` to ``epsilon_finish``."""
    fraction = min(step / cfg.epsilon_anneal_steps, 1.0)
    return cfg.epsilon_start + fraction * (cfg.epsilon_finish - cfg.epsilon_start)


def epsilon_greedy(greedy: torch.Tensor, epsilon: float, num_actions: int,
                   generator: torch.Generator | None = None,
                   exploration: str = "independent",
                   only: torch.Tensor | None = None) -> torch.Tensor:
    """``greedy`` ``[B, n]`` with uniform actions mixed in at rate ``epsilon``.

    ``exploration="independent"``: each entry replaced by a uniform action with probability
    ``epsilon``. ``"shared"``: each row, with probability ``epsilon``, replaced by one
    uniform action index taken by all ``n`` agents. ``only`` ``[B, n]`` bool: the entries
    that may be replaced (None: all). Draws the same random numbers whatever ``epsilon``
    and ``only`` are (resumed runs stay in step).
    """
    if exploration not in EXPLORATIONS:
        raise ValueError(f"exploration must be one of {EXPLORATIONS}, got {exploration!r}")
    shape = greedy.shape if exploration == "independent" else (greedy.shape[0], 1)
    explore = torch.rand(shape, generator=generator, device=greedy.device) < epsilon
    if only is not None:
        explore = explore & only
    random = torch.randint(num_actions, shape, generator=generator, device=greedy.device)
    return torch.where(explore, random, greedy)


class RunningMeanStd:
    """Running mean and variance of a stream of scalars (parallel update; EPyMARL's
    ``RunningMeanStd``), used to standardise rewards."""

    def __init__(self, epsilon: float = 1e-4) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, epsilon

    def update(self, x: torch.Tensor) -> None:
        batch_mean, batch_var, batch_count = float(x.mean()), float(x.var(False)), x.numel()
        delta, total = batch_mean - self.mean, self.count + batch_count
        m2 = (self.var * self.count + batch_var * batch_count
              + delta**2 * self.count * batch_count / total)
        self.mean, self.var, self.count = self.mean + delta * batch_count / total, m2 / total, total

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / max(self.var, 1e-8) ** 0.5

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]


def td_loss(model: QModel, target_model: QModel, batch, cfg: QLearningConfig,
            rewards: RunningMeanStd | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean squared double-Q TD error and the values ``Q(s, u)`` it was taken on."""
    reward = batch.reward if rewards is None else rewards.standardise(batch.reward)
    with torch.no_grad():
        chooser = model if cfg.double_q else target_model
        next_actions = chooser.greedy(batch.next_state, batch.next_obs)
        next_q = target_model.evaluate(batch.next_state, batch.next_obs, next_actions)
        shape = (-1,) + (1,) * (next_q.dim() - 1)  # per-agent values share the team reward
        discount = (cfg.gamma ** batch.steps.to(next_q.dtype)) * (1.0 - batch.terminated)
        target = reward.view(shape) + discount.view(shape) * next_q
    q = model.evaluate(batch.state, batch.obs, batch.actions)
    return F.mse_loss(q, target), q


class EpsilonGreedyLearner(OffPolicyAlgorithm):
    """Epsilon-greedy acting on ``self.agent`` (a :class:`QModel`) under ``self.cfg``: collect
    with epsilon annealed by :func:`linear_epsilon` from step 0 (no uniform warm-up),
    evaluate greedily and, when ``eval_stochastic``, at ``epsilon_finish``; log epsilon.
    Shared by every Q-learner on the off-policy loop; subclasses write ``update`` and the
    state dicts."""

    uniform_warmup = False
    cfg: QLearningConfig
    agent: QModel

    @property
    def needs_obs(self) -> bool:
        return self.agent.needs_obs

    def greedy(self, state: torch.Tensor, obs: torch.Tensor | None) -> torch.Tensor:
        return self.agent.greedy(state, obs)

    def explore(self, state, obs, step, generator, settled=None, elapsed=None):
        return epsilon_greedy(self.greedy(state, obs), linear_epsilon(step, self.cfg),
                              self.agent.num_actions, generator, self.cfg.exploration)

    def sample(self, state, obs, generator):
        return epsilon_greedy(self.greedy(state, obs), self.cfg.epsilon_finish,
                              self.agent.num_actions, generator)

    def schedule_metrics(self, step: int) -> dict[str, float]:
        return {"epsilon": linear_epsilon(step, self.cfg)}


class QLearner(EpsilonGreedyLearner):
    """iql, vdn, qmix and dcg: the network ``build(cfg, envs)``, its hard-copied target, Adam,
    and one double-Q TD step per ``update``."""

    def __init__(self, cfg: QLearningConfig, envs: VecEnv,
                 build: Callable[[QLearningConfig, VecEnv], QModel]) -> None:
        self.cfg = cfg
        self.agent = build(cfg, envs).to(torch.device(cfg.device))
        self.target = make_target(self.agent)
        self.optimizer = adam(self.agent.parameters(), lr=cfg.lr)
        self.rewards = RunningMeanStd() if cfg.standardise_rewards else None
        self.target_sync = TargetSync(((self.target, self.agent),),
                                      interval=cfg.target_update_interval)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.rewards is not None:
            self.rewards.update(batch.reward)
        loss, q = td_loss(self.agent, self.target, batch, self.cfg, self.rewards)
        gradient_step(self.optimizer, loss, self.cfg.max_grad_norm)
        return {"loss_td": loss.detach(), "q_taken": q.detach().mean()}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.agent.state_dict(), "target_model": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rewards": self.rewards.state_dict() if self.rewards is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["model"])
        self.target.load_state_dict(state["target_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.rewards is not None:
            self.rewards.load_state_dict(state["rewards"])


def q_learner(build: Callable[[QLearningConfig, VecEnv], QModel]
              ) -> Callable[[QLearningConfig, VecEnv], QLearner]:
    """The registry entry's learner: a :class:`QLearner` of the network ``build(cfg, envs)``
    (run by the off-policy loop)."""
    return functools.partial(QLearner, build=build)


def q_agent_loader(config_cls: type, build: Callable[[QLearningConfig, VecEnv], QModel]):
    """The registry entry's ``load_agent`` for a Q-learner built by ``build``."""
    return agent_loader(config_cls, q_learner(build))
