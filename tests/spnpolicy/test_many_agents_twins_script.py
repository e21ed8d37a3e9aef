"""benchmarks/many_agents_twins.py: the records of a saved run, and what it refuses."""

import json

import numpy as np
import pytest

import spnpolicy
from spnpolicy.inference import load_agent
from tests.run_helpers import load_script

twins = load_script("benchmarks/many_agents_twins.py")

#: 3 agents on 3x3 cells with nearest observations: agents share cells often
TINY = dict(num_agents=3, grid_size=3, max_steps=6, observation="nearest")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("twins-run")
    spnpolicy.train("spn-ac", "coverage", seed=0, total_steps=96, out_dir=out, env_kwargs=TINY,
                    learning_starts=48, batch_size=16, eval_interval=96, eval_episodes=2,
                    param_head="agents", critic_input="agents", verbose=False, progress=False)
    return out


def test_records_of_a_saved_run(tiny_run, tmp_path):
    out = tmp_path / "twins.json"
    rows = twins.main([str(tiny_run), "--beta", "0", "100", "--updates", "30",
                       "--episodes", "8", "--out", str(out)])
    assert json.loads(out.read_text()) == rows
    assert [row["beta"] for row in rows] == [0.0, 100.0]
    for row in rows:
        assert row["twin_states"] > row["held_out"] > 0
        for when in ("before", "after"):
            got = row[when]
            assert set(got) == {"p_same", "p_same_product", "kl", "greedy_success"}
            assert 0.0 <= got["p_same"] <= 1.0 and 0.0 <= got["p_same_product"] <= 1.0
            assert got["kl"] >= -1e-6 and 0.0 <= got["greedy_success"] <= 1.0
        assert row["before"]["kl"] == pytest.approx(0.0, abs=1e-5)
        assert row["before"]["greedy_success"] == rows[0]["before"]["greedy_success"]
    free, kept = rows
    assert free["after"]["p_same"] < free["before"]["p_same"]          # the fit parts twins
    assert kept["after"]["kl"] < free["after"]["kl"]                   # beta keeps marginals


def test_twin_tables_batch_the_states(tiny_run):
    policy = load_agent(tiny_run)
    rng = np.random.default_rng(0)
    states = [rng.random((3, policy.input_shape[-1])).astype(np.float32) for _ in range(3)]
    pairs = [np.array([[0, 1]]), np.array([[0, 2], [1, 2]]), np.array([[1, 2]])]
    same, product, marginals = twins.twin_tables(policy, states, pairs)
    assert same.shape == product.shape == (4,) and marginals.shape == (3, 3, 6)
    alone = [twins.twin_tables(policy, [s], [p])[0] for s, p in zip(states, pairs)]
    np.testing.assert_allclose(same.detach().numpy(),
                               np.concatenate([a.detach().numpy() for a in alone]), atol=1e-6)


def test_a_run_on_another_env_is_refused(tmp_path):
    spnpolicy.train("spn-ac", "climbing", seed=0, total_steps=100, out_dir=tmp_path,
                    learning_starts=50, eval_interval=100, verbose=False, progress=False)
    with pytest.raises(ValueError, match="coverage runs"):
        twins.part(tmp_path, 1.0, 1, 1, 0)


def test_bad_arguments_exit_with_one_line(tiny_run, capsys):
    with pytest.raises(SystemExit) as exit_:
        twins.main([str(tiny_run), "--beta", "-1"])
    assert exit_.value.code == 2
    assert "--beta >= 0" in capsys.readouterr().err
