"""Evaluation (fixed episode quotas) and the session's schedules and run directory."""

import json
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from spnpolicy.training import RunSpec, Session, evaluate, load_checkpoint, make_vec_env
from spnpolicy.training.rundir import RunDir
from spnpolicy.training.session import TrainingInterrupted


def test_matrix_evaluation_of_fixed_joint_actions():
    envs = make_vec_env("climbing", 4, seed=0)
    best = evaluate(lambda s, o: np.zeros((4, 2), dtype=int), envs, episodes=10)
    assert best == {"return_mean": 11.0, "return_std": 0.0, "length_mean": 1.0,
                    "episodes": 10, "success_rate": 1.0}
    worse = evaluate(lambda s, o: np.ones((4, 2), dtype=int), make_vec_env("climbing", 4), 3)
    assert (worse["return_mean"], worse["success_rate"]) == (7.0, 0.0)


def test_episode_quotas_do_not_favour_short_episodes():
    """Copy 0 succeeds at once (episodes of 1 step); copy 1 never does (10 steps). Counting
    episodes as they end would report mostly copy 0's; quotas give exactly half each."""
    envs = make_vec_env("coverage", 2, seed=0, num_agents=1, grid_size=1, max_steps=10)
    # on a 1x1 grid the single agent always stands on the goal: every episode succeeds...
    result = evaluate(lambda s, o: np.zeros((2, 1), dtype=int), envs, episodes=6)
    assert result["episodes"] == 6 and result["success_rate"] == 1.0
    # ...while a 2x2 grid with a policy that never moves mixes instant and failed episodes
    envs = make_vec_env("coverage", 3, seed=1, num_agents=1, grid_size=2, max_steps=10)
    result = evaluate(lambda s, o: np.zeros((3, 1), dtype=int), envs, episodes=30, seed=1)
    lengths_one = result["success_rate"]
    assert result["episodes"] == 30
    assert result["length_mean"] == pytest.approx(1 * lengths_one + 10 * (1 - lengths_one))


def test_final_potential_is_the_mean_potential_of_the_last_states():
    """A policy that never moves ends every episode where it started, so the final potential
    is the mean assignment potential of the reset states, computed here by enumeration."""
    import itertools

    kwargs = dict(num_agents=3, grid_size=5, max_steps=4, layout="fixed", layout_seed=3)
    result = evaluate(lambda s, o: np.zeros((4, 3), dtype=int),
                      make_vec_env("coverage", 4, seed=7, **kwargs), episodes=4, seed=7)
    starts, _ = make_vec_env("coverage", 4, seed=7, **kwargs).reset(seed=7)   # [4, 5n + 1]
    agents = np.rint(starts[:, :6] * 5).reshape(4, 3, 2)
    goals = np.rint(starts[:, 6:12] * 5).reshape(4, 3, 2)
    best = [min(sum(np.abs(a[i] - g[p[i]]).sum() for i in range(3))
                for p in itertools.permutations(range(3))) for a, g in zip(agents, goals)]
    assert result["success_rate"] == float(np.mean(np.array(best) == 0))
    assert result["final_potential"] == pytest.approx(-np.mean(best) / 5)
    assert "final_potential" not in evaluate(lambda s, o: np.zeros((2, 2), dtype=int),
                                             make_vec_env("climbing", 2), 2)


def test_evaluation_arguments():
    envs = make_vec_env("climbing", 2)
    with pytest.raises(ValueError, match="episodes"):
        evaluate(lambda s, o: np.zeros((2, 2), dtype=int), envs, 0)
    with pytest.raises(RuntimeError, match="did not finish"):
        evaluate(lambda s, o: np.zeros((2, 2), dtype=int),
                 make_vec_env("climbing", 2, episode_length=5), 2, max_steps=3)


def _session(tmp_path, resume=False, seed=0, total=100):
    return Session(RunSpec("algo", "climbing", seed, {}, {"lr": 1.0, "total_steps": total}),
                   total_steps=total, eval_interval=30, checkpoint_interval=50,
                   out_dir=tmp_path, resume=resume, stdout=False)


def test_schedules(tmp_path):
    session = _session(tmp_path)
    assert session.restore() is None
    assert session.begin() == 0
    evals, checkpoints = [], []
    for step in range(0, 105, 8):
        if session.eval_due(step):
            session.record(step, {"return_mean": 0.0})
            evals.append(step)
        if session.checkpoint_due(step):
            session.save(step, {})
            checkpoints.append(step)
    session.close()
    assert evals == [0, 32, 64, 96, 104]  # every multiple of 30 crossed, and the end
    assert checkpoints == [56, 104]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["algo"] == "algo" and config["total_steps"] == 100


def test_training_records_between_evaluations_go_to_the_files_not_the_history(tmp_path):
    session = Session(RunSpec("algo", "climbing", 0, {}, {}), total_steps=100,
                      eval_interval=50, checkpoint_interval=48, out_dir=tmp_path,
                      stdout=False, log_interval=20)
    session.begin()
    for step in range(0, 65, 8):
        if session.log_due(step):
            session.record_training(step, {"return_mean": step / 10, "loss": 1.0})
        if session.eval_due(step):
            session.record(step, {"return_mean": 0.5})
        if session.checkpoint_due(step):
            session.save(step, {})
    session.close()
    assert [h["step"] for h in session.history] == [0, 56]
    assert [(r["step"], r.get("phase")) for r in session.records] == [
        (0, None), (24, "train"), (40, "train"), (56, None), (64, "train")]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == session.records
    assert lines[1]["return_mean"] == 2.4 and "wall_time" in lines[1]
    run = RunDir(tmp_path)
    assert list(run.read_history()) == session.history
    assert [r["step"] for r in run.read_training()] == [24, 40, 64]
    assert "phase" in (tmp_path / "metrics.csv").read_text().splitlines()[0]

    # the checkpoint at 48 keeps the records up to it: a resume rewrites the files from them
    resumed = Session(RunSpec("algo", "climbing", 0, {}, {}), total_steps=100,
                      eval_interval=50, checkpoint_interval=48, out_dir=tmp_path,
                      stdout=False, log_interval=20, resume=True)
    assert resumed.begin(resumed.restore()) == 48
    assert [r["step"] for r in RunDir(tmp_path).read_training()] == [24, 40]
    assert not resumed.log_due(56) and resumed.log_due(64)   # 40 was logged; 60 is next
    resumed.close()


def test_no_training_records_with_log_interval_zero(tmp_path):
    session = Session(RunSpec("algo", "climbing", 0, {}, {}), total_steps=100,
                      eval_interval=50, checkpoint_interval=50, stdout=False)
    session.begin()
    assert not any(session.log_due(step) for step in range(0, 200, 8))
    session.close()


def test_final_step_is_always_evaluated(tmp_path):
    session = _session(tmp_path, total=40)
    session.begin()
    evals = [s for s in (0, 10, 20, 40) if session.eval_due(s) and session.record(s, {})]
    assert evals == [0, 40]


def test_resume_rules(tmp_path):
    session = _session(tmp_path)
    session.begin()
    session.record(0, {"return_mean": 1.0})
    session.save(8, {"payload": 1})
    session.close()
    with pytest.raises(ValueError, match="already holds a run"):
        _session(tmp_path).restore()
    with pytest.raises(ValueError, match=r"differs in seed \(saved 0, given 1\)"):
        _session(tmp_path, resume=True, seed=1).restore()
    resumed = _session(tmp_path, resume=True, total=200)  # a longer budget may resume
    payload = resumed.restore()
    assert payload["payload"] == 1
    assert resumed.begin(payload) == 8
    assert resumed.history == [dict(payload["session"]["history"][0])]
    assert not resumed.eval_due(16) and resumed.eval_due(30)
    resumed.close()


def test_every_begin_records_its_step_and_the_commit(tmp_path, monkeypatch):
    """provenance.jsonl: a record per process that trained the run, from the step it began
    at, naming the package's commit (here a stand-in: the checkout may be dirty)."""
    import spnpolicy.training.session as session_module
    from spnpolicy.machine import training_provenance
    commits = iter(["aaaaaaa", "bbbbbbb+dirty"])
    monkeypatch.setattr(session_module, "training_provenance",
                        lambda step: dict(training_provenance(step), commit=next(commits)))
    session = _session(tmp_path)
    session.begin()
    session.record(0, {"return_mean": 1.0})
    session.save(8, {"payload": 1})
    session.close()
    resumed = _session(tmp_path, resume=True, total=200)
    resumed.begin(resumed.restore())
    resumed.close()
    records = RunDir(tmp_path).read_provenance()
    assert [(r["step"], r["commit"]) for r in records] == [(0, "aaaaaaa"), (8, "bbbbbbb+dirty")]
    assert {"started", "host", "cpu", "python", "torch"} <= set(records[0])
    assert records[0]["torch"] == torch.__version__
    # a session without a run directory writes nothing
    bare = Session(RunSpec("algo", "climbing", 0, {}, {}), total_steps=10, eval_interval=5,
                   checkpoint_interval=5, out_dir=None, stdout=False)
    assert bare.begin() == 0
    bare.close()


def test_the_commit_recorded_is_the_checkouts():
    from spnpolicy.machine import git_commit, training_provenance
    record = training_provenance(5)
    assert record["step"] == 5 and record["commit"] == git_commit()


def _saved_run(tmp_path, step=56):
    session = _session(tmp_path)
    session.begin()
    session.record(0, {"return_mean": 1.0})
    session.save(step, {"payload": 1})
    session.close()
    return tmp_path / "config.json", tmp_path / "checkpoints" / "last.pt"


def test_resume_names_the_differing_keys_in_one_short_line(tmp_path):
    _saved_run(tmp_path)
    other = Session(RunSpec("algo", "climbing", 0, {"k": 3}, {"lr": 2.0, "total_steps": 100}),
                    total_steps=100, eval_interval=30, checkpoint_interval=50,
                    out_dir=tmp_path, resume=True, stdout=False)
    with pytest.raises(ValueError) as error:
        other.restore()
    message = str(error.value)
    assert "config.lr (saved 1.0, given 2.0)" in message
    assert "env_kwargs.k (saved '<unset>', given 3)" in message
    assert "\n" not in message and len(message) < 300


def test_a_smaller_budget_than_done_is_refused_and_config_kept(tmp_path):
    config, _ = _saved_run(tmp_path, step=56)
    before = config.read_text()
    with pytest.raises(ValueError, match="total_steps=50 is below the 56 env steps"):
        _session(tmp_path, resume=True, total=50).restore()
    assert config.read_text() == before


@pytest.mark.parametrize("damage, message", [
    (lambda config, ckpt: ckpt.write_bytes(b""), "is empty"),
    (lambda config, ckpt: ckpt.write_bytes(ckpt.read_bytes()[:200]), "cannot be read"),
    (lambda config, ckpt: ckpt.write_text("not a checkpoint"), "cannot be read"),
    (lambda config, ckpt: torch.save({"weights": torch.ones(2)}, ckpt),
     "not a spnpolicy training checkpoint"),
    (lambda config, ckpt: config.write_text('{"algo": "algo", "env"'), "is not valid JSON"),
    (lambda config, ckpt: config.write_text("[1, 2]"), "is not a spnpolicy run config"),
    (lambda config, ckpt: config.unlink(), "has no config.json"),
])
def test_damaged_run_files_give_one_clear_error_and_change_nothing(tmp_path, damage, message):
    config, ckpt = _saved_run(tmp_path)
    damage(config, ckpt)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=message) as error:
        _session(tmp_path, resume=True).restore()
    assert "\n" not in str(error.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_checkpoints_get_the_run_files_mode_and_stale_temporaries_go(tmp_path):
    _, ckpt = _saved_run(tmp_path)
    mode = stat.S_IMODE((tmp_path / "config.json").stat().st_mode)
    assert stat.S_IMODE(ckpt.stat().st_mode) == mode
    stale = ckpt.parent / ".last.pt.1234.abcd.tmp"  # what a kill during a save leaves
    stale.write_bytes(b"partial")
    session = _session(tmp_path, resume=True)
    session.begin(session.restore())
    session.close()
    assert not stale.exists() and ckpt.exists()


def test_config_json_is_replaced_atomically(tmp_path, monkeypatch):
    config, _ = _saved_run(tmp_path)
    before = config.read_text()

    def fail(self, text, *args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(Path, "write_text", fail)
    session = _session(tmp_path, resume=True)
    with pytest.raises(OSError, match="disk full"):
        session.begin(session.restore())
    monkeypatch.undo()
    assert config.read_text() == before


def test_ctrl_c_checkpoints_at_the_next_step_then_stops(tmp_path):
    handler = signal.getsignal(signal.SIGINT)
    session = _session(tmp_path)
    session.begin()
    assert not session.checkpoint_due(8)
    session._on_interrupt(signal.SIGINT, None)     # the first Ctrl-C only asks
    assert session.checkpoint_due(8)
    with pytest.raises(TrainingInterrupted) as stop:
        session.save(8, {"payload": 2})
    assert stop.value.step == 8 and isinstance(stop.value, KeyboardInterrupt)
    assert load_checkpoint(stop.value.path)["session"]["step"] == 8
    with pytest.raises(KeyboardInterrupt):         # a second one stops at once
        session._on_interrupt(signal.SIGINT, None)
    session.close()
    assert signal.getsignal(signal.SIGINT) is handler
