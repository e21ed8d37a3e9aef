"""Experiment tracking with MLflow (config ``tracking="mlflow"``): tiny real runs read back
through MLflow's own client from a temporary store; without the package, one clear error."""

import importlib.util
import json
import sys

import pytest

import spnpolicy
from spnpolicy.algos.registry import make_config
from spnpolicy.cli import main
from spnpolicy.training.rundir import RunDir, is_training_record

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="mlflow is not installed (the mlflow extra)")

#: vdn on the climbing game, 64 env steps: evaluations at 0, 32 and 64, training records
#: every 16 steps
TINY = dict(learning_starts=32, batch_size=8, hidden=(8,), eval_interval=32, eval_episodes=1,
            log_interval=16, checkpoint_interval=32, verbose=False, progress=False)


@pytest.fixture
def no_mlflow_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


def _client_and_run(uri, experiment="spnpolicy"):
    """MLflow's client on ``uri`` and the one run of ``experiment`` there."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def _metric(client, run, key):
    """``([step, ...], [value, ...])`` of a metric of ``run``, in step order."""
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
    return [step for step, _ in history], [value for _, value in history]


def _numbers(record):
    return {k: float(v) for k, v in record.items()
            if k not in ("step", "phase") and isinstance(v, (int, float))}


@needs_mlflow
def test_a_tracked_run_reads_back_through_mlflows_client(tmp_path, no_mlflow_env):
    assert make_config("vdn", "climbing").tracking == "none"          # off by default
    out = tmp_path / "run"
    result = spnpolicy.train("vdn", "climbing", seed=2, total_steps=64, out_dir=out,
                             tracking="mlflow", **TINY)
    client, run = _client_and_run(f"sqlite:///{out / 'mlflow.db'}")
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.tags["spnpolicy.run_dir"] == str(out.absolute())
    saved = RunDir(out).read_config()
    assert {k: run.data.params[k] for k in ("algo", "env", "seed")} == \
        {"algo": "vdn", "env": "climbing", "seed": "2"}
    assert {k: run.data.params[f"config.{k}"] for k in saved["config"]} == \
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in saved["config"].items()}
    # every record of metrics.jsonl at its step: evaluations by name, training under train/
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if not is_training_record(r)]
    training = [r for r in records if is_training_record(r)]
    assert [r["step"] for r in evaluations] == [0, 32, 64] == [h["step"] for h in result.history]
    assert [r["step"] for r in training] == [16, 32, 48, 64]
    for prefix, kept in (("", evaluations), ("train/", training)):
        for key in set().union(*map(_numbers, kept)):
            steps, values = _metric(client, run, prefix + key)
            assert steps == [r["step"] for r in kept if key in _numbers(r)], key
            assert values == pytest.approx([_numbers(r)[key] for r in kept
                                            if key in _numbers(r)]), key
    assert {"return_mean", "train/return_mean", "train/loss_td"} <= set(run.data.metrics)


@needs_mlflow
def test_a_resumed_run_continues_its_mlflow_run_at_the_tracking_uri(tmp_path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "climbing runs")
    out = tmp_path / "run"
    spnpolicy.train("vdn", "climbing", total_steps=32, out_dir=out, tracking="mlflow", **TINY)
    client, run = _client_and_run(store, "climbing runs")
    assert run.info.status == "FINISHED"
    resumed = spnpolicy.train("vdn", "climbing", total_steps=64, out_dir=out, resume=True,
                              tracking="mlflow", **TINY)
    client, again = _client_and_run(store, "climbing runs")
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    steps, values = _metric(client, again, "return_mean")
    assert steps == [0, 32, 64] == [h["step"] for h in resumed.history]
    assert values == pytest.approx([h["return_mean"] for h in resumed.history])
    assert _metric(client, again, "train/return_mean")[0] == [16, 32, 48, 64]
    assert not RunDir(out).mlflow_db.exists()                          # the URI's store only


@needs_mlflow
def test_tracking_needs_a_store(no_mlflow_env):
    with pytest.raises(ValueError, match=r"tracking='mlflow' needs a store: give an out_dir "
                                         r"\(its runs go to OUT_DIR/mlflow.db\) or set "
                                         r"MLFLOW_TRACKING_URI"):
        spnpolicy.train("vdn", "climbing", total_steps=64, tracking="mlflow", **TINY)


def test_tracking_without_mlflow_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)      # import mlflow now raises ImportError
    message = ("tracking='mlflow' needs the mlflow package: pip install 'spnpolicy[mlflow]' "
               "(or SPNPOLICY_EXTRAS=mlflow bash scripts/setup.sh)")
    with pytest.raises(ValueError) as error:
        spnpolicy.train("vdn", "climbing", total_steps=64, out_dir=tmp_path / "run",
                        tracking="mlflow", **TINY)
    assert str(error.value) == message
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "vdn", "climbing", "--set", "tracking=mlflow", "--out-dir",
              str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"spnpolicy: error: {message}\n"
    assert not (tmp_path / "run").exists()                # nothing written
