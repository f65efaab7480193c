"""Atomic writes: the result appears whole or not at all, with a plain file's permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vbiopsy.atomic import write_text_atomic, write_with_atomic


def test_written_file_has_the_umask_mode_not_mkstemps_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "report.html", "<html></html>")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert path.read_text() == "<html></html>"
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_a_failing_writer_leaves_neither_the_file_nor_a_temporary(tmp_path: Path) -> None:
    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_with_atomic(tmp_path / "metrics.json", broken)
    assert list(tmp_path.iterdir()) == []
