"""Adapters to other RL libraries, each an optional extra (``pip install -e ".[benchmarl]"``).

- :mod:`spnpolicy.integrations.torchrl`: a TorchRL ``ProbabilisticActor`` over a circuit
  joint policy (one joint action per agent group, and its exact joint log-probability).
- :mod:`spnpolicy.integrations.benchmarl`: spn-ac as a BenchMARL ``Algorithm``.

Importing this package imports neither library; each submodule imports its own.
"""
