"""``gradient_step`` computes what torch's own zero_grad, backward, clip_grad_norm_ and step
compute, bit for bit, and runs the optimiser's hooks; ``adam`` is every algorithm's
optimiser, fused where torch can."""

import copy
import math

import pytest
import torch
import torch._dynamo
from torch import nn

import spnpolicy
from spnpolicy.algos.registry import algorithm_names
from spnpolicy.training.optim import (CompiledActing, adam, compile_acting, gradient_step,
                                      maybe_compile)
from spnpolicy.training.rundir import RunDir

#: torch has a fused Adam kernel for CPU parameters from 2.4 (the package allows 2.2)
FUSED_ON_CPU = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
needs_fused = pytest.mark.skipif(not FUSED_ON_CPU, reason="no fused CPU Adam in this torch")


def test_gradient_step_clips_each_group():
    torch.manual_seed(0)
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=1.0)
    gradient_step(optimizer, (a * 100.0).sum() + (b * 0.01).sum(), max_norm=1.0)
    torch.testing.assert_close(-a.detach(), torch.full((3,), 1 / math.sqrt(3)))
    torch.testing.assert_close(-b.detach(), torch.full((3,), 0.01))


@needs_fused
def test_adam_is_fused_where_torch_has_the_kernel_and_steps_as_torchs_default():
    torch.manual_seed(0)
    ours = [nn.Parameter(torch.randn(shape)) for shape in ((3, 4), (4,), (2, 5))]
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]
    fused, default = adam(iter(ours), lr=1e-2), torch.optim.Adam(theirs, lr=1e-2)
    assert fused.defaults["fused"] is True
    for step in range(20):
        grads = [torch.randn_like(p) for p in ours]
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        default.step()
    for p, q in zip(ours, theirs):  # the same update up to float rounding
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_adam_falls_back_to_torchs_default_without_a_fused_kernel(monkeypatch):
    class NoFusedAdam(torch.optim.Adam):
        def __init__(self, params, fused=None, **kwargs):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be floating "
                                   "point Tensors of supported devices")
            super().__init__(params, fused=fused, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", NoFusedAdam)
    optimizer = adam((nn.Parameter(torch.ones(2)) for _ in range(2)), lr=0.1)
    assert not optimizer.defaults["fused"] and len(optimizer.param_groups[0]["params"]) == 2


@needs_fused
@pytest.mark.parametrize("algo", algorithm_names())
def test_every_algorithm_builds_its_optimisers_with_adam(algo, tmp_path):
    """The speed comparisons (benchmarks/train_speed.py) assume one optimiser implementation:
    every optimiser in every algorithm's checkpoint is the fused Adam."""
    spnpolicy.train(algo, "climbing", seed=0, total_steps=400, out_dir=tmp_path,
                    eval_interval=400, eval_episodes=1, checkpoint_interval=400, progress=False)
    found = []

    def walk(value):
        if isinstance(value, dict):
            if "param_groups" in value and "state" in value:
                found.append([g.get("fused") for g in value["param_groups"]])
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(RunDir(tmp_path).load_checkpoint())
    assert found and all(flag is True for groups in found for flag in groups), found


# --- gradient_step on the fused Adam ----------------------------------------------------
def _twin_nets(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    ref = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    ref.load_state_dict(net.state_dict())
    return net, ref


def _reference_step(optimizer, loss, max_norm):
    """torch's own zero_grad, backward, clip_grad_norm_ (per group) and step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_norm > 0:
        for group in optimizer.param_groups:
            nn.utils.clip_grad_norm_(group["params"], max_norm)
    optimizer.step()


def _assert_same(a: nn.Module, b: nn.Module):
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


@needs_fused
@pytest.mark.parametrize("max_norm", [0.0, 0.3, 1e3])
def test_gradient_step_on_a_fused_adam_equals_torchs_steps_bit_for_bit(max_norm):
    net, ref = _twin_nets()
    ours = adam([{"params": list(net[0].parameters())},
                 {"params": list(net[2].parameters()), "lr": 3e-2}], lr=1e-2)
    theirs = adam([{"params": list(ref[0].parameters())},
                   {"params": list(ref[2].parameters()), "lr": 3e-2}], lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    for step in range(12):
        x = torch.randn(32, 6, generator=gen) * (20.0 if step % 3 == 0 else 1.0)
        gradient_step(ours, net(x).pow(2).mean(), max_norm)
        _reference_step(theirs, ref(x).pow(2).mean(), max_norm)
        _assert_same(net, ref)
        for p, q in zip(net.parameters(), ref.parameters()):
            assert torch.equal(ours.state[p]["exp_avg_sq"], theirs.state[q]["exp_avg_sq"])
            assert torch.equal(ours.state[p]["step"], theirs.state[q]["step"])


@needs_fused
def test_gradient_step_makes_each_groups_state_as_torch_does():
    """A group that overrides the optimiser's ``fused`` gets its own kind of step counts
    (under a float64 default, float64 ones where the fused kernel keeps float32)."""
    torch.set_default_dtype(torch.float64)
    try:
        _check_each_groups_state()
    finally:
        torch.set_default_dtype(torch.float32)


def _check_each_groups_state():
    net, ref = _twin_nets()
    ours = adam([{"params": list(net[0].parameters())},
                 {"params": list(net[2].parameters()), "fused": False}], lr=1e-2)
    theirs = adam([{"params": list(ref[0].parameters())},
                   {"params": list(ref[2].parameters()), "fused": False}], lr=1e-2)
    x = torch.randn(8, 6)
    for _ in range(3):
        gradient_step(ours, net(x).pow(2).sum(), 1.0)
        _reference_step(theirs, ref(x).pow(2).sum(), 1.0)
        _assert_same(net, ref)
    for p, q in zip(net.parameters(), ref.parameters()):
        mine, torchs = ours.state[p]["step"], theirs.state[q]["step"]
        assert (mine.device, mine.dtype, float(mine)) == (torchs.device, torchs.dtype, 3.0)
    assert {ours.state[p]["step"].dtype for p in net.parameters()} == {torch.float32,
                                                                       torch.float64}


@needs_fused
def test_gradient_step_follows_a_loaded_optimiser_state():
    """load_state_dict replaces the optimiser's state tensors: the next steps use the new ones."""
    net, ref = _twin_nets()
    ours, theirs = adam(net.parameters(), lr=1e-2), adam(ref.parameters(), lr=1e-2)
    x = torch.randn(8, 6)
    for _ in range(3):
        gradient_step(ours, net(x).sum(), 1.0)
        _reference_step(theirs, ref(x).sum(), 1.0)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))   # as from a checkpoint
    for _ in range(3):
        gradient_step(ours, net(x).sum(), 1.0)
        _reference_step(theirs, ref(x).sum(), 1.0)
    _assert_same(net, ref)
    assert all(float(ours.state[p]["step"]) == 6 for p in net.parameters())


@needs_fused
def test_gradient_step_runs_hooks_and_skips_parameters_without_gradients():
    net, ref = _twin_nets()
    ours, theirs = adam(net.parameters(), lr=1e-2), adam(ref.parameters(), lr=1e-2)
    calls = []
    ours.register_step_pre_hook(lambda *args: calls.append("pre"))
    x = torch.randn(8, 6)
    for _ in range(3):
        gradient_step(ours, net(x).sum(), 0.5)
        _reference_step(theirs, ref(x).sum(), 0.5)
    assert calls == ["pre"] * 3
    _assert_same(net, ref)
    # a hook registered after some steps is run too
    late = adam(net.parameters(), lr=1e-2)
    gradient_step(late, net(x).sum(), 0.5)
    gradient_step(late, net(x).sum(), 0.5)
    late.register_step_post_hook(lambda *args: calls.append("post"))
    gradient_step(late, net(x).sum(), 0.5)
    assert calls[-1] == "post"
    # a parameter without a gradient is not stepped (torch's step skips it)
    net, ref = _twin_nets()
    ours, theirs = adam(net.parameters(), lr=1e-2), adam(ref.parameters(), lr=1e-2)
    for step in range(4):
        head = step < 2                         # then the last layer's bias gets no gradient
        loss = lambda m: (m(x) if head else m[2].weight.sum() * m[:2](x).sum())  # noqa: E731
        gradient_step(ours, loss(net).sum(), 1.0)
        _reference_step(theirs, loss(ref).sum(), 1.0)
        _assert_same(net, ref)
    assert float(ours.state[net[2].bias]["step"]) == 2


@needs_fused
@pytest.mark.parametrize("fused_also", [True, False])
def test_gradient_step_steps_the_other_optimisers_unclipped(fused_also):
    """``also`` (spn-ac's temperature): zeroed, stepped after the backward, never clipped."""
    net, ref = _twin_nets()
    scale, scale_ref = nn.Parameter(torch.tensor(0.5)), nn.Parameter(torch.tensor(0.5))
    ours, theirs = adam(net.parameters(), lr=1e-2), adam(ref.parameters(), lr=1e-2)
    make = adam if fused_also else (lambda ps, lr: torch.optim.Adam(ps, lr=lr))
    other, other_ref = make([scale], lr=0.1), make([scale_ref], lr=0.1)
    x = torch.randn(16, 6) * 50.0
    for _ in range(5):
        gradient_step(ours, (net(x) * scale).pow(2).mean(), 0.1, also=(other,))
        other_ref.zero_grad(set_to_none=True)
        _reference_step(theirs, (ref(x) * scale_ref).pow(2).mean(), 0.1)
        other_ref.step()
        _assert_same(net, ref)
        assert torch.equal(scale, scale_ref)


# --- maybe_compile ---------------------------------------------------------------------
_CALLS: dict[int, list[bool]] = {}


@torch._dynamo.disable
def _record(key: int, compiled: bool) -> None:
    """Runs on every call, outside any graph: ``compiled`` is what the caller's code saw
    (True in compiled code, traced once; False eagerly)."""
    _CALLS.setdefault(key, []).append(compiled)


class _Counted:
    """A loss-like method that records, per call, whether it ran compiled or eagerly."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    @property
    def compiled(self) -> list[bool]:
        return _CALLS.setdefault(id(self), [])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        _record(id(self), torch.compiler.is_compiling())
        return (x.sin() * self.scale).pow(2).sum()


def test_maybe_compile_off_is_the_function_itself():
    counted = _Counted(2.0)
    assert maybe_compile(counted.loss, False, "a loss") == counted.loss


def test_maybe_compile_answers_every_call_from_the_compiled_graph():
    """One dropped eager warm-up call (no gradient, the random state untouched), then every
    call runs the compiled code: a resumed run's first update is compiled as the
    uninterrupted run's was."""
    counted = _Counted(2.0)
    loss = maybe_compile(counted.loss, True, "a loss")
    x = torch.linspace(-1, 1, 7, requires_grad=True)
    expected = counted.loss(x).detach()
    counted.compiled.clear()
    state = torch.get_rng_state()
    values = [loss(x) for _ in range(5)]
    assert counted.compiled == [False] + [True] * 5
    assert torch.equal(torch.get_rng_state(), state)
    for value in values:
        torch.testing.assert_close(value.detach(), expected)
    values[-1].backward()              # its backward is compiled too
    torch.testing.assert_close(x.grad, (2 * 4.0 * x.sin() * x.cos()).detach())


def test_maybe_compile_gives_every_object_its_own_compiled_graphs():
    """torch.compile keeps at most recompile_limit graphs per code object; one object's
    graph does not serve another's, so without its own code the next object would run
    eagerly (bench workers build one model per run)."""
    x = torch.linspace(-1, 1, 5)
    objects = [_Counted(float(i + 1)) for i in range(4)]
    with torch._dynamo.config.patch(recompile_limit=2):
        for obj in objects:
            loss = maybe_compile(obj.loss, True, "a loss")
            for _ in range(4):
                loss(x)
            assert obj.compiled == [False] + [True] * 4, obj.scale


def test_maybe_compile_follows_tensors_and_grad_mode_and_fixes_python_values():
    """The compiled code keeps its guards on tensors and global state only: a new input
    shape or grad mode is traced again; a Python value it read is fixed at the trace."""
    counted = _Counted(2.0)
    loss = maybe_compile(counted.loss, True, "a loss")
    for size in (5, 7, 5):                              # shape changes: traced per shape
        x = torch.linspace(-1, 1, size, requires_grad=True)
        torch.testing.assert_close(loss(x), (x.sin() * 2.0).pow(2).sum())
    with torch.no_grad():
        assert not loss(x).requires_grad                # grad mode is guarded
    loss(x).backward()
    torch.testing.assert_close(x.grad, (2 * 4.0 * x.sin() * x.cos()).detach())
    counted.scale = 3.0                                 # not guarded: the trace's 2.0 stays
    torch.testing.assert_close(loss(x), (x.sin() * 2.0).pow(2).sum())


def test_maybe_compile_names_the_setting_when_the_compiler_fails(monkeypatch):
    def failing_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler here")

    original = torch.compile
    monkeypatch.setattr(torch, "compile",
                        lambda fn, **kw: original(fn, backend=failing_backend, **kw))
    loss = maybe_compile(_Counted(1.0).loss, True, "the critic loss")
    with pytest.raises(RuntimeError, match="torch.compile of the critic loss failed.*"
                                           "compile=False"):
        loss(torch.ones(3))


def test_maybe_compile_passes_the_functions_own_errors_through():
    def check(x):
        if x.shape[0] != 3:
            raise ValueError(f"x must have 3 rows, got {x.shape[0]}")
        return x * 2

    compiled = maybe_compile(check, True, "check")
    compiled(torch.ones(3))
    with pytest.raises(ValueError, match="got 4"):
        compiled(torch.ones(4))


# --- compile_acting --------------------------------------------------------------------
def _draw(state, generator):
    return torch.rand(state.shape, generator=generator)


def _act(state, noise):
    return (state + noise).argmax(-1)


def _sample(state, generator):
    return _act(state, _draw(state, generator))


def test_compile_acting_off_or_without_a_traced_form_is_the_sampler_itself():
    assert compile_acting(_sample, "acting", False, traced=(_draw, _act)) is _sample
    assert compile_acting(_sample, "acting", True) is _sample


def test_compiled_acting_draws_eagerly_and_acts_compiled():
    """The numbers come from the generator outside the graph, so a compiled acting takes
    the eager sampler's draws and gives its actions, the generator left as it leaves it."""
    compiled = compile_acting(_sample, "acting", True, traced=(_draw, _act))
    assert isinstance(compiled, CompiledActing)
    state = torch.randn(6, 4)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for seed in range(3):
        eager_gen, compiled_gen = (torch.Generator().manual_seed(seed) for _ in range(2))
        assert torch.equal(compiled(state, compiled_gen), _sample(state, eager_gen))
        assert torch.equal(compiled_gen.get_state(), eager_gen.get_state())
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs
