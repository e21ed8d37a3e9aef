"""What the on-policy actor-critics share: their config fields, per-agent networks with
parameter sharing, the trained agent's ``act``, and the learner base class whose
``update(rollout) -> metrics`` :func:`~spnpolicy.training.onpolicy.train_onpolicy` calls.

Networks follow EPyMARL's defaults: every agent's actor is one MLP fed the agent's
observation and a one-hot of its id (``share_parameters=True``), or one MLP per agent.
Critics are the same kind of network, fed the agent's observation (independent critics:
ia2c, ippo) or the global state (centralised critics: maa2c, mappo), plus the agent id.

```python
learner = A2CLearner(cfg, envs)                      # an OnPolicyLearner subclass
metrics = learner.update(rollout)                    # one update on one Rollout
learner.agent.act(obs, deterministic=True)           # obs [B, n, obs_dim] -> actions [B, n]
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spnpolicy.algos.config import (COVERAGE_BUDGET, MATRIX_BUDGET, RunConfig, boolean, checked,
                                    fraction, integer, non_negative, one_of, positive, rate,
                                    widths)
from spnpolicy.algos.policies import mlp
from spnpolicy.algos.q_learning import RunningMeanStd
from spnpolicy.training import Polyak, make_target
from spnpolicy.training.onpolicy import Rollout, gae_advantages, nstep_returns, train_onpolicy
from spnpolicy.training.optim import adam
from spnpolicy.training.observations import agent_input, observation_dict

__all__ = ["CRITIC_INPUTS", "OnPolicyAgent", "OnPolicyConfig", "OnPolicyLearner",
           "PerAgentNet", "ENV_DEFAULTS", "ON_POLICY", "agent_from_run", "categorical_kl"]

CRITIC_INPUTS = ("obs", "state")
RETURNS = ("nstep", "gae")


@dataclass(frozen=True)
class OnPolicyConfig(RunConfig):
    """Fields of every on-policy actor-critic (EPyMARL's defaults where it has one)."""

    rollout_steps: int = checked(5, integer(1))
    """Steps each env copy takes per rollout (one update per rollout_steps x num_envs rows)."""
    gamma: float = checked(0.99, fraction)
    """Discount factor."""
    returns: str = checked("nstep", one_of(*RETURNS))
    """Critic targets: nstep (EPyMARL: q_nstep-step returns) or gae (lambda-returns, GAE)."""
    q_nstep: int = checked(5, integer(1))
    """Steps of reward before bootstrapping from the target critic (returns=nstep)."""
    gae_lambda: float = checked(0.95, fraction)
    """GAE / TD(lambda) parameter (returns=gae)."""
    hidden: tuple[int, ...] = checked((64, 64), widths)
    """Hidden widths of the actor MLP."""
    critic_hidden: tuple[int, ...] = checked((64, 64), widths)
    """Hidden widths of the critic MLP."""
    share_parameters: bool = checked(True, boolean)
    """One network for all agents, fed a one-hot agent id; else one network per agent."""
    critic_input: str = checked("obs", one_of(*CRITIC_INPUTS))
    """What the critic sees besides the agent id: obs (the agent's own) or state (global)."""
    lr: float = checked(5e-4, positive)
    """Adam learning rate of the actor."""
    critic_lr: float = checked(5e-4, positive)
    """Adam learning rate of the critic."""
    entropy_coef: float = checked(0.01, non_negative)
    """Weight of the policy-entropy bonus in the actor loss."""
    tau: float = checked(0.01, rate)
    """Polyak rate of the target critic, applied after every update."""
    max_grad_norm: float = checked(10.0, non_negative)
    """Gradient-norm clipping of every network; 0 disables it."""
    standardise_rewards: bool = checked(True, boolean)
    """Standardise rewards by their running mean and std before computing returns (EPyMARL)."""


#: Per-env-family defaults of the on-policy algorithms (each module may add its own).
ENV_DEFAULTS = {
    # One-step games, the off-policy baselines' budget: 8 copies x 1 step per update gives
    # 250 updates in 2,000 steps; a larger learning rate than EPyMARL's for that budget.
    "matrix": MATRIX_BUDGET | dict(rollout_steps=1, hidden=(32,), critic_hidden=(32,), lr=5e-3,
                                   critic_lr=1e-2),
    "coverage": COVERAGE_BUDGET | dict(rollout_steps=10),
}


class PerAgentNet(nn.Module):
    """``[B, n, in_dim]`` -> ``[B, n, out_dim]``: one MLP for every agent fed its input and a
    one-hot of its id (``shared``), or one MLP per agent."""

    def __init__(self, in_dim: int, num_agents: int, out_dim: int, hidden: tuple[int, ...],
                 shared: bool = True, out_scale: float = 1.0) -> None:
        super().__init__()
        self.in_dim, self.num_agents, self.out_dim = in_dim, num_agents, out_dim
        self.shared = shared
        if shared:
            self.net = mlp(in_dim + num_agents, hidden, out_dim, out_scale)
            self.register_buffer("agent_ids", torch.eye(num_agents), persistent=False)
        else:
            self.nets = nn.ModuleList(mlp(in_dim, hidden, out_dim, out_scale)
                                      for _ in range(num_agents))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared:
            ids = self.agent_ids.expand(*x.shape[:-1], self.num_agents)
            return self.net(torch.cat([x, ids], dim=-1))
        return torch.stack([net(x[..., i, :]) for i, net in enumerate(self.nets)], dim=-2)


class OnPolicyAgent(nn.Module):
    """The trained decentralised agents: ``pi_i(u_i | o_i)`` for every agent ``i``.

    ``logits(obs)``: ``[..., n, obs_dim]`` -> ``[..., n, k]``.
    """

    needs_obs = True

    def __init__(self, obs_dim: int, num_agents: int, num_actions: int,
                 hidden: tuple[int, ...], shared: bool = True) -> None:
        super().__init__()
        self.obs_dim, self.num_agents, self.num_actions = obs_dim, num_agents, num_actions
        self.actor = PerAgentNet(obs_dim, num_agents, num_actions, hidden, shared, out_scale=0.1)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions ``[B, n]`` drawn from ``pi(. | obs)`` for ``obs [B, n, obs_dim]``."""
        probs = torch.softmax(self.logits(obs), dim=-1)
        flat = torch.multinomial(probs.reshape(-1, self.num_actions), 1, generator=generator)
        return flat.view(probs.shape[:-1])

    @torch.no_grad()
    def act(self, observations, deterministic: bool = True,
            generator: torch.Generator | None = None):
        """Joint actions ``[B, n]`` for per-agent observations ``[B, n, obs_dim]`` (or ``[n]``
        for one ``[n, obs_dim]``): each agent's most probable action, or a sample. A numpy
        int64 array for numpy (or list) input, a LongTensor for tensor input; for a
        PettingZoo observation dict, a dict ``{agent: action}`` that ``env.step`` takes.
        ValueError for another shape or a NaN or infinite input (:func:`agent_input`)."""
        shape = (self.num_agents, self.obs_dim)
        if isinstance(observations, Mapping):
            x = observation_dict(observations, *shape)
            return dict(zip(observations, self.act(x, deterministic, generator).tolist()))
        x, single = agent_input(observations, shape, next(self.parameters()).device)
        actions = self.logits(x).argmax(-1) if deterministic else self.sample(x, generator)
        actions = actions[0] if single else actions
        return actions if isinstance(observations, torch.Tensor) else actions.cpu().numpy()


def agent_from_run(run: dict[str, Any], payload: dict[str, Any]) -> OnPolicyAgent:
    """The trained agent of an on-policy run, in eval mode.

    ``run``: the run's ``config.json`` content (``env``, ``env_kwargs``, ``config``);
    ``payload``: its checkpoint (as :func:`~spnpolicy.training.onpolicy.train_onpolicy`
    saves it). ValueError when the checkpoint does not hold the agent the config describes.
    """
    from spnpolicy.training.vec_env import make_vec_env

    cfg = run["config"]
    envs = make_vec_env(run["env"], 1, **run.get("env_kwargs", {}))
    try:
        agent = OnPolicyAgent(envs.obs_dim, envs.num_agents, envs.num_actions,
                              tuple(cfg["hidden"]), cfg["share_parameters"])
    finally:
        envs.close()
    try:
        agent.load_state_dict(payload["learner"]["modules"]["agent"])
    except (KeyError, RuntimeError, TypeError):
        raise ValueError(f"the checkpoint does not hold the {run.get('algo')!r} agent that the "
                         f"run's config describes (written by another run or version)") from None
    return agent.eval()


#: What a registry entry of an on-policy learner adds: ``AlgorithmSpec(..., **ON_POLICY)``,
#: the loop that runs it and the loader of its trained agent.
ON_POLICY = {"loop": train_onpolicy, "load_agent": agent_from_run}


def categorical_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_u p(u) (log p(u) - log q(u))`` over the last axis, exactly."""
    log_p, log_q = F.log_softmax(p_logits, -1), F.log_softmax(q_logits, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


class OnPolicyLearner:
    """Base of the on-policy learners: the agent, a critic with a Polyak target, their Adam
    optimisers, the reward standardiser, critic targets and checkpoint state.

    Subclasses set ``self.critic`` (an ``nn.Module``) in ``build_critic`` and implement
    ``update(rollout) -> metrics``. The default critic is ``V_i`` ``[..., n]`` on each
    agent's observation or the global state (``cfg.critic_input``).
    """

    def __init__(self, cfg: OnPolicyConfig, envs: Any) -> None:
        self.cfg = cfg
        self.num_agents, self.num_actions = envs.num_agents, envs.num_actions
        self.obs_dim, self.state_dim = envs.obs_dim, envs.state_dim
        self.device = torch.device(cfg.device)
        self.agent = OnPolicyAgent(self.obs_dim, self.num_agents, self.num_actions, cfg.hidden,
                                   cfg.share_parameters).to(self.device)
        self.critic = self.build_critic().to(self.device)
        self.target_critic = make_target(self.critic)
        self._polyak = Polyak(self.target_critic, self.critic)
        self.optimizers = {"actor": adam(self.agent.parameters(), lr=cfg.lr),
                           "critic": adam(self.critic.parameters(), lr=cfg.critic_lr)}
        self.rewards = RunningMeanStd() if cfg.standardise_rewards else None

    # --- networks ---------------------------------------------------------------------
    def build_critic(self) -> nn.Module:
        in_dim = self.obs_dim if self.cfg.critic_input == "obs" else self.state_dim
        return PerAgentNet(in_dim, self.num_agents, 1, self.cfg.critic_hidden,
                           self.cfg.share_parameters)

    def critic_inputs(self, state: torch.Tensor, obs: torch.Tensor | None) -> torch.Tensor:
        """``[..., n, in_dim]``: each agent's observation, or the state repeated per agent."""
        if self.cfg.critic_input == "obs":
            return obs
        return state.unsqueeze(-2).expand(*state.shape[:-1], self.num_agents, state.shape[-1])

    def values(self, critic: nn.Module, state: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """``V_i`` ``[..., n]`` of the default critic (or its target)."""
        return critic(self.critic_inputs(state, obs)).squeeze(-1)

    # --- targets ----------------------------------------------------------------------
    def team_reward(self, rollout: Rollout) -> torch.Tensor:
        """The rollout's rewards ``[T, E]``, standardised when the config says so."""
        if self.rewards is None:
            return rollout.reward
        self.rewards.update(rollout.reward)
        return self.rewards.standardise(rollout.reward)

    def targets(self, reward: torch.Tensor, value: torch.Tensor, next_value: torch.Tensor,
                rollout: Rollout) -> torch.Tensor:
        """Critic targets ``[T, E, n]``: n-step returns bootstrapped from ``next_value``, or
        lambda-returns (GAE advantages plus ``value``), per ``cfg.returns``."""
        if self.cfg.returns == "nstep":
            return nstep_returns(reward, next_value, rollout.terminated, rollout.done,
                                 self.cfg.gamma, self.cfg.q_nstep)
        return value + gae_advantages(reward, value, next_value, rollout.terminated,
                                      rollout.done, self.cfg.gamma, self.cfg.gae_lambda)

    def default_targets(self, rollout: Rollout, reward: torch.Tensor) -> torch.Tensor:
        """Targets of ``V_i`` from the target critic's values (no gradient)."""
        with torch.no_grad():
            value = self.values(self.target_critic, rollout.state, rollout.obs)
            next_value = self.values(self.target_critic, rollout.next_state, rollout.next_obs)
            return self.targets(reward, value, next_value, rollout)

    def update_target(self) -> None:
        self._polyak(self.cfg.tau)

    # --- checkpoints ------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"agent": self.agent, "critic": self.critic, "target_critic": self.target_critic}

    def extra_state(self) -> dict[str, Any]:
        """Learner state besides modules and optimisers (subclasses add theirs)."""
        return {"rewards": self.rewards.state_dict() if self.rewards is not None else {}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.rewards is not None:
            self.rewards.load_state_dict(state["rewards"])

    def state_dict(self) -> dict[str, Any]:
        return {"modules": {k: m.state_dict() for k, m in self.modules().items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, module in self.modules().items():
            module.load_state_dict(state["modules"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.load_extra_state(state["extra"])

    def update(self, rollout: Rollout) -> dict[str, torch.Tensor | float]:
        raise NotImplementedError
