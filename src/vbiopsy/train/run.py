"""What ``vbiopsy train`` and ``vbiopsy evaluate`` do: load the config, run, print where things are."""

from __future__ import annotations

import time
from collections.abc import Callable
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


def _runner(config: AnyConfig) -> tuple[Callable[..., Path], str]:
    """The cross-validation runner of ``config``'s task (``runner(config, out, progress=, resume=)``) and its label."""
    if isinstance(config, DiagnosisConfig):
        from vbiopsy.train.diagnosis_run import run_cross_validation as run_diagnosis

        return run_diagnosis, "training the Adaptive-Diagnoser (folds)"
    if isinstance(config, ProfileConfig):
        from vbiopsy.train.profile_run import run_profile

        return run_profile, "training MGMT-Net (folds)"
    from vbiopsy.train.cross_validation import run_cross_validation

    return run_cross_validation, f"training {config.task} (folds)"


def train(config: AnyConfig, out: Path, *, evaluate: bool = True) -> Path:
    """Cross-validate (continuing what a killed run of the same config left in ``out``; the caller
    checks the folder first, see :func:`vbiopsy.train.resume.train_command`), then :func:`finish_run`."""
    from vbiopsy.commands import progress_bar, say

    out = Path(out)
    if (out / "run.json").exists():
        raise InputError(out, "already holds a finished run; choose another --out or delete it")
    started = time.perf_counter()
    runner, label = _runner(config)
    with progress_bar(label) as update:
        run_dir = runner(config, out, progress=update)
    say(f"trained {len(list(run_dir.glob('fold_*')))} folds in {time.perf_counter() - started:.0f} s")
    return finish_run(config, run_dir, evaluate=evaluate)


def finish_run(config: AnyConfig, run_dir: Path, *, evaluate: bool = True) -> Path:
    """The steps after cross-validation, also for a run whose training finished before it was interrupted:
    evaluation on the test set, then the task's explanations (ASLNet: IG + Shapley; diagnoser: Grad-CAM)."""
    if evaluate:
        evaluate_run(run_dir)
    if isinstance(config, TrainConfig) and config.explain.enabled:
        from vbiopsy.train.explain_run import explain_run

        print(f"explanations: {explain_run(config, run_dir)}")
    if isinstance(config, DiagnosisConfig) and config.explain.enabled and config.explain.max_patients:
        from vbiopsy.train.diagnosis_gradcam import gradcam_overlays

        print(f"grad-cam: {gradcam_overlays(run_dir)}")
    print(f"run: {run_dir}")
    return run_dir


def evaluate_run(run_dir: Path) -> Path:
    """Final evaluation of a finished run (reads the test labels; never trains)."""
    from vbiopsy.train.evaluation import evaluate
    from vbiopsy.train.profile_evaluation import evaluate_profile

    config = load_run_config(run_dir)
    if isinstance(config, DiagnosisConfig):
        from vbiopsy.commands import say
        from vbiopsy.train.diagnosis_run import evaluate_diagnosis, summary_row

        metrics = evaluate_diagnosis(run_dir)
        say(f"{config.data.folds}-fold " + ", ".join(f"{k} {v}" for k, v in summary_row(metrics).items()))
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
