"""``spnpolicy query``, run as a real subprocess on a run trained here."""

import re

import pytest
import torch

import spnpolicy
from spnpolicy.inference import load_agent, most_likely
from spnpolicy.query import reset_state
from tests.run_helpers import TINY_COVERAGE, run_cli, train_tiny

COVERAGE = TINY_COVERAGE


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("query") / "run")


def query(*args):
    return run_cli("query", *args)


def table_rows(stdout: str) -> dict[int, list[str]]:
    return {int(m.group(1)): m.group(2).split() for m in
            re.finditer(r"^(\d+)\s+(.*)$", stdout, flags=re.MULTILINE)}


def test_query_prints_conditional_marginals_samples_and_the_mpe(run_dir):
    out = query(run_dir, "--fix", "1=noop", "--samples", "4", "--seed", "3")
    assert out.returncode == 0, out.stderr
    assert "probability of each action (columns) for each agent (rows):\nagent    noop" \
        in out.stdout
    assert "noop" in out.stdout and "right" in out.stdout and "given: agent 1 = noop" in out.stdout
    rows = table_rows(out.stdout)
    assert rows[1][:6] == ["1.000", "0.000", "0.000", "0.000", "0.000", "0.000"]
    for i in (0, 2):
        assert abs(sum(float(p) for p in rows[i][:6]) - 1.0) < 0.01
    samples = re.findall(r"^  \((.*)\)$", out.stdout, flags=re.MULTILINE)
    assert len(samples) == 4 and all(s.split(", ")[1] == "noop" for s in samples)
    # the printed MPE is the API's, for the same reset state
    state, _ = reset_state("coverage", COVERAGE, 3)
    best = most_likely(load_agent(run_dir), torch.as_tensor(state)[None], {1: 0})[0]
    names = ("noop", "up", "down", "left", "right", "stay")
    assert ("most likely joint action (agents 0, 1, 2): ("
            + ", ".join(names[a] for a in best.tolist()) + ")") in out.stdout


def test_query_best_is_the_state_critics_best_joint_action_given_the_evidence(run_dir):
    from spnpolicy.inference import best_joint_action

    out = query(run_dir, "--fix", "1=noop", "--best", "--seed", "3")
    assert out.returncode == 0, out.stderr
    state, _ = reset_state("coverage", COVERAGE, 3)
    team = load_agent(run_dir, acting="critics")
    best = best_joint_action(team, torch.as_tensor(state)[None], {1: "noop"})[0]
    assert best[1] == 0
    names = ("noop", "up", "down", "left", "right", "stay")
    assert ("critics' best joint action given the fixed agents (agents 0..2): ("
            + ", ".join(names[a] for a in best.tolist()) + "), Q = ") in out.stdout


def test_query_drops_agents_from_a_checkpoint_file(run_dir):
    out = query(run_dir / "checkpoints" / "last.pt", "--drop", "0", "--fix", "2=4",
                "--env-kw", "broken_agents=(0,)")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^0\s+dropped$", out.stdout, flags=re.MULTILINE)
    assert "dropped (marginalised): 0" in out.stdout and "broken_agents=(0,)" in out.stdout
    assert "most likely joint action (agents 1, 2): (" in out.stdout
    assert table_rows(out.stdout)[2][4] == "1.000"


def test_a_marginal_too_large_to_enumerate_still_prints_its_marginals_and_samples(tmp_path):
    # 8 agents, one dropped: the mode of the other 7 would enumerate 6**7 joint actions
    spnpolicy.train("spn-ac", "coverage", seed=0, out_dir=tmp_path,
                    env_kwargs=dict(num_agents=8, grid_size=4, max_steps=5), total_steps=64,
                    num_envs=8, learning_starts=32, batch_size=16, eval_interval=64,
                    eval_episodes=2, policy_hidden=(16,), critic_hidden=(16,), width=4,
                    verbose=False, progress=False)
    out = query(tmp_path, "--drop", "0", "--samples", "3")
    assert out.returncode == 0, out.stderr
    rows = table_rows(out.stdout.split("for each agent (rows):\n")[1].split("\n\n")[0])
    assert rows[0] == ["dropped"]
    assert all(abs(sum(float(p) for p in rows[i][:6]) - 1.0) < 0.01 for i in range(1, 8))
    assert len(re.findall(r"^  \((.*)\)$", out.stdout, flags=re.MULTILINE)) == 3
    assert ("most likely joint action (agents 1, 2, 3, 4, 5, 6, 7): not computed: with agents "
            "dropped it takes enumerating the 6**7 joint actions of the kept agents (limit "
            "65,536)") in out.stdout
    whole = query(tmp_path, "--samples", "0")       # the joint mode is exact at any size
    assert whole.returncode == 0 and ", probability " in whole.stdout, whole.stderr


@pytest.mark.parametrize("args, message", [
    (("--fix", "5=noop"), "agent index 5 is out of range; the policy has 3 agents"),
    (("--fix", "0=6"), r"fixed\[0\]: action 6 is out of range"),
    (("--fix", "0=jump"), "unknown action 'jump'"),
    (("--drop", "3"), "agent index 3 is out of range"),
    (("--drop", "1", "--fix", "1=0"), "both dropped and fixed"),
    (("--env-kw", "num_agents=4"), "states of size 21, but the policy was trained"),
    (("--state", "0.5,0.5"), "--state has states of size 2"),
    (("--state", "0.5,x"), "--state must be comma-separated numbers"),
    (("--fix", "0=noop", "--fix", "1=up", "--drop", "2"),
     r"--fix \(agents 0, 1\) and --drop \(agents 2\) cover all 3 agents"),
    (("--samples", "-1"), "--samples must be >= 0, got -1"),
    (("--fix", "0=noop", "--fix", "0=1"),     # the last one silently won
     "--fix 0=noop and --fix 0=1 fix agent 0 to two actions"),
])
def test_query_bad_input_is_one_clear_error(run_dir, args, message):
    out = query(run_dir, *args)
    assert out.returncode == 2
    assert re.search(message, out.stderr), out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1


def test_query_of_a_given_state(run_dir):
    state = [0.25] * 16
    out = query(run_dir, "--state", ",".join(map(str, state)), "--fix", "0=2")
    assert out.returncode == 0, out.stderr
    assert "state: given" in out.stdout
    best = most_likely(load_agent(run_dir), torch.tensor([state]), {0: 2})[0]
    names = ("noop", "up", "down", "left", "right", "stay")
    assert "(" + ", ".join(names[a] for a in best.tolist()) + "), probability" in out.stdout


def test_query_of_a_missing_run():
    out = query("/nonexistent/run")
    assert out.returncode == 2 and "no run directory or checkpoint file" in out.stderr


@pytest.mark.parametrize("algo, config", [
    ("vdn", dict(learning_starts=32, batch_size=16, hidden=(16,))),
    ("mappo", dict()),
])
def test_a_run_without_a_joint_policy_is_one_clear_error(tmp_path, algo, config):
    # these runs' agents have no states or joint distribution: an AttributeError traceback
    spnpolicy.train(algo, "coverage", seed=0, out_dir=tmp_path, env_kwargs=COVERAGE,
                    total_steps=64, num_envs=8, eval_interval=64, eval_episodes=2,
                    verbose=False, progress=False, **config)
    out = query(tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"the run trained {algo!r}" in out.stderr and "holds no joint policy" in out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1


def test_a_policy_on_the_agents_observations_is_asked_about_the_reset_observations(tmp_path):
    from spnpolicy.inference import conditional_policy
    from spnpolicy.query import _observations

    spnpolicy.train("spn-ac", "coverage", seed=0, out_dir=tmp_path, env_kwargs=COVERAGE,
                    total_steps=64, num_envs=8, learning_starts=32, batch_size=16,
                    eval_interval=64, eval_episodes=2, param_head="agents",
                    critic_input="agents", verbose=False, progress=False)
    out = query(tmp_path, "--fix", "2=noop", "--seed", "4", "--best")
    assert out.returncode == 0, out.stderr
    # the printed marginals and MPE are the API's on the reset state's observations [n, obs]
    _, instance = reset_state("coverage", COVERAGE, 4)
    observations = torch.as_tensor(_observations(instance, 4))[None]
    agent = load_agent(tmp_path)
    policy = conditional_policy(agent, observations, {2: 0})
    rows = table_rows(out.stdout)
    for i, marginal in enumerate(policy.marginals()[0]):
        assert [float(p) for p in rows[i][:6]] == pytest.approx(marginal.tolist(), abs=6e-4)
    best = most_likely(agent, observations, {2: 0})[0]
    names = ("noop", "up", "down", "left", "right", "stay")
    assert ("most likely joint action (agents 0, 1, 2): ("
            + ", ".join(names[a] for a in best.tolist()) + ")") in out.stdout
    assert "critics' best joint action given the fixed agents (agents 0..2): (" in out.stdout
    # a given global state holds no observations; another team size has other observations
    for args, message in [(("--state", ",".join(["0"] * 21)), "--state: this run's policy "
                           "reads each agent's observation (param_head='agents')"),
                          (("--env-kw", "num_agents=4"), "has observations of shape [4, ")]:
        bad = query(tmp_path, *args)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1
