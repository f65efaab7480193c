"""Task labels from a cohort table: WHO grade, binary survival at a horizon, and Cox (time, event).

Each function takes a manifest-like :class:`pandas.DataFrame` (one row per patient, a
``subject_id`` column and the canonical clinical columns of :mod:`vbiopsy.data.schema`) and
returns a :class:`TaskLabels`: the labelled patients in table order, their targets, and the
reason each other patient was left out. Cells are parsed with the schema's parsers, so ``"IV"``,
``4`` and ``"4.0"`` are all grade 4; a cell that cannot be parsed is an :class:`InputError`
naming the subject, column and value (never silently excluded). Missing cells (``None``, NaN,
``""``) exclude the patient with a reason.

The 12-month survival label follows the ASLNet paper (a deliberate deviation from its released
code, which uses the vital status; see ``aslnet-reference-code-notes.md`` §1.4):
died with ``os_days < horizon`` → 1; ``os_days ≥ horizon`` (alive or dead) → 0; alive with
follow-up shorter than the horizon → excluded, since the outcome is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from vbiopsy.data.schema import KNOWN_COLUMNS, ValueParseError, is_missing
from vbiopsy.errors import ConfigError, InputError

GRADE_CLASSES: tuple[int, ...] = (2, 3, 4)
"""WHO grades in class-index order: grade 2 → 0, 3 → 1, 4 → 2."""

SURVIVAL_CLASSES: tuple[int, ...] = (0, 1)
"""Binary survival classes: 0 = alive at the horizon (or vital status alive), 1 = died before it."""

SURVIVAL_DEFINITIONS: tuple[str, ...] = ("12m", "vital_status")
"""``12m``: the paper's death-before-horizon label; ``vital_status``: the released code's ``os_event``."""

TASKS: tuple[str, ...] = ("grade", "survival", "cox")
"""Label definitions :func:`task_labels` dispatches to."""

TABLE = "cohort table"
"""What error messages call the frame when the problem is not tied to one subject."""


@dataclass(frozen=True)
class TaskLabels:
    """Targets of the labelled patients of one task.

    Attributes:
        subject_ids: labelled patients, in table order.
        y: ``(n,)`` int64 class indices (grade, survival) or ``(n, 2)`` float64
            ``[time_days, event]`` (cox; event 1 = death observed).
        excluded: subject → reason it has no label (``"no grade"``, ``"censored before 365 days"``, …).
        classes: what each class index means (``GRADE_CLASSES``, ``SURVIVAL_CLASSES``), ``()`` for cox.
        name: the label definition (``grade``, ``survival_12m``, ``survival_vital_status``, ``cox``).
    """

    subject_ids: list[str]
    y: np.ndarray
    excluded: dict[str, str]
    classes: tuple
    name: str

    def __post_init__(self) -> None:
        if len(self.y) != len(self.subject_ids):
            raise ConfigError(f"TaskLabels: {len(self.subject_ids)} subjects but {len(self.y)} targets")
        overlap = set(self.subject_ids) & set(self.excluded)
        if overlap:
            raise ConfigError(f"TaskLabels: subject {sorted(overlap)[0]!r} is both labelled and excluded")

    def __len__(self) -> int:
        return len(self.subject_ids)

    def counts(self) -> dict[Any, int]:
        """Patients per class (keyed by ``classes``), or ``{"events": …, "censored": …}`` for cox."""
        if self.y.ndim == 2:
            events = int(self.y[:, 1].sum()) if len(self.y) else 0
            return {"events": events, "censored": len(self.y) - events}
        return {c: int(np.count_nonzero(self.y == k)) for k, c in enumerate(self.classes)}


def subject_ids_of(frame: pd.DataFrame) -> list[str]:
    """The ``subject_id`` column as strings; raises :class:`InputError` if absent, empty or repeated."""
    if not isinstance(frame, pd.DataFrame):
        raise ConfigError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if "subject_id" not in frame.columns:
        raise InputError(TABLE, f"no column 'subject_id' (columns: {', '.join(map(str, frame.columns))})")
    ids: list[str] = []
    for position, value in enumerate(frame["subject_id"]):
        if _missing(value):
            raise InputError(TABLE, f"row {position} has an empty subject_id")
        ids.append(str(value).strip())
    seen: set[str] = set()
    for sid in ids:
        if sid in seen:
            raise InputError(TABLE, f"duplicate subject_id {sid!r}")
        seen.add(sid)
    return ids


def parsed_column(frame: pd.DataFrame, column: str) -> list[Any]:
    """Cells of the canonical ``column`` parsed by the schema's parser; ``None`` where missing.

    Raises:
        InputError: the column is absent, or a cell is not a valid value (names subject and value).
    """
    if column not in KNOWN_COLUMNS:
        raise ConfigError(f"{column!r} is not a known clinical column (known: {', '.join(KNOWN_COLUMNS)})")
    ids = subject_ids_of(frame)
    if column not in frame.columns:
        raise InputError(TABLE, f"no column {column!r} (columns: {', '.join(map(str, frame.columns))})")
    parse = KNOWN_COLUMNS[column].parse
    values: list[Any] = []
    for sid, value in zip(ids, frame[column]):
        if _missing(value):
            values.append(None)
            continue
        try:
            values.append(parse(value))
        except ValueParseError as err:
            raise InputError(f"subject {sid}", f"column {column!r}: {err}") from None
    return values


def _missing(value: Any) -> bool:
    if isinstance(value, str):
        return is_missing(value)
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # array-like cell: not a missing scalar
        return False


def _labels(ids: list[str], targets: list[Any], reasons: list[str | None], *, dtype: Any,
            classes: tuple, name: str, width: int | None = None) -> TaskLabels:
    keep = [i for i, reason in enumerate(reasons) if reason is None]
    shape = (len(keep),) if width is None else (len(keep), width)
    y = np.asarray([targets[i] for i in keep], dtype=dtype).reshape(shape)
    excluded = {ids[i]: reason for i, reason in enumerate(reasons) if reason is not None}
    return TaskLabels([ids[i] for i in keep], y, excluded, classes, name)


def grade_labels(frame: pd.DataFrame) -> TaskLabels:
    """WHO grade 2/3/4 → class 0/1/2; patients without a grade are excluded (``"no grade"``)."""
    ids = subject_ids_of(frame)
    grades = parsed_column(frame, "grade")
    targets = [GRADE_CLASSES.index(g) if g is not None else None for g in grades]
    reasons = [None if g is not None else "no grade" for g in grades]
    return _labels(ids, targets, reasons, dtype=np.int64, classes=GRADE_CLASSES, name="grade")


def _check_horizon(horizon_days: float) -> float:
    if isinstance(horizon_days, bool) or not isinstance(horizon_days, (int, float)):
        raise ConfigError(f"horizon_days must be a number of days, got {horizon_days!r}")
    if not math.isfinite(horizon_days) or horizon_days <= 0:
        raise ConfigError(f"horizon_days must be finite and > 0, got {horizon_days!r}")
    return float(horizon_days)


def survival_labels(frame: pd.DataFrame, *, definition: Literal["12m", "vital_status"] = "12m",
                    horizon_days: float = 365.0) -> TaskLabels:
    """Binary survival: 1 = died before ``horizon_days`` (``12m``) or dead at last contact (``vital_status``).

    ``12m``: died with ``os_days < horizon`` → 1; ``os_days ≥ horizon`` (alive or dead, or event
    unknown: the patient was alive at the horizon) → 0; alive with ``os_days < horizon`` →
    excluded (``"censored before N days"``); no ``os_days`` → excluded. ``vital_status`` (the
    released ASLNet code): ``y = os_event`` whatever the follow-up; no event → excluded.
    ``horizon_days`` only applies to ``12m``.
    """
    if definition not in SURVIVAL_DEFINITIONS:
        raise ConfigError(f"survival definition {definition!r} is unknown (expected one of "
                          f"{', '.join(SURVIVAL_DEFINITIONS)})")
    horizon = _check_horizon(horizon_days)
    ids = subject_ids_of(frame)
    events = parsed_column(frame, "os_event")
    if definition == "vital_status":
        reasons = [None if e is not None else "no vital status (os_event)" for e in events]
        return _labels(ids, events, reasons, dtype=np.int64, classes=SURVIVAL_CLASSES, name="survival_vital_status")
    days = parsed_column(frame, "os_days")
    targets: list[int | None] = []
    reasons = []
    for t, e in zip(days, events):
        target, reason = _horizon_label(t, e, horizon)
        targets.append(target)
        reasons.append(reason)
    name = "survival_12m" if horizon == 365.0 else f"survival_{horizon:g}d"
    return _labels(ids, targets, reasons, dtype=np.int64, classes=SURVIVAL_CLASSES, name=name)


def _horizon_label(days: float | None, event: int | None, horizon: float) -> tuple[int | None, str | None]:
    """(label, None) or (None, reason) for one patient under the death-before-horizon definition."""
    if days is None:
        return None, "no survival time (os_days)"
    if days >= horizon:
        return 0, None
    if event is None:
        return None, f"no event status (os_event) and follow-up {days:g} < {horizon:g} days"
    if event == 1:
        return 1, None
    return None, f"censored before {horizon:g} days"


def cox_labels(frame: pd.DataFrame) -> TaskLabels:
    """``[os_days, os_event]`` of every patient that has both (censored patients included)."""
    ids = subject_ids_of(frame)
    days = parsed_column(frame, "os_days")
    events = parsed_column(frame, "os_event")
    targets: list[tuple[float, float] | None] = []
    reasons: list[str | None] = []
    for t, e in zip(days, events):
        reason = "no survival time (os_days)" if t is None else "no event status (os_event)" if e is None else None
        reasons.append(reason)
        targets.append(None if reason else (float(t), float(e)))
    return _labels(ids, targets, reasons, dtype=np.float64, classes=(), name="cox", width=2)


_DISPATCH: dict[str, Callable[..., TaskLabels]] = {
    "grade": grade_labels, "survival": survival_labels, "cox": cox_labels,
}
_OPTIONS: dict[str, tuple[str, ...]] = {"grade": (), "survival": ("definition", "horizon_days"), "cox": ()}


def task_labels(frame: pd.DataFrame, task: str, **options: Any) -> TaskLabels:
    """Labels of ``task`` (``grade``, ``survival`` or ``cox``) with that task's keyword options.

    Raises:
        ConfigError: unknown task, or an option the task does not take.
        InputError: a needed column is absent or a cell is invalid.
    """
    if task not in _DISPATCH:
        raise ConfigError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
    unknown = sorted(set(options) - set(_OPTIONS[task]))
    if unknown:
        allowed = ", ".join(_OPTIONS[task]) or "none"
        raise ConfigError(f"task {task!r} takes no option {unknown[0]!r} (options: {allowed})")
    return _DISPATCH[task](frame, **options)
