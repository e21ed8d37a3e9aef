"""benchmarks/many_agents_probe.py: the oracle moves against brute force, and the shares it
reports for a saved run."""

import itertools
import json

import numpy as np
import pytest

import torch

import spnpolicy
from spnpolicy.algos.policies import JointPolicy
from spnpolicy.envs import coverage_core as core
from spnpolicy.training import Runner, make_vec_env
from tests.run_helpers import load_script

probe = load_script("benchmarks/many_agents_probe.py")


def _state(agents, goals, config):
    covered = core.goal_distances(agents, goals) == 0
    return core.global_state(agents, goals, covered, 0, config)


def _moves_toward(agents, goals, size):
    """``[n, 6]``: each action takes agent i closer to ``goals[i]``, or keeps it there."""
    now = np.abs(agents - goals).sum(-1)
    after = np.stack([np.abs(np.clip(agents + move, 0, size - 1) - goals).sum(-1)
                      for move in core.MOVES], -1)
    return (after < now[:, None]) | ((now[:, None] == 0) & (after == 0))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_oracle_moves_follow_a_best_assignment(n):
    config = core.CoverageConfig(n, 5, 20)
    rng = np.random.default_rng(n)
    agents, goals = rng.integers(0, 5, size=(2, 30, n, 2))
    goals[:, :, 0] = np.arange(n)                       # distinct goal cells
    oracle = probe.oracle_moves(_state(agents, goals, config), config)
    for e in range(30):
        costs = {p: np.abs(agents[e] - goals[e, list(p)]).sum()
                 for p in itertools.permutations(range(n))}
        best = [p for p, cost in costs.items() if cost == min(costs.values())]
        assert any((_moves_toward(agents[e], goals[e, list(p)], 5) == oracle[e]).all()
                   for p in best)


def test_an_agent_on_its_goal_must_stay():
    config = core.CoverageConfig(1, 3, 5)
    agents = np.array([[[1, 1]]])
    oracle = probe.oracle_moves(_state(agents, agents.copy(), config), config)
    assert oracle[0, 0].tolist() == [True, False, False, False, False, True]


def test_shares_of_a_saved_run(tmp_path):
    spnpolicy.train("spn-ac", "coverage", seed=0, total_steps=96, out_dir=tmp_path,
                    env_kwargs=dict(num_agents=3, grid_size=4, max_steps=6,
                                    observation="egocentric"),
                    learning_starts=48, batch_size=16, eval_interval=96, eval_episodes=2,
                    param_head="agents", critic_input="agents", verbose=False, progress=False)
    out = tmp_path / "probe.json"
    rows = probe.main([str(tmp_path), "--episodes", "4", "--out", str(out)])
    assert json.loads(out.read_text()) == rows
    shares = rows[0]["oracle_share"]
    assert set(shares) == {"policy", "critics", "uniform"}
    assert all(0.0 <= value <= 1.0 for value in shares.values())
    assert 0.0 < shares["uniform"] < 1.0
    stray = rows[0]["oracle_share_stray"]       # episodes start with agents on no goal
    assert set(stray) == set(shares)
    assert all(0.0 <= value <= 1.0 for value in stray.values())
    mass = rows[0]["policy_mass_stray"]
    assert set(mass) == {"oracle", "still"} and 0.0 <= mass["oracle"] <= 1.0
    assert 0.0 <= mass["still"] <= 1.0 and mass["oracle"] + mass["still"] <= 1.0 + 1e-9
    response = rows[0]["critics_response_stray"]
    assert set(response) == {"oracle", "still"}
    assert 0.0 <= response["oracle"] <= 1.0 and 0.0 <= response["still"] <= 1.0
    margin = rows[0]["critics_margin_stray"]
    assert set(margin) == {"mean", "median", "positive", "unary", "pairs", "one_cell"}
    assert 0.0 <= margin["positive"] <= 1.0 and margin["one_cell"] == 0.25
    assert margin["unary"] + margin["pairs"] == pytest.approx(margin["mean"], abs=1e-9)
    failures = rows[0]["failures"]
    assert 0 <= failures["episodes"] <= 4
    assert set(failures) == {"episodes", "stray", "stacked", "lost", "still", "gap",
                             "last_change", "twins", "cycled", "unseen"}
    assert failures["unseen"] is None                   # egocentric: every goal is seen
    if failures["episodes"]:
        low, median, high = failures["last_change"]
        assert 0 <= low <= median <= high <= 6
        assert 0.0 <= failures["twins"] <= 1.0 and 0.0 <= failures["cycled"] <= 1.0
    twins = rows[0]["twins"]
    assert set(twins) == {"pair_steps", "same_action", "p_same", "p_same_product", "siblings"}
    assert twins["siblings"] is None                    # no sibling pairs
    if twins["pair_steps"]:
        assert all(0.0 <= twins[key] <= 1.0 for key in ("same_action", "p_same",
                                                        "p_same_product"))


def _sibling_pairs_run(path):
    """A tiny spn-ac run with sibling pairs and nearest-pair critics, 4 agents on 3x3."""
    spnpolicy.train("spn-ac", "coverage", seed=0, total_steps=96, out_dir=path,
                    env_kwargs=dict(num_agents=4, grid_size=3, max_steps=6,
                                    observation="nearest"),
                    learning_starts=48, batch_size=16, eval_interval=96, eval_episodes=2,
                    param_head="agents", critic_input="agents", factor_graph="nearest",
                    neighbours=1, sibling_pairs=True, verbose=False, progress=False)


def test_local_values_are_the_critics_mean_with_one_agent_varied(tmp_path):
    _sibling_pairs_run(tmp_path)
    learner = probe.trained_spn_ac(tmp_path)
    envs = make_vec_env("coverage", 5, num_agents=4, grid_size=3, max_steps=6,
                        observation="nearest")
    runner = Runner(envs, observations=True)
    runner.reset(seed=3)
    actions = np.random.default_rng(0).integers(0, 6, size=(5, 4))
    local, unary = probe.local_values(learner, runner.state, runner.obs, actions)
    best = local.argmax(-1)
    envs.close()
    values = learner.critic_values(torch.as_tensor(runner.state), torch.as_tensor(runner.obs))
    np.testing.assert_allclose(unary, values.unary.mean(0).numpy(), atol=1e-6)
    assert np.abs(unary).max() > 0                     # the suites' critics have unary terms
    for i in range(4):
        scores = []
        for a in range(6):
            varied = torch.as_tensor(actions).clone()
            varied[:, i] = a
            scores.append(values.evaluate(varied).mean(0))                   # [E]
        np.testing.assert_allclose(local[:, i], torch.stack(scores, -1).numpy(), atol=1e-5)
        assert np.array_equal(best[:, i], torch.stack(scores, -1).argmax(-1).numpy())
    assert probe.trained_spn_ac(_vdn_run(tmp_path / "vdn")) is None


def _vdn_run(path):
    spnpolicy.train("vdn", "coverage", seed=0, total_steps=64, out_dir=path,
                    env_kwargs=dict(num_agents=2, grid_size=3, max_steps=4),
                    learning_starts=32, batch_size=8, eval_interval=64, eval_episodes=1,
                    verbose=False, progress=False)
    return path


def test_stray_margins_against_a_loop():
    rng = np.random.default_rng(0)
    local = rng.normal(size=(3, 4, 6))
    oracle = rng.random((3, 4, 6)) < 0.3
    oracle[0, 0] = False                                # no oracle move: left out
    stray = rng.random((3, 4)) < 0.7
    stray[0, 0] = True
    want = [max(local[e, i, a] for a in range(6) if oracle[e, i, a])
            - max(local[e, i, a] for a in range(6) if probe.STILL[a])
            for e in range(3) for i in range(4) if stray[e, i] and oracle[e, i].any()]
    np.testing.assert_allclose(probe.stray_margins(local, oracle, stray), want)


def test_stray_margin_parts_against_a_loop():
    rng = np.random.default_rng(1)
    local, unary = rng.normal(size=(2, 3, 5, 6))
    oracle = rng.random((3, 5, 6)) < 0.3
    oracle[0, 0] = False                                # no oracle move: left out
    stray = rng.random((3, 5)) < 0.7
    want = []
    for e in range(3):
        for i in range(5):
            if not (stray[e, i] and oracle[e, i].any()):
                continue
            move = max((a for a in range(6) if oracle[e, i, a]), key=lambda a: local[e, i, a])
            keep = max((a for a in range(6) if probe.STILL[a]), key=lambda a: local[e, i, a])
            part = unary[e, i, move] - unary[e, i, keep]
            want.append((part, local[e, i, move] - local[e, i, keep] - part))
    parts = probe.stray_margin_parts(local, unary, oracle, stray)
    np.testing.assert_allclose(parts, np.array(want).reshape(-1, 2))
    np.testing.assert_allclose(parts.sum(-1), probe.stray_margins(local, oracle, stray))


def test_a_run_on_another_env_is_refused(tmp_path):
    spnpolicy.train("spn-ac", "climbing", seed=0, total_steps=100, out_dir=tmp_path,
                    learning_starts=50, eval_interval=100, verbose=False, progress=False)
    with pytest.raises(ValueError, match="coverage runs"):
        probe.probe(tmp_path)


def _breakdown_by_loops(plan, agents, goals, moved, seen=None):
    """The failure breakdown agent by agent, episode by episode; agent i's planned goal is
    ``goals[e, plan[e, i]]`` and it observes its ``seen`` nearest goals."""
    rows = {"stray": [], "stacked": []}
    lost, still, gap, unseen = [], [], [], []
    for p, a, g, m in zip(plan, agents, goals, moved):
        cells, goal_cells = [tuple(x) for x in a], [tuple(x) for x in g]
        held = [goal in cells for goal in goal_cells]
        on_goal = [cell in goal_cells for cell in cells]
        rows["stray"].append(on_goal.count(False))
        rows["stacked"].append(sum(on_goal) - sum(held))
        for i, cell in enumerate(cells):
            if not on_goal[i]:
                lost.append(held[p[i]])
                still.append(not m[i])
                gap.append(min(abs(cell[0] - goal[0]) + abs(cell[1] - goal[1])
                               for goal, h in zip(goal_cells, held) if not h))
                far = sorted(range(len(goal_cells)), key=lambda j: (
                    abs(cell[0] - goal_cells[j][0]) + abs(cell[1] - goal_cells[j][1]), j))
                unseen.append(all(held[j] for j in far[:seen]))
    out = {key: float(np.mean(v)) for key, v in rows.items()}
    for key, v in (("lost", lost), ("still", still), ("gap", gap)):
        out[key] = float(np.mean(v)) if v else None
    out["unseen"] = float(np.mean(unseen)) if unseen and seen is not None else None
    return out


@pytest.mark.parametrize("seed", range(6))
def test_failure_breakdown_against_loops(seed):
    rng = np.random.default_rng(seed)
    n, size, episodes = int(rng.integers(2, 6)), 4, 20
    goals = np.stack([np.stack(np.unravel_index(rng.choice(size * size, n, replace=False),
                                                (size, size)), -1) for _ in range(episodes)])
    plan = np.stack([rng.permutation(n) for _ in range(episodes)])
    starts = np.take_along_axis(goals, plan[..., None], 1)    # the one zero-cost assignment
    agents = rng.integers(0, size, size=(episodes, n, 2))
    agents[:, 0] = goals[:, 0]                          # one agent on a goal, another beside
    moved = rng.random((episodes, n)) < 0.5
    seen = [None, 1, n][seed % 3]
    got = probe.failure_breakdown(starts, agents, goals, moved, size, seen)
    assert got.pop("episodes") == episodes
    assert got == pytest.approx(_breakdown_by_loops(plan, agents, goals, moved, seen))


@pytest.mark.parametrize("seed", range(4))
def test_unseen_reads_what_nearest_observations_show(seed):
    """A stray agent counts as unseen exactly when every goal in its observation is held."""
    rng = np.random.default_rng(seed)
    config = core.CoverageConfig(6, 5, 20, layout="random", observation="nearest",
                                 neighbours=2)
    agents, goals = (np.stack(part) for part in
                     zip(*(core.sample_layout(rng, config) for _ in range(30))))
    agents[:, :3] = goals[:, rng.permutation(6)[:3]]               # three agents on goals
    obs = core.nearest_observations(_state(agents, goals, config), config)
    held = obs[..., 4: 4 + 3 * 2].reshape(30, 6, 2, 3)[..., 2] == 1  # [E, n, seen]
    stray = obs[..., 3] == 0
    got = probe.failure_breakdown(agents, agents, goals, np.ones((30, 6), bool), 5, seen=2)
    assert got["unseen"] == pytest.approx(held.all(-1)[stray].mean())


def test_failure_breakdown_of_a_taken_goal():
    goals = np.array([[[0, 0], [3, 3], [0, 3]]])
    starts = np.array([[[1, 1], [2, 0], [3, 2]]])       # the one best plan: goals 2, 0, 1
    agents = np.array([[[0, 0], [1, 0], [0, 0]]])       # agents 0 and 2 on goal 0, 1 beside it
    got = probe.failure_breakdown(starts, agents, goals, np.array([[True, False, True]]), 4)
    assert got == {"episodes": 1, "stray": 1.0, "stacked": 1.0, "lost": 1.0, "still": 1.0,
                   "gap": 4.0, "unseen": None}
    assert probe.failure_breakdown(starts, agents, goals, np.array([[True, False, True]]), 4,
                                   seen=1)["unseen"] == 1.0     # its nearest goal 0 is held
    assert probe.failure_breakdown(starts, agents, goals, np.array([[True, False, True]]), 4,
                                   seen=3)["unseen"] == 0.0
    moved_off = probe.failure_breakdown(starts, agents[:, [1, 0, 2]], goals,
                                        np.array([[True, True, True]]), 4)
    assert moved_off["lost"] == 0.0 and moved_off["still"] == 0.0   # agent 0's goal 2 is free
    empty = np.zeros((0, 3, 2), dtype=np.int64)
    none = probe.failure_breakdown(empty, empty, empty, np.zeros((0, 3), dtype=bool), 4)
    assert none["episodes"] == 0 and none["stray"] is None and none["gap"] is None


def test_stray_mass_against_a_loop():
    rng = np.random.default_rng(0)
    marginals = rng.dirichlet(np.ones(6), size=(5, 4))                  # [E, n, 6]
    oracle = rng.random((5, 4, 6)) < 0.4
    stray = rng.random((5, 4)) < 0.5
    expected = np.zeros(2)
    for e, i in itertools.product(range(5), range(4)):
        if stray[e, i]:
            expected += [sum(marginals[e, i, a] for a in range(6) if oracle[e, i, a]),
                         marginals[e, i, 0] + marginals[e, i, 5]]      # noop, stay
    np.testing.assert_allclose(probe.stray_mass(marginals, oracle, stray), expected)


def test_settle_step_is_the_last_change_of_the_agents_on_goals():
    goals = np.array([[0, 0], [2, 2]])
    path = np.array([[[1, 0], [2, 1]],      # 0: none on a goal
                     [[0, 0], [2, 1]],      # 1: agent 0 arrives
                     [[0, 0], [2, 1]],      # 2: same set
                     [[0, 1], [2, 2]],      # 3: agent 0 leaves, agent 1 arrives
                     [[0, 1], [2, 2]]])     # 4: same set
    assert probe.settle_step(path, goals, 3) == 3
    assert probe.settle_step(path[:3], goals, 3) == 1
    assert probe.settle_step(path[[0, 0, 0]], goals, 3) == 0


@pytest.mark.parametrize("seed", range(4))
def test_twin_pairs_against_loops(seed):
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 2, size=(6, 5, 3)).astype(np.float32)   # small alphabet: many twins
    expected = [(e, i, j) for e in range(6) for i in range(5) for j in range(i + 1, 5)
                if (obs[e, i] == obs[e, j]).all()]
    assert [tuple(row) for row in probe.twin_pairs(obs).tolist()] == expected


def test_twins_agree_reads_each_rows_env_and_agents():
    actions = np.array([[0, 1, 0], [2, 2, 5]])
    pairs = np.array([[0, 0, 1], [0, 0, 2], [1, 0, 1], [1, 1, 2]])
    assert probe.twins_agree(actions, pairs).tolist() == [False, True, True, False]


def test_twin_siblings_reads_each_rows_slots():
    siblings = np.array([[0, 1], [2, 3]])
    slot_of = np.array([[0, 1, 2, 3], [3, 0, 1, 2]])     # env 1: agents 0..3 in 3, 0, 1, 2
    pairs = np.array([[0, 0, 1], [0, 1, 2], [1, 0, 3], [1, 1, 2], [1, 0, 1]])
    assert probe.twin_siblings(slot_of, pairs, siblings).tolist() == [True, False, True,
                                                                       True, False]


def test_shares_of_a_run_with_sibling_pairs(tmp_path):
    _sibling_pairs_run(tmp_path)
    row = probe.main([str(tmp_path), "--episodes", "8", "--out", str(tmp_path / "probe.json")])[0]
    assert row["failures"]["unseen"] in (None, 0.0)     # all 4 goals in view: a free one too
    twins = row["twins"]
    assert twins["pair_steps"] > 0                      # 4 agents on 9 cells meet
    # two agents with the nearest (identical) observations are matched first, so a lone
    # twin pair is always held as siblings; three on one cell are not all siblings
    assert 0.5 <= twins["siblings"] <= 1.0


@pytest.mark.parametrize("kind", ["selective", "mean_field"])
def test_twin_agreement_against_enumeration(kind):
    torch.manual_seed(0)
    n, k = 4, 3
    policy = JointPolicy(state_dim=5, num_agents=n, num_actions=k, kind=kind, width=4)
    with torch.no_grad():                # away from the near-uniform start, not one-hot
        for parameter in policy.parameters():
            parameter.mul_(9.0)
    dist = policy.distribution(torch.randn(3, 5))
    joint = torch.tensor(list(itertools.product(range(k), repeat=n)))      # [k^n, n]
    with torch.no_grad():
        p = dist.log_prob(joint[:, None].expand(-1, 3, -1)).exp().double()  # [k^n, E]
    pairs = np.array([[0, 0, 1], [1, 2, 3], [2, 0, 3], [2, 1, 2]])
    with torch.no_grad():
        same, product = (part.double().numpy() for part in probe.twin_agreement(dist, pairs))
    for t, (e, i, j) in enumerate(pairs.tolist()):
        on_diagonal = float(p[joint[:, i] == joint[:, j], e].sum())
        marginal_i = [float(p[joint[:, i] == a, e].sum()) for a in range(k)]
        marginal_j = [float(p[joint[:, j] == a, e].sum()) for a in range(k)]
        assert same[t] == pytest.approx(on_diagonal, abs=1e-6)
        assert product[t] == pytest.approx(np.dot(marginal_i, marginal_j), abs=1e-6)
    if kind == "mean_field":                     # independent agents: no correlation
        np.testing.assert_allclose(same, product, atol=1e-6)
    else:                                        # the joint table is not the product
        assert np.abs(same - product).max() > 0.05


def test_cycled_is_a_repeat_of_the_last_cells():
    step = np.array([[0, 0], [1, 1]])
    path = np.stack([step + t for t in range(5)])                         # never repeats
    assert not probe.cycled(path)
    assert probe.cycled(np.concatenate([path, path[3:4]]))               # back 2 steps
    assert probe.cycled(np.concatenate([path, path[-1:]]))               # stood still
    assert not probe.cycled(np.concatenate([path, path[:1]]), steps=3)   # beyond the window
    assert probe.cycled(np.concatenate([path, path[:1]]), steps=5)
