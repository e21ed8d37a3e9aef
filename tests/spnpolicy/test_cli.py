"""The spnpolicy command line, run as real subprocesses (python -m spnpolicy.cli)."""

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import spnpolicy
from spnpolicy.algos.registry import make_config
from spnpolicy.cli import main
from spnpolicy.training.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
NEEDS_YAML = pytest.mark.skipif(importlib.util.find_spec("yaml") is None,
                                reason="PyYAML is not installed (the yaml extra)")


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


def test_a_closed_output_pipe_stops_quietly():
    # 'spnpolicy config spn-ac coverage | head -1' printed a BrokenPipeError traceback
    process = subprocess.Popen([sys.executable, "-m", "spnpolicy.cli", "config", "spn-ac",
                                "coverage"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=ROOT, env=ENV)
    process.stdout.close()              # the reader is gone before the first line is written
    err = process.stderr.read().decode()
    assert process.wait(timeout=300) in (0, 141), err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_train_writes_a_run_directory_and_resumes_from_its_saved_config(tmp_path):
    out = cli("train", "spn-ac", "climbing", "--seed", "1", "--out-dir", str(tmp_path),
              "--set", "total_steps=400", "--set", "learning_starts=200", "--set",
              "eval_interval=200", "--set", "policy_hidden=16")
    assert out.returncode == 0, out.stderr
    assert "it/s" not in out.stderr and "step/s" not in out.stderr  # stderr is no terminal
    assert "final greedy evaluation at step 400" in out.stdout
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["seed"] == 1 and config["config"]["policy_hidden"] == [16]
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 200, 400]
    assert (tmp_path / "checkpoints" / "last.pt").exists()

    # --resume needs nothing but the directory; a larger budget extends the run
    out = cli("train", "--out-dir", str(tmp_path), "--resume", "--total-steps", "600",
              "--progress")
    assert out.returncode == 0, out.stderr
    assert "step/s" in out.stderr  # --progress draws the bar even off a terminal
    assert "resumed from step 400" in out.stdout
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["seed"], config["config"]["policy_hidden"], config["total_steps"]) == (
        1, [16], 600)
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 200, 400, 600]


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """A finished 200-step climbing run."""
    out = tmp_path_factory.mktemp("done") / "run"
    spnpolicy.train("spn-ac", "climbing", seed=0, out_dir=out, total_steps=200,
                    learning_starts=100, eval_interval=200, eval_episodes=2,
                    policy_hidden=(8,), critic_hidden=(8,), verbose=False, progress=False)
    return out


def _files(path: Path) -> dict:
    return {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.mark.parametrize("positional, options, message", [
    ((), ("--total-steps", "100"), "total_steps=100 is below the 200 env steps"),
    ((), ("--set", "actor_lr=0.5"), "differs in config.actor_lr (saved "),
    ((), ("--seed", "4"), "differs in seed (saved 0, given 4)"),
    ((), ("--env-kw", "episode_length=2"),
     "env_kwargs.episode_length (saved '<unset>', given 2)"),
    (("vdn", "climbing"), (), "it trained 'spn-ac' on 'climbing', not 'vdn' on 'climbing'"),
])
def test_resume_mismatches_are_one_line_and_change_nothing(done_run, positional, options,
                                                           message, capsys):
    before = _files(done_run)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *positional, "--out-dir", str(done_run), "--resume", "--quiet",
              *options])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _files(done_run) == before


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "checkpoints" / "last.pt").write_bytes(b""), "is empty"),
    (lambda run: (run / "checkpoints" / "last.pt").write_bytes(
        (run / "checkpoints" / "last.pt").read_bytes()[:300]), "cannot be read"),
    (lambda run: torch.save({"policy": torch.ones(1)}, run / "checkpoints" / "last.pt"),
     "not a spnpolicy training checkpoint"),
    (lambda run: (run / "config.json").write_text("{"), "is not valid JSON"),
    (lambda run: (run / "config.json").unlink(), "holds no run (config.json is missing)"),
])
def test_damaged_runs_fail_resume_and_query_in_one_line(done_run, tmp_path, damage, message,
                                                        capsys):
    run = tmp_path / "run"
    shutil.copytree(done_run, run)
    damage(run)
    before = _files(run)
    for command in (["train", "--out-dir", str(run), "--resume"], ["query", str(run)]):
        with pytest.raises(SystemExit) as exit_info:
            main(command)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("spnpolicy: error: "), err
        assert err.count("\n") == 1 and "Traceback" not in err
        if command[0] == "train":
            assert message in err, err
    assert _files(run) == before


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
    (("train", "spn-ac", "climbing", "--total-steps", "100", "--set", "total_steps=200"),
     "--total-steps 100 and --set total_steps=200 disagree"),
    (("train", "spn-ac", "climbing", "--set", "learning_starts=500", "--total-steps", "400"),
     "learning_starts=500 is above total_steps=400"),
    (("train", "spn-ac", "climbing", "--set", "device=foo"),
     "device must be a torch device: 'cpu', 'cuda', 'cuda:N' or 'mps', got 'foo'"),
    (("train",), "train needs ALGO and ENV"),
    (("train", "spn-ac", "nosuchmodule_xyz:make"), "cannot import 'nosuchmodule_xyz'"),
    (("train", "spn-ac", "coverage", "--env-kw", "num_agents=3", "grid_size=4"),
     "each KEY=VALUE needs its own flag: --env-kw num_agents=3 --env-kw grid_size=6"),
    (("config", "vdn", "climbing", "--set", "lr=1"), "unrecognized arguments: --set lr=1 ("),
])
def test_errors_exit_with_status_2_and_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_cuda_device_on_a_cpu_only_torch_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "spn-ac", "climbing", "--set", "device=cuda:0"])
    assert exit_info.value.code == 2
    assert "device='cuda:0', but this torch" in capsys.readouterr().err


def test_out_dir_that_cannot_be_written_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "spn-ac", "climbing", "--out-dir", str(blocker / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"out_dir '{blocker / 'run'}': cannot write a run directory there ({blocker} is a " \
           f"file, not a directory)" in err
    assert blocker.read_text() == "keep me"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SystemExit):
            main(["train", "spn-ac", "climbing", "--out-dir", str(locked / "run")])
        assert "cannot write a run directory there" in capsys.readouterr().err


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


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


def _hear_ctrl_c() -> None:
    """In the child before it execs: SIGINT back to its default, so that Python installs its
    Ctrl-C handler. A suite started in the background of a non-interactive shell (``cmd &``,
    ``nohup``) runs with SIGINT ignored, which children inherit, and the run would then
    finish instead of stopping."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_killed_and_interrupted_runs_resume_to_the_same_result(tmp_path):
    """SIGKILL one coverage run and Ctrl-C (SIGINT) another after their first checkpoint;
    resuming them gives exactly the metrics and weights of an uninterrupted run with the
    same seed. Ctrl-C writes a checkpoint where it stops and prints how to resume."""
    args = ["train", "spn-ac", "coverage", "--seed", "3", "--total-steps", "3000",
            "--env-kw", "num_agents=2", "--env-kw", "grid_size=4", "--env-kw", "max_steps=20",
            "--set", "num_envs=4", "--set", "learning_starts=400", "--set", "batch_size=32",
            "--set", "policy_hidden=32", "--set", "critic_hidden=32", "--set", "width=8",
            "--set", "eval_interval=1000", "--set", "eval_episodes=4",
            "--set", "checkpoint_interval=1000", "--no-progress"]
    whole, killed, stopped = tmp_path / "whole", tmp_path / "killed", tmp_path / "stopped"
    command = [sys.executable, "-m", "spnpolicy.cli", *args]
    reference = subprocess.Popen([*command, "--out-dir", str(whole)], cwd=ROOT, env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # One after the other: a run started beside one still being waited for could finish
    # before its own signal on a loaded machine.
    victim = subprocess.Popen([*command, "--out-dir", str(killed)], cwd=ROOT, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "checkpoints" / "last.pt"
    _wait_for(checkpoint, victim)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    interrupted = subprocess.Popen([*command, "--out-dir", str(stopped)], cwd=ROOT, env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, preexec_fn=_hear_ctrl_c)
    _wait_for(stopped / "checkpoints" / "last.pt", interrupted)
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=240)
    assert interrupted.returncode == 130, f"the run ended before it could be interrupted: {err}"
    saved = torch.load(checkpoint, weights_only=True)["session"]["step"]
    assert 0 < saved < 3000
    assert "Traceback" not in err and f"spnpolicy train --out-dir {stopped} --resume" in err
    stopped_at = torch.load(stopped / "checkpoints" / "last.pt",
                            weights_only=True)["session"]["step"]
    assert f"holds a checkpoint at step {stopped_at:,d}" in err and stopped_at < 3000

    out = cli("train", "--out-dir", str(killed), "--resume")  # ALGO, ENV, flags: saved
    assert out.returncode == 0, out.stderr
    assert f"resumed from step {saved:,d}" in out.stdout
    out = cli(*args, "--out-dir", str(stopped), "--resume")  # all flags again: fine too
    assert out.returncode == 0, out.stderr
    assert f"resumed from step {stopped_at:,d}" in out.stdout

    assert reference.wait(timeout=300) == 0
    history_a, ckpt_a = _final(whole)
    for run in (killed, stopped):
        history_b, ckpt_b = _final(run)
        assert history_b == history_a and history_a[-1]["step"] == 3000
        for name, module in _modules(ckpt_a).items():
            for key, value in module.items():
                assert torch.equal(value, _modules(ckpt_b)[name][key]), (run, name, key)


def _modules(checkpoint: dict) -> dict:
    """The networks' state dicts (at the top, or in the shared loop's algorithm entry)."""
    return checkpoint.get("modules") or checkpoint["algorithm"]["modules"]


def test_config_writes_a_file_that_train_reads_and_set_overrides(tmp_path, capsys):
    path = tmp_path / "vdn.json"
    assert main(["config", "vdn", "--env", "climbing", "--out", str(path)]) == 0
    assert f"spnpolicy train vdn climbing --config {path}" in capsys.readouterr().out
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(dataclasses.asdict(make_config("vdn", "climbing"))))
    written |= {"total_steps": 400, "learning_starts": 200, "hidden": [16], "eval_interval": 100}
    path.write_text(json.dumps(written))
    run = tmp_path / "run"
    assert main(["train", "vdn", "climbing", "--config", str(path), "--set", "eval_interval=200",
                 "--out-dir", str(run), "--quiet"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["total_steps"] == 400 and saved["config"]["hidden"] == [16]
    assert saved["config"]["eval_interval"] == 200                     # --set wins
    assert [h["step"] for h in RunDir(run).read_history()] == [0, 200, 400]
    # --total-steps wins over the file too; a small file of a few keys is enough
    path.write_text(json.dumps({"learning_starts": 100, "total_steps": 10_000}))
    assert main(["train", "vdn", "climbing", "--config", str(path), "--total-steps", "200",
                 "--out-dir", str(tmp_path / "short"), "--quiet"]) == 0
    assert json.loads((tmp_path / "short" / "config.json").read_text())["total_steps"] == 200


def test_config_without_an_env_lists_the_class_defaults(capsys):
    assert main(["config", "spn-ac"]) == 0
    assert "total_steps = 100000\n" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["config", "spn-ac", "climbing", "--env", "coverage"])
    assert "the env is given twice: 'climbing' and --env 'coverage'" in capsys.readouterr().err


@pytest.mark.parametrize("name, text, message", [
    ("a.json", '{"lr": 1}', r"unknown config key\(s\) \['lr'\]; valid keys: total_steps"),
    ("a.json", '{"actor_lr": -1}', r"actor_lr must be a finite number in \(0.0, inf\), got -1"),
    ("a.json", '{"policy_hidden": "wide"}', r"policy_hidden: cannot read 'wide' as tuple"),
    ("a.json", '{"actor_lr": 1e-3,', r"not valid JSON \(line 1, column 19"),
    ("a.json", "[1, 2]", "must hold a JSON object of config keys and values, got a list"),
    ("missing.json", None, r"cannot be read \(No such file or directory\)"),
    ("a.json", '{"autotune_alpha": 1}', r"autotune_alpha must be a bool \(true or false\)"),
    *(pytest.param("a.yaml", text, message, marks=NEEDS_YAML) for text, message in [
        ("actor_lr: [1", r"not valid YAML \(line 1, column 13: expected ',' or ']'"),
        ("a: b: c", r"not valid YAML \(line 1, column 5: mapping values are not allowed here\)"),
        ("- 1\n- 2", "must hold a YAML mapping of config keys and values, got a list"),
        ("", "must hold a YAML mapping of config keys and values, got a NoneType"),
        ("lr: 1", r"unknown config key\(s\) \['lr'\]; valid keys: total_steps"),
        ("policy_hidden: wide", r"policy_hidden: cannot read 'wide' as tuple")]),
])
def test_config_file_errors_name_the_file_and_the_key(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "spn-ac", "climbing", "--config", str(path), "--out-dir",
              str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(f"spnpolicy: error: config file {re.escape(str(path))}: {message}", err), err
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_a_bad_file_value_that_set_overrides_is_no_error(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"lr": -1, "total_steps": 200, "learning_starts": 100, "hidden": [8]}')
    assert main(["train", "vdn", "climbing", "--config", str(path), "--set", "lr=5e-3",
                 "--out-dir", str(tmp_path / "run"), "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["lr"] == 5e-3


def test_help_texts_explain_themselves_without_outside_references():
    """--help, 'spnpolicy config' and 'bench --help' point to nothing outside the repository
    (seed papers, issue numbers, design-document sections) and state no unmeasured times."""
    import argparse
    import re

    from spnpolicy.algos.config import field_docs
    from spnpolicy.algos.registry import ALGORITHMS
    from spnpolicy.bench.suites import SUITES
    from spnpolicy.cli import build_parser

    parser = build_parser()
    texts = [parser.format_help()]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            texts += [sub.format_help() for sub in action.choices.values()]
    for spec in ALGORITHMS.values():
        texts += [spec.summary, *field_docs(spec.config_cls).values()]
    texts += [suite.description for suite in SUITES.values()]
    outside = re.compile(r"seed 0\d\d|\(issue \d+\)|issue \d+|DESIGN\.md|slides 0\d\d|"
                         r"lecture 0\d\d|about \d+ minutes|\d+ minutes on")
    found = sorted({m.group(0) + ": " + text[max(0, m.start() - 40):m.end() + 20]
                    for text in texts for m in outside.finditer(text)})
    assert found == []


def test_a_busy_run_directory_is_one_line(tmp_path, capsys):
    import socket

    (tmp_path / "RUNNING").write_text(f"{socket.gethostname()} {os.getppid()}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "spn-ac", "climbing", "--out-dir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "is being trained by process" in err
    assert err.count("\n") == 1 and "Traceback" not in err
