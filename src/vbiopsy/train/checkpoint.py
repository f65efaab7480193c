"""Pickle-free checkpoints: tensors in a safetensors file, metadata as JSON in its header.

``torch.load`` of a ``.pt``/``.ckpt`` file unpickles, and unpickling runs arbitrary code; a model
shared between sites must never be able to do that. A vbiopsy checkpoint is one safetensors file
whose header holds the run's metadata (model config, task, classes, modalities, spacing,
preprocessing, tabular encoding) as JSON plus the toolkit version that wrote it. Loading parses
only that header and raw tensor bytes, and refuses — with the file and the key named — a file that
is not safetensors, has no vbiopsy metadata, was written by another major toolkit version, or
whose metadata differs from what the caller expects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from vbiopsy import __version__
from vbiopsy.atomic import write_with_atomic
from vbiopsy.errors import ConfigError, InputError

METADATA_KEY = "vbiopsy_metadata"
"""safetensors header key holding the JSON metadata."""

VERSION_KEY = "vbiopsy_version"
"""safetensors header key holding the version of vbiopsy that wrote the file."""

FORMAT_KEY = "format"
FORMAT = "pt"
"""What ``safetensors.torch.save_file`` writes for PyTorch tensors (kept for compatibility)."""

_PICKLE_PREFIXES = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")
"""Start of a pickle (protocols 2–5) and of a ``torch.save`` zip archive; only used to word the
refusal (a safetensors file has its JSON header's ``{`` at byte 8, and its parser never unpickles)."""


def _major(version: str) -> int | None:
    match = re.match(r"\s*v?(\d+)", str(version))
    return int(match.group(1)) if match else None


def _json_roundtrip(value: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"checkpoint metadata {where} is not JSON-serialisable ({err})") from None


def save_checkpoint(path: str | Path, state_dict: Mapping[str, Tensor], metadata: Mapping[str, Any]) -> Path:
    """Write ``state_dict`` and ``metadata`` to ``path`` (safetensors; temp name + rename).

    Tensors are copied to contiguous CPU memory (shared storage is duplicated, which safetensors
    requires). ``metadata`` must be JSON-serialisable; the toolkit version is added to the header.

    Returns:
        ``path``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ConfigError("state_dict must be a non-empty mapping of name → tensor")
    if not isinstance(metadata, Mapping):
        raise ConfigError(f"metadata must be a mapping, got {type(metadata).__name__}")
    tensors: dict[str, Tensor] = {}
    for name, value in state_dict.items():
        if not isinstance(name, str) or not isinstance(value, Tensor):
            raise ConfigError(f"state_dict entry {name!r} must map a string to a tensor, got {type(value).__name__}")
        tensors[name] = value.detach().to("cpu").contiguous().clone()
    for key in metadata:
        if not isinstance(key, str):
            raise ConfigError(f"metadata keys must be strings, got {key!r}")
        _json_roundtrip(metadata[key], f"key {key!r}")
    header = {METADATA_KEY: json.dumps(dict(metadata), allow_nan=False), VERSION_KEY: __version__, FORMAT_KEY: FORMAT}
    if not path.parent.is_dir():
        raise InputError(path.parent, "checkpoint folder does not exist")
    return write_with_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def _first_difference(found: Any, expected: Any, key: str) -> tuple[str, Any, Any] | None:
    """(dotted key, found, expected) of the first difference, recursing into mappings."""
    if isinstance(found, dict) and isinstance(expected, dict):
        for sub in expected:
            if sub not in found:
                return f"{key}.{sub}", "<missing>", expected[sub]
            diff = _first_difference(found[sub], expected[sub], f"{key}.{sub}")
            if diff:
                return diff
        extra = sorted(set(found) - set(expected))
        return (f"{key}.{extra[0]}", found[extra[0]], "<absent>") if extra else None
    return None if found == expected else (key, found, expected)


def _read_header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with path.open("rb") as handle:
        start = handle.read(9)
    if start[8:9] != b"{" and start.startswith(_PICKLE_PREFIXES):
        raise InputError(path, "is a pickle / torch.save file; vbiopsy loads only safetensors checkpoints "
                               "and never unpickles")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:  # safetensors raises its own error types for malformed headers
        raise InputError(path, f"not a readable safetensors checkpoint (corrupt or wrong format: "
                               f"{str(err).splitlines()[0][:120]})") from None


def _metadata(path: Path, header: Mapping[str, str]) -> dict:
    """The JSON metadata object stored in a safetensors header."""
    if METADATA_KEY not in header:
        raise InputError(path, f"key {METADATA_KEY!r}: missing, not a vbiopsy checkpoint")
    try:
        metadata = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise InputError(path, f"key {METADATA_KEY!r}: not valid JSON ({err.msg})") from None
    if not isinstance(metadata, dict):
        raise InputError(path, f"key {METADATA_KEY!r}: expected a JSON object")
    return metadata


def load_checkpoint(path: str | Path, *, expect: Mapping[str, Any] | None = None) -> tuple[dict[str, Tensor], dict]:
    """Read a checkpoint written by :func:`save_checkpoint` without executing any stored code.

    Args:
        path: the ``.safetensors`` file.
        expect: metadata that must match (e.g. ``{"task": "grade", "model": {...}}``); nested
            mappings are compared key by key.

    Returns:
        ``(state_dict, metadata)`` with CPU tensors.

    Raises:
        InputError: missing file, not safetensors (e.g. a pickle), corrupt, no vbiopsy metadata,
            another major toolkit version, or a metadata key that differs from ``expect``.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if expect is not None and not isinstance(expect, Mapping):
        raise ConfigError(f"expect must be a mapping, got {type(expect).__name__}")
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    header = _read_header(path)
    metadata = _metadata(path, header)
    written = header.get(VERSION_KEY, "")
    if _major(written) is None or _major(written) != _major(__version__):
        raise InputError(path, f"key {VERSION_KEY!r}: written by vbiopsy {written or '<unknown>'}, this is "
                               f"vbiopsy {__version__} (a different major version; retrain or convert)")
    for key, value in (expect or {}).items():
        if key not in metadata:
            raise InputError(path, f"key {key!r}: missing from the checkpoint metadata, expected {value!r}")
        diff = _first_difference(metadata[key], _json_roundtrip(value, f"expect[{key!r}]"), key)
        if diff:
            raise InputError(path, f"key {diff[0]!r}: checkpoint has {diff[1]!r}, expected {diff[2]!r}")
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as err:  # truncated data section and similar
        raise InputError(path, f"corrupt tensor data ({str(err).splitlines()[0][:120]})") from None
    return dict(tensors), metadata


def checkpoint_metadata(path: str | Path) -> dict:
    """Only the metadata of a checkpoint (no tensors read), e.g. to rebuild its model first."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    return _metadata(path, _read_header(path))

