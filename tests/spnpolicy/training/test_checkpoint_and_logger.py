"""Atomic checkpoints with safe loading, and the metrics logger's files."""

import csv
import json
import sys
import types

import pytest
import torch

from spnpolicy.training import MetricsLogger, load_checkpoint, save_checkpoint


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


class Custom:
    pass


def test_save_load_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "ck" / "last.pt", {"w": torch.arange(3), "step": 7,
                                                         "rng": {"state": 2**100}})
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["rng"]["state"] == 2**100
    torch.testing.assert_close(loaded["w"], torch.arange(3))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"step": 1})
    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(path, {"step": 2, "bad": _Unpicklable()})
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_loading_refuses_arbitrary_objects(tmp_path):
    torch.save({"obj": Custom()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        load_checkpoint(tmp_path / "evil.pt")


def test_logger_writes_jsonl_csv_and_stdout(tmp_path):
    lines = []
    logger = MetricsLogger(tmp_path, tensorboard=False, print_fn=lines.append)
    logger.log({"step": 0, "return_mean": 1.5})
    logger.log({"step": 10, "return_mean": float("nan"), "success_rate": 0.5})
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == [{"step": 0, "return_mean": 1.5},
                       {"step": 10, "return_mean": None, "success_rate": 0.5}]
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert rows[0]["success_rate"] == "" and rows[1]["success_rate"] == "0.5"
    assert lines[0].startswith("step         0 | return_mean 1.5")
    logger.restore(records[:1])
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    with pytest.raises(ValueError, match="step"):
        logger.log({"return_mean": 1.0})
    logger.close()


def test_logger_without_directory_writes_nothing(tmp_path, capsys):
    logger = MetricsLogger(None)
    logger.log({"step": 3, "return_mean": 2.0})
    assert "step         3" in capsys.readouterr().out
    assert logger.records == [{"step": 3, "return_mean": 2.0}]


def test_logger_sends_scalars_to_tensorboard_when_installed(tmp_path, monkeypatch):
    scalars = []

    class FakeWriter:
        def __init__(self, log_dir):
            assert log_dir == str(tmp_path / "tensorboard")

        def add_scalar(self, key, value, step):
            scalars.append((key, value, step))

        def flush(self):
            pass

        def close(self):
            scalars.append("closed")

    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    logger = MetricsLogger(tmp_path, stdout=False)
    logger.log({"step": 5, "return_mean": 1.0, "success_rate": None})
    logger.log({"step": 7, "phase": "train", "return_mean": 0.5})   # a training record
    logger.close()
    assert scalars == [("return_mean", 1.0, 5), ("train/return_mean", 0.5, 7), "closed"]


def test_training_records_are_written_but_not_printed(tmp_path):
    lines = []
    logger = MetricsLogger(tmp_path, tensorboard=False, print_fn=lines.append)
    logger.log({"step": 0, "return_mean": 1.5})
    logger.log({"step": 4, "phase": "train", "return_mean": 0.5, "loss": 2.0})
    assert len(lines) == 1
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[1] == {"step": 4, "phase": "train", "return_mean": 0.5, "loss": 2.0}
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [row["phase"] for row in rows] == ["", "train"]
    logger.close()
