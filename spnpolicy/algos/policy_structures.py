"""Which circuit a circuit policy uses: the built-in structures, or the user's own.

A joint policy's ``kind`` (spn-ac's ``policy`` setting) is one of

- a built-in name: ``selective`` (:func:`circuits.structures.selective` of ``width``),
  ``mean_field`` (independent agents), ``softmax`` (no circuit: all ``k**n`` joint actions);
- a name registered with :func:`register_policy` (usable from the CLI and in saved configs);
- a callable ``structure(num_agents, num_actions) -> Circuit``, or a :class:`~circuits.Circuit`.

A user's circuit is the structure only: its parameters are predicted per state by the
policy's encoder (one logit per circuit parameter). It must be over ``n`` variables with
``k`` states each, have at least one parameter, and be deterministic, since the actor
loss uses the exact entropy; smoothness and decomposability are checked when the
``Circuit`` is built.

```python
def narrow(n, k):                             # any builder of a deterministic circuit
    return selective(n, k, width=4)

register_policy("narrow", narrow)
spnpolicy.train("spn-ac", "climbing", policy="narrow")   # or policy=narrow
```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from circuits import Circuit, CircuitError
from circuits.structures import mean_field, selective

__all__ = ["BUILTIN_POLICIES", "check_policy", "policy_circuit", "register_policy",
           "registered_policies"]

BUILTIN_POLICIES = ("selective", "mean_field", "softmax")
_REGISTERED: dict[str, Callable[[int, int], Circuit] | Circuit] = {}


def registered_policies() -> tuple[str, ...]:
    """Every valid policy name: the built-in ones, then the registered ones."""
    return BUILTIN_POLICIES + tuple(_REGISTERED)


def _check_structure(name: str, structure: Any) -> None:
    if not isinstance(structure, Circuit) and not callable(structure):
        raise ValueError(f"{name} must be a policy name {registered_policies()}, a callable "
                         f"(num_agents, num_actions) -> Circuit or a Circuit, got "
                         f"{type(structure).__name__}")


def register_policy(name: str, structure: Callable[[int, int], Circuit] | Circuit) -> None:
    """Make ``structure`` (a builder ``(num_agents, num_actions) -> Circuit`` or a Circuit)
    available as ``policy=name``. Raises ValueError for a built-in name or a bad structure."""
    if not isinstance(name, str) or not name or name in BUILTIN_POLICIES:
        raise ValueError(f"name must be a non-empty string other than the built-in policies "
                         f"{BUILTIN_POLICIES}, got {name!r}")
    _check_structure("structure", structure)
    _REGISTERED[name] = structure


def check_policy(value: Any, name: str = "policy") -> None:
    """ValueError unless ``value`` is a valid policy name, builder or Circuit."""
    if isinstance(value, str):
        if value not in registered_policies():
            raise ValueError(f"{name} must be one of {registered_policies()} (or a callable "
                             f"or Circuit), got {value!r}")
        return
    _check_structure(name, value)


def policy_circuit(kind: Any, num_agents: int, num_actions: int, width: int) -> Circuit | None:
    """The circuit of policy ``kind`` for ``num_agents`` agents with ``num_actions`` actions
    (``None`` for ``softmax``), validated for use as a policy (see the module docstring)."""
    check_policy(kind, "kind")
    if kind == "softmax":
        return None
    if kind == "selective":
        return selective(num_agents, num_actions, width)
    if kind == "mean_field":
        return mean_field(num_agents, num_actions)
    structure = _REGISTERED.get(kind, kind) if isinstance(kind, str) else kind
    label = f"policy {kind!r}" if isinstance(kind, str) else f"the policy {type(kind).__name__}"
    if isinstance(structure, Circuit):
        circuit = Circuit(structure.root)  # a module of its own; nodes are immutable
    else:
        try:
            circuit = structure(num_agents, num_actions)
        except CircuitError as error:
            raise ValueError(f"{label}: building its circuit for {num_agents} agents and "
                             f"{num_actions} actions failed: {error}") from None
        if not isinstance(circuit, Circuit):
            raise ValueError(f"{label}: the builder must return a circuits.Circuit, got "
                             f"{type(circuit).__name__}")
    if circuit.num_vars != num_agents or set(circuit.num_states) != {num_actions}:
        raise ValueError(f"{label}: the circuit must have {num_agents} variables (agents) with "
                         f"{num_actions} states (actions) each, got {circuit.num_vars} "
                         f"variables with states {sorted(set(circuit.num_states))}")
    if not circuit.is_deterministic:
        raise ValueError(f"{label}: the circuit must be deterministic (each sum's children "
                         f"disjoint on some variable) for the exact entropy of the actor loss; "
                         f"it is not (circuits.structures.selective is)")
    if circuit.num_params == 0:
        raise ValueError(f"{label}: the circuit has no parameters for the policy to predict")
    return circuit
