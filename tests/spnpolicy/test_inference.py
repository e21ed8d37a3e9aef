"""spnpolicy.inference against brute-force enumeration of the joint action table.

Two kinds of policies: random ``JointPolicy`` networks (selective and mean-field circuits,
a different distribution per state; the table is enumerated from ``log_prob``, which the
circuits tests check against the oracle) and random circuits from the circuits test
strategies (the table is the oracle's, computed without the engine).
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import spnpolicy
from circuits import Categorical, Product, Sum
from circuits.structures import mean_field, selective
from spnpolicy.algos.policies import JointPolicy
from spnpolicy.inference import (MarginalPolicy, anomaly_scores, conditional_policy,
                                 drop_agents, load_agent, load_run_config, marginal_scores,
                                 most_likely)
from tests.circuits import oracle
from tests.circuits.helpers import (PROPERTY, all_assignments, circuit64, engine_joint,
                                    float64_default)
from tests.circuits.strategies import random_circuits

STATE_DIM = 5


class LinearPolicy:
    """A random state-conditioned circuit policy in float64: logits = states @ W + b."""

    def __init__(self, n: int, k: int, kind: str, seed: int) -> None:
        with float64_default():
            self.circuit = selective(n, k, width=4) if kind == "selective" else mean_field(n, k)
        g = torch.Generator().manual_seed(seed)
        shape = (STATE_DIM, self.circuit.num_params)
        self.weight = 2.0 * torch.randn(shape, generator=g, dtype=torch.float64)
        self.bias = torch.randn(shape[1], generator=g, dtype=torch.float64)

    def distribution(self, s):
        return self.circuit.distribution(torch.as_tensor(s, dtype=torch.float64) @ self.weight
                                         + self.bias)


def random_policy(n: int, k: int, kind: str, seed: int) -> LinearPolicy:
    return LinearPolicy(n, k, kind, seed)


def states(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, STATE_DIM, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


class CircuitAgent:
    """An agent whose policy is one fixed circuit for every state (for the oracle tests)."""

    def __init__(self, circuit) -> None:
        self.circuit = circuit

    def distribution(self, s):
        return self.circuit.distribution(self.circuit.logits.detach().expand(len(s), -1))


def table(policy, s, n, k) -> np.ndarray:
    """``[B, k, ..., k]`` brute-force joint table of ``pi(. | s)``."""
    with torch.no_grad():
        return engine_joint(policy.distribution(s), [k] * n)


def conditional_table(joint: np.ndarray, evidence) -> np.ndarray:
    return oracle.condition(joint, evidence)


def dropped_table(joint: np.ndarray, dropped) -> np.ndarray:
    return joint.sum(axis=tuple(dropped)) if dropped else joint


POLICIES = [(n, k, kind, seed) for (n, k) in [(2, 3), (3, 3), (4, 2)]
            for kind in ("selective", "mean_field") for seed in range(3)]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


@pytest.mark.parametrize("n, k, kind, seed", POLICIES)
def test_conditional_policy_matches_the_conditioned_table(n, k, kind, seed):
    policy, s = random_policy(n, k, kind, seed), states(3, seed)
    joint = table(policy, s, n, k)
    rng = np.random.default_rng(seed)
    for size in range(1, n):
        agents = sorted(rng.choice(n, size, replace=False).tolist())
        fixed = {a: int(rng.integers(k)) for a in agents}
        dist = conditional_policy(policy, s, fixed)
        evidence = [fixed.get(i, -1) for i in range(n)]
        x = all_assignments([k] * n).unsqueeze(1).expand(-1, 3, -1)
        got = _np(dist.log_prob(x).exp()).T                               # [B, k^n]
        for b in range(3):
            want = conditional_table(joint[b], evidence)
            np.testing.assert_allclose(got[b], want.reshape(-1), atol=1e-9)
            np.testing.assert_allclose(_np(dist.marginals()[b]), oracle.marginals(want),
                                       atol=1e-9)
        samples = dist.sample((50,))
        assert samples.shape == (50, 3, n)
        for a, action in fixed.items():
            assert bool((samples[..., a] == action).all())


@pytest.mark.parametrize("n, k, kind, seed", POLICIES)
def test_per_state_evidence(n, k, kind, seed):
    policy, s = random_policy(n, k, kind, seed), states(4, seed)
    joint = table(policy, s, n, k)
    actions = torch.arange(4) % k
    dist = conditional_policy(policy, s, {n - 1: actions})
    for b in range(4):
        evidence = [-1] * (n - 1) + [int(actions[b])]
        np.testing.assert_allclose(_np(dist.marginals()[b]),
                                   oracle.marginals(conditional_table(joint[b], evidence)),
                                   atol=1e-9)


@pytest.mark.parametrize("n, k, kind, seed", POLICIES)
def test_most_likely_is_the_argmax_of_the_conditioned_table(n, k, kind, seed):
    policy, s = random_policy(n, k, kind, seed), states(3, seed)
    joint = table(policy, s, n, k)
    for fixed in ({}, {0: k - 1}, {n - 1: 0, 0: 1 % k}):
        evidence = [fixed.get(i, -1) for i in range(n)]
        best = most_likely(policy, s, fixed)
        assert best.shape == (3, n)
        for b in range(3):
            _, winners = oracle.mpe_set(joint[b], evidence, rtol=1e-7)
            assert tuple(best[b].tolist()) in winners, (best[b], winners)


@pytest.mark.parametrize("n, k, kind, seed", POLICIES)
def test_drop_agents_is_the_summed_out_table(n, k, kind, seed):
    policy, s = random_policy(n, k, kind, seed), states(3, seed)
    joint = table(policy, s, n, k)
    for size in range(1, n):
        for dropped in itertools.combinations(range(n), size):
            lost = drop_agents(policy, s, dropped)
            kept = [i for i in range(n) if i not in dropped]
            assert lost.agents == tuple(kept) and isinstance(lost, MarginalPolicy)
            m = len(kept)
            x = all_assignments([k] * m).unsqueeze(1).expand(-1, 3, -1)
            got = _np(lost.log_prob(x).exp()).T
            for b in range(3):
                want = dropped_table(joint[b], dropped)
                np.testing.assert_allclose(got[b], want.reshape(-1), atol=1e-9)
                np.testing.assert_allclose(_np(lost.marginals()[b]), oracle.marginals(want),
                                           atol=1e-9)
                _, winners = oracle.mpe_set(want, rtol=1e-7)
                assert tuple(lost.mode[b].tolist()) in winners


@pytest.mark.parametrize("seed", range(3))
def test_dropped_and_conditioned_marginal_leave_one_out(seed):
    n, k = 4, 3
    policy, s = random_policy(n, k, "selective", seed), states(2, seed)
    joint = table(policy, s, n, k)
    lost = drop_agents(policy, s, [1]).condition({3: 2})
    lost_too = drop_agents(policy, s, [1], fixed={3: 2})
    actions = torch.tensor([[0, 2, 2], [1, 1, 2]])
    loo = _np(lost.leave_one_out_log_prob(actions))
    for b in range(2):
        want = dropped_table(conditional_table(joint[b], [-1, -1, -1, 2]), [1])
        np.testing.assert_allclose(_np(lost.marginals()[b]), oracle.marginals(want), atol=1e-9)
        np.testing.assert_allclose(_np(lost_too.marginals()[b]), oracle.marginals(want),
                                   atol=1e-9)
        np.testing.assert_allclose(loo[b], oracle.leave_one_out(want, actions[b].tolist()),
                                   atol=1e-7)


@pytest.mark.parametrize("seed", range(2))
def test_marginal_samples_follow_the_summed_out_table(seed):
    n, k = 3, 3
    policy, s = random_policy(n, k, "selective", seed), states(1, seed)
    want = dropped_table(table(policy, s, n, k)[0], [0])
    draws = drop_agents(policy, s, [0]).sample((20_000,),
                                               generator=torch.Generator().manual_seed(seed))
    assert draws.shape == (20_000, 1, 2)
    counts = np.zeros((k, k))
    np.add.at(counts, (draws[:, 0, 0].numpy(), draws[:, 0, 1].numpy()), 1)
    np.testing.assert_allclose(counts / 20_000, want, atol=0.015)


@pytest.mark.parametrize("n, k, kind, seed", POLICIES)
def test_anomaly_scores_are_leave_one_out_surprises(n, k, kind, seed):
    policy, s = random_policy(n, k, kind, seed), states(3, seed)
    joint = table(policy, s, n, k)
    actions = torch.randint(0, k, (3, n), generator=torch.Generator().manual_seed(seed))
    scores, baseline = _np(anomaly_scores(policy, s, actions)), _np(marginal_scores(policy, s, actions))
    assert scores.shape == baseline.shape == (3, n)
    for b in range(3):
        np.testing.assert_allclose(scores[b], -oracle.leave_one_out(joint[b], actions[b].tolist()),
                                   atol=1e-7)
        margins = oracle.marginals(joint[b])
        np.testing.assert_allclose(baseline[b], [-np.log(margins[i, a]) for i, a in
                                                 enumerate(actions[b].tolist())], atol=1e-7)
    if kind == "mean_field":  # independent agents: the others' actions tell nothing
        np.testing.assert_allclose(scores, baseline, atol=1e-7)


# --- against the oracle's independent enumeration, over random circuits ----------------------
@PROPERTY
@given(random_circuits(min_vars=2), st.data())
def test_queries_on_random_circuits_match_the_oracle(rc, data):
    c = circuit64(rc.root)
    agent, joint = CircuitAgent(c), oracle.joint_table(rc.root, rc.num_states)
    s = torch.zeros(2, 1)
    n = len(rc.num_states)
    x = [data.draw(st.integers(0, k - 1)) for k in rc.num_states]
    if oracle.prob(joint, x) > 0:
        np.testing.assert_allclose(_np(anomaly_scores(agent, s, [x, x])[0]),
                                   -oracle.leave_one_out(joint, x), atol=1e-6)
    agent_fixed = data.draw(st.integers(0, n - 1))
    fixed = {agent_fixed: x[agent_fixed]}
    evidence = [fixed.get(i, -1) for i in range(n)]
    if oracle.prob(joint, evidence) == 0:
        with pytest.raises(ValueError, match="probability zero"):
            conditional_policy(agent, s, fixed)
    else:
        got = conditional_policy(agent, s, fixed).marginals()[1]
        np.testing.assert_allclose(_np(got), oracle.marginals(oracle.condition(joint, evidence),
                                                              max(rc.num_states)), atol=1e-7)
    dropped = data.draw(st.integers(0, n - 1))
    kept_states = [k for i, k in enumerate(rc.num_states) if i != dropped]
    assume(np.prod(kept_states) <= 4096)
    lost = drop_agents(agent, s, [dropped])
    want = joint.sum(axis=dropped)
    got = _np(lost.log_prob(all_assignments(kept_states).unsqueeze(1).expand(-1, 2, -1)).exp())
    np.testing.assert_allclose(got[:, 0], want.reshape(-1), atol=1e-7)
    if len(set(rc.num_states)) == 1:  # policies: every agent has the same k actions
        _, winners = oracle.mpe_set(want, rtol=1e-7)
        assert tuple(lost.mode[0].tolist()) in winners


# --- bad input ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy():
    return random_policy(3, 4, "selective", 0)


@pytest.mark.parametrize("call, message", [
    (lambda p, s: conditional_policy(p, s, {3: 0}), r"fixed: agent index 3 is out of range; "
                                                    r"the policy has 3 agents \(0..2\)"),
    (lambda p, s: conditional_policy(p, s, {-1: 0}), "agent index -1 is out of range"),
    (lambda p, s: conditional_policy(p, s, {"a": 0}), "agent index must be an int"),
    (lambda p, s: conditional_policy(p, s, {0: 4}), r"fixed\[0\]: action 4 is out of range; "
                                                    r"agents have 4 actions \(0..3\)"),
    (lambda p, s: conditional_policy(p, s, {0: -1}), r"fixed\[0\]: action -1 is out of range"),
    (lambda p, s: conditional_policy(p, s, {0: 1.5}), r"fixed\[0\] must be an action"),
    (lambda p, s: conditional_policy(p, s, {0: [1, 2, 3]}), r"one action per state \[B=2\]"),
    (lambda p, s: conditional_policy(p, s, [0, 1]), "fixed must be a dict"),
    (lambda p, s: most_likely(p, s, {1: 9}), r"fixed\[1\]: action 9 is out of range"),
    (lambda p, s: drop_agents(p, s, [5]), "agents: agent index 5 is out of range"),
    (lambda p, s: drop_agents(p, s, [0, 1, 2]), "cannot drop all 3 agents"),
    (lambda p, s: drop_agents(p, s, [0], fixed={0: 1}), r"agents \[0\] are both dropped and "
                                                         r"fixed"),
    (lambda p, s: drop_agents(p, s, [0]).condition({0: 1}), "agent 0 was dropped"),
    (lambda p, s: drop_agents(p, s, [0]).log_prob(torch.zeros(2, 3, dtype=torch.long)),
     r"\[\.\.\., m=2\]"),
    (lambda p, s: anomaly_scores(p, s, [[0, 0, 4], [0, 0, 0]]),
     r"joint_actions\[0, 2\]: action 4 of agent 2 is out of range"),
    (lambda p, s: anomaly_scores(p, s, [[0, 0], [0, 0]]), r"shape \[B=2, n=3\]"),
    (lambda p, s: marginal_scores(p, s, [[0.0, 0, 0], [0, 0, 0]]), "must be integers"),
    (lambda p, s: anomaly_scores(object(), s, [[0, 0, 0]]), "distribution"),
])
def test_bad_input_is_a_value_error_naming_it(policy, call, message):
    with pytest.raises(ValueError, match=message):
        call(policy, states(2, 0).float())


def test_zero_probability_evidence_names_the_fixed_agents():
    # agent 1 never takes action 1; agents 0 and 1 never both take action 0
    root = Sum([Product([Categorical.indicator(0, 0, 3), Categorical(1, 3, support=[2])]),
                Product([Categorical(0, 3, support=[1, 2]), Categorical(1, 3, support=[0, 2])])])
    agent = CircuitAgent(circuit64(root))
    s = torch.zeros(2, 1)
    with pytest.raises(ValueError, match=r"fixed=\{1: 1\} has probability zero under the "
                                         r"policy at state row 0"):
        conditional_policy(agent, s, {1: 1})
    with pytest.raises(ValueError, match=r"fixed=\{0: 0, 1: 0\} has probability zero"):
        most_likely(agent, s, {0: 0, 1: 0})
    with pytest.raises(ValueError, match="probability zero"):
        drop_agents(agent, s, [0]).condition({1: 1})
    per_state = {1: torch.tensor([0, 1])}  # possible in row 0, impossible in row 1
    with pytest.raises(ValueError, match="state row 1"):
        conditional_policy(agent, s, per_state)
    assert torch.isinf(anomaly_scores(agent, s, [[0, 0], [0, 0]])).all()


def test_softmax_policies_are_refused_with_a_reason():
    policy = JointPolicy(STATE_DIM, 2, 3, "softmax", hidden=(8,))
    with pytest.raises(ValueError, match="JointCategorical.*circuit policy"):
        conditional_policy(policy, torch.zeros(1, STATE_DIM), {0: 1})


def test_marginal_mode_refuses_a_huge_enumeration():
    policy = random_policy(8, 6, "mean_field", 0)  # 6**7 joint actions of the kept agents
    with pytest.raises(ValueError, match="marginal MAP is NP-hard"):
        _ = drop_agents(policy, torch.zeros(1, STATE_DIM), [0]).mode


# --- a trained agent, saved and loaded ---------------------------------------------------------
TINY = dict(total_steps=64, num_envs=8, learning_starts=32, batch_size=16, eval_interval=64,
            eval_episodes=2, policy_hidden=(16,), critic_hidden=(16,), width=4)
COVERAGE = dict(num_agents=3, grid_size=4, max_steps=5, reward="coverage")


@pytest.mark.parametrize("algo", ["spn-ac", "meanfield-ac"])
def test_load_agent_rebuilds_the_trained_policy(tmp_path, algo):
    result = spnpolicy.train(algo, "coverage", seed=3, out_dir=tmp_path / "run",
                             env_kwargs=COVERAGE, verbose=False, progress=False, **TINY)
    s = torch.rand(4, 5 * 3 + 1)
    want = result.agent.distribution(s).marginals()
    for path in (tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.pt"):
        agent = load_agent(path)
        assert not agent.training
        torch.testing.assert_close(agent.distribution(s).marginals(), want)
        assert torch.equal(most_likely(agent, s, {0: 0}), most_likely(result.agent, s, {0: 0}))
    assert load_run_config(tmp_path / "run")["env_kwargs"] == COVERAGE
    # the env's action names work as evidence, in Python as on the command line
    for agent in (load_agent(tmp_path / "run"), result.agent):
        torch.testing.assert_close(conditional_policy(agent, s, {1: "noop"}).marginals(),
                                   conditional_policy(agent, s, {1: 0}).marginals())
        with pytest.raises(ValueError, match="unknown action 'jump'; expected an index 0..5 "
                                             "or one of noop, up, down, left, right, stay"):
            conditional_policy(agent, s, {1: "jump"})


def test_action_names_need_an_agent_that_has_them():
    policy = random_policy(3, 3, "selective", 0)
    with pytest.raises(ValueError, match="this agent has no action names"):
        conditional_policy(policy, torch.zeros(1, STATE_DIM), {0: "noop"})


def test_load_agent_errors(tmp_path):
    with pytest.raises(ValueError, match="no run directory or checkpoint file"):
        load_agent(tmp_path / "missing")
    with pytest.raises(ValueError, match="no config.json"):
        load_agent(tmp_path)
    (tmp_path / "config.json").write_text('{"algo": "spn-ac", "env": "climbing", "seed": 0, '
                                          '"env_kwargs": {}, "config": {}}')
    with pytest.raises(ValueError, match="has no checkpoint"):
        load_agent(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    (tmp_path / "config.json").write_text('{"algo": "iql", "env": "climbing", "seed": 0, '
                                          '"env_kwargs": {}, "config": {}}')
    with pytest.raises(ValueError, match="last.pt"):
        load_agent(tmp_path)


@pytest.mark.parametrize("algo", ["vdn", "dcg"])
def test_a_q_learner_loads_from_its_run_directory_and_acts_as_trained(tmp_path, algo):
    result = spnpolicy.train(algo, "climbing", seed=1, total_steps=400, out_dir=tmp_path,
                             learning_starts=100, eval_interval=400)
    agent = load_agent(tmp_path)
    obs = np.ones((4, *agent.input_shape), dtype=np.float32)  # per-agent obs or states
    assert np.array_equal(agent.act(obs), result.agent.act(obs))
    for mine, theirs in zip(agent.state_dict().values(), result.agent.state_dict().values()):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize("algo, acting", [("vdn", None), ("masac", None), ("spn-ac", None),
                                          ("spn-ac", "critics")])
def test_a_run_trained_on_another_device_loads_on_the_cpu(tmp_path, algo, acting):
    # A run that trained on CUDA names that device in its config; loading it must not need
    # CUDA (this torch may have none), and the agent must come back on the CPU.
    result = spnpolicy.train(algo, "climbing", seed=1, total_steps=200, out_dir=tmp_path,
                             learning_starts=100, eval_interval=200)
    config = tmp_path / "config.json"
    saved = json.loads(config.read_text())
    saved["config"]["device"] = "cuda:0"
    config.write_text(json.dumps(saved))
    agent = load_agent(tmp_path, acting=acting)
    assert {p.device.type for p in agent.parameters()} == {"cpu"}
    shape = (tuple(agent.input_shape) if hasattr(agent, "input_shape") else (agent.state_dim,))
    inputs = np.random.default_rng(0).random((3, *shape)).astype(np.float32)
    if acting is None:
        assert np.array_equal(agent.act(inputs), result.agent.act(inputs))
    else:
        assert agent.act(inputs).shape == (3, 2)
