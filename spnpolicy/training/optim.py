"""Every algorithm's optimiser, one optimiser step of a loss, and the optional compilation
of the losses, shared by both training loops."""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["adam", "clip_coefficient", "gradient_step", "maybe_compile"]


def adam(params: Iterable[torch.Tensor], lr: float) -> torch.optim.Adam:
    """``torch.optim.Adam(params, lr)``, its update fused into one kernel per step where this
    torch has one for the parameters' device (CPU from torch 2.4, CUDA), else torch's default.

    Every algorithm builds its optimisers here, so that their training speeds compare like
    with like: on CPU torch's default is a Python loop over the parameters, the fused
    kernel one call per step. The two compute the same update up to float rounding.
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):     # no fused kernel for this torch and device
        return torch.optim.Adam(params, lr=lr)


def gradient_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                  max_norm: float = 0.0, also: Iterable[torch.optim.Optimizer] = ()) -> None:
    """Zero the gradients, backpropagate ``loss``, clip each parameter group's gradient norm
    to ``max_norm`` (0: no clipping) and step. ``also``: optimisers of other parameters that
    ``loss`` reaches (spn-ac's temperature), zeroed and stepped with it, unclipped.

    Torch's own ``zero_grad(set_to_none=True)``, ``clip_grad_norm_`` and ``step``: the
    fused or foreach update that :func:`adam` chose.
    """
    optimizers = (optimizer, *also)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if max_norm > 0:
        for group in optimizer.param_groups:
            nn.utils.clip_grad_norm_(group["params"], max_norm)
    for opt in optimizers:
        opt.step()


def clip_coefficient(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_``'s scale before its clamp at 1: ``max_norm / (norm + 1e-6)``, the
    norm taken over the per-tensor norms (0-d tensor; pure ops, so traceable)."""
    return max_norm / (torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) + 1e-6)


def maybe_compile(fn: Callable, enabled: bool, name: str,
                  warmup: Callable | None = None) -> Callable:
    """``fn`` itself, or with ``enabled`` ``torch.compile(fn, dynamic=False)``: the same
    values up to float rounding (its backward compiled too), every call answered by the
    compiled code, so that a run resumed in a new process steps as the uninterrupted one.

    Before its first compiled call, ``fn`` runs once more eagerly, without gradients and on
    a forked random state, its result dropped: the plans and tables it builds lazily then
    exist before the trace reads them as constants (one built during the trace would trace
    it again). ``warmup``, if given, is called with the same arguments instead (on the
    forked random state, in the caller's grad mode): for a ``fn`` that must not run
    twice, such as a whole update that steps its optimisers (its probe,
    :meth:`~spnpolicy.training.traced_step.TracedSteps.probing`). It is traced again only
    when a tensor it reads changes shape, dtype, device or aliasing, or when the grad mode
    or another global torch state does (batch shapes are fixed in training): the compiled
    code keeps only those guards (:data:`KEPT_GUARDS`).
    Python values it reads (config fields, the circuit's structure, module attributes and
    hooks) are taken as fixed at the trace: each compiled function belongs to one model,
    built once, so checking its Python guards at every call would only cost time.

    A failure of the compilation (on CPU it needs a C++ compiler) is re-raised naming
    ``name`` and the ``compile`` setting that asked for it.
    """
    if not enabled:
        return fn
    try:
        compiled = torch.compile(_own_code(fn), dynamic=False,
                                 options={"guard_filter_fn": _kept_guards})
    except (RuntimeError, TypeError):      # a torch without guard filters checks them all
        compiled = torch.compile(_own_code(fn), dynamic=False)
    warm = [False]
    warm_up = warmup if warmup is not None else torch.no_grad()(fn)

    def call(*args):
        if not warm[0]:
            with torch.random.fork_rng(devices=_cuda_devices(args)):
                warm_up(*args)
            warm[0] = True
        try:
            return compiled(*args)
        except Exception as error:
            if not type(error).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise                      # the function's own error, not the compiler's
            first = str(error).strip().splitlines()[:1]
            raise RuntimeError(f"compile=True: torch.compile of {name} failed "
                               f"({type(error).__name__}: {first[0] if first else ''}); train "
                               f"with compile=False to run it eagerly") from error

    return call


#: The guards ``maybe_compile``'s code checks at every call: on the tensors it reads, and on
#: global torch state.
KEPT_GUARDS = frozenset({"TENSOR_MATCH", "DUPLICATE_INPUT", "NO_TENSOR_ALIASING", "SHAPE_ENV",
                         "GRAD_MODE", "GLOBAL_STATE", "TORCH_FUNCTION_STATE", "DEFAULT_DEVICE",
                         "DETERMINISTIC_ALGORITHMS", "AUTOGRAD_SAVED_TENSORS_HOOKS"})


def _kept_guards(entries) -> list[bool]:
    return [entry.guard_type in KEPT_GUARDS for entry in entries]


def _cuda_devices(args) -> list[int]:
    """The CUDA devices of the tensors in ``args`` (whose random states a fork must keep)."""
    return sorted({a.device.index or 0 for a in args
                   if isinstance(a, torch.Tensor) and a.device.type == "cuda"})


def _own_code(fn: Callable) -> Callable:
    """``fn`` (a function or bound method) on its own copy of its code object.

    torch.compile keeps the graphs it compiled per code object, at most
    ``torch._dynamo.config.recompile_limit`` (8) of them, and a graph compiled for one
    model's losses does not serve another's: without a copy, the ninth model built in one
    process (bench workers train run after run) would silently run eagerly.
    """
    func = getattr(fn, "__func__", fn)
    own = types.FunctionType(func.__code__.replace(), func.__globals__, func.__name__,
                             func.__defaults__, func.__closure__)
    own.__kwdefaults__, own.__qualname__ = func.__kwdefaults__, func.__qualname__
    self = getattr(fn, "__self__", None)
    return own if self is None else types.MethodType(own, self)
