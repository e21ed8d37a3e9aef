"""benchmarks/predator_prey_failures.py: the clamped controller keeps the failed predators
at stay, no failures replay ``spnpolicy evaluate``, and the script writes its tables."""

import json

import pytest

import spnpolicy
from spnpolicy.envs.predator_prey_core import STAY
from spnpolicy.evaluate import evaluate_saved_run
from spnpolicy.inference import load_run_config
from tests.run_helpers import load_script

SMALL = dict(num_agents=3, num_prey=1, grid_size=3, max_steps=10, punishment=2.0)
TINY = dict(total_steps=256, num_envs=8, learning_starts=64, batch_size=16, eval_interval=256,
            eval_episodes=2, verbose=False, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("failures")
    spnpolicy.train("spn-ac", "predator-prey", seed=0, out_dir=root / "spn", env_kwargs=SMALL,
                    acting="policy", policy_hidden=(16,), critic_hidden=(16,),
                    critic_payoff_hidden=8, width=4, **TINY)
    spnpolicy.train("dcg", "predator-prey", seed=1, out_dir=root / "dcg", env_kwargs=SMALL,
                    **TINY)
    return root / "spn", root / "dcg"


def test_without_failures_both_controllers_replay_evaluate(runs, tmp_path):
    bench = load_script("benchmarks/predator_prey_failures.py")
    bench.main([str(r) for r in runs] + ["--failure-prob", "0", "--episodes", "6",
                                         "--out", str(tmp_path)])
    result = json.loads((tmp_path / "failures.json").read_text())
    assert [r["algo"] for r in result["records"]] == ["spn-ac (critics)", "dcg"]
    for record, run in zip(result["records"], runs):
        acting = "critics" if record["algo"].startswith("spn-ac") else None
        greedy = evaluate_saved_run(run, 6, acting=acting)["greedy"]["return_mean"]
        assert record["plain"]["return_mean"] == record["clamped"]["return_mean"] == greedy
    assert set(result["summary"]) == {"spn-ac (critics)", "dcg"}
    assert "| dcg | 1 |" in (tmp_path / "failures.md").read_text()


@pytest.mark.parametrize("which", [0, 1])
def test_the_clamped_controller_keeps_a_broken_predator_at_stay(runs, which):
    bench = load_script("benchmarks/predator_prey_failures.py")
    _, agent = bench.team(runs[which])
    chosen = []
    best = agent.best
    agent.best = lambda values: chosen.append(best(values)) or chosen[-1]
    bench.play(agent, load_run_config(runs[which]), "clamped", 0.0, [1], 4, 0)
    assert chosen and all((c[:, 1] == STAY).all() for c in chosen)
    with pytest.raises(SystemExit, match="--broken 3: the team has 3 predators"):
        bench.play(agent, load_run_config(runs[which]), "plain", 0.0, [3], 4, 0)


def test_a_team_without_a_factor_graph_q_is_refused_by_name(tmp_path):
    bench = load_script("benchmarks/predator_prey_failures.py")
    run = tmp_path / "vdn"
    spnpolicy.train("vdn", "predator-prey", seed=0, out_dir=run, env_kwargs=SMALL, **TINY)
    with pytest.raises(SystemExit, match="vdn does not act by a factor-graph Q"):
        bench.team(run)
