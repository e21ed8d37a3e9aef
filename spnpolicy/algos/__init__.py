"""Algorithms: spn-ac and its variants, registered by name in :mod:`spnpolicy.algos.registry`."""

from spnpolicy.algos.registry import ALGORITHMS, get_algorithm, make_config

__all__ = ["ALGORITHMS", "get_algorithm", "make_config"]
