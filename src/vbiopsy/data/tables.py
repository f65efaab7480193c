"""Reading user tables (manifests, clinical CSVs) into parsed, canonical rows.

Headers are mapped to canonical names through the aliases in :mod:`vbiopsy.data.schema`
(``Age at MRI`` → ``age``, ``1p/19q`` → ``codel_1p19q``, …) and every known cell is parsed.
Bad cells are reported as ``FILE line N (subject S): column 'c': problem`` — the line number is
the one a text editor shows (header = line 1).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vbiopsy.data.schema import KNOWN_COLUMNS, ValueParseError, canonical_column, is_missing
from vbiopsy.errors import InputError

ID_ALIASES: tuple[str, ...] = (
    "subject_id", "id", "subject", "case", "case_id", "patient", "brats18id", "brats19id",
    "brats20id", "brats21id", "brats_id", "bratsid",
)
"""Headers accepted as the subject ID column of a clinical table (case-insensitive)."""


@dataclass
class ParsedTable:
    """Rows of a table with canonical column names and parsed values; ``problems`` lists bad cells."""

    source: Path
    rows: list[dict[str, Any]]
    lines: list[int]
    problems: list[str] = field(default_factory=list)

    def by_id(self, normalise: Any = str) -> dict[str, tuple[dict[str, Any], int]]:
        """Index rows by ``normalise(subject_id)`` → (row, line)."""
        return {normalise(row["subject_id"]): (row, line) for row, line in zip(self.rows, self.lines)}


def read_csv_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV/TSV as strings (no type guessing), raising one clear error if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "table not found")
    sep = "\t" if path.suffix.lower() in {".tsv", ".tab"} else ","
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot be read as a table ({str(err).splitlines()[0][:160]})") from None
    header = _header(path, sep)
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise InputError(path, f"duplicate column names {duplicated}")
    return frame


def _header(path: Path, sep: str) -> list[str]:
    """The header row as written (pandas renames a repeated ``age`` to ``age.1``, hiding the repeat)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return [name.strip() for name in next(csv.reader(handle, delimiter=sep, skipinitialspace=True), [])]


def _find_id_column(path: Path, columns: Iterable[str], id_column: str | None) -> str:
    columns = list(columns)
    if id_column is not None:
        if id_column not in columns:
            raise InputError(path, f"has no column {id_column!r} (columns: {', '.join(columns)})")
        return id_column
    for col in columns:
        if col.strip().lower().replace(" ", "") in ID_ALIASES:
            return col
    raise InputError(path, f"no subject ID column found (expected one of {', '.join(ID_ALIASES[:4])}, ...)")


def parse_table(
    frame: pd.DataFrame,
    source: str | Path,
    *,
    id_column: str | None = None,
    passthrough: bool = True,
) -> ParsedTable:
    """Map headers to canonical names and parse every known cell.

    Args:
        frame: table read as strings (see :func:`read_csv_table`).
        source: file the table came from, used in messages.
        id_column: header of the subject ID column (default: found by :data:`ID_ALIASES`).
        passthrough: keep unknown columns as text (``False`` drops them).

    Returns:
        A :class:`ParsedTable`; cells that fail to parse become ``None`` and add a problem line.
    """
    source = Path(source)
    id_col = _find_id_column(source, frame.columns, id_column)
    rename: dict[str, str] = {id_col: "subject_id"}
    seen: dict[str, str] = {}
    for col in frame.columns:
        if col == id_col:
            continue
        canon = canonical_column(col)
        if canon is None:
            if passthrough:
                rename[col] = col.strip()
            continue
        if canon in seen:
            raise InputError(source, f"columns {seen[canon]!r} and {col!r} both mean {canon!r}")
        seen[canon] = col
        rename[col] = canon
    parsed = ParsedTable(source, [], [])
    for index, record in enumerate(frame.to_dict(orient="records")):
        line = index + 2
        sid = str(record[id_col]).strip()
        where = f"{source} line {line}" + (f" (subject {sid})" if sid else "")
        if not sid:
            parsed.problems.append(f"{where}: empty subject ID")
            continue
        row: dict[str, Any] = {"subject_id": sid}
        for col, name in rename.items():
            if name == "subject_id":
                continue
            value = record[col]
            if is_missing(value):
                row[name] = None
            elif name in KNOWN_COLUMNS:
                try:
                    row[name] = KNOWN_COLUMNS[name].parse(value)
                except ValueParseError as err:
                    parsed.problems.append(f"{where}: column {col!r}: {err}")
                    row[name] = None
            else:
                row[name] = str(value).strip()
        parsed.rows.append(row)
        parsed.lines.append(line)
    return parsed


def duplicate_id_problems(table: ParsedTable, normalise: Any = str) -> list[str]:
    """One problem line per repeated subject ID, naming both lines."""
    first: dict[str, int] = {}
    problems = []
    for row, line in zip(table.rows, table.lines):
        key = normalise(row["subject_id"])
        if key in first:
            problems.append(
                f"{table.source} line {line}: duplicate subject ID {row['subject_id']!r} "
                f"(first at line {first[key]})"
            )
        else:
            first[key] = line
    return problems


def read_clinical_table(path: str | Path, *, id_column: str | None = None) -> ParsedTable:
    """Read and parse a clinical table (UCSF-PDGM metadata, BraTS survival CSV, hand-written)."""
    frame = read_csv_table(path)
    table = parse_table(frame, path, id_column=id_column)
    table.problems.extend(duplicate_id_problems(table))
    return table
