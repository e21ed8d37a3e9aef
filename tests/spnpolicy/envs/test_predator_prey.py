"""Predator-prey with punishment: PettingZoo contract, the capture rule on hand-built
situations, the batched rules against a plain one-copy reference, and the vectorised env
against the ParallelEnv step for step."""

import dataclasses

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

import spnpolicy
from spnpolicy.envs import ENV_NAMES, predator_prey_v0
from spnpolicy.envs import predator_prey_core as core
from spnpolicy.envs.predator_prey_vec import PredatorPreyVecEnv
from spnpolicy.envs.registry import ENV_DESCRIPTIONS, action_names
from spnpolicy.training.vec_env import PredatorPreyVec, make_vec_env
from tests.env_helpers import replay_in_lockstep

UP, DOWN, LEFT, RIGHT, STAY, CATCH = range(6)
SMALL = {"num_agents": 4, "num_prey": 2, "grid_size": 4, "max_steps": 15, "punishment": 1.25}
CONFIGS = [
    {},
    SMALL,
    {"num_agents": 3, "num_prey": 3, "grid_size": 3, "max_steps": 9, "obs_radius": 1},
    {"num_agents": 5, "num_prey": 4, "grid_size": 6, "max_steps": 30, "punishment": 0.0,
     "capture_reward": 1.0, "obs_radius": 0},
]


def place(env, predators, prey, active=None):
    """Reset `env` and put its predators and prey on the given cells."""
    env.reset(seed=0)
    active = np.ones(len(predators), bool) if active is None else np.array(active)
    env.world = core.World(np.array([predators], dtype=np.int64), active[None],
                           np.array([prey], dtype=np.int64), np.ones((1, len(prey)), bool))


def act(env, *actions):
    return env.step({f"agent_{i}": a for i, a in enumerate(actions)})


def catch_heavy(rng, shape):
    """Random actions with catch at 40%, so that captures and lone attempts happen."""
    return rng.choice(6, size=shape, p=[0.12] * 5 + [0.4])


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_pettingzoo_api_and_seeding(kwargs):
    parallel_api_test(predator_prey_v0.parallel_env(**kwargs), num_cycles=300)
    parallel_seed_test(lambda: predator_prey_v0.parallel_env(**kwargs))


def test_defaults_are_the_papers_and_spaces_are_cached():
    config = core.PredatorPreyConfig()
    assert (config.num_agents, config.num_prey, config.grid_size, config.obs_radius,
            config.capture_reward, config.max_steps) == (8, 8, 10, 2, 10.0, 200)
    assert config.punishment == 2.0
    env = predator_prey_v0.parallel_env()
    assert env.observation_space("agent_3") is env.observation_space("agent_3")
    assert env.action_space("agent_3") is env.action_space("agent_3")
    assert env.observation_space("agent_0").shape == (2 * 5 * 5,)
    # the grid, then each predator's window and one-hot row and column
    assert env.state_space.shape == (2 * 10 * 10 + 8 * (2 * 5 * 5 + 2 * 10),)
    assert predator_prey_v0.parallel_env(state="grid").state_space.shape == (2 * 10 * 10,)
    assert env.action_space("agent_0").n == 6


def test_reset_puts_every_entity_on_its_own_cell_and_is_seeded():
    env = predator_prey_v0.parallel_env(num_agents=6, num_prey=3, grid_size=3)
    observations, infos = env.reset(seed=4)
    cells = np.concatenate([env.world.predators[0], env.world.prey[0]]).tolist()
    assert len({tuple(c) for c in cells}) == 9
    assert infos["agent_0"] == {"success": False, "captures": 0, "active": True}
    first = env.state()
    env.reset(seed=4)
    np.testing.assert_array_equal(env.state(), first)


def test_two_adjacent_catchers_capture_and_leave_the_grid():
    env = predator_prey_v0.parallel_env(num_agents=3, num_prey=2, grid_size=5, obs_radius=1)
    place(env, predators=[[1, 2], [2, 1], [4, 4]], prey=[[2, 2], [0, 0]])
    observations, rewards, terminated, truncated, infos = act(env, CATCH, CATCH, STAY)
    assert rewards == dict.fromkeys(env.possible_agents, 10.0)
    assert infos["agent_0"]["team_reward"] == 10.0 and infos["agent_2"]["captures"] == 1
    assert not infos["agent_0"]["success"] and not any(terminated.values())
    assert [info["active"] for info in infos.values()] == [False, False, True]
    np.testing.assert_array_equal(env.world.alive, [[False, True]])
    assert not observations["agent_0"].any() and not observations["agent_1"].any()
    grid = env.state()[:2 * 5 * 5].reshape(2, 5, 5)
    assert grid[0].sum() == 1 and grid[0, 4, 4] == 1        # only agent_2 is left
    assert grid[1].sum() == 1 and grid[1, 2, 2] == 0        # the other prey moved off (0, 0)
    assert grid[1, 0, 1] + grid[1, 1, 0] == 1


def test_capturing_the_last_prey_is_a_success():
    env = predator_prey_v0.parallel_env(num_agents=2, num_prey=1, grid_size=3)
    place(env, predators=[[0, 1], [1, 2]], prey=[[1, 1]])
    _, rewards, terminated, truncated, infos = act(env, CATCH, CATCH)
    assert rewards["agent_0"] == 10.0 and terminated["agent_0"] and not truncated["agent_0"]
    assert infos["agent_1"]["success"] and env.agents == []


def test_episode_ends_when_every_predator_has_left_the_grid():
    env = predator_prey_v0.parallel_env(num_agents=2, num_prey=2, grid_size=4)
    place(env, predators=[[0, 1], [1, 0]], prey=[[0, 0], [3, 3]])
    _, rewards, terminated, _, infos = act(env, CATCH, CATCH)
    assert rewards["agent_0"] == 10.0 and terminated["agent_0"]
    assert not infos["agent_0"]["success"] and infos["agent_0"]["captures"] == 1


def test_three_catchers_capture_once_and_all_leave():
    env = predator_prey_v0.parallel_env(num_agents=4, num_prey=1, grid_size=3)
    place(env, predators=[[0, 1], [1, 0], [1, 2], [2, 2]], prey=[[1, 1]])
    _, rewards, terminated, _, infos = act(env, CATCH, CATCH, CATCH, CATCH)
    assert rewards["agent_0"] == 10.0 and terminated["agent_0"]
    np.testing.assert_array_equal(env.world.active, [[False, False, False, True]])


def test_a_lone_attempt_is_punished_and_a_catch_with_no_prey_near_does_nothing():
    env = predator_prey_v0.parallel_env(num_agents=2, num_prey=1, grid_size=5, punishment=1.5)
    place(env, predators=[[0, 1], [4, 4]], prey=[[1, 1]])
    _, rewards, terminated, _, infos = act(env, CATCH, CATCH)
    assert rewards["agent_0"] == -1.5 and infos["agent_0"]["team_reward"] == -1.5
    assert env.world.alive.all() and env.world.active.all() and not terminated["agent_0"]
    np.testing.assert_array_equal(env.world.predators, [[[0, 1], [4, 4]]])
    place(env, predators=[[0, 0], [4, 4]], prey=[[2, 2]])
    _, rewards, *_ = act(env, CATCH, CATCH)
    assert rewards["agent_0"] == 0.0
    np.testing.assert_array_equal(env.world.predators, [[[0, 0], [4, 4]]])


def test_diagonal_neighbours_do_not_catch_and_each_lone_attempt_is_punished():
    env = predator_prey_v0.parallel_env(num_agents=3, num_prey=2, grid_size=5, punishment=2.0)
    # agent_0 is diagonal to prey 0, agent_1 next to it; agent_2 alone next to prey 1
    place(env, predators=[[0, 0], [1, 0], [3, 4]], prey=[[1, 1], [4, 4]])
    _, rewards, *_ = act(env, CATCH, CATCH, CATCH)
    assert rewards["agent_0"] == -4.0 and env.world.alive.all()


def test_a_predator_that_captured_cannot_catch_again_in_the_same_step():
    env = predator_prey_v0.parallel_env(num_agents=3, num_prey=2, grid_size=5, punishment=1.0)
    rewards = set()
    for seed in range(20):                 # whichever prey's turn comes first
        place(env, predators=[[1, 2], [0, 1], [0, 3]], prey=[[1, 1], [1, 3]])
        env._rng = np.random.default_rng(seed)
        _, reward, *_ = act(env, CATCH, CATCH, CATCH)
        rewards.add(reward["agent_0"])
        assert env.world.alive.sum() == 1 and env.world.active.sum() == 1
        assert not env.world.active[0, 0]
    assert rewards == {9.0}


def test_moves_are_blocked_by_walls_prey_and_active_predators_only():
    env = predator_prey_v0.parallel_env(num_agents=4, num_prey=1, grid_size=4)
    place(env, predators=[[0, 0], [3, 1], [2, 1], [2, 3]], prey=[[3, 3]],
          active=[True, True, False, True])
    act(env, UP, UP, STAY, DOWN)
    # agent_0 off the grid: stays; agent_1 into the cell of agent_2, which left the grid;
    # agent_3 into the prey's cell: blocked (the prey moves only after the predators)
    np.testing.assert_array_equal(env.world.predators[0, [0, 1, 3]], [[0, 0], [2, 1], [2, 3]])


def test_prey_stays_when_boxed_in_and_otherwise_moves_to_a_free_neighbour():
    env = predator_prey_v0.parallel_env(num_agents=2, num_prey=1, grid_size=3)
    place(env, predators=[[0, 1], [1, 0]], prey=[[0, 0]])
    act(env, STAY, STAY)
    np.testing.assert_array_equal(env.world.prey, [[[0, 0]]])
    seen = set()
    for seed in range(40):
        place(env, predators=[[0, 0], [2, 2]], prey=[[1, 1]])
        env._rng = np.random.default_rng(seed)
        act(env, STAY, STAY)
        seen.add(tuple(env.world.prey[0, 0].tolist()))
    assert seen == {(0, 1), (1, 0), (1, 2), (2, 1)}


def test_observation_window_and_state_layout():
    config = core.PredatorPreyConfig(num_agents=2, num_prey=1, grid_size=4, obs_radius=1)
    world = core.World(np.array([[[0, 0], [1, 1]]]), np.ones((1, 2), bool),
                       np.array([[[0, 1]]]), np.ones((1, 1), bool))
    obs = core.observations(world, config).reshape(2, 2, 3, 3)   # [agent, channel, row, col]
    expected = np.zeros((2, 2, 3, 3), np.float32)
    expected[0, 0, 1, 1] = expected[0, 0, 2, 2] = 1    # itself, agent_1 down-right
    expected[0, 1, 1, 2] = 1                           # the prey to its right
    expected[1, 0, 1, 1] = expected[1, 0, 0, 0] = 1    # itself, agent_0 up-left
    expected[1, 1, 0, 1] = 1                           # the prey above
    np.testing.assert_array_equal(obs, expected)
    grid_only = dataclasses.replace(config, state="grid")
    state = core.global_state(world, grid_only).reshape(2, 4, 4)
    assert state[0, 0, 0] == state[0, 1, 1] == state[1, 0, 1] == 1 and state.sum() == 3
    full = core.global_state(world, config)[0]
    assert full.shape == (config.state_dim,) == (2 * 16 + 2 * (18 + 8),)
    np.testing.assert_array_equal(full[:32], state.ravel())
    blocks = full[32:].reshape(2, 18 + 8)                  # [agent, window + row + col]
    np.testing.assert_array_equal(blocks[:, :18], obs.reshape(2, 18))
    np.testing.assert_array_equal(blocks[:, 18:22], [[1, 0, 0, 0], [0, 1, 0, 0]])   # rows
    np.testing.assert_array_equal(blocks[:, 22:], [[1, 0, 0, 0], [0, 1, 0, 0]])     # cols


def test_state_names_which_predator_is_where_and_drops_those_that_left():
    config = core.PredatorPreyConfig(num_agents=2, num_prey=1, grid_size=4, obs_radius=1)
    world = core.World(np.array([[[0, 0], [1, 1]]]), np.ones((1, 2), bool),
                       np.array([[[0, 1]]]), np.ones((1, 1), bool))
    swapped = core.World(world.predators[:, ::-1].copy(), world.active, world.prey, world.alive)
    grid_only = dataclasses.replace(config, state="grid")
    # the paper's grid cannot tell the two apart; the default state can
    np.testing.assert_array_equal(core.global_state(world, grid_only),
                                  core.global_state(swapped, grid_only))
    assert not np.array_equal(core.global_state(world, config),
                              core.global_state(swapped, config))
    gone = core.World(world.predators, np.array([[True, False]]), world.prey, world.alive)
    assert not core.global_state(gone, config)[0, 32 + 26:].any()   # agent_1's block
    with pytest.raises(ValueError, match="state must be one of"):
        core.PredatorPreyConfig(state="agent")


def test_truncation_after_max_steps():
    env = predator_prey_v0.parallel_env(num_agents=2, num_prey=1, grid_size=4, max_steps=3)
    env.reset(seed=0)
    for t in range(3):
        _, _, terminated, truncated, _ = act(env, STAY, STAY)
        assert truncated["agent_0"] == (t == 2) and not terminated["agent_0"]
    assert env.agents == []


@pytest.mark.parametrize("kwargs, argument", [
    ({"num_agents": 1}, "num_agents"),
    ({"num_prey": 0}, "num_prey"),
    ({"num_agents": 8, "num_prey": 9, "grid_size": 4}, "grid_size"),
    ({"obs_radius": -1}, "obs_radius"),
    ({"punishment": -2.0}, "punishment"),
    ({"punishment": float("nan")}, "punishment"),
    ({"punishment": True}, "punishment"),
    ({"capture_reward": "10"}, "capture_reward"),
    ({"max_steps": 0}, "max_steps"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        predator_prey_v0.parallel_env(**kwargs)
    with pytest.raises(ValueError, match=argument):
        spnpolicy.make_env("predator-prey", **kwargs)


def reference_step(world, actions, uniforms, config):
    """One copy of `core.step` in plain Python, straight from the rules' description."""
    n, m, size = config.num_agents, config.num_prey, config.grid_size
    predators = [tuple(p) for p in world.predators[0].tolist()]
    prey = [tuple(p) for p in world.prey[0].tolist()]
    active, alive = world.active[0].tolist(), world.alive[0].tolist()

    def free(cell):
        return (0 <= cell[0] < size and 0 <= cell[1] < size
                and cell not in [p for p, a in zip(predators, active) if a]
                and cell not in [q for q, a in zip(prey, alive) if a])

    for i in np.argsort(uniforms[:n]):
        if active[i] and actions[i] < STAY:
            cell = tuple(np.add(predators[i], core.MOVES[actions[i]]).tolist())
            if free(cell):
                predators[i] = cell
    reward = 0.0
    for turn, j in enumerate(np.argsort(uniforms[n:n + m])):
        if not alive[j]:
            continue
        catchers = [i for i in range(n) if active[i] and actions[i] == CATCH
                    and abs(predators[i][0] - prey[j][0]) + abs(predators[i][1] - prey[j][1]) == 1]
        if len(catchers) >= 2:
            reward += config.capture_reward
            alive[j] = False
            for i in catchers:
                active[i] = False
            continue
        reward -= config.punishment * len(catchers)
        for move in core.PREY_ORDERS[int(uniforms[n + m + turn] * 24)]:
            cell = tuple(np.add(prey[j], core.MOVES[move]).tolist())
            if free(cell):
                prey[j] = cell
                break
    return predators, active, prey, alive, reward


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_batched_rules_match_a_plain_reference(kwargs):
    config = core.PredatorPreyConfig(**kwargs)
    rng = np.random.default_rng(1)
    E = 6
    world = core.World.empty(E, config)
    for e in range(E):
        world.predators[e], world.prey[e] = core.sample_layout(rng, config)
    for _ in range(40):
        actions = catch_heavy(rng, (E, config.num_agents))
        uniforms = rng.random((E, config.draws_per_step))
        stepped, outcome = core.step(world, actions, uniforms, config)
        for e in range(E):
            one = core.World(world.predators[e:e + 1], world.active[e:e + 1],
                             world.prey[e:e + 1], world.alive[e:e + 1])
            predators, active, prey, alive, reward = reference_step(
                one, actions[e], uniforms[e], config)
            np.testing.assert_array_equal(stepped.active[e], active)
            np.testing.assert_array_equal(stepped.alive[e], alive)
            np.testing.assert_array_equal(stepped.predators[e][active], np.array(
                predators).reshape(-1, 2)[active])
            np.testing.assert_array_equal(stepped.prey[e][alive], np.array(
                prey).reshape(-1, 2)[alive])
            assert outcome.reward[e] == pytest.approx(reward)
            assert outcome.terminated[e] == (not any(alive) or not any(active))
        world = stepped
        for e in np.flatnonzero(outcome.terminated):
            world.predators[e], world.prey[e] = core.sample_layout(rng, config)
            world.active[e], world.alive[e] = True, True


@pytest.mark.parametrize("kwargs", [{"max_steps": 30}, *CONFIGS[1:]])
def test_vec_env_replays_the_pettingzoo_env_with_seed_plus_index(kwargs):
    num_envs, seed, steps = 4, 11, 90
    vec = PredatorPreyVecEnv(num_envs, seed=seed, **kwargs)
    envs = [predator_prey_v0.parallel_env(**kwargs) for _ in range(num_envs)]
    rng = np.random.default_rng(0)
    ends = captures = 0
    for e, _, info, ref_info, ended in replay_in_lockstep(
            vec, envs, seed, lambda: catch_heavy(rng, (num_envs, vec.num_agents)), steps):
        assert info["captures"][e] == ref_info["captures"]
        if ended:
            ends += 1
            captures += info["captures"][e]
    assert ends >= num_envs and captures > 0


def test_vec_env_resets_seeds_and_refuses_bad_input():
    vec = PredatorPreyVecEnv(3, **SMALL, seed=1)
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(np.zeros((3, 4), dtype=np.int64))
    first = vec.reset()
    assert first.shape == (3, 4, 50) and vec.state().shape == (3, 32 + 4 * (50 + 8))
    assert not np.array_equal(vec.reset(), first)
    np.testing.assert_array_equal(vec.reset(seed=1), first)
    with pytest.raises(ValueError, match="shape"):
        vec.step(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        vec.step(np.full((3, 4), 6))
    with pytest.raises(ValueError, match="num_envs"):
        PredatorPreyVecEnv(0)
    with pytest.raises(ValueError, match="punishment"):
        PredatorPreyVecEnv(2, punishment=-1)


def test_snapshot_restore_continues_exactly():
    rng = np.random.default_rng(0)
    first, second = PredatorPreyVecEnv(3, **SMALL, seed=5), PredatorPreyVecEnv(3, **SMALL, seed=9)
    first.reset()
    for _ in range(7):
        first.step(catch_heavy(rng, (3, 4)))
    second.restore(first.snapshot())
    np.testing.assert_array_equal(second.state(), first.state())
    for _ in range(40):                    # long enough for resets: generators were restored
        actions = catch_heavy(rng, (3, 4))
        for x, y in zip(first.step(actions), second.step(actions)):
            if isinstance(x, dict):
                for key in x:
                    np.testing.assert_array_equal(x[key], y[key])
            else:
                np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="num_envs=2"):
        PredatorPreyVecEnv(2, **SMALL).restore(first.snapshot())


def test_registry_and_make_vec_env():
    assert "predator-prey" in ENV_NAMES and "predator-prey" in ENV_DESCRIPTIONS
    env = spnpolicy.make_env("predator-prey", num_agents=2, num_prey=1, grid_size=3)
    assert isinstance(env, predator_prey_v0.PredatorPreyEnv)
    assert action_names("predator-prey", 6) == ("up", "down", "left", "right", "stay", "catch")
    envs = make_vec_env("predator-prey", 2, seed=0, **SMALL)
    assert isinstance(envs, PredatorPreyVec) and envs.has_success
    state, obs = envs.reset()
    out = envs.step(np.full((2, 4), CATCH))
    assert out.state.shape == state.shape == (2, 32 + 4 * (50 + 8)) and out.obs.shape == obs.shape
    envs.load_state_dict(envs.state_dict())


def test_vdn_trains_end_to_end():
    result = spnpolicy.train("vdn", "predator-prey", seed=0, total_steps=64,
                             env_kwargs=dict(num_agents=2, num_prey=1, grid_size=4,
                                             max_steps=10),
                             num_envs=4, learning_starts=32, batch_size=8, hidden=(16,),
                             eval_interval=64, eval_episodes=2, progress=False, verbose=False)
    assert result.history[-1]["step"] == 64
