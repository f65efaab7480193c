"""The MRI-Processor pipeline: raw scans of one patient → model-ready volumes on one grid.

Order: read and validate → N4 (each modality, native grid) → rigid co-registration to the
reference modality → registration of the reference to the template → one resampling of every
modality onto the output grid (transforms composed, so each image is interpolated once) → skull
stripping → z-score normalisation. Every step appends to ``record["steps"]`` its name, backend,
parameters, transforms and seconds; ``record["transforms"][modality]`` is the chain output grid →
native scan that :func:`vbiopsy.preprocess.native.to_native` inverts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from vbiopsy import __version__
from vbiopsy.data.labels import LabelConvention, to_brats2024
from vbiopsy.data.nifti import Grid, Volume, load_volume
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.preprocess.atlas import load_atlas
from vbiopsy.preprocess.bias import n4_correct
from vbiopsy.preprocess.config import PreprocessConfig
from vbiopsy.preprocess.coregister import coregister, identity_record
from vbiopsy.preprocess.foreground import check_foreground, check_overlap
from vbiopsy.preprocess.normalize import zscore
from vbiopsy.preprocess.resample import grid_at_spacing, resample_array
from vbiopsy.preprocess.sitk_bridge import affine_of, compose, grid_of, transform_to_record, volume_to_sitk
from vbiopsy.preprocess.strippers import SkullStripper, StripInputs, make_stripper
from vbiopsy.preprocess.template_registration import affine_to_template

Log = Callable[[str], None]


@dataclass(frozen=True)
class ProcessedSubject:
    """One preprocessed patient, every array on the output grid ``affine`` (canonical RAS).

    ``images``: modality → float32 (X, Y, Z); ``brain_mask``: uint8 or ``None`` (no skull
    stripping); ``seg``: uint8 BraTS 2024 labels or ``None``; ``record``: JSON-able account of
    every step, enough to map any output-space map back to a native scan.
    """

    images: dict[str, np.ndarray]
    brain_mask: np.ndarray | None
    seg: np.ndarray | None
    affine: np.ndarray
    record: dict[str, Any]


def grid_record(grid: Grid) -> dict[str, Any]:
    """JSON-able ``{"shape", "affine"}`` of a grid."""
    return {"shape": [int(s) for s in grid.shape], "affine": np.asarray(grid.affine, dtype=float).tolist()}


def choose_reference(wanted: str, modalities: list[str]) -> str:
    """``wanted`` if present, else the first modality given."""
    return wanted if wanted in modalities else modalities[0]


@contextlib.contextmanager
def sitk_threads(count: int) -> Iterator[None]:
    """Run SimpleITK filters with ``count`` threads (0: leave the default)."""
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    if count > 0:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(count)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


class _Steps:
    """Collects step records and logs one line per step."""

    def __init__(self, log: Log | None) -> None:
        self.records: list[dict[str, Any]] = []
        self.log = log

    def add(self, name: str, backend: str, started: float, parameters: Mapping[str, Any] | None = None,
            **extra: Any) -> None:
        seconds = round(time.perf_counter() - started, 3)
        entry = {"name": name, "backend": backend, "parameters": dict(parameters or {}), **extra, "seconds": seconds}
        self.records.append(entry)
        if self.log is not None:
            target = f" {extra['modality']}" if "modality" in extra else ""
            self.log(f"{name}{target}: {backend} ({seconds:.2f} s)")


def _read_inputs(images: Mapping[str, str | Path], config: PreprocessConfig) -> tuple[dict[str, Volume], str]:
    if not images:
        raise ConfigError("preprocess_subject needs at least one image (modality → path)")
    volumes = {}
    for modality, path in images.items():
        volume = load_volume(path)
        check_foreground(volume, path, modality)
        volumes[modality] = volume
    reference = choose_reference(config.coregistration.reference, list(volumes))
    for modality, volume in volumes.items():
        if modality != reference:
            check_overlap(volume.grid, volumes[reference].grid, path=images[modality], modality=modality,
                          reference_name=reference, minimum=config.min_fov_overlap)
    return volumes, reference


def _read_seg(path: str | Path, convention: str, reference: Volume, config: PreprocessConfig) -> Volume:
    volume = load_volume(path, dtype=np.int16, allow_empty=True)
    try:
        labels = to_brats2024(volume.array, convention)
    except ValueError as err:
        raise InputError(path, str(err)) from None
    check_overlap(volume.grid, reference.grid, path=path, modality="seg", reference_name="reference",
                  minimum=config.min_fov_overlap)
    return Volume(labels, volume.affine)


def _template_step(reference: Volume, config: PreprocessConfig, steps: _Steps,
                   ) -> tuple[list[dict[str, Any]], Grid, str]:
    """Transforms output → reference space, the output grid and a name of its space."""
    spacing = config.resample.spacing_mm
    reg = config.registration
    if not reg.enabled:
        return [], grid_at_spacing(reference.grid, spacing), "reference"
    started = time.perf_counter()
    atlas = load_atlas(reg.template, reg.template_mask)
    ref_image = volume_to_sitk(reference)
    affine, report = affine_to_template(ref_image, atlas, reg)
    chain = [transform_to_record(affine)]
    backend = "simpleitk-affine"
    if reg.backend == "syn":
        from vbiopsy.preprocess.syn import syn_records  # lazy: ANTsPy is an optional extra

        warped = sitk.Resample(ref_image, atlas.image, affine, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        fields, syn_report = syn_records(atlas.image, warped, reg.syn_field_spacing_mm)
        chain = fields + chain
        report["syn"] = syn_report
        backend = "simpleitk-affine+antspy-syn"
    output = grid_at_spacing(grid_of(atlas.image), spacing)
    steps.add("template_registration", backend, started, reg.model_dump(mode="json"), transforms=chain,
              report=report)
    return chain, output, f"template: {atlas.name}"


def _prior_factory(reference: Volume, chain: list[dict[str, Any]], grid: Grid,
                   config: PreprocessConfig) -> Callable[[], np.ndarray]:
    """Template brain probability on the output grid (registers the template if not done yet)."""
    reg = config.registration

    def prior() -> np.ndarray:
        atlas = load_atlas(reg.template, reg.template_mask)
        mask = sitk.GetArrayFromImage(atlas.mask).transpose(2, 1, 0).astype(np.float32)
        if reg.enabled:  # the output grid is in template space
            return resample_array(mask, affine_of(atlas.mask), grid)
        affine, _ = affine_to_template(volume_to_sitk(reference), atlas, reg)
        to_template = compose(chain + [transform_to_record(affine.GetInverse())])
        return resample_array(mask, affine_of(atlas.mask), grid, to_template)

    return prior


def preprocess_subject(images: Mapping[str, str | Path], *, seg: str | Path | None = None,
                       seg_convention: str = "brats2024", config: PreprocessConfig,
                       log: Log | None = None) -> ProcessedSubject:
    """Run the MRI-Processor on one patient's scans (modality → NIfTI path).

    ``seg`` is a segmentation in the reference modality's world space (``seg_convention``:
    ``brats2024`` or ``brats2021``), carried onto the output grid with nearest neighbour.

    Raises:
        InputError: unreadable/invalid file, all-background image, a modality whose field of view
            does not overlap the reference's, or an empty brain mask — each naming the file.
        ConfigError: an unusable option (e.g. SyN without ANTsPy, HD-BET not installed).
    """
    started_all = time.perf_counter()
    conventions = [c.value for c in LabelConvention]
    if seg_convention not in conventions:
        raise ConfigError(f"seg_convention must be one of {', '.join(conventions)}, got {seg_convention!r}")
    steps = _Steps(log)
    stripper = make_stripper(config.skull_strip)
    if stripper is not None:
        stripper.check()
    if config.registration.enabled and config.registration.backend == "syn":
        from vbiopsy.preprocess.syn import import_ants  # lazy: ANTsPy is an optional extra

        import_ants()
    with sitk_threads(config.threads):
        started = time.perf_counter()
        volumes, reference = _read_inputs(images, config)
        seg_volume = _read_seg(seg, seg_convention, volumes[reference], config) if seg is not None else None
        steps.add("read", "nibabel", started, {"modalities": list(volumes), "reference": reference})
        if config.bias.enabled:
            for modality in list(volumes):
                started = time.perf_counter()
                volumes[modality], info = n4_correct(volumes[modality], config.bias)
                steps.add("bias_correction", "simpleitk-n4", started, config.bias.model_dump(mode="json"),
                          modality=modality, report=info)
        coreg: dict[str, dict[str, Any]] = {reference: identity_record()}
        ref_image = volume_to_sitk(volumes[reference])
        for modality, volume in volumes.items():
            if modality == reference:
                continue
            started = time.perf_counter()
            coreg[modality], report = coregister(ref_image, volume_to_sitk(volume), volumes[reference].grid,
                                                 volume.grid, config.coregistration)
            steps.add("coregistration", "simpleitk-rigid", started, config.coregistration.model_dump(mode="json"),
                      modality=modality, transform=coreg[modality], report=report)
        chain, grid, space = _template_step(volumes[reference], config, steps)
        transforms = {m: chain + [coreg[m]] for m in volumes}

        started = time.perf_counter()
        interpolation = config.resample.interpolation
        out = {m: resample_array(v.array, v.affine, grid, compose(transforms[m]), interpolation=interpolation)
               for m, v in volumes.items()}
        fovs = {m: resample_array(np.ones(v.array.shape, np.uint8), v.affine, grid, compose(transforms[m]),
                                  interpolation="nearest") > 0 for m, v in volumes.items()}
        fov = fovs[reference]
        out_seg = None
        if seg_volume is not None:
            out_seg = resample_array(seg_volume.array, seg_volume.affine, grid, compose(transforms[reference]),
                                     interpolation="nearest").astype(np.uint8)
        steps.add("resample", f"simpleitk-{interpolation}", started, config.resample.model_dump(mode="json"),
                  output_grid=grid_record(grid))

        brain = _strip(stripper, out, reference, grid, fovs, images, volumes, chain, config, steps)
        started = time.perf_counter()
        stats = {}
        region = brain if brain is not None else fov & (out[reference] > 0)
        for modality in out:
            if brain is not None:
                out[modality] = np.where(brain, out[modality], 0.0).astype(np.float32)
            if config.normalize.enabled:
                out[modality], stats[modality] = zscore(out[modality], region,
                                                        lower_percentile=config.normalize.lower_percentile,
                                                        upper_percentile=config.normalize.upper_percentile)
        if config.normalize.enabled:
            steps.add("normalize", "zscore", started, config.normalize.model_dump(mode="json"), report=stats)

    record = {
        "vbiopsy_version": __version__,
        "reference": reference,
        "config": config.model_dump(mode="json"),
        "modalities": {m: {"source": str(images[m]), "native_grid": grid_record(v.grid)} for m, v in volumes.items()},
        "seg": None if seg is None else {"source": str(seg), "convention": seg_convention, "space": reference},
        "output_grid": {**grid_record(grid), "space": space},
        "transforms": transforms,
        "steps": steps.records,
        "seconds": round(time.perf_counter() - started_all, 3),
    }
    mask = brain.astype(np.uint8) if brain is not None else None
    return ProcessedSubject(out, mask, out_seg, grid.affine.copy(), record)


def _strip(stripper: SkullStripper | None, out: dict[str, np.ndarray], reference: str, grid: Grid, fovs: dict[str, np.ndarray],
           images: Mapping[str, str | Path], volumes: dict[str, Volume], chain: list[dict[str, Any]],
           config: PreprocessConfig, steps: _Steps) -> np.ndarray | None:
    """Run the skull-stripping backend; an empty mask is an InputError naming the scan."""
    if stripper is None:
        return None
    started = time.perf_counter()
    to_reference = compose(chain + [identity_record()])

    def to_output(volume: Volume) -> np.ndarray:
        return resample_array(volume.array.astype(np.uint8), volume.affine, grid, to_reference,
                              interpolation="nearest")

    fov = fovs[reference]
    inputs = StripInputs(out, reference, grid, fov, fovs, volumes[reference], Path(images[reference]),
                         _prior_factory(volumes[reference], chain, grid, config), to_output)
    brain, report = stripper(inputs)
    brain = brain & fov
    if not brain.any():
        raise InputError(images[reference], f"skull stripping ({stripper.name}) found no brain: the brain mask is "
                                            "empty")
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    steps.add("skull_strip", stripper.name, started, config.skull_strip.model_dump(mode="json"),
              report={**report, "brain_ml": round(float(brain.sum()) * voxel_ml, 2)})
    return brain
