"""Pickle-free checkpoints: tensors in a safetensors file, metadata as JSON in its header.

``torch.load`` of a ``.pt``/``.ckpt`` file unpickles, and unpickling runs arbitrary code; a model
shared between sites must never be able to do that. A vbiopsy checkpoint is one safetensors file
whose header holds the run's metadata (model config, task, classes, modalities, spacing,
preprocessing, tabular encoding) as JSON plus the toolkit version that wrote it. Loading parses
only that header and raw tensor bytes, and refuses — with the file and the key named — a file that
is not safetensors, has no vbiopsy metadata, was written by another major toolkit version, or
whose metadata differs from what the caller expects.

The same format holds a *training state* for resuming (:func:`save_state` / :func:`load_state`):
optimizer, scheduler, callback and RNG states are nested Python values, so their tensors and NumPy
arrays go to the safetensors body and the rest to a JSON tree with tagged references
(:func:`flatten_state`) — still nothing that can execute on load.
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


def first_difference(found: Any, expected: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """``(dotted key, found, expected)`` of the first difference of two JSON trees (mappings compared
    key by key in ``expected``'s order, then keys only ``found`` has), else ``None``."""
    if isinstance(found, dict) and isinstance(expected, dict):
        def join(sub: str) -> str:
            return f"{key}.{sub}" if key else str(sub)

        for sub in expected:
            if sub not in found:
                return join(sub), "<missing>", expected[sub]
            diff = first_difference(found[sub], expected[sub], join(sub))
            if diff:
                return diff
        extra = sorted(set(found) - set(expected))
        return (join(extra[0]), found[extra[0]], "<absent>") if extra else None
    return None if found == expected else (key or "(root)", found, expected)


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
        diff = first_difference(metadata[key], _json_roundtrip(value, f"expect[{key!r}]"), key)
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



# --- nested training state (optimizer, scheduler, RNG, callbacks) in the same pickle-free format ---

_TAGS = ("__tensor__", "__ndarray__", "__tuple__", "__items__", "__float__")
"""Keys of the one-key JSON objects that stand for values JSON cannot hold."""

_WIDENED = {"uint16": "int64", "uint32": "int64"}
"""NumPy dtypes that safetensors may not hold, stored widened (NumPy's Mersenne-Twister key is uint32)."""


def flatten_state(state: Any) -> tuple[dict[str, Tensor], Any]:
    """Split a nested state into ``(tensors, tree)``: every tensor / NumPy array moved to a flat
    name → tensor mapping and replaced by a reference; the rest made JSON-exact.

    Handles what optimizer, scheduler, callback and RNG states hold: mappings (any hashable JSON
    keys), lists, tuples, tensors, NumPy arrays and scalars, ``int``, ``float`` (``inf``/``nan``
    included, bit-exact through ``repr``), ``bool``, ``str``, ``None``.

    Raises:
        ConfigError: a value of another type (named by its path in the state).
    """
    import numpy as np

    tensors: dict[str, Tensor] = {}

    def encode(value: Any, where: str) -> Any:
        if isinstance(value, Tensor):
            name = f"s{len(tensors)}"
            tensors[name] = value
            return {"__tensor__": name}
        if isinstance(value, np.ndarray):
            import torch

            dtype = str(value.dtype)
            name = f"s{len(tensors)}"
            tensors[name] = torch.from_numpy(np.ascontiguousarray(value.astype(_WIDENED.get(dtype, dtype))))
            return {"__ndarray__": name, "dtype": dtype}
        if isinstance(value, np.generic):
            return encode(value.item(), where)
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if value == value and abs(value) != float("inf") else {"__float__": repr(value)}
        if isinstance(value, tuple):
            return {"__tuple__": [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            plain = all(isinstance(k, str) for k in value) and not (len(value) == 1 and next(iter(value)) in _TAGS)
            if plain:
                return {k: encode(v, f"{where}.{k}") for k, v in value.items()}
            return {"__items__": [[encode(k, f"{where} key"), encode(v, f"{where}[{k!r}]")] for k, v in value.items()]}
        raise ConfigError(f"training state {where}: cannot store a {type(value).__name__} without pickling")

    return tensors, encode(state, "state")


def unflatten_state(tensors: Mapping[str, Tensor], tree: Any) -> Any:
    """Inverse of :func:`flatten_state`."""

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__ndarray__" in value:
            return tensors[value["__ndarray__"]].numpy().astype(value["dtype"])
        if "__tuple__" in value:
            return tuple(decode(v) for v in value["__tuple__"])
        if "__items__" in value:
            return {_hashable(decode(k)): decode(v) for k, v in value["__items__"]}
        if "__float__" in value:
            return float(value["__float__"])
        return {k: decode(v) for k, v in value.items()}

    return decode(tree)


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def save_state(path: str | Path, state: Mapping[str, Any], metadata: Mapping[str, Any]) -> Path:
    """Write a nested training ``state`` (see :func:`flatten_state`) and ``metadata`` as one
    checkpoint (safetensors + JSON, atomically); the tree goes under the metadata key ``state``."""
    if "state" in metadata:
        raise ConfigError("metadata key 'state' is reserved for the training state tree")
    tensors, tree = flatten_state(state)
    if not tensors:
        raise ConfigError("training state holds no tensor (expected at least the model weights)")
    return save_checkpoint(path, tensors, {**metadata, "state": tree})


def load_state(path: str | Path, *, expect: Mapping[str, Any] | None = None) -> tuple[Any, dict]:
    """Read a state written by :func:`save_state` (never unpickles); ``expect`` as in
    :func:`load_checkpoint`. Returns ``(state, metadata without the tree)``."""
    tensors, metadata = load_checkpoint(path, expect=expect)
    if "state" not in metadata:
        raise InputError(path, "key 'state': missing, not a vbiopsy training-state file")
    tree = metadata.pop("state")
    try:
        return unflatten_state(tensors, tree), metadata
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(path, f"key 'state': malformed training state ({err})") from None
