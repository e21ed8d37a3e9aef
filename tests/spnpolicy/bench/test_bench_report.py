"""Reading run directories, summaries, markdown tables and plots from synthetic runs."""

import json

import numpy as np
import pytest

from spnpolicy.bench.plots import learning_curve
from spnpolicy.bench.records import find_run_dirs, load_run, task_label
from spnpolicy.bench.report import choose_metric, markdown, summarise, write_report
from spnpolicy.bench.stats import mean_ci

PNG = b"\x89PNG\r\n\x1a\n"


def load_all(root):
    return [load_run(path) for path in find_run_dirs([root])]


def test_runs_are_found_and_read(matrix_runs):
    records = load_all(matrix_runs)
    assert len(records) == 12
    record = next(r for r in records if r.task == "penalty-k25" and r.algo == "vdn")
    assert record.env_kwargs == {"k": 25} and record.suite == "matrix" and record.finished
    assert find_run_dirs([record_dir := matrix_runs / "runs" / "climbing" / "vdn" / "s1"]) == \
        [record_dir]


def test_summary_counts_seeds_reaching_the_optimum(matrix_runs):
    summary = summarise(load_all(matrix_runs), "matrix", task_order=["penalty-k25", "climbing"])
    assert summary["tasks"] == ["penalty-k25", "climbing"]
    assert summary["algos"] == ["spn-ac", "vdn"]  # the suites' order
    cell = summary["results"]["climbing"]["spn-ac"]
    assert cell["seeds"] == [0, 1, 2] and cell["optimal_seeds"] == 2
    assert cell["optimal_fraction"]["value"] == pytest.approx(2 / 3)
    assert cell["return"]["value"] == pytest.approx((11 + 11 + 7) / 3)
    assert summary["results"]["climbing"]["vdn"]["optimal_fraction"] == {
        "value": 0.0, "ci95": [0.0, 0.0], "n": 3}
    # spn-ac's 6 final scores are 1, 1, 0, 1, 1, 1: the IQM trims the 0
    assert summary["iqm"]["spn-ac"]["value"] == 1.0 and summary["total_steps"] == [200]
    text = markdown(summary)
    assert "| climbing | 0.67 [0.00, 1.00] | 0.00 [0.00, 0.00] |" in text
    assert "| climbing | 2/3 | 0/3 |" in text and "| **IQM** |" in text


def test_summary_keeps_every_seeds_scores_and_curve(matrix_runs):
    """A summary without its run directories still holds what the aggregate was made of."""
    cell = summarise(load_all(matrix_runs))["results"]["climbing"]["spn-ac"]
    assert cell["scores"] == [1.0, 1.0, 0.0] and cell["returns"] == [11.0, 11.0, 7.0]
    assert cell["curves"][2] == [[0, 0.0], [100, 0.0], [200, 0.0]]
    assert cell["curves"][0] == [[0, 0.0], [100, 0.0], [200, 1.0]]
    assert mean_ci(cell["scores"]).to_json() == cell["metric"]


def test_unfinished_runs_are_listed_not_counted(matrix_runs, make_run):
    make_run(matrix_runs, "climbing", "spn-ac", 3, "climbing", [0.0, 1.0], total_steps=1_000)
    summary = summarise(load_all(matrix_runs))
    assert summary["unfinished"] == ["climbing spn-ac s3"]
    assert summary["results"]["climbing"]["spn-ac"]["seeds"] == [0, 1, 2]
    assert "Not counted (unfinished): climbing spn-ac s3." in markdown(summary)


def test_runs_without_success_report_the_return(tmp_path, make_run):
    for seed in range(2):
        make_run(tmp_path, "mpe/simple_spread", "spn-ac", seed, "mpe/simple_spread", [None, None],
                 returns=[-50.0, -20.0 - seed], suite=None)
    records = load_all(tmp_path)
    assert choose_metric(records) == "return_mean"
    summary = summarise(records)
    cell = summary["results"]["mpe/simple_spread"]["spn-ac"]  # named after env, no bench.json
    assert cell["metric"]["value"] == -20.5 and "optimal_seeds" not in cell
    with pytest.raises(ValueError, match="metric 'success_rate' is missing .*spread spn-ac"):
        summarise(records, metric="success_rate")
    text = markdown(summary)   # the return is the metric: one table of it, not two
    assert text.count("### return_mean") == 1 and "| **IQM** |" in text


def test_iqm_of_returns_normalises_each_task(tmp_path, make_run):
    # "a" wins the small-scale task, "b" the large one by less in relative terms: pooled raw,
    # the large task would decide; min-max per task, each task counts alike
    finals = {("spread", "a"): [-10.0, -11.0, -12.0], ("spread", "b"): [-30.0, -31.0, -32.0],
              ("tag", "a"): [900.0, 910.0, 920.0], ("tag", "b"): [950.0, 960.0, 970.0]}
    for (task, algo), scores in finals.items():
        for seed, score in enumerate(scores):
            make_run(tmp_path, task, algo, seed, f"mpe/simple_{task}", [None],
                     returns=[score], suite=None)
    summary = summarise(load_all(tmp_path))
    assert summary["metric"] == "return_mean" and summary["iqm_scale"] == "min-max per task"
    iqm = {algo: summary["iqm"][algo]["value"] for algo in ("a", "b")}
    # normalised, spread: a 1, 21/22, 20/22, b 2/22, 1/22, 0; tag: a 0, 10/70, 20/70,
    # b 50/70, 60/70, 1; the IQM of six drops the lowest and the highest
    assert iqm["a"] == pytest.approx((10 / 70 + 20 / 70 + 20 / 22 + 21 / 22) / 4)
    assert iqm["b"] == pytest.approx((1 / 22 + 2 / 22 + 50 / 70 + 60 / 70) / 4)
    assert iqm["a"] > iqm["b"]     # raw, b would lead: (-31 - 30 + 950 + 960) / 4 > 447
    assert "min-max normalised" in markdown(summary)
    single = summarise(load_all(tmp_path / "runs" / "tag"))   # one task: the return itself
    assert single["iqm_scale"] == "metric" and single["iqm"]["b"]["value"] == 960.0


def test_report_files_are_written(matrix_runs, tmp_path):
    out = tmp_path / "report"
    summary, paths = write_report(load_all(matrix_runs), out, "matrix")
    assert [p.name for p in paths] == ["summary.json", "summary.md", "learning_curves.png",
                                       "matrix_optimal.png", "marl_eval.json"]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (out / "summary.md").read_text() == markdown(summary)
    for png in paths[2:-1]:
        assert png.read_bytes().startswith(PNG)


def test_learning_curve_averages_seeds_at_common_steps(matrix_runs, make_run):
    runs = [r for r in load_all(matrix_runs) if r.task == "climbing" and r.algo == "spn-ac"]
    steps, mean, low, high = learning_curve(runs, "success_rate")
    assert steps.tolist() == [0, 100, 200]
    assert mean.tolist() == pytest.approx([0.0, 0.0, 2 / 3])
    assert (low <= mean).all() and (mean <= high).all()
    (single,) = learning_curve(runs[:1], "return_mean")[2:3]
    assert np.isnan(single).all()


def test_bad_run_directories_are_named(tmp_path, make_run):
    with pytest.raises(ValueError, match="holds no run directory"):
        find_run_dirs([tmp_path])
    with pytest.raises(ValueError, match="does not exist"):
        find_run_dirs([tmp_path / "missing"])
    with pytest.raises(ValueError, match="is not a run directory: it has no config.json"):
        load_run(tmp_path)
    run_dir = make_run(tmp_path, "climbing", "spn-ac", 0, "climbing", [0.0, 1.0])
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 2')  # a line cut off by a kill
    assert len(load_run(run_dir).history) == 2
    with pytest.raises(ValueError, match="no finished run among the 0 given"):
        summarise([])


def test_task_label():
    assert task_label("climbing", {}) == "climbing"
    assert task_label("coverage", {"num_agents": 3, "grid_size": 6}) == \
        "coverage[grid_size=6,num_agents=3]"


def test_summary_records_command_commit_and_machine(matrix_runs):
    summary = summarise(load_all(matrix_runs), "matrix")
    made = summary["provenance"]
    assert made["machine"]["cpu_count"] >= 1 and made["machine"]["torch"]
    # the tests run from a git checkout of the package: its commit is recorded
    assert made["commit"] is None or len(made["commit"].split("+")[0]) >= 7
    assert f"commit {made['commit']}" in markdown(summary)
    # the synthetic runs have no provenance.jsonl: the summary says so, not a commit
    assert summary["trained_at"] == {"commits": [], "unrecorded": 12}
    assert ("Which commit trained the runs is not recorded (12 runs made before "
            "`provenance.jsonl` was kept)." in markdown(summary))


def _provenance(run_dir, *records):
    (run_dir / "provenance.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_summary_says_which_commits_trained_the_runs(tmp_path, make_run):
    """A run resumed at a later commit counts under both, each over the steps it trained; a
    process killed and resumed from the same checkpoint trained nothing that was kept."""
    extended = make_run(tmp_path, "climbing", "spn-ac", 0, "climbing", [0.0] * 11)  # to 1000
    _provenance(extended, {"step": 0, "commit": "aaaaaaa"}, {"step": 500, "commit": "bbbbbbb"})
    plain = make_run(tmp_path, "climbing", "spn-ac", 1, "climbing", [0.0] * 6)      # to 500
    _provenance(plain, {"step": 0, "commit": "aaaaaaa"})
    killed = make_run(tmp_path, "climbing", "spn-ac", 2, "climbing", [0.0] * 6)
    _provenance(killed, {"step": 0, "commit": "aaaaaaa"}, {"step": 200, "commit": "ddddddd"},
                {"step": 200, "commit": "ccccccc"})   # ddddddd: killed before its checkpoint
    make_run(tmp_path, "climbing", "spn-ac", 3, "climbing", [0.0] * 6)   # before the file
    summary = summarise(load_all(tmp_path), "matrix")
    assert summary["trained_at"] == {"commits": [
        {"commit": "aaaaaaa", "from_step": 0, "to_step": 500, "runs": 3},
        {"commit": "ccccccc", "from_step": 200, "to_step": 500, "runs": 1},
        {"commit": "bbbbbbb", "from_step": 500, "to_step": 1000, "runs": 1}],
        "unrecorded": 1}
    assert ("Trained at commit aaaaaaa (steps 0 to 500, 3 runs), ccccccc (steps 200 to 500, "
            "1 run), bbbbbbb (steps 500 to 1,000, 1 run); 1 run without a record of it."
            in markdown(summary))


def test_runs_trained_by_spnpolicy_train_name_the_checkout(tmp_path):
    from spnpolicy import train
    from spnpolicy.machine import git_commit
    run = tmp_path / "run"
    train("vdn", "climbing", seed=0, out_dir=run, total_steps=64, learning_starts=32,
          eval_interval=64, eval_episodes=1, verbose=False, progress=False)
    summary = summarise([load_run(run)])
    assert summary["trained_at"] == {"commits": [{"commit": git_commit(), "from_step": 0,
                                                  "to_step": 64, "runs": 1}], "unrecorded": 0}


def test_success_against_the_penalty_is_drawn_for_penalised_tasks(tmp_path, make_run):
    """Lift runs at two penalties get success_vs_penalty.png; a suite without a penalty
    axis (one penalty, or none) gets no such file."""
    from spnpolicy.bench.plots import PENALTY_PNG, plot_success_vs_penalty
    for penalty, finals in ((0.0, (1.0, 1.0)), (0.5, (1.0, 0.0))):
        for seed, final in enumerate(finals):
            for algo, score in (("spn-ac", final), ("vdn", 0.0)):
                make_run(tmp_path, f"lift-2-p{penalty:g}", algo, seed, "lift",
                         [0.0, score], env_kwargs={"num_agents": 2, "penalty": penalty},
                         suite="coordination")
    make_run(tmp_path, "lift-3-p0.5", "spn-ac", 0, "lift", [0.0, 1.0],
             env_kwargs={"num_agents": 3, "penalty": 0.5}, suite="coordination")
    records = load_all(tmp_path)
    _, paths = write_report(records, tmp_path / "out")
    png = tmp_path / "out" / PENALTY_PNG
    assert png in paths and png.read_bytes().startswith(PNG)
    one_penalty = [r for r in records if r.env_kwargs["penalty"] == 0.5]
    assert plot_success_vs_penalty(one_penalty, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_success_against_the_team_size_is_drawn_for_lift_teams(tmp_path, make_run):
    """Lift runs of two team sizes at one penalty get success_vs_team.png and no
    success_vs_penalty.png; one team size alone gets neither."""
    from spnpolicy.bench.plots import PENALTY_PNG, TEAM_PNG, plot_success_vs_team
    for n, finals in ((4, (1.0, 1.0)), (6, (1.0, 0.0))):
        for seed, final in enumerate(finals):
            for algo, score in (("spn-ac", final), ("meanfield-ac", 0.0)):
                make_run(tmp_path, f"lift-{n}-p0.5", algo, seed, "lift", [0.0, score],
                         env_kwargs={"num_agents": n, "penalty": 0.5},
                         suite="coordination-sizes")
    records = load_all(tmp_path)
    _, paths = write_report(records, tmp_path / "out")
    png = tmp_path / "out" / TEAM_PNG
    assert png in paths and png.read_bytes().startswith(PNG)
    assert not (tmp_path / "out" / PENALTY_PNG).exists()
    one_team = [r for r in records if r.env_kwargs["num_agents"] == 4]
    assert plot_success_vs_team(one_team, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
