"""The VMAS tasks (extra vmas): the PettingZoo view, its batched twin, moves, global state,
team reward, success and exact snapshots."""

import numpy as np
import pytest
import torch

pytest.importorskip("vmas")

from pettingzoo.test import parallel_api_test, parallel_seed_test  # noqa: E402

import spnpolicy  # noqa: E402
from spnpolicy.envs.vmas import TASKS, VmasEnv, action_names  # noqa: E402
from spnpolicy.envs.vmas_vec import VmasVecEnv  # noqa: E402
from spnpolicy.training.vec_env import VmasVec, make_vec_env  # noqa: E402
from tests.env_helpers import stacked  # noqa: E402
from tests.run_helpers import assert_same_run  # noqa: E402

SMALL = dict(n_agents=2, max_steps=6)


def _toward(pos: np.ndarray, vel: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Joint actions `[E, n]` pushing each agent (`pos`, `vel` `[E, n, 2]`) along the axis
    where it is farthest from `target` `[E, n, 2]` (noop within 0.02)."""
    gap = target - pos - 0.6 * vel
    axis = np.abs(gap).argmax(-1)
    positive = np.take_along_axis(gap, axis[..., None], -1)[..., 0] > 0
    move = np.where(axis == 0, np.where(positive, 2, 1), np.where(positive, 4, 3))
    return np.where(np.abs(gap).max(-1) < 0.02, 0, move)


@pytest.mark.parametrize("task", list(TASKS))
def test_pettingzoo_api_and_seeding(task):
    parallel_api_test(spnpolicy.make_env(f"vmas/{task}", **SMALL), num_cycles=20)
    parallel_seed_test(lambda: spnpolicy.make_env(f"vmas/{task}", **SMALL))


@pytest.mark.parametrize("task", list(TASKS))
def test_copy_e_replays_the_parallel_env_seeded_seed_plus_e(task):
    vec, seed = VmasVecEnv(3, task, seed=4, **SMALL), 4
    envs = [spnpolicy.make_env(f"vmas/{task}", **SMALL) for _ in range(3)]
    agents = envs[0].possible_agents
    obs = vec.reset()
    for e, env in enumerate(envs):
        np.testing.assert_array_equal(obs[e], stacked(env.reset(seed=seed + e)[0], agents))
    rng = np.random.default_rng(0)
    for _ in range(14):                                   # episodes of 6 steps: two resets
        actions = rng.integers(0, vec.num_actions, size=(3, 2))
        obs, reward, terminated, truncated, info = vec.step(actions)
        for e, env in enumerate(envs):
            ref_obs, ref_rew, ref_term, ref_trunc, ref_info = env.step(
                dict(zip(agents, actions[e].tolist())))
            np.testing.assert_array_equal(info["final_observation"][e], stacked(ref_obs, agents))
            np.testing.assert_array_equal(info["final_state"][e], env.state())
            np.testing.assert_array_equal(info["agent_rewards"][e], stacked(ref_rew, agents))
            assert reward[e] == ref_info["agent_0"]["team_reward"]
            assert (terminated[e], truncated[e]) == (ref_term["agent_0"], ref_trunc["agent_0"])
            assert info["success"][e] == ref_info["agent_0"]["success"]
            if terminated[e] or truncated[e]:
                np.testing.assert_array_equal(obs[e], stacked(env.reset()[0], agents))
                np.testing.assert_array_equal(vec.state()[e], env.state())


@pytest.mark.parametrize("diagonal", [False, True])
def test_each_move_pushes_the_way_its_name_says(diagonal):
    names = action_names(diagonal)
    vec = VmasVecEnv(len(names), "dispersion", seed=0, n_agents=1, diagonal_moves=diagonal)
    assert vec.num_actions == len(names) == (9 if diagonal else 5)
    vec.reset()
    vec.step(np.arange(len(names))[:, None])
    velocity = vec.state()[:, 2:4]                        # agent 0 starts at rest
    for name, v in zip(names, velocity):
        expected = (int("right" in name) - int("left" in name),
                    int("up" in name) - int("down" in name))
        assert tuple(np.sign(v).astype(int)) == expected, name
    assert spnpolicy.envs.registry.action_names("vmas/transport", len(names)) == names


def test_dispersion_team_reward_counts_the_food_eaten_and_success_is_all_of_it():
    n, E = 2, 4
    vec = VmasVecEnv(E, "dispersion", seed=0, n_agents=n, max_steps=100)
    vec.reset()
    assert vec.state_dim == 4 * n + 3 * n and vec.obs_dim == 4 + 3 * n
    episode_return, successes = np.zeros(E), 0
    for _ in range(100):
        state = vec.state()
        agents, food = state[:, :4 * n].reshape(E, n, 4), state[:, 4 * n:].reshape(E, n, 3)
        _, reward, terminated, truncated, info = vec.step(
            _toward(agents[..., :2], agents[..., 2:], food[..., :2]))
        eaten = info["final_state"][:, 4 * n:].reshape(E, n, 3)[..., 2]
        newly = eaten.sum(1) - food[..., 2].sum(1)
        np.testing.assert_allclose(reward, newly / n, atol=1e-6)   # default: rewards split
        np.testing.assert_allclose(reward, info["agent_rewards"].mean(1), atol=1e-6)
        np.testing.assert_array_equal(info["success"], eaten.all(1))
        np.testing.assert_array_equal(terminated, eaten.all(1))
        episode_return += reward
        ended = terminated | truncated
        np.testing.assert_allclose(episode_return[terminated], 1.0, atol=1e-6)  # all eaten
        assert (episode_return[ended] <= 1.0 + 1e-6).all()
        episode_return[ended] = 0.0
        successes += int(terminated.sum())
    assert successes >= E                 # the scripted team eats everything, repeatedly


def test_navigation_success_is_every_agent_on_its_goal():
    n, E = 2, 3
    vec = VmasVecEnv(E, "navigation", seed=1, n_agents=n, max_steps=100)
    vec.reset()
    assert vec.state_dim == 6 * n and vec.obs_dim == 18
    successes = 0
    for _ in range(60):
        state = vec.state().reshape(E, n, 6)
        _, _, terminated, truncated, info = vec.step(
            _toward(state[..., :2], state[..., 2:4], state[..., 4:6]))
        final = info["final_state"].reshape(E, n, 6)
        on_goal = np.linalg.norm(final[..., :2] - final[..., 4:6], axis=-1) < 0.1
        np.testing.assert_array_equal(info["success"], on_goal.all(1))
        assert not (terminated & truncated).any()
        successes += int(terminated.sum())
    assert successes >= 1


def test_transport_succeeds_when_the_package_is_on_the_goal():
    vec = VmasVecEnv(2, "transport", seed=0, n_agents=3)
    vec.reset()
    assert vec.state_dim == 4 * 3 + 2 + 5
    goal, package = vec.vmas_env.world.landmarks
    package.set_pos(goal.state.pos[1], batch_index=1)     # copy 1: put it there
    _, reward, terminated, _, info = vec.step(np.zeros((2, 3), dtype=np.int64))
    assert terminated.tolist() == info["success"].tolist() == [False, True]
    assert info["final_state"][:, -1].tolist() == [0.0, 1.0]  # the on-goal flag
    assert reward[1] == info["agent_rewards"][1, 0]       # one shared reward: the mean is it


def _solve(vec: VmasVecEnv, e: int) -> None:
    """Move copy e of `vec` (2 agents) to its task's goal: its next step succeeds."""
    world = vec.vmas_env.world
    if vec.config.task == "dispersion":
        for agent, food in zip(world.agents, world.landmarks):
            agent.set_pos(food.state.pos[e], batch_index=e)
    elif vec.config.task == "navigation":
        for agent in world.agents:
            agent.set_pos(agent.goal.state.pos[e], batch_index=e)
    else:
        goal, package = world.landmarks
        package.set_pos(goal.state.pos[e], batch_index=e)


@pytest.mark.parametrize("task", list(TASKS))
def test_snapshot_restores_exactly_through_a_checkpoint(task, tmp_path):
    kwargs = dict(n_agents=2, max_steps=8)
    first = VmasVecEnv(3, task, seed=5, **kwargs)
    first.reset()
    rng = np.random.default_rng(0)
    for t in range(11):
        if t == 3:
            _solve(first, 1)                          # copy 1's next episode starts early
        _, _, terminated, _, _ = first.step(rng.integers(0, 5, size=(3, 2)))
        assert terminated[1] == (t == 3)
    assert [len(h) for h in first.snapshot()["history"]] == [3, 7, 3]
    torch.save(first.snapshot(), tmp_path / "snapshot.pt")
    second = VmasVecEnv(3, task, seed=99, **kwargs)
    obs = second.restore(torch.load(tmp_path / "snapshot.pt", weights_only=True))
    np.testing.assert_array_equal(second.state(), first.state())
    assert obs.shape == (3, 2, first.obs_dim)
    for _ in range(20):                                   # through resets: generators restored
        actions = rng.integers(0, 5, size=(3, 2))
        for x, y in zip(first.step(actions), second.step(actions)):
            for key in x if isinstance(x, dict) else [None]:
                np.testing.assert_array_equal(x if key is None else x[key],
                                              y if key is None else y[key])
    with pytest.raises(ValueError, match="3 copies, this env 2"):
        VmasVecEnv(2, task, **kwargs).restore(first.snapshot())


def test_seeds_bad_actions_and_the_vec_protocol():
    vec = VmasVecEnv(2, "dispersion", seed=1, **SMALL)
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(np.zeros((2, 2), dtype=np.int64))
    first = vec.reset()
    assert not np.array_equal(vec.reset(), first)
    np.testing.assert_array_equal(vec.reset(seed=1), first)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        vec.step(np.full((2, 2), 5))
    envs = make_vec_env("vmas/dispersion", 2, seed=0, n_agents=16)
    assert isinstance(envs, VmasVec) and envs.has_success
    state, obs = envs.reset()
    assert state.shape == (2, 16 * 4 + 16 * 3) and obs.shape == (2, 16, 4 + 16 * 3)
    out = envs.step(np.zeros((2, 16), dtype=np.int64))
    assert out.final_state.shape == state.shape and out.executed is None


def test_vmas_refusals_name_the_arguments():
    with pytest.raises(ValueError, match="agents_with_same_goal.*collidables"):
        spnpolicy.make_env("vmas/navigation", agents_with_same_goal=2)
    env = spnpolicy.make_env("vmas/navigation", n_agents=3, max_steps=4)
    assert isinstance(env, VmasEnv) and env.possible_agents == ["agent_0", "agent_1",
                                                                  "agent_2"]


def test_spn_ac_run_on_dispersion_resumes_to_the_uninterrupted_run(tmp_path):
    """Stop at step 48 (a checkpoint, the copies mid-episode), resume to 96: the same run."""
    config = dict(env_kwargs=dict(n_agents=3, max_steps=7), num_envs=4, learning_starts=32,
                  batch_size=8, eval_interval=48, eval_episodes=2, checkpoint_interval=48,
                  progress=False, verbose=False)
    whole = spnpolicy.train("spn-ac", "vmas/dispersion", seed=0, total_steps=96,
                            out_dir=tmp_path / "a", **config)
    spnpolicy.train("spn-ac", "vmas/dispersion", seed=0, total_steps=48,
                    out_dir=tmp_path / "b", **config)
    resumed = spnpolicy.train("spn-ac", "vmas/dispersion", seed=0, total_steps=96,
                              out_dir=tmp_path / "b", resume=True, **config)
    assert_same_run(whole, resumed)
    assert [h["step"] for h in whole.history] == [0, 48, 96]
    assert "success_rate" in whole.eval
