"""Argument parsing shared by the ``spnpolicy`` subcommands (``train``, ``query``, ...):
subcommands with their handlers, ``KEY=VALUE`` pairs and Python-literal values."""

from __future__ import annotations

import argparse
import ast
from collections.abc import Callable
from typing import Any

__all__ = ["command", "key_value", "literal"]


def command(commands: argparse._SubParsersAction, handler: Callable[[argparse.Namespace], Any],
            name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """The subcommand ``name`` of ``commands`` (``commands.add_parser(name, **kwargs)``),
    which ``main`` runs as ``handler(args)``."""
    parser = commands.add_parser(name, **kwargs)
    parser.set_defaults(handler=handler)
    return parser


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
