"""The spnpolicy command line, run as real subprocesses (python -m spnpolicy.cli)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spnpolicy.cli import main

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "spnpolicy.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=ENV, timeout=300, **kwargs)


def test_help_lists_algorithms_and_environments():
    out = cli("--help")
    assert out.returncode == 0
    for name in ("spn-ac", "meanfield-ac", "reinforce", "exact-softmax", "coverage", "climbing",
                 "penalty", "coordination", "mpe/simple_spread", "lbf/"):
        assert name in out.stdout
    assert "--env-kw" in cli("train", "--help").stdout


def test_train_writes_a_run_directory(tmp_path):
    out = cli("train", "spn-ac", "climbing", "--seed", "1", "--out-dir", str(tmp_path),
              "--total-steps", "400", "--set", "learning_starts=200", "--set",
              "eval_interval=200", "--set", "policy_hidden=16")
    assert out.returncode == 0, out.stderr
    assert "step/s" in out.stderr or "step/" in out.stderr  # the tqdm bar shows the rate
    assert "final greedy evaluation at step 400" in out.stdout
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["seed"] == 1 and config["config"]["policy_hidden"] == [16]
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 200, 400]
    assert (tmp_path / "checkpoints" / "last.pt").exists()


def test_unknown_algorithm_is_a_one_line_error():
    out = cli("train", "sac", "climbing")
    assert out.returncode == 2
    assert "unknown algorithm 'sac'; valid: spn-ac" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args, message", [
    (("train", "spn-ac", "chess"), "unknown environment 'chess'"),
    (("train", "spn-ac", "climbing", "--set", "lr=1"), "unknown config key 'lr'"),
    (("train", "spn-ac", "climbing", "--set", "actor_lr=-1"), "actor_lr must"),
    (("train", "spn-ac", "climbing", "--set", "width"), "expected KEY=VALUE"),
    (("train", "spn-ac", "coverage", "--env-kw", "size=3"), "unknown argument(s) ['size']"),
    (("config", "spn-ac", "chess"), "unknown environment 'chess'"),
    (("train", "spn-ac", "climbing", "--resume"), "--resume needs the --out-dir"),
])
def test_errors_exit_with_status_2_and_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_config_lists_fields_with_docs():
    out = cli("config", "meanfield-ac", "coverage")
    assert out.returncode == 0
    assert "policy = 'mean_field' (fixed by the algorithm)" in out.stdout
    assert "actor_lr = " in out.stdout and "Adam learning rate of the policy" in out.stdout


def _final(run: Path):
    history = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    return ([{k: v for k, v in h.items() if k not in ("wall_time", "steps_per_second")}
             for h in history], checkpoint)


def test_killed_run_resumes_to_the_same_result(tmp_path):
    """SIGKILL a coverage run after its first checkpoint; resuming it gives exactly the
    metrics and weights of an uninterrupted run with the same seed."""
    args = ["train", "spn-ac", "coverage", "--seed", "3", "--total-steps", "6000",
            "--env-kw", "num_agents=2", "--env-kw", "grid_size=4", "--env-kw", "max_steps=20",
            "--set", "num_envs=4", "--set", "learning_starts=400", "--set", "batch_size=32",
            "--set", "policy_hidden=32", "--set", "critic_hidden=32", "--set", "width=8",
            "--set", "eval_interval=1000", "--set", "eval_episodes=4",
            "--set", "checkpoint_interval=1000", "--no-progress"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    command = [sys.executable, "-m", "spnpolicy.cli", *args]
    reference = subprocess.Popen([*command, "--out-dir", str(whole)], cwd=ROOT, env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim = subprocess.Popen([*command, "--out-dir", str(killed)], cwd=ROOT, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    saved = torch.load(checkpoint, weights_only=True)["session"]["step"]
    assert 0 < saved < 6000

    out = cli(*args, "--out-dir", str(killed), "--resume")
    assert out.returncode == 0, out.stderr
    assert f"resumed from step {saved:,d}" in out.stdout
    assert reference.wait(timeout=300) == 0
    (history_a, ckpt_a), (history_b, ckpt_b) = _final(whole), _final(killed)
    assert history_b == history_a and history_a[-1]["step"] == 6000
    for name, module in ckpt_a["modules"].items():
        for key, value in module.items():
            assert torch.equal(value, ckpt_b["modules"][name][key]), (name, key)
