"""Argument parsing shared by the ``spnpolicy`` subcommands (``train``, ``query``, ...):
``KEY=VALUE`` pairs and Python-literal values."""

from __future__ import annotations

import argparse
import ast
from typing import Any

__all__ = ["key_value", "literal"]


def key_value(text: str) -> tuple[str, str]:
    """``"key=value"`` -> ``("key", "value")``; an argparse type (bad input: exit 2)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def literal(text: str) -> Any:
    """An env argument: a Python literal (3, 0.5, (1, 2), None, True) or else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
