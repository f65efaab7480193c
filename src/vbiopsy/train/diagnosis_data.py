"""Diagnoser inputs: whole-brain T1c on the working grid plus the Tumor-Localizer's priors, cached per patient.

Per patient (:func:`prepare_sample`): the localiser runs on the scan's own grid (T1c + FLAIR by
default) and gives the brain mask, the coarse prior (Eq. 4) and the refined prior (Eq. 5). A
square axial field of view around the brain's bounding box (plus ``margin_mm``; full
superior–inferior extent) is cut, padded with background where it leaves the scan, smoothed
against aliasing and resampled linearly onto ``working_shape``. The image is z-scored over the
brain and 0 outside it. A prior that is empty (nothing found) is replaced by the whole brain and a
warning is recorded for that patient. With ``data.lesion_crop`` each prior also gets a tumour-centred
crop at a fixed resolution (:mod:`.diagnosis_crop`). Samples are cached as ``.npz`` keyed by the input files
(path, size, mtime) and every setting that changes them.

Labels: :func:`diagnosis_labels` (``glioma, lymphoma, germinoma, other`` → 0..3); the split and
the training-pool labels are made as for ASLNet (:func:`prepare_diagnosis_cohort`): split first,
then only the non-test rows are labelled.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.manifest import Manifest
from vbiopsy.data.nifti import Volume, load_volume
from vbiopsy.data.roi_cubes import cube_key
from vbiopsy.data.schema import DIAGNOSES
from vbiopsy.data.splits import Splits, make_splits
from vbiopsy.errors import CohortError, ConfigError, InputError, VbiopsyError
from vbiopsy.localize import LocalizationResult
from vbiopsy.parallel import run_parallel
from vbiopsy.tasks.labels import TaskLabels, parsed_column, subject_ids_of
from vbiopsy.train.diagnosis_config import DiagnosisConfig, DiagnosisDataSettings, LesionMeasurementSettings
from vbiopsy.train.diagnosis_crop import lesion_crops
from vbiopsy.train.diagnosis_grid import crop_padded, paste_to_scan, to_working_grid, working_box, zscore_in_brain
from vbiopsy.train.diagnosis_sample import PRIORS, DiagnosisDataset, DiagnosisSample

__all__ = ["PRIORS", "DiagnosisCohort", "DiagnosisDataset", "DiagnosisSample", "case_dataset", "clinical_matrix",
           "crop_images", "crop_jitter", "crop_padded", "diagnosis_labels", "localize_scan", "manifest_rows",
           "measurement_settings", "paste_to_scan", "prepare_diagnosis_cohort", "prepare_sample", "prepare_samples",
           "sample_from_localization", "scan_modalities", "to_working_grid", "working_box", "zscore_in_brain"]

DATA_VERSION = "1"
"""Bumped whenever the same inputs and settings would give a different sample."""


def diagnosis_labels(frame: Any) -> TaskLabels:
    """Tumour type → class index in :data:`~vbiopsy.data.schema.DIAGNOSES` order; no diagnosis → excluded."""
    ids = subject_ids_of(frame)
    values = parsed_column(frame, "diagnosis")
    keep = [i for i, v in enumerate(values) if v is not None]
    y = np.array([DIAGNOSES.index(values[i]) for i in keep], dtype=np.int64)
    excluded = {ids[i]: "no diagnosis" for i, v in enumerate(values) if v is None}
    return TaskLabels([ids[i] for i in keep], y, excluded, DIAGNOSES, "diagnosis")


def read_on_grid(paths: dict[str, str | Path | None], names: Sequence[str], image: Volume, modality: str,
                 purpose: str, subject_id: str = "") -> dict[str, np.ndarray]:
    """The arrays of ``names`` (``modality`` is ``image`` itself), each checked to lie on ``image``'s grid;
    ``purpose`` names the setting that asks for them in the error of a missing one."""
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        if name == modality:
            arrays[name] = image.array
            continue
        if paths.get(name) is None:
            raise InputError(f"subject {subject_id}", f"the {purpose} needs a {name!r} image")
        other = load_volume(paths[name])  # type: ignore[arg-type]
        if image.grid.mismatch(other.grid):
            raise InputError(paths[name], f"not on the grid of the {modality} image; resample first")
        arrays[name] = other.array
    return arrays


def localize_scan(paths: dict[str, str | Path | None], settings: DiagnosisDataSettings,
                  subject_id: str = "") -> tuple[Volume, LocalizationResult]:
    """Read ``paths["image"]`` (and the localiser's other modalities, same grid) and run the Tumor-Localizer."""
    from vbiopsy.localize import localize

    image = load_volume(paths["image"])  # type: ignore[arg-type]
    config = settings.localizer.model_copy(update={"require_lesion": False})
    images = read_on_grid(paths, config.modalities, image, settings.modality, "localiser (localizer.modalities)",
                          subject_id)
    result = localize(images, spacing_mm=image.grid.spacing, config=config)
    return image, result


def crop_images(paths: dict[str, str | Path | None], settings: DiagnosisDataSettings, image: Volume,
                subject_id: str = "") -> dict[str, np.ndarray] | None:
    """The scan-grid images ``data.lesion_crop`` cuts (None without lesion crops)."""
    if settings.lesion_crop is None:
        return None
    return read_on_grid(paths, settings.lesion_crop.modalities, image, settings.modality,
                        "lesion crop (data.lesion_crop.modalities)", subject_id)


def sample_from_localization(image: Volume, result: LocalizationResult, settings: DiagnosisDataSettings,
                             seg: np.ndarray | None = None, subject_id: str = "",
                             crop_from: dict[str, np.ndarray] | None = None) -> DiagnosisSample:
    """The working-grid sample of a localised scan (``seg``: optional tumour mask on the scan grid; ``crop_from``:
    the :func:`crop_images` of the scan, needed with ``data.lesion_crop``)."""
    start, stop = working_box(result.brain_mask, image.grid.spacing, settings.margin_mm)
    shape = settings.working_shape
    brain = to_working_grid(crop_padded(result.brain_mask.astype(np.float32), start, stop), shape) >= 0.5
    raw = {"coarse": (result.coarse_prior, result.coarse_mask.any()),
           "refined": (result.refined_prior, result.refined_mask.any())}
    if seg is not None:
        raw["seg"] = (seg.astype(np.float32), seg.any())
    warnings: list[str] = []
    priors: dict[str, np.ndarray] = {}
    for name, (prior, present) in raw.items():
        resampled = np.clip(to_working_grid(crop_padded(prior, start, stop), shape), 0.0, 1.0) * brain
        if not present or not resampled.any():
            warnings.append(f"{name} prior empty ({'no lesion found' if not result.found else 'outside the brain'}"
                            "); whole-brain prior used")
            resampled = brain.astype(np.float32)
        priors[name] = resampled.astype(np.float32)
    volume = to_working_grid(crop_padded(image.array, start, stop), shape)
    record = {"subject_id": subject_id, "box_start": start.tolist(), "box_stop": stop.tolist(),
              "scan_shape": list(image.grid.shape), "scan_affine": image.affine.tolist(), "found": result.found,
              "proposer": result.record.get("proposer"), "fallback": result.record.get("fallback"),
              "volumes_ml": result.record.get("volumes_ml"), "warnings": warnings}
    crops: dict[str, np.ndarray] = {}
    if settings.lesion_crop is not None:
        if crop_from is None:
            raise ConfigError("data.lesion_crop is set: sample_from_localization needs the scan's crop images")
        on_scan = {name: prior * float(present) for name, (prior, present) in raw.items()}
        crops, record["crop_centres"] = lesion_crops(crop_from, result.brain_mask, image.grid.spacing, on_scan,
                                                     settings.lesion_crop)
    return DiagnosisSample(zscore_in_brain(volume, brain), brain, priors, record, crops)


def prepare_sample(paths: dict[str, str | Path | None], settings: DiagnosisDataSettings,
                   subject_id: str = "") -> DiagnosisSample:
    """Localise and resample one patient (``paths``: ``image`` plus localiser modalities, optional ``seg``)."""
    image, result = localize_scan(paths, settings, subject_id)
    seg = None
    if paths.get("seg") is not None:
        seg = load_volume(paths["seg"], dtype=np.int16, allow_empty=True).array > 0  # type: ignore[arg-type]
        if seg.shape != image.array.shape:
            shapes = f"segmentation shape {seg.shape} differs from the image's {image.array.shape}"
            raise InputError(paths["seg"], shapes)  # type: ignore[arg-type]
    return sample_from_localization(image, result, settings, seg, subject_id,
                                    crop_images(paths, settings, image, subject_id))


def scan_modalities(settings: DiagnosisDataSettings) -> list[str]:
    """Every manifest image column a sample is made from: the diagnosed modality first, then the localiser's
    and the lesion crop's others."""
    crop = settings.lesion_crop.modalities if settings.lesion_crop else ()
    return list(dict.fromkeys([settings.modality, *settings.localizer.modalities, *crop]))


def sample_settings(settings: DiagnosisDataSettings) -> dict[str, Any]:
    """Every setting a cached sample depends on."""
    keys = {"version": DATA_VERSION, "modality": settings.modality, "working_shape": list(settings.working_shape),
            "margin_mm": settings.margin_mm, "localizer": settings.localizer.model_dump(mode="json")}
    if settings.lesion_crop is not None:  # only then: samples cached without crops keep their key
        keys["lesion_crop"] = settings.lesion_crop.model_dump(mode="json")
    return keys


def _sample(row: dict[str, Any], *, settings: DiagnosisDataSettings, cache_dir: Path) -> DiagnosisSample | str:
    """The cached or new sample, or the message of a user error (collected by the caller)."""
    sid = str(row["subject_id"])
    try:
        paths = {"image": row.get(settings.modality), "seg": row.get("seg"),
                 **{m: row.get(m) for m in scan_modalities(settings)[1:]}}
        if paths["image"] is None:
            raise InputError(f"subject {sid}", f"no {settings.modality!r} image in the manifest")
        key = cube_key(paths, sample_settings(settings))
        path = cache_dir / f"{sid}.npz"
        sample = DiagnosisSample.load(path, key)
        if sample is None:
            sample = prepare_sample(paths, settings, sid)
            sample.save(path, key)
        return sample
    except VbiopsyError as err:
        return str(err)


def prepare_samples(settings: DiagnosisDataSettings, manifest: Manifest, subject_ids: Sequence[str],
                    cache_dir: Path) -> dict[str, DiagnosisSample]:
    """Samples of ``subject_ids`` (cached in ``cache_dir``); every subject's problem is raised together."""
    if settings.modality not in manifest.modalities:
        raise InputError(manifest.source, f"the cohort has no {settings.modality!r} images "
                                          f"(modalities: {', '.join(manifest.modalities) or 'none'})")
    cache_dir.mkdir(parents=True, exist_ok=True)
    task = functools.partial(_sample, settings=settings, cache_dir=cache_dir)
    samples: dict[str, DiagnosisSample] = {}
    problems: list[str] = []
    ids = list(subject_ids)
    for index, result in run_parallel(task, [manifest.row(s) for s in ids], jobs=settings.jobs):
        if isinstance(result, str):
            problems.append(result)
        else:
            samples[ids[index]] = result
    if problems:
        raise CohortError(sorted(problems))
    return samples


@dataclass
class DiagnosisCohort:
    """What training may see: the manifest, the split, the training pool's labels and every sample."""

    manifest: Manifest
    splits: Splits
    train_labels: TaskLabels
    test_ids: tuple[str, ...]
    samples: dict[str, DiagnosisSample]

    def targets(self, subject_ids: Sequence[str]) -> np.ndarray:
        """Class indices of training-pool ``subject_ids`` in that order."""
        from vbiopsy.train.cohort import targets_of

        return targets_of(self.train_labels, list(subject_ids))

    def clinical(self, subject_ids: Sequence[str], features: Sequence[str]) -> np.ndarray | None:
        """(n, k) float32 encoded clinical ``features`` of ``subject_ids`` (NaN = missing); None for no features."""
        return clinical_matrix(self.manifest, subject_ids, features)

    def dataset(self, subject_ids: Sequence[str], config: DiagnosisConfig, *, labelled: bool = False,
                augment: bool = False, seed: int = 0) -> DiagnosisDataset:
        """The model's inputs for ``subject_ids`` (prior and clinical variables as configured), with the
        training-pool targets when ``labelled`` and the configured augmentation when ``augment``."""
        ids = list(subject_ids)
        return DiagnosisDataset([self.samples[s] for s in ids], prior=config.model.prior,
                                targets=self.targets(ids) if labelled else None,
                                augment=config.augment if augment else None, seed=seed,
                                clinical=self.clinical(ids, config.model.clinical), crop_jitter=crop_jitter(config),
                                measurements=measurement_settings(config))


def crop_jitter(config: DiagnosisConfig) -> int | None:
    """The stored lesion crops' margin when the model takes a crop (``model.lesion_crop``), else None."""
    crop = config.data.lesion_crop
    return crop.jitter_voxels if config.model.lesion_crop and crop is not None else None


def case_dataset(sample: DiagnosisSample, config: DiagnosisConfig,
                 clinical: np.ndarray | None = None) -> DiagnosisDataset:
    """The one-sample, unaugmented dataset of ``sample`` as ``config``'s model takes it (``clinical``: the
    patient's (k,) encoded ``model.clinical`` values, None without any)."""
    return DiagnosisDataset([sample], prior=config.model.prior, crop_jitter=crop_jitter(config),
                            clinical=None if clinical is None else np.asarray(clinical, np.float32)[None],
                            measurements=measurement_settings(config))


def measurement_settings(config: DiagnosisConfig) -> LesionMeasurementSettings | None:
    """The crop and thresholds the lesion measurements are taken with when the model takes them, else None."""
    crop = config.data.lesion_crop
    if not config.model.lesion_measurements or crop is None:
        return None
    return LesionMeasurementSettings(crop=crop, thresholds=config.model.measurement_thresholds)


def manifest_rows(manifest: Manifest, subject_ids: Sequence[str]) -> Any:
    """The manifest rows (clinical columns included) of ``subject_ids``, in that order."""
    return manifest.frame.set_index("subject_id", drop=False).loc[list(subject_ids)]


def clinical_matrix(manifest: Manifest, subject_ids: Sequence[str], features: Sequence[str]) -> np.ndarray | None:
    """(n, k) float32 encoded clinical ``features`` of ``subject_ids`` from ``manifest`` (NaN = missing; the
    model imputes); ``None`` when ``features`` is empty."""
    from vbiopsy.train.tabular import encode_column

    if not features:
        return None
    frame = manifest_rows(manifest, subject_ids)
    return np.stack([encode_column(frame, f) for f in features], axis=1).astype(np.float32)


def make_diagnosis_splits(config: DiagnosisConfig, manifest: Manifest, run_dir: Path) -> Splits:
    """``data.splits`` if given (leakage-checked), else a stratified patient-level split; written to the run."""
    subject_to_patient = dict(zip(manifest.subjects, manifest.patient_ids()))
    data = config.data
    if data.splits is not None:
        splits = Splits.load(data.splits, subject_to_patient=subject_to_patient)
    else:
        labels = diagnosis_labels(manifest.frame)
        splits = make_splits(labels.subject_ids, [DIAGNOSES[int(v)] for v in labels.y],
                             patient_ids=[subject_to_patient[s] for s in labels.subject_ids],
                             test_fraction=data.test_fraction, n_folds=data.folds, seed=data.split_seed,
                             keep_in_train=data.keep_in_train, rare_classes=data.rare_classes,
                             stratify_name="diagnosis")
    unknown = [s for s in splits.subjects if s not in subject_to_patient]
    if unknown:
        raise InputError(data.splits or "splits", f"subject {unknown[0]!r} is not in the cohort")
    splits.save(run_dir / "splits.json")
    return splits


def prepare_diagnosis_cohort(config: DiagnosisConfig, run_dir: Path, *,
                             cache_dir: Path | None = None) -> DiagnosisCohort:
    """Read the cohort, fix the split, label the training pool only, prepare every subject's sample
    (cached in ``cache_dir``, default ``run_dir/samples``)."""
    data = config.data
    manifest = read_cohort(data.cohort, layout=data.layout, clinical=data.clinical)
    splits = make_diagnosis_splits(config, manifest, run_dir)
    test = set(splits.test)
    labels = diagnosis_labels(manifest.frame[~manifest.frame["subject_id"].isin(test)])
    pool = sorted({s for fold in splits.folds for s in (*fold.train, *fold.val)})
    missing = sorted(set(pool) - set(labels.subject_ids))
    if missing:
        raise InputError(data.splits or "splits", f"{len(missing)} subjects in the folds have no diagnosis "
                                                  f"(e.g. {missing[0]})")
    samples = prepare_samples(data, manifest, sorted(set(pool) | test), cache_dir or run_dir / "samples")
    return DiagnosisCohort(manifest, splits, labels, tuple(splits.test), samples)
