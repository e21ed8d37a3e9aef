"""Matrix games: PettingZoo contract, payoffs, team reward, optimal joint actions."""

import itertools

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from spnpolicy.envs import matrix_v0

PAYOFFS = {
    "climbing": [[11, -30, 0], [-30, 7, 0], [0, 6, 5]],
    "coordination": [[0, -5], [-5, 10]],
    "linear": [[1, 5], [5, 9]],
    "monotonic": [[0, 0], [0, 10]],
}


@pytest.mark.parametrize("game", matrix_v0.GAMES)
@pytest.mark.parametrize("episode_length", [1, 3])
def test_pettingzoo_api_and_seeding(game, episode_length):
    parallel_api_test(matrix_v0.parallel_env(game, episode_length=episode_length), num_cycles=10)
    parallel_seed_test(lambda: matrix_v0.parallel_env(game, episode_length=episode_length))


def play(env, row, col):
    env.reset(seed=0)
    return env.step({"agent_0": row, "agent_1": col})


@pytest.mark.parametrize("game", sorted(PAYOFFS))
def test_cooperative_games_pay_every_agent_the_common_payoff(game):
    env = matrix_v0.parallel_env(game)
    table = PAYOFFS[game]
    np.testing.assert_array_equal(env.payoff, table)
    for row, col in itertools.product(range(len(table)), repeat=2):
        observations, rewards, terminated, truncated, infos = play(env, row, col)
        assert rewards == {"agent_0": table[row][col], "agent_1": table[row][col]}
        assert infos["agent_0"]["team_reward"] == table[row][col]
        assert infos["agent_1"]["joint_action"] == (row, col)
        assert all(terminated.values()) and not any(truncated.values()) and env.agents == []
        np.testing.assert_array_equal(observations["agent_0"], [1.0])


@pytest.mark.parametrize("k", [0, 25, 100.5])
def test_penalty_game_uses_minus_k_on_the_diagonal_corners(k):
    env = matrix_v0.parallel_env("penalty", k=k)
    np.testing.assert_array_equal(env.payoff, [[-k, 0, 10], [0, 2, 0], [10, 0, -k]])
    assert env.optimal_joint_actions == ((0, 2), (2, 0))
    assert play(env, 2, 2)[1]["agent_0"] == -k
    assert matrix_v0.parallel_env("penalty").k == matrix_v0.DEFAULT_PENALTY


def test_stag_hunt_is_general_sum_with_the_sum_as_team_reward():
    env = matrix_v0.parallel_env("stag_hunt")
    row = [[4, 0], [3, 2]]
    for r, c in itertools.product(range(2), repeat=2):
        _, rewards, _, _, infos = play(env, r, c)
        assert rewards == {"agent_0": row[r][c], "agent_1": row[c][r]}
        assert infos["agent_0"]["team_reward"] == row[r][c] + row[c][r]
    assert env.optimal_joint_actions == ((0, 0),) and env.optimal_value == 8


@pytest.mark.parametrize("game, optimum, value", [
    ("climbing", ((0, 0),), 11), ("coordination", ((1, 1),), 10),
    ("linear", ((1, 1),), 9), ("monotonic", ((1, 1),), 10),
])
def test_optimal_joint_actions(game, optimum, value):
    env = matrix_v0.parallel_env(game)
    assert env.optimal_joint_actions == optimum and env.optimal_value == value
    assert play(env, *optimum[0])[4]["agent_0"]["optimal"]
    assert not play(env, 0, 1)[4]["agent_0"]["optimal"]


def test_repeated_game_terminates_after_episode_length_plays():
    env = matrix_v0.parallel_env("linear", episode_length=3)
    env.reset()
    for step in range(3):
        _, rewards, terminated, _, _ = env.step({"agent_0": 1, "agent_1": 1})
        assert rewards["agent_0"] == 9 and terminated["agent_0"] == (step == 2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step({"agent_0": 1, "agent_1": 1})


@pytest.mark.parametrize("kwargs, argument", [
    ({"game": "prisoners"}, "game"),
    ({"game": "penalty", "k": -1}, "k"),
    ({"game": "penalty", "k": float("nan")}, "k"),
    ({"game": "climbing", "k": 5}, "k"),
    ({"game": "linear", "episode_length": 0}, "episode_length"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        matrix_v0.parallel_env(**kwargs)


def test_bad_actions_name_the_agent():
    env = matrix_v0.parallel_env("linear")
    env.reset()
    with pytest.raises(ValueError, match="agent_1"):
        env.step({"agent_0": 0, "agent_1": 2})
