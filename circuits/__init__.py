"""circuits: exact, batched, differentiable sum-product networks in PyTorch.

Build nodes (:class:`Categorical`, :class:`Sum`, :class:`Product`), wrap the root in a
:class:`Circuit` (validated and compiled once), then query it or its
:class:`CircuitDistribution`. Ready-made structures live in :mod:`circuits.structures`.
"""

from circuits.circuit import Circuit
from circuits.distribution import CircuitDistribution
from circuits.nodes import (ApproximateMPEWarning, Categorical, CircuitError, Node,
                            NotDeterministicError, Product, Sum)

__all__ = ["ApproximateMPEWarning", "Categorical", "Circuit", "CircuitDistribution",
           "CircuitError", "Node", "NotDeterministicError", "Product", "Sum"]
