"""One model fit with Lightning, for every task: early stopping on the monitored score, best weights
restored, resumable after a kill, deterministic on request.

ASLNet (:class:`~vbiopsy.tasks.aslnet.AslNetTask`), MGMT-Net (:class:`~vbiopsy.tasks.profile.ProfileTask`,
through :func:`vbiopsy.train.profile_fit.fit_profile`) and the Adaptive-Diagnoser
(:class:`~vbiopsy.tasks.diagnose.DiagnosisTask`) all train here: the module logs ``val_score`` at
validation and keeps a per-epoch ``history`` list; the training dataset has ``set_epoch`` (a new,
seeded augmentation draw each epoch). Validation every ``validate_every`` epochs, or none
(``val=None``); early stopping unless ``optim.early_stopping_patience`` is 0.

The best state is kept in memory (a copy of the weights at the best validation score, strict
improvement) instead of Lightning's pickled ``.ckpt`` files; the caller saves it as safetensors.

**Resuming**: given :class:`~vbiopsy.train.resume.EpochCheckpoints`, the whole training state is
saved at epoch starts and restored by a new fit (:class:`~vbiopsy.train.resume.TrainingState`), so
an interrupted fit ends with the same weights, bit for bit on CPU, as an uninterrupted one.

**Deterministic mode** (``optim.deterministic``, ``vbiopsy train --deterministic``, on by default):
:func:`seed_everything` seeds Python, NumPy and torch (Lightning), MONAI's global seed for its
randomised transforms (``monai.utils.set_determinism``), and data-loader workers (Lightning's
``pl_worker_init_function`` derives each worker's seeds from the loader's seeded generator); it
turns on ``torch.use_deterministic_algorithms`` (``warn_only``: an op without a deterministic
kernel — some 3-D backward passes on CUDA — warns instead of failing), cuDNN deterministic without
benchmarking, and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` for cuBLAS. Augmentation draws from
generators seeded by (seed, epoch, item), so results do not depend on the number of workers. Two
runs of one config give bitwise-identical predictions on CPU; on GPU, identical up to the kernels
that warn.

**Scale-out** (``optim.devices`` / ``optim.nodes``, ``vbiopsy train --devices N [--nodes M]``):
Lightning's DDP strategy, gloo on CPU and NCCL on GPUs. Every process runs the whole command
(Lightning's launcher re-runs it for the other local ranks; ``torchrun`` and SLURM's ``srun`` start
them all); rank 0 alone writes files (:func:`global_rank`). ``optim.batch_size`` stays the
effective batch: each process takes ``batch_size / (devices × nodes)`` items of the same
permutation, so one step's items are the one-process step's items; every process
scores the whole validation set, so early stopping, keep-best and the LR schedule agree
(:class:`ShardedShuffle`). Commands::

    vbiopsy train cfg.yaml --out run --devices 4                        # one machine, 4 processes
    torchrun --nproc_per_node 4 -m vbiopsy.cli train cfg.yaml --out run --devices 4
    # SLURM, 2 machines × 4 GPUs (sbatch --nodes 2 --ntasks-per-node 4 --gpus-per-node 4):
    srun vbiopsy train cfg.yaml --out run --devices 4 --nodes 2 --resume  # --resume: requeues continue

Equivalence with one process (tested on CPU, 2 processes, 2 epochs): not bitwise — the batched
backward pass and the all-reduce sum in different orders, and Adam (ε = 1e-7) amplifies the
rounding in near-zero gradients — but predictions within 1e-2 (measured 1.8e-3) and the same
AUCs. Dropout masks are drawn per process from the same seed, so with dropout the two are
equivalent in distribution only; the Cox loss (``survival_cox``) compares patients within a
process's batch, so DDP changes it; a training set not divisible by the processes is padded by
repeating items (as ``DistributedSampler`` does).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Iterator, Sized
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch.utils.data import DataLoader, Dataset, Sampler

from vbiopsy.errors import ConfigError
from vbiopsy.tasks.aslnet import AslNetTask, probabilities
from vbiopsy.tasks.validation import MONITOR
from vbiopsy.train.dataset import CubeDataset
from vbiopsy.train.resume import EpochCheckpoints, TrainingState


class EpochDataset(Sized, Protocol):
    """A training dataset whose augmentation draw depends on the epoch (seeded by seed, epoch, item)."""

    def __getitem__(self, index: int) -> Any: ...

    def set_epoch(self, epoch: int) -> None: ...


class FitSettings(Protocol):
    """The optimiser-section settings :func:`fit` reads (ASLNet's, MGMT-Net's and the diagnoser's all have them)."""

    @property
    def max_epochs(self) -> int: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def early_stopping_patience(self) -> int: ...

    @property
    def precision(self) -> Literal["auto", "32", "bf16-mixed"]: ...

    @property
    def deterministic(self) -> bool: ...


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy, torch and data-loader workers (Lightning); in deterministic mode also MONAI's
    global seed, deterministic algorithms, cuDNN without benchmarking and the cuBLAS workspace setting."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    L.seed_everything(seed, workers=True, verbose=False)
    if deterministic:
        from monai.utils import set_determinism

        set_determinism(seed=seed % 2**32, use_deterministic_algorithms=None)  # same seeds as above + MONAI's
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def global_rank() -> int:
    """This process's rank in a distributed run (0 when there is none): Lightning's reading of
    ``RANK`` / ``LOCAL_RANK`` / ``SLURM_PROCID``, set before any process group exists."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def bf16_supported() -> bool:
    """True where bf16 autocast is fast: a CUDA GPU with bf16, or a CPU with AVX-512 BF16 / AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    checker = getattr(torch.backends.cpu, "get_cpu_capability", None)
    capability = checker() if checker else ""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return bool(amx or avx512_bf16) and "AVX512" in capability.upper()


def resolve_precision(setting: str) -> str:
    """Lightning precision string for ``auto`` / ``32`` / ``bf16-mixed``."""
    if setting == "auto":
        return "bf16-mixed" if bf16_supported() else "32-true"
    return "32-true" if setting == "32" else setting


def quiet_lightning() -> None:
    """Silence Lightning's start-up banners ("GPU available", tips); warnings still show."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _EpochSetter(Callback):
    """Tell the training dataset which epoch it is (new augmentation draw each epoch)."""

    def __init__(self, dataset: EpochDataset) -> None:
        self.dataset = dataset

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dataset.set_epoch(trainer.current_epoch)


class _KeepBest(Callback):
    """Copy the weights whenever the monitored score strictly improves."""

    def __init__(self) -> None:
        self.best_score = -np.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        score = trainer.callback_metrics.get(MONITOR)
        if score is not None and float(score) > self.best_score:
            self.best_score = float(score)
            self.best_epoch = int(trainer.current_epoch)
            self.best_state = copy.deepcopy(pl_module.model.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "best_state": self.best_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = float(state_dict["best_score"])
        self.best_epoch = int(state_dict["best_epoch"])
        self.best_state = state_dict["best_state"]


@dataclass
class FitResult:
    """Outcome of one fit: best epoch and score, epochs run, per-epoch history, precision used, the
    epoch a resumed fit continued from (``None``: trained from the start) and the DDP processes."""

    best_epoch: int
    best_score: float
    epochs: int
    precision: str
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    world_size: int = 1


class ShardedShuffle(Sampler[int]):
    """One ``torch.randperm(n, generator)`` per epoch, drawn when the epoch starts, then item ``rank``,
    ``rank + replicas``, … of it (a DDP shard, padded by wrapping round so every rank has as many
    items, as ``DistributedSampler`` does).

    Exactly one draw per epoch makes the generator advance the same way with or without loader
    workers (a multi-process loader runs a ``RandomSampler`` to exhaustion, which costs one more
    draw per epoch than Lightning's single-process loop), and with one replica gives the
    permutations of ``DataLoader(shuffle=True, generator=...)`` under Lightning. Every rank's
    generator has the same seed, so the ranks' shards of one step together are the one-process batch.
    """

    def __init__(self, n: int, generator: torch.Generator, *, replicas: int = 1, rank: int = 0) -> None:
        if n < 1 or replicas < 1 or not 0 <= rank < replicas:
            raise ConfigError(f"ShardedShuffle needs n >= 1 and 0 <= rank < replicas, got n={n}, rank={rank}, "
                              f"replicas={replicas}")
        self.generator, self.n, self.replicas, self.rank = generator, n, replicas, rank

    def __len__(self) -> int:
        return -(-self.n // self.replicas)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        order += order[: len(self) * self.replicas - self.n]
        return iter(order[self.rank:: self.replicas])


def _loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, workers: int = 0,
            replicas: int = 1, rank: int = 0) -> DataLoader:
    """Batches shuffled by :class:`ShardedShuffle` from a generator seeded with ``seed`` (so neither
    the number of workers nor a resume changes the order); workers seeded from the same generator
    (Lightning's ``pl_worker_init_function``)."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    size = len(dataset)  # type: ignore[arg-type]
    sampler = ShardedShuffle(size, generator, replicas=replicas, rank=rank) if generator else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, generator=generator,
                      drop_last=False, worker_init_fn=pl_worker_init_function if workers else None)


class _Loaders(L.LightningDataModule):
    """Loaders made once the trainer knows its rank: training batches sharded across DDP ranks (each
    rank ``batch_size / world_size`` items), the whole validation set on every rank (so every rank
    computes the same score, and early stopping, keep-best and the scheduler agree)."""

    def __init__(self, train: EpochDataset, val: Dataset | None, batch_size: int, *, seed: int, workers: int) -> None:
        super().__init__()
        self.train, self.val, self.batch_size, self.seed, self.workers = train, val, batch_size, seed, workers

    def train_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        return _loader(self.train, self.batch_size // world, shuffle=True, seed=self.seed,  # type: ignore[arg-type]
                       workers=self.workers, replicas=world, rank=rank)

    def val_dataloader(self) -> DataLoader:  # never requested without validation (limit_val_batches=0)
        if self.val is None:
            raise ConfigError("no validation set")
        return _loader(self.val, max(self.batch_size, 4), shuffle=False, workers=self.workers)


def fit(module: L.LightningModule, train: EpochDataset, val: Dataset | None, optim: FitSettings, *, seed: int,
        checkpoints: EpochCheckpoints | None = None, workers: int = 0, devices: int = 1, nodes: int = 1,
        validate_every: int = 1) -> FitResult:
    """Train ``module`` (it has ``model`` and ``history``) on ``train``, early-stop on ``val``'s score,
    restore the best weights.

    Args:
        val: scored every ``validate_every`` epochs (the module logs ``val_score``); ``None``: no
            validation (then no early stopping, and the last weights are kept).
        checkpoints: keep a resumable state there, and resume from it when it already exists.
        workers: data-loader worker processes (0: load in this process).
        devices: processes of a Lightning DDP run (gloo on CPU, NCCL on GPUs); ``optim.batch_size``
            stays the effective batch and must be divisible by it. Every process runs the same
            program (Lightning's launcher starts the others by re-running the command; ``torchrun``
            or SLURM start them all), see :mod:`vbiopsy.train.resume`.
        nodes: machines of a multi-node DDP run (``devices`` processes on each).
        validate_every: epochs between two validations (MGMT-Net's whole-volume validation is slow).
    """
    for name, value, least in (("workers", workers, 0), ("devices", devices, 1), ("nodes", nodes, 1),
                               ("validate_every", validate_every, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
    if optim.batch_size % (devices * nodes):
        raise ConfigError(f"optim.batch_size {optim.batch_size} must be divisible by the {devices * nodes} DDP "
                          "processes (devices × nodes): it is the effective batch, split across them")
    seed_everything(seed, deterministic=optim.deterministic)
    quiet_lightning()
    keep = _KeepBest()
    precision = resolve_precision(optim.precision)
    resumable = [] if checkpoints is None else [TrainingState(checkpoints)]
    stopping = [] if val is None or not optim.early_stopping_patience else [
        EarlyStopping(MONITOR, mode="max", patience=optim.early_stopping_patience, min_delta=0.0, check_finite=False)]
    trainer = L.Trainer(
        max_epochs=optim.max_epochs, accelerator="auto", devices=devices, precision=precision,  # type: ignore[arg-type]
        num_nodes=nodes, strategy="ddp" if devices * nodes > 1 else "auto", use_distributed_sampler=False,
        callbacks=[*resumable, _EpochSetter(train), keep, *stopping], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=min(validate_every, optim.max_epochs), limit_val_batches=None if val is not None else 0,
        deterministic="warn" if optim.deterministic else None, gradient_clip_val=None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
        warnings.filterwarnings("ignore", message=".*check_val_every_n_epoch.*")
        warnings.filterwarnings("ignore", message=".*sync_dist=True.*")  # every rank scores the whole val set
        trainer.fit(module, datamodule=_Loaders(train, val, optim.batch_size, seed=seed, workers=workers))
    if keep.best_state is not None:
        module.model.load_state_dict(keep.best_state)  # type: ignore[union-attr,operator]
    return FitResult(keep.best_epoch, keep.best_score, int(trainer.current_epoch), precision,
                     list(module.history),  # type: ignore[arg-type]
                     resumable[0].resumed_from if resumable else None, int(trainer.world_size))


@torch.no_grad()
def predict(module: AslNetTask, dataset: CubeDataset, *, batch_size: int = 8) -> np.ndarray:
    """Per-item outputs (see :func:`vbiopsy.tasks.aslnet.probabilities`), in dataset order, eval mode, fp32."""
    module.eval()
    outputs = []
    for batch in _loader(dataset, batch_size, shuffle=False):
        logits = module(batch["image"], batch.get("tabular"))
        outputs.append(probabilities(module.task, logits).cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0,))
