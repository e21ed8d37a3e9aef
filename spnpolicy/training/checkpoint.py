"""Checkpoints: atomic writes, safe loads (``torch.load(weights_only=True)``).

A checkpoint is a dict of tensors, numbers, strings, lists, tuples and dicts. It is written
to a temporary file ``.NAME.<pid>.<random>.tmp`` in the same directory, flushed to disk,
then renamed over the target, so a run killed while saving leaves the previous checkpoint
intact (:func:`remove_stale_temporaries` deletes what such a kill leaves behind). The file
gets the same permissions as the run's other files (``0666`` less the umask, usually 0644).
"""

from __future__ import annotations

import copy
import os
import pickle
import re
import secrets
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "load_checkpoint", "remove_stale_temporaries", "save_checkpoint",
           "warm_start"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: empty, truncated, corrupt or not a checkpoint."""


def _temporary_pattern(name: str) -> str:
    return f".{name}.*.tmp"


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed :func:`save_checkpoint` of ``path`` left behind
    (call it before a run starts writing); returns them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(_temporary_pattern(path.name)))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def _reason(error: BaseException) -> str:
    """One short line saying why ``torch.load`` failed."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split())
    if "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        return ("it holds Python objects that torch.load(weights_only=True) refuses"
                + (f" (Unsupported global {found.group(1)})" if found else "")
                + "; it was not written by spnpolicy")
    if len(text) > 120:
        text = text[:117] + "..."
    return f"truncated, corrupt, or not a spnpolicy checkpoint ({type(error).__name__}: {text})"


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises FileNotFoundError when there is no file, and :class:`CheckpointError` (a
    ValueError naming the file) when it is empty, truncated, corrupt, holds objects other
    than tensors and plain containers, or is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            KeyError, AttributeError, TypeError, OSError) as error:
        raise CheckpointError(f"checkpoint {path} cannot be read: {_reason(error)}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, not a "
                              f"spnpolicy checkpoint (a dict)")
    return payload


def _is_optimizer_state(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"state", "param_groups"}


def _keep_hyperparameters(loaded: Any, fresh: Any) -> Any:
    """``loaded`` with every optimizer state's ``param_groups`` hyperparameters (learning
    rate, betas, ...) taken from the same place in ``fresh``; its moments stay ``loaded``'s."""
    if _is_optimizer_state(loaded) and _is_optimizer_state(fresh):
        if len(loaded["param_groups"]) != len(fresh["param_groups"]):
            raise ValueError(f"an optimizer has {len(loaded['param_groups'])} parameter "
                             f"groups there and {len(fresh['param_groups'])} here")
        groups = [{**group, **{k: v for k, v in own.items() if k != "params"}}
                  for group, own in zip(loaded["param_groups"], fresh["param_groups"])]
        return {"state": loaded["state"], "param_groups": groups}
    if isinstance(loaded, dict) and isinstance(fresh, dict):
        kept = copy.copy(loaded)   # a module state's _metadata (its layout versions) stays
        for key in loaded.keys() & fresh.keys():
            kept[key] = _keep_hyperparameters(loaded[key], fresh[key])
        return kept
    return loaded


def warm_start(learner: Any, state: dict[str, Any], source: str | os.PathLike,
               partial: bool = False) -> list[str]:
    """Load another run's learner ``state`` (a checkpoint's ``"algorithm"`` or ``"learner"``
    entry) into ``learner``: its networks, targets and optimizer moments, with ``learner``'s
    own optimizer hyperparameters, so a new config's learning rates apply. ValueError naming
    ``source`` when the state does not fit ``learner`` (other networks, widths or agents).

    With ``partial``, every tensor whose shape (or dtype) differs from ``learner``'s, or that
    only ``learner`` has, keeps ``learner``'s own value, and the optimizers start fresh (no
    moments): a learner of another team size takes what its networks share with the source.
    Returns the dotted paths of the tensors kept (empty without ``partial``)."""
    fresh, kept = learner.state_dict(), []
    if partial:
        _check_same_layouts(state, fresh, source)
        merged, kept = _fit_shapes(state, fresh, "")
    else:
        merged = _keep_hyperparameters(state, fresh)
    try:
        learner.load_state_dict(merged)
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        reason = " ".join(str(error).split())
        if len(reason) > 200:
            reason = reason[:197] + "..."
        raise ValueError(f"init_from {source}: its learner does not fit this run's config "
                         f"(another algorithm, network width, team or env shape): "
                         f"{type(error).__name__}: {reason}") from None
    return kept


def _fit_shapes(loaded: Any, fresh: Any, path: str) -> tuple[Any, list[str]]:
    """``fresh`` with each tensor replaced by ``loaded``'s at the same place where both have
    one of the same shape and dtype; optimizer states stay ``fresh``'s. Returns it and the
    paths of the tensors left ``fresh``."""
    if _is_optimizer_state(fresh):
        return fresh, []
    if torch.is_tensor(fresh):
        same = (torch.is_tensor(loaded) and loaded.shape == fresh.shape
                and loaded.dtype == fresh.dtype)
        return (loaded, []) if same else (fresh, [path])
    if isinstance(fresh, dict):
        out, kept = copy.copy(fresh), []   # a module state's _metadata: this learner's
        for key, value in fresh.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(loaded, dict) and key in loaded:
                out[key], more = _fit_shapes(loaded[key], value, where)
                kept += more
            else:
                kept += _tensor_paths(value, where)
        return out, kept
    if isinstance(fresh, (list, tuple)) and isinstance(loaded, (list, tuple)) \
            and len(loaded) == len(fresh):
        pairs = [_fit_shapes(a, b, f"{path}.{i}") for i, (a, b) in enumerate(zip(loaded, fresh))]
        return type(fresh)(value for value, _ in pairs), [p for _, more in pairs for p in more]
    tensors = _tensor_paths(fresh, path)
    return (fresh, tensors) if tensors else (loaded, [])


def _tensor_paths(value: Any, path: str) -> list[str]:
    """The paths of the tensors in ``value`` (optimizer states excluded)."""
    if torch.is_tensor(value):
        return [path]
    if _is_optimizer_state(value):
        return []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _tensor_paths(v, f"{path}.{k}")]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _tensor_paths(v, f"{path}.{i}")]
    return []


def _layouts(state: Any, path: str = "") -> dict[str, Any]:
    """The layout versions (``_metadata``) of every module state in ``state``, by path."""
    found = {}
    if isinstance(state, dict) and not _is_optimizer_state(state):
        for prefix, meta in getattr(state, "_metadata", {}).items():
            found[f"{path}:{prefix}"] = meta.get("version")
        for key, value in state.items():
            found |= _layouts(value, f"{path}.{key}")
    return found


def _check_same_layouts(loaded: Any, fresh: Any, source: str | os.PathLike) -> None:
    """ValueError naming ``source`` when a module its state shares with ``fresh`` was saved
    with another layout version: a partial load compares shapes as saved, before a module
    converts an old layout."""
    theirs, ours = _layouts(loaded), _layouts(fresh)
    older = sorted(k for k in theirs.keys() & ours.keys() if theirs[k] != ours[k])
    if older:
        raise ValueError(f"init_from {source}: modules saved with another layout version "
                         f"({', '.join(older[:3])}); a partial start needs a checkpoint of "
                         f"this version: resume that run with this version for one "
                         f"checkpoint first")
