"""The shared parameter head of circuit policies (``param_head="shared"``): shapes, the
group-id embeddings that tell agents apart, a shared part whose size does not grow with the
team, and distributions as exact as the flat head's."""

import itertools

import numpy as np
import pytest
import torch

from spnpolicy.algos.policies import JointPolicy, SharedGroupHead, _group_sizes
from tests.circuits.helpers import engine


@pytest.mark.parametrize("kind", ["mean_field", "selective"])
def test_shapes(kind):
    torch.manual_seed(0)
    policy = JointPolicy(7, 5, 4, kind, width=8, param_head="shared")
    states = torch.randn(3, 7)
    assert policy.encoder(states).shape == (3, policy.circuit.num_params)
    dist = policy.distribution(states)
    assert dist.marginals().shape == (3, 5, 4)
    assert policy.act(states).shape == (3, 5)
    assert policy.act(states.numpy(), deterministic=False).shape == (3, 5)


@pytest.mark.parametrize("kind", ["mean_field", "selective"])
def test_each_group_gets_its_head_of_its_embedding(kind):
    # brute force: group g's logits are head_s(relu(f(s) + e_g)), in the flat order
    torch.manual_seed(1)
    policy = JointPolicy(6, 6, 3, kind, width=4, param_head="shared")
    head, sizes = policy.encoder, _group_sizes(policy.circuit)
    states = torch.randn(4, 6)
    logits = head(states)
    features = head.encoder(states)
    at = 0
    for g, size in enumerate(sizes):
        expected = head.heads[str(size)](torch.relu(features + head.embedding[g]))
        torch.testing.assert_close(logits[:, at:at + size], expected)
        at += size
    assert at == logits.shape[1]


def test_agents_differ_by_id_alone():
    torch.manual_seed(2)
    policy = JointPolicy(5, 4, 3, "mean_field", param_head="shared")
    with torch.no_grad():
        policy.encoder.heads["3"][-1].weight.mul_(100.0)   # visible differences
    states = torch.randn(2, 5)
    marginals = policy.distribution(states).marginals()          # [2, 4, 3]
    for i, j in itertools.combinations(range(4), 2):
        assert not torch.allclose(marginals[:, i], marginals[:, j], atol=1e-4)
    with torch.no_grad():                                   # same id embedding: same policy
        policy.encoder.embedding[1] = policy.encoder.embedding[0]
    marginals = policy.distribution(states).marginals()
    torch.testing.assert_close(marginals[:, 0], marginals[:, 1])


@pytest.mark.parametrize("kind", ["mean_field", "selective"])
def test_shared_part_does_not_grow_with_the_team(kind):
    def counts(n):
        policy = JointPolicy(10, n, 6, kind, width=16, param_head="shared")
        flat = JointPolicy(10, n, 6, kind, width=16)
        shared = sum(p.numel() for p in policy.encoder.shared_parameters())
        return shared, policy.encoder.embedding.shape[0], sum(p.numel() for p in flat.parameters())

    (s16, g16, f16), (s64, g64, f64) = counts(16), counts(64)
    assert s16 == s64                           # encoder and heads: the same at 16 and 64
    assert g64 > g16 and f64 > f16              # only the embedding grows (and the flat MLP)


@pytest.mark.parametrize("kind", ["mean_field", "selective"])
def test_distribution_is_exact(kind):
    # the probabilities of every joint action (enumerated) sum to 1, the region-tree layout's
    # and the engine's (flat) distributions agree, and the entropy is the enumerated one
    torch.manual_seed(3)
    n, k = 3, 3
    policy = JointPolicy(4, n, k, kind, width=4, param_head="shared")
    with torch.no_grad():
        for p in policy.encoder.heads.parameters():
            p.mul_(300.0)
    states = torch.randn(2, 4)
    joint = torch.tensor(list(itertools.product(range(k), repeat=n)))   # [k**n, n]
    values = joint[:, None, :].expand(-1, 2, -1)
    fast = policy.distribution(states)                                  # the tree's routes
    logp = engine(policy.circuit, policy.encoder(states)).log_prob(values)  # [k**n, 2]
    torch.testing.assert_close(fast.log_prob(values), logp)
    torch.testing.assert_close(logp.exp().sum(0), torch.ones(2))
    torch.testing.assert_close(fast.entropy(), -(logp.exp() * logp).sum(0))
    assert logp.exp().std() > 1e-3                                      # not uniform


def test_gradients_reach_the_embedding_and_the_shared_part():
    torch.manual_seed(4)
    policy = JointPolicy(5, 4, 3, "selective", width=4, param_head="shared")
    dist = policy.distribution(torch.randn(8, 5))
    dist.entropy().sum().backward()
    assert policy.encoder.embedding.grad.abs().sum() > 0
    assert all(p.grad is not None for p in policy.encoder.shared_parameters())


def test_bad_settings_name_the_argument():
    with pytest.raises(ValueError, match="param_head"):
        JointPolicy(5, 3, 3, "selective", param_head="wide")
    with pytest.raises(ValueError, match="softmax"):
        JointPolicy(5, 3, 3, "softmax", param_head="shared")
    with pytest.raises(ValueError, match="group_sizes"):
        SharedGroupHead(5, [], (8,))
    assert np.isfinite(JointPolicy(5, 3, 3, "selective").encoder(torch.zeros(1, 5))
                       .detach().numpy()).all()            # the flat default unchanged
