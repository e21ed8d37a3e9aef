"""``TracedSteps`` steps as ``EagerSteps`` do (autograd, ``gradient_step``, torch's Adam),
eagerly and inside ``torch.compile``, and refuses what it cannot step."""

import copy
import functools

import pytest
import torch
from torch import nn

from spnpolicy.training.optim import (CompiledLosses, CompiledUpdate, EagerSteps, TracedSteps,
                                      adam, compile_update)


class _Scale(torch.autograd.Function):
    """``x * w`` by hand, ``w`` a parameter passed straight in: inside torch.compile such a
    parameter got a zero gradient before TracedSteps swapped in views."""

    @staticmethod
    def forward(x, w):
        return x * w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return (grad * w if ctx.needs_input_grad[0] else None,
                grad * x if ctx.needs_input_grad[1] else None)


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 3))
        self.unused = nn.Parameter(torch.ones(2))       # no loss reaches it
        self.temperature = nn.Parameter(torch.tensor(0.3))

    def loss(self, x, y):
        out = _Scale.apply(self.body(x), self.scale)
        fit = ((out - y) ** 2).mean()
        return fit + self.temperature.exp() * 0.1, fit


def _setup(lr=1e-2, **adam_kwargs):
    torch.manual_seed(0)
    model = _Model()
    main = [p for n, p in model.named_parameters() if n != "temperature"]
    if adam_kwargs:
        opt = torch.optim.Adam(main, lr=lr, **adam_kwargs)
    else:
        opt = adam(main, lr=lr)
    return model, opt, adam([model.temperature], lr=3e-2)


def _update(steps, model, opt, extra, x, y, max_norm):
    total, fit = steps(opt, lambda: model.loss(x, y), max_norm, also=(extra,))
    return fit.detach()


def _batches(count=6, scale=1.0):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 5, generator=gen) * scale, torch.randn(16, 3, generator=gen))
            for _ in range(count)]


def _probed(max_norm: float, scale: float = 1.0, **adam_kwargs):
    """Two set-ups from the same seed, the second's ``TracedSteps`` probed on the first of
    6 batches: ``(eager, traced, steps, batches)``."""
    eager, traced = _setup(**adam_kwargs), _setup(**adam_kwargs)
    steps = TracedSteps({"model": traced[0]})
    batches = _batches(scale=scale)
    with steps.probing():
        _update(steps, *traced, *batches[0], max_norm)
    return eager, traced, steps, batches


def _assert_same(a, b, rtol, atol):
    (ma, oa, ea), (mb, ob, eb) = a, b
    for (name, p), q in zip(ma.named_parameters(), mb.parameters()):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol, msg=name)
    for x, y in ((oa, ob), (ea, eb)):
        sa, sb = x.state_dict()["state"], y.state_dict()["state"]
        assert sa.keys() == sb.keys()
        for key in sa:
            for field in ("step", "exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(sa[key][field], sb[key][field], rtol=rtol, atol=atol)


@pytest.mark.parametrize("max_norm, scale", [(0.0, 1.0), (10.0, 1.0), (0.05, 3.0)])
@pytest.mark.parametrize("adam_kwargs", [{}, {"weight_decay": 0.1}])
def test_traced_steps_equal_eager_steps(max_norm, scale, adam_kwargs):
    """Eagerly, to float32 rounding: the same parameters and Adam states after 6 steps,
    with clipping off, inactive and active, the ``also`` optimiser unclipped; the unused
    parameter keeps its value and gets no state, as torch's step skips it."""
    eager, traced, steps, batches = _probed(max_norm, scale, **adam_kwargs)
    for x, y in batches:
        fit_e = _update(EagerSteps(), *eager, x, y, max_norm)
        fit_t = _update(steps, *traced, x, y, max_norm)
        torch.testing.assert_close(fit_t, fit_e, rtol=1e-6, atol=1e-7)
    _assert_same(eager, traced, rtol=1e-5, atol=1e-7)
    assert torch.equal(traced[0].unused, torch.ones(2))
    assert traced[0].unused not in traced[1].state


def test_traced_steps_compiled_equal_eager_steps():
    """Inside one torch.compile graph, the gradient through the custom Function and an
    active clipping included."""
    eager, traced, steps, batches = _probed(0.05, scale=3.0)
    compiled = torch.compile(lambda x, y: _update(steps, *traced, x, y, 0.05), dynamic=False)
    for x, y in batches:
        fit_e = _update(EagerSteps(), *eager, x, y, 0.05)
        fit_t = compiled(x, y)
        torch.testing.assert_close(fit_t, fit_e, rtol=1e-5, atol=1e-6)
    _assert_same(eager, traced, rtol=1e-4, atol=1e-6)
    before = eager[0].scale.detach().clone()
    assert not torch.equal(before, torch.linspace(0.5, 1.5, 3))     # the Function's grad


def test_a_compiled_update_equals_the_eager_update():
    """``CompiledUpdate``: the update written against a steps callable, probed on its first
    call (which steps nothing) and compiled from outside, steps as ``EagerSteps`` do."""
    eager, traced = _setup(), _setup()
    compiled = CompiledUpdate(lambda steps, x, y: _update(steps, *traced, x, y, 0.05),
                              {"model": traced[0]}, "the update")
    for x, y in _batches(scale=3.0):
        fit_e = _update(EagerSteps(), *eager, x, y, 0.05)
        torch.testing.assert_close(compiled(x, y), fit_e, rtol=1e-5, atol=1e-6)
    _assert_same(eager, traced, rtol=1e-4, atol=1e-6)
    assert all(float(st["step"]) == 6 for st in traced[1].state.values())


def test_compiled_losses_step_as_eager_steps():
    """``compile_update(..., whole=False)``: each objective, ``functools.partial(loss,
    *tensors)``, compiled apart and stepped eagerly, steps as ``EagerSteps`` do; any other
    objective is refused."""
    eager, compiled = _setup(), _setup()

    def update(steps, model, opt, extra, x, y):
        total, fit = steps(opt, functools.partial(model.loss, x, y), 0.05, also=(extra,))
        return fit.detach()

    step = compile_update(update, {"model": compiled[0]}, "the update", True, whole=False)
    for x, y in _batches(scale=3.0):
        torch.testing.assert_close(step(*compiled, x, y), update(EagerSteps(), *eager, x, y),
                                   rtol=1e-5, atol=1e-6)
    _assert_same(eager, compiled, rtol=1e-4, atol=1e-6)
    with pytest.raises(TypeError, match="functools.partial"):
        CompiledLosses()(compiled[1], lambda: compiled[0].loss(*_batches()[0]))


def test_the_probe_makes_torchs_state_and_steps_nothing():
    model, opt, extra = _setup()
    reference = copy.deepcopy(opt)
    params = [p.detach().clone() for p in model.parameters()]
    steps = TracedSteps({"model": model})
    with steps.probing():
        _update(steps, model, opt, extra, *_batches(1)[0], 1.0)
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    # torch's own first step makes the same entries
    for p in reference.param_groups[0]["params"]:
        p.grad = torch.zeros_like(p)
    reference.step()
    for p, q in zip(opt.param_groups[0]["params"], reference.param_groups[0]["params"]):
        if p is model.unused:           # no gradient: torch's step makes no state for it
            assert p not in opt.state
            continue
        mine, torchs = opt.state[p], reference.state[q]
        assert mine.keys() == torchs.keys()
        for key in mine:
            assert (mine[key].dtype, mine[key].device, mine[key].shape) == \
                (torchs[key].dtype, torchs[key].device, torchs[key].shape)


def test_a_state_dict_of_traced_steps_loads_into_torchs_adam():
    """A checkpoint written after traced steps resumes under eager steps as if eager all along."""
    eager, traced, steps, batches = _probed(1.0)
    for x, y in batches[:3]:
        _update(EagerSteps(), *eager, x, y, 1.0)
        _update(steps, *traced, x, y, 1.0)
    resumed = _setup()
    resumed[0].load_state_dict(traced[0].state_dict())
    resumed[1].load_state_dict(traced[1].state_dict())
    resumed[2].load_state_dict(traced[2].state_dict())
    for x, y in batches[3:]:
        _update(EagerSteps(), *eager, x, y, 1.0)
        _update(EagerSteps(), *resumed, x, y, 1.0)
    _assert_same(eager, resumed, rtol=1e-5, atol=1e-7)


def test_a_step_before_any_probe_is_refused():
    model, opt, extra = _setup()
    with pytest.raises(RuntimeError, match="probing"):
        _update(TracedSteps({"model": model}), model, opt, extra, *_batches(1)[0], 1.0)


@pytest.mark.parametrize("make, match", [
    (lambda ps: torch.optim.SGD(ps, lr=0.1), "Adam only"),
    (lambda ps: torch.optim.Adam(ps, lr=0.1, amsgrad=True), "amsgrad"),
    (lambda ps: torch.optim.Adam(ps, lr=torch.tensor(0.1)), "tensor learning rate"),
])
def test_what_it_cannot_step_is_refused(make, match):
    model, _, extra = _setup()
    opt = make([p for n, p in model.named_parameters() if n != "temperature"])
    steps = TracedSteps({"model": model})
    with pytest.raises(ValueError, match=match), steps.probing():
        _update(steps, model, opt, extra, *_batches(1)[0], 1.0)


def test_parameters_outside_its_modules_are_refused():
    model, opt, extra = _setup()
    steps = TracedSteps({"body": model.body})         # scale, unused, temperature not given
    with pytest.raises(ValueError, match="belong to none of its modules"), steps.probing():
        _update(steps, model, opt, extra, *_batches(1)[0], 1.0)
