"""Every algorithm's optimiser and one optimiser step of a loss, eager or traced, and the
compilation of an update from outside the algorithm; shared by both training loops.

:func:`adam` builds every optimiser; :func:`gradient_step` is one eager step of a loss.
An update written against a *steps* callable, ``steps(optimizer, objective, max_norm,
also) -> outputs``, runs either way:

- :class:`EagerSteps`: ``objective()`` then :func:`gradient_step` on its first output
  (autograd, clipping, torch's Adam): the eager update.
- :class:`TracedSteps`: the same step as pure tensor ops (the gradients by ``torch.func``,
  clipping, and torch's multi-tensor Adam on the optimiser's own state, in place), so
  that a whole update, both losses with their gradients and every optimiser step,
  compiles into one graph: no autograd engine, no per-loss graph calls or guard checks at
  run time.

```python
def update(steps, state, target):           # the body every update runs
    loss, = steps(critic_optimizer, lambda: (critic_loss(state, target),), max_norm=10.0)
    return loss
update(EagerSteps(), state, target)         # eagerly
compiled = CompiledUpdate(update, {"critic": critic}, "the update")
compiled(state, target)                     # one graph, TracedSteps inside
```

:func:`compile_update` applies the compilation from outside the algorithm, to its update:
eagerly with :class:`EagerSteps`; whole with :class:`CompiledUpdate`, which probes the
update once eagerly (which parameters each loss reaches) and traces it with
:class:`TracedSteps` through :func:`maybe_compile`; or, where the
losses cannot be one graph with the steps, with :class:`CompiledLosses`: each objective,
given as ``functools.partial(loss, *tensors)``, compiled apart (forward and backward) and
stepped eagerly.

:func:`compile_acting` does the same for an algorithm's acting, ``sample(state, generator)``:
where the algorithm also gives it as random numbers drawn from the generator and a pure
function of them, :class:`CompiledActing` draws the numbers eagerly and runs the function
compiled.

A traced step computes what the eager one does, up to float rounding (torch's multi-tensor
Adam beside the fused kernel): tested against :class:`EagerSteps` in
``tests/spnpolicy/training/test_traced_step.py``.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad_and_value
from torch.optim import optimizer as torch_optimizer
from torch.optim.adam import adam as adam_update

__all__ = ["CompiledActing", "CompiledLosses", "CompiledUpdate", "EagerSteps", "TracedSteps",
           "adam", "clip_coefficient", "compile_acting", "compile_update", "gradient_step",
           "maybe_compile"]


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
    to ``max_norm`` as ``clip_grad_norm_`` does (0: no clipping) and step. ``also``:
    optimisers of other parameters that ``loss`` reaches (spn-ac's temperature), zeroed and
    stepped with it, unclipped.

    A plain torch Adam (every optimiser :func:`adam` builds; :func:`_unsupported` says
    which are not) is stepped by torch's functional ``adam`` on the optimiser's own state,
    the update its ``step`` makes, bit for bit, without the per-call Python of ``step`` and
    ``zero_grad`` (profiler ranges, hook and state bookkeeping): the route of
    :class:`TracedSteps` too. Any other optimiser, or one with hooks, takes its own
    ``zero_grad`` and ``step``.
    """
    optimizers = (optimizer, *also)
    functional = [_unsupported(opt) is None for opt in optimizers]
    for opt, plain in zip(optimizers, functional):
        if plain:
            for group in opt.param_groups:
                for p in group["params"]:
                    p.grad = None
        else:
            opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for i, (opt, plain) in enumerate(zip(optimizers, functional)):
            for group in opt.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                grads = [p.grad for p in params]
                if i == 0 and max_norm > 0 and grads:
                    torch._foreach_mul_(grads, _clip_scale(grads, max_norm))
                if plain:
                    _init_state(opt, group, params)
                    _adam(opt, group, params, grads)
            if not plain:
                opt.step()


def clip_coefficient(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_``'s scale before its clamp at 1: ``max_norm / (norm + 1e-6)``, the
    norm taken over the per-tensor norms (0-d tensor; pure ops, so traceable)."""
    return max_norm / (torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) + 1e-6)



# --- steps callables: eager, traced, compiled from outside -----------------------------
#: ``objective()`` returns the loss to minimise first, then anything else to hand back.
Objective = Callable[[], Sequence[torch.Tensor]]


class EagerSteps:
    """``steps(optimizer, objective, max_norm=0.0, also=())``: ``out = objective()``, then
    :func:`gradient_step` of ``optimizer`` (and ``also``) on
    ``out[0]``; returns ``out``."""

    def __call__(self, optimizer: torch.optim.Optimizer, objective: Objective,
                 max_norm: float = 0.0, also: Iterable[torch.optim.Optimizer] = ()):
        out = objective()
        gradient_step(optimizer, out[0], max_norm, also)
        return out


class CompiledLosses(EagerSteps):
    """:class:`EagerSteps` whose objectives run compiled: each ``objective`` is
    ``functools.partial(loss, *tensors)``, and ``loss`` (its forward and backward) is
    compiled once by :func:`maybe_compile`, named in a compile
    failure from its function name (``_critic_loss``: "the critic loss")."""

    def __init__(self) -> None:
        self._compiled: dict[Callable, Callable] = {}

    def __call__(self, optimizer: torch.optim.Optimizer, objective: Objective,
                 max_norm: float = 0.0, also: Iterable[torch.optim.Optimizer] = ()):
        if not isinstance(objective, functools.partial):
            raise TypeError("CompiledLosses: give each objective as "
                            "functools.partial(loss, *tensors)")
        loss = self._compiled.get(objective.func)
        if loss is None:
            name = getattr(objective.func, "__name__", "loss").strip("_").replace("_", " ")
            loss = self._compiled[objective.func] = maybe_compile(objective.func, True,
                                                                  f"the {name}")
        return super().__call__(optimizer, functools.partial(loss, *objective.args,
                                                             **objective.keywords),
                                max_norm, also)


def compile_update(update: Callable, modules: Mapping[str, nn.Module], name: str,
                   enabled: bool, whole: bool = True) -> Callable:
    """``update(steps, *tensors)`` as the algorithm calls it, ``fn(*tensors)``: with
    :class:`EagerSteps` when not ``enabled``; else compiled whole (:class:`CompiledUpdate`
    over ``modules``) when ``whole``, or each loss apart (:class:`CompiledLosses`) where the
    losses branch on values and cannot be traced with the steps into one graph."""
    if not enabled:
        return functools.partial(update, EagerSteps())
    if whole:
        return CompiledUpdate(update, modules, name)
    return functools.partial(update, CompiledLosses())


class CompiledUpdate:
    """``update(steps, *tensors)``, written once against a steps callable, compiled whole:
    the losses, their gradients and every optimiser step as one graph
    (:func:`maybe_compile` of the update with :class:`TracedSteps`
    over ``modules``, every module whose parameters its optimisers hold). The compiled
    code's warm-up is :meth:`probe`; ``name`` names the update in a compile failure.
    Call it with ``*tensors``; the eager update is ``update(EagerSteps(), *tensors)``.
    """

    def __init__(self, update: Callable, modules: Mapping[str, nn.Module], name: str) -> None:
        self.update, self.steps = update, TracedSteps(modules)
        self._compiled = maybe_compile(self.traced, True, name, warmup=self.probe)

    def traced(self, *tensors):
        """The update with the traced steps: what torch.compile traces."""
        return self.update(self.steps, *tensors)

    def probe(self, *tensors) -> None:
        """The update once, eagerly, inside :meth:`TracedSteps.probing`: which parameters
        each loss reaches, and the optimisers' state (nothing steps)."""
        with self.steps.probing():
            self.update(self.steps, *tensors)

    def __call__(self, *tensors):
        return self._compiled(*tensors)


def compile_acting(sample: Callable, name: str, enabled: bool,
                   traced: tuple[Callable, Callable] | None = None) -> Callable:
    """``sample(state, generator) -> actions``, an algorithm's acting, as the algorithm calls
    it: ``sample`` itself when not ``enabled`` or where acting has no traceable form
    (``traced`` None); else :class:`CompiledActing` of ``traced = (draw, act)``, the same
    acting split at its random numbers."""
    if not enabled or traced is None:
        return sample
    return CompiledActing(*traced, name)


class CompiledActing:
    """Acting compiled: ``fn(state, generator)`` is ``act(state, draw(state, generator))``,
    ``draw`` eager (a generator cannot enter a graph) and ``act`` compiled by
    :func:`maybe_compile` (``name`` names it in a compile failure). ``draw`` takes from the
    generator the numbers, in the order, that the eager sampler takes, and ``act`` is a
    pure function of them, so the actions are the eager ones for the same generator."""

    def __init__(self, draw: Callable, act: Callable, name: str) -> None:
        self.draw, self.act = draw, act
        self._compiled = maybe_compile(act, True, name)

    def __call__(self, state: torch.Tensor, generator: torch.Generator | None):
        return self._compiled(state, self.draw(state, generator))


class _Call(nn.Module):
    """Holds the modules whose parameters a traced step differentiates; ``forward(fn)``
    is ``fn()``, so that ``functional_call`` swaps their parameters for the duration."""

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.modules_ = nn.ModuleDict(modules)

    def forward(self, fn: Callable):
        return fn()


class TracedSteps:
    """The call of :class:`EagerSteps`, as pure tensor ops for ``torch.compile``.

    ``modules``: every module whose parameters the optimisers hold (by name, as an
    algorithm keeps them). A call differentiates ``objective()[0]`` with respect to the
    parameters of ``optimizer`` and ``also`` that it reaches (``torch.func``, with the
    parameters swapped in by ``functional_call``), clips each of ``optimizer``'s
    parameter groups to ``max_norm`` as ``clip_grad_norm_`` does (``also`` unclipped, as in
    :func:`gradient_step`), and applies torch's Adam update
    (``torch.optim.adam.adam``) to the parameters and the optimiser's state (``step``,
    ``exp_avg``, ``exp_avg_sq``) in place.

    Which parameters a loss reaches is found once, eagerly, inside :meth:`probing` (a
    parameter it does not reach keeps its value and state, as torch's step skips a
    parameter without a gradient); the probe also makes each optimiser's state as torch's
    first step would. Only plain Adam (torch's ``Adam`` without AMSGrad, ``maximize`` or
    a learning rate tensor, its step counts on the parameters' device as a fused Adam
    keeps them) is supported; ``lr``, ``betas``, ``eps`` and ``weight_decay``
    are read at each call (fixed at the trace, when compiled).
    """

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self.model = _Call(modules)
        self.names = {id(p): name for name, p in
                      self.model.named_parameters(remove_duplicate=False)}
        self.reached: dict[int, list[list[torch.Tensor]]] = {}
        self._probing = False

    @contextlib.contextmanager
    def probing(self):
        """Calls inside run the objectives eagerly and record, per optimiser, the
        parameters each reaches (no parameter or state changes but the state's creation)."""
        self._probing = True
        try:
            yield self
        finally:
            self._probing = False

    def __call__(self, optimizer: torch.optim.Optimizer, objective: Objective,
                 max_norm: float = 0.0, also: Iterable[torch.optim.Optimizer] = ()):
        optimizers = (optimizer, *also)
        if self._probing:
            return self._probe(optimizers, objective)
        missing = [o for o in optimizers if id(o) not in self.reached]
        if missing:
            raise RuntimeError("TracedSteps: a step of an optimiser that no probe has seen; "
                               "run the update once inside probing() first")
        params = [p for o in optimizers for group in self.reached[id(o)] for p in group]
        names = [self.names[id(p)] for p in params]

        def loss(*tensors):
            # views: inside torch.compile (torch 2.13), a tensor swapped in as it is and fed
            # straight to a custom autograd.Function gets a zero gradient; a view gets the
            # right one (tests/spnpolicy/training/test_traced_step.py)
            swapped = {name: t.view_as(t) for name, t in zip(names, tensors)}
            out = functional_call(self.model, swapped, (objective,))
            return out[0], out

        grads, (_, out) = grad_and_value(loss, argnums=tuple(range(len(params))),
                                         has_aux=True)(*(p.detach() for p in params))
        grads = list(grads)
        with torch.no_grad():
            for i, opt in enumerate(optimizers):
                for group, reached in zip(opt.param_groups, self.reached[id(opt)]):
                    taken, grads = grads[:len(reached)], grads[len(reached):]
                    if i == 0 and max_norm > 0:
                        taken = _clipped(taken, max_norm)
                    _adam(opt, group, reached, taken)
        return out

    def _probe(self, optimizers: Sequence[torch.optim.Optimizer], objective: Objective):
        for opt in optimizers:
            reason = _unsupported(opt)
            if reason is not None:
                raise ValueError(f"TracedSteps steps a plain torch.optim.Adam; {reason}")
        params = [p for o in optimizers for g in o.param_groups for p in g["params"]]
        unknown = [p for p in params if id(p) not in self.names]
        if unknown:
            raise ValueError(f"TracedSteps: {len(unknown)} optimised parameter(s) of shapes "
                             f"{[list(p.shape) for p in unknown]} belong to none of its modules")
        with torch.enable_grad():
            out = objective()
            grads = torch.autograd.grad(out[0], params, allow_unused=True)
        used = {id(p) for p, g in zip(params, grads) if g is not None}
        for opt in optimizers:
            self.reached[id(opt)] = [[p for p in g["params"] if id(p) in used]
                                     for g in opt.param_groups]
            for group, reached in zip(opt.param_groups, self.reached[id(opt)]):
                _init_state(opt, group, reached)
            for p in (p for group in self.reached[id(opt)] for p in group):
                if opt.state[p]["step"].device != p.device:
                    raise ValueError(f"TracedSteps: Adam's step counts must be on the "
                                     f"parameters' device {p.device} (a fused or capturable "
                                     f"Adam), got {opt.state[p]['step'].device}")
        return out


def _unsupported(optimizer: torch.optim.Optimizer) -> str | None:
    """Why the shared Adam route (:func:`_adam`) cannot step ``optimizer``; None where it can:
    a torch ``Adam`` without hooks (its own, global, or AMP's gradient scale), AMSGrad,
    ``maximize``, decoupled weight decay, ``capturable``, ``differentiable`` or a tensor
    learning rate."""
    if type(optimizer) is not torch.optim.Adam:
        return f"got {type(optimizer).__name__} (Adam only)"
    for group in optimizer.param_groups:
        for key in ("amsgrad", "maximize", "decoupled_weight_decay", "capturable",
                    "differentiable"):
            if group.get(key):
                return f"Adam with {key}=True is not supported"
        if torch.is_tensor(group["lr"]):
            return "Adam with a tensor learning rate is not supported"
    hooks = (optimizer._optimizer_step_pre_hooks, optimizer._optimizer_step_post_hooks,
             torch_optimizer._global_optimizer_pre_hooks,
             torch_optimizer._global_optimizer_post_hooks)
    if any(hooks) or getattr(optimizer, "grad_scale", None) is not None or \
            getattr(optimizer, "found_inf", None) is not None:
        return "its step has hooks, which only its own step() runs"
    return None


def _init_state(optimizer: torch.optim.Adam, group: dict,
                params: Iterable[torch.Tensor]) -> None:
    """The Adam state of each of ``params`` (of parameter group ``group``) as torch's first
    step makes it, where it has none (torch makes none for a parameter without a
    gradient); a fused group keeps its step counts on the parameters' device."""
    fused = bool(group.get("fused"))
    for p in params:
        if optimizer.state.get(p):
            continue
        state = optimizer.state[p]
        dtype = torch.float64 if torch.get_default_dtype() == torch.float64 and not fused \
            else torch.float32
        state["step"] = torch.zeros((), dtype=dtype, device=p.device if fused else "cpu")
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def _clip_scale(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_``'s factor on ``grads`` (one device): ``min(1, max_norm / (norm +
    1e-6))``."""
    return torch.clamp(clip_coefficient(grads, max_norm), max=1.0)


def _clipped(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """``grads`` scaled as ``clip_grad_norm_`` scales them (out of place, for tracing)."""
    if not grads:
        return grads
    scale = _clip_scale(grads, max_norm)
    return [g * scale for g in grads]


def _adam(optimizer: torch.optim.Adam, group: dict, params: list[torch.Tensor],
          grads: list[torch.Tensor]) -> None:
    """torch's Adam update of ``params`` with ``grads``, on ``optimizer``'s state, in place:
    torch's functional ``adam``, which ``Adam.step`` calls, with the group's settings
    (fused, foreach or one tensor at a time, as ``step`` chooses); while torch.compile traces,
    its multi-tensor form with the step counts as tensor arithmetic (``capturable``),
    which the graph keeps (``optimizer.step()`` itself breaks the graph before and after
    it)."""
    if not params:
        return
    states = [optimizer.state[p] for p in params]
    beta1, beta2 = group["betas"]
    traced = torch.compiler.is_compiling()
    adam_update(params, grads, [st["exp_avg"] for st in states],
                [st["exp_avg_sq"] for st in states], [], [st["step"] for st in states],
                foreach=True if traced else group["foreach"],
                fused=None if traced else group["fused"], capturable=traced,
                has_complex=any(torch.is_complex(p) for p in params), amsgrad=False,
                beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
                eps=group["eps"], maximize=False)


# --- compilation -----------------------------------------------------------------------
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
    :meth:`TracedSteps.probing`). It is traced again only
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
