"""MGMT-Net (``task: profile``) runs resume like ASLNet runs: a run interrupted mid-fold and resumed with
``--resume`` ends with predictions, histories and ``metrics.json`` byte-identical to an uninterrupted run,
finished folds are not retrained, a different config and an unfinished folder are refused; and the fit
honours deterministic mode (two fits bitwise equal, the Trainer told so).

The fast test interrupts the run in-process (an exception right after fold 1's epoch-1 state is
written, which is what a kill at that instant leaves); the slow one kills a real ``vbiopsy train``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from reliability_task_helpers import (PROFILE_RESULTS, PROFILE_TINY, check_resumed, interrupt, kill_9_then_resume,
                                      profile_cohort, reference_run)

import vbiopsy.train.fit as fit_module
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.train.profile_config import ProfileConfig
from vbiopsy.train.resume import FOLD_DONE, TRAINING_STATE, check_run_folder, config_fingerprint, train_command
from vbiopsy.train.run import load_train_config


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config YAML, an uninterrupted run of it)."""
    return reference_run(tmp_path_factory, "profile", PROFILE_TINY, profile_cohort)


def test_a_run_interrupted_mid_fold_resumes_to_the_uninterrupted_outputs(reference: tuple[Path, Path], tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config_path, ref = reference
    config = load_train_config(config_path)
    run = tmp_path / "run"
    saved = interrupt(config, run, monkeypatch, saves=2)  # fold 0 saves epoch 1, fold 1 saves epoch 1: killed there
    assert saved == [1, 1]
    assert (run / "fold_0" / FOLD_DONE).is_file() and not (run / "fold_1" / FOLD_DONE).exists()
    assert (run / "fold_1" / TRAINING_STATE).is_file() and not (run / "fold_0" / TRAINING_STATE).exists()
    with pytest.raises(InputError, match="unfinished run.*--resume"):  # never overwritten without --resume
        train_command(config, run)
    check_resumed(config, run, ref, PROFILE_RESULTS, resumed_from=1)
    import nibabel as nib

    segs = sorted((ref / "test" / "seg").glob("*.nii.gz"))
    assert segs
    for seg in segs:  # gzip headers hold a time: compare voxels
        resumed_seg = nib.load(run / "test" / "seg" / seg.name)
        assert np.array_equal(np.asarray(nib.load(seg).dataobj), np.asarray(resumed_seg.dataobj))


def test_resume_refuses_another_config_or_task_and_neutral_keys_may_differ(reference: tuple[Path, Path]) -> None:
    config_path, ref = reference
    config = load_train_config(config_path)
    assert isinstance(config, ProfileConfig)
    other = config.model_copy(update={"optim": config.optim.model_copy(update={"lr": 0.5})})
    with pytest.raises(ConfigError, match=r"optim\.lr.*0\.5"):
        check_run_folder(other, ref, resume=True)
    faster = config.model_copy(update={"data": config.data.model_copy(update={"jobs": 3})})
    assert config_fingerprint(faster) == config_fingerprint(config) != config_fingerprint(other)
    assert check_run_folder(faster, ref, resume=True) == "trained"
    aslnet = load_train_config(None, {"task": "grade", "data": {"cohort": str(ref)}})
    with pytest.raises(ConfigError, match="'profile' run, the given config is 'grade'"):
        check_run_folder(aslnet, ref, resume=True)
    with pytest.raises(InputError, match="already holds a finished run"):
        train_command(config, ref)


def _synthetic_cases(n: int = 4) -> list:
    """``n`` ProfileCases on a 16³ grid: 4 noisy modalities, a cubic tumour (labels 1–3), alternating markers."""
    from vbiopsy.train.profile_data import NativeGrid, ProfileCase

    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        seg = np.zeros((16, 16, 16), np.uint8)
        seg[5:11, 5:11, 5:11] = 2
        seg[6:10, 6:10, 6:10] = 3
        seg[7:9, 7:9, 7:9] = 1
        image = (rng.standard_normal((4, 16, 16, 16)) + seg[None] * 0.5).astype(np.float32)
        markers = np.array([i % 2, 0, (i + 1) % 2], np.float32)
        native = NativeGrid((16, 16, 16), np.eye(4), ((0, 16), (0, 16), (0, 16)))
        cases.append(ProfileCase(f"s{i}", image, np.ones(4, bool), seg, markers, np.eye(4), native))
    return cases


def test_mgmtnet_fits_honour_deterministic_mode_and_repeat_bitwise(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from vbiopsy.tasks.profile import ProfileTask
    from vbiopsy.train.fit import seed_everything
    from vbiopsy.train.profile_fit import fit_profile
    from vbiopsy.train.profile_patches import PatchDataset
    from vbiopsy.train.profile_run import build_mgmtnet

    torch.set_num_threads(1)
    enabled = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    flags: list[object] = []
    real_trainer = L.Trainer

    def spy(*args: object, **kwargs: object) -> L.Trainer:
        flags.append(kwargs.get("deterministic"))
        return real_trainer(*args, **kwargs)

    monkeypatch.setattr(fit_module.L, "Trainer", spy)
    cases = _synthetic_cases()
    outputs = []
    try:
        for deterministic in (True, True, False):
            config = ProfileConfig.model_validate({**PROFILE_TINY, "data": {"cohort": str(tmp_path)},
                                                   "optim": {**PROFILE_TINY["optim"], "deterministic": deterministic}})
            seed_everything(4)
            module = ProfileTask(build_mgmtnet(config), config, val_cases=cases[2:])
            fit_profile(module, PatchDataset(cases[:2], (16, 16, 16), config.augment, seed=4, length=4), config, seed=4)
            assert torch.are_deterministic_algorithms_enabled() is deterministic
            with torch.no_grad():
                out = module.model.eval()(torch.from_numpy(cases[3].image)[None])
            outputs.append(np.concatenate([out.seg_logits.numpy().ravel(), out.marker_logits.numpy().ravel()]))
    finally:
        torch.use_deterministic_algorithms(enabled[0], warn_only=enabled[1])
    assert flags == ["warn", "warn", None]  # the Trainer is told (it was always told False before)
    assert np.isfinite(outputs[0]).all() and outputs[0].tobytes() == outputs[1].tobytes()


@pytest.mark.slow
def test_kill_9_of_a_real_profile_run_then_resume_equals_the_uninterrupted_run(reference: tuple[Path, Path],
                                                                               tmp_path: Path) -> None:
    config, ref = reference
    assert kill_9_then_resume(config, ref, tmp_path / "run", PROFILE_RESULTS) == 1
