"""The marl-eval export: layout and values against the synthetic runs' known numbers."""

import importlib.util
import json

import pytest

from spnpolicy.bench.marl_eval import MARL_EVAL_JSON, to_marl_eval, write_marl_eval
from spnpolicy.bench.records import RunRecord, find_run_dirs, load_run
from spnpolicy.bench.report import write_report


def load_all(root):
    return [load_run(path) for path in find_run_dirs([root])]


def test_layout_and_values_follow_the_runs(matrix_runs):
    data = to_marl_eval(load_all(matrix_runs))
    assert list(data) == ["climbing", "penalty"]   # environments: the runs' envs
    assert list(data["climbing"]) == ["climbing"] and list(data["penalty"]) == ["penalty-k25"]
    assert list(data["climbing"]["climbing"]) == ["spn-ac", "vdn"]
    climbing = data["climbing"]["climbing"]
    assert list(climbing["spn-ac"]) == ["seed_0", "seed_1", "seed_2"]
    assert climbing["spn-ac"]["seed_0"] == {
        "step_0": {"step_count": 0, "return": [0.0], "success_rate": [0.0]},
        "step_1": {"step_count": 100, "return": [7.0], "success_rate": [0.0]},
        "step_2": {"step_count": 200, "return": [11.0], "success_rate": [1.0]},
        "absolute_metrics": {"return": [11.0], "success_rate": [1.0]}}
    assert list(climbing["spn-ac"]["seed_0"])[-1] == "absolute_metrics"
    # seed 2 never succeeds; its best return (7.0) is reached before the last evaluation
    assert climbing["spn-ac"]["seed_2"]["absolute_metrics"] == {"return": [7.0],
                                                                "success_rate": [0.0]}
    assert climbing["vdn"]["seed_1"]["step_2"] == {"step_count": 200, "return": [7.0],
                                                   "success_rate": [0.0]}
    penalty = data["penalty"]["penalty-k25"]["vdn"]["seed_2"]
    assert penalty["step_1"] == {"step_count": 100, "return": [10.0], "success_rate": [1.0]}
    assert json.loads(json.dumps(data)) == data


def test_one_environment_name_for_every_run(matrix_runs):
    data = to_marl_eval(load_all(matrix_runs), environment="matrix")
    assert list(data) == ["matrix"] and list(data["matrix"]) == ["climbing", "penalty-k25"]
    assert data["matrix"]["climbing"] == to_marl_eval(load_all(matrix_runs))["climbing"][
        "climbing"]


def test_training_records_are_left_out(tmp_path, make_run):
    run_dir = make_run(tmp_path, "t", "spn-ac", 0, "climbing", [0.0, 1.0], returns=[1.0, 2.0])
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 150, "phase": "train", "return_mean": 99.0,
                            "success_rate": 1.0, "loss": 0.5}) + "\n")
    run = to_marl_eval(load_all(tmp_path))["climbing"]["t"]["spn-ac"]["seed_0"]
    assert list(run) == ["step_0", "step_1", "absolute_metrics"]
    assert run["absolute_metrics"] == {"return": [2.0], "success_rate": [1.0]}


def test_unfinished_runs_are_left_out(tmp_path, make_run):
    make_run(tmp_path, "t", "spn-ac", 0, "climbing", [0.0, 1.0])
    make_run(tmp_path, "t", "spn-ac", 1, "climbing", [0.0, 1.0], total_steps=500)
    make_run(tmp_path, "u", "vdn", 0, "penalty", [0.0], total_steps=500)
    data = to_marl_eval(load_all(tmp_path))
    assert list(data) == ["climbing"] and list(data["climbing"]["t"]["spn-ac"]) == ["seed_0"]


def record(env, seed, history, task="t", algo="a"):
    return RunRecord(task=task, algo=algo, env=env, seed=seed,
                     total_steps=history[-1]["step"], history=tuple(history))


def test_an_environment_gets_the_metrics_all_its_evaluations_report():
    full = {"return_mean": 1.0, "success_rate": 0.5, "length_mean": 20.0,
            "final_potential": -2.0, "loss_td": 0.1}
    runs = [record("coverage", 0, [{"step": 0, **full}, {"step": 10, **full}]),
            record("coverage", 1, [{"step": 0, **full},
                                   {"step": 10, "return_mean": 3.0, "length_mean": 9.0}]),
            record("spread", 0, [{"step": 0, **full}])]
    data = to_marl_eval(runs)
    assert data["coverage"]["t"]["a"]["seed_1"]["step_1"] == {
        "step_count": 10, "return": [3.0], "episode_length": [9.0]}
    assert data["coverage"]["t"]["a"]["seed_0"]["absolute_metrics"] == {
        "return": [1.0], "episode_length": [20.0]}
    assert data["spread"]["t"]["a"]["seed_0"]["step_0"] == {
        "step_count": 0, "return": [1.0], "success_rate": [0.5], "episode_length": [20.0],
        "final_potential": [-2.0]}


def test_two_runs_of_one_seed_are_an_error():
    runs = [record("climbing", 3, [{"step": 0, "return_mean": 0.0}]) for _ in range(2)]
    with pytest.raises(ValueError, match="two runs of t a seed 3 in environment 'climbing'"):
        to_marl_eval(runs)


def test_the_report_writes_the_export(matrix_runs, tmp_path):
    records = load_all(matrix_runs)
    _, paths = write_report(records, tmp_path / "report", "matrix")
    assert paths[-1] == tmp_path / "report" / MARL_EVAL_JSON
    assert json.loads(paths[-1].read_text()) == to_marl_eval(records)
    assert write_marl_eval(records, tmp_path / "x" / "m.json").read_text() == \
        paths[-1].read_text()


@pytest.mark.skipif(importlib.util.find_spec("marl_eval") is None,
                    reason="marl-eval (pip id-marl-eval) is not installed")
def test_marl_eval_reads_the_export(matrix_runs):
    from marl_eval.utils.data_processing_utils import (
        create_matrices_for_rliable,
        data_process_pipeline,
    )

    raw = to_marl_eval(load_all(matrix_runs), environment="matrix")
    processed = data_process_pipeline(raw_data=raw, metrics_to_normalize=["return"])
    assert "extra" in processed   # it returns the raw data, after printing, on a format error
    assert processed["extra"]["number_of_runs"] == 3
    assert processed["extra"]["number_of_steps"] == 3
    scores, curves = create_matrices_for_rliable(processed, "matrix", ["return"])
    assert scores["mean_success_rate"]["spn-ac"].shape == (3, 2)   # runs x tasks
    assert curves["mean_norm_return"]["vdn"].shape == (3, 2, 3)   # runs x tasks x steps
