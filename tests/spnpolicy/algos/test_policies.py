"""Joint policies: the enumerated softmax distribution against brute force, acting API."""

import itertools

import numpy as np
import pytest
import torch

from circuits import Categorical, Circuit, CircuitDistribution, Product, Sum
from circuits.structures import mixture, selective
from spnpolicy.algos.policies import JointCategorical, JointPolicy
from spnpolicy.algos.policy_structures import register_policy
from circuits.tree_distribution import TreeDistribution
from spnpolicy.algos.spn_ac import SpnAcConfig

N, K = 3, 3


def _joint():
    torch.manual_seed(0)
    logits = torch.randn(2, K**N, dtype=torch.float64)
    return JointCategorical(logits, N, K), torch.softmax(logits, -1)


def _all_actions():
    return torch.tensor(list(itertools.product(range(K), repeat=N)))


def test_joint_categorical_matches_enumeration():
    dist, probs = _joint()
    actions = _all_actions()                                # row j = digits of j, agent 0 first
    log_probs = dist.log_prob(actions[:, None, :].expand(-1, 2, -1))   # [K**N, 2]
    torch.testing.assert_close(log_probs.exp().T, probs)
    torch.testing.assert_close(dist.entropy(), -(probs * probs.log()).sum(-1))
    assert dist.mode.tolist() == [actions[j].tolist() for j in probs.argmax(-1)]
    marg = torch.zeros(2, N, K, dtype=torch.float64)
    pair = torch.zeros(2, K, K, dtype=torch.float64)  # scope (2, 0): axis 0 = agent 2
    for j, u in enumerate(actions.tolist()):
        for i in range(N):
            marg[:, i, u[i]] += probs[:, j]
        pair[:, u[2], u[0]] += probs[:, j]
    torch.testing.assert_close(dist.marginals(), marg)
    torch.testing.assert_close(dist.scope_marginals([(2, 0)])[:, 0], pair)
    triple = dist.scope_marginals([(1, 2, 0)])[:, 0]
    torch.testing.assert_close(triple.permute(0, 3, 1, 2).reshape(2, -1), probs)


def test_joint_categorical_log_prob_marginalises_minus_one_entries():
    """-1 entries: the log of the summed probability of every joint action that agrees on
    the others (enumerated), for every pattern of kept agents; all -1 gives log 1."""
    dist, probs = _joint()
    actions = _all_actions()
    for kept in itertools.product([False, True], repeat=N):
        value = torch.where(torch.tensor(kept), actions, -1)[:, None, :].expand(-1, 2, -1)
        agree = (actions[None, :, list(map(bool, kept))] ==
                 value[:, :1, list(map(bool, kept))]).all(-1)            # [K**N, K**N]
        expected = (agree.double() @ probs.T).log()                       # [K**N, 2]
        torch.testing.assert_close(dist.log_prob(value), expected)


def test_joint_categorical_sampling_frequencies():
    dist, probs = _joint()
    draws = dist.sample((20_000,), generator=torch.Generator().manual_seed(0))
    assert draws.shape == (20_000, 2, N)
    index = (draws * torch.tensor([K * K, K, 1])).sum(-1)
    freq = torch.stack([torch.bincount(index[:, b], minlength=K**N) for b in range(2)]) / 20_000
    assert (freq - probs).abs().max() < 0.015


@pytest.mark.parametrize("kind", ["selective", "mean_field", "softmax"])
def test_policy_act_and_distribution(kind):
    torch.manual_seed(0)
    policy = JointPolicy(state_dim=5, num_agents=N, num_actions=K, kind=kind, width=4,
                         hidden=(8,))
    states = np.random.default_rng(0).random((4, 5), dtype=np.float32)
    dist = policy.distribution(states)
    assert dist.batch_shape == (4,)
    assert isinstance(dist, JointCategorical if kind == "softmax" else CircuitDistribution)
    fast = {"softmax": JointCategorical, "selective": TreeDistribution,
            "mean_field": CircuitDistribution}[kind]
    assert isinstance(policy.distribution(states), fast)
    greedy = policy.act(states)
    assert isinstance(greedy, np.ndarray) and greedy.shape == (4, N)
    np.testing.assert_array_equal(greedy, dist.mode.numpy())
    one = policy.act(torch.as_tensor(states[0]), deterministic=False)
    assert isinstance(one, torch.Tensor) and one.shape == (N,)
    # near-uniform at initialisation: a policy starts by exploring
    assert torch.allclose(dist.entropy(), torch.tensor(N * np.log(K), dtype=torch.float32),
                          atol=0.05)


def test_policy_errors():
    policy = JointPolicy(state_dim=5, num_agents=2, num_actions=3)
    with pytest.raises(ValueError, match=r"\[B, state_dim\] = \[B, 5\] or one of them, got "
                                         r"shape \[2, 4\]"):
        policy.act(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="n <= 5"):
        JointPolicy(state_dim=5, num_agents=6, num_actions=2, kind="softmax")
    with pytest.raises(ValueError, match="kind"):
        JointPolicy(state_dim=5, num_agents=2, num_actions=2, kind="rat")


def test_joint_categorical_checks_actions():
    dist, _ = _joint()
    with pytest.raises(ValueError, match=r"value must hold actions in range\(3\) or -1 "
                                         r"\(marginalised out\), got values from 0 to 3"):
        dist.log_prob(torch.tensor([[0, 1, 3], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"from -2 to 2"):
        dist.log_prob(torch.tensor([[0, 1, 2], [-2, 0, 0]]))
    with pytest.raises(ValueError, match=r"shape \[\*sample, B=2, n=3\], got \[2, 2\]"):
        dist.log_prob(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        dist.log_prob(torch.zeros(2, 3))


def _chain(n, k):
    """A deterministic circuit that is not a region tree: x_0's value picks the rest's mean field."""
    def rest(state):
        return Product([Categorical.indicator(0, state, k)]
                       + [Categorical(v, k) for v in range(1, n)])
    return Circuit(Sum([rest(s) for s in range(k)]))


@pytest.mark.parametrize("structure", [lambda n, k: selective(n, k, 2), _chain,
                                       _chain(N, K), "registered"])
def test_user_policy_structures(structure):
    if structure == "registered":
        register_policy("chain-test", _chain)
        structure = "chain-test"
    policy = JointPolicy(state_dim=4, num_agents=N, num_actions=K, kind=structure, hidden=(8,))
    states = torch.randn(5, 4)
    dist = policy.distribution(states)
    assert dist.batch_shape == (5,) and policy.act(states).shape == (5, N)
    probs = dist.log_prob(torch.tensor(list(itertools.product(range(K), repeat=N)))[:, None]
                          .expand(-1, 5, -1)).exp()
    torch.testing.assert_close(probs.sum(0), torch.ones(5))
    assert torch.isfinite(dist.entropy()).all()
    loss = -dist.entropy().sum()
    loss.backward()
    assert policy.encoder[0].weight.grad.abs().sum() > 0
    assert SpnAcConfig(policy=structure).policy is structure


def test_user_policy_structures_are_validated():
    with pytest.raises(ValueError, match="must be deterministic"):
        JointPolicy(4, N, K, kind=lambda n, k: mixture(n, k, 2))
    with pytest.raises(ValueError, match=r"must have 3 variables \(agents\) with 3 states"):
        JointPolicy(4, N, K, kind=lambda n, k: selective(n, k + 1, 2))
    with pytest.raises(ValueError, match="must return a circuits.Circuit, got int"):
        JointPolicy(4, N, K, kind=lambda n, k: 3)
    with pytest.raises(ValueError, match="no parameters"):
        JointPolicy(4, 1, K, kind=lambda n, k: Circuit(Sum([Categorical.indicator(0, 1, k)])))
    with pytest.raises(ValueError, match=r"failed: .*"):
        JointPolicy(4, 2, K, kind=lambda n, k: Circuit(Product([Categorical(0, k),
                                                                Categorical(0, k)])))
    with pytest.raises(ValueError, match=r"policy must be one of .*'selective'.*got 'nope'"):
        SpnAcConfig(policy="nope")
    with pytest.raises(ValueError, match="policy must be a policy name"):
        SpnAcConfig(policy=3)
    with pytest.raises(ValueError, match="built-in"):
        register_policy("selective", _chain)
