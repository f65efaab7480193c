"""Tiny fake run folders for the report tests: predictions written by hand, metrics by the real evaluation.

A fake cohort (manifest CSV, 30 subjects, tiny NIfTI images and segmentations) stands in for the
data; each run folder holds what a pipeline writes (config, splits, run.json, prediction CSVs,
posthoc rules) and then the project's own evaluation writes ``metrics.json`` from them, so a report
is tested on exactly the JSON layout the pipelines produce — without training anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from vbiopsy.config import save_config
from vbiopsy.data.schema import DIAGNOSES
from vbiopsy.data.splits import Fold, Splits

N_SUBJECTS = 30
N_TEST = 10
SHAPE = (10, 12, 10)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def write_nifti(path: Path, data: np.ndarray) -> str:
    """``data`` as a NIfTI file at ``path`` on the 2 mm :data:`AFFINE` grid; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return str(path)


def tumour(shift: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """BraTS 2024 labels: oedema (2) box around an enhancing (3) box around a necrotic (1) core."""
    seg = np.zeros(shape, dtype=np.uint8)
    cx, cy, cz = (s // 2 for s in shape)
    cx += shift
    seg[cx - 3:cx + 3, cy - 3:cy + 3, cz - 3:cz + 3] = 2
    seg[cx - 2:cx + 2, cy - 2:cy + 2, cz - 2:cz + 2] = 3
    seg[cx - 1:cx + 1, cy - 1:cy + 1, cz - 1:cz + 1] = 1
    return seg


def write_cohort(root: Path, seed: int = 0) -> Path:
    """A manifest CSV with images, segmentations, clinical columns and every label; returns its path."""
    rng = np.random.default_rng(seed)
    rows = []
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij"))
    anatomy = (np.clip(1.3 - np.sqrt((grid ** 2).sum(0)), 0, None) * 100).astype(np.float32)
    for i in range(N_SUBJECTS):
        sid = f"S{i:03d}"
        images = {m: write_nifti(root / sid / f"{m}.nii.gz",
                                 anatomy * (1 + 0.1 * k) + rng.random(SHAPE).astype(np.float32))
                  for k, m in enumerate(("t1", "t1c", "t2", "flair", "asl"))}
        seg = write_nifti(root / sid / "seg.nii.gz", tumour(0))
        grade = (2, 3, 4)[i % 3]
        idh = int(i % 2 == 0)
        rows.append({"subject_id": sid, **images, "seg": seg, "seg_convention": "brats2024",
                     "age": 30 + i, "sex": "MF"[i % 2], "eor": ("GTR", "STR", "biopsy")[i % 3], "grade": grade,
                     "idh": idh, "codel_1p19q": int(idh and i % 4 == 0), "tert": int(i % 3 == 0),
                     "diagnosis": DIAGNOSES[i % 4], "os_days": float(150 + 50 * (i % 12)), "os_event": int(i % 4 != 1)})
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def subjects() -> tuple[list[str], list[str]]:
    """(test IDs, training-pool IDs)."""
    ids = [f"S{i:03d}" for i in range(N_SUBJECTS)]
    return ids[:N_TEST], ids[N_TEST:]


def write_splits(run: Path, n_folds: int = 2) -> Splits:
    """A leak-free split: the first N_TEST subjects held out, the rest in ``n_folds`` folds."""
    test, pool = subjects()
    vals = [pool[k::n_folds] for k in range(n_folds)]
    folds = tuple(Fold(tuple(s for s in pool if s not in set(v)), tuple(v)) for v in vals)
    splits = Splits(tuple(test), folds, {})
    splits.save(run / "splits.json")
    return splits


def _start_run(root: Path, cohort: Path, task: str, config_name: str,
               overrides: dict[str, Any] | None = None) -> tuple[Any, Path, Splits]:
    """A new run folder ``root/run-<task>`` as a pipeline starts it: the bundled config ``config_name`` on
    ``cohort`` (plus ``overrides``), the split and run.json. Returns (config, run folder, splits)."""
    from vbiopsy.train.run import bundled_config, load_train_config

    config = load_train_config(bundled_config(config_name), {**(overrides or {}), "data": {"cohort": str(cohort)}})
    run = root / f"run-{task}"
    run.mkdir(parents=True)
    save_config(config, run / "config.yaml")
    splits = write_splits(run)
    pool = [s for f in splits.folds for s in f.val]
    info = {"vbiopsy": "0.1.0", "task": task, "n_train_pool": len(pool), "n_test": len(splits.test),
            "excluded": {}, "folds": [], "seconds": 1.0, "samples_dir": str(run / "samples")}
    (run / "run.json").write_text(json.dumps(info))
    return config, run, splits


def _noisy_scores(y: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(n, K) probabilities that favour the true class, with noise (so AUCs are between 0.5 and 1)."""
    logits = rng.normal(size=(y.size, n_classes)) + 1.2 * np.eye(n_classes)[y]
    prob = np.exp(logits)
    return prob / prob.sum(axis=1, keepdims=True)


def aslnet_run(root: Path, cohort: Path, task: str, seed: int = 0) -> Path:
    """An evaluated ASLNet run of ``task`` (grade, survival, survival_cox) with a clinical baseline."""
    from vbiopsy.tasks.labels import task_labels
    from vbiopsy.train.cohort import label_options, label_task
    from vbiopsy.train.cross_validation import fit_posthoc, output_columns
    from vbiopsy.train.evaluation import evaluate

    name = "aslnet-grade-demo.yaml" if task == "grade" else "aslnet-survival-demo.yaml"
    config, run, splits = _start_run(root, cohort, task, name, {"task": task})
    rng = np.random.default_rng(seed)
    frame = pd.read_csv(cohort, dtype={"subject_id": str})
    labels = task_labels(frame, label_task(config), **label_options(config))
    y_of = dict(zip(labels.subject_ids, labels.y))
    columns = output_columns(config)

    def outputs(ids: list[str]) -> np.ndarray:
        y = np.array([y_of[s] for s in ids])
        if task == "grade":
            return _noisy_scores((y - 0).astype(int), 3, rng)
        if task == "survival":
            return np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, y.size), 0.02, 0.98)[:, None]
        return (-np.log(y[:, 0]) + rng.normal(0, 0.5, len(ids)))[:, None]

    pool = [s for f in splits.folds for s in f.val if s in y_of]
    oof = pd.DataFrame(outputs(pool), columns=columns)
    oof.insert(0, "fold", [k for k, f in enumerate(splits.folds) for s in f.val if s in y_of])
    oof.insert(0, "subject_id", pool)
    y_pool = np.array([y_of[s] for s in pool])
    if task == "survival_cox":
        oof["time"], oof["event"] = y_pool[:, 0], y_pool[:, 1].astype(int)
    else:
        oof["target"] = y_pool.astype(int)
    oof.to_csv(run / "oof_predictions.csv", index=False)
    test_ids = [s for s in splits.test if s in y_of]
    test = pd.DataFrame(outputs(test_ids), columns=columns)
    test.insert(0, "subject_id", test_ids)
    test.to_csv(run / "test_predictions.csv", index=False)
    base = pd.DataFrame(outputs(test_ids), columns=columns)
    base.insert(0, "subject_id", test_ids)
    (run / "baseline").mkdir()
    base.to_csv(run / "baseline" / "test_predictions.csv", index=False)
    (run / "posthoc.json").write_text(json.dumps(fit_posthoc(config, oof)))
    explain = run / "explain"
    explain.mkdir()
    players = ("raw", "zg", "zl", "log") + (("age", "sex", "eor") if task != "grade" else ())
    shares = rng.dirichlet(np.ones(len(players)))
    (explain / "summary.json").write_text(json.dumps({
        "method": {"shapley": "exact"}, "n_patients": 3, "mean_share": dict(zip(players, shares.tolist())),
        "std_share": dict(zip(players, (shares / 4).tolist()))}))
    evaluate(config, run)
    return run


def profile_run(root: Path, cohort: Path, seed: int = 0) -> Path:
    """An evaluated MGMT-Net run: segmentations shifted by 0–2 voxels, noisy marker probabilities."""
    from vbiopsy.train.profile_evaluation import evaluate_profile

    config, run, splits = _start_run(root, cohort, "profile", "mgmtnet-demo.yaml")
    rng = np.random.default_rng(seed)
    frame = pd.read_csv(cohort, dtype={"subject_id": str}).set_index("subject_id")

    def write(folder: Path, ids: list[str], extra: dict) -> None:
        rows = []
        for i, sid in enumerate(ids):
            write_nifti(folder / "seg" / f"{sid}.nii.gz", tumour(i % 3))
            row = {"subject_id": sid, **extra}
            for marker in config.data.markers:
                row[f"p_{marker}"] = float(np.clip(0.5 + 0.3 * (frame.loc[sid, marker] - 0.5) + rng.normal(0, 0.2),
                                                   0.01, 0.99))
            row["missing_modalities"] = ""
            row.update({f"cmaf_{m}": 0.25 for m in config.data.modalities})
            rows.append(row)
        pd.DataFrame(rows).to_csv(folder / "predictions.csv", index=False)

    for k, fold in enumerate(splits.folds):
        write(run / f"fold_{k}" / "oof", list(fold.val), {"fold": k})
    write(run / "test", list(splits.test), {})
    evaluate_profile(config, run)
    return run


def diagnosis_run(root: Path, cohort: Path, seed: int = 0) -> Path:
    """An evaluated Adaptive-Diagnoser run (2 folds, held-out test set)."""
    from vbiopsy.train.diagnosis_run import COLUMNS, evaluate_diagnosis

    _, run, splits = _start_run(root, cohort, "diagnosis", "diagnoser-demo.yaml")
    rng = np.random.default_rng(seed)
    truth = pd.read_csv(cohort, dtype={"subject_id": str}).set_index("subject_id")["diagnosis"]
    pool = [s for f in splits.folds for s in f.val]
    y = np.array([DIAGNOSES.index(truth[s]) for s in pool])
    oof = pd.DataFrame(_noisy_scores(y, len(DIAGNOSES), rng), columns=COLUMNS)
    oof.insert(0, "fold", [k for k, f in enumerate(splits.folds) for _ in f.val])
    oof.insert(0, "subject_id", pool)
    oof["target"] = y
    oof.to_csv(run / "oof_predictions.csv", index=False)
    y_test = np.array([DIAGNOSES.index(truth[s]) for s in splits.test])
    test = pd.DataFrame(_noisy_scores(y_test, len(DIAGNOSES), rng), columns=COLUMNS)
    test.insert(0, "subject_id", list(splits.test))
    test.to_csv(run / "test_predictions.csv", index=False)
    evaluate_diagnosis(run)
    return run
