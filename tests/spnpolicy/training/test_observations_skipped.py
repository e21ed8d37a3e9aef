"""Algorithms that read global states only (needs_obs=False): the runner passes no
observations, the n-step accumulator and the stream copy none, the buffer holds none, and
training is bit for bit what it was when they were copied."""

import hashlib

import numpy as np
import pytest

import spnpolicy
from spnpolicy.training import (NStepAccumulator, ReplayBuffer, Runner, TransitionStream,
                                make_vec_env)
from spnpolicy.training import offpolicy

ENV = dict(num_agents=3, grid_size=5, max_steps=8, observation="relative")


def _actions(rng, envs):
    return rng.integers(0, envs.num_actions, (envs.num_envs, envs.num_agents))


def _rollouts(steps, **runner_kwargs):
    envs = make_vec_env("coverage", 3, seed=0, **ENV)
    runner = Runner(envs, **runner_kwargs)
    runner.reset(seed=0)
    rng = np.random.default_rng(0)
    return runner, [runner.step(_actions(rng, envs)) for _ in range(steps)]


def test_runner_without_observations_passes_none_and_the_same_rest():
    kept, with_obs = _rollouts(20)
    runner, without = _rollouts(20, observations=False)
    assert runner.obs is None and kept.obs is not None
    for a, b in zip(with_obs, without):
        assert b.obs is None and b.next_obs is None
        for name in ("state", "actions", "reward", "next_state", "terminated", "truncated"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    other = Runner(make_vec_env("coverage", 3, seed=0, **ENV), observations=False)
    other.load_state_dict(runner.state_dict())
    assert other.obs is None
    np.testing.assert_array_equal(other.state, runner.state)
    kept.observations = False                   # switched off after reset
    assert kept.obs is None and not kept.observations
    assert kept.step(np.zeros((3, 3), np.int64)).next_obs is None


@pytest.mark.parametrize("hindsight", [False, True])
def test_stream_rows_without_observations_equal_the_rows_with_them(hindsight):
    _, with_obs = _rollouts(30)
    _, without = _rollouts(30, observations=False)
    envs = make_vec_env("coverage", 3, seed=0, **ENV)
    streams = [TransitionStream(envs, 3, 0.9, hindsight, seed=1, shaping=True)
               for _ in range(2)]
    stored = 0
    for a, b in zip(with_obs, without):
        rows_a, rows_b = streams[0].push(a), streams[1].push(b)
        assert rows_b.obs is None and rows_b.next_obs is None
        stored += len(rows_b.reward)
        for name in ("state", "actions", "reward", "next_state", "terminated", "steps"):
            np.testing.assert_array_equal(getattr(rows_a, name), getattr(rows_b, name))
    assert stored > 0
    assert streams[1].nstep.ring[1] is None and streams[1].nstep.ring[5] is None


def test_nstep_state_dict_without_observations_and_resume_of_one_with_them():
    _, with_obs = _rollouts(12)
    _, without = _rollouts(12, observations=False)
    acc = NStepAccumulator(3, 4, 0.9)
    for tr in without[:5]:
        acc.push(tr)
    resumed = NStepAccumulator(3, 4, 0.9)
    resumed.load_state_dict(acc.state_dict())
    assert resumed.ring[1] is None
    # a checkpoint written while observations were queued, resumed without them
    old = NStepAccumulator(3, 4, 0.9)
    for tr in with_obs[:5]:
        old.push(tr)
    from_old = NStepAccumulator(3, 4, 0.9)
    from_old.load_state_dict(old.state_dict())
    for tr in without[5:]:
        a, b, c = acc.push(tr), resumed.push(tr), from_old.push(tr)
        for rows in (b, c):
            assert rows.obs is None and rows.next_obs is None
            for x, y in zip(a, rows):
                if x is not None:
                    np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="obs.*queued steps have none"):
        acc.push(with_obs[0])


def test_a_buffer_that_stores_observations_refuses_none():
    _, without = _rollouts(1, observations=False)
    envs = make_vec_env("coverage", 3, seed=0, **ENV)
    buffer = ReplayBuffer(10, envs.state_dim, envs.num_agents, obs_dim=envs.obs_dim)
    with pytest.raises(ValueError, match="transition.obs is None"):
        buffer.add(without[0])
    plain = ReplayBuffer(10, envs.state_dim, envs.num_agents)
    plain.add(without[0])
    assert len(plain) == 3 and plain.sample(4).obs is None


def _train(monkeypatch, keep_observations: bool):
    """A short seeded spn-ac run on coverage (n-step rows, hindsight and shaping: every path
    that carries observations); its policy's parameters hashed, its buffers and the rows
    they were given."""
    buffers, pushed = [], []

    class Recording(ReplayBuffer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            buffers.append(self)

        def add(self, transition):
            pushed.append(transition)
            super().add(transition)

    monkeypatch.setattr(offpolicy, "ReplayBuffer", Recording)
    if keep_observations:   # the loop as it was: observations passed on and copied
        monkeypatch.setattr(offpolicy.Runner, "observations",
                            property(lambda self: True, lambda self, value: None))
    result = spnpolicy.train(
        "spn-ac", "coverage", seed=3, total_steps=3_000, learning_starts=600, num_envs=8,
        batch_size=32, n_step=3, hindsight=True, shaping=True, eval_episodes=1,
        eval_interval=100_000, env_kwargs=dict(num_agents=3, grid_size=6, max_steps=20,
                                               observation="relative"),
        progress=False, verbose=False)
    monkeypatch.undo()
    digest = hashlib.sha256()
    for name, value in result.agent.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest(), buffers, pushed


def test_spn_ac_stores_no_observations_and_trains_bit_identically(monkeypatch):
    digest, buffers, pushed = _train(monkeypatch, keep_observations=False)
    (buffer,) = buffers
    assert len(buffer) > 0
    assert not any("obs" in name for name in (*buffer.data, *buffer.next))
    assert buffer.sample(4).obs is None
    assert pushed and all(rows.obs is None and rows.next_obs is None for rows in pushed)
    before, _, pushed_before = _train(monkeypatch, keep_observations=True)
    assert pushed_before[0].obs is not None        # the comparison run did copy them
    assert digest == before
