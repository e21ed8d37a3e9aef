"""The run-directory module: the one place that names a run's files."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from spnpolicy.training import save_checkpoint
from spnpolicy.training.rundir import RunDir

ROOT = Path(__file__).resolve().parents[3]
CONFIG = {"algo": "spn-ac", "env": "climbing", "seed": 2, "env_kwargs": {"k": 5},
          "config": {"total_steps": 100, "policy_hidden": [8]}, "total_steps": 300}


def test_round_trip(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.is_run() and not run.has_checkpoint() and run.read_history() == ()
    run.write_config(CONFIG)
    assert run.read_config() == CONFIG and run.total_steps() == 300
    records = [{"step": 0, "return_mean": 1.0}, {"step": 50, "return_mean": 2.0}]
    run.metrics_jsonl.write_text("".join(json.dumps(r) + "\n" for r in records)
                                 + '{"step": 100, "ret')  # a line cut off by a kill
    assert run.read_history() == tuple(records)
    save_checkpoint(run.checkpoint, {"session": {"step": 50, "history": records},
                                     "w": torch.ones(2)})
    assert run.has_checkpoint() and run.checkpoint_step() == 50
    assert run.load_checkpoint()["w"].tolist() == [1.0, 1.0]
    run.write_bench("matrix", "climbing")
    assert run.read_bench() == {"suite": "matrix", "task": "climbing"}
    # a run directory or a checkpoint file in it locate the same run
    assert RunDir.locate(run.path)[0].path == run.path
    located, checkpoint = RunDir.locate(run.checkpoint)
    assert located.path == run.path and checkpoint == run.checkpoint
    assert sorted(p.name for p in run.path.iterdir()) == [
        "bench.json", "checkpoints", "config.json", "metrics.jsonl"]  # no temporaries left


def test_locate_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="no run directory or checkpoint file at"):
        RunDir.locate(tmp_path / "missing")
    with pytest.raises(ValueError, match="no config.json for"):
        RunDir.locate(tmp_path)
    RunDir(tmp_path).write_config(CONFIG)
    with pytest.raises(ValueError, match="has no checkpoint at"):
        RunDir.locate(tmp_path)


def test_config_missing_keys_are_named(tmp_path):
    run = RunDir(tmp_path)
    run.config.write_text(json.dumps({"algo": "spn-ac"}))
    with pytest.raises(ValueError, match="lacks env, seed, env_kwargs, config"):
        run.read_config()


def test_ensure_writable_names_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        RunDir(tmp_path / "file" / "run").ensure_writable()
    RunDir(tmp_path / "new" / "run").ensure_writable()
    assert (tmp_path / "new" / "run" / "checkpoints").is_dir()


def test_no_other_module_spells_the_checkpoint_path():
    """Only the run-directory module knows where the checkpoint lives."""
    found = subprocess.run(["git", "grep", "-l", "-e", "checkpoints/last.pt", "-e",
                            '"last.pt"', "--", "spnpolicy/*.py"], cwd=ROOT,
                           capture_output=True, text=True)
    if found.returncode not in (0, 1):
        pytest.skip("not a git checkout")
    code_files = [line for line in found.stdout.splitlines()
                  if line != "spnpolicy/training/rundir.py"]
    offenders = []
    for name in code_files:  # docstrings and help texts may mention it; code may not
        for line in (ROOT / name).read_text().splitlines():
            if '"last.pt"' in line or '/ "checkpoints"' in line:
                offenders.append(f"{name}: {line.strip()}")
    assert offenders == []


def test_provenance_records_append_and_read_back(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.read_provenance() == ()                  # a run made before the file was kept
    run.append_provenance({"step": 0, "commit": "aaaaaaa"})
    run.append_provenance({"step": 500, "commit": None})
    with run.provenance_jsonl.open("a") as handle:
        handle.write('{"step": 900, "comm')             # a line cut off by a kill
    assert run.read_provenance() == ({"step": 0, "commit": "aaaaaaa"},
                                     {"step": 500, "commit": None})
