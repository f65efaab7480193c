"""MGMT-Net cross-validation run: split, cases, one model per fold, out-of-fold and test predictions.

Leak-proofing as in the ASLNet run: the split is fixed first (from ``splits.json`` or made once,
stratified by IDH where known) and test patients are loaded *without* their segmentation and
marker labels; those are read only by :mod:`vbiopsy.train.profile_evaluation`. Per fold the
model is trained on tumour-centred patches of the fold's training patients and selected on
whole-volume validation (WT Dice, marker AUC); validation patients are then predicted once
(out-of-fold: segmentation NIfTI on the scan grid + marker probabilities); test patients are
predicted by the fold ensemble (mean class and marker probabilities).

Resumable (:mod:`vbiopsy.train.resume`): a fold whose ``done.json`` matches the config is skipped;
an interrupted fold continues from its last epoch state; the test-set ensemble and ``run.json``
are recomputed from the fold files, so a resumed run's outputs equal an uninterrupted run's.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from vbiopsy import __version__
from vbiopsy.atomic import ensure_writable_dir, write_text_atomic, write_with_atomic
from vbiopsy.config import save_config
from vbiopsy.data.labels import BRATS2024_LABELS
from vbiopsy.data.manifest import Manifest
from vbiopsy.data.nifti import save_volume
from vbiopsy.data.splits import Splits, make_splits
from vbiopsy.errors import CohortError, ConfigError, VbiopsyError
from vbiopsy.parallel import run_parallel
from vbiopsy.train.profile_config import ProfileConfig
from vbiopsy.train.profile_data import ProfileCase, case_key, load_cached_case, load_case, save_case
from vbiopsy.train.profile_infer import CasePrediction, predict_case, to_native


@dataclass
class ProfileCohort:
    """What training may see: manifest, split, cases (test cases without labels)."""

    manifest: Manifest
    splits: Splits
    cases: dict[str, ProfileCase]
    test_ids: tuple[str, ...]


def build_mgmtnet(config: ProfileConfig) -> nn.Module:
    """The configured (untrained) MGMT-Net."""
    from vbiopsy.models.mgmtnet import MGMTNet

    m = config.model
    return MGMTNet(len(config.data.modalities), len(BRATS2024_LABELS), len(config.data.markers), width=m.width,
                   stages=m.stages, fusion=m.fusion, encoder=m.encoder, marker_pooling=m.marker_pooling,
                   swin_heads=m.swin_heads, window_size=m.window_size, attention_gates=m.attention_gates,
                   deep_supervision=m.deep_supervision, cmaf_dropout=m.cmaf_dropout, head_dropout=m.head_dropout,
                   head_hidden=m.head_hidden, marker_composition=m.marker_composition)


def _stratum(value: Any) -> object:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else int(float(value))


def make_or_load_profile_splits(config: ProfileConfig, manifest: Manifest, run_dir: Path) -> Splits:
    """``data.splits`` (leakage-checked) or a new patient-level split stratified by IDH (unknown = own stratum)."""
    subject_to_patient = dict(zip(manifest.subjects, manifest.patient_ids()))
    if config.data.splits is not None:
        splits = Splits.load(config.data.splits, subject_to_patient=subject_to_patient)
    else:
        idh = manifest.column("idh") if "idh" in manifest.frame.columns else [None] * len(manifest)
        splits = make_splits(manifest.subjects, [_stratum(v) for v in idh], patient_ids=manifest.patient_ids(),
                             test_fraction=config.data.test_fraction, n_folds=config.data.folds,
                             seed=config.data.split_seed, rare_classes="train", stratify_name="idh")
    splits.save(run_dir / "splits.json")
    return splits


def _load(row: dict[str, Any], *, config: ProfileConfig, cache_dir: Path, labelled: bool) -> ProfileCase | str:
    """One case (cached by inputs and settings), or the message of a user error."""
    d = config.data
    if not labelled:  # a test patient: its labels stay unread until evaluation
        row = {k: v for k, v in row.items() if k not in ("seg", *d.markers)}
    settings = {"spacing_mm": d.spacing_mm, "markers": list(d.markers), "labelled": labelled}
    try:
        key = case_key(row, d.modalities, settings)
        path = cache_dir / f"{row['subject_id']}.npz"
        case = load_cached_case(path, key)
        if case is None:
            case = load_case(row, d.modalities, d.spacing_mm, with_seg=labelled, markers=d.markers)
            save_case(case, path, key)
        return case
    except VbiopsyError as err:
        return str(err)


def load_cases(config: ProfileConfig, manifest: Manifest, subjects: list[str], cache_dir: Path, *,
               labelled: bool) -> dict[str, ProfileCase]:
    """Cases of ``subjects`` (every subject's problem collected and raised together)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    task = functools.partial(_load, config=config, cache_dir=cache_dir, labelled=labelled)
    cases: dict[str, ProfileCase] = {}
    problems: list[str] = []
    for _, result in run_parallel(task, [manifest.row(s) for s in subjects], jobs=config.data.jobs):
        if isinstance(result, str):
            problems.append(result)
        else:
            cases[result.subject_id] = result
    if problems:
        raise CohortError(problems)
    if labelled:
        unlabelled = [s for s, c in cases.items() if c.seg is None]
        if unlabelled:
            raise CohortError([f"subject {s}: no segmentation (training patients need one)" for s in unlabelled])
    return cases


def prepare_profile_cohort(config: ProfileConfig, run_dir: Path) -> ProfileCohort:
    """Read the cohort, fix the split, load the training pool with labels and the test set without."""
    from vbiopsy.data.layouts import read_cohort

    d = config.data
    manifest = read_cohort(d.cohort, layout=d.layout, clinical=d.clinical)
    absent = [m for m in d.modalities if m not in manifest.modalities]
    if len(absent) == len(d.modalities):
        raise ConfigError(f"the cohort has none of the modalities {list(d.modalities)} "
                          f"(it has: {', '.join(manifest.modalities) or 'none'})")
    splits = make_or_load_profile_splits(config, manifest, run_dir)
    pool = sorted({s for fold in splits.folds for s in (*fold.train, *fold.val)})
    cases = load_cases(config, manifest, pool, run_dir / "cases", labelled=True)
    cases.update(load_cases(config, manifest, list(splits.test), run_dir / "cases", labelled=False))
    return ProfileCohort(manifest, splits, cases, tuple(splits.test))


class ProfileEnsemble(nn.Module):
    """Mean-probability ensemble of fold models with MGMT-Net's call signature."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)

    def segment(self, image: Tensor, modality_mask: Tensor | None = None) -> Tensor:
        mean = torch.stack([torch.softmax(m.segment(image, modality_mask).float(), 1) for m in self.members]).mean(0)
        return torch.log(mean.clamp_min(1e-12))

    def forward(self, image: Tensor, modality_mask: Tensor | None = None) -> Any:
        from vbiopsy.models.mgmtnet import MGMTNetOutput

        outs = [m(image, modality_mask) for m in self.members]
        p = torch.stack([torch.sigmoid(o.marker_logits.float()) for o in outs]).mean(0).clamp(1e-7, 1 - 1e-7)
        weights = None if outs[0].modality_weights is None else torch.stack([o.modality_weights for o in outs]).mean(0)
        return MGMTNetOutput(self.segment(image, modality_mask), torch.log(p) - torch.log1p(-p), weights, [])


def model_options(config: ProfileConfig) -> dict[str, Any]:
    """The model section as stored with (and checked against) fold weights; ``marker_composition`` only when
    on, so that checkpoints written before that switch existed still load under a config with it off."""
    options = config.model.model_dump(mode="json")
    if not options["marker_composition"]:
        del options["marker_composition"]
    return options


def model_metadata(config: ProfileConfig, fold: int) -> dict[str, Any]:
    """JSON metadata stored beside each fold's weights."""
    return {"task": "profile", "fold": fold, "model": model_options(config),
            "modalities": list(config.data.modalities), "markers": list(config.data.markers),
            "spacing_mm": config.data.spacing_mm, "patch": list(config.augment.patch),
            "labels": {str(k): v for k, v in BRATS2024_LABELS.items()}, "vbiopsy": __version__}


def write_predictions(predictions: list[tuple[CasePrediction, ProfileCase]], config: ProfileConfig,
                      folder: Path, extra: dict[str, Any] | None = None) -> pd.DataFrame:
    """Segmentations on the scan grid (``folder/seg/<id>.nii.gz``) and a marker/modality table."""
    seg_dir = ensure_writable_dir(folder / "seg")
    rows = []
    for pred, case in predictions:
        labels = to_native(pred, case, config.inference)
        save_volume(labels, case.native.affine, seg_dir / f"{case.subject_id}.nii.gz", dtype=np.uint8)
        row: dict[str, Any] = {"subject_id": case.subject_id, **(extra or {})}
        row.update({f"p_{m}": float(p) for m, p in zip(config.data.markers, pred.markers)})
        row["missing_modalities"] = ";".join(config.data.modalities[i] for i in pred.missing)
        for m, share in zip(config.data.modalities, pred.modality_share):
            row[f"cmaf_{m}"] = share
        rows.append(row)
    frame = pd.DataFrame(rows)
    write_with_atomic(folder / "predictions.csv", lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))
    return frame


def run_profile_fold(config: ProfileConfig, cohort: ProfileCohort, k: int, run_dir: Path, *,
                     resume: bool = True) -> dict[str, Any]:
    """Train fold ``k``; write its weights, history and out-of-fold predictions; return a summary.

    With ``resume``, a fold already finished under this config is not retrained (its stored summary
    is returned) and an interrupted one continues from its last epoch state; without, both are redone.
    """
    from vbiopsy.tasks.losses import marker_pos_weight
    from vbiopsy.tasks.profile import ProfileTask
    from vbiopsy.train.checkpoint import save_checkpoint
    from vbiopsy.train.fit import seed_everything
    from vbiopsy.train.profile_fit import fit_profile
    from vbiopsy.train.profile_patches import PatchDataset
    from vbiopsy.train.resume import FoldProgress

    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(cohort.splits.folds):
        raise ConfigError(f"fold index must be in 0..{len(cohort.splits.folds) - 1}, got {k!r}")
    fold = cohort.splits.folds[k]
    folder = ensure_writable_dir(run_dir / f"fold_{k}")
    progress = FoldProgress.start(config, folder, k, resume=resume)
    if progress.finished is not None:
        return progress.finished
    train = [cohort.cases[s] for s in fold.train]
    val = [cohort.cases[s] for s in fold.val]
    seed = config.optim.seed * 1000 + k
    seed_everything(seed, deterministic=config.optim.deterministic)
    model = build_mgmtnet(config)
    pos_weight = marker_pos_weight(np.stack([c.markers for c in train]))
    module = ProfileTask(model, config, pos_weight=pos_weight, val_cases=val)
    patches = PatchDataset(train, config.augment.patch, config.augment, seed=seed,
                           length=config.optim.patches_per_epoch,
                           marker_min_tumour_share=config.loss.marker_min_tumour_share)
    started = time.perf_counter()
    result = fit_profile(module, patches, config, seed=seed, checkpoints=progress.checkpoints)
    seconds = time.perf_counter() - started
    save_checkpoint(folder / "model.safetensors", module.model.state_dict(), model_metadata(config, k))
    model.eval()
    preds = [(predict_case(model, c, patch=config.augment.patch, settings=config.inference), c) for c in val]
    write_predictions(preds, config, folder / "oof", {"fold": k})
    history = pd.DataFrame(result.history)
    write_with_atomic(folder / "history.csv", lambda tmp: history.to_csv(tmp, index=False))
    summary = {"fold": k, "n_train": len(train), "n_val": len(val), "seconds": round(seconds, 2),
               "pos_weight": [round(float(w), 4) for w in pos_weight], **asdict(result)}
    summary.pop("history")
    write_text_atomic(folder / "fit.json", json.dumps(summary, indent=1) + "\n")
    files = ["model.safetensors", "oof/predictions.csv", *(f"oof/seg/{c.subject_id}.nii.gz" for c in val),
             "history.csv", "fit.json"]
    progress.done(files, summary)
    return summary


def load_profile_ensemble(config: ProfileConfig, run_dir: Path) -> ProfileEnsemble:
    """Every fold model of ``run_dir`` (checked against ``config``), in eval mode."""
    from vbiopsy.errors import InputError
    from vbiopsy.train.checkpoint import load_checkpoint

    paths = sorted(run_dir.glob("fold_*/model.safetensors"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not paths:
        raise InputError(run_dir, "no fold models (fold_*/model.safetensors)")
    models = []
    for path in paths:
        state, _ = load_checkpoint(path, expect={"task": "profile", "model": model_options(config),
                                                 "modalities": list(config.data.modalities)})
        model = build_mgmtnet(config)
        model.load_state_dict(state)
        models.append(model.eval())
    return ProfileEnsemble(models).eval()


def run_profile(config: ProfileConfig, out: str | Path, *, progress: Any = None, resume: bool = True) -> Path:
    """Train every fold, predict the test set with the fold ensemble, write ``run.json``.

    ``resume``: continue what a killed run of the same config left in ``out`` (see
    :func:`run_profile_fold`); the caller checks the folder first
    (:func:`vbiopsy.train.resume.check_run_folder`).
    """
    run_dir = ensure_writable_dir(out)
    save_config(config, run_dir / "config.yaml")
    started = time.perf_counter()
    cohort = prepare_profile_cohort(config, run_dir)
    n_folds = len(cohort.splits.folds)
    folds = []
    for k in range(n_folds):
        folds.append(run_profile_fold(config, cohort, k, run_dir, resume=resume))
        if progress is not None:
            progress(k + 1, n_folds)
    if cohort.test_ids:
        ensemble = load_profile_ensemble(config, run_dir)
        preds = [(predict_case(ensemble, cohort.cases[s], patch=config.augment.patch, settings=config.inference),
                  cohort.cases[s]) for s in cohort.test_ids]
        write_predictions(preds, config, run_dir / "test")
    info = {"vbiopsy": __version__, "task": "profile", "n_train_pool": sum(len(f.val) for f in cohort.splits.folds),
            "n_test": len(cohort.test_ids), "folds": folds, "seconds": round(time.perf_counter() - started, 1)}
    write_text_atomic(run_dir / "run.json", json.dumps(info, indent=1, default=str) + "\n")
    return run_dir
