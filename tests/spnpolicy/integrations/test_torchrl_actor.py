"""The TorchRL actor over a circuit joint policy: its distribution against enumeration of
all joint actions, and the keys the actor writes."""

import itertools

import pytest
import torch

pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from torchrl.envs.utils import ExplorationType, set_exploration_type  # noqa: E402

from spnpolicy.algos.policies import JointPolicy  # noqa: E402
from spnpolicy.integrations.torchrl import (  # noqa: E402
    JointActionDistribution,
    joint_actor,
    params_key,
)

N, K, OBS = 3, 3, 2


def _policy(kind: str, seed: int = 0) -> JointPolicy:
    torch.manual_seed(seed)
    policy = JointPolicy(N * OBS, N, K, kind, width=4, hidden=(8,))
    with torch.no_grad():                 # away from the near-uniform initialisation
        policy.encoder[-1].weight.mul_(300.0)
        policy.encoder[-1].bias.normal_(0.0, 2.0)
    return policy


def _all_joint_actions() -> torch.Tensor:
    """Every joint action ``[K**N, N]``."""
    return torch.tensor(list(itertools.product(range(K), repeat=N)))


@pytest.mark.parametrize("kind", ["selective", "mean_field", "softmax"])
def test_distribution_matches_enumeration(kind):
    policy = _policy(kind)
    obs = torch.randn(2, 4, N, OBS)                               # batch [2, 4]
    states = obs.flatten(-2).reshape(8, N * OBS)
    with torch.no_grad():
        dist = JointActionDistribution(policy.encoder(obs.flatten(-2)), policy)
        reference = policy.distribution(states)                  # the engine's, batch [8]
        table = _all_joint_actions()                              # [27, N]
        value = table[:, None, None, :].expand(-1, 2, 4, -1)      # [27, 2, 4, N]
        log_prob = dist.log_prob(value)

        assert dist.batch_shape == (2, 4, N) and log_prob.shape == (27, 2, 4, N)
        assert torch.equal(log_prob, log_prob[..., :1].expand_as(log_prob))
        expected = reference.log_prob(table[:, None, :].expand(-1, 8, -1)).view(27, 2, 4)
        assert torch.allclose(log_prob[..., 0], expected, atol=1e-5)
        p = log_prob[..., 0].exp()
        assert torch.allclose(p.sum(0), torch.ones(2, 4), atol=1e-5)
        entropy = -(p * p.log()).sum(0)
        assert torch.allclose(dist.entropy(), entropy[..., None].expand(2, 4, N), atol=1e-4)
        assert torch.equal(dist.mode, table[p.argmax(0)])
        assert torch.equal(dist.deterministic_sample, dist.mode)


def test_samples_follow_the_joint_probabilities():
    policy = _policy("selective", seed=1)
    with torch.no_grad():
        dist = JointActionDistribution(policy.encoder(torch.randn(1, N * OBS)), policy)
        torch.manual_seed(0)
        draws = dist.sample((20_000,))                            # [20000, 1, N]
        table = _all_joint_actions()
        p = dist.joint_log_prob(table[:, None, :]).exp()[:, 0]
    assert draws.shape == (20_000, 1, N) and draws.dtype == torch.long
    index = (draws[:, 0] * torch.tensor([K * K, K, 1])).sum(-1)
    frequency = torch.bincount(index, minlength=K**N) / 20_000.0
    assert p.max() > 0.1                                          # not near uniform
    assert (frequency - p).abs().max() < 0.015


def test_actor_writes_joint_actions_and_the_joint_log_prob():
    policy = _policy("selective", seed=2)
    actor = joint_actor(policy, group="team")
    obs = torch.randn(5, N, OBS)
    td = TensorDict({"team": TensorDict({"observation": obs}, [5, N])}, [5])
    with torch.no_grad():
        out = actor(td.clone())
        actions, log_prob = out["team", "action"], out["team", "log_prob"]
        assert actions.shape == (5, N) and log_prob.shape == (5, N)
        assert out[params_key("team")].shape == (5, policy.circuit.num_params)
        expected = policy.distribution(obs.flatten(-2)).log_prob(actions)
        assert torch.allclose(log_prob, expected[:, None].expand(5, N), atol=1e-5)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            greedy = actor(td.clone())["team", "action"]
        assert torch.equal(greedy, policy.act(obs.flatten(-2), deterministic=True))


def test_bad_inputs_are_named():
    policy = _policy("selective")
    actor = joint_actor(policy)
    td = TensorDict({"agents": TensorDict({"observation": torch.randn(5, N, OBS + 1)},
                                          [5, N])}, [5])
    with pytest.raises(ValueError, match=r"n \* obs = 6 for the policy's input \[6\], got \[5, 3, 3\]"):
        actor(td)
    dist = JointActionDistribution(torch.zeros(4, policy.circuit.num_params), policy)
    with pytest.raises(ValueError, match=r"batch_shape=\[4, 3\]\], got \[4, 2\]"):
        dist.log_prob(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="policy must be a JointPolicy"):
        joint_actor(policy.encoder)
