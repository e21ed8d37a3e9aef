"""``iql``, ``vdn`` and ``qmix``: decentralised agents with a shared Q network.

Every agent ``i`` computes ``Q_i(o_i, .)`` with one MLP shared by all agents, fed its own
observation and a one-hot of its id (EPyMARL's ``obs_agent_id``; the coverage env's
observations already end with that one-hot, the matrix games' do not). Agents act greedily
on their own ``Q_i`` (epsilon-greedy while training), so execution is decentralised; the
algorithms differ in the value the TD error is taken on:

- ``iql`` (independent Q-learning, Tan 1993; shared parameters as in EPyMARL): every
  ``Q_i(o_i, u_i)`` regresses the team reward target ``r + gamma Qbar_i(o'_i, u'_i)``.
- ``vdn`` (Sunehag et al. 2018): ``Q_tot = sum_i Q_i``.
- ``qmix`` (Rashid et al. 2018): ``Q_tot = mix(Q_1, ..., Q_n; s)``, a state-conditioned
  monotonic mixer (:mod:`spnpolicy.algos.mixers`).

Because ``Q_tot`` is monotonic in each ``Q_i``, the per-agent argmaxes are ``Q_tot``'s
argmax, which is how the double-Q target ``Qbar_tot(s', argmax_i Q_i(o'_i))`` is computed.
The loop (epsilon-greedy, replay, double Q, target network) is
:class:`spnpolicy.algos.q_learning.QLearner`: feedforward agents on replayed transitions, not
EPyMARL's recurrent agents on episode batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spnpolicy.algos.config import AlgorithmSpec, checked, integer, one_of
from spnpolicy.algos.mixers import MIXERS, make_mixer
from spnpolicy.algos.policies import mlp
from spnpolicy.algos.q_learning import (ENV_DEFAULTS, QLearningConfig, QModel, q_agent_loader,
                                         q_learner)
from spnpolicy.training import VecEnv

__all__ = ["ENV_DEFAULTS", "SPECS", "AgentQNetwork", "MixedQ", "ValueBasedConfig"]


@dataclass(frozen=True)
class ValueBasedConfig(QLearningConfig):
    """Hyperparameters of iql, vdn and qmix (per-env overrides in ``ENV_DEFAULTS``)."""

    mixer: str = checked("qmix", one_of(*MIXERS))
    """How agent values combine: none (iql), vdn (sum) or qmix (monotonic hypernetwork)."""
    mixing_embed_dim: int = checked(32, integer(1))
    """Hidden units of the QMIX mixer."""
    hypernet_embed: int = checked(64, integer(1))
    """Hidden width of QMIX's weight hypernetworks."""


class AgentQNetwork(torch.nn.Module):
    """``Q_i(o_i, .)`` for every agent with shared weights: ``[B, n, obs_dim]`` -> ``[B, n, k]``.

    The input of agent ``i`` is its observation followed by a one-hot of ``i`` (``n`` entries).
    """

    def __init__(self, obs_dim: int, num_agents: int, num_actions: int,
                 hidden: tuple[int, ...] = (64, 64)) -> None:
        super().__init__()
        self.obs_dim, self.num_agents, self.num_actions = obs_dim, num_agents, num_actions
        self.net = mlp(obs_dim + num_agents, hidden, num_actions)
        self.register_buffer("agent_ids", torch.eye(num_agents), persistent=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        ids = self.agent_ids.expand(obs.shape[0], -1, -1)
        return self.net(torch.cat([obs, ids], dim=-1))


class MixedQ(QModel):
    """Shared agent network plus an optional mixer (:func:`~spnpolicy.algos.mixers.make_mixer`).

    ``evaluate`` gives ``Q_i(o_i, u_i)`` ``[B, n]`` without a mixer (iql), else
    ``Q_tot(s, u)`` ``[B]``. The trained agent acts with :meth:`act` on per-agent
    observations ``[B, n, obs_dim]``.
    """

    def __init__(self, agents: AgentQNetwork, mixer: torch.nn.Module | None,
                 explore_epsilon: float = 0.05) -> None:
        super().__init__()
        self.agents, self.mixer = agents, mixer
        self.num_actions, self.explore_epsilon = agents.num_actions, explore_epsilon

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.agents.num_agents, self.agents.obs_dim)

    def greedy(self, state: torch.Tensor | None, obs: torch.Tensor) -> torch.Tensor:
        return self.agents(obs).argmax(-1)

    def evaluate(self, state: torch.Tensor, obs: torch.Tensor,
                 actions: torch.Tensor) -> torch.Tensor:
        q = self.agents(obs).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        return q if self.mixer is None else self.mixer(q, state)


def build(cfg: ValueBasedConfig, envs: VecEnv) -> MixedQ:
    """The agents and mixer for ``cfg`` on ``envs``."""
    agents = AgentQNetwork(envs.obs_dim, envs.num_agents, envs.num_actions, cfg.hidden)
    mixer = make_mixer(cfg.mixer, envs.num_agents, envs.state_dim, cfg.mixing_embed_dim,
                       cfg.hypernet_embed)
    return MixedQ(agents, mixer, cfg.epsilon_finish)


SPECS = (
    AlgorithmSpec("iql", "independent Q-learning: shared-parameter DQN agents, double Q",
                  ValueBasedConfig, q_learner(build), {"mixer": "none"}, ENV_DEFAULTS,
                  load_agent=q_agent_loader(ValueBasedConfig, build)),
    AlgorithmSpec("vdn", "value decomposition networks: Q_tot = sum of agent Q-values",
                  ValueBasedConfig, q_learner(build), {"mixer": "vdn"}, ENV_DEFAULTS,
                  load_agent=q_agent_loader(ValueBasedConfig, build)),
    AlgorithmSpec("qmix", "QMIX: agent Q-values mixed by a monotonic state-conditioned "
                  "hypernetwork", ValueBasedConfig, q_learner(build), {"mixer": "qmix"},
                  ENV_DEFAULTS,
                  load_agent=q_agent_loader(ValueBasedConfig, build)),
)
