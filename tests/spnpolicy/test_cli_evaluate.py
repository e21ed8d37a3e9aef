"""``spnpolicy evaluate``, run as a real subprocess on a run trained here."""

import json
import math
import shutil

import pytest

import spnpolicy
from spnpolicy.cli import build_parser, main
from spnpolicy.evaluate import SAVED_RUN_SEED, evaluate_saved_run
from spnpolicy.inference import load_agent
from spnpolicy.training.evaluation import evaluate as play
from spnpolicy.training.vec_env import make_vec_env
from tests.run_helpers import TINY_COVERAGE, run_cli, train_tiny

COVERAGE = TINY_COVERAGE
METRICS = {"return_mean", "return_std", "length_mean", "episodes", "success_rate",
           "final_potential"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("evaluate") / "run")


def evaluate(*args):
    return run_cli("evaluate", *args)


def test_evaluate_prints_and_writes_greedy_random_and_sampled_metrics(run_dir, tmp_path):
    out_file = tmp_path / "deep" / "eval.json"
    out = evaluate(run_dir, "--episodes", "6", "--seed", "3", "--out", out_file, "--stochastic")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record == json.loads(out_file.read_text())
    assert {k: record[k] for k in ("run", "algo", "env", "env_kwargs", "episodes", "seed")} == \
        {"run": str(run_dir), "algo": "spn-ac", "env": "coverage", "env_kwargs": COVERAGE,
         "episodes": 6, "seed": 3}
    for policy in ("greedy", "uniform_random", "stochastic"):
        result = record[policy]
        assert set(result) == METRICS and result["episodes"] == 6
        assert 0 <= result["success_rate"] <= 1 and 1 <= result["length_mean"] <= 5
        assert -3 * 6 / 4 <= result["final_potential"] <= 0   # 3 agents, <= 6 cells each
        assert math.isfinite(result["return_mean"]) and result["return_std"] >= 0
    # the same seed gives the same episodes and actions: the API repeats the command's record
    assert evaluate_saved_run(run_dir, 6, 3, stochastic=True) == record


def test_evaluate_without_stochastic_reads_a_checkpoint_file_too(run_dir):
    record = evaluate_saved_run(run_dir / "checkpoints" / "last.pt", episodes=4)
    assert set(record) == {"run", "algo", "env", "env_kwargs", "episodes", "seed", "acting",
                           "greedy", "uniform_random"}
    assert record["acting"] == "policy"
    assert record["greedy"]["episodes"] == record["uniform_random"]["episodes"] == 4


@pytest.mark.parametrize("case, message", [
    ("missing", "no run directory or checkpoint file at '{path}'"),
    ("empty", "no config.json for '{path}'"),
    ("no checkpoint", "run '{path}' has no checkpoint at {path}/checkpoints/last.pt"),
    ("episodes 0", "--episodes must be an integer >= 1, got 0"),
    ("seed -1", "--seed must be an integer >= 0, got -1"),
])
def test_bad_input_names_itself(run_dir, tmp_path, capsys, case, message):
    path, extra = tmp_path / "run", []
    if case != "missing":
        path.mkdir()
    if case == "no checkpoint":
        shutil.copy(run_dir / "config.json", path / "config.json")
    elif case.startswith(("episodes", "seed")):
        path, extra = run_dir, [f"--{case.split()[0]}", case.split()[1]]
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(path), *extra])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    assert captured.err.startswith("spnpolicy: error: " + message.format(path=path)), captured.err
    assert captured.err.count("\n") == 1


def test_an_unwritable_out_file_is_one_error_line_after_the_printed_record(run_dir, tmp_path,
                                                                           capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(run_dir), "--episodes", "1", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and json.loads(captured.out)["episodes"] == 1
    assert captured.err == f"spnpolicy: error: --out {tmp_path}: cannot write it (Is a " \
        f"directory)\n"


@pytest.mark.parametrize("algo", ["spn-ac", "meanfield-ac"])
def test_a_policy_that_reads_observations_is_evaluated_on_them(tmp_path, algo):
    run = tmp_path / algo
    spnpolicy.train(algo, "coverage", seed=0, out_dir=run, env_kwargs=COVERAGE, total_steps=64,
                    num_envs=8, learning_starts=32, batch_size=16, eval_interval=64,
                    eval_episodes=2, policy_hidden=(16,), critic_hidden=(16,), width=4,
                    param_head="agents", critic_input="agents", verbose=False, progress=False)
    record = evaluate_saved_run(run, episodes=4, stochastic=True)
    agent = load_agent(run)
    assert agent.needs_obs and record["stochastic"]["episodes"] == 4
    envs = make_vec_env("coverage", 4, seed=SAVED_RUN_SEED, **COVERAGE)
    try:
        by_hand = play(lambda state, obs: agent.act(obs), envs, 4, seed=SAVED_RUN_SEED)
    finally:
        envs.close()
    assert record["greedy"] == by_hand


def test_evaluate_acts_by_the_critics_when_told(run_dir):
    out = evaluate(run_dir, "--episodes", "3", "--acting", "critics")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["acting"] == "critics" and record["greedy"]["episodes"] == 3
    assert record == evaluate_saved_run(run_dir, 3, acting="critics")
    bad = evaluate(run_dir, "--acting", "critic")
    assert bad.returncode == 2 and "argument --acting: invalid choice: 'critic'" in bad.stderr


def test_help_describes_evaluate():
    parser = build_parser()
    assert "evaluate a trained run's agent beside uniform random actions" in \
        parser.format_help()
    sub = next(a for a in parser._actions if a.dest == "command").choices["evaluate"]
    text = " ".join(sub.format_help().split())
    for option in ("RUN_DIR", "--episodes", "--seed", "--out", "--stochastic", "--acting",
                   "final_potential", "(default 100)", "(default 12345)"):
        assert option in text, option
