"""``spnpolicy bench`` and ``spnpolicy plot``: one real run end to end, and errors."""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from spnpolicy.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_bench_then_plot_end_to_end(tmp_path):
    out = tmp_path / "bench"
    command = [sys.executable, "-m", "spnpolicy.cli", "bench", "matrix", "--tasks", "climbing",
               "--algos", "spn-ac", "--seeds", "2", "--total-steps", "96", "--workers", "2",
               "--set", "spn-ac:batch_size=16", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          check=False, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    assert "[2/2] climbing spn-ac s" in done.stdout and "| climbing |" in done.stdout
    assert done.stdout.startswith("matrix: 2 runs (seeds 0-1), 96 env steps each")
    for name in ("summary.json", "summary.md", "learning_curves.png", "matrix_optimal.png"):
        assert (out / name).is_file() and str(out / name) in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["suite"] == "matrix" and summary["total_steps"] == [96]
    assert summary["results"]["climbing"]["spn-ac"]["seeds"] == [0, 1]
    assert sorted(p.name for p in (out / "runs" / "climbing" / "spn-ac").iterdir()) == \
        ["s0", "s1"]
    saved = json.loads((out / "runs" / "climbing" / "spn-ac" / "s1" / "config.json").read_text())
    assert saved["config"]["batch_size"] == 16

    redrawn = tmp_path / "redrawn"
    assert main(["plot", str(out), "--out", str(redrawn)]) == 0
    again = json.loads((redrawn / "summary.json").read_text())
    assert summary.pop("provenance")["command"] == shlex.join(["spnpolicy", *command[3:]])
    assert again.pop("provenance")["command"] == f"spnpolicy plot {out} --out {redrawn}"
    assert again == summary
    assert (redrawn / "matrix_optimal.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["bench", "nope"], "unknown suite 'nope'; valid: matrix"),
    (["bench", "matrix", "--algos", "spn-ac,vdnn"], r"unknown algorithm\(s\) \['vdnn'\]"),
    (["bench", "matrix", "--tasks", "penalty"], r"unknown task\(s\) \['penalty'\]"),
    (["bench", "matrix", "--seeds", "x"], "seeds must be a count"),
    (["plot", "a", "b"], "give --out when plotting 2 paths"),
    (["bench", "matrix", "--workers", "0"], "workers must be an int >= 1, got 0"),
    (["bench", "matrix", "--algos", "vdn", "--set", "width=4"],
     r"--set width: no algorithm of this run \(vdn\) has"),
    (["bench", "matrix", "--algos", "vdn", "--set", "spn-ac:width=4"],
     r"--set spn-ac:width=4: 'spn-ac' is not an algorithm of this run \(vdn\)"),
    pytest.param(["bench", "matrix", "--ray", "auto"], "--ray needs the ray package",
                 marks=pytest.mark.skipif(importlib.util.find_spec("ray") is not None,
                                          reason="ray is installed")),
])
def test_bad_input_is_one_clear_error(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(args + (["--out", str(tmp_path)] if args[0] == "bench" else []))
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert "spnpolicy: error:" in err and re.search(message, err), err
    assert out == ""            # nothing printed before the error (the suite's header was)


def test_plot_warns_when_a_task_mixes_budgets(matrix_runs, make_run, tmp_path, capsys):
    make_run(matrix_runs, "climbing", "qmix", 0, "climbing", [0.0, 1.0, 1.0, 1.0])  # 300 steps
    assert main(["plot", str(matrix_runs), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert ("spnpolicy plot: warning: the runs of task 'climbing' have different budgets "
            "(200, 300 env steps)") in err
    assert "penalty-k25" not in err  # its runs share one budget


def test_plot_metric_typo_lists_the_valid_metrics(matrix_runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(matrix_runs), "--out", str(tmp_path / "out"), "--metric",
              "sucess_rate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "metric 'sucess_rate' is missing" in err
    assert "metrics every run has: return_mean, success_rate" in err


def test_plot_of_a_corrupt_config_is_one_clear_error(make_run, tmp_path, capsys):
    run_dir = make_run(tmp_path, "climbing", "spn-ac", 0, "climbing", [0.0, 1.0])
    (run_dir / "config.json").write_text('{"algo": ')
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(run_dir)])
    assert exit_info.value.code == 2
    assert "config.json is not valid JSON" in capsys.readouterr().err


def test_a_second_bench_into_one_out_summarises_every_run_there(tmp_path, monkeypatch,
                                                                 capsys, make_run):
    # the second command rewrote summary.md, summary.json and the plot with its runs alone
    import spnpolicy.bench.plots as plots

    drawn = []
    draw = plots.plot_learning_curves
    monkeypatch.setattr(plots, "plot_learning_curves", lambda records, *args: (
        drawn.append(sorted((r.algo, r.seed) for r in records)), draw(records, *args))[1])
    out = tmp_path / "bench"
    command = ["bench", "matrix", "--tasks", "climbing", "--total-steps", "64", "--set",
               "learning_starts=32", "--out", str(out)]
    assert main(command + ["--algos", "spn-ac", "--seeds", "0,"]) == 0
    assert main(command + ["--algos", "vdn", "--seeds", "0,1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algos"] == ["spn-ac", "vdn"]
    assert {algo: cell["seeds"] for algo, cell in summary["results"]["climbing"].items()} == \
        {"spn-ac": [0], "vdn": [0, 1]}
    table = (out / "summary.md").read_text()
    assert "| task | spn-ac | vdn |" in table and "Not counted" not in table
    assert drawn == [[("spn-ac", 0)], [("spn-ac", 0), ("vdn", 0), ("vdn", 1)]]
    assert "| task | spn-ac | vdn |" in capsys.readouterr().out   # the printed table too

    damaged = make_run(out, "climbing", "qmix", 0, "climbing", [0.0, 1.0])
    (damaged / "config.json").write_text('{"algo": ')
    assert main(command + ["--algos", "vdn", "--seeds", "0,"]) == 0   # finished: skipped
    assert f"spnpolicy bench: warning: {damaged} is left out of the summary" in \
        capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["results"] == summary["results"]


def test_the_header_names_the_seeds_a_count_or_a_list_chose():
    from spnpolicy.bench.cli import _seeds_text

    assert _seeds_text([0, 1, 2]) == "seeds 0-2"       # --seeds 3: a count
    assert _seeds_text([7]) == "seed 7"                 # --seeds 7,: one seed
    assert _seeds_text([3, 5, 9]) == "seeds 3, 5, 9"
