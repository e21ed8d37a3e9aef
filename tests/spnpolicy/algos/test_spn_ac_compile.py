"""spn-ac with ``compile=True``: its compiled losses step as the eager ones do, and it
trains end to end (the compiled path is off by default; one small problem here)."""

import dataclasses

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import spnpolicy
from spnpolicy.algos.registry import make_config
from spnpolicy.algos.spn_ac import SpnAc
from spnpolicy.training import make_vec_env
from spnpolicy.training.optim import CompiledActing, CompiledUpdate
from tests.run_helpers import assert_same_run, replay_batches

ENV = dict(num_agents=3, grid_size=4, max_steps=10)


def _eager_and_compiled(algo: str, hidden: int, **overrides):
    """The envs and two ``algo`` algorithms from the same initial weights, with
    ``compile=False`` and ``compile=True`` (both without mode guidance, which compile=True
    switches off); ``overrides``: more config fields."""
    cfg = make_config(algo, "coverage", dict(num_envs=8, width=4, policy_hidden=(hidden,),
                                             critic_hidden=(hidden,), mode_guidance=0.0,
                                             **overrides))
    envs = make_vec_env("coverage", cfg.num_envs, seed=0, **ENV)
    algos = []
    for compiled in (False, True):
        torch.manual_seed(0)
        algos.append(SpnAc(dataclasses.replace(cfg, compile=compiled), envs))
    return envs, algos


# One case per route stays in the default run (the whole update as one graph; each loss
# apart); the others compile more graphs of the same routes and run with -m slow.
@pytest.mark.parametrize("algo, overrides, whole", [
    ("spn-ac", {}, True),
    pytest.param("exact-softmax", {}, True, marks=pytest.mark.slow),
    ("meanfield-ac", {}, False),
    pytest.param("spn-ac", {"param_head": "agents", "critic_input": "agents"}, False,
                 marks=pytest.mark.slow),
    pytest.param("spn-ac", {"param_head": "agents", "critic_input": "agents",
                            "sibling_pairs": True}, False, marks=pytest.mark.slow)],
    ids=["spn-ac", "exact-softmax", "meanfield-ac", "spn-ac-agents-head", "sibling-pairs"])
def test_compiled_updates_equal_eager_ones(algo, overrides, whole):
    """Same initial weights, same batches: every update's metrics and weights agree with the
    eager algorithm's to float32 rounding (the first update traces and compiles, the rest
    run the compiled code): the whole update as one graph, or each loss apart where the
    policy answers on the circuit engine (mean-field, and the agents head's global
    normalisation)."""
    envs, (eager, compiled) = _eager_and_compiled(algo, hidden=32, **overrides)
    assert compiled.notes and not eager.notes
    assert compiled.guidance.weight == 0.0
    assert isinstance(compiled._update_fn, CompiledUpdate) == whole
    graphs = counters["stats"]["unique_graphs"]
    for batch in replay_batches(envs, 5, observations=eager.needs_obs):
        expected, got = eager.update(batch), compiled.update(batch)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5)
        for name in ("policy", "critic", "temperature"):
            for p, q in zip(eager.modules[name].parameters(),
                            compiled.modules[name].parameters()):
                torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    assert counters["stats"]["unique_graphs"] > graphs      # it did run compiled graphs
    envs.close()


def test_compiled_acting_draws_the_eager_actions():
    """compile=True samples through a compiled graph from the uniforms the eager sampler
    draws: the same joint actions for the same generator states, collecting and evaluating,
    and the generators left in the same state."""
    envs, algos = _eager_and_compiled("spn-ac", hidden=16)
    eager_algo, compiled_algo = algos
    assert isinstance(compiled_algo._sample_fn, CompiledActing)
    assert eager_algo._sample_fn == eager_algo._sample       # compile=False: the sampler itself
    state = torch.rand(8, envs.state_dim, generator=torch.Generator().manual_seed(1))
    graphs = counters["stats"]["unique_graphs"]
    for seed in range(20):
        generators = [torch.Generator().manual_seed(seed) for _ in algos]
        eager, compiled = (a.explore(state, None, 0, g) for a, g in zip(algos, generators))
        assert torch.equal(compiled, eager)
        eager, compiled = (a.sample(state, None, g) for a, g in zip(algos, generators))
        assert torch.equal(compiled, eager)
        assert torch.equal(generators[0].get_state(), generators[1].get_state())
    assert counters["stats"]["unique_graphs"] > graphs      # it did run a compiled graph
    envs.close()


@pytest.mark.parametrize("algo", ["meanfield-ac", "exact-softmax"])
def test_acting_without_a_region_tree_stays_eager(algo):
    """compile=True compiles acting only where the policy gives it split at its random
    numbers (the region tree); the other policies sample eagerly."""
    envs, (_, compiled) = _eager_and_compiled(algo, hidden=16)
    assert compiled._sample_fn == compiled._sample
    envs.close()


def test_acting_traces_as_one_graph():
    """The compiled acting (encoder, normalisation, the descent through the tree on the
    given uniforms) is one graph without breaks."""
    envs, (algo, _) = _eager_and_compiled("spn-ac", hidden=16)
    state = torch.rand(8, envs.state_dim, generator=torch.Generator().manual_seed(1))
    noise = algo._draw(state, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        algo._act(state, noise)                    # builds the tree's lazy plans
        explained = torch._dynamo.explain(algo._act)(state, noise)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, \
        [reason.reason for reason in explained.break_reasons]
    envs.close()


def test_spn_ac_trains_compiled_to_the_optimum_of_climbing(capsys):
    result = spnpolicy.train("spn-ac", "climbing", seed=0, eval_stochastic=False,
                             compile=True, progress=False, verbose=True)
    assert result.eval["success_rate"] == 1.0
    lines = capsys.readouterr().out.splitlines()         # the slow start is announced
    assert any(line.startswith("compile=True: the first update and the first action "
                               "compile") for line in lines[:2])
    assert any(line.startswith("mode_guidance is off with compile=True") for line in lines[:2])


@pytest.mark.parametrize("algo", ["spn-ac", pytest.param("reinforce", marks=pytest.mark.slow)])
def test_a_resumed_compiled_run_equals_the_uninterrupted_one(tmp_path, algo):
    """Every update runs the compiled code, the first after a resume too (its warm-up call
    is dropped and draws nothing from the random state), so stopping at 240 and resuming to
    480 gives the uninterrupted run's history and weights bit for bit; reinforce also
    samples inside the compiled actor loss."""
    config = dict(total_steps=480, num_envs=8, learning_starts=96, batch_size=16,
                  checkpoint_interval=240, eval_interval=240, eval_episodes=4, compile=True,
                  policy_hidden=(16,), critic_hidden=(16,))
    whole = spnpolicy.train(algo, "climbing", seed=1, out_dir=tmp_path / "a", **config)
    spnpolicy.train(algo, "climbing", seed=1, out_dir=tmp_path / "b",
                    **dict(config, total_steps=240))
    resumed = spnpolicy.train(algo, "climbing", seed=1, out_dir=tmp_path / "b", resume=True,
                              **config)
    assert_same_run(whole, resumed)


def test_compile_must_be_a_bool():
    with pytest.raises(ValueError, match="compile"):
        make_config("spn-ac", "coverage", {"compile": "yes"})


@pytest.mark.parametrize("algo", ["spn-ac", "exact-softmax"])
def test_the_whole_update_traces_as_one_graph(algo):
    """compile=True traces both losses, their gradients and the three optimiser steps as
    one graph where the policy's queries are pure tensor ops (a break would split it and
    bring back the autograd engine's calls)."""
    cfg = make_config(algo, "coverage", dict(num_envs=8, width=4, policy_hidden=(16,),
                                             critic_hidden=(16,), compile=True))
    envs = make_vec_env("coverage", cfg.num_envs, seed=0, **ENV)
    algo = SpnAc(cfg, envs)
    batch, = replay_batches(envs, 1)
    tensors = (batch.state, batch.obs, batch.actions, batch.reward, batch.next_state,
               batch.next_obs, batch.steps, batch.terminated)
    algo._update_fn.probe(*tensors)
    explained = torch._dynamo.explain(algo._update_fn.traced)(*tensors)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, \
        [reason.reason for reason in explained.break_reasons]
    envs.close()


def test_the_losses_trace_as_single_graphs():
    """No graph breaks in either loss of the selective policy (a break splits the compiled
    code and brings back per-op dispatch; the zero-weight check was one). Mode guidance,
    whose log-likelihood checks do break the graph, is off as compile=True sets it."""
    cfg = make_config("spn-ac", "coverage", dict(num_envs=8, width=4, policy_hidden=(16,),
                                                  critic_hidden=(16,), mode_guidance=0.0))
    envs = make_vec_env("coverage", cfg.num_envs, seed=0, **ENV)
    algo = SpnAc(cfg, envs)
    batch, = replay_batches(envs, 1)
    alpha = algo.temperature.value
    algo.update(batch)                                 # builds the tree's lazy plans
    for fn, args in ((algo._critic_loss, (batch.state, None, batch.actions, batch.reward,
                                          batch.next_state, None, batch.steps,
                                          batch.terminated, alpha)),
                     (algo._actor_loss, (batch.state, None, alpha))):
        explained = torch._dynamo.explain(fn)(*args)
        assert explained.graph_count == 1 and explained.graph_break_count == 0, \
            [reason.reason for reason in explained.break_reasons]
    envs.close()
