"""Exceptions raised by the circuits package."""

__all__ = ["CircuitError", "NotDeterministicError"]


class CircuitError(ValueError):
    """An invalid circuit structure or parameter; the message names the node and variables."""


class NotDeterministicError(ValueError):
    """A query that is exact only on deterministic circuits was asked of a non-deterministic one."""
