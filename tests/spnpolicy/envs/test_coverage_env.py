"""The coverage gridworld ParallelEnv: PettingZoo contract, rules, rewards, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pettingzoo.test import parallel_api_test, parallel_seed_test

from spnpolicy.envs import coverage_core as core
from spnpolicy.envs import coverage_v0

CONFIGS = [
    {},
    {"num_agents": 2, "grid_size": 2, "max_steps": 30, "reward": "sparse"},
    {"num_agents": 3, "grid_size": 5, "max_steps": 40, "reward": "coverage"},
    {"num_agents": 4, "grid_size": 6, "max_steps": 40, "reward": "distance"},
    {"num_agents": 3, "grid_size": 3, "max_steps": 40, "broken_agents": (0, 2)},
]
NOOP, UP, DOWN, LEFT, RIGHT, STAY = range(6)


def place(env, agents, goals):
    """Reset `env` and put its agents and goals on the given `[n, 2]` cells."""
    env.reset(seed=0)
    env.agent_positions = np.array(agents, dtype=np.int64)
    env.goal_positions = np.array(goals, dtype=np.int64)


def act(env, *actions):
    return env.step({f"agent_{i}": a for i, a in enumerate(actions)})


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_pettingzoo_api_and_seeding(kwargs):
    parallel_api_test(coverage_v0.parallel_env(**kwargs), num_cycles=300)
    parallel_seed_test(lambda: coverage_v0.parallel_env(**kwargs))


def test_spaces_are_cached_and_sized():
    env = coverage_v0.parallel_env(num_agents=4, grid_size=7)
    assert env.observation_space("agent_2") is env.observation_space("agent_2")
    assert env.action_space("agent_2") is env.action_space("agent_2")
    assert env.observation_space("agent_0").shape == (6 * 4 + 1,)
    assert env.state_space.shape == (5 * 4 + 1,)
    assert env.action_space("agent_0").n == 6


def test_reset_places_goals_on_distinct_cells_and_is_seeded():
    env = coverage_v0.parallel_env(num_agents=9, grid_size=3)
    env.reset(seed=3)
    assert env.agent_positions.shape == env.goal_positions.shape == (9, 2)
    assert env.agent_positions.dtype == np.int64
    assert len({tuple(g) for g in env.goal_positions.tolist()}) == 9
    first = env.agent_positions.copy()
    env.reset(seed=3)
    np.testing.assert_array_equal(env.agent_positions, first)


def test_state_and_observation_layout():
    env = coverage_v0.parallel_env(num_agents=2, grid_size=4, max_steps=10)
    place(env, agents=[[0, 1], [3, 3]], goals=[[3, 3], [2, 0]])
    observations, *_ = act(env, STAY, DOWN)
    n = 2
    expected_state = np.array([0, 1, 3, 3, 3, 3, 2, 0, 0, 0, 0], dtype=np.float32)
    expected_state[: 4 * n] /= 4
    expected_state[4 * n : 5 * n] = [1, 0]
    expected_state[5 * n] = 1 / 10
    # agent_1 moved down from row 3: off the grid, so it stays and covers goal 0.
    np.testing.assert_allclose(env.state(), expected_state)
    np.testing.assert_allclose(observations["agent_1"], np.r_[expected_state, 0, 1])
    assert observations["agent_0"].dtype == np.float32


def test_moves_and_off_grid_moves_stay_put():
    env = coverage_v0.parallel_env(num_agents=5, grid_size=3)
    place(env, agents=[[1, 1]] * 5, goals=[[0, 0], [0, 1], [0, 2], [1, 0], [1, 2]])
    act(env, UP, DOWN, LEFT, RIGHT, STAY)
    np.testing.assert_array_equal(env.agent_positions, [[0, 1], [2, 1], [1, 0], [1, 2], [1, 1]])
    place(env, agents=[[0, 0], [2, 2], [0, 2], [2, 0], [0, 0]],
          goals=[[1, 1], [0, 1], [1, 0], [1, 2], [2, 1]])
    act(env, UP, DOWN, RIGHT, LEFT, LEFT)
    np.testing.assert_array_equal(env.agent_positions, [[0, 0], [2, 2], [0, 2], [2, 0], [0, 0]])


def test_broken_agents_execute_noop():
    env = coverage_v0.parallel_env(num_agents=3, grid_size=4, broken_agents=(1,))
    place(env, agents=[[1, 1]] * 3, goals=[[0, 0], [0, 1], [0, 2]])
    act(env, RIGHT, RIGHT, RIGHT)
    np.testing.assert_array_equal(env.agent_positions, [[1, 2], [1, 1], [1, 2]])


def test_sparse_reward_terminates_exactly_when_every_goal_is_covered():
    env = coverage_v0.parallel_env(num_agents=2, grid_size=4, reward="sparse")
    place(env, agents=[[0, 0], [3, 3]], goals=[[0, 1], [3, 2]])
    _, rewards, terminated, truncated, infos = act(env, RIGHT, STAY)
    assert rewards == {"agent_0": 0.0, "agent_1": 0.0}
    assert not any(terminated.values()) and not any(truncated.values())
    assert infos["agent_0"]["covered_fraction"] == 0.5 and not infos["agent_0"]["success"]
    _, rewards, terminated, truncated, infos = act(env, STAY, LEFT)
    assert rewards == {"agent_0": 1.0, "agent_1": 1.0}
    assert all(terminated.values()) and not any(truncated.values())
    assert infos["agent_1"] == {"covered_fraction": 1.0, "success": True, "potential": 0.0,
                                "team_reward": 1.0}
    assert env.agents == []


def test_two_agents_on_one_goal_do_not_cover_two_goals():
    env = coverage_v0.parallel_env(num_agents=2, grid_size=4, reward="sparse")
    place(env, agents=[[0, 0], [0, 2]], goals=[[0, 1], [3, 3]])
    _, rewards, terminated, _, infos = act(env, RIGHT, LEFT)
    assert rewards["agent_0"] == 0.0 and not terminated["agent_0"]
    assert infos["agent_0"]["covered_fraction"] == 0.5


@pytest.mark.parametrize("batch, size, m, k", [((), 2, 4, 2), ((50,), 3, 4, 4),
                                               ((3, 7), 5, 2, 6)])
def test_on_cells_against_a_loop(batch, size, m, k):
    rng = np.random.default_rng(size + m)
    cells = rng.integers(0, size, size=(*batch, m, 2))
    others = rng.integers(0, size, size=(*batch, k, 2))
    rows = [(c, o) for c, o in zip(cells.reshape(-1, m, 2), others.reshape(-1, k, 2))]
    expected = np.array([[any((cell == other).all() for other in o) for cell in c]
                         for c, o in rows]).reshape(*batch, m)
    got = core.on_cells(cells, others, size)
    assert got.shape == (*batch, m) and got.dtype == bool and 0 < expected.mean() < 1
    np.testing.assert_array_equal(got, expected)


def test_coverage_reward_is_the_covered_fraction_and_does_not_terminate():
    env = coverage_v0.parallel_env(num_agents=4, grid_size=5, reward="coverage")
    place(env, agents=[[0, 0], [0, 0], [4, 4], [2, 2]],
          goals=[[0, 0], [4, 4], [2, 2], [1, 0]])
    _, rewards, terminated, _, _ = act(env, STAY, STAY, STAY, STAY)
    assert rewards["agent_3"] == pytest.approx(0.75) and not terminated["agent_3"]
    _, rewards, terminated, _, infos = act(env, STAY, DOWN, STAY, STAY)
    assert rewards["agent_0"] == 1.0 and not terminated["agent_0"]
    assert infos["agent_0"]["success"]


def test_distance_reward_matches_a_hand_computation():
    env = coverage_v0.parallel_env(num_agents=3, grid_size=10, reward="distance")
    place(env, agents=[[0, 0], [5, 5], [9, 0]], goals=[[0, 3], [6, 7], [9, 9]])
    _, rewards, _, _, _ = act(env, STAY, STAY, STAY)
    # nearest-agent Manhattan distances: goal (0,3) -> 3, (6,7) -> 3, (9,9) -> 9 from (9,0)
    # and 8 from (5,5), so 8; mean 14/3, over grid_size 10.
    assert rewards["agent_0"] == pytest.approx(-(3 + 3 + 8) / 3 / 10, rel=1e-6)


def test_truncation_after_max_steps():
    env = coverage_v0.parallel_env(num_agents=2, grid_size=5, max_steps=3, reward="coverage")
    place(env, agents=[[0, 0], [0, 0]], goals=[[4, 4], [3, 3]])
    for _ in range(2):
        _, _, terminated, truncated, _ = act(env, STAY, STAY)
        assert not truncated["agent_0"] and not terminated["agent_0"]
    observations, _, terminated, truncated, _ = act(env, STAY, STAY)
    assert all(truncated.values()) and not any(terminated.values()) and env.agents == []
    assert observations["agent_0"][5 * 2] == 1.0
    with pytest.raises(RuntimeError, match="reset"):
        act(env, STAY, STAY)


@pytest.mark.parametrize("actions, match", [
    ({"agent_0": 1}, "one action for each agent"),
    ({"agent_0": 1, "agent_1": 6}, r"actions\['agent_1'\]"),
    ({"agent_0": 1, "agent_1": -1}, r"actions\['agent_1'\]"),
    ({"agent_0": 1.5, "agent_1": 0}, r"actions\['agent_0'\]"),
    ({"agent_0": 1, "agent_1": 0, "agent_7": 0}, "one action for each agent"),
])
def test_bad_actions_name_the_agent(actions, match):
    env = coverage_v0.parallel_env(num_agents=2, grid_size=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(actions)


@pytest.mark.parametrize("kwargs, argument", [
    ({"num_agents": 0}, "num_agents"),
    ({"num_agents": 2.5}, "num_agents"),
    ({"num_agents": 5, "grid_size": 2}, "grid_size"),
    ({"grid_size": 0}, "grid_size"),
    ({"max_steps": 0}, "max_steps"),
    ({"reward": "dense"}, "reward"),
    ({"broken_agents": (6,)}, "broken_agents"),
    ({"broken_agents": "agent_0"}, "broken_agents"),
    ({"render_mode": "human"}, "render_mode"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        coverage_v0.parallel_env(**kwargs)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(3, 8), st.data())
def test_rules_match_a_plain_python_reference(n, size, data):
    cells = st.tuples(st.integers(0, size - 1), st.integers(0, size - 1))
    agents = data.draw(st.lists(cells, min_size=n, max_size=n))
    goals = data.draw(st.lists(cells, min_size=n, max_size=n))
    actions = data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    broken = data.draw(st.sets(st.integers(0, n - 1)))
    config = core.CoverageConfig(n, size, 10, "distance", tuple(broken))
    moved = core.move(np.array(agents), np.array(actions), config.move_table(), size)
    for i, ((row, col), action) in enumerate(zip(agents, actions, strict=True)):
        d_row, d_col = {1: (-1, 0), 2: (1, 0), 3: (0, -1), 4: (0, 1)}.get(action, (0, 0))
        if i in broken:
            d_row = d_col = 0
        expected = (min(max(row + d_row, 0), size - 1), min(max(col + d_col, 0), size - 1))
        assert tuple(moved[i]) == expected
    distances = core.goal_distances(moved, np.array(goals))
    for j, (g_row, g_col) in enumerate(goals):
        assert distances[j] == min(abs(g_row - r) + abs(g_col - c) for r, c in moved.tolist())
