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


@pytest.mark.parametrize("env_id", ["Foraging-5x5-2p-1f-v3", "Foraging-8x8-3p-2f-v3"])
def test_a_seed_gives_one_start_whatever_was_played_before(env_id):
    # lbforaging placed players away from the previous episode's positions, so reset(seed)
    # depended on what was played before it
    fresh = spnpolicy.make_env(f"lbf/{env_id}")
    played = spnpolicy.make_env(f"lbf/{env_id}")
    rng = np.random.default_rng(0)
    for seed in range(40):
        played.reset(seed=1000 + seed)
        for _ in range(int(rng.integers(1, 12))):
            if not played.agents:
                break
            played.step({a: int(rng.integers(6)) for a in played.agents})
        expected, _ = fresh.reset(seed=seed)
        observations, _ = played.reset(seed=seed)
        for agent in expected:
            np.testing.assert_array_equal(observations[agent], expected[agent])


def test_a_resumed_run_equals_the_uninterrupted_run(tmp_path):
    # a resumed run rebuilds each env copy by replaying its episode from the seed; the
    # replay ended early in another world ("step() called on a finished episode")
    from tests.run_helpers import assert_same_run

    config = dict(num_envs=8, learning_starts=24, batch_size=8, hidden=(16,),
                  eval_interval=104, eval_episodes=2, checkpoint_interval=104,
                  progress=False, verbose=False)
    env = "lbf/Foraging-5x5-2p-1f-v3"
    whole = spnpolicy.train("vdn", env, seed=0, out_dir=tmp_path / "a", total_steps=208,
                            **config)
    spnpolicy.train("vdn", env, seed=0, out_dir=tmp_path / "b", total_steps=104, **config)
    resumed = spnpolicy.train("vdn", env, seed=0, out_dir=tmp_path / "b", resume=True,
                              total_steps=208, **config)
    assert_same_run(whole, resumed)
