"""Configuration of MGMT-Net training (``task: profile``): segmentation + IDH / 1p/19q / TERT.

Defaults are the paper's (MGMT-Net §3–4: 128³ patches, batch 2, 150 epochs, AdamW 1e-4, cosine
schedule, weight decay 1e-5, label smoothing 0.1 on the markers, CMAF dropout 0.2, head dropout
0.3); ``configs/mgmtnet-demo.yaml`` shrinks them for phantoms and ``configs/mgmtnet-brats18.yaml``
for the 10 real BraTS'18 cases on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from vbiopsy.config import CohortSource, Precision, RunNumerics
from vbiopsy.config import ConfigSection as _Section
from vbiopsy.train.profile_data import MARKERS


class ProfileData(CohortSource):
    """Cohort, inputs, working grid and split."""

    modalities: tuple[str, ...] = ("t1", "t1c", "t2", "flair")
    markers: tuple[str, ...] = MARKERS
    spacing_mm: float = Field(1.0, gt=0, le=8, description="working voxel size (isotropic, mm)")
    splits: Path | None = None
    test_fraction: float = Field(0.2, ge=0, lt=1)
    folds: int = Field(5, ge=2, le=20)
    split_seed: int = Field(0, ge=0)
    jobs: int = Field(1, ge=1, le=64)

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"modalities must be distinct names, got {list(value)}")
        return value

    @field_validator("markers")
    @classmethod
    def _markers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in value if m not in MARKERS]
        if unknown:
            raise ValueError(f"unknown marker {unknown[0]!r}; known: {', '.join(MARKERS)}")
        return value


class ProfileModel(_Section):
    """:class:`vbiopsy.models.mgmtnet.MGMTNet` options (the ablation switches included)."""

    width: int = Field(16, ge=2, le=256)
    stages: int = Field(3, ge=1, le=5)
    fusion: Literal["cmaf", "concat"] = "cmaf"
    encoder: Literal["hybrid", "cnn"] = "hybrid"
    marker_pooling: Literal["attention", "gap"] = "attention"
    swin_heads: int = Field(4, ge=1)
    window_size: int = Field(4, ge=1)
    attention_gates: bool = False
    deep_supervision: bool = False
    cmaf_dropout: float = Field(0.2, ge=0, lt=1)
    head_dropout: float = Field(0.3, ge=0, lt=1)
    head_hidden: int = Field(64, ge=1)
    marker_composition: bool = Field(
        False, description="beyond the paper: also feed the marker MLPs the tumour composition of the patch (soft "
                           "region volumes, per-region modality means and spreads from the model's own detached "
                           "segmentation; models/marker_head.py)")


class ProfileLoss(_Section):
    """Dice + cross-entropy for the labels; masked BCE (or focal) per marker."""

    dice_weight: float = Field(1.0, ge=0)
    ce_weight: float = Field(1.0, ge=0)
    marker_weight: float = Field(0.5, ge=0, description="weight of the marker loss against the segmentation loss")
    label_smoothing: float = Field(0.1, ge=0, lt=0.5)
    class_balanced: bool = Field(True, description="positive-class weight n_neg / n_pos per marker (training fold)")
    focal_gamma: float = Field(0.0, ge=0, le=5, description="0 = BCE; > 0 = focal loss with this gamma")
    marker_min_tumour_share: float = Field(
        0.0, ge=0, le=1, description="marker labels count only on training patches that hold at least this share "
                                     "of the patient's whole tumour (labels 1-3; otherwise they are masked like "
                                     "unknown labels); 0 = every patch (paper)")

    @model_validator(mode="after")
    def _some_loss(self) -> ProfileLoss:
        if self.dice_weight == 0 and self.ce_weight == 0:
            raise ValueError("dice_weight and ce_weight cannot both be 0")
        return self


class ProfileAugment(_Section):
    """Patch sampling and augmentation (flips, intensity, elastic, modality dropout)."""

    patch: tuple[int, int, int] = (128, 128, 128)
    foreground_prob: float = Field(0.67, ge=0, le=1, description="patches centred on a tumour voxel")
    flip_prob: float = Field(0.5, ge=0, le=1)
    intensity_prob: float = Field(0.5, ge=0, le=1, description="per-modality scale/shift")
    intensity_scale: float = Field(0.1, ge=0, le=1)
    intensity_shift: float = Field(0.1, ge=0, le=1)
    elastic_prob: float = Field(0.0, ge=0, le=1)
    elastic_sigma_mm: float = Field(8.0, gt=0)
    elastic_magnitude_mm: float = Field(3.0, ge=0)
    modality_dropout: float = Field(0.1, ge=0, lt=1, description="probability of hiding each modality (≥ 1 kept)")

    @field_validator("patch")
    @classmethod
    def _patch(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(v < 8 for v in value):
            raise ValueError(f"patch sides must be >= 8 voxels, got {list(value)}")
        return value


class ProfileOptim(RunNumerics):
    """Optimiser, schedule, epochs and numerics."""

    max_epochs: int = Field(150, ge=1, le=10000)
    patches_per_epoch: int = Field(0, ge=0, description="0 = one patch per training patient")
    batch_size: int = Field(2, ge=1, le=64)
    lr: float = Field(1e-4, gt=0, le=1)
    weight_decay: float = Field(1e-5, ge=0, le=1)
    warmup_epochs: int = Field(0, ge=0)
    validate_every: int = Field(5, ge=1)
    monitor: Literal["combined", "wt_dice"] = Field(
        "combined", description="what picks the best validation: WT Dice averaged with the mean defined marker "
                                "AUC (combined), or WT Dice alone (wt_dice: when the validation patients are too "
                                "few for a stable marker AUC)")
    early_stopping_patience: int = Field(0, ge=0, description="validations without improvement; 0 = off")
    precision: Precision = "32"


class ProfileInference(_Section):
    """Sliding-window inference and post-processing."""

    roi: tuple[int, int, int] | None = Field(
        None, description="sliding-window size (voxels); default: the training patch. A window covering the whole "
                          "working volume makes inference one forward pass")
    overlap: float = Field(0.5, ge=0, lt=1)
    sw_batch_size: int = Field(1, ge=1)
    min_component_ml: float = Field(0.1, ge=0, description="tumour components smaller than this are removed")
    et_min_ml: float = Field(0.0, ge=0, description="ET below this volume is relabelled NETC (BraTS practice); 0 = off")


class ProfileExplain(_Section):
    """Marker Grad-CAM written by ``vbiopsy predict`` (``<id>_gradcam_<marker>.nii.gz`` on the scan grid)."""

    enabled: bool = True
    max_patients: int = Field(8, ge=0, le=1000, description="subjects of one predict call with maps (in the given "
                                                           "order); --saliency maps them all")


class ProfileConfig(_Section):
    """Everything ``vbiopsy train`` needs for MGMT-Net."""

    task: Literal["profile"]
    data: ProfileData
    model: ProfileModel = ProfileModel()
    loss: ProfileLoss = ProfileLoss()
    augment: ProfileAugment = ProfileAugment()
    optim: ProfileOptim = ProfileOptim()
    inference: ProfileInference = ProfileInference()
    explain: ProfileExplain = ProfileExplain()
