"""The SPFlow side of the engine benchmark: our node DAGs as SPFlow 0.0.48 structures.

SPFlow's classic API (the ``spn`` module) evaluates a circuit node by node in Python, one
numpy call per node, which is the reference point of ``benchmarks/engine.py``.

Install it with ``pip install --no-deps spflow==0.0.48``. Its classic API needs only numpy
and scipy, but its metadata asks for numpy<2.3, tensorflow, torchvision and a newer torch:
a plain ``pip install spflow==0.0.48`` replaces the pinned CPU torch with a CUDA build and
downgrades numpy.

Example::

    >>> from circuits import Categorical, Product, Sum
    >>> root = Sum([Product([Categorical(0, 2, probs=[.9, .1]), Categorical(1, 2)]),
    ...             Product([Categorical(0, 2, probs=[.2, .8]), Categorical(1, 2)])])
    >>> count_edges(root)
    6
    >>> import numpy as np
    >>> round(float(np.exp(spflow_log_likelihood(to_spflow(root), np.array([[0, -1]])))[0, 0]), 6)
    0.55
"""

from __future__ import annotations

import numpy as np

from circuits.nodes import Categorical, Node, Product, Sum

__all__ = ["SPFLOW_INSTALL", "import_spflow", "to_spflow", "count_edges", "spflow_data",
           "spflow_log_likelihood"]

SPFLOW_INSTALL = "pip install --no-deps spflow==0.0.48"


def import_spflow():
    """SPFlow's classic ``spn`` module, or ``ImportError`` saying how to install it."""
    try:
        import spn
    except ModuleNotFoundError:
        raise ImportError(f"SPFlow's classic API (module `spn`) is not installed. "
                          f"Install it with: {SPFLOW_INSTALL}") from None
    # spn.algorithms must be imported before the leaf modules: its __init__ registers every
    # leaf type's likelihood, and importing a leaf module first is a circular import.
    import spn.algorithms.Inference
    from spn.structure.leaves.parametric.Inference import add_parametric_inference_support

    add_parametric_inference_support()
    return spn


def _topological(root: Node) -> list[Node]:
    """Every node of the DAG once, children before parents (iterative: RAT-SPNs are deep)."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.children) if child not in seen)
    return order


def count_edges(root: Node) -> int:
    """Number of parent-child links of the sum and product nodes (shared nodes counted once)."""
    return sum(len(node.children) for node in _topological(root))


def to_spflow(root: Node):
    """An SPFlow structure with the same values as our node DAG rooted at ``root``.

    Shared sub-circuits stay shared (one SPFlow node per node object), so the result has
    the same nodes and edges. Leaves become ``Categorical(p=..., scope=var)``, sums keep
    their weights, products their children; scopes and ids are then set by SPFlow's own
    ``rebuild_scopes_bottom_up`` and ``assign_ids``.
    """
    import_spflow()
    from spn.structure.Base import Product as SProduct
    from spn.structure.Base import Sum as SSum
    from spn.structure.Base import assign_ids, rebuild_scopes_bottom_up
    from spn.structure.leaves.parametric.Parametric import Categorical as SCategorical

    made = {}
    for node in _topological(root):
        if isinstance(node, Categorical):
            made[node] = SCategorical(p=list(node.probs), scope=node.var)
        elif isinstance(node, Sum):
            made[node] = SSum(weights=list(node.weights), children=[made[c] for c in node.children])
        elif isinstance(node, Product):
            made[node] = SProduct(children=[made[c] for c in node.children])
        else:
            raise TypeError(f"to_spflow: unsupported node type {type(node).__name__}: {node!r}")
    out = made[root]
    rebuild_scopes_bottom_up(out)
    assign_ids(out)
    return out


def spflow_data(x) -> np.ndarray:
    """Our evidence layout (ints, ``-1`` = marginalised) as SPFlow's: float64, NaN = missing."""
    data = np.asarray(x, dtype=np.float64).copy()
    data[data < 0] = np.nan
    return data


def spflow_log_likelihood(spflow_root, x) -> np.ndarray:
    """``log p(x)`` under SPFlow for ``x [batch, num_vars]`` in our layout -> ``[batch, 1]``."""
    from spn.algorithms.Inference import log_likelihood

    return log_likelihood(spflow_root, spflow_data(x))
