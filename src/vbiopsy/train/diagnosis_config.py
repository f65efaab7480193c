"""Configuration of the Virtual Biopsy Adaptive-Diagnoser runs: one pydantic model per section, unknown keys refused.

``DiagnosisConfig`` is what ``vbiopsy train CONFIG`` (``task: diagnosis``) reads (``configs/diagnoser*.yaml``).
Defaults are the paper's values (Virtual Biopsy §5: AdamW 5e-5 / 1e-4, cosine warm restarts
T0 = 10, clip 2.0, dropout 0.2, label smoothing 0.05, batch 2 × accumulation 2, 250 epochs,
stratified 5-fold patient-level CV, the augmentation probabilities of "Data Augmentation");
``diagnoser-demo.yaml`` shrinks the grid, the network and the epochs for the phantom cohort.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vbiopsy.config import CohortSource, RunNumerics, build_config, read_run_yaml
from vbiopsy.config import ConfigSection as _Section
from vbiopsy.localize.config import LocalizerConfig
from vbiopsy.localize.lesion_measurements import MEASUREMENTS, REQUIRED_MODALITIES

PriorSource = Literal["none", "coarse", "refined", "seg"]
"""Which tumour prior the model gets: none, the Tumor-Localizer's coarse (VLM-C) or refined prior,
or ``seg`` — the manifest's manual segmentation (an upper bound for the localiser, never the default)."""
InputPrior = Literal["none", "multiply", "channel"]
Monitor = Literal["auc", "balanced_accuracy"]
ClinicalInput = Literal["age", "sex"]
"""Clinical variables the diagnoser's head may take (known before a biopsy; encoded as in
:mod:`vbiopsy.train.tabular`: age in years, sex M → 0 / F → 1)."""


class LesionCropSettings(_Section):
    """A tumour-centred crop at a fixed resolution, cut around the prior's centre of mass for the diagnoser's
    crop branch (``model.lesion_crop``; not in the paper): the whole-brain working grid (≈ 4 mm in the demo)
    is too coarse to show a 10–20 mm tumour's enhancement pattern."""

    shape: tuple[int, int, int] = Field((32, 32, 32), description="crop size (voxels)")
    spacing_mm: float = Field(2.0, gt=0, le=10, description="crop voxel size (mm, isotropic)")
    modalities: tuple[str, ...] = Field(("t1c", "flair"), min_length=1, description="manifest columns cut, one "
                                                                                     "channel each, same grid")
    jitter_voxels: int = Field(4, ge=0, le=32, description="training-time random shift of the crop's centre "
                                                           "(± voxels per axis); the stored crop is larger by "
                                                           "this on every side")

    @field_validator("shape")
    @classmethod
    def _crop_shape(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 8 <= n <= 256 for n in value):
            raise ValueError(f"lesion_crop.shape must be 3 sizes in 8..256 voxels, got {list(value)}")
        return value

    @field_validator("modalities")
    @classmethod
    def _distinct_modalities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value) or not all(value):
            raise ValueError(f"lesion_crop.modalities must be distinct non-empty names, got {list(value)}")
        return value


class MeasurementThresholds(_Section):
    """z-score thresholds of the lesion measurements' compartments (vbiopsy.localize.lesion_measurements);
    tuned on phantoms — on real scans check them against a few manual segmentations first."""

    enhancing_z: float = Field(1.5, gt=0, le=10, description="T1c above this (z over the brain) enhances")
    flair_z: float = Field(1.0, gt=0, le=10, description="FLAIR (and T2) above this is abnormal")


class LesionMeasurementSettings(_Section):
    """What the lesion measurements of a run are taken with (built from a config, not written by users)."""

    crop: LesionCropSettings
    thresholds: MeasurementThresholds


class DiagnosisDataSettings(CohortSource):
    """Which cohort, image, split and working grid; how the priors are made."""

    modality: str = Field("t1c", min_length=1, description="manifest column of the diagnosed image (paper: T1c)")
    splits: Path | None = Field(None, description="splits.json to use; made from the labels when absent")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="held-out test share (paper: 0, the 5 CV folds "
                                                               "are the test sets)")
    folds: int = Field(5, ge=2, le=20)
    split_seed: int = Field(0, ge=0)
    keep_in_train: tuple[str, ...] = Field((), description="tumour types never put in the test set")
    rare_classes: Literal["error", "train"] = Field(
        "error", description="a class too rare to stratify: error (naming it) or keep it in training")
    early_stopping_fraction: float = Field(
        0.15, ge=0, lt=0.5, description="share of each fold's training patients (stratified) held out for early "
                                        "stopping, so the fold's test patients never choose the epoch; 0: no early "
                                        "stopping, train max_epochs")
    working_shape: tuple[int, int, int] = Field(
        (128, 128, 112), description="grid (voxels) the brain is resampled to: a square axial field of view "
                                     "around the brain's bounding box, its full superior–inferior extent")
    margin_mm: float = Field(4.0, ge=0, le=50, description="background kept around the brain's bounding box")
    localizer: LocalizerConfig = Field(default_factory=lambda: LocalizerConfig(require_lesion=False),
                                       description="Tumor-Localizer settings (require_lesion is forced off: an "
                                                   "empty prior falls back to the whole brain, recorded)")
    jobs: int = Field(1, ge=1, le=64, description="processes for localising and resampling the scans")
    lesion_crop: LesionCropSettings | None = Field(None, description="also cut tumour-centred crops (for "
                                                                     "model.lesion_crop); none by default")

    @field_validator("working_shape")
    @classmethod
    def _shape(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 8 <= n <= 512 for n in value):
            raise ValueError(f"working_shape must be 3 sizes in 8..512 voxels, got {list(value)}")
        return value


class DiagnoserSettings(_Section):
    """The Adaptive-Diagnoser (``vbiopsy.models.diagnoser.AdaptiveDiagnoser``) and the prior it is given."""

    backbone: str = Field("densenet", min_length=1, description="name in vbiopsy.models.backbones.BACKBONES")
    backbone_options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the backbone")
    prior: PriorSource = Field("refined", description="tumour prior fed to the model (paper: refined)")
    mca: bool = Field(True, description="masked channel attention on the prior (paper: on)")
    input_prior: InputPrior = Field("none", description="also give the prior at the input: multiply the image or "
                                                        "add a channel")
    reduction: int = Field(4, ge=1, le=64, description="MCA MLP channel reduction")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout before the classifier (paper: 0.2)")
    geometry: bool = Field(False, description="give the head the prior's position and size (not in the paper)")
    clinical: list[ClinicalInput] = Field(default_factory=list, description="clinical variables for the head, "
                                                                            "e.g. [age] (not in the paper)")
    lesion_crop: bool = Field(False, description="a small CNN on the tumour-centred crop of data.lesion_crop "
                                                 "feeds the head (not in the paper)")
    crop_width: int = Field(16, ge=1, le=256, description="first-stage channels of the crop branch")
    whole_brain_dropout: float = Field(0.0, ge=0, lt=1, description="probability of dropping a training "
                                       "sample's whole-brain features so the crop branch carries the diagnosis "
                                       "too (needs lesion_crop; not in the paper)")
    crop_dropout: float = Field(0.0, ge=0, lt=1, description="probability of dropping a training sample's crop "
                                "features (with whole_brain_dropout, samples left with the prior's geometry, "
                                "the clinical values and the lesion measurements only; not in the paper)")
    lesion_measurements: bool = Field(False, description="give the head the lesion's compartment volumes and "
                                      "core signal measured on data.lesion_crop (T1c and FLAIR needed; "
                                      "vbiopsy.localize.lesion_measurements; not in the paper)")
    measurement_thresholds: MeasurementThresholds = MeasurementThresholds()

    @field_validator("clinical")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"clinical lists a variable twice: {value}")
        return value

    @model_validator(mode="after")
    def _branch_dropout_needs_crop(self) -> DiagnoserSettings:
        if self.whole_brain_dropout > 0 and not self.lesion_crop:
            raise ValueError(f"model.whole_brain_dropout {self.whole_brain_dropout} needs model.lesion_crop: true "
                             "(without a crop branch a dropped sample has no image features)")
        if self.crop_dropout > 0 and not self.lesion_crop:
            raise ValueError(f"model.crop_dropout {self.crop_dropout} needs model.lesion_crop: true")
        return self

    @model_validator(mode="after")
    def _prior_needed(self) -> DiagnoserSettings:
        uses = (self.mca or self.input_prior != "none" or self.geometry or self.lesion_crop
                or self.lesion_measurements)
        if self.prior == "none" and uses:
            raise ValueError(f"model.prior is 'none' but mca={self.mca} / input_prior={self.input_prior!r} / "
                             f"geometry={self.geometry} / lesion_crop={self.lesion_crop} / lesion_measurements="
                             f"{self.lesion_measurements} need one; set them off (mca: false, input_prior: none, "
                             "...) for the no-localisation model")
        if self.prior != "none" and not uses:
            raise ValueError(f"model.prior {self.prior!r} is unused with mca: false, input_prior: none, "
                             "geometry: false, lesion_crop: false and lesion_measurements: false; set prior: none "
                             "or use the prior")
        return self


class DiagnosisAugmentSettings(_Section):
    """Paper §5 "Data Augmentation", applied identically to the volume and the prior."""

    enabled: bool = True
    rotate_prob: float = Field(0.5, ge=0, le=1, description="random 90° axial rotation (k ∈ {1, 2, 3})")
    flip_prob: float = Field(0.5, ge=0, le=1, description="left–right flip (across the sagittal plane)")
    noise_prob: float = Field(0.15, ge=0, le=1)
    noise_std: float = Field(0.01, ge=0, le=1, description="Gaussian noise σ (units of the z-scored image)")
    gamma_prob: float = Field(0.15, ge=0, le=1)
    gamma_range: tuple[float, float] = Field((0.9, 1.1), description="γ drawn uniformly from this range")

    @field_validator("gamma_range")
    @classmethod
    def _gamma(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1] <= 10:
            raise ValueError(f"gamma_range must be (low, high) with 0 < low <= high <= 10, got {list(value)}")
        return value


class DiagnosisOptimSettings(RunNumerics):
    """Optimiser, schedule, early stopping and numerics (read by :func:`vbiopsy.train.fit.fit` too)."""

    max_epochs: int = Field(250, ge=1, le=10000)
    batch_size: int = Field(2, ge=1, le=512)
    accumulate: int = Field(2, ge=1, le=64, description="gradient accumulation steps (effective batch 4)")
    lr: float = Field(5e-5, gt=0, le=1)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    label_smoothing: float = Field(0.05, ge=0, lt=0.5)
    restart_epochs: int = Field(10, ge=1, description="cosine annealing warm restarts T0 (epochs)")
    restart_mult: int = Field(1, ge=1, le=4, description="T_mult of the warm restarts")
    min_lr: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(2.0, gt=0, description="global gradient-norm clip")
    class_weights: bool = Field(False, description="balanced class weights on the loss (paper: not mentioned)")
    monitor: Monitor = Field("auc", description="validation score for early stopping / best epoch: macro "
                                                "one-vs-rest AUC (smooth on small sets) or balanced accuracy")
    early_stopping_patience: int = Field(30, ge=1)


class DiagnosisExplainSettings(_Section):
    """3-D Grad-CAM overlays after training (out-of-fold patients, each by the model that did not see it)."""

    enabled: bool = True
    max_patients: int = Field(8, ge=0, le=1000)


class ComparisonSettings(_Section):
    """Backbones of the Table-3 comparison and their options (others use ``model.backbone_options``)."""

    backbones: tuple[str, ...] = ("densenet", "resnet", "swin", "vit", "efficient3d")
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)


class DiagnosisConfig(_Section):
    """Everything ``vbiopsy diagnose`` needs; saved resolved next to the run."""

    task: Literal["diagnosis"] = "diagnosis"
    data: DiagnosisDataSettings
    model: DiagnoserSettings = DiagnoserSettings()
    augment: DiagnosisAugmentSettings = DiagnosisAugmentSettings()
    optim: DiagnosisOptimSettings = DiagnosisOptimSettings()
    explain: DiagnosisExplainSettings = DiagnosisExplainSettings()
    comparison: ComparisonSettings = ComparisonSettings()

    @model_validator(mode="after")
    def _square_for_rotations(self) -> DiagnosisConfig:
        rotates = self.augment.enabled and self.augment.rotate_prob > 0
        crop = self.data.lesion_crop
        for name, (x, y, _) in (("data.working_shape", self.data.working_shape),
                                ("data.lesion_crop.shape", crop.shape if crop else (1, 1, 1))):
            if rotates and x != y:
                raise ValueError(f"augment.rotate_prob > 0 needs a square axial grid (90° rotations keep the "
                                 f"shape); {name} is [{x}, {y}, ...]")
        return self

    @model_validator(mode="after")
    def _crop_prepared(self) -> DiagnosisConfig:
        if self.model.lesion_crop and self.data.lesion_crop is None:
            raise ValueError("model.lesion_crop needs data.lesion_crop (the crop's shape, spacing and modalities)")
        if self.model.lesion_measurements:
            have = self.data.lesion_crop.modalities if self.data.lesion_crop else ()
            missing = [m for m in REQUIRED_MODALITIES if m not in have]
            if missing:
                raise ValueError(f"model.lesion_measurements needs data.lesion_crop with modalities "
                                 f"{list(REQUIRED_MODALITIES)}; missing: {missing}")
        return self


def tabular_names(model: DiagnoserSettings) -> list[str]:
    """Names of the model's clinical-input columns: the ``clinical`` variables, then the lesion measurements."""
    return [*model.clinical, *(f"lesion_{m}" for m in MEASUREMENTS if model.lesion_measurements)]


def tabular_width(model: DiagnoserSettings) -> int:
    """Width k of the model's clinical input (see :func:`tabular_names`)."""
    return len(tabular_names(model))


def load_diagnosis_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> DiagnosisConfig:
    """A :class:`DiagnosisConfig` from YAML (relative ``data`` paths relative to the file) plus ``overrides``."""
    return build_config(DiagnosisConfig, read_run_yaml(path, overrides), str(path or "options"))


def with_changes(config: DiagnosisConfig, **sections: dict[str, Any]) -> DiagnosisConfig:
    """``config`` with keys of its sections replaced whole (e.g. ``model={"mca": False}``), validated again."""
    data = config.model_dump()
    for name, changes in sections.items():
        data[name] = {**data[name], **changes}
    return build_config(DiagnosisConfig, data, "derived config")
