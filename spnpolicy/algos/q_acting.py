"""Acting of the off-policy Q-learners (qtran, ma2ql, i2q) on the shared off-policy loop.

:class:`EpsilonGreedyLearner` is an :class:`~spnpolicy.training.offpolicy.OffPolicyAlgorithm`
whose agent is a :class:`~spnpolicy.algos.q_learning.QModel`: it collects epsilon-greedily
with epsilon annealed linearly (``linear_epsilon``) from step 0 (no uniform warm-up, as
``train_q``), is evaluated greedily and, when ``eval_stochastic``, at ``epsilon_finish``,
and logs epsilon with each evaluation. Subclasses write ``update`` and the state dicts.
"""

from __future__ import annotations

import torch

from spnpolicy.algos.q_learning import QLearningConfig, QModel, epsilon_greedy, linear_epsilon
from spnpolicy.training.offpolicy import OffPolicyAlgorithm

__all__ = ["EpsilonGreedyLearner"]


class EpsilonGreedyLearner(OffPolicyAlgorithm):
    """Epsilon-greedy acting on ``self.agent`` (a ``QModel``) under ``self.cfg``."""

    uniform_warmup = False
    cfg: QLearningConfig
    agent: QModel

    @property
    def needs_obs(self) -> bool:
        return self.agent.needs_obs

    def greedy(self, state: torch.Tensor, obs: torch.Tensor | None) -> torch.Tensor:
        return self.agent.greedy(state, obs)

    def explore(self, state, obs, step, generator):
        return epsilon_greedy(self.greedy(state, obs), linear_epsilon(step, self.cfg),
                              self.agent.num_actions, generator)

    def sample(self, state, obs, generator):
        return epsilon_greedy(self.greedy(state, obs), self.cfg.epsilon_finish,
                              self.agent.num_actions, generator)

    def schedule_metrics(self, step: int) -> dict[str, float]:
        return {"epsilon": linear_epsilon(step, self.cfg)}
