"""The per-agent parameter head of circuit policies (``param_head="agents"``): each parameter
group reads only the agents of its scope, its shared part does not grow with the team, its
distributions are exact, its starting point is the agents' own softmax, and spn-ac trains,
saves and reloads with it."""

import itertools
import math

import numpy as np
import pytest
import torch

import spnpolicy
from spnpolicy.algos.policies import SCORE_BOUND, AgentGroupHead, JointPolicy, _group_sizes
from spnpolicy.inference import load_agent
from tests.circuits.helpers import engine


def _group_scopes(policy) -> list[frozenset]:
    """The agents each parameter group may read: its sum's (or leaf's) scope."""
    plan = policy.circuit._plan_on(torch.device("cpu"))
    scopes = {}
    for p, g in enumerate(plan.param_group.tolist()):
        node = int(plan.param_node[p])
        scopes[g] = (plan.nodes[node - 1].scope if node >= 0
                     else frozenset([int(plan.leaf_var[plan.param_leaf[p]])]))
    return [scopes[g] for g in range(plan.num_param_groups)]


@pytest.mark.parametrize("kind", ["mean_field", "selective"])
def test_a_group_reads_only_the_agents_of_its_scope(kind):
    # perturbing agent j's observation moves exactly the logits of the groups whose scope
    # holds j (with weights large enough that every such group visibly moves)
    torch.manual_seed(0)
    n, obs_dim = 6, 5
    policy = JointPolicy(11, n, 3, kind, width=4, param_head="agents", obs_dim=obs_dim)
    with torch.no_grad():
        for p in policy.encoder.parameters():
            p.mul_(3.0)
    x = torch.randn(2, n, obs_dim)
    base = policy.encoder(x)
    scopes, sizes = _group_scopes(policy), _group_sizes(policy.circuit)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for j in range(n):
        moved = x.clone()
        moved[:, j] += 2.0
        delta = (policy.encoder(moved) - base).abs()
        for g, scope in enumerate(scopes):
            changed = delta[:, starts[g]:starts[g] + sizes[g]].max()
            if j in scope:
                assert changed > 1e-6, (j, g, sorted(scope))
            else:
                assert changed == 0, (j, g, sorted(scope))


@pytest.mark.parametrize("kind", ["mean_field", "selective"])
def test_shared_part_does_not_grow_with_the_team(kind):
    def counts(n):
        head = JointPolicy(1, n, 6, kind, width=16, param_head="agents", obs_dim=9).encoder
        shared = sum(p.numel() for name, p in head.named_parameters() if name != "embedding")
        return shared, head.embedding.shape[0]

    (s16, g16), (s64, g64) = counts(16), counts(64)
    assert s16 == s64 and g64 > g16             # only the group embedding grows


@pytest.mark.parametrize("agent_ids", [False, True])
@pytest.mark.parametrize("kind", ["mean_field", "selective"])
def test_distribution_is_exact(kind, agent_ids):
    # the enumerated joint probabilities sum to 1, the region tree's and the engine's
    # layouts agree, and the entropy is the enumerated one
    torch.manual_seed(1)
    n, k = 3, 3
    policy = JointPolicy(2, n, k, kind, width=4, param_head="agents", obs_dim=4,
                         agent_ids=agent_ids)
    with torch.no_grad():
        for p in policy.encoder.heads.parameters():
            p.mul_(300.0)
    x = torch.randn(2, n, 4)
    joint = torch.tensor(list(itertools.product(range(k), repeat=n)))   # [k**n, n]
    values = joint[:, None, :].expand(-1, 2, -1)
    fast = policy.distribution(x)
    logp = engine(policy.circuit, policy.encoder(x)).log_prob(values)               # [k**n, 2]
    torch.testing.assert_close(fast.log_prob(values), logp)
    torch.testing.assert_close(logp.exp().sum(0), torch.ones(2))
    torch.testing.assert_close(fast.entropy(), -(logp.exp() * logp).sum(0))
    assert logp.exp().std() > 1e-3                                      # not uniform


def _scaled_policy(kind, n, k, seed, width, corrections, scores):
    """An agents-head policy (inputs [B, n, 6]) with its correction heads' and action
    scores' last layers multiplied by ``corrections`` and ``scores``."""
    torch.manual_seed(seed)
    policy = JointPolicy(2, n, k, kind, width=width, param_head="agents", obs_dim=6)
    with torch.no_grad():
        for p in policy.encoder.heads.parameters():
            p.mul_(corrections)
        for p in policy.encoder.scores.parameters():
            p.mul_(scores)
    return policy


@pytest.mark.parametrize("kind", ["mean_field", "selective"])
def test_without_corrections_the_policy_is_the_agents_own_softmax(kind):
    # the head's starting point: every agent draws from softmax(f_i), independently
    n, k = 4, 3
    policy = _scaled_policy(kind, n, k, seed=4, width=5, corrections=0.0, scores=200.0)
    head = policy.encoder
    x = torch.randn(3, n, 6)
    dist = policy.distribution(x)
    own = torch.softmax(head.action_scores(torch.relu(head.encoder(x))), -1)   # [3, n, k]
    torch.testing.assert_close(dist.marginals(), own)
    joint = torch.tensor(list(itertools.product(range(k), repeat=n)))          # [k**n, n]
    product = own[:, torch.arange(n), joint].prod(-1).T                      # [k**n, 3]
    torch.testing.assert_close(dist.log_prob(joint[:, None].expand(-1, 3, -1)).exp(), product)
    assert own.std() > 0.05                                                   # not uniform


def test_gradients_reach_every_parameter():
    torch.manual_seed(2)
    policy = JointPolicy(1, 5, 3, "selective", width=4, param_head="agents", obs_dim=6)
    policy.distribution(torch.randn(8, 5, 6)).entropy().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in policy.encoder.parameters())


def test_bad_input_names_the_shape_and_the_argument():
    policy = JointPolicy(7, 3, 3, "selective", param_head="agents", obs_dim=5)
    assert policy.input_shape == (3, 5) and policy.needs_obs
    assert not JointPolicy(7, 3, 3, "selective").needs_obs
    with pytest.raises(ValueError, match=r"per-agent observations \[B, n, obs_dim\] = \[B, 3, 5\]"):
        policy.distribution(torch.zeros(2, 7))          # a global state
    with pytest.raises(ValueError, match="NaN or inf"):
        policy.act(np.full((3, 5), np.nan))
    with pytest.raises(ValueError, match="obs_dim"):
        JointPolicy(7, 3, 3, "selective", param_head="agents")
    with pytest.raises(ValueError, match="obs_dim"):
        JointPolicy(7, 3, 3, "selective", obs_dim=5)
    with pytest.raises(ValueError, match="softmax"):
        JointPolicy(7, 3, 3, "softmax", param_head="agents", obs_dim=5)
    assert isinstance(policy.encoder, AgentGroupHead)


@pytest.mark.parametrize("critic_input, agent_ids", [("state", False), ("agents", False),
                                                     ("agents", True)])
def test_spn_ac_trains_saves_and_reloads_with_it(tmp_path, critic_input, agent_ids):
    result = spnpolicy.train("spn-ac", "coverage", seed=0, total_steps=160, out_dir=tmp_path,
                             env_kwargs=dict(num_agents=3, grid_size=4, max_steps=8,
                                             observation="relative"),
                             learning_starts=64, batch_size=16, eval_interval=160,
                             eval_episodes=2, param_head="agents", critic_input=critic_input,
                             agent_ids=agent_ids, progress=False, verbose=False)
    assert result.agent.encoder.agent_ids is agent_ids
    agent = load_agent(tmp_path)
    assert agent.encoder.agent_ids is agent_ids
    assert agent.input_shape == result.agent.input_shape == (3, result.agent.input_shape[1])
    x = np.random.default_rng(0).random((4, *agent.input_shape)).astype(np.float32)
    assert np.array_equal(agent.act(x), result.agent.act(x))
    torch.testing.assert_close(agent.distribution(x).entropy(),
                               result.agent.distribution(x).entropy())
    assert load_agent(tmp_path, acting="critics").distribution(x).marginals().shape == (4, 3, 6)


@pytest.mark.parametrize("kind", ["mean_field", "selective"])
def test_bounded_scores_keep_every_action_possible(kind):
    # scores pushed far past the bound: a joint action's log-weight is a sum of at most n
    # scores and (on the selective circuit's paths) fewer than 3 n corrections, each in
    # (-B, B), so every joint action keeps a log-probability above -2 B (4 n) - n log k; on
    # the mean-field circuit each agent's least likely action keeps at least exp(-4 B) of
    # its most likely one's probability. Unbounded, the same weights rule actions out.
    n, k = 4, 3
    policy = _scaled_policy(kind, n, k, seed=5, width=3, corrections=1e5, scores=1e5)
    head = policy.encoder
    unbounded = AgentGroupHead(6, policy.circuit, (128, 128), bound=math.inf)
    unbounded.load_state_dict(head.state_dict())
    x = torch.randn(3, n, 6)
    joint = torch.tensor(list(itertools.product(range(k), repeat=n)))[:, None].expand(-1, 3, -1)
    floor = -2 * SCORE_BOUND * 4 * n - n * math.log(k)
    for logits, bounded in ((head(x), True), (unbounded(x), False)):
        dist = policy.circuit.distribution(logits)
        assert (dist.log_prob(joint).min() > floor) == bounded
        if kind == "mean_field":
            marginals = dist.marginals()                                   # [3, n, k]
            ratio = marginals.min(-1).values / marginals.max(-1).values
            assert bool((ratio >= math.exp(-4 * SCORE_BOUND) * 0.999).all()) == bounded
    assert policy.distribution(x).entropy().max() < 0.7 * n * math.log(k)      # not uniform


def test_the_bound_must_be_positive():
    policy = JointPolicy(2, 3, 3, "selective", width=3, param_head="agents", obs_dim=6)
    with pytest.raises(ValueError, match="bound must be a positive float"):
        AgentGroupHead(6, policy.circuit, (8,), bound=0.0)


def test_the_bound_keeps_a_slope_far_past_it():
    # a score pushed far past the bound still has a gradient (tanh's is exactly 0 there in
    # float32), so the policy can come back
    policy = JointPolicy(2, 3, 3, "selective", width=3, param_head="agents", obs_dim=6)
    x = torch.tensor([-1e4, -100.0, 0.0, 3.0, 100.0, 1e4], requires_grad=True)
    y = policy.encoder._bounded(x)
    assert bool((y.abs() < SCORE_BOUND).all())
    expected = torch.tensor([0.0, 3.0 / math.sqrt(1 + (3.0 / SCORE_BOUND) ** 2)])
    torch.testing.assert_close(y[2:4], expected)
    y.sum().backward()
    assert bool((x.grad > 0).all())


def test_agent_ids_tell_agents_with_equal_inputs_apart():
    """Every agent sees the same input: with the group corrections at zero (the agents' own
    softmax), the marginals are equal across agents without ids (one shared scorer) and
    differ with them."""
    torch.manual_seed(0)
    n, k = 4, 5
    x = torch.randn(3, 1, 6).expand(3, n, 6)
    for agent_ids in (False, True):
        policy = JointPolicy(2, n, k, "mean_field", param_head="agents", obs_dim=6,
                             agent_ids=agent_ids)
        with torch.no_grad():
            for p in policy.encoder.scores.parameters():
                p.mul_(100.0)
            for p in policy.encoder.heads.parameters():
                p.zero_()
        marginals = policy.distribution(x).marginals()                   # [3, n, k]
        spread = (marginals - marginals[:, :1]).abs().max()
        assert (spread > 1e-3) if agent_ids else (spread < 1e-6), (agent_ids, spread)
    assert policy.encoder.encoder[0].in_features == 6 + n


def test_agent_ids_need_the_agents_head():
    with pytest.raises(ValueError, match="agent_ids needs param_head='agents'"):
        JointPolicy(8, 2, 3, "selective", param_head="flat", agent_ids=True)
    from spnpolicy.algos.spn_ac import SpnAcConfig
    with pytest.raises(ValueError, match="agent_ids=True needs param_head='agents'"):
        SpnAcConfig(agent_ids=True)
    assert SpnAcConfig(agent_ids=True, param_head="agents").agent_ids
