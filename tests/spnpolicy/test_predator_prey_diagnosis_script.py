"""benchmarks/predator_prey_diagnosis.py: capture opportunities found on hand-built worlds,
and the report of a tiny trained run."""

import json

import numpy as np
import pytest

import spnpolicy
from spnpolicy.evaluate import evaluate_saved_run
from spnpolicy.envs import predator_prey_core as core
from tests.run_helpers import load_script

SMALL = dict(num_agents=3, num_prey=1, grid_size=3, max_steps=10, punishment=2.0)


def script():
    return load_script("benchmarks/predator_prey_diagnosis.py")


def _world(predators, prey, active=None, alive=None):
    n, m = len(predators), len(prey)
    return core.World(np.array([predators]), np.array([active or [True] * n]),
                      np.array([prey]), np.array([alive or [True] * m]))


def test_opportunities_are_pairs_of_active_predators_next_to_one_live_prey():
    find = script().opportunities
    # prey at (1, 1); predators 0 and 2 next to it, predator 1 diagonal (not 4-adjacent)
    assert find(_world([[0, 1], [0, 0], [1, 2]], [[1, 1]])) == [(0, 0, 2)]
    assert find(_world([[0, 1], [2, 1], [1, 2]], [[1, 1]])) == [(0, 0, 1), (0, 0, 2),
                                                                 (0, 1, 2)]
    assert find(_world([[0, 1], [0, 0], [1, 2]], [[1, 1]], active=[True, True, False])) == []
    assert find(_world([[0, 1], [0, 0], [1, 2]], [[1, 1]], alive=[False])) == []
    # two prey, each with one predator next to it: no pair shares a prey
    assert find(_world([[0, 0], [2, 2]], [[0, 1], [2, 1]])) == []


def test_a_tiny_run_reports_its_figures(tmp_path):
    run = tmp_path / "run"
    spnpolicy.train("spn-ac", "predator-prey", seed=0, out_dir=run, env_kwargs=SMALL,
                    total_steps=256, num_envs=8, learning_starts=64, batch_size=16,
                    eval_interval=256, eval_episodes=2, policy_hidden=(16,),
                    critic_hidden=(16,), critic_payoff_hidden=8, width=4, verbose=False,
                    progress=False)
    out = tmp_path / "diagnosis.json"
    script().main([str(run), "--steps", "400", "--envs", "8", "--out", str(out), "--acting",
                   "--episodes", "4"])
    report = json.loads(out.read_text())
    # the policy's mode plays the episodes of `spnpolicy evaluate` with its default seed
    acting = report["acting"]
    assert acting["critics_argmax_rule"] == "exact" and acting["episodes"] == 4
    for player in ("policy_mode", "policy_sample", "critics_argmax"):
        assert acting[player]["episodes"] == 4 and np.isfinite(acting[player]["return_mean"])
    assert acting["policy_mode"] == evaluate_saved_run(run, 4, acting="policy")["greedy"]
    assert acting["critics_argmax"] == evaluate_saved_run(run, 4, acting="critics")["greedy"]
    assert report["steps"] == 400 and report["opportunities"] > 0
    for key in ("pi_cc", "pi_ci", "pi_cj", "lone_share"):
        assert 0.0 <= report[key] <= 1.0
    assert report["pi_cc"] <= min(report["pi_ci"], report["pi_cj"]) + 1e-6
    for key in ("dq_cc", "dq_cs", "dq_sc"):
        assert np.isfinite(report[key])
    assert report["captures_per_200"] >= 0 and report["punished_per_200"] >= 0
    # 400 steps of 3 predators near one prey on 3x3: the policy's samples catch sometimes
    assert report["captures_per_200"] + report["punished_per_200"] > 0


def test_it_refuses_a_run_of_another_env(tmp_path):
    from tests.run_helpers import train_tiny
    with pytest.raises(ValueError, match="not predator-prey"):
        script().diagnose(train_tiny(tmp_path / "coverage"), steps=8)
