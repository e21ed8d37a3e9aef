"""CoverageVecEnv against the PettingZoo coverage env, step for step, resets included."""

import numpy as np
import pytest

from spnpolicy.envs import coverage_v0
from spnpolicy.envs.coverage_vec import CoverageVecEnv
from tests.env_helpers import replay_in_lockstep

CONFIGS = [
    {"num_agents": 2, "grid_size": 2, "max_steps": 9, "reward": "sparse"},
    {"num_agents": 3, "grid_size": 3, "max_steps": 12, "reward": "sparse", "broken_agents": (1,)},
    {"num_agents": 3, "grid_size": 4, "max_steps": 7, "reward": "coverage"},
    {"num_agents": 4, "grid_size": 5, "max_steps": 11, "reward": "distance"},
]


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_vec_env_replays_the_pettingzoo_env_with_seed_plus_index(kwargs):
    num_envs, seed, steps = 5, 17, 120
    vec = CoverageVecEnv(num_envs, seed=seed, **kwargs)
    envs = [coverage_v0.parallel_env(**kwargs) for _ in range(num_envs)]
    rng = np.random.default_rng(0)
    resets = 0
    for e, env, info, ref_info, ended in replay_in_lockstep(
            vec, envs, seed, lambda: rng.integers(0, 6, size=(num_envs, kwargs["num_agents"])),
            steps):
        assert info["covered_fraction"][e] == pytest.approx(ref_info["covered_fraction"])
        resets += ended
        np.testing.assert_array_equal(vec.agent_positions[e], env.agent_positions)
        np.testing.assert_array_equal(vec.goal_positions[e], env.goal_positions)
    assert resets >= num_envs * 5


def test_auto_reset_returns_the_next_first_observation():
    vec = CoverageVecEnv(3, num_agents=2, grid_size=3, max_steps=2, reward="coverage", seed=0)
    vec.reset()
    vec.step(np.zeros((3, 2), dtype=np.int64))
    obs, _, terminated, truncated, info = vec.step(np.zeros((3, 2), dtype=np.int64))
    assert truncated.all() and not terminated.any()
    time_index = 5 * 2
    assert (info["final_observation"][:, :, time_index] == 1.0).all()
    assert (obs[:, :, time_index] == 0.0).all()
    assert (vec.elapsed == 0).all()


def test_reset_with_a_seed_restarts_the_generators():
    vec = CoverageVecEnv(4, num_agents=3, grid_size=5, seed=1)
    first = vec.reset()
    assert not np.array_equal(vec.reset(), first)
    np.testing.assert_array_equal(vec.reset(seed=1), first)
    assert vec.reset().shape == (4, 3, 6 * 3 + 1)


def test_broken_agents_never_move():
    vec = CoverageVecEnv(8, num_agents=3, grid_size=6, max_steps=50, broken_agents=(0,),
                         reward="coverage", seed=2)
    vec.reset()
    start = vec.agent_positions[:, 0].copy()
    rng = np.random.default_rng(1)
    for _ in range(20):
        vec.step(rng.integers(0, 6, size=(8, 3)))
    np.testing.assert_array_equal(vec.agent_positions[:, 0], start)


@pytest.mark.parametrize("actions, match", [
    (np.zeros((2, 3), dtype=np.int64), "shape"),
    (np.zeros((2, 2), dtype=np.float32), "integer"),
    (np.full((2, 2), 6), r"\[0, 6\)"),
])
def test_bad_actions_are_refused(actions, match):
    vec = CoverageVecEnv(2, num_agents=2, grid_size=3, seed=0)
    vec.reset()
    with pytest.raises(ValueError, match=match):
        vec.step(actions)


def test_step_before_reset_and_bad_arguments():
    with pytest.raises(RuntimeError, match="reset"):
        CoverageVecEnv(2, num_agents=2, grid_size=3).step(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="num_envs"):
        CoverageVecEnv(0)
    with pytest.raises(ValueError, match="seed"):
        CoverageVecEnv(2, seed=-1)
    with pytest.raises(ValueError, match="reward"):
        CoverageVecEnv(2, reward="dense")


@pytest.mark.parametrize("kwargs", CONFIGS[:2])
def test_snapshot_restore_continues_exactly(kwargs):
    rng = np.random.default_rng(0)
    first, second = CoverageVecEnv(3, seed=5, **kwargs), CoverageVecEnv(3, seed=99, **kwargs)
    first.reset()
    for _ in range(7):
        first.step(rng.integers(0, 6, (3, kwargs["num_agents"])))
    obs = second.restore(first.snapshot())
    n = kwargs["num_agents"]
    np.testing.assert_array_equal(obs[:, :, : first.state_dim],
                                  np.repeat(first.state()[:, None], n, axis=1))
    np.testing.assert_array_equal(second.state(), first.state())
    for _ in range(40):  # long enough for resets: the generators were restored too
        actions = rng.integers(0, 6, (3, kwargs["num_agents"]))
        a, b = first.step(actions), second.step(actions)
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(first.state(), second.state())


def test_restore_rejects_a_snapshot_of_another_shape():
    env = CoverageVecEnv(2, num_agents=2, grid_size=3, seed=0)
    env.reset()
    other = CoverageVecEnv(3, num_agents=2, grid_size=3, seed=0)
    with pytest.raises(ValueError, match="num_envs=3"):
        other.restore(env.snapshot())


@pytest.mark.parametrize("layout", ["fixed", "random"])
def test_settled_are_the_agents_standing_on_a_goal(layout):
    """`settled()` against a loop over every agent and goal, along random steps (after any
    auto-reset: the state the agents act from next)."""
    env = CoverageVecEnv(num_envs=8, num_agents=4, grid_size=3, max_steps=6, seed=0,
                         layout=layout, reward="coverage")
    env.reset()
    rng = np.random.default_rng(1)
    seen = 0
    for _ in range(40):
        expected = np.array([[any((env.agent_positions[e, i] == goal).all()
                                  for goal in env.goal_positions[e])
                              for i in range(env.num_agents)] for e in range(env.num_envs)])
        settled = env.settled()
        assert settled.shape == (8, 4) and settled.dtype == bool
        np.testing.assert_array_equal(settled, expected)
        seen += int(expected.sum())
        env.step(rng.integers(0, 6, size=(8, 4)))
    assert 0 < seen < 40 * 8 * 4    # both kinds of agent were checked


def test_copy_copies_sets_the_targets_to_the_sources_states():
    """After `copy_copies`, a target copy holds its source's positions, goals, step counter and
    state, and the same actions take both to the same next state; the other copies are
    untouched, and so are the states the last step returned."""
    env = CoverageVecEnv(num_envs=5, num_agents=3, grid_size=4, max_steps=6, seed=0,
                         layout="random", reward="coverage")
    env.reset()
    rng = np.random.default_rng(0)
    _, _, _, _, info = env.step(rng.integers(0, 6, size=(5, 3)))
    final, before = info["final_state"].copy(), env.state()
    env.copy_copies(np.array([0, 1]), np.array([3, 4]))
    np.testing.assert_array_equal(info["final_state"], final)
    state = env.state()
    np.testing.assert_array_equal(state[[3, 4]], before[[0, 1]])
    np.testing.assert_array_equal(state[:3], before[:3])
    np.testing.assert_array_equal(env.agent_positions[[3, 4]], env.agent_positions[[0, 1]])
    np.testing.assert_array_equal(env.goal_positions[[3, 4]], env.goal_positions[[0, 1]])
    np.testing.assert_array_equal(env.elapsed[[3, 4]], env.elapsed[[0, 1]])
    np.testing.assert_array_equal(env.settled()[[3, 4]], env.settled()[[0, 1]])
    actions = rng.integers(0, 6, size=(5, 3))
    actions[[3, 4]] = actions[[0, 1]]
    obs, reward, *_ = env.step(actions)
    np.testing.assert_array_equal(env.state()[[3, 4]], env.state()[[0, 1]])
    np.testing.assert_array_equal(obs[[3, 4]], obs[[0, 1]])
    np.testing.assert_array_equal(reward[[3, 4]], reward[[0, 1]])
    with pytest.raises(ValueError, match=r"disjoint source and target copies of one length, "
                                         r"got \[0, 1\] and \[1, 2\]"):
        env.copy_copies(np.array([0, 1]), np.array([1, 2]))
