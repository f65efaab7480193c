"""Shared machinery of the folder-layout readers: case folders → rows → manifest."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vbiopsy.data.manifest import Manifest, build_manifest
from vbiopsy.data.tables import ParsedTable, read_clinical_table
from vbiopsy.errors import InputError


@dataclass(frozen=True)
class CaseFiles:
    """One case folder: the subject ID and, per manifest column, the file that should hold it."""

    subject_id: str
    files: dict[str, Path]


def collect_rows(
    cases: Sequence[CaseFiles],
    expected: Sequence[str],
) -> list[dict[str, Any]]:
    """Rows with an image path per column in ``expected`` that any case has.

    A column that no case has is left out (e.g. a UCSF-PDGM download without ASL). A column that
    some cases have keeps the expected path for the cases that lack the file, so the cohort check
    reports it as missing instead of the reader hiding it.
    """
    present = [col for col in expected if any(case.files[col].exists() for case in cases)]
    return [
        {"subject_id": case.subject_id, **{col: str(case.files[col]) for col in present}}
        for case in cases
    ]


def merge_clinical(
    rows: list[dict[str, Any]],
    table: ParsedTable | None,
    normalise: Callable[[str], str] = str,
) -> list[str]:
    """Add the clinical table's columns to ``rows`` in place (matched by ``normalise(id)``).

    Returns problems: the table's own bad cells. Patients of the table without images are
    ignored (a metadata table usually lists the whole collection); patients without a table row
    keep empty clinical cells.
    """
    if table is None:
        return []
    index = table.by_id(normalise)
    for row in rows:
        hit = index.get(normalise(row["subject_id"]))
        if hit is None:
            continue
        clinical, _ = hit
        for key, value in clinical.items():
            if key != "subject_id":
                row[key] = value
    return list(table.problems)


def find_table(root: Path, patterns: Sequence[str]) -> Path | None:
    """The first file in ``root`` matching one of ``patterns`` (glob, case-sensitive), if any."""
    for pattern in patterns:
        hits = sorted(p for p in root.glob(pattern) if p.is_file())
        if hits:
            return hits[0]
    return None


def assemble(
    root: Path,
    cases: Sequence[CaseFiles],
    expected: Sequence[str],
    *,
    clinical: Path | None,
    convention: str,
    normalise: Callable[[str], str] = str,
    extra: Mapping[str, Any] | None = None,
) -> tuple[Manifest, list[str]]:
    """Turn case folders plus an optional clinical table into a manifest and its problems."""
    if not cases:
        raise InputError(root, "no cases found")
    rows = collect_rows(cases, expected)
    for row in rows:
        row.update(extra or {})
    table = read_clinical_table(clinical) if clinical is not None else None
    problems = merge_clinical(rows, table, normalise)
    manifest, more = build_manifest(rows, root, default_convention=convention)
    return manifest, problems + more
