"""Shared pieces of the MGMT-Net (``task: profile``) and Adaptive-Diagnoser (``task: diagnosis``) reliability
tests: tiny phantom cohorts and configs (the sizes of ``tests/profile`` and ``tests/diagnose``), a simulated
crash right after a chosen epoch-state save, byte comparison of run outputs, and finished-looking runs
holding randomly initialised fold models (what ``vbiopsy export`` reads, without training)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from vbiopsy.config import save_config
from vbiopsy.data.schema import DIAGNOSES
from vbiopsy.train.checkpoint import save_checkpoint
from vbiopsy.train.resume import EpochCheckpoints
from vbiopsy.train.run import load_train_config

PROFILE_TINY: dict[str, Any] = {
    "task": "profile",
    "data": {"spacing_mm": 4.0, "folds": 2, "test_fraction": 0.25},
    "model": {"width": 4, "stages": 2, "window_size": 2, "swin_heads": 1, "head_hidden": 8},
    "augment": {"patch": [16, 16, 16]},
    "optim": {"max_epochs": 2, "batch_size": 2, "validate_every": 1, "lr": 1e-3},
    "inference": {"roi": [48, 48, 48], "overlap": 0.0, "min_component_ml": 0.0},
}
"""MGMT-Net, 2 folds × 2 epochs on 8 phantoms at 4 mm (as ``tests/profile``)."""

DIAGNOSIS_TINY: dict[str, Any] = {
    "task": "diagnosis",
    "data": {"folds": 2, "test_fraction": 0.25, "working_shape": [16, 16, 16], "early_stopping_fraction": 0.0,
             "localizer": {"require_lesion": False, "refine": {"steps": 20}}},
    "model": {"backbone_options": {"width": "tiny"}},
    "optim": {"max_epochs": 3, "precision": "32", "lr": 1e-3, "seed": 0},
    "explain": {"enabled": False},
}
"""The paper's Adaptive-Diagnoser (refined prior, MCA), tiny DenseNet, 2 folds × 3 epochs on a 16³ grid."""

PROFILE_RESULTS = ("metrics.json", "test/predictions.csv", "fold_0/oof/predictions.csv", "fold_1/oof/predictions.csv",
                   "fold_0/history.csv", "fold_1/history.csv")
DIAGNOSIS_RESULTS = ("metrics.json", "oof_predictions.csv", "test_predictions.csv", "fold_0/history.csv",
                     "fold_1/history.csv", "fold_1/test_predictions.csv")
"""What a resumed run must reproduce byte for byte."""


def profile_cohort(root: Path) -> Path:
    """8 glioma phantoms at 4 mm (UCSF-PDGM layout)."""
    from vbiopsy.data.phantoms import PhantomConfig, generate_cohort

    generate_cohort(PhantomConfig(n_patients=8, spacing_mm=4.0, diagnosis_mix={"glioma": 1.0}, seed=3), root)
    return root


def diagnosis_cohort(root: Path) -> Path:
    """12 phantoms, 3 per tumour type, on a 32 × 36 × 32 grid."""
    from vbiopsy.data.phantoms import PhantomConfig, generate_cohort

    generate_cohort(PhantomConfig(n_patients=12, shape=(32, 36, 32), seed=20,
                                  diagnosis_mix={d: 0.25 for d in DIAGNOSES}), root)
    return root


def write_task_config(path: Path, base: dict[str, Any], cohort: Path, **sections: dict[str, Any]) -> Path:
    """``base`` with ``data.cohort`` set and ``sections`` merged key by key, as YAML."""
    config = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    config["data"] = {**config["data"], "cohort": str(cohort)}
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    path.write_text(yaml.safe_dump(config))
    return path


class SimulatedKill(Exception):
    """Raised right after an epoch state was written: the process 'dies' with that state on disk."""


def reference_run(factory: pytest.TempPathFactory, name: str, base: dict[str, Any],
                  make_cohort: Callable[[Path], Path]) -> tuple[Path, Path]:
    """(config YAML, an uninterrupted run of it) for the task config ``base`` on ``make_cohort``'s cohort."""
    from vbiopsy.train.resume import train_command

    torch.set_num_threads(1)
    root = factory.mktemp(f"{name}_resume")
    config = write_task_config(root / f"{name}.yaml", base, make_cohort(root / "cohort"))
    run = train_command(load_train_config(config), root / "reference")
    assert (run / "metrics.json").is_file()
    return config, run


def interrupt(config: Any, run: Path, monkeypatch: pytest.MonkeyPatch, saves: int) -> list[int]:
    """Train ``config`` into ``run`` and stop it (as a kill would) right after its ``saves``-th epoch state."""
    from vbiopsy.train.resume import train_command

    saved = crash_after_saves(monkeypatch, saves=saves)
    with pytest.raises(SimulatedKill):
        train_command(config, run)
    monkeypatch.undo()
    assert not (run / "run.json").exists()
    return saved


def check_resumed(config: Any, run: Path, reference: Path, results: tuple[str, ...], resumed_from: int) -> None:
    """Resume ``run`` and check it ends as ``reference`` did, with fold 0 kept and fold 1 continued."""
    from vbiopsy.train.resume import FOLD_DONE, TRAINING_STATE, train_command

    stamp = (run / "fold_0" / FOLD_DONE).stat().st_mtime_ns
    train_command(config, run, resume=True)
    assert different_files(run, reference, results) == []
    assert (run / "fold_0" / FOLD_DONE).stat().st_mtime_ns == stamp  # the finished fold was kept
    assert json.loads((run / "fold_1" / "fit.json").read_text())["resumed_from"] == resumed_from
    assert json.loads((reference / "fold_1" / "fit.json").read_text())["resumed_from"] is None
    assert not list(run.glob(f"fold_*/{TRAINING_STATE}"))  # states dropped once the folds are done


def kill_9_then_resume(config: Path, reference: Path, run: Path, results: tuple[str, ...]) -> int:
    """Start a real ``vbiopsy train``, SIGKILL it once fold 1 has an epoch state, resume it with ``--resume``;
    check it ends as ``reference`` did and return the epoch fold 1 resumed from."""
    import signal

    from reliability_helpers import run_cli, watch

    from vbiopsy.train.resume import FOLD_DONE, TRAINING_STATE

    status, _ = watch(["train", str(config), "--out", str(run)], lambda: (run / "fold_1" / TRAINING_STATE).is_file(),
                      kill_after=0.0)
    assert status == -signal.SIGKILL, f"the process finished before the kill ({status})"
    assert (run / "fold_0" / FOLD_DONE).is_file() and not (run / "metrics.json").exists()
    resumed = run_cli("train", str(config), "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert different_files(run, reference, results) == []
    return int(json.loads((run / "fold_1" / "fit.json").read_text())["resumed_from"])


def crash_after_saves(monkeypatch: pytest.MonkeyPatch, saves: int) -> list[int]:
    """Make the ``saves``-th epoch-state save of this process raise :class:`SimulatedKill` once its file is
    written (every save before it goes through); returns the epochs saved so far."""
    real = EpochCheckpoints.save
    saved: list[int] = []

    def save(self: EpochCheckpoints, state: dict[str, Any]) -> Path:
        path = real(self, state)
        saved.append(int(state["epoch"]))
        if len(saved) == saves:
            raise SimulatedKill(f"killed after saving epoch {state['epoch']} of {self.identity}")
        return path

    monkeypatch.setattr(EpochCheckpoints, "save", save)
    return saved


def different_files(run: Path, reference: Path, names: tuple[str, ...]) -> list[str]:
    """Names of the files that differ (or are missing) between two runs."""
    return [n for n in names if not (run / n).is_file() or (run / n).read_bytes() != (reference / n).read_bytes()]


def finished_looking_run(root: Path, base: dict[str, Any], **sections: dict[str, Any]) -> tuple[Path, Any, list]:
    """A finished-run folder (config.yaml, run.json, 2 fold checkpoints) of randomly initialised models of
    ``base``'s task: ``(run folder, config, [fold models])``."""
    from vbiopsy import __version__

    run = root / f"run_{base['task']}"
    run.mkdir(parents=True)
    config = load_train_config(write_task_config(root / f"{base['task']}.yaml", base, root / "cohort", **sections))
    save_config(config, run / "config.yaml")
    (run / "run.json").write_text(json.dumps({"task": config.task}))
    models = []
    for fold in range(2):
        torch.manual_seed(fold)
        if config.task == "profile":
            from vbiopsy.train.profile_run import build_mgmtnet, model_metadata

            model, metadata = build_mgmtnet(config), model_metadata(config, fold)
        else:
            from vbiopsy.train.diagnosis_run import build_model

            model = build_model(config)
            metadata = {"task": "diagnosis", "fold": fold, "classes": list(DIAGNOSES),
                        "model": config.model.model_dump(mode="json"), "vbiopsy": __version__}
        (run / f"fold_{fold}").mkdir()
        save_checkpoint(run / f"fold_{fold}" / "model.safetensors", model.state_dict(), metadata)
        models.append(model.eval())
    return run, config, models
