"""Atomic file writing: write to a temporary name in the same folder, then rename.

A reader never sees a half-written file, and a crash leaves at most a ``.tmp-*`` file that the
next run overwrites or ignores.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from vbiopsy.errors import InputError


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) if needed and check that files can be written in it.

    Raises:
        InputError: when the folder cannot be created or is not writable.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(folder, f"cannot create output folder ({err.strerror or err})") from None
    if not folder.is_dir():
        raise InputError(folder, "output path exists and is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".vbiopsy-write-test-"):
            pass
    except OSError as err:
        raise InputError(folder, f"output folder is not writable ({err.strerror or err})") from None
    return folder


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it to ``final`` if the block succeeds.

    The temporary name keeps ``final``'s suffixes (``.nii.gz``) so writers that dispatch on the
    extension behave the same. On error the temporary file is removed.
    """
    final = Path(final)
    suffix = "".join(final.suffixes)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".tmp-{final.name.split('.')[0]}-", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600 files; give the result the mode a plain open() would
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(final: str | Path, text: str) -> Path:
    """Write ``text`` to ``final`` atomically (UTF-8) and return the path."""
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(final)


def write_with_atomic(final: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and atomically move the result to ``final``."""
    with atomic_path(final) as tmp:
        writer(tmp)
    return Path(final)


@contextlib.contextmanager
def removed_if_refused(path: str | Path) -> Iterator[Path]:
    """Create the folder ``path`` (if needed) for the block; if the block raises and the folder did not exist
    before, remove it again, so input refused while a run is being set up leaves nothing behind."""
    import shutil

    path = Path(path)
    existed = path.exists()
    folder = ensure_writable_dir(path)
    try:
        yield folder
    except BaseException:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        raise

