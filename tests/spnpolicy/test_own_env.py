"""Your own environment: a ParallelEnv factory (callable), register_env, module:factory
names, from Python, the CLI and a bench worker's registry."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import spnpolicy
from spnpolicy.bench.runner import _init_worker, _picklable_envs
from spnpolicy.envs import registry
from spnpolicy.envs.registry import make_env, register_env, registered_envs

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
from own_env import Rendezvous, rendezvous  # noqa: E402

TINY = dict(total_steps=96, num_envs=8, learning_starts=48, batch_size=16, eval_interval=96,
            eval_episodes=4, policy_hidden=(8,), critic_hidden=(8,), verbose=False,
            progress=False)


def test_a_callable_trains_and_its_run_loads_again(tmp_path):
    from spnpolicy.inference import load_agent

    result = spnpolicy.train("spn-ac", rendezvous, seed=0, out_dir=tmp_path / "run",
                             env_kwargs=dict(size=3), **TINY)
    assert result.history[-1]["step"] == 96 and "success_rate" in result.eval
    saved = spnpolicy.training.rundir.RunDir(tmp_path / "run").read_config()
    assert saved["env"] == "own_env:rendezvous"  # importable again by that name
    agent = load_agent(tmp_path / "run")
    assert (agent.num_agents, agent.num_actions) == (2, 3)
    assert agent.act([[0.0, 1.0]]).shape == (1, 2)


def test_a_lambda_is_registered_under_a_custom_name():
    result = spnpolicy.train("meanfield-ac", lambda: Rendezvous(size=3), seed=0, **TINY)
    assert result.history[-1]["step"] == 96
    assert [n for n in registered_envs() if n.startswith("custom:")] == [
        "custom:test_a_lambda_is_registered_under_a_custom_name.<locals>.<lambda>"]


def test_register_env_makes_a_name_for_make_env_and_train():
    assert register_env("meet", rendezvous) == "meet"
    assert make_env("meet", size=4).size == 4
    assert spnpolicy.train("spn-ac", "meet", seed=1, **TINY).history[-1]["step"] == 96
    register_env("meet", rendezvous)  # the same factory again is fine


@pytest.mark.parametrize("call, message", [
    (lambda: register_env("coverage", rendezvous), "is a built-in environment name"),
    (lambda: register_env("mpe/mine", rendezvous), "is a built-in environment name"),
    (lambda: register_env("", rendezvous), "name must be a non-empty string"),
    (lambda: register_env("x", 3), "factory must be a callable"),
    (lambda: (register_env("x", rendezvous), register_env("x", Rendezvous)),
     "already registered"),
    (lambda: make_env("own_env:rendezvous", sise=3), r"unknown argument\(s\) \['sise'\]"),
    (lambda: make_env("own_env:nothing"), "has no callable 'nothing'"),
    (lambda: spnpolicy.train("spn-ac", lambda: 42), "not a PettingZoo ParallelEnv"),
    (lambda: spnpolicy.train("spn-ac", 42), "env must be an environment name or a callable"),
])
def test_bad_envs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bench_workers_receive_the_registered_envs():
    register_env("meet", rendezvous)
    register_env("meet-lambda", lambda: Rendezvous())
    sent = _picklable_envs()
    assert sent == {"meet": rendezvous}  # a lambda cannot travel to a spawned worker
    registry._REGISTERED.clear()
    _init_worker(sent)
    assert make_env("meet").size == 5


def test_the_cli_trains_a_file_factory_and_lists_it_in_help(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "spnpolicy.cli", "train", "spn-ac",
                          "examples/own_env.py:rendezvous", "--env-kw", "size=3",
                          "--total-steps", "96", "--set", "learning_starts=48", "--set",
                          "eval_interval=96", "--set", "eval_episodes=4", "--out-dir",
                          str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "final greedy evaluation at step 96" in out.stdout
    help_text = subprocess.run([sys.executable, "-m", "spnpolicy.cli", "train", "--help"],
                               capture_output=True, text=True, cwd=ROOT, env=env).stdout
    assert "MODULE:FACTORY or FILE.py:FACTORY" in help_text
    assert "team reward (reward=) sparse" in help_text  # environments are described
    assert "TensorBoard" in help_text


def test_the_example_script_runs_from_any_working_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "own_env.py")],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "final greedy evaluation:" in out.stdout
    assert list(tmp_path.iterdir()) == []                  # it writes nothing where it runs


def test_a_suite_of_a_registered_env_runs_in_worker_processes(tmp_path):
    from spnpolicy.bench.runner import plan, run_all
    from spnpolicy.bench.suites import Protocol, Suite, Task

    register_env("meet", rendezvous)
    suite = Suite("mine", "rendezvous on a line", (Task("meet-3", "meet", {"size": 3}),),
                  ("spn-ac",), 2, Protocol(96, 96, 2, 96),
                  config={"learning_starts": 48, "policy_hidden": (8,)})
    outcome = run_all(plan(suite, tmp_path), workers=2)  # spawned: they must get "meet"
    assert outcome.failures == []
    assert sorted((r.task, r.seed, r.final["step"]) for r in outcome.records) == [
        ("meet-3", 0, 96), ("meet-3", 1, 96)]


def test_a_lambdas_run_elsewhere_says_how_to_get_it_back(tmp_path):
    # the run records "custom:...<lambda>"; another process only said "unknown env"
    spnpolicy.train("spn-ac", lambda: Rendezvous(size=3), seed=0, out_dir=tmp_path / "run",
                    **TINY)
    name = spnpolicy.training.rundir.RunDir(tmp_path / "run").read_config()["env"]
    assert name.startswith("custom:") and name.endswith("<lambda>")
    registry._REGISTERED.clear()                    # as in another process
    with pytest.raises(ValueError, match=r"was a lambda or local function given to "
                                         r"spnpolicy.train in another process"):
        spnpolicy.train("spn-ac", name, seed=0, out_dir=tmp_path / "run", resume=True,
                        **dict(TINY, total_steps=192))
    register_env(name, lambda: Rendezvous(size=3))
    resumed = spnpolicy.train("spn-ac", name, seed=0, out_dir=tmp_path / "run", resume=True,
                              **dict(TINY, total_steps=192))
    assert resumed.history[-1]["step"] == 192
