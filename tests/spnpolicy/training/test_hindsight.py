"""Hindsight goal relabelling: the coverage relabel function and the episode memories."""

import numpy as np
import pytest
import torch

import spnpolicy
from spnpolicy.envs import coverage_core as core
from spnpolicy.training import (Hindsight, NStepAccumulator, Runner, TransitionStream,
                                 make_vec_env)

from tests.run_helpers import assert_same_run

ENV = dict(num_agents=3, grid_size=4, max_steps=7)


def _cells(state, lo, n, size):
    """Sorted (row, col) cells stored in ``state[lo : lo + 2n]``."""
    return sorted(map(tuple, np.rint(state[lo:lo + 2 * n] * size).astype(int).reshape(n, 2)))


def _rollout(envs, steps, seed):
    runner = Runner(envs)
    runner.reset(seed=seed)
    rng = np.random.default_rng(seed)
    return [runner.step(rng.integers(0, envs.num_actions, (envs.num_envs, envs.num_agents)))
            for _ in range(steps)]


@pytest.mark.parametrize("reward", ["sparse", "coverage", "distance"])
def test_relabel_goals_matches_global_state_of_moved_goals(reward):
    config = core.CoverageConfig(num_agents=3, grid_size=5, max_steps=9, reward=reward)
    rng = np.random.default_rng(0)
    for _ in range(200):
        agents, goals = core.sample_layout(rng, config)
        target_agents, _ = core.sample_layout(rng, config)
        elapsed = int(rng.integers(0, 9))
        covered = core.goal_distances(agents, goals) == 0
        state = core.global_state(agents, goals, covered, elapsed, config)
        goal_state = core.global_state(target_agents, goals, covered, 0, config)
        order = rng.permutation(3)

        out, out_reward, terminated, valid = core.relabel_goals(state, goal_state, order, config)

        distinct = len({tuple(c) for c in target_agents}) == 3
        assert valid == distinct
        new_goals = target_agents[order] if distinct else goals
        distances = core.goal_distances(agents, new_goals)
        np.testing.assert_allclose(
            out, core.global_state(agents, new_goals, distances == 0, elapsed, config),
            atol=1e-6)
        assert out_reward == core.team_reward(distances, config)
        assert terminated == (reward == "sparse" and (distances == 0).all())
        # goals on the agents' own cells are all covered
        _, own_reward, own_terminated, own_valid = core.relabel_goals(state, state, order,
                                                                      config)
        assert own_valid == (len({tuple(c) for c in agents}) == 3)
        if own_valid:
            assert own_reward == (0.0 if reward == "distance" else 1.0)
            assert own_terminated == (reward == "sparse")


def test_push_relabels_each_episode_when_it_ends():
    envs = make_vec_env("coverage", 3, seed=1, **ENV)
    hindsight = Hindsight(envs, seed=0)
    n, size = ENV["num_agents"], ENV["grid_size"]
    for transition in _rollout(envs, 3 * ENV["max_steps"], seed=1):
        out = hindsight.push(transition)
        ended = (transition.terminated > 0) | transition.truncated
        if not ended.any():
            assert len(out.state) == 0
            continue
        assert 0 < len(out.state) <= ended.sum() * ENV["max_steps"]
        np.testing.assert_array_equal(out.steps, 1)
        np.testing.assert_array_equal(out.terminated, out.reward)
        np.testing.assert_allclose(out.obs, core.observations(out.state, n))
        np.testing.assert_allclose(out.next_obs, core.observations(out.next_state, n))
        for start, end, reward in zip(out.state, out.next_state, out.reward):
            # the goals are the same, in the same order, at both ends, on distinct cells
            np.testing.assert_array_equal(start[2 * n:4 * n], end[2 * n:4 * n])
            assert len(set(_cells(start, 2 * n, n, size))) == n
            assert not start[4 * n:5 * n].all()          # the start is not already solved
            assert reward == end[4 * n:5 * n].all()


def test_dense_rewards_are_recomputed_and_never_terminate():
    envs = make_vec_env("coverage", 2, seed=4, reward="coverage", **ENV)
    hindsight = Hindsight(envs, seed=0)
    n = ENV["num_agents"]
    rewards = []
    for transition in _rollout(envs, 2 * ENV["max_steps"], seed=4):
        out = hindsight.push(transition)
        np.testing.assert_array_equal(out.terminated, 0.0)
        np.testing.assert_allclose(out.reward, out.next_state[:, 4 * n:5 * n].mean(-1))
        rewards.extend(out.reward)
    assert len(rewards) > ENV["max_steps"] and max(rewards) == 1.0


def test_goals_come_from_a_later_step_of_the_same_episode():
    envs = make_vec_env("coverage", 1, seed=2, **ENV)
    hindsight = Hindsight(envs, seed=0)
    n, size, horizon = ENV["num_agents"], ENV["grid_size"], ENV["max_steps"]
    reached, later_only = [], 0
    for transition in _rollout(envs, 6 * horizon, seed=2):
        reached.append(_cells(transition.next_state[0], 0, n, size))
        out = hindsight.push(transition)
        for start, actions in zip(out.state, out.actions):
            t = int(np.rint(start[5 * n] * horizon))
            goals = _cells(start, 2 * n, n, size)
            assert goals in reached[t:]
            later_only += goals not in reached[:t]
            assert _cells(start, 0, n, size) == (reached[t - 1] if t else
                                                 _cells(start, 0, n, size))
        if transition.terminated[0] or transition.truncated[0]:
            reached = []
    assert later_only > 0


def test_relabelled_rewards_are_frequent_under_a_random_policy():
    """The point of it: real sparse rewards are rare, relabelled ones are not."""
    envs = make_vec_env("coverage", 8, seed=0, num_agents=3, grid_size=6, max_steps=50)
    hindsight = Hindsight(envs, seed=0)
    real = relabelled = rows = 0.0
    for transition in _rollout(envs, 200, seed=0):
        out = hindsight.push(transition)
        real += transition.reward.sum()
        relabelled += out.reward.sum()
        rows += len(out.reward)
    assert relabelled > 10 * max(real, 1.0)
    assert rows > 0.8 * 8 * 200 * 0.5


def test_state_dict_round_trip_continues_exactly(tmp_path):
    envs = make_vec_env("coverage", 2, seed=3, **ENV)
    steps = _rollout(envs, 20, seed=3)
    whole, half = Hindsight(envs, seed=5), Hindsight(envs, seed=5)
    for transition in steps[:10]:
        whole.push(transition)
        half.push(transition)
    torch.save(half.state_dict(), tmp_path / "hindsight.pt")
    saved = torch.load(tmp_path / "hindsight.pt", weights_only=True)
    resumed = Hindsight(envs, seed=99)
    resumed.load_state_dict(saved)
    for transition in steps[10:]:
        a, b = whole.push(transition), resumed.push(transition)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.filterwarnings("ignore:learning_starts=.*is above total_steps")  # tiny budgets
def test_env_without_goals_is_refused():
    with pytest.raises(ValueError, match="hindsight relabelling needs an env with goals"):
        Hindsight(make_vec_env("climbing", 2, seed=0), seed=0)
    with pytest.raises(ValueError, match="hindsight relabelling needs an env with goals"):
        spnpolicy.train("spn-ac", "climbing", hindsight=True, total_steps=16)
    with pytest.raises(ValueError, match="^hindsight must be a bool"):
        spnpolicy.train("vdn", "coverage", hindsight=1, total_steps=16)


@pytest.mark.parametrize("algo", ["spn-ac", "iql"])
def test_resumed_hindsight_run_equals_uninterrupted_run(tmp_path, algo):
    """The checkpoint falls mid-episode, so the episode memories must be restored."""
    small = (16,)
    config = dict(hindsight=True, num_envs=4, learning_starts=40, batch_size=16,
                  checkpoint_interval=60, eval_interval=60, eval_episodes=2,
                  env_kwargs=dict(ENV), buffer_size=500)
    config |= {"hidden": small} if algo == "iql" else {"policy_hidden": small,
                                                        "critic_hidden": small, "width": 2}
    whole = spnpolicy.train(algo, "coverage", seed=4, out_dir=tmp_path / "a",
                            **dict(config, total_steps=120))
    spnpolicy.train(algo, "coverage", seed=4, out_dir=tmp_path / "b",
                    **dict(config, total_steps=60))
    resumed = spnpolicy.train(algo, "coverage", seed=4, out_dir=tmp_path / "b", resume=True,
                              **dict(config, total_steps=120))
    assert_same_run(whole, resumed)


@pytest.mark.parametrize("hindsight", [False, True])
def test_transition_stream_is_nstep_rows_then_relabelled_rows(tmp_path, hindsight):
    envs = make_vec_env("coverage", 2, seed=6, **ENV)
    steps = _rollout(envs, 3 * ENV["max_steps"], seed=6)
    stream = TransitionStream(envs, n_step=3, gamma=0.9, hindsight=hindsight, seed=1)
    nstep, relabel = NStepAccumulator(2, 3, 0.9), Hindsight(envs, seed=1)
    for i, transition in enumerate(steps):
        if i == 10:  # a checkpoint mid-episode, through torch.save / torch.load
            torch.save(stream.state_dict(), tmp_path / "stream.pt")
            stream = TransitionStream(envs, n_step=3, gamma=0.9, hindsight=hindsight, seed=9)
            stream.load_state_dict(torch.load(tmp_path / "stream.pt", weights_only=True))
        out, rows = stream.push(transition), nstep.push(transition)
        extra = relabel.push(transition)
        expected = [np.concatenate(p) for p in zip(rows, extra)] if hindsight else rows
        for got, want in zip(out, expected, strict=True):
            np.testing.assert_array_equal(got, want)
