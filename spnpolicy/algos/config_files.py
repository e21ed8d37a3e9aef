"""Config files: an algorithm's config keys and values (the keys ``--set`` takes) in a JSON
object, or in a YAML mapping when the file ends in ``.yaml`` / ``.yml`` (read with PyYAML,
an optional package: the ``yaml`` extra).

```python
path = write_config_file(make_config("spn-ac", "coverage"), "spn-ac.yaml")
SpnAcConfig(**read_config_file(path, SpnAcConfig))     # the same config
```
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from spnpolicy.algos.config import field_values

__all__ = ["read_config_file", "write_config_file"]

YAML_SUFFIXES = (".yaml", ".yml")


def _yaml(path: Path):
    """PyYAML, or ValueError naming ``path`` when it is not installed."""
    try:
        import yaml
    except ImportError:
        raise ValueError(f"config file {path}: YAML needs the PyYAML package (pip install "
                         f"'spnpolicy[yaml]'), or write the config as JSON (.json)") from None
    return yaml


def _load(path: Path, text: str) -> Any:
    """The content of the file ``path`` (text ``text``): YAML for a YAML suffix, else JSON;
    ValueError naming the file and where it cannot be parsed."""
    if path.suffix.lower() in YAML_SUFFIXES:
        yaml = _yaml(path)
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = (f" (line {mark.line + 1}, column {mark.column + 1}: {error.problem})"
                     if mark is not None else "")
            raise ValueError(f"config file {path}: not valid YAML{where}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"config file {path}: not valid JSON (line {error.lineno}, column "
                         f"{error.colno}: {error.msg})") from None


def read_config_file(path: str | os.PathLike, cls: type) -> dict[str, Any]:
    """The config values in the file ``path`` (a JSON object or YAML mapping ``{key: value}``
    of fields of dataclass ``cls``), as :func:`~spnpolicy.algos.config.field_values` reads
    them. ValueError naming the file (and the key) when it cannot be read, is not such an
    object, or has an unknown key or a value that cannot be read as its field's type."""
    path = Path(path)
    yaml = path.suffix.lower() in YAML_SUFFIXES
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"config file {path}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {path}: not valid {'YAML' if yaml else 'JSON'} (not "
                         f"UTF-8 text)") from None
    values = _load(path, text)
    if not isinstance(values, dict):
        raise ValueError(f"config file {path}: must hold a "
                         f"{'YAML mapping' if yaml else 'JSON object'} of config keys and "
                         f"values, got a {type(values).__name__}")
    try:
        return field_values(cls, values)
    except ValueError as error:
        raise ValueError(f"config file {path}: {error}") from None


def write_config_file(config: Any, path: str | os.PathLike) -> Path:
    """Write every field of the config dataclass ``config`` to the file ``path`` (YAML for a
    YAML suffix, else JSON; tuples as lists), in field order, for :func:`read_config_file`;
    its path."""
    path = Path(path)
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for key, value in values.items():
        try:
            json.dumps(value)
        except TypeError:
            raise ValueError(f"config file {path}: {key}={value!r} cannot be written to a "
                             f"config file") from None
    values = json.loads(json.dumps(values))                 # tuples as lists
    if path.suffix.lower() in YAML_SUFFIXES:
        text = _yaml(path).safe_dump(values, sort_keys=False)
    else:
        text = json.dumps(values, indent=2) + "\n"
    try:
        path.write_text(text)
    except OSError as error:
        raise ValueError(f"config file {path}: cannot be written ({error.strerror})") from None
    return path
