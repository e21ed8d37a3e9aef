"""Config files in YAML: written by ``spnpolicy config --out FILE.yaml``, read by ``spnpolicy
train --config FILE.yaml`` (with PyYAML installed), and one clear error without PyYAML.
The JSON files' tests, and the errors of bad files of both kinds, are in
tests/spnpolicy/test_cli.py."""

import dataclasses
import json
import sys

import pytest

from spnpolicy.algos.config_files import read_config_file, write_config_file
from spnpolicy.algos.registry import make_config
from spnpolicy.algos.spn_ac import SpnAcConfig
from spnpolicy.cli import main
from spnpolicy.training.rundir import RunDir


@pytest.fixture
def yaml():
    return pytest.importorskip("yaml", reason="PyYAML is not installed (the yaml extra)")


def test_config_writes_a_yaml_file_that_train_reads(yaml, tmp_path, capsys):
    path = tmp_path / "vdn.yaml"
    assert main(["config", "vdn", "--env", "climbing", "--out", str(path)]) == 0
    assert f"spnpolicy train vdn climbing --config {path}" in capsys.readouterr().out
    written = yaml.safe_load(path.read_text())
    assert written == json.loads(json.dumps(dataclasses.asdict(make_config("vdn", "climbing"))))
    assert list(written) == [f.name for f in dataclasses.fields(make_config("vdn", "climbing"))]
    # a hand-written file: PyYAML reads 1e-3 as a string, which is read as the field's float
    path.write_text("total_steps: 400\nlearning_starts: 200\nhidden: [16]\nlr: 1e-3\n"
                    "standardise_rewards: no\n")
    run = tmp_path / "run"
    assert main(["train", "vdn", "climbing", "--config", str(path), "--set", "eval_interval=200",
                 "--out-dir", str(run), "--quiet"]) == 0
    saved = RunDir(run).read_config()
    assert saved["total_steps"] == 400
    assert {k: saved["config"][k] for k in ("hidden", "lr", "standardise_rewards",
                                             "eval_interval")} == \
        {"hidden": [16], "lr": 1e-3, "standardise_rewards": False, "eval_interval": 200}


def test_a_yaml_file_reads_back_as_the_same_config(yaml, tmp_path):
    cfg = make_config("spn-ac", "coverage", {"policy_hidden": (32, 32), "actor_lr": 1e-5})
    for name in ("spn-ac.yaml", "spn-ac.yml", "spn-ac.json"):
        path = write_config_file(cfg, tmp_path / name)
        assert SpnAcConfig(**read_config_file(path, SpnAcConfig)) == cfg
    assert (tmp_path / "spn-ac.yml").read_text().startswith("total_steps: 300000\n")


def test_yaml_without_pyyaml_is_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)      # import yaml now raises ImportError
    path = tmp_path / "a.yml"
    path.write_text("actor_lr: 0.001\n")
    written = tmp_path / "b.yaml"
    for argv, named in ((["train", "spn-ac", "climbing", "--config", str(path), "--out-dir",
                          str(tmp_path / "run")], path),
                        (["config", "spn-ac", "--out", str(written)], written)):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == (
            f"spnpolicy: error: config file {named}: YAML needs the PyYAML package (pip "
            f"install 'spnpolicy[yaml]'), or write the config as JSON (.json)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yml"]
