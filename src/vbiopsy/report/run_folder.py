"""Reading a finished, evaluated run folder for a report: config, metrics, predictions, labels, versions.

A report never trains and never re-scores differently: it reads what the pipelines wrote
(``config.yaml``, ``run.json``, ``splits.json``, ``metrics.json``, prediction CSVs, ``explain/``).
Test labels are read from the run's cohort only here, and only once ``metrics.json`` exists (the
final evaluation has already read them), so curves can be drawn for the same patients the metrics
were computed on.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vbiopsy.errors import InputError
from vbiopsy.report.html import Cell

TASK_TITLES = {"grade": "ASLNet — WHO grade (II / III / IV)", "survival": "ASLNet — death within 12 months",
               "survival_cox": "ASLNet — survival risk (Cox)", "profile": "MGMT-Net — segmentation and markers",
               "diagnosis": "Adaptive-Diagnoser — tumour type"}
"""Run task → section title."""

SOFTWARE = ("vbiopsy", "torch", "monai", "lightning", "numpy", "scipy", "scikit-learn", "lifelines", "captum",
            "nibabel", "SimpleITK", "pandas", "matplotlib")
"""Distributions whose versions a report lists."""

TABLE_FILES = {"ablation.csv": "MGMT-Net ablation (out-of-fold, same split)",
               "row_table.csv": "Adaptive-Diagnoser ablation (paper Table 2)",
               "backbone_table.csv": "Adaptive-Diagnoser backbones (paper Table 3)"}
"""Comparison tables written by ``vbiopsy ablation`` → their titles."""


def lookup(data: dict[str, Any], path: str, missing: Any = None) -> Any:
    """The value at dotted ``path`` of nested dicts, or ``missing`` where a key is absent.

    A key may itself contain dots (``at_0.5``): at each level the shortest run of path segments
    that is a key of the current dict is taken.
    """
    value: Any = data
    segments = path.split(".")
    while segments:
        if not isinstance(value, dict):
            return missing
        for count in range(1, len(segments) + 1):
            key = ".".join(segments[:count])
            if key in value:
                value, segments = value[key], segments[count:]
                break
        else:
            return missing
    return value


@dataclass(frozen=True)
class JsonSource:
    """A JSON file's content and path; :meth:`cell` makes report cells that name ``file#dotted.path``."""

    data: dict[str, Any]
    file: Path

    def get(self, path: str) -> Any:
        """The value at dotted ``path`` (``None`` if absent)."""
        return lookup(self.data, path)

    def cell(self, path: str, *, p_value: bool = False) -> Cell:
        """A table cell showing the value at ``path`` and naming where it was read."""
        return Cell(self.get(path), f"{self.file}#{path}", p_value)


@dataclass(frozen=True)
class TableFolder:
    """A folder written by ``vbiopsy ablation``: one comparison ``table`` (title ``title``)."""

    path: Path
    title: str
    table: pd.DataFrame


@dataclass(frozen=True)
class RunFolder:
    """An evaluated run: ``task`` (grade, survival, survival_cox, profile, diagnosis), the resolved
    ``config`` object and its YAML text, ``metrics`` (``metrics.json``), ``info`` (``run.json``) and the
    patient-level ``splits`` (``None`` if absent)."""

    path: Path
    task: str
    config: Any
    config_text: str
    metrics: dict[str, Any]
    info: dict[str, Any]
    splits: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> JsonSource:
        """``metrics.json`` as a :class:`JsonSource`."""
        return JsonSource(self.metrics, self.path / "metrics.json")

    def json_source(self, relative: str) -> JsonSource | None:
        """Another JSON file of the run as a :class:`JsonSource`, or ``None`` if absent."""
        data = self.json_file(relative)
        return None if data is None else JsonSource(data, self.path / relative)

    @property
    def title(self) -> str:
        """Human title of the run's task."""
        return TASK_TITLES.get(self.task, self.task)

    def json_file(self, relative: str) -> dict[str, Any] | None:
        """A JSON file of the run, or ``None`` if absent."""
        path = self.path / relative
        return _read_json(path) if path.is_file() else None

    def csv(self, relative: str) -> pd.DataFrame | None:
        """A CSV of the run (``subject_id`` kept as text), or ``None`` if absent."""
        path = self.path / relative
        if not path.is_file():
            return None
        try:
            return pd.read_csv(path, dtype={"subject_id": str, "case": str})
        except (OSError, ValueError, pd.errors.ParserError) as err:
            raise InputError(path, f"unreadable CSV ({err})") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable JSON ({err})") from None
    if not isinstance(value, dict):
        raise InputError(path, f"expected a JSON object, got {type(value).__name__}")
    return value


def read_table_folder(path: str | Path) -> TableFolder | None:
    """The comparison table of an ``vbiopsy ablation`` output folder, or ``None`` if ``path`` holds none."""
    folder = Path(path)
    for name, title in TABLE_FILES.items():
        if (folder / name).is_file():
            return TableFolder(folder, title, pd.read_csv(folder / name))
    return None


def read_run(path: str | Path) -> RunFolder:
    """Read an evaluated run folder; raise :class:`InputError` naming what is missing."""
    from vbiopsy.data.splits import Splits
    from vbiopsy.train.run import load_run_config

    folder = Path(path)
    if not folder.is_dir():
        raise InputError(folder, "run folder not found")
    config = load_run_config(folder)  # refuses a folder without run.json
    if not (folder / "metrics.json").is_file():
        raise InputError(folder, "no metrics.json: run `vbiopsy evaluate` on it first")
    splits = Splits.load(folder / "splits.json") if (folder / "splits.json").is_file() else None
    return RunFolder(path=folder, task=str(config.task), config=config,
                     config_text=(folder / "config.yaml").read_text(encoding="utf-8"),
                     metrics=_read_json(folder / "metrics.json"), info=_read_json(folder / "run.json"), splits=splits)


def software_versions() -> dict[str, str]:
    """Python and the installed versions of :data:`SOFTWARE` (``not installed`` where absent)."""
    versions = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _manifest(run: RunFolder) -> Any:
    from vbiopsy.data.layouts import read_cohort

    d = run.config.data
    return read_cohort(d.cohort, layout=d.layout, clinical=d.clinical)


def aslnet_test_labels(run: RunFolder) -> tuple[list[str], np.ndarray]:
    """Test subject IDs and labels as the final evaluation read them (:func:`vbiopsy.train.evaluation.test_labels`)."""
    from vbiopsy.train.evaluation import test_labels

    ids, y, _ = test_labels(run.config, run.path)
    return ids, y


def follow_up(run: RunFolder, subjects: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(os_days, os_event) of ``subjects`` from the cohort, or ``None`` unless every one has both."""
    frame = _manifest(run).frame.set_index("subject_id", drop=False)
    if not {"os_days", "os_event"} <= set(frame.columns) or not subjects:
        return None
    rows = frame.loc[subjects]
    times = pd.to_numeric(rows["os_days"], errors="coerce").to_numpy(dtype=float)
    events = pd.to_numeric(rows["os_event"], errors="coerce").to_numpy(dtype=float)
    if not (np.isfinite(times).all() and np.isfinite(events).all()):
        return None
    return times, events.astype(int)


def diagnosis_test_labels(run: RunFolder, subjects: list[str]) -> tuple[list[str], np.ndarray]:
    """Tumour-type labels of the run's test ``subjects`` (as :func:`evaluate_diagnosis` reads them)."""
    from vbiopsy.train.diagnosis_data import diagnosis_labels

    frame = _manifest(run).frame
    labels = diagnosis_labels(frame[frame["subject_id"].isin(set(subjects))])
    return list(labels.subject_ids), labels.y


def marker_labels(run: RunFolder, subjects: list[str]) -> np.ndarray:
    """(n, K) marker labels (0/1, NaN unknown) of ``subjects`` in the run's marker order."""
    from vbiopsy.train.profile_data import marker_values

    manifest = _manifest(run)
    markers = tuple(run.config.data.markers)
    if not subjects:
        return np.zeros((0, len(markers)), dtype=np.float32)
    return np.stack([marker_values(manifest.row(s), markers) for s in subjects])
