"""Optuna search over the reference code's space, scored on out-of-fold predictions only.

Every trial trains the full cross-validation on the *same* split (written once) and is scored by
the OOF AUC (grade: macro one-vs-rest; survival: binary; Cox: C-index). Test predictions are
written by each trial but no test label is read: the final evaluation is for the chosen config
(``vbiopsy train best_config.yaml``), once. The reference code evaluated the test set in every
trial (``aslnet-reference-code-notes.md`` §8.3). A study can be shared by several machines through
Optuna's RDB storage (``--storage sqlite:///study.db`` or a PostgreSQL URL).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from vbiopsy.atomic import ensure_writable_dir, write_text_atomic
from vbiopsy.config import build_config, deep_merge, save_config
from vbiopsy.errors import ConfigError
from vbiopsy.tasks.aslnet import validation_score
from vbiopsy.train.config import TrainConfig

Space = Literal["reference", "small"]
WEIGHT_DECAYS = (0.0, 1e-7, 3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4)


def sample_overrides(trial: Any, task: str, space: Space = "reference") -> dict[str, Any]:
    """Config overrides drawn for ``trial`` (reference code §4.4; ``small`` shrinks the widths for CPUs)."""
    widths = (16, 24, 32, 48) if space == "reference" else (4, 8, 12)
    model: dict[str, Any] = {
        "base_width": trial.suggest_categorical("base_width", widths),
        "gn_groups": trial.suggest_categorical("gn_groups", (4, 8, 16, 32) if space == "reference" else (2, 4)),
        "dropout": trial.suggest_categorical("dropout", (0.0, 0.1, 0.2, 0.3, 0.4)),
    }
    if space == "reference":
        bottleneck = trial.suggest_categorical("bottleneck", (False, True))
        model["block"] = "bottleneck" if bottleneck else "basic"
        model["blocks"] = [3, 4, 6, 3] if bottleneck else [2, 2, 2, 2]
    optim: dict[str, Any] = {
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "weight_decay": trial.suggest_categorical("weight_decay", WEIGHT_DECAYS),
        "early_stopping_patience": trial.suggest_int("early_stopping_patience", 10, 22),
        "lr_plateau_patience": trial.suggest_int("lr_plateau_patience", 2, 5),
    }
    if task == "grade":
        optim["label_smoothing"] = trial.suggest_float("label_smoothing", 0.0, 0.12)
    else:
        model["film_hidden"] = trial.suggest_categorical("film_hidden", (64, 128))
        model["film_dropout"] = trial.suggest_categorical("film_dropout", (0.0, 0.1, 0.2))
    return {"model": model, "optim": optim}


def oof_score(config: TrainConfig, run_dir: Path) -> float:
    """The monitored metric on a run's out-of-fold predictions (training-pool labels only)."""
    from vbiopsy.train.cross_validation import output_columns

    oof = pd.read_csv(run_dir / "oof_predictions.csv", dtype={"subject_id": str})
    values = oof[output_columns(config)].to_numpy()
    if config.task == "survival_cox":
        return validation_score(config.task, oof[["time", "event"]].to_numpy(), values[:, 0])
    return validation_score(config.task, oof["target"].to_numpy(), values if config.task == "grade" else values[:, 0])


def tune(config: TrainConfig, out: str | Path, *, n_trials: int, space: Space = "reference",
         storage: str | None = None, study_name: str = "vbiopsy", seed: int = 0) -> Path:
    """Run ``n_trials`` trials into ``out/trial_NNNN``; write ``best_config.yaml`` and ``trials.csv``."""
    import optuna

    from vbiopsy.train.cohort import make_or_load_splits
    from vbiopsy.train.cross_validation import run_cross_validation

    if n_trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {n_trials}")
    if space not in ("reference", "small"):
        raise ConfigError(f"--space must be 'reference' or 'small', got {space!r}")
    root = ensure_writable_dir(out)
    if config.data.splits is None:  # one split for every trial, so trials are comparable
        from vbiopsy.data.layouts import read_cohort

        manifest = read_cohort(config.data.cohort, layout=config.data.layout, clinical=config.data.clinical)
        make_or_load_splits(config, manifest, root)
        config = config.model_copy(update={"data": config.data.model_copy(update={"splits": root / "splits.json"})})
    base = config.model_dump(mode="json")
    base["explain"] = {**base["explain"], "enabled": False}

    def objective(trial: optuna.Trial) -> float:
        data = deep_merge(base, sample_overrides(trial, config.task, space))
        trial_config = build_config(TrainConfig, data, f"trial {trial.number}")
        run_dir = root / f"trial_{trial.number:04d}"
        run_cross_validation(trial_config, run_dir)
        score = oof_score(trial_config, run_dir)
        trial.set_user_attr("run_dir", str(run_dir))
        return score if np.isfinite(score) else 0.0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", sampler=sampler,
                                load_if_exists=storage is not None)
    study.optimize(objective, n_trials=n_trials)
    frame = study.trials_dataframe()
    write_text_atomic(root / "trials.csv", frame.to_csv(index=False))
    best = build_config(TrainConfig, deep_merge(base, sample_overrides(
        optuna.trial.FixedTrial(study.best_params), config.task, space)), "best trial")
    save_config(best.model_copy(update={"explain": config.explain}), root / "best_config.yaml")
    summary = {"best_trial": study.best_trial.number, "best_oof_score": study.best_value,
               "best_params": study.best_params, "objective": "OOF score (no test label read)",
               "n_trials": len(study.trials)}
    return write_text_atomic(root / "tune.json", json.dumps(summary, indent=1, default=str) + "\n")
