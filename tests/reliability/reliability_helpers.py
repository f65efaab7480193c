"""Shared pieces of the reliability tests: a tiny phantom cohort and config, the real CLI in a
subprocess, and tiny in-process ASLNet fits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import yaml

from vbiopsy import __version__
from vbiopsy.data.roi_cubes import extract_cube
from vbiopsy.tasks.aslnet import AslNetTask
from vbiopsy.train.config import TrainConfig
from vbiopsy.train.cross_validation import build_model
from vbiopsy.train.dataset import CubeDataset

RESULT_FILES = ("metrics.json", "oof_predictions.csv", "test_predictions.csv", "posthoc.json",
                "baseline/test_predictions.csv", "fold_0/history.csv", "fold_1/history.csv")
"""What a resumed or repeated run must reproduce byte for byte."""

TINY: dict[str, Any] = {
    "model": {"base_width": 4, "blocks": [1, 1], "gn_groups": 4, "dropout": 0.1, "film_hidden": 8,
              "tabular_hidden": 8},
    "optim": {"max_epochs": 5, "batch_size": 4, "lr": 3e-3, "early_stopping_patience": 5, "precision": "32",
              "seed": 0},
    "augment": {"rotate_prob": 0.5, "elastic_prob": 0.5},
    "explain": {"enabled": False},
}


def phantom_cohort(root: Path) -> Path:
    """16 glioma phantoms at 6 mm (UCSF-PDGM layout, ~3 s)."""
    from vbiopsy.data.phantoms import PhantomConfig, generate_cohort

    generate_cohort(PhantomConfig(n_patients=16, spacing_mm=6.0, diagnosis_mix={"glioma": 1.0}, seed=3), root)
    return root


def write_config(path: Path, cohort: Path, task: str = "survival", **optim: Any) -> Path:
    """A tiny 2-fold config for ``cohort`` (ROI on the segmentation, 36 mm cube)."""
    config = {"task": task, "data": {"cohort": str(cohort), "folds": 2, "test_fraction": 0.25,
                                     "rare_classes": "train", "roi": {"centre": "seg", "side_mm": 36}},
              **TINY, "optim": {**TINY["optim"], **optim}}
    path.write_text(yaml.safe_dump(config))
    return path


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "vbiopsy.cli", *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``vbiopsy ARGS`` in a fresh Python process."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, env=ENV, timeout=timeout)


def watch(args: list[str], ready: Callable[[], bool], *, kill_after: float | None = None,
          timeout: float = 300) -> tuple[int, float]:
    """Start ``vbiopsy ARGS``; once ``ready()`` holds (polled every 2 ms), send SIGKILL ``kill_after``
    seconds later (``None``: let it finish). Returns the exit status (``-9`` when killed) and the
    seconds from ``ready`` to the end."""
    process = subprocess.Popen(cli_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"stage never reached: {args}")
            time.sleep(0.002)
        seen = time.monotonic()
        if kill_after is not None:
            while process.poll() is None and time.monotonic() < seen + kill_after:
                time.sleep(0.002)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
        status = process.wait(timeout=timeout)
        return status, time.monotonic() - seen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def same_files(run: Path, reference: Path, names: tuple[str, ...] = RESULT_FILES) -> list[str]:
    """Names of the files that differ (or are missing) between two runs."""
    return [n for n in names if not (run / n).is_file() or (run / n).read_bytes() != (reference / n).read_bytes()]


def tiny_cubes(root: Path, n: int = 8, shape: tuple[int, int, int] = (14, 14, 14)) -> list:
    """``n`` ROI cubes cut from synthetic perfusion volumes (2 mm), half with a hot 'tumour'."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij"))
    brain = ((grid - 6.5) ** 2).sum(0) < 36
    cubes = []
    for i in range(n):
        image = np.where(brain, 40 + 5 * rng.standard_normal(shape), 0) + (60 * (i % 2)) * (((grid - 7) ** 2).sum(0) < 6)
        path = root / f"p{i}.nii.gz"
        nib.save(nib.Nifti1Image(image.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
        cubes.append(extract_cube(path, side_mm=12, out_shape=(6, 6, 6)))
    return cubes


def tiny_task(root: Path, task: str = "grade", **optim: Any) -> tuple[TrainConfig, Callable[[], AslNetTask]]:
    """A tiny grade/survival config and a factory of fresh (randomly initialised) modules for it."""
    config = TrainConfig.model_validate({"task": task, "data": {"cohort": str(root)}, **TINY,
                                         "optim": {**TINY["optim"], **optim}})

    def make() -> AslNetTask:
        return AslNetTask(build_model(config), task=config.task, optim=config.optim, uses_tabular=config.uses_tabular)

    return config, make


def tiny_datasets(cubes: list, config: TrainConfig, seed: int = 0) -> tuple[CubeDataset, CubeDataset]:
    """Training (augmented) and validation datasets with alternating grade labels 0/2 (survival: 0/1)."""
    high = 2 if config.task == "grade" else 1
    y = np.array([high * (i % 2) for i in range(len(cubes))])
    y = y if config.task == "grade" else y.astype(np.float32)
    tab = np.zeros((len(cubes), 3), dtype=np.float32) if config.uses_tabular else None
    train = CubeDataset(cubes, targets=y, tabular=tab, augment=config.augment, seed=seed)
    val = CubeDataset(cubes, targets=y, tabular=tab)
    return train, val


def trained_looking_run(root: Path, task: str) -> tuple[Path, TrainConfig]:
    """A finished-run folder (config, run.json, 2 fold checkpoints with metadata) holding randomly
    initialised tiny ASLNet models: what ``vbiopsy export`` reads, without training."""
    import json

    import pandas as pd

    from vbiopsy.config import save_config
    from vbiopsy.train.checkpoint import save_checkpoint
    from vbiopsy.train.cross_validation import output_columns
    from vbiopsy.train.tabular import TabularEncoding

    config, _ = tiny_task(root, task=task)
    run = root / f"run_{task}"
    run.mkdir(parents=True)
    save_config(config, run / "config.yaml")
    (run / "run.json").write_text(json.dumps({"task": task}))
    clinical = pd.DataFrame({"subject_id": ["a", "b", "c", "d"], "age": [40.0, 60.0, 75.0, None], "sex": ["M", "F", "F", "M"],
                             "eor": ["GTR", "STR", "biopsy", "GTR"]})
    encoding = TabularEncoding.fit(clinical) if config.uses_tabular else None
    for fold in range(2):
        torch.manual_seed(fold)
        model = build_model(config)
        if encoding is not None:
            model.tabular.set_normalisation(encoding.mean, encoding.std)
        (run / f"fold_{fold}").mkdir()
        save_checkpoint(run / f"fold_{fold}" / "model.safetensors", model.state_dict(), {
            "task": task, "fold": fold, "model": config.model.model_dump(mode="json"), "input_shape": [4, 6, 6, 6],
            "dropout": config.dropout, "classes": output_columns(config), "modality": "asl",
            "roi": config.data.roi.model_dump(mode="json"), "spacing_mm": [2.0, 2.0, 2.0],
            "tabular": encoding.to_dict() if encoding is not None else None, "vbiopsy": __version__})
    return run, config
