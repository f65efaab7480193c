"""Cross-validation runner: one model per fold, out-of-fold predictions, fold ensemble on test.

For each fold: tabular imputation/normalisation and class weights fitted on the fold's training
patients only; fit with early stopping on the fold's validation patients; best weights saved as
safetensors; validation patients predicted once (out-of-fold, one row per patient, no
augmentation); test patients predicted from images and clinical inputs only. Then post-hoc rules
are fitted on the OOF predictions (survival threshold by Youden J; grade class scaling by
macro-F1) and the clinical-only baseline is fitted on the same folds. Test labels are not read
here (see :mod:`vbiopsy.train.cohort`).

Resumable (:mod:`vbiopsy.train.resume`): a fold whose ``done.json`` matches the config is skipped;
an interrupted fold continues from its last epoch state; everything after the folds is recomputed
from the fold files, so a resumed run's outputs equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vbiopsy import __version__
from vbiopsy.atomic import ensure_writable_dir, removed_if_refused, write_text_atomic, write_with_atomic
from vbiopsy.config import save_config
from vbiopsy.errors import ConfigError
from vbiopsy.models import build_aslnet
from vbiopsy.tasks.aslnet import AslNetTask
from vbiopsy.tasks.losses import class_weights
from vbiopsy.train.checkpoint import save_checkpoint
from vbiopsy.train.cohort import TrainingCohort, prepare_cohort, targets_of
from vbiopsy.train.config import TrainConfig
from vbiopsy.train.dataset import CubeDataset
from vbiopsy.train.fit import fit, global_rank, predict, seed_everything
from vbiopsy.train.resume import FoldProgress
from vbiopsy.train.tabular import TabularEncoding

CLASS_NAMES = {"grade": ["grade_2", "grade_3", "grade_4"], "survival": ["p_event"], "survival_cox": ["risk"]}


def output_columns(config: TrainConfig) -> list[str]:
    """Names of the per-patient output columns in prediction CSVs."""
    return CLASS_NAMES[config.task]


def build_model(config: TrainConfig) -> Any:
    """The configured network (untrained)."""
    m = config.model
    common = {"base_width": m.base_width, "blocks": m.blocks, "gn_groups": m.gn_groups, "dropout": config.dropout}
    if config.task == "grade":
        return build_aslnet("grade", in_channels=4, block=m.block, **common)
    return build_aslnet("survival", in_channels=4, tabular_features=3, film_stages=m.conditioned_stages,
                        film_hidden=m.film_hidden, film_dropout=m.film_dropout, tabular_hidden=m.tabular_hidden,
                        tabular_layers=m.tabular_layers, **common)


def model_metadata(config: TrainConfig, fold: int, encoding: TabularEncoding | None, cohort: TrainingCohort) -> dict:
    """JSON metadata stored beside each fold's weights (``input_shape``: one item's channels × voxels,
    what an exported model is traced with)."""
    any_cube = next(iter(cohort.cubes.values()))
    return {"task": config.task, "fold": fold, "model": config.model.model_dump(mode="json"),
            "input_shape": list(any_cube.channels().shape),
            "dropout": config.dropout, "classes": output_columns(config), "modality": config.data.modality,
            "roi": config.data.roi.model_dump(mode="json"), "spacing_mm": list(any_cube.spacing),
            "tabular": encoding.to_dict() if encoding is not None else None, "vbiopsy": __version__}


def _frame_csv(frame: pd.DataFrame, path: Path) -> Path:
    return write_with_atomic(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def run_fold(config: TrainConfig, cohort: TrainingCohort, fold_index: int, run_dir: Path, *,
             resume: bool = True) -> dict[str, Any]:
    """Train fold ``fold_index``; write its weights, history and predictions; return a summary.

    With ``resume``, a fold already finished under this config is not retrained (its stored summary
    is returned) and an interrupted one continues from its last epoch state; without, both are redone.
    """
    n_folds = len(cohort.splits.folds)
    if isinstance(fold_index, bool) or not isinstance(fold_index, int) or not 0 <= fold_index < n_folds:
        raise ConfigError(f"fold_index must be in 0..{n_folds - 1}, got {fold_index!r}")
    fold = cohort.splits.folds[fold_index]
    folder = ensure_writable_dir(run_dir / f"fold_{fold_index}")
    progress = FoldProgress.start(config, folder, fold_index, resume=resume)
    if progress.finished is not None:
        return progress.finished
    train_ids, val_ids, test_ids = list(fold.train), list(fold.val), list(cohort.test_ids)
    y_train = targets_of(cohort.train_labels, train_ids)
    y_val = targets_of(cohort.train_labels, val_ids)
    encoding = None
    tab: dict[str, np.ndarray | None] = {"train": None, "val": None, "test": None}
    if config.uses_tabular:
        encoding = TabularEncoding.fit(cohort.frame(train_ids))
        for name, ids in (("train", train_ids), ("val", val_ids), ("test", test_ids)):
            tab[name] = encoding.transform(cohort.frame(ids)) if ids else None
    weight = None
    if config.optim.class_weights and config.task != "survival_cox":
        n_classes = 3 if config.task == "grade" else 2
        weight = class_weights(np.asarray(y_train).astype(int), n_classes)
    seed = config.optim.seed * 1000 + fold_index
    seed_everything(seed, deterministic=config.optim.deterministic)  # weights initialised from the seed
    model = build_model(config)
    if encoding is not None:
        model.tabular.set_normalisation(encoding.mean, encoding.std)
    module = AslNetTask(model, task=config.task, optim=config.optim, class_weight=weight,
                        uses_tabular=config.uses_tabular)
    cubes = cohort.cubes
    train_set = CubeDataset([cubes[s] for s in train_ids], targets=y_train, tabular=tab["train"],
                            augment=config.augment, seed=seed)
    val_set = CubeDataset([cubes[s] for s in val_ids], targets=y_val, tabular=tab["val"])
    started = time.perf_counter()
    result = fit(module, train_set, val_set, config.optim, seed=seed, checkpoints=progress.checkpoints,
                 workers=config.data.loader_workers, devices=config.optim.devices, nodes=config.optim.nodes)
    seconds = time.perf_counter() - started
    if global_rank() != 0:  # a DDP worker: rank 0 writes the fold (same weights on every rank)
        return {"fold": fold_index, "rank": global_rank()}
    save_checkpoint(folder / "model.safetensors", module.model.state_dict(),
                    model_metadata(config, fold_index, encoding, cohort))
    columns = output_columns(config)
    oof = predict(module, CubeDataset([cubes[s] for s in val_ids], tabular=tab["val"]))
    frame = pd.DataFrame(np.asarray(oof).reshape(len(val_ids), -1), columns=columns)
    frame.insert(0, "fold", fold_index)
    frame.insert(0, "subject_id", val_ids)
    _frame_csv(frame, folder / "oof_predictions.csv")
    files = ["model.safetensors", "oof_predictions.csv", "history.csv", "fit.json"]
    if test_ids:
        files.append("test_predictions.csv")
        test = predict(module, CubeDataset([cubes[s] for s in test_ids], tabular=tab["test"]))
        test_frame = pd.DataFrame(np.asarray(test).reshape(len(test_ids), -1), columns=columns)
        test_frame.insert(0, "subject_id", test_ids)
        _frame_csv(test_frame, folder / "test_predictions.csv")
    _frame_csv(pd.DataFrame(result.history), folder / "history.csv")
    summary = {"fold": fold_index, "n_train": len(train_ids), "n_val": len(val_ids), "seconds": round(seconds, 2),
               "class_weight": None if weight is None else [round(float(w), 6) for w in weight], **asdict(result)}
    summary.pop("history")
    write_text_atomic(folder / "fit.json", json.dumps(summary, indent=1) + "\n")
    progress.done(files, summary)
    return summary


def collect_predictions(config: TrainConfig, cohort: TrainingCohort, run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """OOF table (one row per training-pool patient, with its training label) and test ensemble table."""
    n_folds = len(cohort.splits.folds)
    columns = output_columns(config)
    oof = pd.concat([pd.read_csv(run_dir / f"fold_{k}" / "oof_predictions.csv", dtype={"subject_id": str})
                     for k in range(n_folds)], ignore_index=True)
    y = targets_of(cohort.train_labels, list(oof["subject_id"]))
    if y.ndim == 2:
        oof["time"], oof["event"] = y[:, 0], y[:, 1].astype(int)
    else:
        oof["target"] = y.astype(int)
    test = pd.DataFrame({"subject_id": list(cohort.test_ids)})
    if cohort.test_ids:
        per_fold = [pd.read_csv(run_dir / f"fold_{k}" / "test_predictions.csv", dtype={"subject_id": str})
                    for k in range(n_folds)]
        for column in columns:
            test[column] = np.mean([f[column].to_numpy() for f in per_fold], axis=0)
    return oof, test


def probability_logits(prob: np.ndarray) -> np.ndarray:
    """Logits whose softmax (``(n, K)``) or sigmoid (``(n,)``) gives ``prob`` back."""
    p = np.clip(np.asarray(prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) if p.ndim == 2 else np.log(p) - np.log1p(-p)


def calibrate(prob: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities (``(n, K)`` or ``(n,)``)."""
    from vbiopsy.train.posthoc import apply_temperature

    return apply_temperature(probability_logits(prob), temperature)


def fit_posthoc(config: TrainConfig, oof: pd.DataFrame) -> dict[str, Any]:
    """Decision rules and the calibration temperature, fitted on OOF predictions only."""
    from vbiopsy.evaluate.classification import youden_threshold
    from vbiopsy.train.posthoc import fit_class_scaling, fit_temperature

    if config.task == "survival_cox":
        risk = oof["risk"].to_numpy()
        return {"rule": "risk above the OOF median = high-risk group", "risk_cutoff": float(np.median(risk))}
    y = oof["target"].to_numpy()
    prob = oof[output_columns(config)].to_numpy()
    prob = prob if config.task == "grade" else prob[:, 0]
    calibration = {"temperature": float(fit_temperature(probability_logits(prob), y)),
                   "calibration": "temperature scaling of the fold models' probabilities, fitted on OOF"}
    if config.task == "grade":
        scaling = fit_class_scaling(y, prob)
        return {"rule": "scaled argmax (macro-F1 on OOF)", "class_scaling": [float(s) for s in scaling], **calibration}
    threshold, j = youden_threshold(y, prob)
    return {"rule": "p >= threshold (Youden J on OOF)", "threshold": float(threshold), "youden_j": float(j),
            **calibration}


def run_baseline(config: TrainConfig, cohort: TrainingCohort, run_dir: Path) -> dict[str, Any] | None:
    """Clinical-only model on the same patients, folds and label; OOF and test predictions written."""
    from vbiopsy.train.baseline import clinical_baseline

    pool = [s for fold in cohort.splits.folds for s in fold.val]
    index = {s: i for i, s in enumerate(pool)}
    folds = [(np.array([index[s] for s in fold.train]), np.array([index[s] for s in fold.val]))
             for fold in cohort.splits.folds]
    result = clinical_baseline(cohort.frame(pool), targets_of(cohort.train_labels, pool), cohort.frame(cohort.test_ids),
                               folds=folds, kind="cox" if config.task == "survival_cox" else "logistic",
                               columns=output_columns(config))
    return result.save(run_dir / "baseline")


def run_cross_validation(config: TrainConfig, out: str | Path, *, progress: Any = None, resume: bool = True) -> Path:
    """Train every fold, then write OOF/test predictions, post-hoc rules and the baseline. Returns the run folder.

    ``resume``: continue what a killed run of the same config left in ``out`` (see :func:`run_fold`);
    the caller checks the folder first (:func:`vbiopsy.train.resume.check_run_folder`). Under DDP
    (``optim.devices`` > 1) every process runs this function; ranks other than 0 train and write nothing.
    """
    main = global_rank() == 0  # under DDP every process runs this; only rank 0 writes
    started = time.perf_counter()
    with removed_if_refused(out) as run_dir:  # a refused cohort or splits file leaves no run folder
        if main:
            save_config(config, run_dir / "config.yaml")
        cohort = prepare_cohort(config, run_dir)
    n_folds = len(cohort.splits.folds)
    folds = []
    for k in range(n_folds):
        folds.append(run_fold(config, cohort, k, run_dir, resume=resume))
        if progress is not None:
            progress(k + 1, n_folds)
    if not main:
        return run_dir
    oof, test = collect_predictions(config, cohort, run_dir)
    _frame_csv(oof, run_dir / "oof_predictions.csv")
    _frame_csv(test, run_dir / "test_predictions.csv")
    posthoc = fit_posthoc(config, oof)
    write_text_atomic(run_dir / "posthoc.json", json.dumps(posthoc, indent=1) + "\n")
    baseline = run_baseline(config, cohort, run_dir) if config.baseline else None
    info = {"vbiopsy": __version__, "task": config.task, "n_train_pool": len(oof), "n_test": len(test),
            "excluded": cohort.train_labels.excluded, "folds": folds, "baseline": baseline,
            "seconds": round(time.perf_counter() - started, 1)}
    write_text_atomic(run_dir / "run.json", json.dumps(info, indent=1, default=str) + "\n")
    return run_dir
