"""Expanding suites into runs, skipping finished runs, resuming, failures, backends."""

import importlib.util
import json
import os
import socket

import pytest

from spnpolicy.bench import runner
from spnpolicy.bench.records import RunRecord
from spnpolicy.bench.runner import execute, finished_record, parse_seeds, plan, run_all
from spnpolicy.bench.suites import Protocol, Suite, Task, get_suite
from spnpolicy.training.rundir import RunBusyError, RunDir

TINY = Suite("tiny", "one game, spn-ac variants", (Task("climbing", "climbing"),
                                                   Task("penalty-k25", "penalty", {"k": 25})),
             ("spn-ac", "meanfield-ac"), 2, Protocol(192, 96, 2, 96),
             config={"num_factors": 5, "no_such_field": 1})


def test_plan_expands_seed_by_seed_with_one_protocol(tmp_path):
    runs = plan(TINY, tmp_path)
    assert [(r.seed, r.task.name, r.algo) for r in runs] == [
        (s, t, a) for s in (0, 1) for t in ("climbing", "penalty-k25")
        for a in ("spn-ac", "meanfield-ac")]
    assert runs[0].run_dir == tmp_path / "runs" / "climbing" / "spn-ac" / "s0"
    for run in runs:  # the same budget and evaluation for every algorithm
        assert {k: run.config[k] for k in ("total_steps", "eval_interval", "eval_episodes")} \
            == {"total_steps": 192, "eval_interval": 96, "eval_episodes": 2}
        assert run.config["num_factors"] == 5 and "no_such_field" not in run.config


def test_plan_filters(tmp_path):
    runs = plan(TINY, tmp_path, algos=["meanfield-ac"], tasks=["penalty-k25"], seeds=[3, 7],
                total_steps=48)
    assert [(r.task.name, r.algo, r.seed) for r in runs] == [("penalty-k25", "meanfield-ac", 3),
                                                             ("penalty-k25", "meanfield-ac", 7)]
    assert runs[0].config["total_steps"] == 48 and runs[0].config["eval_interval"] == 96
    assert len(plan(TINY, tmp_path, seeds=1)) == 4


def test_plan_errors_name_the_input_and_the_valid_names(tmp_path):
    with pytest.raises(ValueError, match=r"unknown algorithm\(s\) \['vdnn'\] for suite 'tiny'; "
                                         r"valid: spn-ac, meanfield-ac"):
        plan(TINY, tmp_path, algos=["vdnn"])
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['penalty'\] .* valid: climbing"):
        plan(TINY, tmp_path, tasks=["penalty"])
    with pytest.raises(ValueError, match="seeds must not repeat"):
        plan(TINY, tmp_path, seeds=[1, 1])
    with pytest.raises(ValueError, match="number of seeds must be >= 1"):
        plan(TINY, tmp_path, seeds=0)
    missing = Suite("m", "", TINY.tasks, ("spn-ac", "not-an-algo"), 1, TINY.protocol)
    with pytest.raises(ValueError, match=r"needs algorithm\(s\) \['not-an-algo'\] that are not "
                                         r"registered; registered: spn-ac"):
        plan(missing, tmp_path)
    assert plan(get_suite("matrix"), tmp_path, algos=["spn-ac"], seeds=1)  # filters first


def test_plan_overrides_set_the_fields_each_algorithm_has(tmp_path):
    """--set: parsed to each config's field type, for the algorithms with the field only."""
    runs = plan(get_suite("matrix"), tmp_path, algos=["spn-ac", "vdn"], tasks=["climbing"],
                seeds=1, overrides={"compile": "true", "batch_size": "32"})
    configs = {r.algo: r.config for r in runs}
    assert configs["spn-ac"]["compile"] is True and "compile" not in configs["vdn"]
    assert configs["spn-ac"]["batch_size"] == 32 == configs["vdn"]["batch_size"]
    assert configs["vdn"]["total_steps"] == get_suite("matrix").protocol.total_steps
    with pytest.raises(ValueError, match=r"--set width: no algorithm of this run \(vdn\) has"):
        plan(get_suite("matrix"), tmp_path, algos=["vdn"], overrides={"width": "4"})
    with pytest.raises(ValueError, match="compile"):
        plan(get_suite("matrix"), tmp_path, algos=["spn-ac"], overrides={"compile": "maybe"})


def test_plan_overrides_for_one_algorithm(tmp_path):
    """--set ALGO:KEY=VALUE: that algorithm only, after the shared overrides."""
    runs = plan(get_suite("matrix"), tmp_path, algos=["spn-ac", "meanfield-ac", "vdn"],
                tasks=["climbing"], seeds=1,
                overrides={"batch_size": "32", "spn-ac:batch_size": "16",
                           "spn-ac:param_head": "agents", "spn-ac:sibling_pairs": "true"})
    configs = {r.algo: r.config for r in runs}
    assert configs["spn-ac"]["batch_size"] == 16
    assert configs["meanfield-ac"]["batch_size"] == 32 == configs["vdn"]["batch_size"]
    assert configs["spn-ac"]["sibling_pairs"] is True and configs["spn-ac"]["param_head"] == "agents"
    assert "sibling_pairs" not in configs["meanfield-ac"]
    assert {r.algo: r.overrides for r in runs}["spn-ac"] == {
        "batch_size": 16, "param_head": "agents", "sibling_pairs": True}
    with pytest.raises(ValueError, match=r"--set qmix:batch_size=8: 'qmix' is not an algorithm "
                                         r"of this run \(spn-ac, vdn\)"):
        plan(get_suite("matrix"), tmp_path, algos=["spn-ac", "vdn"],
             overrides={"qmix:batch_size": "8"})
    with pytest.raises(ValueError, match=r"--set vdn:width=4: vdn's config has no field 'width'"):
        plan(get_suite("matrix"), tmp_path, algos=["spn-ac", "vdn"], overrides={"vdn:width": "4"})
    with pytest.raises(ValueError, match="policy"):   # meanfield-ac fixes its policy
        plan(get_suite("matrix"), tmp_path, algos=["meanfield-ac"],
             overrides={"meanfield-ac:policy": "selective"})
    with pytest.raises(ValueError, match="batch_size"):
        plan(get_suite("matrix"), tmp_path, algos=["vdn"], overrides={"vdn:batch_size": "many"})


def test_parse_seeds():
    assert parse_seeds("3") == 3
    assert parse_seeds("0,4,7") == (0, 4, 7) and parse_seeds("5,") == (5,)
    with pytest.raises(ValueError, match="got 'a,b'"):
        parse_seeds("a,b")


def test_finished_runs_are_skipped(tmp_path, make_run, monkeypatch):
    (run,) = plan(TINY, tmp_path, algos=["spn-ac"], tasks=["climbing"], seeds=1)
    make_run(tmp_path, "climbing", "spn-ac", 0, "climbing", [0.0, 1.0, 1.0], interval=96,
             suite="tiny")
    monkeypatch.setattr(runner, "execute", lambda run: pytest.fail("a finished run ran"))
    lines = []
    outcome = run_all([run], log=lines.append)
    assert [r.final["step"] for r in outcome.records] == [192] and not outcome.failures
    assert lines == [("[1/1] climbing spn-ac s0: success_rate 1, return_mean 10 at step 192 "
                      "(already finished)")]


@pytest.mark.filterwarnings("ignore:learning_starts=.*is above total_steps")  # tiny budgets
def test_a_run_resumes_to_a_larger_budget_and_keeps_its_history(tmp_path):
    (short,) = plan(TINY, tmp_path, algos=["spn-ac"], tasks=["climbing"], seeds=1,
                    total_steps=96)
    first = execute(short)
    assert [h["step"] for h in first.history] == [0, 96]
    assert json.loads((short.run_dir / "bench.json").read_text()) == {"suite": "tiny",
                                                                      "task": "climbing"}
    (longer,) = plan(TINY, tmp_path, algos=["spn-ac"], tasks=["climbing"], seeds=1)
    assert finished_record(short) is not None and finished_record(longer) is None
    outcome = run_all([longer], log=lambda line: None)
    (record,) = outcome.records
    assert [h["step"] for h in record.history] == [0, 96, 192]
    assert record.history[:2] == first.history


@pytest.mark.filterwarnings("ignore:learning_starts=.*is above total_steps")  # tiny budgets
def test_a_finished_run_made_without_the_overrides_is_not_taken(tmp_path):
    """--set on an output that holds finished runs made without it: they are not reported
    as this command's runs; resuming them is refused, naming the field."""
    (plain,) = plan(TINY, tmp_path, algos=["spn-ac"], tasks=["climbing"], seeds=1,
                    total_steps=96)
    execute(plain)
    (same,) = plan(TINY, tmp_path, algos=["spn-ac"], tasks=["climbing"], seeds=1,
                   total_steps=96, overrides={"width": "16"})          # the default: equal
    (other,) = plan(TINY, tmp_path, algos=["spn-ac"], tasks=["climbing"], seeds=1,
                    total_steps=96, overrides={"width": "4"})
    assert other.overrides == {"width": 4} and other.config["width"] == 4
    assert finished_record(same) is not None and finished_record(other) is None
    outcome = run_all([other], log=lambda line: None)
    (failed, message), = outcome.failures
    assert failed is other and "width" in message


@pytest.mark.filterwarnings("ignore:learning_starts=.*is above total_steps")  # tiny budgets
def test_a_budget_below_the_intervals_extends_too(tmp_path):
    # the intervals were capped by a small budget, so the larger budget's config differed
    # and resuming was refused ("the saved run differs in config.checkpoint_interval")
    (short,) = plan(TINY, tmp_path, algos=["spn-ac"], tasks=["climbing"], seeds=1,
                    total_steps=48)
    assert [h["step"] for h in execute(short).history] == [0, 48]
    (longer,) = plan(TINY, tmp_path, algos=["spn-ac"], tasks=["climbing"], seeds=1)
    outcome = run_all([longer], log=lambda line: None)
    assert not outcome.failures
    assert [h["step"] for h in outcome.records[0].history] == [0, 48, 96, 192]


@pytest.mark.filterwarnings("ignore:learning_starts=.*is above total_steps")  # tiny budgets
def test_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path, make_run):
    (run,) = plan(TINY, tmp_path, algos=["meanfield-ac"], tasks=["climbing"], seeds=1,
                  total_steps=96)  # a multiple of the 8 env copies
    make_run(tmp_path, "climbing", "meanfield-ac", 0, "climbing", [0.5, 0.5], interval=50,
             checkpoint=False)
    record = execute(run)
    assert [h["step"] for h in record.history] == [0, 96]  # no stale line appended to


def test_failures_are_reported_and_the_other_runs_finish(tmp_path, monkeypatch):
    runs = plan(TINY, tmp_path, tasks=["climbing"], seeds=1)

    done = RunRecord("climbing", "spn-ac", "climbing", 0, 192, ({"step": 192,
                                                                 "return_mean": 11.0},))

    def fake(run):
        if run.algo == "meanfield-ac":
            raise RuntimeError("boom")
        return done

    monkeypatch.setattr(runner, "execute", fake)
    lines = []
    outcome = run_all(runs, log=lines.append)
    assert outcome.records == [done]
    assert [(r.algo, e) for r, e in outcome.failures] == [("meanfield-ac", "RuntimeError: boom")]
    assert lines[1] == "[2/2] climbing meanfield-ac s0: FAILED RuntimeError: boom"
    with pytest.raises(ValueError, match="workers must be an int >= 1, got 0"):
        run_all(runs, workers=0)


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="ray is installed")
def test_the_ray_backend_explains_a_missing_ray(tmp_path):
    runs = plan(TINY, tmp_path, seeds=1)
    with pytest.raises(ImportError, match=r"pip install 'spnpolicy\[ray\]'"):
        run_all(runs, ray_address="auto")


@pytest.mark.slow  # starting Ray and its workers takes from half a minute to minutes
def test_the_ray_backend_gives_the_results_of_the_process_backend(tmp_path):
    """A real local Ray instance (``--ray local``) trains the runs as Ray tasks; training is
    seeded, so the histories equal those of the same runs trained in this process."""
    ray = pytest.importorskip("ray")
    local = plan(TINY, tmp_path / "local", tasks=["climbing"], seeds=1)
    remote = plan(TINY, tmp_path / "ray", tasks=["climbing"], seeds=1)
    try:
        lines = []
        on_ray = run_all(remote, ray_address="local", log=lines.append)
    finally:
        ray.shutdown()
    here = run_all(local, log=lambda line: None)
    assert not on_ray.failures and len(on_ray.records) == 2
    assert sum("at step 192" in line for line in lines) == 2

    def strip(record):
        return [{k: v for k, v in h.items() if k not in ("wall_time", "steps_per_second")}
                for h in record.history]

    for a, b in zip(here.records, on_ray.records, strict=True):
        assert (a.algo, a.seed) == (b.algo, b.seed)
        assert strip(a) == strip(b)
    assert all((run.run_dir / "checkpoints" / "last.pt").exists() for run in remote)


@pytest.mark.filterwarnings("ignore:learning_starts=.*is above total_steps")  # tiny budgets
def test_a_run_another_process_trains_is_not_trained_twice(tmp_path):
    """A live holder of the run directory: the run fails with RunBusyError naming it, and
    its files are left alone; once the holder is gone the run trains."""
    import subprocess
    import sys

    (run,) = plan(TINY, tmp_path, algos=["spn-ac"], tasks=["climbing"], seeds=1)
    run.run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run.run_dir / "RUNNING").write_text(f"{socket.gethostname()} {holder.pid}\n")
        (run.run_dir / "metrics.jsonl").write_text("kept\n")
        outcome = run_all([run], log=lambda line: None)
        (failed, error), = outcome.failures
        assert failed is run and "RunBusyError" in error and str(holder.pid) in error
        assert (run.run_dir / "metrics.jsonl").read_text() == "kept\n"
    finally:
        holder.kill()
        holder.wait()
    outcome = run_all([run], log=lambda line: None)            # the holder has exited
    assert not outcome.failures and len(outcome.records) == 1
    assert not (run.run_dir / "RUNNING").exists()


def test_claims_are_exclusive_and_released(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.claim():
        assert run.running.read_text().split() == [socket.gethostname(), str(os.getpid())]
        with run.claim():                 # this process again (bench, then its train): held
            assert run.running.exists()
        assert run.running.exists()       # only the outer claim releases it
    assert not run.running.exists()
    run.running.write_text(f"{socket.gethostname()} {os.getppid()}\n")   # a live process
    with pytest.raises(RunBusyError, match="being trained by process"):
        with run.claim():
            pass
    run.running.unlink()
    run.running.write_text("another-host 1\n")
    with pytest.raises(RunBusyError, match="another-host"):
        with run.claim():
            pass


PARENT = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
from spnpolicy.bench import runner

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=runner._init_worker)
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 60)
    time.sleep(60)
"""


def test_workers_exit_when_the_bench_process_is_killed(tmp_path):
    """A bench process killed outright (no cleanup runs) must not leave its worker training."""
    import signal
    import subprocess
    import sys
    import time

    from spnpolicy.training.rundir import _alive

    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker)
    finally:
        parent.kill()
        parent.wait()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)
