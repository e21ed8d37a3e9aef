"""Level-based foraging through make_env (skipped without the lbf extra)."""

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

import spnpolicy

pytest.importorskip("lbforaging")

IDS = ["Foraging-8x8-2p-3f-v3", "Foraging-2s-6x6-3p-2f-coop-v3"]


@pytest.mark.parametrize("env_id", IDS)
def test_pettingzoo_api_and_seeding(env_id):
    parallel_api_test(spnpolicy.make_env(f"lbf/{env_id}"), num_cycles=60)
    parallel_seed_test(lambda: spnpolicy.make_env(f"lbf/{env_id}"))


def test_spaces_state_and_truncation():
    env = spnpolicy.make_env("lbf/Foraging-8x8-2p-3f-v3", max_episode_steps=5)
    observations, _ = env.reset(seed=0)
    assert env.possible_agents == ["agent_0", "agent_1"]
    assert env.action_space("agent_1").n == 6
    assert env.action_space("agent_0") is not env.action_space("agent_1")
    assert env.observation_space("agent_0").contains(observations["agent_0"])
    np.testing.assert_array_equal(env.state(), np.concatenate(
        [observations["agent_0"], observations["agent_1"]]))
    assert env.state_space.contains(env.state())
    for step in range(5):
        _, _, terminated, truncated, infos = env.step({"agent_0": 0, "agent_1": 0})
        assert not terminated["agent_0"] and truncated["agent_0"] == (step == 4)
        assert infos["agent_0"]["team_reward"] == 0.0
    assert env.agents == []


def test_collecting_all_food_terminates_and_common_reward_shares_it():
    env = spnpolicy.make_env("lbf/Foraging-5x5-2p-1f-v3", common_reward=True)
    env.reset(seed=0)
    foraging = env.foraging
    food_row, food_col = (int(i[0]) for i in np.nonzero(foraging.field))
    for player, col in zip(foraging.players, (food_col - 1, food_col + 1), strict=True):
        player.position = (food_row, col)
        player.level = int(foraging.field[food_row, food_col])
    foraging._gen_valid_moves()
    _, rewards, terminated, truncated, infos = env.step({"agent_0": 5, "agent_1": 5})
    assert all(terminated.values()) and not any(truncated.values())
    assert infos["agent_0"]["team_reward"] == pytest.approx(1.0)
    assert rewards == {"agent_0": pytest.approx(1.0), "agent_1": pytest.approx(1.0)}


@pytest.mark.parametrize("name, kwargs, argument", [
    ("lbf/Foraging-8x8-2p-9f-v3", {}, "env_id"),
    ("lbf/Foraging-8x8-2p-3f-v3", {"num_food": 2}, "num_food"),
])
def test_bad_ids_and_kwargs_are_named(name, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        spnpolicy.make_env(name, **kwargs)
