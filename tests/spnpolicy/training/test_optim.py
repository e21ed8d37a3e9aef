"""``clip_gradients`` leaves exactly the gradients ``nn.utils.clip_grad_norm_`` leaves."""

import math

import pytest
import torch
from torch import nn

from spnpolicy.training.optim import clip_gradients, gradient_step


def _parameters(scale: float, special: float | None = None) -> list[nn.Parameter]:
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(shape)) for shape in ((3, 4), (4,), (2, 2, 2), (5,))]
    for p in params[:-1]:           # the last one has no gradient
        p.grad = torch.randn_like(p) * scale
    if special is not None:
        params[0].grad[1, 2] = special
    return params


@pytest.mark.parametrize("scale, special", [(1e-3, None), (0.5, None), (3.0, None),
                                            (100.0, None), (1.0, math.nan), (1.0, math.inf)])
@pytest.mark.parametrize("max_norm", [0.5, 2.0, 10.0])
def test_clip_gradients_equals_clip_grad_norm(scale, special, max_norm):
    ours, torchs = _parameters(scale, special), _parameters(scale, special)
    clip_gradients(ours, max_norm)
    nn.utils.clip_grad_norm_(torchs, max_norm)
    for a, b in zip(ours, torchs):
        if b.grad is None:
            assert a.grad is None
        else:               # bit for bit, NaN where torch's has NaN
            assert torch.equal(a.grad.nan_to_num(7.0), b.grad.nan_to_num(7.0))
            assert torch.equal(a.grad.isnan(), b.grad.isnan())


def test_clip_gradients_clips_above_the_norm_only():
    params = _parameters(100.0)
    clip_gradients(params, 1.0)
    total = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params[:-1]]))
    assert abs(float(total) - 1.0) < 1e-5
    small = _parameters(1e-3)
    before = [p.grad.clone() for p in small[:-1]]
    clip_gradients(small, 1.0)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, small))
    clip_gradients([nn.Parameter(torch.ones(2))], 1.0)      # no gradient at all: nothing


def test_gradient_step_clips_each_group():
    torch.manual_seed(0)
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=1.0)
    gradient_step(optimizer, (a * 100.0).sum() + (b * 0.01).sum(), max_norm=1.0)
    torch.testing.assert_close(-a.detach(), torch.full((3,), 1 / math.sqrt(3)))
    torch.testing.assert_close(-b.detach(), torch.full((3,), 0.01))
