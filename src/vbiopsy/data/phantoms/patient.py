"""One phantom patient in memory: variables → phenotype → anatomy → tumour → contrasts → scanner.

Patient ``index`` of a cohort with ``seed`` draws from independent streams spawned from
``SeedSequence([seed, index])``: clinical variables, latent geometry/phenotype (grid-independent:
the same tumour at any spacing) and image noise (one stream per modality, so a subset of
modalities gets the same images). The result therefore depends only on the config and
``(seed, index)``, never on the order or process in which patients are made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vbiopsy.data.nifti import Grid
from vbiopsy.data.phantoms.anatomy import draw_deformation, head_layers, mass_effect, template_coordinates, warp_tissue
from vbiopsy.data.phantoms.clinical import ClinicalVariables, draw_clinical
from vbiopsy.data.phantoms.config import PhantomConfig
from vbiopsy.data.phantoms.contrasts import synthesise
from vbiopsy.data.phantoms.phenotype import TumourPhenotype, draw_phenotype
from vbiopsy.data.phantoms.scanner import apply_scanner, draw_scanner, reorient, thick_slices
from vbiopsy.data.phantoms.template import axis_coordinates, load_template, make_grid
from vbiopsy.data.phantoms.tumour import region_volumes_ml, render_tumour
from vbiopsy.data.schema import MODALITIES

TISSUE_OUTPUTS: tuple[str, ...] = ("gm", "wm", "csf")


@dataclass(frozen=True)
class PhantomPatient:
    """A generated patient.

    ``images``: modality → (X, Y, Z) array (int16 scanner units; ASL float32 ml/100 g/min);
    ``seg``: uint8 BraTS 2024 labels; ``tissue``: gm/wm/csf partial volumes (float32); all on the
    grid of ``affine`` (canonical RAS unless ``raw``). ``volumes_ml`` are sub-region volumes
    measured on the canonical grid; ``geometry`` records deformation and acquisition.
    """

    index: int
    images: dict[str, np.ndarray]
    seg: np.ndarray
    affine: np.ndarray
    tissue: dict[str, np.ndarray]
    clinical: ClinicalVariables
    phenotype: TumourPhenotype
    volumes_ml: dict[str, float]
    geometry: dict[str, Any] = field(default_factory=dict)


def patient_streams(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator,
                                                    dict[str, np.random.Generator]]:
    """Independent generators of patient ``index``: clinical, latent, and noise per modality."""
    clinical, latent, noise = np.random.SeedSequence([seed, index]).spawn(3)
    per_modality = dict(zip(MODALITIES, noise.spawn(len(MODALITIES))))
    return (np.random.default_rng(clinical), np.random.default_rng(latent),
            {m: np.random.default_rng(s) for m, s in per_modality.items()})


def config_grid(config: PhantomConfig) -> Grid:
    """The canonical output grid of ``config`` (spacing or explicit shape)."""
    return make_grid(config.spacing_mm, config.shape)


def clinical_for(config: PhantomConfig, index: int) -> ClinicalVariables:
    """The clinical variables patient ``index`` gets in a cohort made with ``config`` (no images)."""
    rng, _, _ = patient_streams(config.seed, index)
    return draw_clinical(rng, config.diagnosis_mix, config.age_jitter_years)


def generate_patient(config: PhantomConfig, index: int = 0, *,
                     clinical: ClinicalVariables | None = None) -> PhantomPatient:
    """Make patient ``index`` of the cohort described by ``config`` (in memory, nothing written).

    ``clinical`` replaces the drawn variables (tests use it to plant a given diagnosis or grade);
    the latent and noise streams are unchanged.
    """
    clin_rng, latent_rng, noise_rng = patient_streams(config.seed, index)
    clin = clinical if clinical is not None else draw_clinical(clin_rng, config.diagnosis_mix, config.age_jitter_years)
    pheno, geo = draw_phenotype(latent_rng, clin, config.resection_cavity_prob)
    defo = draw_deformation(latent_rng, config.deformation_mm)
    scanner = draw_scanner(latent_rng, config.modalities, config.intensity_jitter, config.bias_strength)

    grid = config_grid(config)
    template = load_template(grid)
    y = template_coordinates(defo, grid)
    z = mass_effect(y, np.asarray(pheno.centre_mm), pheno.radius_mm, pheno.mass_effect)
    tissue = warp_tissue(template, z)
    del z
    voxel_mm = float(np.mean(grid.spacing))
    maps = render_tumour(pheno, geo, y, tissue, voxel_mm)
    if config.raw:
        layers = head_layers(template, y, defo.skull_factor)
        tissue["csf"] = tissue["csf"] + layers.pop("extra_csf")
        tissue.update(layers)
    del y

    axes = axis_coordinates(grid)
    mask = None if config.raw else tissue["brain"] > 0.5
    images = {}
    for modality in config.modalities:
        clean = synthesise(modality, tissue, pheno, maps)
        images[modality] = apply_scanner(clean, modality, mask, axes, scanner, noise_rng[modality],
                                         config.noise_level, grid.spacing)
    seg = maps.labels
    volumes = region_volumes_ml(seg, float(np.prod(grid.spacing)) / 1000.0)
    kept_tissue = {name: tissue[name] for name in TISSUE_OUTPUTS}
    affine = grid.affine.copy()
    geometry: dict[str, Any] = {"deformation": defo.describe(), "raw": config.raw}
    if config.raw:
        arrays: dict[str, np.ndarray] = {**images, "seg": seg, **{f"tissue_{k}": v for k, v in kept_tissue.items()}}
        arrays, affine = thick_slices(arrays, {"seg"}, affine, scanner.slice_axis, scanner.thickness_factor)
        arrays, affine = reorient(arrays, affine, scanner.axcodes)
        images = {m: arrays[m] for m in config.modalities}
        seg = arrays["seg"]
        kept_tissue = {k: arrays[f"tissue_{k}"] for k in TISSUE_OUTPUTS}
        geometry.update({"slice_axis": scanner.slice_axis, "axcodes": "".join(scanner.axcodes),
                         "spacing_mm": [round(float(s), 4) for s in np.linalg.norm(affine[:3, :3], axis=0)]})
    return PhantomPatient(index, images, seg, affine, kept_tissue, clin, pheno, volumes, geometry)
