"""What ``vbiopsy train`` and ``vbiopsy evaluate`` do: load the config, run, print where things are."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vbiopsy.config import build_config, read_run_yaml
from vbiopsy.errors import InputError
from vbiopsy.train.config import TrainConfig
from vbiopsy.train.diagnosis_config import DiagnosisConfig
from vbiopsy.train.profile_config import ProfileConfig

AnyConfig = TrainConfig | ProfileConfig | DiagnosisConfig
CONFIG_CLASSES: dict[str, type[ProfileConfig] | type[DiagnosisConfig]] = {"profile": ProfileConfig,
                                                                          "diagnosis": DiagnosisConfig}
"""``task`` → config class for the MGMT-Net and Adaptive-Diagnoser tasks; every other task is ASLNet's."""


def bundled_config(name: str) -> Path:
    """Path of a config shipped with the package (``aslnet-grade.yaml``, ``aslnet-survival-demo.yaml``, …)."""
    from importlib.resources import files

    path = Path(str(files("vbiopsy") / "configs" / name))
    if not path.is_file():
        raise InputError(name, "no such bundled config")
    return path


def load_train_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> AnyConfig:
    """The config of any task from YAML (relative data paths are relative to the YAML's folder) plus nested
    ``overrides`` (e.g. ``{"data": {"cohort": ...}}`` from the command line): :class:`ProfileConfig` for
    ``task: profile`` (MGMT-Net), :class:`DiagnosisConfig` for ``task: diagnosis`` (Adaptive-Diagnoser),
    :class:`TrainConfig` otherwise (ASLNet grade / survival)."""
    data = read_run_yaml(path, overrides)
    model = CONFIG_CLASSES.get(data.get("task"), TrainConfig)  # type: ignore[arg-type]
    return build_config(model, data, str(path) if path is not None else "options")  # type: ignore[return-value]


def train(config: AnyConfig, out: Path, *, evaluate: bool = True) -> Path:
    """Cross-validate, then (by default) evaluate on the held-out test set; print the outputs."""
    from vbiopsy.commands import progress_bar, say
    from vbiopsy.train.cross_validation import run_cross_validation
    from vbiopsy.train.profile_run import run_profile

    if isinstance(config, DiagnosisConfig):
        from vbiopsy.train.diagnosis_run import train_diagnoser

        return train_diagnoser(config, out, evaluate=evaluate)
    if out.exists() and (out / "run.json").exists():
        raise InputError(out, "already holds a finished run; choose another --out or delete it")
    started = time.perf_counter()
    runner = run_profile if isinstance(config, ProfileConfig) else run_cross_validation
    with progress_bar(f"training {config.task} (folds)") as update:
        run_dir = runner(config, out, progress=update)  # type: ignore[arg-type]
    say(f"trained {len(list(run_dir.glob('fold_*')))} folds in {time.perf_counter() - started:.0f} s")
    if isinstance(config, TrainConfig):  # evaluation + explanations, shared with a resumed run
        from vbiopsy.train.resume import finish_run

        return finish_run(config, run_dir, evaluate=evaluate)
    if evaluate:
        evaluate_run(run_dir)
    print(f"run: {run_dir}")
    return run_dir


def evaluate_run(run_dir: Path) -> Path:
    """Final evaluation of a finished run (reads the test labels; never trains)."""
    from vbiopsy.train.evaluation import evaluate
    from vbiopsy.train.profile_evaluation import evaluate_profile

    config = load_run_config(run_dir)
    if isinstance(config, DiagnosisConfig):
        from vbiopsy.train.diagnosis_run import evaluate_diagnosis

        evaluate_diagnosis(run_dir)
        metrics_path = run_dir / "metrics.json"
    else:
        metrics_path = evaluate_profile(config, run_dir) if isinstance(config, ProfileConfig) else evaluate(config, run_dir)
    print(f"metrics: {metrics_path}")
    return metrics_path


def load_run_config(run_dir: Path) -> AnyConfig:
    """The resolved config of a finished run (refuses a folder that is not one)."""
    if not (run_dir / "run.json").is_file():
        raise InputError(run_dir, "not a finished training run (no run.json)")
    return load_train_config(run_dir / "config.yaml")
