"""Exceptions and warnings of the circuits package."""

__all__ = ["ApproximateMPEWarning", "CircuitError", "NotDeterministicError"]


class CircuitError(ValueError):
    """An invalid circuit structure or parameter; the message names the node and variables."""


class NotDeterministicError(ValueError):
    """A query that is exact only on deterministic circuits was asked of a non-deterministic one."""


class ApproximateMPEWarning(UserWarning):
    """``mode`` or ``mpe()`` of a circuit that is not (structurally) deterministic: the answer
    is the max-product approximation, the assignment of the most probable induced tree,
    not necessarily the most probable assignment. Python's default filter shows it once
    per calling line; ``warnings.simplefilter("ignore", ApproximateMPEWarning)`` silences it."""
