"""Tumor-Localizer configuration: one validated pydantic model per stage and one that holds them.

Every field is checked on construction; a bad value raises a pydantic ``ValidationError`` whose
message names the field and the value (``vbiopsy.config.build_config`` turns it into one line).
Defaults are the values measured on the 10 BraTS 2018 cases of ``../shared/data`` (T1c + FLAIR,
1 mm): see ``benchmarks/bench_localize.py``.
"""

from __future__ import annotations

import math
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from vbiopsy.data.schema import MODALITIES, split_names

BRIGHT_MODALITIES: tuple[str, ...] = ("flair", "t2")
"""Modalities in which tumour and oedema are hyperintense (the main cue)."""
CONTRAST_MODALITIES: tuple[str, ...] = ("t1c",)
"""Contrast-enhanced T1: enhancement (bright) and necrosis/mass (dark, with normal FLAIR)."""


def _finite_in(name: str, value: float, low: float, high: float, *, open_low: bool = False) -> float:
    """Return ``value`` if finite and in ``[low, high]`` (``(low, high]`` if ``open_low``), else raise naming it."""
    ok = math.isfinite(value) and (low < value if open_low else low <= value) and value <= high
    if not ok:
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be in {bracket}{low:g}, {high:g}], got {value!r}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuiltinConfig(_Strict):
    """The built-in proposer: abnormal signal against the brain's own distribution and the mirror side.

    Cue score ``S = (Z + A) / 2`` per voxel, ``Z`` the robust z of the strongest cue and ``A`` its
    contralateral difference; lesion = connected region of ``S > low_threshold`` (and ``A >
    min_asymmetry``, or ``Z > strong_z``) that holds a seed ``S > seed_threshold``.
    """

    seed_threshold: float = Field(2.5, description="score a lesion must reach somewhere (robust z units)")
    low_threshold: float = Field(1.5, description="score over which a voxel may belong to a lesion")
    min_asymmetry: float = Field(0.3, description="contralateral excess a voxel needs unless Z > strong_z")
    strong_z: float = Field(2.0, description="robust z over which a voxel counts without asymmetry (midline lesions)")
    opening_mm: float = Field(3.0, description="opening radius that cuts thin bridges to normal tissue (mm)")
    closing_mm: float = Field(2.0, description="closing radius that joins a lesion's fragments (mm)")
    keep_fraction: float = Field(0.1, description="keep every lesion scoring at least this fraction of the best")
    min_box_area_mm2: float = Field(10.0, description="smallest in-slice lesion section that gets a box (mm²)")

    @field_validator("seed_threshold", "low_threshold", "strong_z")
    @classmethod
    def _check_threshold(cls, value: float, info: ValidationInfo) -> float:
        return _finite_in(info.field_name, value, -10.0, 50.0)

    @field_validator("min_asymmetry")
    @classmethod
    def _check_asym(cls, value: float) -> float:
        return _finite_in("min_asymmetry", value, -10.0, 50.0)

    @field_validator("opening_mm", "closing_mm")
    @classmethod
    def _check_radius(cls, value: float, info: ValidationInfo) -> float:
        return _finite_in(info.field_name, value, 0.0, 50.0)

    @field_validator("keep_fraction")
    @classmethod
    def _check_keep(cls, value: float) -> float:
        return _finite_in("keep_fraction", value, 0.0, 1.0)

    @field_validator("min_box_area_mm2")
    @classmethod
    def _check_area(cls, value: float) -> float:
        return _finite_in("min_box_area_mm2", value, 0.0, 1e4)

    @model_validator(mode="after")
    def _check_order(self) -> BuiltinConfig:
        if self.low_threshold > self.seed_threshold:
            raise ValueError(f"low_threshold ({self.low_threshold!r}) must not exceed "
                             f"seed_threshold ({self.seed_threshold!r})")
        return self


class PriorConfig(_Strict):
    """Stacked boxes → Gaussian smoothing → grey dilation → coarse prior in [0, 1]."""

    sigma_mm: float = Field(2.0, description="Gaussian smoothing of the stacked boxes (mm)")
    dilation_mm: float = Field(4.0, description="radius of the grey dilation after smoothing (mm)")
    mask_threshold: float = Field(0.5, description="coarse mask = prior >= this")

    @field_validator("sigma_mm", "dilation_mm")
    @classmethod
    def _check_mm(cls, value: float, info: ValidationInfo) -> float:
        return _finite_in(info.field_name, value, 0.0, 50.0)

    @field_validator("mask_threshold")
    @classmethod
    def _check_thr(cls, value: float) -> float:
        return _finite_in("mask_threshold", value, 0.0, 1.0, open_low=True)


class RefineConfig(_Strict):
    """Voxel-wise MLP trained on the scan's own high-confidence prior voxels, then union (Eq. 5)."""

    enabled: bool = Field(True, description="train the MLP; if false the refined mask is the high-confidence core")
    tumour_threshold: float = Field(0.9, description="prior >= this inside the brain is a tumour pseudo-label")
    background_threshold: float = Field(0.1, description="prior <= this inside the brain is a background pseudo-label")
    union_threshold: float = Field(0.9, description="refined = (prior >= this) ∪ MLP-positive voxels")
    probability_threshold: float = Field(0.5, description="MLP probability that counts as tumour")
    support_margin_mm: float = Field(15.0, description="the MLP labels voxels within this distance of the coarse mask")
    near_fraction: float = Field(0.5, description="share of background samples drawn from the support ring")
    scales_mm: tuple[float, ...] = Field((1.0, 2.0), description="local-mean scales of the intensity features (mm)")
    position_feature: bool = Field(False, description="add distance to the prior centre (lets the MLP copy the boxes)")
    hidden: tuple[int, ...] = Field((32, 32), description="hidden layer widths")
    steps: int = Field(300, description="optimiser steps")
    batch_size: int = Field(1024, description="samples per step (half tumour, half background)")
    learning_rate: float = Field(3e-3, description="Adam learning rate")
    max_samples: int = Field(20000, description="training voxels per class at most")
    min_samples: int = Field(20, description="fewer pseudo-labelled voxels per class than this → no MLP (recorded)")
    seed: int = Field(0, description="seed of sampling, initialisation and batches")

    @field_validator("tumour_threshold", "background_threshold", "union_threshold", "probability_threshold")
    @classmethod
    def _check_prob(cls, value: float, info: ValidationInfo) -> float:
        return _finite_in(info.field_name, value, 0.0, 1.0)

    @field_validator("support_margin_mm")
    @classmethod
    def _check_margin(cls, value: float) -> float:
        return _finite_in("support_margin_mm", value, 0.0, 200.0)

    @field_validator("near_fraction")
    @classmethod
    def _check_near(cls, value: float) -> float:
        return _finite_in("near_fraction", value, 0.0, 1.0)

    @field_validator("scales_mm")
    @classmethod
    def _check_scales(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) > 4 or any(not math.isfinite(s) or not 0 < s <= 20 for s in value):
            raise ValueError(f"scales_mm must hold at most 4 scales in (0, 20] mm, got {value!r}")
        return value

    @field_validator("hidden")
    @classmethod
    def _check_hidden(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not 1 <= len(value) <= 4 or any(not 1 <= h <= 512 for h in value):
            raise ValueError(f"hidden must hold 1 to 4 widths in 1..512, got {value!r}")
        return value

    @field_validator("steps", "batch_size", "max_samples", "min_samples")
    @classmethod
    def _check_count(cls, value: int, info: ValidationInfo) -> int:
        if not 1 <= value <= 10_000_000:
            raise ValueError(f"{info.field_name} must be a positive count, got {value!r}")
        return value

    @field_validator("learning_rate")
    @classmethod
    def _check_lr(cls, value: float) -> float:
        return _finite_in("learning_rate", value, 0.0, 1.0, open_low=True)

    @model_validator(mode="after")
    def _check_order(self) -> RefineConfig:
        if self.background_threshold >= self.tumour_threshold:
            raise ValueError(f"background_threshold ({self.background_threshold!r}) must be below "
                             f"tumour_threshold ({self.tumour_threshold!r})")
        return self


class VLMConfig(_Strict):
    """A vision-language model behind an OpenAI-compatible ``/chat/completions`` endpoint the user runs."""

    base_url: str = Field(..., description="e.g. http://127.0.0.1:8000/v1 (…/chat/completions is appended)")
    model: str = Field(..., description="model name the server expects, e.g. Qwen/Qwen2.5-VL-7B-Instruct")
    api_key: str | None = Field(None, description="sent as a Bearer token if set (never recorded)")
    modalities: tuple[str, ...] = Field(("t1c", "flair"), description="one image per modality, in this order")
    timeout_s: float = Field(60.0, description="seconds to wait for one answer")
    max_retries: int = Field(2, description="extra attempts after a timeout, HTTP error or unparsable answer")
    backoff_s: float = Field(1.0, description="wait before the first retry; doubles each time")
    slice_stride: int = Field(1, description="ask about every n-th slice; its boxes stand for the n slices from it")
    min_brain_fraction: float = Field(0.02, description="slices whose brain covers less of the slice are not sent")
    upscale: int = Field(2, description="integer zoom of the slice image sent (1–4)")
    coordinates: Literal["pixels", "relative-1000"] = Field(
        "pixels", description="box units the model answers in: image pixels, or 0–1000 relative (Qwen3-VL)")
    temperature: float = Field(0.0, description="sampling temperature")
    max_tokens: int = Field(512, description="answer length limit")
    json_mode: bool = Field(False, description="send response_format={'type': 'json_object'} (vLLM, llama.cpp)")

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL like http://127.0.0.1:8000/v1, got {value!r}")
        return value.rstrip("/")

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(f"model must name the served model, got {value!r}")
        return value

    @field_validator("modalities")
    @classmethod
    def _check_modalities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"modalities must name 1 or more distinct images, got {value!r}")
        return tuple(m.lower() for m in value)

    @field_validator("timeout_s", "backoff_s")
    @classmethod
    def _check_seconds(cls, value: float, info: ValidationInfo) -> float:
        return _finite_in(info.field_name, value, 0.0, 3600.0, open_low=info.field_name == "timeout_s")

    @field_validator("max_retries")
    @classmethod
    def _check_retries(cls, value: int) -> int:
        if not 0 <= value <= 10:
            raise ValueError(f"max_retries must be between 0 and 10, got {value!r}")
        return value

    @field_validator("slice_stride", "upscale", "max_tokens")
    @classmethod
    def _check_positive(cls, value: int, info: ValidationInfo) -> int:
        high = {"slice_stride": 50, "upscale": 4, "max_tokens": 32768}[info.field_name]
        if not 1 <= value <= high:
            raise ValueError(f"{info.field_name} must be between 1 and {high}, got {value!r}")
        return value

    @field_validator("min_brain_fraction")
    @classmethod
    def _check_fraction(cls, value: float) -> float:
        return _finite_in("min_brain_fraction", value, 0.0, 1.0)

    @field_validator("temperature")
    @classmethod
    def _check_temperature(cls, value: float) -> float:
        return _finite_in("temperature", value, 0.0, 2.0)


class LocalizerConfig(_Strict):
    """Everything :func:`vbiopsy.localize.localize` needs besides the images and the proposer."""

    modalities: tuple[str, ...] = Field(("t1c", "flair"), description="images the localiser uses")
    asymmetry_sigma_mm: float = Field(1.5, description="smoothing before the contralateral comparison (mm)")
    builtin: BuiltinConfig = Field(default_factory=BuiltinConfig)
    prior: PriorConfig = Field(default_factory=PriorConfig)
    refine: RefineConfig = Field(default_factory=RefineConfig)
    on_proposer_failure: Literal["fallback", "error"] = Field(
        "fallback", description="if the proposer fails: use the built-in proposer (recorded) or raise")
    require_lesion: bool = Field(True, description="raise if no abnormal region is found (else return empty priors)")
    crop_margin_mm: float = Field(20.0, description="work on the brain's bounding box plus this margin (mm)")

    _split_names = field_validator("modalities", mode="before")(split_names)

    @field_validator("modalities")
    @classmethod
    def _check_modalities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(m.strip().lower() for m in value)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"modalities must name 1 or more distinct images, got {list(value)!r}")
        usable = set(BRIGHT_MODALITIES) | set(CONTRAST_MODALITIES)
        if not usable & set(names):
            raise ValueError(f"modalities must include one of {', '.join(sorted(usable))} "
                             f"(known: {', '.join(MODALITIES)}), got {list(value)!r}")
        return names

    @field_validator("asymmetry_sigma_mm")
    @classmethod
    def _check_sigma(cls, value: float) -> float:
        return _finite_in("asymmetry_sigma_mm", value, 0.0, 20.0)

    @field_validator("crop_margin_mm")
    @classmethod
    def _check_crop(cls, value: float) -> float:
        return _finite_in("crop_margin_mm", value, 0.0, 500.0)
