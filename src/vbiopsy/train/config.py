"""Training configuration for the ASLNet tasks: one pydantic model per section, unknown keys refused.

``TrainConfig`` is what ``vbiopsy train CONFIG`` reads (``configs/aslnet-*.yaml``). Defaults are the
paper's / reference code's final values (``../shared/reference/aslnet-reference-code-notes.md`` §3–4);
the ``*-demo.yaml`` configs shrink the network and the epochs for the phantom cohort.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from vbiopsy.config import CohortSource, RunNumerics
from vbiopsy.config import ConfigSection as _Section

Task = Literal["grade", "survival", "survival_cox"]


class RoiSettings(_Section):
    """Where the 70 mm cube goes (see :mod:`vbiopsy.preprocess.aslnet_roi`)."""

    side_mm: float = Field(70.0, gt=0, le=300, description="cube side in mm (paper: 70)")
    top_pct: float = Field(0.01, gt=0, le=100, description="percentage of brightest voxels (paper: 0.01 %)")
    centre: Literal["brightest", "brightest_in_brain", "seg"] = Field(
        "brightest", description="brightest voxels of the whole scan (paper), inside the brain mask column, "
                                 "or the centroid of the manifest's tumour segmentation")
    out_shape: tuple[int, int, int] | None = Field(None, description="resample the cube to this grid (paper at 1 mm: 70³)")
    window_mm: float = Field(15.0, gt=0, le=100, description="local z-score window (mm)")


class DataSettings(CohortSource):
    """Which cohort, which image, which split."""

    modality: str = Field("asl", min_length=1, description="manifest column of the input image")
    splits: Path | None = Field(None, description="splits.json to use; made from the labels when absent")
    test_fraction: float = Field(0.2, ge=0, lt=1)
    folds: int = Field(5, ge=2, le=20)
    split_seed: int = Field(0, ge=0)
    keep_in_train: tuple[str, ...] = Field((), description="label values never put in the test set")
    rare_classes: Literal["error", "train"] = "error"
    survival_definition: Literal["12m", "vital_status"] = Field(
        "12m", description="12m: died < horizon = 1, OS ≥ horizon = 0, censored earlier excluded (paper); "
                           "vital_status: the reference code's dead/alive column")
    horizon_days: float = Field(365.0, gt=0)
    roi: RoiSettings = RoiSettings()
    jobs: int = Field(1, ge=1, le=64, description="processes for extracting the ROI cubes")
    loader_workers: int = Field(0, ge=0, le=32, description="data-loader worker processes during training "
                                                            "(seeded; results do not depend on it)")


class ModelSettings(_Section):
    """ResNet3D-GN (+ FiLM for survival); see :func:`vbiopsy.models.build_aslnet`."""

    base_width: int = Field(32, ge=1, le=256)
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    block: Literal["basic", "bottleneck"] = "basic"
    gn_groups: int = Field(32, ge=1)
    dropout: float | None = Field(None, ge=0, lt=1, description="spatial dropout (default: 0.3 grade, 0.1 survival)")
    film_stages: tuple[int, ...] | None = Field(
        None, description="0-based stages conditioned by FiLM (default: the last two, as the reference code)")
    film_hidden: int = Field(64, ge=1)
    film_dropout: float = Field(0.1, ge=0, lt=1)
    tabular_hidden: int = Field(128, ge=1)
    tabular_layers: int = Field(2, ge=0, le=8)

    @field_validator("blocks")
    @classmethod
    def _blocks(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(b < 1 for b in value):
            raise ValueError(f"blocks must be positive integers, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _film_in_range(self) -> ModelSettings:
        bad = [s for s in self.film_stages or () if not 0 <= s < len(self.blocks)]
        if bad:
            raise ValueError(f"film_stages {list(self.film_stages or ())} must be stage indices in "
                             f"[0, {len(self.blocks) - 1}] for blocks {list(self.blocks)}")
        return self

    @property
    def conditioned_stages(self) -> tuple[int, ...]:
        """``film_stages``, or the last two stages."""
        if self.film_stages is not None:
            return self.film_stages
        return tuple(range(max(len(self.blocks) - 2, 0), len(self.blocks)))


class AugmentSettings(_Section):
    """On-the-fly augmentation of the raw cube, before the derived channels (MONAI transforms)."""

    enabled: bool = True
    flip_prob: float = Field(0.5, ge=0, le=1, description="per spatial axis")
    rotate_deg: float = Field(10.0, ge=0, le=45)
    rotate_prob: float = Field(0.5, ge=0, le=1)
    elastic_prob: float = Field(0.3, ge=0, le=1)
    elastic_sigma_mm: float = Field(8.0, gt=0, description="smoothness of the displacement field")
    elastic_magnitude_mm: float = Field(3.0, ge=0, description="displacement scale (mm), a real deformation")
    rician_prob: float = Field(0.5, ge=0, le=1)
    rician_std_fraction: float = Field(0.02, ge=0, le=1, description="noise std as a fraction of the in-brain robust scale")


class OptimSettings(RunNumerics):
    """Optimiser, schedule, early stopping and numerics."""

    max_epochs: int = Field(150, ge=1, le=10000)
    batch_size: int = Field(1, ge=1, le=512)
    lr: float = Field(1e-4, gt=0, le=1)
    weight_decay: float = Field(1e-7, ge=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    class_weights: bool = True
    early_stopping_patience: int = Field(15, ge=1)
    lr_plateau_patience: int = Field(3, ge=1)
    min_lr: float = Field(1e-6, ge=0)
    grad_clip: float | None = Field(None, gt=0, description="per-parameter gradient-norm clip (reference OS: 1.0)")
    devices: int = Field(1, ge=1, le=1024, description="processes of a Lightning DDP fit (gloo on CPU, NCCL on "
                                                       "GPUs); batch_size is the effective batch (`--devices`)")
    nodes: int = Field(1, ge=1, le=1024, description="machines of a multi-node DDP fit (devices processes on each)")


class ExplainSettings(_Section):
    """Integrated Gradients and exact Shapley shares after training (test patients)."""

    enabled: bool = True
    ig_steps: int = Field(32, ge=2, le=1024)
    internal_batch_size: int = Field(8, ge=1)
    max_patients: int = Field(20, ge=0, description="test patients with a saved saliency map")


class TrainConfig(_Section):
    """Everything ``vbiopsy train`` needs; saved resolved next to the run."""

    task: Task
    data: DataSettings
    model: ModelSettings = ModelSettings()
    augment: AugmentSettings = AugmentSettings()
    optim: OptimSettings = OptimSettings()
    explain: ExplainSettings = ExplainSettings()
    baseline: bool = Field(True, description="fit the clinical-only baseline on the same folds")

    @model_validator(mode="after")
    def _cox_batches(self) -> TrainConfig:
        if self.task == "survival_cox" and self.optim.batch_size < 2:
            raise ValueError("optim.batch_size must be >= 2 for survival_cox (the partial likelihood compares "
                             f"patients within a batch), got {self.optim.batch_size}")
        return self

    @property
    def uses_tabular(self) -> bool:
        """Survival models are conditioned on age, sex and EOR (FiLM)."""
        return self.task != "grade"

    @property
    def dropout(self) -> float:
        """Spatial dropout: the configured value, else the reference's 0.3 (grade) / 0.1 (survival)."""
        if self.model.dropout is not None:
            return self.model.dropout
        return 0.3 if self.task == "grade" else 0.1
