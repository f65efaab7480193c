"""Resuming a training run after a crash or ``kill -9`` (``vbiopsy train ... --resume``), for every
task: ASLNet (grade, survival, survival_cox), MGMT-Net (``profile``) and the Adaptive-Diagnoser
(``diagnosis``).

A run folder is built so that a kill at any instant loses at most the epoch in progress:

- every file is written under a temporary name and renamed (:mod:`vbiopsy.atomic`);
- the training command's preprocessing is cached per patient, keyed by the input files' contents
  and the settings (ASLNet ROI cubes, MGMT-Net working-grid cases, diagnoser samples), so a resumed
  run redoes only the missing patients;
- inside a fold, :class:`TrainingState` saves the whole training state at the start of every
  ``optim.checkpoint_every``-th epoch (default: every epoch) to
  ``fold_K/training_state.safetensors`` — weights, optimizer and scheduler states, early-stopping
  and keep-best states, history, the metrics callbacks read, Python / NumPy / torch (CPU, CUDA) /
  loader-generator RNG states — as safetensors + JSON (:func:`vbiopsy.train.checkpoint.save_state`;
  no pickle, atomic rename), and a new fit restores all of it and continues at that epoch.
  Lightning's own ``ckpt_path`` restore is not used: it unpickles, and it skips the plateau
  scheduler's step on the resumed epoch. Every task trains through the one
  :func:`vbiopsy.train.fit.fit`, so all three share this;
- a finished fold writes ``fold_K/done.json`` last, naming its files and the run's config
  fingerprint; only then is its training state deleted (:class:`FoldProgress`);
- everything after the folds (test-set ensemble, post-hoc rules, the clinical-only baseline,
  ``run.json``, the evaluation) is a pure function of the fold files, recomputed on resume.

``--resume`` therefore skips finished folds, continues the interrupted one from its last epoch
state and recomputes the rest, and the final OOF/test predictions and ``metrics.json`` equal an
uninterrupted run's bit for bit on CPU (tested by killing a real ``vbiopsy train`` process, and by
an exception injected mid-fold for each task).
``--resume`` refuses a folder whose saved ``config.yaml`` differs from the given config (naming
the first differing key, or the task); keys that cannot change results (:data:`NEUTRAL_KEYS`) may
differ. ``--resume`` on a folder that holds no run starts one, so a cluster job script can always
pass it. Without ``--resume``, a folder holding an unfinished run with trained epochs is refused
rather than silently overwritten. Under DDP (ASLNet) every process resumes from the same files;
rank 0 alone writes them.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from vbiopsy.atomic import write_text_atomic
from vbiopsy.config import ConfigSection
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.train.checkpoint import first_difference, load_state, save_state
from vbiopsy.train.config import TrainConfig

if TYPE_CHECKING:
    from vbiopsy.train.run import AnyConfig

FOLD_DONE = "done.json"
"""Written last in a fold folder: the fold's files are complete."""

TRAINING_STATE = "training_state.safetensors"
"""A fold's resumable training state (deleted once the fold is done)."""

NEUTRAL_KEYS = ("data.jobs", "data.loader_workers", "optim.checkpoint_every")
"""Config keys that change how fast a run goes, never its numbers: they may differ on ``--resume``."""

RunStatus = Literal["new", "unfinished", "trained"]


@dataclass(frozen=True)
class EpochCheckpoints:
    """Where :func:`vbiopsy.train.fit.fit` keeps its resumable training state, and what a stored state must match.

    Args:
        path: one ``.safetensors`` file, replaced atomically at the start of every ``every``-th epoch.
        identity: JSON metadata written into the state and required when loading it (e.g. the
            run's config fingerprint and the fold), so a state is never resumed into another fit.
        every: epochs between two saves (1: lose at most one epoch to a kill).
    """

    path: Path
    identity: Mapping[str, Any]
    every: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.path, Path):
            raise ConfigError(f"EpochCheckpoints.path must be a pathlib.Path, got {self.path!r}")
        if not isinstance(self.identity, Mapping):
            raise ConfigError(f"EpochCheckpoints.identity must be a mapping, got {type(self.identity).__name__}")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ConfigError(f"EpochCheckpoints.every must be a positive integer, got {self.every!r}")

    def load(self) -> dict[str, Any] | None:
        """The stored state, or ``None`` when there is none (raises if it belongs to another fit)."""
        if not self.path.is_file():
            return None
        return load_state(self.path, expect={"kind": "training_state", **self.identity})[0]

    def save(self, state: Mapping[str, Any]) -> Path:
        """Write ``state`` (a :meth:`TrainingState.snapshot`) stamped with the identity and its epoch."""
        return save_state(self.path, state, {"kind": "training_state", **self.identity, "epoch": state["epoch"]})


def rng_states(generators: Sequence[torch.Generator] = ()) -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) RNG states, plus those of ``generators`` (data-loader shuffling)."""
    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                              "torch": torch.get_rng_state(), "generators": [g.get_state() for g in generators]}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any], generators: Sequence[torch.Generator] = ()) -> None:
    """Inverse of :func:`rng_states` (the same ``generators``, in the same order)."""
    if len(states["generators"]) != len(generators):
        raise ConfigError(f"stored RNG state has {len(states['generators'])} generators, the fit has {len(generators)}")
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    for generator, state in zip(generators, states["generators"]):
        generator.set_state(state)


class TrainingState(Callback):
    """Save the whole training state at epoch starts; restore a stored one when the fit starts.

    Saved at ``on_train_epoch_start`` (before the epoch draws any random number, after the
    previous epoch's validation, early-stopping check and scheduler step); restored in two parts:
    counters, weights and optimiser/scheduler/callback states at ``on_train_start``, RNG states at
    the first ``on_train_epoch_start`` (this callback runs first).
    """

    def __init__(self, store: EpochCheckpoints) -> None:
        self.store = store
        self.pending = store.load()
        self.resumed_from = None if self.pending is None else int(self.pending["epoch"])

    def snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Everything the rest of the fit depends on (see the module docstring)."""
        history = getattr(pl_module, "history", None)
        return {"epoch": int(trainer.current_epoch), "module": pl_module.state_dict(),
                "optimizers": [o.state_dict() for o in trainer.optimizers],
                "schedulers": [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs],
                "callbacks": {c.state_key: c.state_dict() for c in trainer.callbacks if c is not self and c.state_dict()},
                "history": list(history) if isinstance(history, list) else None,
                "metrics": {k: v.detach().clone() if isinstance(v, torch.Tensor) else v
                            for k, v in trainer.callback_metrics.items()},
                "rng": rng_states(_generators(trainer))}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = self.pending
        if state is None:
            return
        pl_module.load_state_dict(state["module"])
        for optimizer, stored in zip(trainer.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(stored)
        for config, stored in zip(trainer.lr_scheduler_configs, state["schedulers"], strict=True):
            config.scheduler.load_state_dict(stored)
        for callback in trainer.callbacks:
            if callback.state_key in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][callback.state_key])
        if state["history"] is not None:
            pl_module.history = list(state["history"])  # type: ignore[assignment]
        trainer.callback_metrics.update(state["metrics"])
        progress = trainer.fit_loop.epoch_progress
        for tracker in (progress.total, progress.current):
            tracker.ready = tracker.started = tracker.processed = tracker.completed = int(state["epoch"])

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pending is not None:
            set_rng_states(self.pending["rng"], _generators(trainer))
            self.pending = None
            return
        epoch = int(trainer.current_epoch)
        if epoch > 0 and epoch % self.store.every == 0 and trainer.is_global_zero:  # one writer under DDP
            self.store.save(self.snapshot(trainer, pl_module))


def _generators(trainer: L.Trainer) -> list[torch.Generator]:
    """The training loader's generator (it draws the shuffle and seeds the workers), as a list."""
    loader = trainer.train_dataloader
    generator = getattr(loader, "generator", None)
    return [generator] if isinstance(generator, torch.Generator) else []


def _config_tree(config: ConfigSection) -> dict[str, Any]:
    """The config as JSON without :data:`NEUTRAL_KEYS` (a key its task's config does not have is skipped)."""
    tree = config.model_dump(mode="json")
    for key in NEUTRAL_KEYS:
        section, name = key.split(".")
        if isinstance(tree.get(section), dict):
            tree[section].pop(name, None)
    return tree


def _check_run_config(config: Any) -> None:
    """ConfigError unless ``config`` is a task's training config (a config section with a ``task``)."""
    if not isinstance(config, ConfigSection) or not isinstance(getattr(config, "task", None), str):
        raise ConfigError(f"config must be a training config (TrainConfig, ProfileConfig or DiagnosisConfig), "
                          f"got {type(config).__name__}")


def config_fingerprint(config: ConfigSection) -> str:
    """SHA-256 of the result-relevant config (canonical JSON); stamped on fold markers and training states."""
    _check_run_config(config)
    return hashlib.sha256(json.dumps(_config_tree(config), sort_keys=True).encode()).hexdigest()


def checkpoint_every(config: ConfigSection) -> int:
    """Epochs between two training-state saves: the task config's ``optim.checkpoint_every`` (default 1:
    a kill loses at most the epoch in progress)."""
    _check_run_config(config)
    return int(config.optim.checkpoint_every)  # type: ignore[attr-defined]


def completed_fold(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    """The summary of a fold finished under ``fingerprint`` with all its files present, else ``None``."""
    try:
        marker = json.loads((folder / FOLD_DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("fingerprint") != fingerprint:
        return None
    files = marker.get("files", [])
    if not isinstance(files, list) or not all((folder / str(name)).is_file() for name in files):
        return None
    summary = marker.get("summary")
    return summary if isinstance(summary, dict) else None


def mark_fold_done(folder: Path, fingerprint: str, files: list[str], summary: dict[str, Any]) -> Path:
    """Write ``done.json`` (after every file of the fold) and drop the fold's training state."""
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise InputError(folder, f"cannot mark the fold done: {missing[0]} was not written")
    path = write_text_atomic(folder / FOLD_DONE, json.dumps(
        {"fingerprint": fingerprint, "files": files, "summary": summary}, indent=1, default=str) + "\n")
    (folder / TRAINING_STATE).unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class FoldProgress:
    """One fold's resumable bookkeeping in ``folder``: its epoch states, and whether it is finished.

    Build it with :meth:`start`; train with :attr:`checkpoints` unless :attr:`finished` holds a
    summary; call :meth:`done` once every file of the fold is written.
    """

    folder: Path
    checkpoints: EpochCheckpoints
    finished: dict[str, Any] | None = None
    """The stored summary of a fold already finished under this config (then: do not train it)."""

    def __post_init__(self) -> None:
        if not isinstance(self.folder, Path) or not isinstance(self.checkpoints, EpochCheckpoints):
            raise ConfigError(f"FoldProgress needs a pathlib.Path and EpochCheckpoints, got "
                              f"{type(self.folder).__name__} and {type(self.checkpoints).__name__}")
        if self.finished is not None and not isinstance(self.finished, dict):
            raise ConfigError(f"FoldProgress.finished must be a dict or None, got {type(self.finished).__name__}")

    @classmethod
    def start(cls, config: ConfigSection, folder: Path, fold: int, *, resume: bool) -> FoldProgress:
        """The fold's progress: with ``resume``, a fold finished under ``config`` is reported as such and an
        interrupted one will continue from its epoch state; without, both are redone from scratch."""
        if isinstance(fold, bool) or not isinstance(fold, int) or fold < 0:
            raise ConfigError(f"fold must be a non-negative integer, got {fold!r}")
        folder = Path(folder)
        fingerprint = config_fingerprint(config)
        store = EpochCheckpoints(folder / TRAINING_STATE, {"fingerprint": fingerprint, "fold": fold},
                                 every=checkpoint_every(config))
        if resume and (summary := completed_fold(folder, fingerprint)) is not None:
            return cls(folder, store, summary)
        (folder / FOLD_DONE).unlink(missing_ok=True)
        if not resume:
            store.path.unlink(missing_ok=True)
        return cls(folder, store)

    def done(self, files: list[str], summary: dict[str, Any]) -> Path:
        """Mark the fold finished (:func:`mark_fold_done`): ``files`` relative to the fold folder."""
        return mark_fold_done(self.folder, str(self.checkpoints.identity["fingerprint"]), files, summary)


def run_status(out: Path) -> RunStatus:
    """``new`` (no config saved, or nothing trained yet), ``unfinished`` (some fold trained or
    training) or ``trained`` (``run.json`` written: only evaluation/explanations may remain)."""
    if (out / "run.json").is_file():
        return "trained"
    if not (out / "config.yaml").is_file():
        return "new"
    progress = [p for pattern in (f"fold_*/{FOLD_DONE}", f"fold_*/{TRAINING_STATE}") for p in out.glob(pattern)]
    return "unfinished" if progress else "new"


def check_run_folder(config: AnyConfig, out: Path, *, resume: bool) -> RunStatus:
    """Refuse what must not happen to ``out``; return its :func:`run_status`.

    Raises:
        ConfigError: ``resume`` and the saved config differs from ``config`` (its task or first key named).
        InputError: not ``resume`` and ``out`` holds an unfinished run (it would be overwritten).
    """
    _check_run_config(config)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "run folder path exists and is not a folder")
    status = run_status(out)
    saved_path = out / "config.yaml"
    if resume and saved_path.is_file():
        from vbiopsy.train.run import load_train_config

        saved = load_train_config(saved_path)
        if type(saved) is not type(config) or saved.task != config.task:
            raise ConfigError(f"--resume: {saved_path} is a {saved.task!r} run, the given config is {config.task!r}; "
                              "resume with the run's config or choose another --out")
        diff = first_difference(_config_tree(saved), _config_tree(config))
        if diff:
            raise ConfigError(f"--resume: {saved_path} differs from the given config at {diff[0]} (run has "
                              f"{diff[1]!r}, given {diff[2]!r}); resume with the run's config or choose another --out")
    if not resume and status == "unfinished":
        done = len(list(out.glob(f"fold_*/{FOLD_DONE}")))
        raise InputError(out, f"holds an unfinished run ({done} folds finished); add --resume to continue it, "
                              "or choose another --out")
    if not resume and status == "trained" and not (out / "metrics.json").is_file():
        raise InputError(out, "holds a trained run that was not evaluated; add --resume to finish it "
                              "(or run `vbiopsy evaluate`), or choose another --out")
    return status


def train_command(config: AnyConfig, out: Path, *, evaluate: bool = True, resume: bool = False) -> Path:
    """What ``vbiopsy train [--resume]`` does for any task: check the run folder, then train (continuing
    whatever a killed run left) or only finish a run whose training is complete."""
    from vbiopsy.train.fit import global_rank
    from vbiopsy.train.run import finish_run, train

    _check_run_config(config)
    if isinstance(config, TrainConfig) and global_rank() != 0:  # a DDP worker (Lightning, torchrun, SLURM)
        from vbiopsy.train.cross_validation import run_cross_validation

        return run_cross_validation(config, Path(out))  # its share of the fits only
    status = check_run_folder(config, Path(out), resume=resume)
    if resume and status == "trained":
        return finish_run(config, Path(out), evaluate=evaluate)
    return train(config, Path(out), evaluate=evaluate)
