"""Tumor-Localizer orchestration: images → slice boxes → coarse prior → MLP refinement → priors.

:func:`localize` works on arrays (canonical RAS, one grid); :func:`localize_files` reads NIfTI
files first; :func:`save_localization` writes the priors and the record atomically.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vbiopsy.atomic import ensure_writable_dir, write_text_atomic
from vbiopsy.config import build_config
from vbiopsy.data.nifti import load_volume, save_volume
from vbiopsy.errors import ConfigError, InputError, VbiopsyError
from vbiopsy.localize.boxes import ProposalError, Proposals, SliceProposer
from vbiopsy.localize.builtin import BuiltinProposer
from vbiopsy.localize.config import LocalizerConfig
from vbiopsy.localize.geometry import main_component_centre
from vbiopsy.localize.prior import coarse_prior
from vbiopsy.localize.refine import refine_prior
from vbiopsy.localize.scan import Scan, prepare_scan

log = logging.getLogger(__name__)


class NoLesionError(VbiopsyError):
    """No abnormal region was found (raised when ``require_lesion`` is set)."""


@dataclass(frozen=True, eq=False)
class LocalizationResult:
    """Priors on the input grid (X, Y, Z) and a JSON-ready record of how they were made.

    ``coarse_prior``: float32 in [0, 1] (Eq. 4); ``coarse_mask``: ``coarse_prior ≥
    mask_threshold``; ``probability``: the MLP's tumour probability (0 outside its support);
    ``refined_mask``: Eq. 5's union; ``proposals``: the boxes, on the input grid.
    """

    coarse_prior: np.ndarray
    coarse_mask: np.ndarray
    probability: np.ndarray
    refined_mask: np.ndarray
    brain_mask: np.ndarray
    proposals: Proposals
    record: dict[str, Any]

    @property
    def found(self) -> bool:
        """True when a lesion was proposed (the priors are not empty)."""
        return bool(self.coarse_mask.any())

    @property
    def refined_prior(self) -> np.ndarray:
        """Soft refined prior: ``max(coarse prior, MLP probability)`` inside the refined mask, 0 outside."""
        return np.where(self.refined_mask, np.maximum(self.coarse_prior, self.probability), 0).astype(np.float32)

    def centre_vox(self) -> np.ndarray | None:
        """Centre of the lesion (voxel coordinates, shape (3,)): the refined prior's weighted centroid
        over its heaviest connected part; ``None`` when nothing was found.

        This is the point an ASLNet ROI can be centred on (``compute_roi(..., centre_mm=...)``)
        instead of the brightest voxels, which vessels or artefacts can pull off the tumour.
        """
        return main_component_centre(self.refined_prior)

    def centre_mm(self, affine: np.ndarray) -> tuple[float, float, float] | None:
        """:meth:`centre_vox` in world mm under the grid's 4×4 voxel → mm ``affine``."""
        centre = self.centre_vox()
        if centre is None:
            return None
        mm = np.asarray(affine, dtype=float)[:3, :3] @ centre + np.asarray(affine, dtype=float)[:3, 3]
        return (float(mm[0]), float(mm[1]), float(mm[2]))


def _config(config: LocalizerConfig | Mapping[str, Any] | None) -> LocalizerConfig:
    if config is None:
        return LocalizerConfig()
    if isinstance(config, LocalizerConfig):
        return config
    if isinstance(config, Mapping):
        return build_config(LocalizerConfig, dict(config), "localize config")
    raise ConfigError(f"config must be a LocalizerConfig or a mapping, got {type(config).__name__}")


def _propose(scan: Scan, proposer: SliceProposer, config: LocalizerConfig) -> tuple[Proposals, dict[str, Any] | None]:
    """Run ``proposer``; on :class:`ProposalError` fall back to the built-in one or re-raise, by policy."""
    try:
        proposals = proposer.propose(scan)
    except ProposalError as err:
        if config.on_proposer_failure == "error":
            raise
        log.warning("proposer %s failed (%s); using the built-in proposer", proposer.name, err)
        fallback = {"from": proposer.name, "reason": str(err)}
        proposals = BuiltinProposer(config.builtin).propose(scan)
        return proposals, fallback
    if not isinstance(proposals, Proposals) or proposals.shape != scan.shape:
        got = proposals.shape if isinstance(proposals, Proposals) else type(proposals).__name__
        raise ProposalError(f"proposer {proposer.name!r} returned proposals for {got}, expected shape {scan.shape}")
    return proposals, None


def localize(images: Mapping[str, np.ndarray], *, spacing_mm: tuple[float, float, float],
             brain_mask: np.ndarray | None = None, proposer: SliceProposer | None = None,
             config: LocalizerConfig | Mapping[str, Any] | None = None) -> LocalizationResult:
    """Localise the tumour of one scan (paper Fig. 3).

    Args:
        images: modality → (X, Y, Z) array in canonical RAS, all on one grid (``config.modalities``
            must be present; T1c + FLAIR by default).
        spacing_mm: voxel size per axis.
        brain_mask: boolean brain mask; derived by threshold + morphology when ``None``.
        proposer: slice box source (a :class:`~vbiopsy.localize.vlm.VLMProposer`, …); the built-in
            asymmetry proposer when ``None``.
        config: :class:`LocalizerConfig` or a mapping validated into one.

    Raises:
        InputError: unusable images or mask (message names the image and the problem).
        ConfigError: invalid configuration.
        ProposalError: the proposer failed and ``on_proposer_failure="error"``.
        NoLesionError: nothing abnormal was found and ``require_lesion`` is set.
    """
    cfg = _config(config)
    started = time.perf_counter()
    if proposer is not None and not isinstance(proposer, SliceProposer):
        raise ConfigError(f"proposer must implement SliceProposer (name, propose(scan)), got {type(proposer).__name__}")
    proposer = proposer if proposer is not None else BuiltinProposer(cfg.builtin)
    scan = prepare_scan(images, spacing_mm, brain_mask=brain_mask, modalities=cfg.modalities,
                        asymmetry_sigma_mm=cfg.asymmetry_sigma_mm, crop_margin_mm=cfg.crop_margin_mm)
    timings = {"prepare": time.perf_counter() - started}

    mark = time.perf_counter()
    proposals, fallback = _propose(scan, proposer, cfg)
    timings["propose"] = time.perf_counter() - mark
    full_shape = scan.full_shape or scan.shape
    record: dict[str, Any] = {
        "proposer": proposals.source, "requested_proposer": proposer.name, "fallback": fallback,
        "spacing_mm": list(scan.spacing), "modalities": list(scan.modalities),
        "crop": [[w.start, w.stop] for w in scan.window] if scan.window else None,
        "intensity": scan.stats, "config": cfg.model_dump(mode="json"),
    }
    if proposals.empty:
        message = (f"no abnormal region found by {proposals.source!r} "
                   f"(checked {len(proposals.slices)} axial slices)")
        if cfg.require_lesion:
            raise NoLesionError(message)
        log.warning("%s; returning empty priors", message)

    mark = time.perf_counter()
    prior, prior_record = coarse_prior(proposals, scan.brain, scan.spacing, cfg.prior)
    timings["prior"] = time.perf_counter() - mark
    mark = time.perf_counter()
    probability, refined, refine_record = refine_prior(scan, prior, cfg.refine, mask_threshold=cfg.prior.mask_threshold)
    timings["refine"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started

    voxel_ml = float(np.prod(scan.spacing)) / 1000.0
    coarse_mask = prior >= cfg.prior.mask_threshold
    record.update(
        proposals=proposals.embedded(scan.offset, full_shape).summary(), prior=prior_record, refine=refine_record,
        midplane=scan.plane.to_dict(), found=bool(coarse_mask.any()),
        volumes_ml={"brain": round(float(np.count_nonzero(scan.brain)) * voxel_ml, 2),
                    "coarse_mask": round(float(np.count_nonzero(coarse_mask)) * voxel_ml, 2),
                    "refined_mask": round(float(np.count_nonzero(refined)) * voxel_ml, 2)},
        timings_s={k: round(v, 3) for k, v in timings.items()})
    return LocalizationResult(
        coarse_prior=scan.paste(prior, 0.0), coarse_mask=scan.paste(coarse_mask, False),
        probability=scan.paste(probability, 0.0), refined_mask=scan.paste(refined, False),
        brain_mask=scan.paste(scan.brain, False), proposals=proposals.embedded(scan.offset, full_shape),
        record=json.loads(json.dumps(record, default=_json_default)))


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def localize_files(paths: Mapping[str, str | Path], *, brain_mask: str | Path | None = None,
                   proposer: SliceProposer | None = None,
                   config: LocalizerConfig | Mapping[str, Any] | None = None) -> tuple[LocalizationResult, np.ndarray]:
    """:func:`localize` on NIfTI files (read to canonical RAS); returns the result and the grid's affine.

    Raises:
        InputError: unreadable file, or modalities (or the mask) on different grids — naming the file.
    """
    cfg = _config(config)
    missing = [m for m in cfg.modalities if m not in paths]
    if missing:
        raise InputError("paths", f"missing modality {missing[0]!r}; given: {', '.join(sorted(paths))}")
    volumes = {m: load_volume(paths[m]) for m in cfg.modalities}
    reference_name = cfg.modalities[0]
    grid = volumes[reference_name].grid
    for m, volume in volumes.items():
        problem = grid.mismatch(volume.grid)
        if problem:
            raise InputError(paths[m], f"not on the grid of {reference_name} ({problem}); resample first")
    mask = None
    if brain_mask is not None:
        mask_volume = load_volume(brain_mask, dtype=np.uint8, allow_empty=True)
        problem = grid.mismatch(mask_volume.grid)
        if problem:
            raise InputError(brain_mask, f"brain mask not on the images' grid ({problem})")
        mask = mask_volume.array > 0
    result = localize({m: v.array for m, v in volumes.items()}, spacing_mm=grid.spacing, brain_mask=mask,
                      proposer=proposer, config=cfg)
    return result, grid.affine


def save_localization(result: LocalizationResult, affine: np.ndarray, out_dir: str | Path, *,
                      prefix: str = "") -> dict[str, Path]:
    """Write ``coarse_prior``, ``refined_prior``, ``refined_mask`` (NIfTI) and ``localization.json``.

    Every file is written to a temporary name and renamed, so a crash leaves no partial output.
    """
    folder = ensure_writable_dir(out_dir)
    written = {
        "coarse_prior": save_volume(result.coarse_prior, affine, folder / f"{prefix}coarse_prior.nii.gz",
                                    dtype=np.float32),
        "refined_prior": save_volume(result.refined_prior, affine, folder / f"{prefix}refined_prior.nii.gz",
                                     dtype=np.float32),
        "refined_mask": save_volume(result.refined_mask.astype(np.uint8), affine,
                                    folder / f"{prefix}refined_mask.nii.gz"),
    }
    written["record"] = write_text_atomic(folder / f"{prefix}localization.json",
                                          json.dumps(result.record, indent=2, sort_keys=True) + "\n")
    return written
