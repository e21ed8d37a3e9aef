"""The examples in factor_q's docstrings run and print what they show."""

import doctest
import importlib

import pytest

MODULES = ["factor_q.graph", "factor_q.agent_q", "factor_q.values", "factor_q.elbo",
           "factor_q.q"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0, result
