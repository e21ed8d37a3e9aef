"""benchmarks/train_speed.py: one tiny run of both algorithms writes its figures."""

import argparse
import json
import statistics
import time

import pytest

from tests.run_helpers import load_script


def test_writes_rates_and_update_times(tmp_path):
    out = tmp_path / "speed.json"
    result = load_script("benchmarks/train_speed.py").main(
        ["--settings", "3x6x6", "--steps", "200", "--num-envs", "4", "--batch-size", "16",
         "--learning-starts", "32", "--updates", "2", "--repeats", "2",
         "--spn-ac-hidden", "8,8", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["spn_ac_hidden"] == [8, 8]
    row, = result["settings"]
    for algo in ("spn-ac", "vdn"):
        assert row[algo]["env_steps_per_s"] > 0 and row[algo]["update_ms"] > 0
    assert row["ratio_env_steps_per_s"] == pytest.approx(
        row["spn-ac"]["env_steps_per_s"] / row["vdn"]["env_steps_per_s"])
    paired = row["ratio_env_steps_per_s_paired"]        # within each repeat
    assert paired["repeats"] == pytest.approx(
        [a / b for a, b in zip(row["spn-ac"]["env_steps_per_s_repeats"],
                               row["vdn"]["env_steps_per_s_repeats"])])
    assert paired["median"] == pytest.approx(statistics.median(paired["repeats"]))


def test_bad_widths_are_refused():
    with pytest.raises(SystemExit):
        load_script("benchmarks/train_speed.py").main(["--spn-ac-hidden", "64,x"])


def test_a_missing_accelerator_is_an_error(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        load_script("benchmarks/train_speed.py").main(["--device", "cuda"])
    assert stop.value.code == 2


def test_suite_settings_train_in_the_suites_env_and_config(tmp_path):
    """coverage-paper's setting: the suite's env (relative observations, fixed goals) and
    the config fields each algorithm has (progress shaping, gamma 0.9, the critic's graph)."""
    script = load_script("benchmarks/train_speed.py")
    env_kwargs, setting = script.SETTINGS["coverage-paper"]
    assert env_kwargs["observation"] == "relative" and env_kwargs["layout"] == "fixed"
    args = argparse.Namespace(steps=200, num_envs=4, batch_size=16, gradient_steps=1,
                              learning_starts=32, device="cpu", spn_ac_hidden=None)
    spn = script.run_config("spn-ac", setting, args)
    vdn = script.run_config("vdn", setting, args)
    assert (spn.shaping_form, spn.gamma, spn.num_factors) == ("progress", 0.9, 20)
    assert (vdn.shaping_form, vdn.gamma) == ("progress", 0.9)
    assert not hasattr(vdn, "num_factors")
    result = script.main(["--settings", "coverage-quick", "--steps", "200", "--num-envs", "4",
                          "--batch-size", "16", "--learning-starts", "32", "--updates", "2",
                          "--repeats", "1", "--spn-ac-hidden", "8,8"])
    row, = result["settings"]
    assert row["setting"] == "coverage-quick" and row["config"] == {"shaping": True}
    assert row["env_kwargs"]["observation"] == "relative"


def test_the_timed_training_run_gets_the_settings_config(monkeypatch):
    script = load_script("benchmarks/train_speed.py")
    calls = []
    monkeypatch.setattr(script.spnpolicy, "train", lambda *a, **kw: calls.append((a, kw)))
    env_kwargs, setting = script.SETTINGS["coverage-paper"]
    args = argparse.Namespace(steps=200, num_envs=4, batch_size=16, gradient_steps=1,
                              learning_starts=32, device="cpu", spn_ac_hidden=None)
    script.train_rate("spn-ac", env_kwargs, setting, args)
    (_, kw), = calls
    assert kw["env_kwargs"] == env_kwargs
    assert {k: kw[k] for k in setting} == setting


def test_vdn_update_time_is_the_algorithms_own_update(monkeypatch):
    """update_ms times QLearner.update, which training runs (with its optimiser and
    clipping), not a copy of it."""
    script = load_script("benchmarks/train_speed.py")
    calls = []
    original = script.QLearner.update

    def spy(self, batch):
        calls.append(type(self.optimizer).__name__)
        return original(self, batch)

    monkeypatch.setattr(script.QLearner, "update", spy)
    args = argparse.Namespace(steps=200, num_envs=4, batch_size=16, gradient_steps=1,
                              learning_starts=32, device="cpu", spn_ac_hidden=None)
    env_kwargs, setting = script.SETTINGS["3x6x6"]
    assert script.update_ms("vdn", env_kwargs, setting, args, updates=3) > 0
    assert calls == ["Adam"] * (3 + 3)       # warm-up on the first (up to 10) batches, then timed


@pytest.mark.parametrize("rounds", [pytest.param(3, marks=pytest.mark.slow), 0])
def test_compiled_spn_ac_reports_its_compile_apart(tmp_path, monkeypatch, rounds):
    """--compile: spn-ac-compiled (compile=True) alternates with spn-ac and vdn; its env
    steps/s leave out the update that compiles (timed apart), and vdn's update is also
    timed with its loss compiled. ``--paired-rounds 0`` leaves out the in-process A/B.
    The run's clock here reads twice the CPU seconds (as an accelerator's wall clock reads
    other seconds than the CPU's): the compile left out is read on it, not in CPU seconds."""
    script = load_script("benchmarks/train_speed.py")
    monkeypatch.setattr(script, "_clock", lambda device: lambda: 2 * time.process_time())
    result = script.main(
        ["--settings", "3x6x6", "--steps", "200", "--num-envs", "4", "--batch-size", "16",
         "--learning-starts", "32", "--updates", "12", "--repeats", "1",
         "--spn-ac-hidden", "8,8", "--compile", "--paired-rounds", str(rounds)])
    assert result["spn_ac_compile"] is True
    row, = result["settings"]
    eager, compiled, vdn = row["spn-ac"], row["spn-ac-compiled"], row["vdn"]
    assert "compile_cpu_s" not in eager and "compile_cpu_s" not in vdn
    assert compiled["compile_cpu_s"] > 0 and compiled["compile_wall_s"] > 0
    assert compiled["env_steps_per_s"] > compiled["env_steps_per_s_with_compile"] > 0
    assert 200 / compiled["env_steps_per_s_with_compile"] == pytest.approx(
        200 / compiled["env_steps_per_s"] + compiled["compile_s"])
    assert compiled["compile_s"] == pytest.approx(2 * compiled["compile_cpu_s"], rel=1e-3)
    assert row["ratio_env_steps_per_s_compiled"] == pytest.approx(
        compiled["env_steps_per_s"] / vdn["env_steps_per_s"])
    assert row["ratio_env_steps_per_s_compiled_paired"]["repeats"] == pytest.approx(
        [compiled["env_steps_per_s"] / vdn["env_steps_per_s"]])    # one repeat
    assert row["compiled_over_eager_update_ms"] == pytest.approx(
        compiled["update_ms"] / eager["update_ms"])
    assert vdn["update_ms_compiled"] > 0
    if rounds == 0:
        assert "compiled_over_eager_paired" not in row
        return
    paired = row["compiled_over_eager_paired"]
    assert paired["rounds"] == 3 and paired["q1"] <= paired["median"] <= paired["q3"]


def test_the_compiling_calls_are_timed_apart(monkeypatch):
    """``_timing_compiles`` records each SpnAc's first update and first sampled action (the
    calls that compile its update and its acting), once per model, and restores both."""
    script = load_script("benchmarks/train_speed.py")
    calls = []
    monkeypatch.setattr(script.SpnAc, "update", lambda self, batch: calls.append("update"))
    monkeypatch.setattr(script.SpnAc, "sample", lambda self, *a: calls.append("sample"))
    stubbed = script.SpnAc.update, script.SpnAc.sample
    record = []
    models = [object.__new__(script.SpnAc) for _ in range(2)]
    with script._timing_compiles(record):
        for model in models:
            for _ in range(3):
                model.update(None)
                model.sample(None, None, None)
    assert calls == ["update", "sample"] * 6
    assert len(record) == 4 and all(cpu >= 0 and wall >= 0 for cpu, wall, _ in record)
    assert (script.SpnAc.update, script.SpnAc.sample) == stubbed


def test_the_compiling_calls_are_timed_on_the_runs_clock(monkeypatch):
    """The seconds left out of a compiled run's rate are read on the run's own clock (on an
    accelerator its synchronised wall time, whose compile seconds differ from the CPU's):
    here a clock that ticks 5 per read, so 5 per recorded call."""
    script = load_script("benchmarks/train_speed.py")
    monkeypatch.setattr(script.SpnAc, "update", lambda self, batch: None)
    ticks = iter(range(0, 1000, 5))
    record = []
    with script._timing_compiles(record, clock=lambda: next(ticks)):
        model = object.__new__(script.SpnAc)
        model.update(None)
        model.update(None)
    assert [on_clock for _, _, on_clock in record] == [5]
