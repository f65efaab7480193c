"""Fault tolerance: a ``vbiopsy train`` process killed with SIGKILL and resumed with ``--resume``
ends with the same predictions and metrics JSON, byte for byte, as an uninterrupted run.

The kill tests run the real command in a subprocess on a 16-patient phantom cohort (6 mm, tiny
network, 2 folds, 5 epochs) and kill it when the run folder shows it reached a given stage; the
slow variant kills at 10 random instants. Equality alone would also hold for a resume that
retrained everything, so the tests also check that finished work was kept (fold markers, the
epoch a resumed fold continued from).
"""

from __future__ import annotations

import json
import random
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_helpers import (phantom_cohort, run_cli, same_files, tiny_cubes, tiny_datasets,
                                 tiny_task, watch, write_config)
from typer.testing import CliRunner

from vbiopsy.cli import app
from vbiopsy.config import save_config
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.train.checkpoint import first_difference, flatten_state, load_state, save_state, unflatten_state
from vbiopsy.train.fit import fit
from vbiopsy.train.resume import (TRAINING_STATE, EpochCheckpoints, check_run_folder, config_fingerprint, rng_states,
                                  set_rng_states)
from vbiopsy.train.run import load_train_config


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """(config, uninterrupted run folder, seconds from its config.yaml appearing to its end)."""
    root = tmp_path_factory.mktemp("resume")
    config = write_config(root / "config.yaml", phantom_cohort(root / "cohort"))
    run = root / "reference"
    status, seconds = watch(["train", str(config), "--out", str(run)], lambda: (run / "config.yaml").is_file())
    assert status == 0 and (run / "metrics.json").is_file()
    return config, run, seconds


KILL_POINTS = {
    "during-preprocessing": lambda run: any(run.glob("cubes/*.npz")),
    "mid-fold": lambda run: (run / "fold_0" / TRAINING_STATE).is_file(),
    "between-folds": lambda run: (run / "fold_0" / "done.json").is_file(),
    "during-evaluation": lambda run: (run / "run.json").is_file(),
}
"""Stage → when the run folder shows the process is in it (the kill follows within milliseconds)."""


@pytest.mark.parametrize("point", [pytest.param("during-preprocessing", marks=pytest.mark.slow),
                                   "mid-fold", "between-folds", "during-evaluation"])
def test_kill_9_then_resume_equals_the_uninterrupted_run(reference: tuple[Path, Path, float], tmp_path: Path,
                                                         point: str) -> None:
    config, ref, _ = reference
    run = tmp_path / "run"
    status, _ = watch(["train", str(config), "--out", str(run)], lambda: KILL_POINTS[point](run), kill_after=0.0)
    assert status == -signal.SIGKILL, f"the process finished before the kill ({status})"
    assert not (run / "metrics.json").exists()
    fold0_done_at_kill = (run / "fold_0" / "done.json").is_file()
    stamp = (run / "fold_0" / "done.json").stat().st_mtime_ns if fold0_done_at_kill else None
    if point != "during-preprocessing":  # without --resume a run with trained epochs is refused, not overwritten
        with pytest.raises(InputError, match="--resume"):
            check_run_folder(load_train_config(config), run, resume=False)
    resumed = run_cli("train", str(config), "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert same_files(run, ref) == []
    fit0 = json.loads((run / "fold_0" / "fit.json").read_text())
    if point == "mid-fold":
        assert not fold0_done_at_kill and fit0["resumed_from"] >= 1  # continued from an epoch state
    if point in ("between-folds", "during-evaluation"):
        assert (run / "fold_0" / "done.json").stat().st_mtime_ns == stamp  # finished fold kept, not retrained
    assert not list(run.glob(f"fold_*/{TRAINING_STATE}"))  # states dropped once folds are done


@pytest.mark.slow
def test_ten_random_kill_points_each_resume_equals_the_uninterrupted_run(reference: tuple[Path, Path, float],
                                                                         tmp_path: Path) -> None:
    """Kill at 10 random instants of the work (after start-up: from config.yaml to the end), resume each."""
    config, ref, seconds = reference
    draw = random.Random(8)
    for i in range(10):
        run = tmp_path / f"run{i}"
        delay = draw.uniform(0.0, 1.0) * seconds
        while True:  # an instant past this run's end (a faster machine now) is drawn again, earlier
            status, _ = watch(["train", str(config), "--out", str(run)], lambda: (run / "config.yaml").is_file(),
                              kill_after=delay)
            if status == -signal.SIGKILL:
                break
            assert status == 0 and delay > 0.01, (i, status)
            shutil.rmtree(run)
            delay /= 2
        resumed = run_cli("train", str(config), "--out", str(run), "--resume")
        assert resumed.returncode == 0, (i, resumed.stderr)
        assert same_files(run, ref) == [], (i, delay)
        shutil.rmtree(run)


def test_resume_refuses_a_run_folder_with_another_config(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", tmp_path / "cohort")  # refused before the cohort is read
    run = tmp_path / "run"
    run.mkdir()
    loaded = load_train_config(config)
    save_config(loaded.model_copy(update={"optim": loaded.optim.model_copy(update={"lr": 0.5})}), run / "config.yaml")
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(run), "--resume"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "optim.lr" in errors[0] and "0.5" in errors[0] and "Traceback" not in result.output
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # nothing written
    # keys that cannot change numbers may differ; a fresh folder is simply a new run
    save_config(loaded, run / "config.yaml")
    faster = loaded.model_copy(update={"data": loaded.data.model_copy(update={"jobs": 4})})
    assert check_run_folder(faster, run, resume=True) == "new"
    assert config_fingerprint(faster) == config_fingerprint(loaded)
    assert check_run_folder(loaded, tmp_path / "absent", resume=True) == "new"


def test_first_difference_names_the_nested_key() -> None:
    assert first_difference({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == ("a.c", 2, 3)
    assert first_difference({"a": 1}, {"a": 1, "z": 0}) == ("z", "<missing>", 0)
    assert first_difference({"a": 1, "y": 2}, {"a": 1}) == ("y", 2, "<absent>")
    assert first_difference({"a": [1, 2]}, {"a": [1, 2]}) is None


def test_state_codec_round_trips_every_kind_of_value_without_pickle(tmp_path: Path) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2)
    layer(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max")
    scheduler.step(0.5)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_states(),
             "floats": [float("inf"), -float("inf"), 0.1 + 0.2], "tuple_keys": {(1, "a"): (2, None)},
             "tagged": {"__tensor__": "not a reference"}, "np": np.arange(3, dtype=np.uint32), "flag": True}
    tensors, tree = flatten_state(state)
    assert json.loads(json.dumps(tree, allow_nan=False)) == tree  # strict JSON, no NaN/Infinity literals
    back = unflatten_state(tensors, tree)
    assert back["floats"][:2] == [float("inf"), -float("inf")] and back["floats"][2] == 0.1 + 0.2
    assert back["tuple_keys"] == {(1, "a"): (2, None)} and back["tagged"] == state["tagged"]
    assert back["np"].dtype == np.uint32 and back["np"].tolist() == [0, 1, 2] and back["flag"] is True
    save_state(tmp_path / "s.safetensors", state, {"kind": "test"})
    loaded, meta = load_state(tmp_path / "s.safetensors", expect={"kind": "test"})
    assert meta["kind"] == "test" and "state" not in meta
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-2)
    fresh.load_state_dict(loaded["optimizer"])
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(fresh.state_dict()["state"][0][key], optimizer.state_dict()["state"][0][key])
    assert loaded["scheduler"] == scheduler.state_dict()
    with pytest.raises(ConfigError, match=r"state\.bad"):
        flatten_state({"bad": object()})
    with pytest.raises(InputError, match="kind"):
        load_state(tmp_path / "s.safetensors", expect={"kind": "other"})


def test_rng_states_restore_python_numpy_torch_and_generators() -> None:
    generator = torch.Generator().manual_seed(3)
    saved = rng_states([generator])
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    set_rng_states(saved, [generator])
    again = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    assert first == again
    with pytest.raises(ConfigError, match="generators"):
        set_rng_states(saved, [])


def test_an_interrupted_fit_resumed_from_its_epoch_state_ends_bitwise_equal(tmp_path: Path) -> None:
    """In-process: a fit stopped after 2 epochs and resumed to 4 equals a 4-epoch fit, weights and history."""
    torch.set_num_threads(1)
    cubes = tiny_cubes(tmp_path / "images")
    config, make = tiny_task(tmp_path, max_epochs=4)
    train, val = tiny_datasets(cubes, config, seed=5)
    torch.manual_seed(5)
    whole = make()
    whole_result = fit(whole, train, val, config.optim, seed=5)
    store = EpochCheckpoints(tmp_path / "state.safetensors", {"fingerprint": "x", "fold": 0})
    short = config.optim.model_copy(update={"max_epochs": 3})  # saves the epoch-2 state, then "dies"
    torch.manual_seed(5)
    first = fit(make(), train, val, short, seed=5, checkpoints=store)
    assert first.resumed_from is None and store.load()["epoch"] == 2
    torch.manual_seed(99)  # a differently initialised module: the state must bring the weights back
    resumed = make()
    result = fit(resumed, train, val, config.optim, seed=5, checkpoints=store)
    assert result.resumed_from == 2 and result.epochs == whole_result.epochs == 4
    assert json.dumps(result.history) == json.dumps(whole_result.history)  # NaN-aware (first train_loss is NaN)
    assert result.best_epoch == whole_result.best_epoch
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(InputError, match="fingerprint"):
        fit(make(), train, val, config.optim, seed=5,
            checkpoints=EpochCheckpoints(store.path, {"fingerprint": "other config", "fold": 0}))


def test_epoch_checkpoints_validate_their_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="every"):
        EpochCheckpoints(tmp_path / "s.safetensors", {}, every=0)
    with pytest.raises(ConfigError, match="path"):
        EpochCheckpoints("s.safetensors", {})  # type: ignore[arg-type]
