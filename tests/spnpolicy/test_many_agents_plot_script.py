"""benchmarks/many_agents_plot.py: rows per team size and algorithm read off saved runs, the
cost rows of a many_agents_cost.py file, and bad input."""

import json
from pathlib import Path

import pytest

import spnpolicy
from spnpolicy.training.rundir import RunDir
from tests.run_helpers import load_script

plot = load_script("benchmarks/many_agents_plot.py")
COST = Path(__file__).resolve().parents[2] / "benchmarks/results/many-agents/cost_agents_cpu.json"


def _train(out, algo, num_agents, seed):
    spnpolicy.train(algo, "coverage", seed=seed, total_steps=64, num_envs=8, out_dir=out,
                    env_kwargs=dict(num_agents=num_agents, grid_size=4, max_steps=6),
                    learning_starts=32, batch_size=16, eval_interval=32, eval_episodes=2,
                    verbose=False, progress=False)
    return RunDir(out).read_history()


def test_rows_per_team_size_and_algorithm(tmp_path):
    histories = {(algo, n, seed): _train(tmp_path / f"{algo}-{n}-{seed}", algo, n, seed)
                 for algo, n, seed in [("spn-ac", 2, 0), ("spn-ac", 2, 1), ("vdn", 2, 0),
                                       ("vdn", 3, 0)]}
    out = tmp_path / "table"
    summary = plot.main([str(tmp_path), "--cost", str(COST), "--out", str(out)])

    rows = {(r["algo"], r["num_agents"]): r for r in summary["learning"]}
    assert set(rows) == {("spn-ac", 2), ("vdn", 2), ("vdn", 3)}
    spn = rows["spn-ac", 2]
    assert spn["seeds"] == [0, 1] and spn["steps"] == [64]
    finals = [histories["spn-ac", 2, s][-1] for s in (0, 1)]
    assert spn["success"]["value"] == pytest.approx(sum(f["success_rate"] for f in finals) / 2)
    assert spn["final_potential"]["value"] == pytest.approx(
        sum(f["final_potential"] for f in finals) / 2)
    assert rows["vdn", 3]["final_potential"]["value"] == pytest.approx(
        histories["vdn", 3, 0][-1]["final_potential"])
    assert rows["vdn", 3]["success"]["ci95"] == [None, None]      # one seed: no interval

    cost = json.loads(COST.read_text())
    assert {(r["num_agents"], r["algo"]): r["env_steps_per_s"] for r in summary["cost"]} == {
        (team["num_agents"], algo): team[algo]["env_steps_per_s"]
        for team in cost["teams"] for algo in ("spn-ac", "vdn")}
    assert json.loads(out.with_suffix(".json").read_text()) == summary
    assert out.with_suffix(".png").stat().st_size > 0
    assert out.with_suffix(".md").read_text().count("\n| 2 |") == 2


def test_a_warm_started_run_is_its_own_row(tmp_path):
    _train(tmp_path / "source", "vdn", 2, 0)
    spnpolicy.train("vdn", "coverage", seed=0, total_steps=64, num_envs=8,
                    out_dir=tmp_path / "warm", init_from=tmp_path / "source",
                    env_kwargs=dict(num_agents=2, grid_size=4, max_steps=6),
                    learning_starts=32, batch_size=16, eval_interval=32, eval_episodes=2,
                    verbose=False, progress=False)
    summary = plot.main([str(tmp_path), "--out", str(tmp_path / "t")])
    assert [(r["algo"], r["seeds"]) for r in summary["learning"]] == [
        ("vdn", [0]), ("vdn (warm start)", [0])]


def test_a_warm_start_that_kept_the_critics_fresh_is_named_so(tmp_path):
    # the critics read one-hot agent ids, which do not fit a larger team: kept fresh
    config = dict(total_steps=64, num_envs=8, learning_starts=32, batch_size=16,
                  eval_interval=32, eval_episodes=2, param_head="agents", critic_input="agents",
                  factor_graph="random", num_factors=2, verbose=False, progress=False)
    env = dict(grid_size=4, max_steps=6, observation="nearest", neighbours=1)
    spnpolicy.train("spn-ac", "coverage", seed=0, out_dir=tmp_path / "source",
                    env_kwargs=env | {"num_agents": 2}, **config)
    spnpolicy.train("spn-ac", "coverage", seed=0, out_dir=tmp_path / "warm",
                    env_kwargs=env | {"num_agents": 3}, init_from=tmp_path / "source",
                    init_partial=True, **config)
    summary = plot.main([str(tmp_path), "--out", str(tmp_path / "t")])
    assert [(r["algo"], r["num_agents"]) for r in summary["learning"]] == [
        ("spn-ac", 2), ("spn-ac (warm start, fresh critics)", 3)]


def test_a_path_without_runs_is_one_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        plot.main([str(tmp_path), "--out", str(tmp_path / "t")])
    assert exit_.value.code == 2
    assert "holds no run directory" in capsys.readouterr().err


def test_at_reads_a_team_size_at_an_equal_budget(tmp_path):
    history = _train(tmp_path / "run", "vdn", 2, 0)
    summary = plot.main([str(tmp_path), "--at", "2=40", "--out", str(tmp_path / "t")])
    (row,) = summary["learning"]
    at_32 = next(h for h in history if h["step"] == 32)
    assert row["steps"] == [32]
    assert row["final_potential"]["value"] == pytest.approx(at_32["final_potential"])


def test_a_bad_at_is_one_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        plot.main([str(tmp_path), "--at", "2:40", "--out", str(tmp_path / "t")])
    assert exit_.value.code == 2
    assert "--at takes N=STEPS" in capsys.readouterr().err


def test_runs_on_another_critic_graph_are_their_own_rows(tmp_path):
    config = dict(total_steps=64, num_envs=8, learning_starts=32, batch_size=16,
                  eval_interval=32, eval_episodes=2, critic_input="agents", mode_guidance=0.0,
                  verbose=False, progress=False)
    env = dict(num_agents=3, grid_size=4, max_steps=6, observation="nearest", neighbours=1)
    for name, graph in (("random", dict(factor_graph="random", num_factors=2)),
                        ("nearest", dict(factor_graph="nearest", neighbours=1)),
                        ("siblings", dict(factor_graph="nearest", neighbours=1,
                                          param_head="agents", sibling_pairs=True)),
                        ("none", dict(factor_graph="none")),
                        ("centred", dict(factor_graph="nearest", neighbours=1,
                                         critic_centred=True))):
        spnpolicy.train("spn-ac", "coverage", seed=0, out_dir=tmp_path / name, env_kwargs=env,
                        **config, **graph)
    summary = plot.main([str(tmp_path), "--out", str(tmp_path / "t")])
    assert [(r["algo"], r["seeds"]) for r in summary["learning"]] == [
        ("spn-ac", [0]), ("spn-ac (nearest pairs)", [0]),
        ("spn-ac (nearest pairs, centred critics)", [0]),
        ("spn-ac (nearest pairs, sibling pairs)", [0]), ("spn-ac (unary critics)", [0])]
