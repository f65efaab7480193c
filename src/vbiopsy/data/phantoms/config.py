"""The phantom generator's configuration: one validated pydantic model.

Every field is checked on construction; an invalid value raises a pydantic ``ValidationError``
whose message names the field and the offending value (the CLI turns it into one error line).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from vbiopsy.data.schema import DIAGNOSES, MODALITIES, split_names

DEFAULT_DIAGNOSIS_MIX: dict[str, float] = {"glioma": 0.7, "lymphoma": 0.1, "germinoma": 0.1, "other": 0.1}
"""Tumour-type proportions of a default cohort (glioma-dominated, like a neuro-oncology clinic)."""

Layout = Literal["ucsf-pdgm", "brats2024"]


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is exactly ``message`` (no "Value error," prefix)."""
    return PydanticCustomError("value_error", message)


def _in_range(name: str, value: float, low: float, high: float) -> float:
    """Return ``value`` if it is a finite number in ``[low, high]``, else raise naming it."""
    if not math.isfinite(value) or not low <= value <= high:
        raise _invalid(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return value


class PhantomConfig(BaseModel):
    """What to generate: cohort size, seed, grid, layout, modalities, tumour mix and scanner effects.

    ``shape`` (voxels) overrides ``spacing_mm``; either way the grid covers the MNI template's
    field of view (197 × 233 × 189 mm), so 2 mm gives 99 × 117 × 95 voxels.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_patients: int = Field(100, description="number of patients to generate (≥ 1)")
    seed: int = Field(0, description="seed of the whole cohort; patient i uses the stream (seed, i)")
    spacing_mm: float = Field(2.0, description="isotropic voxel size in mm (0.5–8)")
    shape: tuple[int, int, int] | None = Field(None, description="grid in voxels (each ≥ 8), overrides spacing")
    layout: Layout = Field("ucsf-pdgm", description="output layout: ucsf-pdgm or brats2024")
    modalities: tuple[str, ...] = Field(MODALITIES, description="subset of t1, t1c, t2, flair, asl")
    diagnosis_mix: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_DIAGNOSIS_MIX),
                                            description="probabilities of glioma, lymphoma, germinoma, other (sum 1)")
    raw: bool = Field(False, description="raw scans: skull and scalp, anisotropic voxels, random orientation")
    resection_cavity_prob: float = Field(0.0, description="probability of a resection cavity (brats2024 layout only)")
    noise_level: float = Field(0.03, description="Rician noise σ as a fraction of the mean brain signal (0–0.5)")
    bias_strength: float = Field(0.2, description="standard deviation of the log bias field (0–1)")
    intensity_jitter: float = Field(0.15, description="standard deviation of the log per-modality scale (0–1)")
    deformation_mm: float = Field(2.5, description="amplitude of the smooth random displacement field in mm (0–10)")
    age_jitter_years: float = Field(1.5, description="standard deviation of the age of bootstrapped rows (0–10)")

    @field_validator("n_patients")
    @classmethod
    def _check_n(cls, value: int) -> int:
        if value < 1:
            raise _invalid(f"n_patients must be at least 1, got {value!r}")
        return value

    @field_validator("spacing_mm")
    @classmethod
    def _check_spacing(cls, value: float) -> float:
        return _in_range("spacing_mm", value, 0.5, 8.0)

    @field_validator("shape")
    @classmethod
    def _check_shape(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and any(not 8 <= s <= 1024 for s in value):
            raise _invalid(f"shape must have 3 sizes between 8 and 1024 voxels, got {value!r}")
        return value

    _split_names = field_validator("modalities", mode="before")(split_names)

    @field_validator("modalities")
    @classmethod
    def _check_modalities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(m.strip().lower() for m in value)
        unknown = [m for m in names if m not in MODALITIES]
        if unknown:
            raise _invalid(f"unknown modality {unknown[0]!r} in {list(value)!r}; "
                           f"expected a subset of {', '.join(MODALITIES)}")
        if not names:
            raise _invalid(f"modalities must name at least one of {', '.join(MODALITIES)}, got {list(value)!r}")
        if len(set(names)) != len(names):
            raise _invalid(f"modalities must not repeat a name, got {list(value)!r}")
        return tuple(m for m in MODALITIES if m in names)  # canonical order

    @field_validator("diagnosis_mix")
    @classmethod
    def _check_mix(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = [k for k in value if k not in DIAGNOSES]
        if unknown:
            raise _invalid(f"unknown tumour type {unknown[0]!r} in diagnosis_mix; "
                           f"expected keys from {', '.join(DIAGNOSES)}")
        bad = {k: v for k, v in value.items() if not math.isfinite(v) or v < 0}
        if bad:
            key = next(iter(bad))
            raise _invalid(f"diagnosis_mix[{key!r}] must be a probability ≥ 0, got {bad[key]!r}")
        total = sum(value.values())
        if abs(total - 1.0) > 1e-6:
            raise _invalid(f"diagnosis_mix must sum to 1, got {total:g} from {value!r}")
        return {k: float(value.get(k, 0.0)) for k in DIAGNOSES}

    @field_validator("resection_cavity_prob")
    @classmethod
    def _check_cavity(cls, value: float) -> float:
        return _in_range("resection_cavity_prob", value, 0.0, 1.0)

    @field_validator("noise_level")
    @classmethod
    def _check_noise(cls, value: float) -> float:
        return _in_range("noise_level", value, 0.0, 0.5)

    @field_validator("bias_strength", "intensity_jitter")
    @classmethod
    def _check_unit(cls, value: float, info: ValidationInfo) -> float:
        return _in_range(str(info.field_name), value, 0.0, 1.0)

    @field_validator("deformation_mm", "age_jitter_years")
    @classmethod
    def _check_ten(cls, value: float, info: ValidationInfo) -> float:
        return _in_range(str(info.field_name), value, 0.0, 10.0)

    @model_validator(mode="after")
    def _check_layout_labels(self) -> PhantomConfig:
        if self.layout == "ucsf-pdgm" and self.resection_cavity_prob > 0:
            raise _invalid(
                f"resection_cavity_prob={self.resection_cavity_prob!r} needs layout 'brats2024': the ucsf-pdgm "
                "layout uses BraTS 2021 labels, which have no resection-cavity label")
        return self
