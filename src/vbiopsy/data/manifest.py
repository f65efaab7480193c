"""The cohort manifest: one row per imaging session, the one table every command reads.

A manifest is built by a layout reader (:mod:`vbiopsy.data.layouts`) or read from a hand-written
CSV. Columns are described in :mod:`vbiopsy.data.schema`; image paths are stored absolute and
written relative to the CSV's folder, so a cohort folder can be moved as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from vbiopsy.atomic import write_with_atomic
from vbiopsy.data.nifti import is_nifti
from vbiopsy.data.schema import (
    CLINICAL_COLUMNS, ID_COLUMNS, KNOWN_COLUMNS, LABEL_COLUMNS, MASK_COLUMNS, MODALITIES, SEG_COLUMNS,
    is_missing,
)
from vbiopsy.data.tables import duplicate_id_problems, parse_table, read_csv_table
from vbiopsy.errors import CohortError, InputError


@dataclass(frozen=True)
class Manifest:
    """A validated cohort table.

    Attributes:
        frame: one row per session; ``subject_id`` first, then ``patient_id``, modalities, ``seg``,
            ``seg_convention``, clinical and label columns, then any extra columns. Missing = ``None``.
        source: file or folder the manifest was built from (used in messages).
        modalities: image columns in order (``t1, t1c, t2, flair, asl`` first, then others).
        lines: the source line of each row, when the manifest came from a table.
    """

    frame: pd.DataFrame
    source: Path
    modalities: tuple[str, ...]
    lines: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def subjects(self) -> list[str]:
        return [str(s) for s in self.frame["subject_id"]]

    @property
    def has_seg(self) -> bool:
        return "seg" in self.frame.columns

    def where(self, index: int) -> str:
        """``source line N (subject S)`` or ``source (subject S)`` for row ``index``, for messages."""
        sid = self.frame.iloc[index]["subject_id"]
        line = f" line {self.lines[index]}" if self.lines else ""
        return f"{self.source}{line} (subject {sid})"

    def row(self, subject_id: str) -> dict[str, Any]:
        """The row of ``subject_id`` as a dict."""
        match = self.frame.index[self.frame["subject_id"] == subject_id]
        if len(match) == 0:
            raise InputError(self.source, f"no subject {subject_id!r} in the manifest")
        return {k: _none_if_nan(v) for k, v in self.frame.loc[match[0]].items()}

    def column(self, name: str) -> list[Any]:
        """Values of ``name`` in row order (``None`` where missing), or all ``None`` if absent."""
        if name not in self.frame.columns:
            return [None] * len(self)
        return [_none_if_nan(v) for v in self.frame[name]]

    def patient_ids(self) -> list[str]:
        """The grouping key of each row: ``patient_id`` where given, else ``subject_id``."""
        pids = self.column("patient_id")
        return [str(p) if p is not None else s for p, s in zip(pids, self.subjects)]

    def to_csv(self, path: str | Path) -> Path:
        """Write the manifest as CSV (atomically), paths relative to the CSV's folder when inside it."""
        path = Path(path)
        base = path.parent.resolve()
        frame = self.frame.copy()
        for col in (*self.modalities, "seg", *MASK_COLUMNS):
            if col in frame.columns:
                frame[col] = [_relative(v, base) for v in frame[col]]
        return write_with_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))

    @classmethod
    def from_csv(cls, path: str | Path) -> Manifest:
        """Read a hand-written manifest CSV; raise :class:`CohortError` listing every bad cell."""
        manifest, problems = read_manifest_csv(path)
        if problems:
            raise CohortError(problems)
        return manifest


def _none_if_nan(value: Any) -> Any:
    return None if is_missing(value) and not isinstance(value, str) else value


def _relative(value: Any, base: Path) -> Any:
    if value is None or is_missing(value):
        return None
    try:
        return str(Path(value).resolve().relative_to(base))
    except ValueError:
        return str(value)


def _path_columns(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """Modality columns: the known names, then unknown columns whose every value is a NIfTI path."""
    reserved = set(ID_COLUMNS) | set(SEG_COLUMNS) | set(MASK_COLUMNS) | set(KNOWN_COLUMNS)
    found = [m for m in MODALITIES if m in columns]
    for col in columns:
        if col in reserved or col in found:
            continue
        values = [r.get(col) for r in rows if not is_missing(r.get(col))]
        if values and all(isinstance(v, str) and is_nifti(v) for v in values):
            found.append(col)
    return found


def build_manifest(
    rows: Sequence[dict[str, Any]],
    source: str | Path,
    *,
    base_dir: str | Path | None = None,
    lines: Sequence[int] | None = None,
    default_convention: str = "brats2024",
) -> tuple[Manifest, list[str]]:
    """Assemble a :class:`Manifest` from parsed rows and return it with a list of problems.

    Relative image paths are resolved against ``base_dir``; ``seg_convention`` defaults to
    ``default_convention`` where a segmentation is given without one.
    """
    source = Path(source)
    if not rows:
        raise InputError(source, "no patients found")
    problems: list[str] = []
    all_columns: list[str] = []
    for row in rows:
        all_columns.extend(c for c in row if c not in all_columns)
    modalities = _path_columns(rows, all_columns)
    if not modalities:
        raise InputError(source, f"no image columns found (expected some of {', '.join(MODALITIES)})")
    base = Path(base_dir) if base_dir is not None else None
    fixed: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        new = dict(row)
        where = f"{source} line {lines[index]}" if lines else f"{source} (subject {row.get('subject_id')})"
        for col in (*modalities, "seg", *MASK_COLUMNS):
            if col not in all_columns:
                continue
            value = new.get(col)
            if is_missing(value):
                new[col] = None
                continue
            if not is_nifti(value):
                problems.append(f"{where}: column {col!r}: {value!r} is not a .nii or .nii.gz path")
                new[col] = None
                continue
            path = Path(str(value))
            new[col] = str(path if path.is_absolute() or base is None else (base / path))
        if new.get("seg") is not None and is_missing(new.get("seg_convention")):
            new["seg_convention"] = default_convention
        fixed.append(new)
    ordered = ["subject_id"] + (["patient_id"] if "patient_id" in all_columns else []) + modalities
    if "seg" in all_columns:
        ordered += ["seg", "seg_convention"]
    ordered += [c for c in MASK_COLUMNS if c in all_columns]
    ordered += [c for c in (*CLINICAL_COLUMNS, *LABEL_COLUMNS) if c in all_columns]
    ordered += [c for c in all_columns if c not in ordered]
    frame = pd.DataFrame([{c: r.get(c) for c in ordered} for r in fixed], columns=ordered, dtype=object)
    manifest = Manifest(frame, source, tuple(modalities), tuple(lines) if lines else None)
    return manifest, problems


def read_manifest_csv(path: str | Path) -> tuple[Manifest, list[str]]:
    """Read a manifest CSV (paths relative to its folder) and return it with a list of problems."""
    path = Path(path)
    frame = read_csv_table(path)
    if "subject_id" not in [c.strip() for c in frame.columns]:
        raise InputError(path, "missing required column 'subject_id'")
    table = parse_table(frame, path, id_column="subject_id")
    problems = list(table.problems) + duplicate_id_problems(table)
    manifest, more = build_manifest(table.rows, path, base_dir=path.parent, lines=table.lines)
    return manifest, problems + more
