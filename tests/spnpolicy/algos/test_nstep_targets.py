"""The bootstrapped targets discount an m-step return's bootstrap by gamma**m, compared with
targets computed by hand (a target built with gamma instead of gamma**m fails these)."""

import torch

from spnpolicy.algos import spn_ac
from spnpolicy.algos.q_learning import QLearningConfig, QModel, td_loss
from spnpolicy.algos.spn_ac import SpnAc, SpnAcConfig
from spnpolicy.training import Batch, make_vec_env

GAMMA = 0.9
STEPS = torch.tensor([1, 3, 5, 2])
REWARD = torch.tensor([0.5, 1.0, -2.0, 0.25])
TERMINATED = torch.tensor([0.0, 0.0, 0.0, 1.0])
NEXT_VALUE = torch.tensor([2.0, 4.0, 3.0, 7.0])
EXPECTED = torch.tensor([0.5 + 0.9 * 2.0, 1.0 + 0.9**3 * 4.0, -2.0 + 0.9**5 * 3.0, 0.25])


def _batch(num_agents: int = 2, state_dim: int = 3) -> Batch:
    size = len(STEPS)
    return Batch(state=torch.zeros(size, state_dim), actions=torch.zeros(size, num_agents,
                                                                         dtype=torch.long),
                 reward=REWARD, next_state=torch.ones(size, state_dim), terminated=TERMINATED,
                 steps=STEPS, obs=torch.zeros(size, num_agents, 1),
                 next_obs=torch.zeros(size, num_agents, 1))


class _Fixed(QModel):
    """Greedy action 0 everywhere; ``evaluate`` returns ``values`` (a parameter online)."""

    def __init__(self, values: torch.Tensor) -> None:
        super().__init__()
        self.values = torch.nn.Parameter(values.clone())
        self.num_actions = 2

    def greedy(self, state, obs):
        return torch.zeros(len(STEPS), 2, dtype=torch.long)

    def evaluate(self, state, obs, actions):
        return self.values


def test_q_learning_target_discounts_by_gamma_to_the_m():
    online, target = _Fixed(torch.zeros(len(STEPS))), _Fixed(NEXT_VALUE)
    cfg = QLearningConfig(gamma=GAMMA, standardise_rewards=False)
    loss, _ = td_loss(online, target, _batch(), cfg)
    loss.backward()
    # loss = mean((q - y)^2) at q = 0: dloss/dq = -2 y / B, so y = -B/2 dloss/dq
    target_values = -online.values.grad * len(STEPS) / 2
    torch.testing.assert_close(target_values, EXPECTED)


def test_spn_ac_target_discounts_by_gamma_to_the_m(monkeypatch):
    envs = make_vec_env("climbing", 1)
    cfg = SpnAcConfig(gamma=GAMMA, policy_hidden=(4,), critic_hidden=(4,))
    algorithm = SpnAc(cfg, envs)
    seen = {}

    def fixed_soft_value(values, dist, alpha, max_entropy=0.0):
        return NEXT_VALUE.clone()

    def recording_critic_loss(q, target):
        seen["target"] = target.detach().clone()
        return (q - target).pow(2).mean(1).sum()

    monkeypatch.setattr(spn_ac, "soft_value", fixed_soft_value)
    monkeypatch.setattr(spn_ac, "critic_loss", recording_critic_loss)
    batch = _batch(envs.num_agents, envs.state_dim)
    algorithm.update(batch._replace(obs=None, next_obs=None))
    torch.testing.assert_close(seen["target"], EXPECTED)
