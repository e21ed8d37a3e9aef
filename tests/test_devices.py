"""Every query and every training loop on an accelerator, against the same on the CPU.

Skipped where torch has no CUDA device (every machine this project has had so far). With
``SPNPOLICY_TEST_DEVICE=cpu`` the same tests run on the CPU (how they were checked to run;
CPU against CPU proves only the code paths): ``SPNPOLICY_TEST_DEVICE=cpu pytest
tests/test_devices.py``.
"""

import copy
import os

import numpy as np
import pytest
import torch

import spnpolicy
from circuits.structures import mixture, random_tensorized, selective
from circuits.tree_distribution import TreeDistribution
from factor_q import FactorGraph, FactorQ
from spnpolicy.inference import load_agent

DEVICE = os.environ.get("SPNPOLICY_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")


def _close(on_device, on_cpu, what):
    assert on_device.device.type == torch.device(DEVICE).type, what
    torch.testing.assert_close(on_device.cpu(), on_cpu, rtol=1e-4, atol=1e-5, msg=what)


@pytest.mark.parametrize("build, deterministic", [
    (lambda: selective(4, 3, 4), True),
    (lambda: random_tensorized(6, 3, depth=2), False),
    (lambda: mixture(4, 3, 3), False),
])
def test_circuit_queries_equal_the_cpu(build, deterministic):
    torch.manual_seed(0)
    circuit = build().double()
    params = torch.randn(5, circuit.num_params, dtype=torch.float64)
    x = torch.randint(0, 3, (5, circuit.num_vars))
    evidence = torch.full((5, circuit.num_vars), -1)
    evidence[:, 0] = x[:, 0]
    queries = {
        "log_prob": lambda d, v: d.log_prob(v),
        "marginals": lambda d, v: d.marginals(),
        "scope_marginals": lambda d, v: d.scope_marginals([(0, 1), (2, 1)]),
        "leave_one_out": lambda d, v: d.leave_one_out_log_prob(v),
        "condition": lambda d, v: d.condition(evidence.to(v.device)).marginals(),
    }
    if deterministic:
        queries["entropy"] = lambda d, v: d.entropy()
        queries["mode"] = lambda d, v: d.mode
    moved = copy.deepcopy(circuit).to(DEVICE)       # nn.Module.to moves in place
    on_cpu = circuit.distribution(params)
    on_device = moved.distribution(params.to(DEVICE))
    for name, query in queries.items():
        _close(query(on_device, x.to(DEVICE)), query(on_cpu, x), name)
    samples = on_device.sample((7,))
    assert samples.device.type == torch.device(DEVICE).type
    assert samples.shape == (7, 5, circuit.num_vars)
    grads = []
    for where, c in ((DEVICE, moved), ("cpu", circuit)):
        p = params.to(where).requires_grad_()
        logp = c.distribution(p).log_prob(x.to(where)).sum()
        grads.append(torch.autograd.grad(logp, p)[0])
    _close(*grads, "log_prob gradient")


def test_region_tree_queries_equal_the_cpu():
    torch.manual_seed(1)
    circuit = selective(6, 4, 8).double()
    params = torch.randn(3, circuit.num_params, dtype=torch.float64, requires_grad=True)
    on_cpu = circuit.distribution(params)
    moved = params.detach().to(DEVICE).requires_grad_()
    on_device = circuit.distribution(moved)
    assert isinstance(on_cpu, TreeDistribution) and isinstance(on_device, TreeDistribution)
    for name in ("entropy", "marginals"):
        _close(getattr(on_device, name)(), getattr(on_cpu, name)(), name)
    _close(on_device.scope_marginals([(0, 5), (3, 2)]), on_cpu.scope_marginals([(0, 5), (3, 2)]),
           "scope_marginals")
    _close(on_device.mode, on_cpu.mode, "mode")
    on_device.entropy().sum().backward()
    on_cpu.entropy().sum().backward()
    _close(moved.grad, params.grad, "entropy gradient")


def test_factor_q_equal_the_cpu():
    torch.manual_seed(2)
    q = FactorQ(FactorGraph.random(4, 5, 2, seed=0), state_dim=3, num_actions=3,
                hidden=(8,)).double()
    state = torch.randn(6, 3, dtype=torch.float64)
    circuit = selective(4, 3, 4).double()
    params = torch.randn(6, circuit.num_params, dtype=torch.float64)
    on_cpu = q(state)
    on_device = copy.deepcopy(q).to(DEVICE)(state.to(DEVICE))
    moved = copy.deepcopy(circuit).to(DEVICE)
    _close(on_device.expectation(moved.distribution(params.to(DEVICE))),
           on_cpu.expectation(circuit.distribution(params)), "expectation")
    _close(on_device.argmax(), on_cpu.argmax(), "argmax")
    actions = torch.randint(0, 3, (6, 4))
    _close(on_device.evaluate(actions.to(DEVICE)), on_cpu.evaluate(actions), "evaluate")


@pytest.mark.parametrize("algo, config", [
    ("spn-ac", dict(learning_starts=32, batch_size=16)),
    ("spn-ac", dict(learning_starts=32, batch_size=16, param_head="agents",
                    critic_input="agents")),
    ("vdn", dict(learning_starts=32, batch_size=16, hidden=(16,))),
    ("masac", dict(learning_starts=32, batch_size=16)),
    ("mappo", dict()),
])
def test_training_runs_there_and_its_agent_loads_on_the_cpu(tmp_path, algo, config):
    result = spnpolicy.train(algo, "coverage", seed=0, total_steps=96, out_dir=tmp_path,
                             env_kwargs=dict(num_agents=2, grid_size=4, max_steps=8),
                             num_envs=8, eval_interval=96, eval_episodes=2, device=DEVICE,
                             progress=False, verbose=False, **config)
    assert next(result.agent.parameters()).device.type == torch.device(DEVICE).type
    agent = load_agent(tmp_path)
    assert next(agent.parameters()).device.type == "cpu"
    shape = (tuple(agent.input_shape) if hasattr(agent, "input_shape") else
             (agent.state_dim,) if hasattr(agent, "state_dim") else
             (agent.num_agents, agent.obs_dim))
    inputs = np.random.default_rng(0).random((3, *shape)).astype(np.float32)
    assert agent.act(inputs).tolist() == result.agent.act(inputs).tolist()
