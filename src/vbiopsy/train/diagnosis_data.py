"""Diagnoser inputs: whole-brain T1c on the working grid plus the Tumor-Localizer's priors, cached per patient.

Per patient (:func:`prepare_sample`): the localiser runs on the scan's own grid (T1c + FLAIR by
default) and gives the brain mask, the coarse prior (Eq. 4) and the refined prior (Eq. 5). A
square axial field of view around the brain's bounding box (plus ``margin_mm``; full
superior–inferior extent) is cut, padded with background where it leaves the scan, smoothed
against aliasing and resampled linearly onto ``working_shape``. The image is z-scored over the
brain and 0 outside it. A prior that is empty (nothing found) is replaced by the whole brain and a
warning is recorded for that patient. Samples are cached as ``.npz`` keyed by the input files
(path, size, mtime) and every setting that changes them.

Labels: :func:`diagnosis_labels` (``glioma, lymphoma, germinoma, other`` → 0..3); the split and
the training-pool labels are made as for ASLNet (:func:`prepare_diagnosis_cohort`): split first,
then only the non-test rows are labelled.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from vbiopsy.atomic import write_with_atomic
from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.manifest import Manifest
from vbiopsy.data.nifti import Volume, load_volume
from vbiopsy.data.roi_cubes import cube_key
from vbiopsy.data.schema import DIAGNOSES
from vbiopsy.data.splits import Splits, make_splits
from vbiopsy.errors import CohortError, ConfigError, InputError, VbiopsyError
from vbiopsy.localize import LocalizationResult
from vbiopsy.parallel import run_parallel
from vbiopsy.preprocess.aslnet_roi import resample_cube
from vbiopsy.tasks.labels import TaskLabels, parsed_column, subject_ids_of
from vbiopsy.train.diagnosis_augment import augment_pair
from vbiopsy.train.diagnosis_config import DiagnosisAugmentSettings, DiagnosisConfig, DiagnosisDataSettings

DATA_VERSION = "1"
"""Bumped whenever the same inputs and settings would give a different sample."""
PRIORS: tuple[str, ...] = ("coarse", "refined", "seg")


def diagnosis_labels(frame: Any) -> TaskLabels:
    """Tumour type → class index in :data:`~vbiopsy.data.schema.DIAGNOSES` order; no diagnosis → excluded."""
    ids = subject_ids_of(frame)
    values = parsed_column(frame, "diagnosis")
    keep = [i for i, v in enumerate(values) if v is not None]
    y = np.array([DIAGNOSES.index(values[i]) for i in keep], dtype=np.int64)
    excluded = {ids[i]: "no diagnosis" for i, v in enumerate(values) if v is None}
    return TaskLabels([ids[i] for i in keep], y, excluded, DIAGNOSES, "diagnosis")


@dataclass(frozen=True, eq=False)
class DiagnosisSample:
    """One patient on the working grid: ``image`` (float32 z-scored, 0 outside the brain), ``brain`` (bool),
    ``priors`` name → float32 [0, 1] (``coarse``, ``refined``, ``seg`` when a segmentation exists),
    ``record`` (box on the scan grid, localiser summary, ``warnings``)."""

    image: np.ndarray
    brain: np.ndarray
    priors: dict[str, np.ndarray]
    record: dict[str, Any] = field(default_factory=dict)

    def prior(self, name: str) -> np.ndarray | None:
        """Prior ``name`` (``none`` → ``None``); a missing one is an :class:`InputError`."""
        if name == "none":
            return None
        if name not in self.priors:
            raise InputError(f"subject {self.record.get('subject_id', '?')}",
                             f"no {name!r} prior (has: {', '.join(self.priors) or 'none'}); "
                             "the 'seg' prior needs a segmentation in the manifest")
        return self.priors[name]

    def save(self, path: Path, key: str) -> Path:
        """Write to ``path`` (.npz, atomically) with the cache ``key``."""
        arrays = {"image": self.image, "brain": self.brain, **{f"prior_{k}": v for k, v in self.priors.items()}}
        meta = json.dumps({"key": key, "record": self.record})

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, meta=np.array(meta), **arrays)

        return write_with_atomic(path, write)

    @classmethod
    def load(cls, path: Path, key: str | None = None) -> DiagnosisSample | None:
        """The sample at ``path``; ``None`` if absent, unreadable or made with another ``key``."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if key is not None and meta["key"] != key:
                    return None
                priors = {k[6:]: data[k] for k in data.files if k.startswith("prior_")}
                return cls(data["image"], data["brain"], priors, meta["record"])
        except (OSError, KeyError, ValueError):
            return None


def working_box(brain: np.ndarray, spacing: Sequence[float], margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) voxel indices (may leave the scan) of a square axial field of view around ``brain``."""
    if not brain.any():
        raise InputError("brain mask", "is empty: no brain found in the scan")
    spacing_arr = np.asarray(spacing, dtype=float)
    hits = np.argwhere(brain)
    low, high = hits.min(0), hits.max(0) + 1
    extent_mm = (high - low) * spacing_arr + 2.0 * margin_mm
    extent_mm[:2] = extent_mm[:2].max()
    size = np.maximum(np.round(extent_mm / spacing_arr).astype(int), 1)
    start = np.floor((low + high) / 2.0 - size / 2.0 + 0.5).astype(int)
    return start, start + size


def crop_padded(array: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """``array[start:stop]`` with zeros where the box leaves ``array``."""
    out = np.zeros(tuple(int(n) for n in stop - start), dtype=array.dtype)
    src = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(start, stop, array.shape))
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, start))
    out[dst] = array[src]
    return out


def to_working_grid(box: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample a cut box onto ``shape`` (linear, same extent), Gaussian pre-smoothing σ = (f − 1)/2 per
    axis where it shrinks by f > 1 (scikit-image's anti-aliasing rule); float32."""
    factor = np.asarray(box.shape, float) / np.asarray(shape, float)
    sigma = np.clip((factor - 1.0) / 2.0, 0.0, None)
    smooth = ndimage.gaussian_filter(box.astype(np.float32), sigma, mode="nearest") if sigma.any() else box
    return resample_cube(smooth.astype(np.float32, copy=False), shape).astype(np.float32, copy=False)


def zscore_in_brain(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """(image − mean) / sd over the brain, 0 outside; float32."""
    values = image[brain]
    sd = float(values.std()) if values.size > 1 else 0.0
    return np.where(brain, (image - float(values.mean())) / (sd if sd > 0 else 1.0), 0.0).astype(np.float32)


def localize_scan(paths: dict[str, str | Path | None], settings: DiagnosisDataSettings,
                  subject_id: str = "") -> tuple[Volume, LocalizationResult]:
    """Read ``paths["image"]`` (and the localiser's other modalities, same grid) and run the Tumor-Localizer."""
    from vbiopsy.localize import localize

    image = load_volume(paths["image"])  # type: ignore[arg-type]
    images = {settings.modality: image.array}
    for name in settings.localizer.modalities:
        if name not in images:
            if paths.get(name) is None:
                raise InputError(f"subject {subject_id}",
                                 f"the localiser needs a {name!r} image (localizer.modalities)")
            other = load_volume(paths[name])  # type: ignore[arg-type]
            if image.grid.mismatch(other.grid):
                raise InputError(paths[name], f"not on the grid of the {settings.modality} image; resample first")
            images[name] = other.array
    config = settings.localizer.model_copy(update={"require_lesion": False})
    result = localize({m: images[m] for m in config.modalities}, spacing_mm=image.grid.spacing, config=config)
    return image, result


def sample_from_localization(image: Volume, result: LocalizationResult, settings: DiagnosisDataSettings,
                             seg: np.ndarray | None = None, subject_id: str = "") -> DiagnosisSample:
    """The working-grid sample of a localised scan (``seg``: optional tumour mask on the scan grid)."""
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
    return DiagnosisSample(zscore_in_brain(volume, brain), brain, priors, record)


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
    return sample_from_localization(image, result, settings, seg, subject_id)


def paste_to_scan(working: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """A working-grid map (X, Y, Z) put back on the scan grid of ``record`` (linear; 0 outside the box)."""
    start, stop = np.asarray(record["box_start"]), np.asarray(record["box_stop"])
    box = resample_cube(working.astype(np.float32), tuple(int(n) for n in stop - start))
    out = np.zeros(tuple(record["scan_shape"]), dtype=np.float32)
    dst = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(start, stop, out.shape))
    src = tuple(slice(d.start - a, d.stop - a) for d, a in zip(dst, start))
    out[dst] = box[src]
    return out


def sample_settings(settings: DiagnosisDataSettings) -> dict[str, Any]:
    """Every setting a cached sample depends on."""
    return {"version": DATA_VERSION, "modality": settings.modality, "working_shape": list(settings.working_shape),
            "margin_mm": settings.margin_mm, "localizer": settings.localizer.model_dump(mode="json")}


def _sample(row: dict[str, Any], *, settings: DiagnosisDataSettings, cache_dir: Path) -> DiagnosisSample | str:
    """The cached or new sample, or the message of a user error (collected by the caller)."""
    sid = str(row["subject_id"])
    try:
        paths = {"image": row.get(settings.modality), "seg": row.get("seg"),
                 **{m: row.get(m) for m in settings.localizer.modalities}}
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
                                clinical=self.clinical(ids, config.model.clinical))


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


class DiagnosisDataset(Dataset):
    """Items ``{"image": (1, X, Y, Z), "index": int[, "prior": (1, X, Y, Z)][, "clinical": (k,)][, "target": int64]}``.

    Augmentation (training only) is seeded by (seed, epoch, item); ``drawn[index]`` records the last draw.
    """

    def __init__(self, samples: Sequence[DiagnosisSample], *, prior: str = "none", targets: np.ndarray | None = None,
                 augment: DiagnosisAugmentSettings | None = None, seed: int = 0,
                 clinical: np.ndarray | None = None) -> None:
        if prior not in ("none", *PRIORS):
            raise ConfigError(f"prior must be one of none, {', '.join(PRIORS)}; got {prior!r}")
        if targets is not None and len(targets) != len(samples):
            raise ConfigError(f"{len(targets)} targets for {len(samples)} samples")
        if clinical is not None and (np.ndim(clinical) != 2 or len(clinical) != len(samples)):
            raise ConfigError(f"clinical must be (n={len(samples)}, k), got shape {np.shape(clinical)}")
        self.clinical = None if clinical is None else np.asarray(clinical, dtype=np.float32)
        self.samples = list(samples)
        self.prior_name = prior
        for sample in self.samples:
            sample.prior(prior)  # a missing prior fails here, not mid-epoch
        self.targets = targets
        self.augment = augment if augment is not None and augment.enabled else None
        self.seed = seed
        self.epoch = 0
        self.drawn: dict[int, dict[str, Any]] = {}

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (called at the start of every training epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image, prior = sample.image, sample.prior(self.prior_name)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, prior, self.drawn[index] = augment_pair(image, prior, self.augment, rng)
        item: dict[str, Any] = {"image": torch.from_numpy(np.ascontiguousarray(image, np.float32))[None],
                                "index": index}
        if prior is not None:
            item["prior"] = torch.from_numpy(np.ascontiguousarray(prior, np.float32))[None]
        if self.clinical is not None:
            item["clinical"] = torch.from_numpy(self.clinical[index].copy())
        if self.targets is not None:
            item["target"] = torch.as_tensor(int(self.targets[index]), dtype=torch.long)
        return item
