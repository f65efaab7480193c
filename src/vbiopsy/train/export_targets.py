"""What ``vbiopsy export`` writes for each task: the wrapped fold models and fold ensemble, their inputs,
outputs, example batches and the preprocessing a deployment must reproduce (:func:`export_plan`).

========== ======================================================= ============================================
task       inputs (float32)                                        outputs (float32)
========== ======================================================= ============================================
ASLNet     ``image`` (B, 4, X, Y, Z): channels raw, zg, zl, log     ``output``: class probabilities (grade),
           of the ROI cube; survival also ``tabular`` (B, 3): age    P(death within the horizon) (survival), the
           (years), sex (0/1), EOR (0/1/2) imputed with the fold's   risk score (survival_cox); the ensemble
           ``fill`` values (normalisation is inside the model)       averages probabilities
MGMT-Net   ``image`` (B, M, X, Y, Z): the modalities z-scored in    ``seg_logits`` (B, 5, X, Y, Z) over the BraTS
           the brain on the working grid; ``modality_mask``          2024 labels, ``marker_logits`` (B, K); the
           (B, M): 1 present, 0 absent (at least one per row).       ensemble's are ``log`` of the mean softmax
           X, Y, Z: the training patch (fixed; the sliding-window    and ``logit`` of the mean sigmoid
           size)
diagnoser  :func:`diagnosis_inputs`: ``image`` (B, 1, X, Y, Z) the     ``probabilities`` (B, 4) over the tumour
           T1c z-scored in the brain on the working grid; ``prior``  types; the ensemble averages them
           (B, 1, X, Y, Z) in [0, 1] unless ``model.prior`` is
           none; ``clinical`` (B, k) for ``model.clinical`` (NaN =
           missing, imputed inside the model)
========== ======================================================= ============================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vbiopsy.errors import InputError
from vbiopsy.train.checkpoint import checkpoint_metadata
from vbiopsy.train.config import TrainConfig
from vbiopsy.train.diagnosis_config import DiagnosisConfig, tabular_names, tabular_width
from vbiopsy.train.profile_config import ProfileConfig

CHANNELS = ("raw", "zg", "zl", "log")
"""ASLNet input channels: the ROI signal, its whole-scan z-score, local z-score and log (see
:mod:`vbiopsy.preprocess.aslnet_channels`)."""

ExampleInputs = Callable[[int, int], tuple[Tensor, ...]]
"""``(batch, seed) → inputs``: a seeded random batch in the plan's input order."""


@dataclass(frozen=True)
class ExportTarget:
    """One model to export: ``module`` takes the plan's inputs positionally and returns its outputs."""

    name: str
    module: nn.Module
    source: str
    preprocessing: dict[str, Any]
    example_inputs: ExampleInputs


@dataclass(frozen=True)
class ExportPlan:
    """Everything :func:`vbiopsy.train.export.export_run` needs for one run."""

    task: str
    targets: list[ExportTarget]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    inputs: dict[str, str]
    outputs: Any
    tolerance_note: str = "probabilities, max |diff| over all outputs"


def _fold_paths(run_dir: Path) -> list[Path]:
    paths = sorted(run_dir.glob("fold_*/model.safetensors"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not paths:
        raise InputError(run_dir, "no fold models (fold_*/model.safetensors)")
    return paths


# --- ASLNet ------------------------------------------------------------------------------------------

class Deployable(nn.Module):
    """An ASLNet ``model`` followed by the task's output transform (softmax / sigmoid / identity)."""

    def __init__(self, model: nn.Module, task: str, *, uses_tabular: bool) -> None:
        super().__init__()
        self.model = model.eval()
        self.task = task
        self.uses_tabular = uses_tabular

    def forward(self, image: Tensor, tabular: Tensor | None = None) -> Tensor:
        from vbiopsy.tasks.aslnet import probabilities

        logits = self.model(image, tabular) if self.uses_tabular else self.model(image)
        return probabilities(self.task, logits)  # type: ignore[arg-type]


def example_inputs(input_shape: list[int], tabular: dict[str, Any] | None, batch: int, seed: int) -> tuple[Tensor, ...]:
    """ASLNet: a seeded random batch: image (batch, *input_shape) ~ N(0, 1); tabular drawn around the fold's
    training mean ± std (so FiLM sees values of a realistic scale)."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn((batch, *input_shape), generator=generator)
    if tabular is None:
        return (image,)
    mean = torch.tensor(tabular["mean"], dtype=torch.float32)
    std = torch.tensor(tabular["std"], dtype=torch.float32)
    return image, mean + std * torch.randn((batch, len(mean)), generator=generator)


def preprocessing_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """ASLNet: what a deployment must reproduce before calling an exported model (from a fold checkpoint)."""
    keep = ("task", "classes", "modality", "roi", "spacing_mm", "input_shape", "tabular", "model", "dropout", "vbiopsy")
    return {**{k: metadata.get(k) for k in keep}, "channels": list(CHANNELS)}


def aslnet_plan(config: TrainConfig, run_dir: Path) -> ExportPlan:
    """Fold models and the mean-probability ensemble of an ASLNet run, returning probabilities / risk."""
    from vbiopsy.train.checkpoint import load_checkpoint
    from vbiopsy.train.cross_validation import build_model
    from vbiopsy.train.ensemble import FoldEnsemble

    folds = []
    for path in _fold_paths(run_dir):
        state, metadata = load_checkpoint(path, expect={"task": config.task,
                                                        "model": config.model.model_dump(mode="json")})
        if "input_shape" not in metadata:
            raise InputError(path, "key 'input_shape': missing (trained by an older vbiopsy); retrain to export")
        model = build_model(config)
        model.load_state_dict(state)
        folds.append((path.parent.name, model.eval(), metadata))
    ensemble = FoldEnsemble([m for _, m, _ in folds], config.task, uses_tabular=config.uses_tabular).eval()
    targets = []
    for name, model, metadata in [*folds, ("ensemble", ensemble, folds[0][2])]:
        tabular = metadata.get("tabular") if config.uses_tabular else None
        shape = metadata["input_shape"]
        targets.append(ExportTarget(
            name, Deployable(model, config.task, uses_tabular=config.uses_tabular),
            "fold ensemble (mean probability)" if name == "ensemble" else f"{name}/model.safetensors",
            preprocessing_metadata(metadata),
            lambda batch, seed, shape=shape, tabular=tabular: example_inputs(shape, tabular, batch, seed)))
    names = ("image", "tabular") if config.uses_tabular else ("image",)
    inputs = {"image": "float32 (batch, 4, X, Y, Z): channels raw, zg, zl, log of the ROI cube",
              **({"tabular": "float32 (batch, 3): age, sex, eor imputed with the fold's fill values"}
                 if config.uses_tabular else {})}
    note = "risk scores" if config.task == "survival_cox" else "probabilities"
    return ExportPlan(config.task, targets, names, ("output",), inputs, folds[0][2]["classes"],
                      f"{note}, max |diff| over all outputs")


# --- MGMT-Net ----------------------------------------------------------------------------------------

class SegmentationAndMarkers(nn.Module):
    """MGMT-Net (or its fold ensemble) → ``(seg_logits, marker_logits)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, image: Tensor, modality_mask: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(image, modality_mask)
        return out.seg_logits, out.marker_logits


def profile_inputs(modalities: int, patch: tuple[int, ...], batch: int, seed: int) -> tuple[Tensor, Tensor]:
    """MGMT-Net: image (batch, M, *patch) ~ N(0, 1) and a 0/1 modality mask (batch, M): the first row has
    every modality, the others hide each with probability ½ (at least one kept, one hidden in row 1, so
    the traced graph carries the missing-modality path and the mask stays an input)."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn((batch, modalities, *patch), generator=generator)
    mask = (torch.rand((batch, modalities), generator=generator) < 0.5).float()
    mask[0] = 1.0
    if batch > 1:
        mask[1, int(torch.randint(modalities, (1,), generator=generator))] = 0.0
    empty = mask.sum(1) == 0
    mask[empty, 0] = 1.0
    return image, mask


def profile_plan(config: ProfileConfig, run_dir: Path) -> ExportPlan:
    """Fold models and the fold ensemble of an MGMT-Net run, returning segmentation and marker logits."""
    from vbiopsy.train.profile_run import load_profile_ensemble

    paths = _fold_paths(run_dir)
    ensemble = load_profile_ensemble(config, run_dir)
    patch = tuple(config.augment.patch)
    modalities = len(config.data.modalities)

    def make(batch: int, seed: int) -> tuple[Tensor, ...]:
        return profile_inputs(modalities, patch, batch, seed)

    def preprocessing(metadata: dict[str, Any]) -> dict[str, Any]:
        keep = ("task", "modalities", "markers", "spacing_mm", "patch", "labels", "model", "vbiopsy")
        return {**{k: metadata.get(k) for k in keep}, "normalisation": "each modality z-scored over the brain "
                "on the working grid (0 outside); absent modality: any values, mask 0",
                "window": f"fixed spatial size {list(patch)} (the training patch): sliding-window inference"}

    targets = [ExportTarget(path.parent.name, SegmentationAndMarkers(model), f"{path.parent.name}/model.safetensors",
                            preprocessing(checkpoint_metadata(path)), make)
               for path, model in zip(paths, ensemble.members)]
    targets.append(ExportTarget("ensemble", SegmentationAndMarkers(ensemble), "fold ensemble (mean probabilities)",
                                targets[0].preprocessing, make))
    m = len(config.data.modalities)
    inputs = {"image": f"float32 (batch, {m}, {', '.join(map(str, patch))}): modalities "
                       f"{', '.join(config.data.modalities)} z-scored in the brain on the working grid",
              "modality_mask": f"float32 (batch, {m}): 1 present, 0 absent (at least one present per row)"}
    outputs = {"seg_logits": f"(batch, 5, {', '.join(map(str, patch))}) over labels "
                             f"{checkpoint_metadata(paths[0]).get('labels')}",
               "marker_logits": f"(batch, {len(config.data.markers)}): {', '.join(config.data.markers)}"}
    return ExportPlan("profile", targets, ("image", "modality_mask"), ("seg_logits", "marker_logits"), inputs,
                      outputs, "logits (segmentation and markers), max |diff| over all outputs")


# --- Adaptive-Diagnoser ------------------------------------------------------------------------------

class MeanProbabilities(nn.Module):
    """Diagnoser fold model(s) called with keyword inputs ``names`` → mean softmax probabilities (B, K)."""

    def __init__(self, models: list[nn.Module], names: tuple[str, ...]) -> None:
        super().__init__()
        self.members = nn.ModuleList([m.eval() for m in models])
        self.names = names

    def forward(self, *inputs: Tensor) -> Tensor:
        named = dict(zip(self.names, inputs, strict=True))
        return torch.stack([torch.softmax(m(**named), dim=1) for m in self.members]).mean(0)


def diagnosis_inputs(config: DiagnosisConfig, model: nn.Module, batch: int, seed: int) -> dict[str, Tensor]:
    """The diagnoser's inputs by keyword name, as a seeded random batch (THE one place that knows them:
    a new model input is added here). image (batch, 1, *working_shape) ~ N(0, 1); prior (same grid)
    uniform in [0, 1], the second row all zero (the whole-brain fallback); clinical (batch, k: the clinical
    variables, then the lesion measurements) drawn around the model's stored training mean ± std, one value
    missing (NaN) in the first row; crop (batch, M,
    *lesion_crop.shape) ~ N(0, 1) with ``model.lesion_crop``."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 1, *config.data.working_shape)
    named = {"image": torch.randn(shape, generator=generator)}
    if config.model.prior != "none":
        prior = torch.rand(shape, generator=generator)
        if batch > 1:
            prior[1] = 0.0
        named["prior"] = prior
    k = tabular_width(config.model)
    if k:
        mean = getattr(model, "clinical_mean", torch.zeros(k)).detach().float()
        std = getattr(model, "clinical_std", torch.ones(k)).detach().float()
        clinical = mean + std * torch.randn((batch, k), generator=generator)
        clinical[0, 0] = float("nan")
        named["clinical"] = clinical
    crop = config.data.lesion_crop
    if config.model.lesion_crop and crop is not None:
        named["crop"] = torch.randn((batch, len(crop.modalities), *crop.shape), generator=generator)
    return named


def diagnosis_plan(config: DiagnosisConfig, run_dir: Path) -> ExportPlan:
    """Fold models and the mean-probability ensemble of a diagnoser run, returning class probabilities."""
    from vbiopsy.data.schema import DIAGNOSES
    from vbiopsy.train.diagnosis_run import load_fold_models

    paths = _fold_paths(run_dir)
    _, models = load_fold_models(run_dir)
    names = tuple(diagnosis_inputs(config, models[0], 1, 0))

    def make(batch: int, seed: int) -> tuple[Tensor, ...]:
        return tuple(diagnosis_inputs(config, models[0], batch, seed).values())

    def preprocessing(metadata: dict[str, Any]) -> dict[str, Any]:
        keep = ("task", "classes", "model", "data", "vbiopsy")
        return {**{k: metadata.get(k) for k in keep}, "normalisation": "the image z-scored over the brain on the "
                "working grid; the prior from the Tumor-Localizer on the same grid (all zero: whole brain)"}

    targets = [ExportTarget(path.parent.name, MeanProbabilities([model], names),
                            f"{path.parent.name}/model.safetensors", preprocessing(checkpoint_metadata(path)), make)
               for path, model in zip(paths, models)]
    targets.append(ExportTarget("ensemble", MeanProbabilities(models, names), "fold ensemble (mean probability)",
                                targets[0].preprocessing, make))
    grid = ", ".join(map(str, config.data.working_shape))
    described = {"image": f"float32 (batch, 1, {grid}): {config.data.modality} z-scored in the brain on the "
                          "working grid",
                 "prior": f"float32 (batch, 1, {grid}) in [0, 1]: the {config.model.prior} tumour prior",
                 "clinical": f"float32 (batch, {tabular_width(config.model)}): "
                             f"{', '.join(tabular_names(config.model))} (NaN = missing; imputed and standardised "
                             "inside the model)"}
    if config.data.lesion_crop is not None:
        crop = config.data.lesion_crop
        described["crop"] = (f"float32 (batch, {len(crop.modalities)}, {', '.join(map(str, crop.shape))}): "
                             f"{', '.join(crop.modalities)} z-scored in the brain, {crop.spacing_mm} mm voxels, "
                             f"centred on the {config.model.prior} prior's centre of mass")
    return ExportPlan("diagnosis", targets, names, ("probabilities",), {n: described.get(n, n) for n in names},
                      list(DIAGNOSES))


def export_plan(config: TrainConfig | ProfileConfig | DiagnosisConfig, run_dir: Path) -> ExportPlan:
    """The :class:`ExportPlan` of a finished run of any task."""
    if isinstance(config, ProfileConfig):
        return profile_plan(config, run_dir)
    if isinstance(config, DiagnosisConfig):
        return diagnosis_plan(config, run_dir)
    return aslnet_plan(config, run_dir)
