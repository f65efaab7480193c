"""MGMT-Net marker training switches: marker labels masked on patches without the tumour, composition features in
the configs, and checkpoints of the paper model still loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.train.checkpoint import save_checkpoint
from vbiopsy.train.profile_config import ProfileAugment, ProfileConfig
from vbiopsy.train.profile_data import NativeGrid, ProfileCase
from vbiopsy.train.profile_patches import PatchDataset, tumour_share
from vbiopsy.train.profile_run import build_mgmtnet, load_profile_ensemble, model_metadata, model_options
from vbiopsy.train.run import load_train_config

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[2] / "src" / "vbiopsy" / "configs"
SMALL, LARGE = 8, 64  # tumour voxels of the two blobs below


def _two_blob_case() -> ProfileCase:
    """24³ brain with a NETC blob of 2³ voxels in one corner and an SNFH blob of 4³ voxels in the other."""
    seg = np.zeros((24, 24, 24), np.uint8)
    seg[:2, :2, :2] = 1
    seg[18:22, 18:22, 18:22] = 2
    native = NativeGrid((24, 24, 24), np.eye(4), ((0, 24),) * 3)
    return ProfileCase("p", np.ones((4, 24, 24, 24), np.float32), np.ones(4, bool), seg,
                       np.array([1.0, np.nan, 0.0], np.float32), np.eye(4), native)


def test_tumour_share_counts_labels_one_to_three_only() -> None:
    seg = np.zeros((6, 6, 6), np.uint8)
    seg[0, 0, :4] = [1, 2, 3, 4]  # RC (4) is not tumour
    assert tumour_share(seg, (slice(0, 1), slice(0, 1), slice(0, 2))) == pytest.approx(2 / 3)
    assert tumour_share(np.zeros((4, 4, 4), np.uint8), (slice(0, 2),) * 3) == 0.0


def test_marker_labels_are_masked_on_patches_that_miss_most_of_the_tumour() -> None:
    case = _two_blob_case()
    settings = ProfileAugment(patch=(8, 8, 8), foreground_prob=1.0)
    dataset = PatchDataset([case], settings.patch, settings, seed=0, length=40, augment=False,
                           marker_min_tumour_share=0.5)
    shares = set()
    for i in range(len(dataset)):
        item = dataset[i]
        share = dataset.drawn[i]["tumour_share"]
        shares.add(share)
        assert item["seg"].bool().any()  # the segmentation still trains on every patch
        if share == pytest.approx(SMALL / (SMALL + LARGE), abs=1e-4):
            assert torch.isnan(item["markers"]).all() and dataset.drawn[i]["markers_masked"]
        else:
            assert share == pytest.approx(LARGE / (SMALL + LARGE), abs=1e-4)
            torch.testing.assert_close(item["markers"], torch.from_numpy(case.markers), equal_nan=True)
    assert len(shares) == 2  # both kinds of patch were drawn
    paper = PatchDataset([case], settings.patch, settings, seed=0, length=40, augment=False)
    assert all(paper[i]["markers"][0] == 1.0 for i in range(len(paper)))


@pytest.mark.parametrize("share", [-0.1, 1.5, True])
def test_bad_marker_share_is_refused(share: object) -> None:
    with pytest.raises(ConfigError, match=f"marker_min_tumour_share must be a number in \\[0, 1\\], got {share}"):
        PatchDataset([_two_blob_case()], (8, 8, 8), ProfileAugment(patch=(8, 8, 8)),
                     marker_min_tumour_share=share)  # type: ignore[arg-type]


def test_demo_config_switches_composition_on_and_paper_config_keeps_its_head() -> None:
    demo = load_train_config(CONFIGS / "mgmtnet-demo.yaml")
    paper = load_train_config(CONFIGS / "mgmtnet.yaml")
    assert demo.model.marker_composition and demo.loss.marker_min_tumour_share > 0
    assert not paper.model.marker_composition and paper.loss.marker_min_tumour_share == 0
    head = build_mgmtnet(paper).marker_head
    assert head.n_composition == 0 and head.heads[0][1].in_features == 16 * 2 ** (3 - 1)
    assert build_mgmtnet(demo).marker_head.n_composition == 2 * (5 - 1) * (4 + 1)


def _tiny(tmp_path: Path, composition: bool) -> ProfileConfig:
    return ProfileConfig.model_validate({
        "task": "profile", "data": {"cohort": str(tmp_path)},
        "model": {"width": 4, "stages": 2, "window_size": 2, "swin_heads": 1, "head_hidden": 8,
                  "marker_composition": composition}})


def test_checkpoints_from_before_the_switch_load_with_it_off_only(tmp_path: Path) -> None:
    off, on = _tiny(tmp_path, False), _tiny(tmp_path, True)
    assert "marker_composition" not in model_options(off) and model_options(on)["marker_composition"] is True
    old = {**model_metadata(off, 0),  # what a run written before the switch stored: the model section without it
           "model": {k: v for k, v in off.model.model_dump(mode="json").items() if k != "marker_composition"}}
    (tmp_path / "fold_0").mkdir()
    save_checkpoint(tmp_path / "fold_0" / "model.safetensors", build_mgmtnet(off).state_dict(), old)
    assert len(load_profile_ensemble(off, tmp_path).members) == 1
    with pytest.raises(InputError, match="marker_composition"):
        load_profile_ensemble(on, tmp_path)
