"""benchmarks/many_agents_credit.py: its rows' rewards against brute force, a small fit that
must learn who did what, and the records it writes."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import spnpolicy

from spnpolicy.envs import coverage_core as core
from spnpolicy.inference import load_agent, load_run_config
from spnpolicy.training import Runner, make_vec_env
from tests.run_helpers import ROOT, load_script

credit = load_script("benchmarks/many_agents_credit.py")


def _best_cost(agents, goals):
    return min(np.abs(agents - goals[list(p)]).sum()
               for p in itertools.permutations(range(len(goals))))


@pytest.mark.parametrize("n", [1, 3, 4])
def test_progress_rows_against_brute_force(n):
    config = credit.coverage_config(n, 5)
    obs, actions, reward, states = credit.progress_rows(config, 40, np.random.default_rng(n))
    agents, goals = core.state_positions(states, config)
    assert obs.shape == (40, n, config.obs_dim) and actions.shape == (40, n)
    assert (goals == config.fixed_goals()).all()
    np.testing.assert_array_equal(obs, core.observations(states, config))
    for row in range(40):
        after = np.clip(agents[row] + core.MOVES[actions[row]], 0, 4)
        expected = (_best_cost(agents[row], goals[row]) - _best_cost(after, goals[row])) / 5
        assert reward[row] == pytest.approx(expected)


@pytest.mark.parametrize("epsilon", [0.0, 0.3])
def test_behaviour_stays_put_unless_it_explores(epsilon):
    config = credit.coverage_config(4, 6)
    _, actions, reward, _ = credit.progress_rows(config, 4000, np.random.default_rng(0),
                                                 epsilon)
    # an action is 0 when it stays put, or when its uniform draw was 0 (1 in 6)
    assert (actions != 0).mean() == pytest.approx(epsilon * 5 / 6, abs=0.01)
    if epsilon == 0:
        assert (reward == 0).all()


def test_held_agents_stand_on_distinct_goals():
    config = credit.coverage_config(6, 8)
    _, _, _, states = credit.progress_rows(config, 3000, np.random.default_rng(0), held=0.6)
    agents, goals = core.state_positions(states, config)
    on = (agents[:, :, None] == goals[:, None]).all(-1)                 # [R, agent, goal]
    # 0.6 of the agents are placed on a goal; a uniform cell hits one with chance 6 / 64
    assert on.any(-1).mean() == pytest.approx(0.6 + 0.4 * 6 / 64, abs=0.02)
    placed = on.sum(1)
    assert (placed <= 1).mean() > 0.95     # two agents on one goal only by a uniform draw


def test_one_agent_reward_is_its_own_progress():
    config = credit.coverage_config(1, 6)
    _, actions, reward, states = credit.progress_rows(config, 50, np.random.default_rng(0))
    agents, goals = core.state_positions(states, config)
    after = np.clip(agents[:, 0] + core.MOVES[actions[:, 0]], 0, 5)
    own = (np.abs(agents[:, 0] - goals[:, 0]).sum(-1) - np.abs(after - goals[:, 0]).sum(-1)) / 6
    np.testing.assert_allclose(reward, own)


def test_a_small_fit_learns_who_did_what():
    record = credit.fit(credit.coverage_config(5, 5), rows=3000, batch=64, updates=(1, 600),
                        hidden=(32, 32))
    first, last = record["curve"]
    assert [first["updates"], last["updates"]] == [1, 600]
    assert last["loss"] < first["loss"]
    assert last["joint"] > record["uniform"] + 0.25, record


def test_a_small_fit_on_nearest_pairs_learns_who_did_what():
    record = credit.fit(credit.coverage_config(5, 5, "nearest"), rows=3000, batch=64,
                        updates=(1, 600), hidden=(32, 32), pairs="nearest")
    first, last = record["curve"]
    assert record["pairs"] == "nearest" and record["one_cell"] == 0.2
    assert last["loss"] < first["loss"]
    assert last["joint_stray"] > record["uniform_stray"] + 0.25, record
    assert isinstance(last["margin_stray"], float)


def test_stray_margin_against_a_loop():
    rng = np.random.default_rng(1)
    local = torch.as_tensor(rng.normal(size=(30, 4, 6)))
    oracle = torch.as_tensor(rng.random((30, 4, 6)) < 0.3)
    stray = torch.as_tensor(rng.random((30, 4)) < 0.6)
    best = torch.as_tensor(rng.integers(0, 6, (30, 4)))

    class Values:
        def argmax(self):
            return best

        def local_values(self, actions):
            assert torch.equal(actions, best)
            return local

    want = [max(local[e, i, a].item() for a in range(6) if oracle[e, i, a])
            - max(local[e, i, a].item() for a in range(6) if (core.MOVES[a] == 0).all())
            for e in range(30) for i in range(4) if stray[e, i] and oracle[e, i].any()]
    assert credit.stray_margin(Values(), oracle, stray) == pytest.approx(np.mean(want),
                                                                          abs=1e-5)
    assert credit.stray_margin(Values(), oracle, torch.zeros(30, 4, dtype=torch.bool)) is None


@pytest.mark.parametrize("observation", ["egocentric", "relative"])
def test_a_small_moves_fit_reads_the_oracle(observation):
    config = credit.coverage_config(3, 5, observation)
    record = credit.fit_moves(config, rows=2000, batch=64, updates=(1, 800), hidden=(32, 32))
    assert (record["fit"], record["observation"]) == ("moves", observation)
    first, last = record["curve"]
    assert last["loss"] < first["loss"]
    assert last["moves"] > record["uniform"] + 0.3, record


def test_main_writes_one_record_per_size(tmp_path):
    out = tmp_path / "credit.json"
    records = credit.main(["--agents", "8", "--rows", "300", "400", "--updates", "3",
                           "--batch", "16", "--out", str(out)])
    assert json.loads(out.read_text()) == records
    assert [(r["fit"], r["agents"], r["grid"], r["rows"]) for r in records] == [
        ("critic", 8, 11, 300), ("critic", 8, 11, 400)]
    for record in records:
        assert 0 < record["uniform"] < 1 and record["curve"][0]["updates"] == 3
        assert 0 <= record["curve"][0]["joint"] <= 1


def test_main_runs_each_fit_and_observation(tmp_path):
    records = credit.main(["--agents", "8", "--rows", "200", "--updates", "2", "--batch", "8",
                           "--fit", "critic", "moves", "--observation", "egocentric", "relative",
                           "--out", str(tmp_path / "credit.json")])
    assert [(r["fit"], r["observation"]) for r in records] == [
        ("critic", "egocentric"), ("critic", "relative"), ("moves", "egocentric"),
        ("moves", "relative")]


def test_critic_ids_and_rates_give_one_critic_record_each(tmp_path):
    records = credit.main(["--agents", "8", "--rows", "200", "--updates", "2", "--batch", "8",
                           "--fit", "critic", "moves", "--critic-ids", "on", "off",
                           "--lr", "1e-3", "1e-2", "--out", str(tmp_path / "credit.json")])
    assert [(r["fit"], r.get("agent_ids"), r.get("lr")) for r in records] == [
        ("critic", True, 1e-3), ("critic", True, 1e-2), ("critic", False, 1e-3),
        ("critic", False, 1e-2), ("moves", None, None)]
    # the same rows and seed: only the network's input or step size differs, so fits part
    curves = [str(r["curve"]) for r in records[:4]]
    assert len(set(curves)) == 4
    assert len({r["reward_std"] for r in records[:4]}) == 1


@pytest.mark.parametrize("args", [["--rows", "0"], ["--batch", "0"], ["--updates", "0"],
                                  ["--agents", "7"], ["--fit", "policy"],
                                  ["--observation", "absolute"], ["--epsilon", "1.5"],
                                  ["--held", "-0.1"], ["--critic-ids", "maybe"],
                                  ["--lr", "0"]])
def test_bad_arguments_are_refused(args, tmp_path):
    with pytest.raises(SystemExit):
        credit.main([*args, "--out", str(tmp_path / "x.json")])


def test_rows_from_a_pool_of_cells_take_their_cells_from_it():
    config = credit.coverage_config(3, 5)
    pool = np.random.default_rng(1).integers(0, 5, (7, 3, 2))
    _, _, _, states = credit.progress_rows(config, 500, np.random.default_rng(0), held=0.9,
                                           cells=pool)
    agents, _ = core.state_positions(states, config)
    drawn = (agents[:, None] == pool[None]).all((-1, -2))                # [R, pool row]
    assert drawn.any(1).all()                    # every row is a pool row, held unused
    assert drawn.any(0).all()                    # and every pool row is drawn


@pytest.mark.parametrize("uniform_actions", [False, True])
def test_replay_rows_are_stored_rows_with_their_progress(uniform_actions):
    config = credit.coverage_config(4, 6)
    _, actions, reward, states = credit.progress_rows(config, 30, np.random.default_rng(0))
    obs, joint, progress, drawn = credit.replay_rows(config, states, actions, 200,
                                                     np.random.default_rng(1), uniform_actions)
    np.testing.assert_array_equal(obs, core.observations(drawn, config))
    match = (drawn[:, None] == states[None]).all(-1)                     # [200, 30]
    assert match.any(1).all()
    row = match.argmax(1)
    if uniform_actions:
        assert (joint != actions[row]).any()
        agents, goals = core.state_positions(drawn, config)
        after = np.clip(agents + core.MOVES[joint], 0, 5)
        expected = [(_best_cost(a, g) - _best_cost(b, g)) / 6
                    for a, b, g in zip(agents, after, goals)]
        np.testing.assert_allclose(progress, expected, atol=1e-6)
    else:
        np.testing.assert_array_equal(joint, actions[row])
        np.testing.assert_array_equal(progress, reward[row])


def test_shares_over_stray_agents_against_a_loop():
    rng = np.random.default_rng(0)
    oracle = torch.as_tensor(rng.random((40, 4, 6)) < 0.3)
    stray = torch.as_tensor(rng.random((40, 4)) < 0.4)

    class Values:
        unary = torch.as_tensor(rng.normal(size=(40, 4, 6)))

        def argmax(self):
            return torch.as_tensor(rng.integers(0, 6, (40, 4)))

    values = Values()
    joint_actions = values.argmax()
    values.argmax = lambda: joint_actions
    shares = credit.best_shares(values, oracle, stray)
    uniform = credit.uniform_shares(oracle, stray)
    picked = {"joint": joint_actions, "unary": values.unary.argmax(-1)}
    for name, actions in picked.items():
        hits = [bool(oracle[e, i, actions[e, i]]) for e in range(40) for i in range(4)
                if stray[e, i]]
        assert shares[f"{name}_stray"] == pytest.approx(np.mean(hits), abs=1e-4)
    means = [oracle[e, i].float().mean().item() for e in range(40) for i in range(4)
             if stray[e, i]]
    assert uniform["uniform_stray"] == pytest.approx(np.mean(means), abs=1e-4)
    none = credit.best_shares(values, oracle, torch.zeros(40, 4, dtype=torch.bool))
    assert none["joint_stray"] is None and none["unary_stray"] is None


def _tiny_run(out, observation="egocentric", critic_input="agents", layout="random",
              **config):
    spnpolicy.train("spn-ac", "coverage", seed=0, total_steps=96, out_dir=out,
                    env_kwargs=dict(num_agents=3, grid_size=4, max_steps=6,
                                    observation=observation, layout=layout),
                    learning_starts=48, batch_size=16, eval_interval=96, eval_episodes=2,
                    param_head="agents", critic_input=critic_input, verbose=False,
                    progress=False, **config)
    return out


def test_runs_score_a_saved_critic(tmp_path):
    run = _tiny_run(tmp_path / "run")
    out = tmp_path / "runs.json"
    records = credit.main(["--runs", str(run), "--held", "0", "0.6", "--out", str(out)])
    assert json.loads(out.read_text()) == records
    assert [(r["fit"], r["agents"], r["grid"], r["held"]) for r in records] == [
        ("run", 3, 4, 0.0), ("run", 3, 4, 0.6)]
    for record in records:
        assert all(0 <= record[key] <= 1 for key in ("joint", "unary", "uniform"))


def test_runs_the_score_cannot_read_are_refused(tmp_path):
    with pytest.raises(ValueError, match="egocentric"):
        credit.score_run(_tiny_run(tmp_path / "relative", observation="relative"))
    with pytest.raises(ValueError, match="global state"):
        credit.score_run(_tiny_run(tmp_path / "state", critic_input="state"))


def test_a_run_directory_that_is_not_one_exits_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "many_agents_credit.py"),
                             "--runs", str(tmp_path / "missing"), "--out",
                             str(tmp_path / "x.json")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "missing" in result.stderr


def test_greedy_cells_are_the_runs_own_episodes(tmp_path):
    run = _tiny_run(tmp_path / "run", layout="fixed")
    cells = credit.greedy_cells(run, episodes=3, seed=5)
    assert cells.shape == (3 * 6, 3, 2)
    assert ((cells >= 0) & (cells < 4)).all()
    np.testing.assert_array_equal(cells, credit.greedy_cells(run, episodes=3, seed=5))
    # the first rows are the seeded resets, the next ones the greedy policy's first step
    saved = load_run_config(run)
    config = core.CoverageConfig(**saved["env_kwargs"])
    envs = make_vec_env("coverage", 3, **saved["env_kwargs"])
    runner = Runner(envs, observations=True)
    runner.reset(seed=5)
    start, _ = core.state_positions(runner.state, config)
    actions = np.asarray(load_agent(run).act(runner.obs))
    going = runner.step(actions).terminated == 0
    envs.close()
    np.testing.assert_array_equal(cells[:3], start)
    after = core.move(start, actions, config.move_table(), config.grid_size)
    np.testing.assert_array_equal(cells[3:6][going], after[going])


def test_greedy_fits_and_scores_on_the_runs_cells(tmp_path):
    run = _tiny_run(tmp_path / "run", layout="fixed")
    out = tmp_path / "greedy.json"
    records = credit.main(["--greedy", str(run), "--greedy-episodes", "4", "--rows", "200",
                           "--updates", "2", "--batch", "8", "--fit", "critic", "moves",
                           "--out", str(out)])
    assert json.loads(out.read_text()) == records
    assert [(r["fit"], r["agents"], r["grid"], r["states"]) for r in records] == [
        ("run", 3, 4, "greedy"), ("critic", 3, 4, "greedy"), ("moves", 3, 4, "greedy")]
    run_record, critic_record, _ = records
    for key in ("joint", "unary", "uniform", "joint_stray", "unary_stray", "uniform_stray"):
        value = run_record[key]
        assert value is None or 0 <= value <= 1
    assert 0 < critic_record["uniform"] < 1 and critic_record["run"] == str(run)


def test_greedy_refuses_a_run_with_random_goals(tmp_path):
    run = _tiny_run(tmp_path / "run")
    with pytest.raises(SystemExit):
        credit.main(["--greedy", str(run), "--out", str(tmp_path / "x.json")])
    with pytest.raises(ValueError, match="fixed goals"):
        credit.greedy_team(run)


def test_greedy_fits_on_the_runs_replay(tmp_path):
    run = _tiny_run(tmp_path / "run", layout="fixed")
    states, actions = credit.run_replay(run)
    assert len(states) == len(actions) > 0 and actions.shape[1] == 3
    records = credit.main(["--greedy", str(run), "--greedy-episodes", "2", "--rows", "100",
                           "--updates", "2", "--batch", "8", "--train-from", "cells", "replay",
                           "replay-states", "--out", str(tmp_path / "greedy.json")])
    assert [(r["fit"], r.get("train_from")) for r in records] == [
        ("run", None), ("critic", "cells"), ("critic", "replay"), ("critic", "replay-states")]


def test_replay_greedy_keeps_the_rows_of_the_greedy_copies(tmp_path):
    """The replay's row i came from copy i % num_envs (its first rows are the copies'
    seeded resets, in order), and replay-greedy keeps the first greedy_envs * num_envs."""
    run = _tiny_run(tmp_path / "run", layout="fixed", num_envs=4, greedy_envs=0.5)
    states, actions = credit.run_replay(run)
    saved = load_run_config(run)
    envs = make_vec_env("coverage", 4, seed=0, **saved["env_kwargs"])
    np.testing.assert_array_equal(states[:4], envs.reset(seed=0)[0])
    kept_states, kept_actions = credit.run_replay(run, greedy_copies=True)
    keep = np.arange(len(states)) % 4 < 2
    np.testing.assert_array_equal(kept_states, states[keep])
    np.testing.assert_array_equal(kept_actions, actions[keep])
    records = credit.main(["--greedy", str(run), "--greedy-episodes", "2", "--rows", "100",
                           "--updates", "2", "--batch", "8", "--train-from", "replay-greedy",
                           "--out", str(tmp_path / "greedy.json")])
    assert [(r["fit"], r.get("train_from")) for r in records] == [
        ("run", None), ("critic", "replay-greedy")]
    with pytest.raises(ValueError, match="replay-greedy needs greedy_envs above 0"):
        credit.run_replay(_tiny_run(tmp_path / "plain", layout="fixed"), greedy_copies=True)


@pytest.mark.parametrize("args", [["--train-from", "replay"],
                                  ["--train-from", "replay", "--fit", "critic", "moves"]])
def test_train_from_needs_greedy_and_the_critic_fit(args, tmp_path, capsys):
    extra = [] if "moves" not in args else ["--greedy", str(tmp_path / "run")]
    with pytest.raises(SystemExit):
        credit.main([*args, *extra, "--out", str(tmp_path / "x.json")])
    assert "needs --greedy and --fit critic alone" in capsys.readouterr().err
