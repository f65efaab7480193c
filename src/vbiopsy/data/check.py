"""Cohort integrity check — what ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` does
for nnU-Net users, for vbiopsy manifests.

Per patient: every listed file present and readable, 3-D, finite, non-empty; all modalities and
the segmentation on one voxel grid (canonical RAS shape and affine within a tolerance); label
values known in the declared convention. Clinical values were parsed when the manifest was read.
Problems make the check fail; warnings (e.g. an empty segmentation) are reported only.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vbiopsy.data.labels import BRATS2024_LABELS, LabelConvention, known_values, label_counts, to_brats2024
from vbiopsy.data.manifest import Manifest
from vbiopsy.data.nifti import Grid, inspect_volume
from vbiopsy.errors import InputError
from vbiopsy.parallel import run_parallel


@dataclass
class PatientCheck:
    """Outcome of checking one row: problems, warnings, and what was measured."""

    subject_id: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    shape: tuple[int, int, int] | None = None
    spacing_mm: tuple[float, float, float] | None = None
    region_ml: dict[str, float] = field(default_factory=dict)


@dataclass
class CohortCheck:
    """Outcome of checking a whole manifest."""

    manifest: Manifest
    patients: list[PatientCheck]
    table_problems: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return self.table_problems + [p for pc in self.patients for p in pc.problems]

    @property
    def warnings(self) -> list[str]:
        return [w for pc in self.patients for w in pc.warnings]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_patient(row: dict[str, Any], modalities: tuple[str, ...], atol_mm: float = 1e-3) -> PatientCheck:
    """Check the files of one manifest row (a plain dict, so it can run in a worker process)."""
    sid = str(row["subject_id"])
    result = PatientCheck(sid)
    reference: tuple[str, Grid] | None = None
    for col in (*modalities, "seg", "brain_mask"):
        path = row.get(col)
        if path is None:
            continue
        is_seg, is_mask = col == "seg", col == "brain_mask"
        try:
            grid, data = inspect_volume(path, dtype=np.int16 if is_seg or is_mask else np.float32, allow_empty=is_seg)
        except InputError as err:
            result.problems.append(f"subject {sid}: {col}: {err}")
            continue
        if is_mask and not set(label_counts(data)) <= {0, 1}:
            result.problems.append(f"subject {sid}: brain_mask: {path}: values other than 0 and 1")
        if not (is_seg or is_mask):
            result.present.append(col)
        if reference is None:
            reference = (col, grid)
            result.shape, result.spacing_mm = grid.shape, grid.spacing
        else:
            diff = reference[1].mismatch(grid, atol_mm)
            if diff is not None:
                result.problems.append(f"subject {sid}: {col}: {path}: not on the grid of {reference[0]} ({diff})")
        if is_seg:
            _check_labels(result, data, str(path), row.get("seg_convention") or "brats2024", grid)
    return result


def _check_labels(result: PatientCheck, labels: np.ndarray, path: str, convention: str, grid: Grid) -> None:
    conv = LabelConvention(convention)
    counts = label_counts(labels)
    bad = sorted(v for v in counts if v not in known_values(conv))
    if bad:
        known = ", ".join(str(v) for v in sorted(known_values(conv)))
        result.problems.append(
            f"subject {result.subject_id}: seg: {path}: label values {bad} are not in the {conv.value} "
            f"convention (known: {known})"
        )
        return
    converted: dict[int, int] = {}
    for value, count in counts.items():
        new = int(to_brats2024(np.array([value]), conv)[0])
        converted[new] = converted.get(new, 0) + count
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    result.region_ml = {name: round(converted.get(v, 0) * voxel_ml, 3)
                        for v, name in BRATS2024_LABELS.items() if v}
    if not any(converted.get(v, 0) for v in BRATS2024_LABELS if v):
        result.warnings.append(f"subject {result.subject_id}: seg: {path}: segmentation is empty (no tumour voxels)")


def check_cohort(
    manifest: Manifest,
    *,
    table_problems: list[str] | None = None,
    jobs: int = 1,
    atol_mm: float = 1e-3,
    progress: Callable[[int, int], None] | None = None,
) -> CohortCheck:
    """Check every row of ``manifest``; ``jobs`` > 1 reads patients in parallel processes."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    rows = [manifest.row(s) for s in manifest.subjects]
    check = functools.partial(check_patient, modalities=manifest.modalities, atol_mm=atol_mm)
    results: dict[int, PatientCheck] = {}
    for index, result in run_parallel(check, rows, jobs=jobs):
        results[index] = result
        if progress:
            progress(len(results), len(rows))
    return CohortCheck(manifest, [results[i] for i in range(len(rows))], list(table_problems or []))
