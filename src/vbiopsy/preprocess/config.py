"""The MRI-Processor's configuration: one validated pydantic model per step, composed in
:class:`PreprocessConfig`.

The defaults are for **raw** scans (skull on, any orientation and voxel size, modalities on
different grids): every step runs. :meth:`PreprocessConfig.skull_stripped` is the preset for data
that is already skull-stripped and co-registered (BraTS). Invalid values raise a pydantic
``ValidationError`` naming the key and the value; :func:`vbiopsy.config.build_config` turns it
into a one-line :class:`~vbiopsy.errors.ConfigError`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from vbiopsy.data.schema import MODALITIES

SkullStripBackend = Literal["template", "mask-file", "hd-bet", "synthstrip", "nonzero", "none"]
"""Brain extraction backends: built-in template propagation + intensity refinement; a user mask
file; the user's installed HD-BET or SynthStrip; the nonzero voxels of already stripped input; none."""


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("value_error", message)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_levels(name: str, values: tuple[float, ...], low: float, high: float) -> tuple[float, ...]:
    if not 1 <= len(values) <= 6 or any(not low <= v <= high for v in values):
        raise _invalid(f"{name} must be 1–6 values between {low:g} and {high:g}, got {list(values)!r}")
    return values


class BiasFieldConfig(_Model):
    """N4 bias-field correction (SimpleITK), estimated on a shrunk image, applied at full resolution."""

    enabled: bool = True
    shrink_factor: int = Field(4, ge=1, le=8, description="downsampling of the image the field is fitted on")
    iterations: tuple[int, ...] = Field((50, 50, 30), description="iterations per fitting level (1–6 levels)")
    convergence_threshold: float = Field(1e-3, gt=0, le=0.1, description="N4 convergence threshold")
    control_points: int = Field(4, ge=4, le=16, description="B-spline control points per axis at level 1")
    mask: Literal["otsu", "nonzero"] = Field("otsu", description="voxels the field is fitted on: Otsu "
                                             "foreground (raw) or nonzero voxels (skull-stripped input)")

    @field_validator("iterations")
    @classmethod
    def _check_iterations(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(int(v) for v in _check_levels("iterations", value, 1, 1000))


class ResampleConfig(_Model):
    """The output grid's voxel size and the interpolator used for images (labels: nearest)."""

    spacing_mm: tuple[float, float, float] = Field((1.0, 1.0, 1.0), description="output voxel size in mm")
    interpolation: Literal["linear", "bspline"] = "linear"

    @field_validator("spacing_mm", mode="before")
    @classmethod
    def _isotropic(cls, value: object) -> object:
        return (value, value, value) if isinstance(value, (int, float)) else value

    @field_validator("spacing_mm")
    @classmethod
    def _check_spacing(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not math.isfinite(v) or not 0.25 <= v <= 8.0 for v in value):
            raise _invalid(f"spacing_mm must be 3 sizes between 0.25 and 8 mm, got {list(value)!r}")
        return value


class _RegistrationOptions(_Model):
    """Optimiser settings shared by rigid and affine registrations (Mattes mutual information)."""

    iterations: int = Field(100, ge=1, le=5000, description="gradient-descent iterations per level")
    sampling_fraction: float = Field(0.05, gt=0, le=1, description="fraction of voxels sampled by the metric")
    histogram_bins: int = Field(32, ge=8, le=256, description="Mattes mutual-information histogram bins")
    level_spacing_mm: tuple[float, ...] = Field((4.0, 2.0), description="voxel size (mm) of each pyramid level, "
                                                "coarse to fine (never finer than the fixed image)")
    seed: int = Field(1, ge=1, description="seed of the metric's random sampling (reproducible runs; "
                      "SimpleITK reads 0 as 'seed from the clock')")

    @field_validator("level_spacing_mm")
    @classmethod
    def _check_levels(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return _check_levels("level_spacing_mm", value, 0.25, 32.0)


class CoregistrationConfig(_RegistrationOptions):
    """Rigid co-registration of each modality to the reference modality."""

    enabled: bool = True
    reference: str = Field("t1c", description="reference modality (the first present if it is missing)")
    same_grid: Literal["verify", "skip"] = Field("verify", description="a modality already on the reference's "
                                                 "grid: register it anyway and keep the identity unless it moved "
                                                 "(verify; headers of separate series can be identical while the "
                                                 "head moved), or trust the header (skip)")
    tolerance_mm: float = Field(1.0, ge=0.0, le=10.0, description="verify: motion (mean displacement over the "
                                "reference's field of view) below which the identity is kept; at least "
                                "0.4 × the coarsest voxel side, the noise of registering different contrasts")

    @field_validator("reference")
    @classmethod
    def _check_reference(cls, value: str) -> str:
        name = value.strip().lower()
        if name not in MODALITIES:
            raise _invalid(f"reference must be one of {', '.join(MODALITIES)}, got {value!r}")
        return name


class RegistrationConfig(_RegistrationOptions):
    """Registration of the reference modality to a template (rigid then affine, or ANTs SyN)."""

    enabled: bool = True
    iterations: int = Field(200, ge=1, le=5000, description="gradient-descent iterations per level")
    sampling_fraction: float = Field(0.25, gt=0, le=1, description="fraction of template voxels sampled "
                                     "(fewer makes the tilt estimate of thick-slice scans unstable)")
    backend: Literal["affine", "syn"] = Field("affine", description="affine: SimpleITK rigid + affine; "
                                              "syn: ANTsPy SyN (pip install antspyx)")
    template: Path | None = Field(None, description="template T1 (skull-stripped); None: bundled MNI152 2009a")
    template_mask: Path | None = Field(None, description="brain mask of a user template; None: template > 0")
    syn_field_spacing_mm: float = Field(3.0, ge=1.0, le=10.0, description="grid on which SyN fields are recorded")

    @model_validator(mode="after")
    def _check_mask(self) -> RegistrationConfig:
        if self.template_mask is not None and self.template is None:
            raise _invalid(f"template_mask={str(self.template_mask)!r} needs template to be set too")
        return self


class SkullStripConfig(_Model):
    """Brain extraction: a backend and its options."""

    backend: SkullStripBackend = "template"
    mask_path: Path | None = Field(None, description="mask-file: brain mask in the reference modality's space")
    weights_path: Path | None = Field(None, description="hd-bet/synthstrip: model weights to pass to the tool")
    command: tuple[str, ...] | None = Field(None, description="hd-bet/synthstrip: argv template overriding the "
                                            "default; placeholders {input} {output} {mask} {weights}")
    band_mm: float = Field(8.0, ge=0.0, le=30.0, description="template: half-width (mm) of the band around the "
                           "propagated template mask that the image intensities decide")
    shift_mm: float = Field(1.0, ge=-10.0, le=10.0, description="template: inward shift (mm) of the template "
                            "mask's edge (the MNI mask, T1 > 0, is slightly generous)")
    width_mm: float = Field(4.0, gt=0.0, le=30.0, description="template: softness (mm) of the spatial prior")
    smooth_mm: float = Field(2.0, ge=0.0, le=10.0, description="template: Gaussian σ (mm) of the posterior")

    @model_validator(mode="after")
    def _check_backend_options(self) -> SkullStripConfig:
        if self.backend == "mask-file" and self.mask_path is None:
            raise _invalid("skull_strip backend 'mask-file' needs mask_path (got None)")
        if self.backend != "mask-file" and self.mask_path is not None:
            raise _invalid(f"mask_path={str(self.mask_path)!r} is only used by backend 'mask-file', "
                           f"not {self.backend!r}")
        external = self.backend in ("hd-bet", "synthstrip")
        if not external and (self.weights_path is not None or self.command is not None):
            raise _invalid(f"weights_path/command are only used by hd-bet or synthstrip, not {self.backend!r}")
        return self


class NormalizeConfig(_Model):
    """Z-score inside the brain mask after percentile clipping; background set to 0."""

    enabled: bool = True
    lower_percentile: float = Field(0.5, ge=0.0, lt=50.0)
    upper_percentile: float = Field(99.5, gt=50.0, le=100.0)


class PreprocessConfig(_Model):
    """Which MRI-Processor steps run and with what parameters (defaults: raw scans, every step)."""

    bias: BiasFieldConfig = BiasFieldConfig()
    resample: ResampleConfig = ResampleConfig()
    coregistration: CoregistrationConfig = CoregistrationConfig()
    registration: RegistrationConfig = RegistrationConfig()
    skull_strip: SkullStripConfig = SkullStripConfig()
    normalize: NormalizeConfig = NormalizeConfig()
    min_fov_overlap: float = Field(0.25, gt=0.0, le=1.0, description="fraction of each modality's field of "
                                   "view that must lie inside the reference's")
    threads: int = Field(0, ge=0, le=256, description="SimpleITK threads (0: SimpleITK's default)")

    @classmethod
    def skull_stripped(cls, **overrides: object) -> PreprocessConfig:
        """Preset for skull-stripped, co-registered input (BraTS): no template registration,
        brain = nonzero voxels, N4 fitted on the nonzero voxels, modalities on the reference grid
        trusted to be aligned."""
        data: dict[str, object] = {
            "bias": {"mask": "nonzero"},
            "coregistration": {"same_grid": "skip"},
            "registration": {"enabled": False},
            "skull_strip": {"backend": "nonzero"},
        }
        data.update(overrides)
        return cls.model_validate(data)
