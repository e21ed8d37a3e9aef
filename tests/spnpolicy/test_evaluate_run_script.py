"""benchmarks/evaluate_run.py, the wrapper of ``spnpolicy evaluate``: a finished run's greedy
evaluation beside uniform random, on an agent that reads per-agent observations (vdn)."""

import json

import spnpolicy
from tests.run_helpers import load_script


def _script():
    return load_script("benchmarks/evaluate_run.py")


def test_evaluates_a_run_and_the_random_policy_on_the_same_episodes(tmp_path, capsys):
    env_kwargs = dict(num_agents=2, grid_size=3, max_steps=6, layout="fixed")
    spnpolicy.train("vdn", "coverage", seed=0, total_steps=200, out_dir=tmp_path / "run",
                    env_kwargs=env_kwargs, learning_starts=64, eval_interval=200,
                    eval_episodes=4, progress=False, verbose=False)
    out = tmp_path / "eval.json"
    assert _script().main([str(tmp_path / "run"), "--episodes", "12", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record == json.loads(capsys.readouterr().out)
    assert (record["algo"], record["env_kwargs"]) == ("vdn", env_kwargs)
    for policy in ("greedy", "uniform_random"):
        result = record[policy]
        assert result["episodes"] == 12
        assert -2 * 2 * 2 / 3 <= result["final_potential"] <= 0   # 2 agents, <= 4 cells each
        assert 0 <= result["success_rate"] <= 1
