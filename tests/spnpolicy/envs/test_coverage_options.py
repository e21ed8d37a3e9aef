"""Coverage env options: fixed layouts, relative, egocentric and nearest observations, the
assignment potential, starts on goals."""

import itertools

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from spnpolicy.envs import coverage_core as core
from spnpolicy.envs import coverage_v0
from spnpolicy.envs.coverage_vec import CoverageVecEnv

OPTIONS = [
    {"num_agents": 3, "grid_size": 6, "max_steps": 30, "layout": "fixed", "layout_seed": 4},
    {"num_agents": 3, "grid_size": 6, "max_steps": 30, "observation": "relative"},
    {"num_agents": 2, "grid_size": 3, "max_steps": 20, "layout": "fixed",
     "observation": "relative", "broken_agents": (1,)},
    {"num_agents": 4, "grid_size": 5, "max_steps": 25, "observation": "egocentric"},
    {"num_agents": 4, "grid_size": 5, "max_steps": 25, "layout": "fixed",
     "start_on_goals": 0.8},
    {"num_agents": 5, "grid_size": 4, "max_steps": 25, "observation": "nearest",
     "neighbours": 3},
    {"num_agents": 1, "grid_size": 3, "max_steps": 10, "observation": "nearest"},
]


def brute_force_cost(agents, goals):
    n = len(agents)
    return min(sum(abs(int(agents[i][0]) - int(goals[p[i]][0]))
                   + abs(int(agents[i][1]) - int(goals[p[i]][1])) for i in range(n))
               for p in itertools.permutations(range(n)))


@pytest.mark.parametrize("kwargs", OPTIONS)
def test_pettingzoo_api_and_seeding_with_options(kwargs):
    parallel_api_test(coverage_v0.parallel_env(**kwargs), num_cycles=200)
    parallel_seed_test(lambda: coverage_v0.parallel_env(**kwargs))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8])
def test_potential_equals_a_brute_force_assignment(n):
    rng = np.random.default_rng(n)
    size, rows = 7, (40 if n < 8 else 8)          # the brute force of 8 agents takes 8! sums
    agents = rng.integers(0, size, size=(rows, n, 2))
    goals = rng.integers(0, size, size=(rows, n, 2))
    flat = core.assignment_cost(agents, goals)   # enumeration for n <= 6, scipy above
    expected = np.array([brute_force_cost(a, g) for a, g in zip(agents, goals)])
    np.testing.assert_array_equal(flat, expected)
    np.testing.assert_array_equal(core.potential(agents, goals, size), -expected / size)
    # batched over two axes the same as row by row
    np.testing.assert_array_equal(core.assignment_cost(agents.reshape(4, -1, n, 2),
                                                       goals.reshape(4, -1, n, 2)),
                                  expected.reshape(4, -1))


def test_scipy_path_equals_enumeration(monkeypatch):
    rng = np.random.default_rng(0)
    agents, goals = rng.integers(0, 9, size=(2, 30, 5, 2))
    enumerated = core.assignment_cost(agents, goals)
    monkeypatch.setattr(core, "ENUMERATE_MAX_AGENTS", 0)
    np.testing.assert_array_equal(core.assignment_cost(agents, goals), enumerated)


def test_potential_info_is_zero_exactly_when_every_goal_is_covered():
    env = coverage_v0.parallel_env(num_agents=2, grid_size=4, max_steps=10)
    env.reset(seed=0)
    env.agent_positions = np.array([[0, 0], [3, 3]])
    env.goal_positions = np.array([[0, 1], [3, 3]])
    _, _, _, _, infos = env.step({"agent_0": 4, "agent_1": 5})      # right, stay
    assert infos["agent_0"]["potential"] == 0.0 and infos["agent_1"]["success"]
    env.reset(seed=0)
    env.agent_positions = np.array([[0, 0], [0, 0]])
    env.goal_positions = np.array([[0, 1], [2, 3]])
    _, _, _, _, infos = env.step({"agent_0": 5, "agent_1": 5})
    assert infos["agent_1"]["potential"] == pytest.approx(-(1 + 5) / 4)
    obs, infos = env.reset(seed=1)
    assert infos["agent_0"]["potential"] == pytest.approx(
        -brute_force_cost(env.agent_positions, env.goal_positions) / 4)


def test_fixed_layout_is_identical_across_resets_and_reset_seeds():
    kwargs = {"num_agents": 4, "grid_size": 8, "layout": "fixed", "layout_seed": 11}
    env = coverage_v0.parallel_env(**kwargs)
    env.reset(seed=0)
    goals = env.goal_positions.copy()
    assert len({tuple(g) for g in goals.tolist()}) == 4
    starts = []
    for seed in (0, 1, 2, None, None, 123):
        env.reset(seed=seed)
        np.testing.assert_array_equal(env.goal_positions, goals)
        starts.append(env.agent_positions.copy())
    assert len({s.tobytes() for s in starts}) > 3           # agents still start at random
    other = coverage_v0.parallel_env(**kwargs)
    other.reset(seed=99)
    np.testing.assert_array_equal(other.goal_positions, goals)
    vec = CoverageVecEnv(3, seed=5, **kwargs)
    vec.reset()
    assert (vec.goal_positions == goals).all()
    moved = coverage_v0.parallel_env(**{**kwargs, "layout_seed": 12})
    moved.reset(seed=0)
    assert not np.array_equal(moved.goal_positions, goals)
    random = coverage_v0.parallel_env(**{**kwargs, "layout": "random"})
    layouts = set()
    for seed in range(5):
        random.reset(seed=seed)
        layouts.add(random.goal_positions.tobytes())
    assert len(layouts) > 1


def test_relative_observations_match_their_definition():
    n, size = 3, 6
    env = coverage_v0.parallel_env(num_agents=n, grid_size=size, max_steps=20,
                                   observation="relative")
    assert env.state_space.shape == (2 * n * n + 5 * n + 1,)
    assert env.observation_space("agent_0").shape == (2 * n * n + 10 * n - 1,)
    assert env.observation_space("agent_0").low.min() == -1.0
    observations, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(15):
        agents, goals = env.agent_positions, env.goal_positions
        state = env.state()
        absolute = core.global_state(agents, goals, core.goal_distances(agents, goals) == 0,
                                     env.elapsed, core.CoverageConfig(n, size, 20))
        np.testing.assert_array_equal(state[: 5 * n + 1], absolute)
        for i in range(n):
            for j in range(n):
                np.testing.assert_allclose(state[5 * n + 1 + 2 * (i * n + j):][:2],
                                           (goals[j] - agents[i]) / size, rtol=1e-6)
        for i, agent in enumerate(env.possible_agents):
            obs = observations[agent]
            S = state.size
            np.testing.assert_array_equal(obs[:S], state)
            np.testing.assert_array_equal(obs[S:S + n], np.eye(n)[i])
            ego_goals = np.concatenate([(goals[j] - agents[i]) / size for j in range(n)])
            ego_agents = np.concatenate([(agents[m] - agents[i]) / size
                                         for m in range(n) if m != i])
            np.testing.assert_allclose(obs[S + n:S + 3 * n], ego_goals, rtol=1e-6)
            np.testing.assert_allclose(obs[S + 3 * n:], ego_agents, rtol=1e-6)
        observations, _, terms, truncs, _ = env.step(
            {a: int(u) for a, u in zip(env.possible_agents, rng.integers(0, 6, n))})
        if any(terms.values()) or any(truncs.values()):
            observations, _ = env.reset()


@pytest.mark.parametrize("kwargs", OPTIONS)
def test_vec_env_with_options_replays_the_pettingzoo_env(kwargs):
    num_envs, seed = 4, 7
    vec = CoverageVecEnv(num_envs, seed=seed, **kwargs)
    envs = [coverage_v0.parallel_env(**kwargs) for _ in range(num_envs)]
    agents = envs[0].possible_agents
    obs = vec.reset()
    assert obs.shape[-1] == vec.obs_dim == envs[0].observation_space("agent_0").shape[0]
    for e, env in enumerate(envs):
        first, _ = env.reset(seed=seed + e)
        np.testing.assert_array_equal(obs[e], np.stack([first[a] for a in agents]))
    rng = np.random.default_rng(1)
    for _ in range(80):
        actions = rng.integers(0, 6, size=(num_envs, len(agents)))
        obs, reward, terminated, truncated, info = vec.step(actions)
        for e, env in enumerate(envs):
            ref_obs, ref_rew, ref_term, ref_trunc, ref_info = env.step(
                dict(zip(agents, actions[e].tolist(), strict=True)))
            np.testing.assert_array_equal(info["final_observation"][e],
                                          np.stack([ref_obs[a] for a in agents]))
            np.testing.assert_array_equal(info["final_state"][e], env.state())
            assert info["potential"][e] == ref_info["agent_0"]["potential"]
            assert reward[e] == ref_rew["agent_0"] and terminated[e] == ref_term["agent_0"]
            if terminated[e] or truncated[e]:
                ref_obs, _ = env.reset()
            np.testing.assert_array_equal(obs[e], np.stack([ref_obs[a] for a in agents]))


def test_egocentric_observations_match_their_definition():
    n, size = 4, 7
    env = coverage_v0.parallel_env(num_agents=n, grid_size=size, max_steps=20,
                                   observation="egocentric")
    assert env.state_space.shape == (5 * n + 1,)               # the absolute state
    assert env.observation_space("agent_0").shape == (6 * n + 1,)
    assert env.observation_space("agent_0").low.min() == -1.0
    observations, _ = env.reset(seed=5)
    rng = np.random.default_rng(1)
    for _ in range(15):
        agents, goals = env.agent_positions, env.goal_positions
        covered = (core.goal_distances(agents, goals) == 0).astype(np.float32)
        np.testing.assert_array_equal(env.state(), core.global_state(
            agents, goals, covered.astype(bool), env.elapsed, core.CoverageConfig(n, size, 20)))
        for i, agent in enumerate(env.possible_agents):
            expected = np.concatenate(
                [agents[i] / size, [env.elapsed / 20], covered, np.eye(n)[i],
                 *[(goals[j] - agents[i]) / size for j in range(n)],
                 *[(agents[m] - agents[i]) / size for m in range(n) if m != i]])
            np.testing.assert_allclose(observations[agent], expected, rtol=1e-6, atol=1e-7)
        observations, _, terms, truncs, _ = env.step(
            {a: int(u) for a, u in zip(env.possible_agents, rng.integers(0, 6, n))})
        if any(terms.values()) or any(truncs.values()):
            observations, _ = env.reset()


def brute_force_nearest(agents, goals, elapsed, config):
    """One agent at a time, by the definition: sort by (distance, index) and read off."""
    n, size = config.num_agents, config.grid_size
    g, m = config.nearest_counts
    on_goal = [[tuple(agents[i]) == tuple(goals[j]) for j in range(n)] for i in range(n)]
    rows = []
    for i in range(n):
        distance = [abs(int(goals[j][0] - agents[i][0])) + abs(int(goals[j][1] - agents[i][1]))
                    for j in range(n)]
        row = [*(agents[i] / size), elapsed / config.max_steps, float(any(on_goal[i]))]
        for j in sorted(range(n), key=lambda j: (distance[j], j))[:g]:
            held = any(on_goal[a][j] for a in range(n) if a != i)
            row += [*((goals[j] - agents[i]) / size), float(held)]
        others = [a for a in range(n) if a != i]
        distance = {a: abs(int(agents[a][0] - agents[i][0])) + abs(int(agents[a][1] - agents[i][1]))
                    for a in others}
        for a in sorted(others, key=lambda a: (distance[a], a))[:m]:
            row += [*((agents[a] - agents[i]) / size), float(any(on_goal[a]))]
        rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("n, size, neighbours", [(1, 2, 8), (2, 2, 8), (4, 3, 2), (6, 3, 8),
                                                 (9, 4, 4), (12, 5, 3), (16, 4, 8)])
def test_nearest_observations_match_their_definition(n, size, neighbours):
    """Small grids, so that agents share cells with goals and each other and distances tie."""
    config = core.CoverageConfig(n, size, 20, observation="nearest", neighbours=neighbours)
    g, m = config.nearest_counts
    assert config.obs_dim == 4 + 3 * (g + m) == 4 + 3 * (min(neighbours, n)
                                                          + min(neighbours, n - 1))
    rng = np.random.default_rng(n * 100 + neighbours)
    for _ in range(40):
        goals = np.stack(np.divmod(rng.choice(size * size, n, replace=False), size), -1)
        agents = rng.integers(0, size, size=(n, 2))
        agents[rng.random(n) < 0.4] = goals[rng.permutation(n)][:1]   # some share one goal
        elapsed = int(rng.integers(0, 20))
        state = core.global_state(agents, goals, core.goal_distances(agents, goals) == 0,
                                  elapsed, config)
        np.testing.assert_allclose(core.observations(state, config),
                                   brute_force_nearest(agents, goals, elapsed, config),
                                   rtol=1e-6, atol=1e-7)


def test_nearest_observations_batched_equal_one_state_at_a_time():
    config = core.CoverageConfig(7, 6, 30, observation="nearest", neighbours=5)
    rng = np.random.default_rng(3)
    agents, goals = rng.integers(0, 6, size=(2, 3, 4, 7, 2))
    state = core.global_state(agents, goals, core.goal_distances(agents, goals) == 0, 2, config)
    batched = core.observations(state, config)
    assert batched.shape == (3, 4, 7, config.obs_dim)
    for index in np.ndindex(3, 4):
        np.testing.assert_array_equal(batched[index], core.observations(state[index], config))


def test_nearest_observation_size_stops_growing_with_the_team():
    sizes = [core.CoverageConfig(n, 40, 10, observation="nearest", neighbours=8).obs_dim
             for n in (4, 9, 16, 64, 200)]
    assert sizes == [4 + 3 * 7, 4 + 3 * 16, 52, 52, 52]


def test_state_potential_reads_the_state_back():
    config = core.CoverageConfig(4, 9, 30, observation="relative")
    rng = np.random.default_rng(2)
    agents, goals = rng.integers(0, 9, size=(2, 25, 4, 2))
    state = core.global_state(agents, goals, core.goal_distances(agents, goals) == 0, 3, config)
    np.testing.assert_array_equal(core.state_potential(state, config),
                                  core.potential(agents, goals, 9))


@pytest.mark.parametrize("kwargs, argument", [
    ({"layout": "grid"}, "layout"),
    ({"layout_seed": -1}, "layout_seed"),
    ({"layout_seed": 1.5}, "layout_seed"),
    ({"observation": "allocentric"}, "observation"),
    ({"start_on_goals": -0.1}, "start_on_goals"),
    ({"start_on_goals": 1.5}, "start_on_goals"),
    ({"start_on_goals": "half"}, "start_on_goals"),
    ({"start_on_goals": True}, "start_on_goals"),
    ({"observation": "nearest", "neighbours": 0}, "neighbours"),
    ({"neighbours": 2.5}, "neighbours"),
])
def test_bad_options_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        coverage_v0.parallel_env(**kwargs)
    with pytest.raises(ValueError, match=argument):
        CoverageVecEnv(2, **kwargs)


@pytest.mark.parametrize("layout", ["fixed", "random"])
def test_starts_on_goals_follow_the_documented_draws(layout):
    """The default draws nothing more; with p > 0 the share u, the picks and a goal
    permutation are drawn after the agents' cells, and the picked agents stand on the
    permuted goals (so on distinct ones)."""
    n, size = 6, 5
    for seed in range(20):
        plain = core.CoverageConfig(num_agents=n, grid_size=size, layout=layout)
        curriculum = core.CoverageConfig(num_agents=n, grid_size=size, layout=layout,
                                         start_on_goals=0.7)
        rng, ref = np.random.default_rng(seed), np.random.default_rng(seed)
        agents, goals = core.sample_layout(rng, plain)
        if layout == "random":
            cells = ref.choice(size * size, size=n, replace=False)
            np.testing.assert_array_equal(goals, np.stack(np.divmod(cells, size), axis=-1))
        cells = ref.integers(0, size * size, size=n)
        np.testing.assert_array_equal(agents, np.stack(np.divmod(cells, size), axis=-1))
        assert rng.random() == ref.random()             # nothing else was drawn

        rng, ref = np.random.default_rng(seed), np.random.default_rng(seed)
        moved, moved_goals = core.sample_layout(rng, curriculum)
        np.testing.assert_array_equal(moved_goals, core.sample_layout(ref, plain)[1])
        share = ref.uniform(0.0, 0.7)
        picked = ref.random(n) < share
        perm = ref.permutation(n)
        np.testing.assert_array_equal(moved[~picked], agents[~picked])
        np.testing.assert_array_equal(moved[picked], goals[perm[picked]])
        assert len({tuple(c) for c in moved[picked].tolist()}) == picked.sum()


def test_share_of_agents_started_on_goals_runs_from_none_to_p():
    """Each agent starts on a goal with probability u ~ U(0, p), so p / 2 on average, and
    the episodes' shares cover [0, p]; a 30x30 grid keeps the uniform agents off the goals
    (each lands on one with probability n / 900)."""
    n, size, p, resets = 8, 30, 0.6, 3000
    config = core.CoverageConfig(num_agents=n, grid_size=size, layout="fixed",
                                 start_on_goals=p)
    rng = np.random.default_rng(0)
    shares = np.array([(core.goal_distances(*core.sample_layout(rng, config)) == 0).mean()
                       for _ in range(resets)])
    # E[share] = p/2 + (1 - p/2) n/900; one reset's share varies by at most 1
    expected = p / 2 + (1 - p / 2) * n / size**2
    assert abs(shares.mean() - expected) < 4 * shares.std() / np.sqrt(resets)
    assert shares.min() == 0.0 and shares.max() >= 0.75      # P(>= 6 of 8 picked) = 0.058
    none = core.CoverageConfig(num_agents=n, grid_size=size, layout="fixed")
    plain = np.array([(core.goal_distances(*core.sample_layout(rng, none)) == 0).mean()
                      for _ in range(resets)])
    assert plain.mean() < 0.02
