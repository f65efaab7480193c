"""Deterministic mode: every RNG seeded, deterministic algorithms on, and two fits give bitwise-identical
predictions — with data-loader workers too, whose number does not change the result."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_helpers import tiny_cubes, tiny_datasets, tiny_task
from torch.utils.data import Dataset
from typer.testing import CliRunner

import vbiopsy.train.resume as resume_module
from vbiopsy.cli import app
from vbiopsy.errors import ConfigError
from vbiopsy.train.fit import _loader, fit, predict, seed_everything


@pytest.fixture(autouse=True)
def restore_torch_flags() -> Iterator[None]:
    """Leave the process's global determinism settings as this test found them."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def test_seed_everything_seeds_every_source_and_sets_the_flags() -> None:
    from monai.utils import get_seed

    seed_everything(123, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    assert get_seed() == 123 and os.environ["PL_SEED_WORKERS"] == "1"
    draws = (np.random.rand(), torch.rand(1).item(), random.random())
    seed_everything(123, deterministic=True)
    assert (np.random.rand(), torch.rand(1).item(), random.random()) == draws
    seed_everything(123, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="seed"):
            seed_everything(bad)  # type: ignore[arg-type]


class _Noise(Dataset):
    """Each item is a draw from the *global* NumPy RNG of the process that loads it."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> float:
        return float(np.random.rand())


def test_loader_workers_are_seeded_from_the_loader_generator() -> None:
    seed_everything(0)
    draws = [torch.cat(list(_loader(_Noise(), 2, shuffle=True, seed=7, workers=2))).tolist() for _ in range(2)]
    assert draws[0] == draws[1]  # reproducible
    assert len(set(draws[0])) == 8  # the two workers do not repeat each other's stream
    other = torch.cat(list(_loader(_Noise(), 2, shuffle=True, seed=8, workers=2))).tolist()
    assert other != draws[0]


def test_two_deterministic_fits_give_bitwise_identical_predictions_whatever_the_workers(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cubes = tiny_cubes(tmp_path)
    config, make = tiny_task(tmp_path, task="survival", max_epochs=2)
    outputs = []
    for workers in (0, 0, 2):
        train, val = tiny_datasets(cubes, config, seed=1)
        seed_everything(1)
        module = make()
        fit(module, train, val, config.optim, seed=1, workers=workers)
        outputs.append(predict(module, val))
    assert outputs[0].dtype == np.float32 and np.isfinite(outputs[0]).all()
    assert outputs[0].tobytes() == outputs[1].tobytes() == outputs[2].tobytes()


def test_cli_deterministic_flag_overrides_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bool, bool]] = []
    monkeypatch.setattr(resume_module, "train_command",
                        lambda config, out, *, evaluate, resume: seen.append((config.optim.deterministic, resume)))
    config = tmp_path / "c.yaml"
    config.write_text(f"task: grade\ndata: {{cohort: {tmp_path}}}\noptim: {{deterministic: false}}\n")
    for flag, expected in (([], False), (["--deterministic"], True), (["--nondeterministic"], False)):
        result = CliRunner().invoke(app, ["train", str(config), "--out", str(tmp_path / "run"), *flag, "--resume"])
        assert result.exit_code == 0, result.output
        assert seen[-1] == (expected, True)
