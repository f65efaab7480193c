"""The training cohort of a run: manifest, split, training-pool labels and ROI cubes.

Leak-proofing lives here. The split is fixed first (read from ``splits.json`` or made once from
the labels and written to the run); after that only the *training pool's* rows are given to the
label functions. Test patients enter training code as images (and clinical features for
prediction) only; their labels are read in :mod:`vbiopsy.train.evaluation`, at the very end.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.manifest import Manifest
from vbiopsy.data.roi_cubes import RoiCube, cube_key, extract_cube
from vbiopsy.data.splits import Splits, make_splits
from vbiopsy.errors import CohortError, ConfigError, InputError, VbiopsyError
from vbiopsy.parallel import run_parallel
from vbiopsy.tasks.labels import TaskLabels, task_labels
from vbiopsy.train.config import TrainConfig


def label_options(config: TrainConfig) -> dict[str, Any]:
    """Keyword arguments of :func:`vbiopsy.tasks.labels.task_labels` for this config."""
    if config.task == "survival":
        return {"definition": config.data.survival_definition, "horizon_days": config.data.horizon_days}
    return {}


def label_task(config: TrainConfig) -> str:
    """Name of the label definition: ``grade``, ``survival`` or ``cox``."""
    return {"grade": "grade", "survival": "survival", "survival_cox": "cox"}[config.task]


def stratum(labels: TaskLabels) -> list[object]:
    """What the split stratifies on: the class value (e.g. grade 3), or the event for time-to-event labels."""
    y = labels.y
    if y.ndim == 2:
        return [int(v) for v in y[:, 1]]
    return [labels.classes[int(v)] for v in y]  # the class itself (grade 2/3/4), as users name it


@dataclass
class TrainingCohort:
    """Everything training may see."""

    manifest: Manifest
    splits: Splits
    train_labels: TaskLabels
    """Labels of the training pool (CV folds) only."""
    test_ids: tuple[str, ...]
    cubes: dict[str, RoiCube]

    def frame(self, subject_ids: list[str] | tuple[str, ...]) -> pd.DataFrame:
        """Manifest rows of ``subject_ids`` in that order (clinical columns for the tabular inputs)."""
        frame = self.manifest.frame.set_index("subject_id", drop=False)
        return frame.loc[list(subject_ids)]


def make_or_load_splits(config: TrainConfig, manifest: Manifest, run_dir: Path) -> Splits:
    """``data.splits`` if given (leakage-checked), else a new patient-level split written to the run."""
    subject_to_patient = dict(zip(manifest.subjects, manifest.patient_ids()))
    if config.data.splits is not None:
        splits = Splits.load(config.data.splits, subject_to_patient=subject_to_patient)
    else:
        labels = task_labels(manifest.frame, label_task(config), **label_options(config))
        keep = [int(v) if str(v).lstrip("-").isdigit() else v for v in config.data.keep_in_train]
        splits = make_splits(labels.subject_ids, stratum(labels),
                             patient_ids=[subject_to_patient[s] for s in labels.subject_ids],
                             test_fraction=config.data.test_fraction, n_folds=config.data.folds,
                             seed=config.data.split_seed, keep_in_train=keep, rare_classes=config.data.rare_classes,
                             stratify_name=label_task(config))
    missing = [s for s in splits.subjects if s not in subject_to_patient]
    if missing:
        raise InputError(config.data.splits or "splits", f"subject {missing[0]!r} is not in the cohort "
                                                         f"({len(missing)} such subjects)")
    splits.save(run_dir / "splits.json")
    return splits


def training_pool_labels(config: TrainConfig, manifest: Manifest, splits: Splits) -> TaskLabels:
    """Labels of the non-test subjects of ``splits`` (the test rows are removed before labelling)."""
    test = set(splits.test)
    pool = manifest.frame[~manifest.frame["subject_id"].isin(test)]
    labels = task_labels(pool, label_task(config), **label_options(config))
    in_folds = {s for fold in splits.folds for s in (*fold.train, *fold.val)}
    unlabelled = sorted(in_folds - set(labels.subject_ids))
    if unlabelled:
        reason = labels.excluded.get(unlabelled[0], "no label")
        raise InputError(config.data.splits or "splits", f"{len(unlabelled)} subjects in the folds have no "
                                                         f"{config.task} label (e.g. {unlabelled[0]}: {reason})")
    return labels


def _extract(row: dict[str, Any], *, modality: str, settings: dict[str, Any],
             cache_dir: Path) -> tuple[str, RoiCube] | str:
    """``(subject, cube)``, or the message of a user error (collected by the caller, not raised in a worker)."""
    try:
        return _extract_or_raise(row, modality=modality, settings=settings, cache_dir=cache_dir)
    except VbiopsyError as err:
        return str(err)


def _extract_or_raise(row: dict[str, Any], *, modality: str, settings: dict[str, Any],
                      cache_dir: Path) -> tuple[str, RoiCube]:
    sid = str(row["subject_id"])
    paths = {"image": row.get(modality), "brain_mask": row.get("brain_mask"), "seg": row.get("seg")}
    if paths["image"] is None:
        raise InputError(f"subject {sid}", f"no {modality!r} image in the manifest")
    key = cube_key(paths, settings)
    path = cache_dir / f"{sid}.npz"
    cube = RoiCube.load(path, key)
    if cube is None:
        cube = extract_cube(paths["image"], brain_mask=paths["brain_mask"], seg=paths["seg"], **settings)
        cube.save(path, key)
    return sid, cube


def extract_cubes(config: TrainConfig, manifest: Manifest, subject_ids: list[str], cache_dir: Path) -> dict[str, RoiCube]:
    """ROI cubes of ``subject_ids`` (cached in ``cache_dir`` by input files and settings); every
    subject's problem is collected and raised together."""
    if config.data.modality not in manifest.modalities:
        raise InputError(manifest.source, f"the cohort has no {config.data.modality!r} images "
                                          f"(modalities: {', '.join(manifest.modalities) or 'none'})")
    cache_dir.mkdir(parents=True, exist_ok=True)
    roi = config.data.roi
    settings = {"side_mm": roi.side_mm, "top_pct": roi.top_pct, "centre": roi.centre, "window_mm": roi.window_mm,
                "out_shape": list(roi.out_shape) if roi.out_shape else None}
    task = functools.partial(_extract, modality=config.data.modality, settings=settings, cache_dir=cache_dir)
    rows = [manifest.row(s) for s in subject_ids]
    cubes: dict[str, RoiCube] = {}
    problems: list[str] = []
    for _, result in run_parallel(task, rows, jobs=config.data.jobs):
        if isinstance(result, str):
            problems.append(result)
        else:
            cubes[result[0]] = result[1]
    if problems:
        raise CohortError(problems)
    return cubes


def prepare_cohort(config: TrainConfig, run_dir: Path) -> TrainingCohort:
    """Read the cohort, fix the split, label the training pool, cut every subject's ROI cube."""
    manifest = read_cohort(config.data.cohort, layout=config.data.layout, clinical=config.data.clinical)
    splits = make_or_load_splits(config, manifest, run_dir)
    if len(splits.folds) < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds; the split has {len(splits.folds)}")
    labels = training_pool_labels(config, manifest, splits)
    subjects = sorted({s for fold in splits.folds for s in (*fold.train, *fold.val)} | set(splits.test))
    cubes = extract_cubes(config, manifest, subjects, run_dir / "cubes")
    return TrainingCohort(manifest, splits, labels, tuple(splits.test), cubes)


def targets_of(labels: TaskLabels, subject_ids: tuple[str, ...] | list[str]) -> np.ndarray:
    """Label rows of ``subject_ids`` in that order."""
    index = {s: i for i, s in enumerate(labels.subject_ids)}
    return labels.y[[index[s] for s in subject_ids]]
