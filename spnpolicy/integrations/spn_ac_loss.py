"""spn-ac's losses as a TorchRL ``LossModule`` (extra ``benchmarl``).

The same exact losses as :mod:`spnpolicy.algos.spn_ac` (its ``soft_value``,
``critic_loss`` and ``actor_loss``), on a replayed tensordict of one agent group, with the
group's observations concatenated as the global state ``s`` ``[B, n * obs]`` (or kept per
agent ``[B, n, obs]`` for a policy with ``param_head="agents"`` and for ``AgentFactorQ``
critics), the team reward the mean of the agents' rewards, and an episode terminated when
any agent's is:

- ``loss_qvalue``: ``sum_j mean (Q_j(s, u) - (r + gamma (1 - term) V(s')))^2``, with
  ``V(s') = min_j E_pi[Qbar_j(s', .)] + alpha H(pi(. | s'))`` under the target critics;
- ``loss_actor``: ``-mean(min_j E_pi[Q_j(s, .)] + alpha H(pi(. | s)))``, the negative exact
  ELBO, plus mode guidance ``-beta mean log pi(u*(s) | s)``;
- ``loss_alpha`` (when alpha is tuned): ``alpha (H(pi) - target)``, ``H`` a constant.

Each loss reaches only its own parameters (critics, policy, ``log_alpha``), so a trainer
may backpropagate and step them one after the other. All three are computed before any
step: the actor sees the critics of this update's start (spn-ac's own loop steps the
critics first). The target critics are ``target_critic_params``, for TorchRL's
``SoftUpdate`` / ``HardUpdate``.
"""

from __future__ import annotations

import math
import warnings

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictParams
from torch import nn
from torchrl.objectives import LossModule

from factor_q import AgentFactorQ
from spnpolicy.algos.critics import TwinFactorQ
from spnpolicy.algos.policies import JointPolicy
from spnpolicy.algos.spn_ac import ModeGuidance, actor_loss, critic_loss, soft_value
from spnpolicy.integrations.torchrl import group_input, group_state

__all__ = ["SpnAcLoss"]


class SpnAcLoss(LossModule):
    """spn-ac's critic, actor and temperature losses on one agent group's transitions.

    Args:
        policy: the joint policy over the group's ``n`` agents (``state_dim = n * obs``).
        critic: twin factor-graph critics on the same agents and actions: ``TwinFactorQ``
            on the group's state ``[B, n * obs]``, or ``AgentFactorQ(ensemble=2)`` on the
            observations ``[B, n, obs]`` (without a global state input).
        gamma: discount.
        alpha: the entropy temperature (its initial value when ``autotune_alpha``).
        autotune_alpha: tune alpha so that ``H(pi)`` tracks ``target_entropy_scale * n log k``.
        target_entropy_scale: the target entropy as a fraction of ``n log k``.
        regulariser: ``entropy`` (``alpha H``) or ``kl_uniform`` (``alpha (H - n log k)`` in
            the soft value).
        mode_guidance: weight of ``-log pi(u* | s)`` on the states where every critic's
            exact argmax is ``u*`` and ``pi(u* | s) < mode_floor * k**-n``; per factor (with
            a warning) where that argmax needs tables of more than ``MODE_TABLE_SIZE``
            entries per state (spn-ac's ``ModeGuidance``).
        mode_floor: the guidance's floor, in units of the uniform probability ``k**-n``.
        group, observation_key: where the group's data lies in the tensordict.

    ``forward(td)`` reads ``(group, observation_key)`` ``[B, n, obs]``, ``(group, "action")``
    ``[B, n]`` and, under ``"next"``, the observation, ``(group, "reward")`` and
    ``(group, "terminated")`` ``[B, n, 1]`` (any leading batch dims are flattened), and
    returns a tensordict of scalars: ``loss_qvalue``, ``loss_actor``, ``loss_alpha`` (when
    tuned), ``alpha`` and ``entropy`` (the batch mean of ``H(pi(. | s))``).
    """

    critic: TwinFactorQ | AgentFactorQ
    critic_params: TensorDictParams
    target_critic_params: TensorDictParams

    def __init__(self, policy: JointPolicy, critic: TwinFactorQ | AgentFactorQ, *, gamma: float,
                 alpha: float, autotune_alpha: bool, target_entropy_scale: float,
                 regulariser: str, mode_guidance: float, mode_floor: float = 1.0,
                 group: str = "agents",
                 observation_key: str = "observation") -> None:
        super().__init__()
        n, k = policy.num_agents, policy.num_actions
        self.critic_shape = critic_input_shape(critic)
        if (critic.graph.num_agents, critic.num_actions, math.prod(self.critic_shape)) != \
                (n, k, policy.state_dim):
            raise ValueError(f"critic must be over the policy's {n} agents, {k} actions and "
                             f"inputs of {policy.state_dim} values per state, got "
                             f"{critic.graph.num_agents}, {critic.num_actions} and "
                             f"{list(self.critic_shape)}")
        if regulariser not in ("entropy", "kl_uniform"):
            raise ValueError(f"regulariser must be 'entropy' or 'kl_uniform', got {regulariser!r}")
        self.policy = policy
        self.convert_to_functional(critic, "critic", create_target_params=True)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha)),
                                      requires_grad=autotune_alpha)
        self.gamma, self.autotune_alpha = gamma, autotune_alpha
        self.target_entropy = target_entropy_scale * n * math.log(k)
        self.value_offset = n * math.log(k) if regulariser == "kl_uniform" else 0.0
        self.group, self.observation_key = group, observation_key
        self.guidance = ModeGuidance(critic.graph, k, mode_guidance, mode_floor)
        if self.guidance.note:
            warnings.warn(self.guidance.note, stacklevel=2)

    def _inputs(self, td: TensorDictBase, *prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy's and the critics' inputs from the group's observations."""
        observation = td.get((*prefix, self.group, self.observation_key))
        return (group_state(observation, self.policy),
                group_input(observation, self.critic_shape, "the critic"))

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        td = tensordict.reshape(-1)
        group = self.group
        (state, critic_state), (next_state, next_critic_state) = \
            self._inputs(td), self._inputs(td, "next")
        actions = td.get((group, "action")).long()                          # [B, n]
        reward = td.get(("next", group, "reward")).flatten(1).mean(1)       # [B]
        terminated = td.get(("next", group, "terminated")).flatten(1).any(1)
        alpha = self.log_alpha.detach().exp()

        with torch.no_grad():
            with self.target_critic_params.to_module(self.critic):
                next_values = self.critic.values(next_critic_state)
            next_value = soft_value(next_values, self.policy.distribution(next_state),
                                    alpha, self.value_offset)
            target = reward + self.gamma * (~terminated).to(reward.dtype) * next_value
        with self.critic_params.to_module(self.critic):
            loss_qvalue = critic_loss(self.critic.evaluate(critic_state, actions), target)
            with torch.no_grad():
                values = self.critic.values(critic_state)
        loss_actor, entropy = actor_loss(values, self.policy.distribution(state), alpha,
                                         **self.guidance.loss_arguments(values))
        out = {"loss_qvalue": loss_qvalue, "loss_actor": loss_actor}
        if self.autotune_alpha:
            out["loss_alpha"] = self.log_alpha.exp() * (entropy.detach()
                                                        - self.target_entropy).mean()
        out.update(alpha=alpha, entropy=entropy.detach().mean())
        return TensorDict(out, [])


def critic_input_shape(critic: TwinFactorQ | AgentFactorQ) -> tuple[int, ...]:
    """What ``critic`` reads per state: ``(state_dim,)``, or ``(n, input_dim)`` for an
    ``AgentFactorQ`` (which must be twin critics, ``ensemble=2``, with no global-state
    input)."""
    if isinstance(critic, AgentFactorQ):
        if critic.ensemble != 2:
            raise ValueError(f"an AgentFactorQ critic must be twin critics (ensemble=2), got "
                             f"ensemble={critic.ensemble}")
        if critic.state_dim:
            raise ValueError(f"an AgentFactorQ critic reads the group's observations only; "
                             f"got one with a global state input (state_dim="
                             f"{critic.state_dim})")
        if critic.local:
            raise ValueError(f"an AgentFactorQ critic on a graph per state ({critic.graph!r}) "
                             f"needs the agents' positions, which the loss does not read; "
                             f"use a FactorGraph")
        return critic.graph.num_agents, critic.input_dim
    return (critic.state_dim,)
