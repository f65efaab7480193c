"""What ``vbiopsy train`` and ``vbiopsy evaluate`` do: load the config, run, print where things are."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vbiopsy.config import build_config, deep_merge, read_yaml
from vbiopsy.errors import InputError
from vbiopsy.train.config import TrainConfig
from vbiopsy.train.profile_config import ProfileConfig

AnyConfig = TrainConfig | ProfileConfig
PATH_KEYS = ("cohort", "clinical", "splits")


def bundled_config(name: str) -> Path:
    """Path of a config shipped with the package (``aslnet-grade.yaml``, ``aslnet-survival-demo.yaml``, …)."""
    from importlib.resources import files

    path = Path(str(files("vbiopsy") / "configs" / name))
    if not path.is_file():
        raise InputError(name, "no such bundled config")
    return path


def load_train_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> AnyConfig:
    """A :class:`TrainConfig` (ASLNet tasks) or :class:`ProfileConfig` (``task: profile``, MGMT-Net) from YAML (relative data paths are relative to the YAML's folder) plus
    nested ``overrides`` (e.g. ``{"data": {"cohort": ...}}`` from the command line)."""
    data: dict[str, Any] = {}
    source = "options"
    if path is not None:
        path = Path(path)
        data = read_yaml(path)
        source = str(path)
        section = data.get("data")
        if isinstance(section, dict):
            for key in PATH_KEYS:
                value = section.get(key)
                if isinstance(value, str) and value and not Path(value).is_absolute():
                    section[key] = str((path.parent / value).resolve())
    data = deep_merge(data, overrides or {})
    return build_config(ProfileConfig if data.get("task") == "profile" else TrainConfig, data, source)


def train(config: AnyConfig, out: Path, *, evaluate: bool = True) -> Path:
    """Cross-validate, then (by default) evaluate on the held-out test set; print the outputs."""
    from vbiopsy.commands import progress_bar, say
    from vbiopsy.train.cross_validation import run_cross_validation
    from vbiopsy.train.profile_run import run_profile

    if out.exists() and (out / "run.json").exists():
        raise InputError(out, "already holds a finished run; choose another --out or delete it")
    started = time.perf_counter()
    runner = run_profile if isinstance(config, ProfileConfig) else run_cross_validation
    with progress_bar(f"training {config.task} (folds)") as update:
        run_dir = runner(config, out, progress=update)  # type: ignore[arg-type]
    say(f"trained {len(list(run_dir.glob('fold_*')))} folds in {time.perf_counter() - started:.0f} s")
    if evaluate:
        evaluate_run(run_dir)
    if isinstance(config, TrainConfig) and config.explain.enabled:
        from vbiopsy.train.explain_run import explain_run

        print(f"explanations: {explain_run(config, run_dir)}")
    print(f"run: {run_dir}")
    return run_dir


def evaluate_run(run_dir: Path) -> Path:
    """Final evaluation of a finished run (reads the test labels; never trains)."""
    from vbiopsy.train.evaluation import evaluate
    from vbiopsy.train.profile_evaluation import evaluate_profile

    config = load_run_config(run_dir)
    metrics_path = evaluate_profile(config, run_dir) if isinstance(config, ProfileConfig) else evaluate(config, run_dir)
    print(f"metrics: {metrics_path}")
    return metrics_path


def load_run_config(run_dir: Path) -> AnyConfig:
    """The resolved config of a finished run (refuses a folder that is not one)."""
    if not (run_dir / "run.json").is_file():
        raise InputError(run_dir, "not a finished training run (no run.json)")
    return load_train_config(run_dir / "config.yaml")
