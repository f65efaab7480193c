"""Adaptive-Diagnoser (``task: diagnosis``) runs resume like ASLNet runs: a run interrupted mid-fold and resumed
with ``--resume`` ends with OOF/test predictions, histories and ``metrics.json`` byte-identical to an
uninterrupted run; finished folds are not retrained; a different config or an unfinished folder is refused
through the real command line with one error line.

The fast test interrupts the run in-process (an exception right after fold 1's epoch-2 state is written,
which is what a kill at that instant leaves); the slow one kills a real ``vbiopsy train``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_task_helpers import (DIAGNOSIS_RESULTS, DIAGNOSIS_TINY, check_resumed, diagnosis_cohort, interrupt,
                                      kill_9_then_resume, reference_run, write_task_config)
from typer.testing import CliRunner

from vbiopsy.cli import app
from vbiopsy.train.diagnosis_config import DiagnosisConfig
from vbiopsy.train.resume import FOLD_DONE, TRAINING_STATE
from vbiopsy.train.run import load_train_config


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config YAML, an uninterrupted run of it)."""
    return reference_run(tmp_path_factory, "diagnosis", DIAGNOSIS_TINY, diagnosis_cohort)


def test_a_run_interrupted_mid_fold_resumes_to_the_uninterrupted_outputs(reference: tuple[Path, Path], tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config_path, ref = reference
    config = load_train_config(config_path)
    assert isinstance(config, DiagnosisConfig) and config.model.mca  # the paper's model
    run = tmp_path / "run"
    saved = interrupt(config, run, monkeypatch, saves=4)  # epochs 1, 2 of fold 0, then 1, 2 of fold 1: killed there
    assert saved == [1, 2, 1, 2]
    assert (run / "fold_0" / FOLD_DONE).is_file() and (run / "fold_1" / TRAINING_STATE).is_file()
    result = CliRunner().invoke(app, ["train", str(config_path), "--out", str(run)])  # no --resume: refused
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "--resume" in errors[0], result.output
    check_resumed(config, run, ref, DIAGNOSIS_RESULTS, resumed_from=2)


def test_resume_through_the_command_line_refuses_another_config_naming_the_key(reference: tuple[Path, Path],
                                                                              tmp_path: Path) -> None:
    config_path, ref = reference
    other = write_task_config(tmp_path / "other.yaml", DIAGNOSIS_TINY, load_train_config(config_path).data.cohort,
                              optim={"label_smoothing": 0.2})
    result = CliRunner().invoke(app, ["train", str(other), "--out", str(ref), "--resume"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "optim.label_smoothing" in errors[0] and "0.2" in errors[0] and "Traceback" not in result.output
    # the finished run resumed with its own config only re-evaluates: the metrics do not change
    before = (ref / "metrics.json").read_bytes()
    result = CliRunner().invoke(app, ["train", str(config_path), "--out", str(ref), "--resume"])
    assert result.exit_code == 0, result.output
    assert (ref / "metrics.json").read_bytes() == before


def test_fold_progress_keeps_only_a_fold_finished_under_the_same_config(tmp_path: Path) -> None:
    from vbiopsy.errors import ConfigError
    from vbiopsy.train.resume import FoldProgress

    config = load_train_config(write_task_config(tmp_path / "d.yaml", DIAGNOSIS_TINY, tmp_path))
    other = config.model_copy(update={"optim": config.optim.model_copy(update={"lr": 0.5})})
    folder = tmp_path / "fold_0"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"w")
    first = FoldProgress.start(config, folder, 0, resume=True)
    assert first.finished is None and first.checkpoints.every == 1 and first.checkpoints.identity["fold"] == 0
    first.checkpoints.path.write_bytes(b"state")
    first.done(["weights.bin"], {"fold": 0, "best_epoch": 3})
    assert not first.checkpoints.path.exists()  # the epoch state goes once the fold is done
    assert FoldProgress.start(config, folder, 0, resume=True).finished == {"fold": 0, "best_epoch": 3}
    assert FoldProgress.start(other, folder, 0, resume=True).finished is None  # another config: redone
    assert not (folder / FOLD_DONE).exists()
    first.checkpoints.path.write_bytes(b"state")
    assert FoldProgress.start(config, folder, 0, resume=True).checkpoints.path.exists()  # continued from it
    assert not FoldProgress.start(config, folder, 0, resume=False).checkpoints.path.exists()  # or dropped
    with pytest.raises(ConfigError, match="fold"):
        FoldProgress.start(config, folder, -1, resume=True)
    with pytest.raises(ConfigError, match="training config"):
        FoldProgress.start({"task": "diagnosis"}, folder, 0, resume=True)  # type: ignore[arg-type]


@pytest.mark.slow
def test_kill_9_of_a_real_diagnosis_run_then_resume_equals_the_uninterrupted_run(reference: tuple[Path, Path],
                                                                                 tmp_path: Path) -> None:
    config, ref = reference
    assert kill_9_then_resume(config, ref, tmp_path / "run", DIAGNOSIS_RESULTS) >= 1
