"""The "everything is tumour" fold: MGMT-Net's GroupNorm must not depend on how much zero background a window
holds (trained on small tumour-centred patches, inferred on larger, mostly-background windows), and the
validation history reports the predicted / reference whole-tumour volume as a sanity figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vbiopsy.errors import InputError
from vbiopsy.models.cmaf import BrainGroupNorm, brain_mask, masked_group_norm, normalise_over_brain, \
    use_brain_group_norm
from vbiopsy.models.mgmtnet import MGMTNet
from vbiopsy.tasks.profile import ProfileTask, mean_defined, whole_tumour_volume_ratio
from vbiopsy.train.profile_config import ProfileConfig
from vbiopsy.train.profile_data import NativeGrid, ProfileCase


def brain_image(seed: int, size: int = 16, channels: int = 4) -> torch.Tensor:
    """(1, channels, size³): random "brain" values in a box, exact zeros around it (≥ 2 voxels)."""
    torch.manual_seed(seed)
    image = torch.zeros(1, channels, size, size, size)
    image[:, :, 2:size - 2, 3:size - 3, 2:size - 2] = torch.randn(1, channels, size - 4, size - 6, size - 4)
    return image


def pad_centred(image: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """``image`` in the middle of a zero (1, C, size³) canvas, and where it sits."""
    offset = (size - image.shape[-1]) // 2
    canvas = image.new_zeros(1, image.shape[1], size, size, size)
    box = tuple(slice(offset, offset + n) for n in image.shape[2:])
    canvas[(slice(None), slice(None), *box)] = image
    return canvas, box


def test_masked_group_norm_matches_torch_group_norm_over_the_brain_voxels() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 5, 7) * 3 + 1
    mask = torch.rand(2, 1, 6, 5, 7) > 0.4
    weight, bias = torch.randn(8), torch.randn(8)
    out = masked_group_norm(x, mask, 4, weight, bias, 1e-5)
    for b in range(2):
        inside = mask[b, 0]
        reference = F.group_norm(x[b][:, inside][None], 4, weight, bias, 1e-5)[0]  # the brain voxels alone
        torch.testing.assert_close(out[b][:, inside], reference, atol=1e-5, rtol=1e-5)
        outside = out[b][:, ~inside]
        torch.testing.assert_close(outside, bias[:, None].expand_as(outside))  # background = the shift β
    # no background: exactly torch's GroupNorm
    torch.testing.assert_close(masked_group_norm(x, torch.ones_like(mask), 4, weight, bias), F.group_norm(x, 4, weight, bias))
    with pytest.raises(InputError, match="mask"):
        masked_group_norm(x, mask[:, :, :3], 4, weight, bias)


def test_brain_mask_is_any_non_zero_modality_and_an_empty_sample_counts_as_all_brain() -> None:
    image = torch.zeros(2, 3, 4, 4, 4)
    image[0, 2, 1, 1, 1] = -0.5  # z-scored values are negative too
    mask = brain_mask(image)
    assert mask.shape == (2, 1, 4, 4, 4) and mask.dtype == torch.bool
    assert int(mask[0].sum()) == 1 and bool(mask[0, 0, 1, 1, 1])
    assert bool(mask[1].all())


def test_brain_group_norm_is_group_norm_outside_the_context_and_keeps_the_state_dict() -> None:
    torch.manual_seed(1)
    plain = nn.Sequential(nn.Conv3d(2, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.ReLU())
    nn.init.normal_(plain[1].weight)
    nn.init.normal_(plain[1].bias)
    swapped = nn.Sequential(nn.Conv3d(2, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.ReLU())
    assert use_brain_group_norm(swapped) == 1 and isinstance(swapped[1], BrainGroupNorm)
    assert use_brain_group_norm(swapped) == 0  # already swapped
    swapped.load_state_dict(plain.state_dict())
    x = brain_image(2, size=8, channels=2)
    torch.testing.assert_close(swapped(x), plain(x))  # no context: ordinary GroupNorm
    with normalise_over_brain(x):
        masked = swapped(x)
    assert not torch.allclose(masked, plain(x), atol=1e-3)


@pytest.mark.parametrize("encoder", ["cnn", "hybrid"])
def test_mgmtnet_features_do_not_depend_on_the_zero_background_around_the_brain(encoder: str) -> None:
    """Regression: with window-wide GroupNorm statistics, the same brain put in a larger, mostly-zero
    window (sliding-window padding, 48³ inference windows vs 24³ training patches) got other features,
    and a phantom fold labelled ~700 ml of healthy brain as tumour."""
    torch.manual_seed(0)
    model = MGMTNet(4, 5, 3, width=8, stages=2, encoder=encoder, swin_heads=2, window_size=2).eval()
    small = brain_image(3)
    big, box = pad_centred(small, 32)
    brain = brain_mask(small)[0, 0]
    with torch.no_grad():
        a, b = model(small), model(big)
    at = (slice(None), *box)
    # CMAF attention is computed per voxel from the first normalised embedding: exactly the same
    weights_small, weights_big = a.modality_weights[0][:, brain], b.modality_weights[0][at][:, brain]
    torch.testing.assert_close(weights_small, weights_big, atol=1e-5, rtol=1e-5)
    # the logits only differ through the receptive field crossing the small window's border (and, for the
    # hybrid encoder, background tokens in the Swin windows): by much less than their own size, where
    # window-wide statistics moved them by more than it
    small_logits, big_logits = a.seg_logits[0][:, brain], b.seg_logits[0][at][:, brain]
    assert (small_logits - big_logits).abs().mean() < 0.5 * small_logits.abs().mean()


def test_whole_tumour_volume_ratio_by_hand() -> None:
    ref = np.zeros((4, 4, 4), dtype=np.uint8)
    ref[0, 0, :3] = (1, 2, 3)  # 3 whole-tumour voxels
    pred = np.zeros_like(ref)
    pred[1, :3, :2] = 2  # 6 voxels
    pred[3, 3, 3] = 4  # a resection cavity is not tumour
    assert whole_tumour_volume_ratio(pred, ref) == 2.0
    assert whole_tumour_volume_ratio(ref, pred) == 0.5
    assert whole_tumour_volume_ratio(pred, np.zeros_like(ref)) is None
    with pytest.raises(InputError, match="shape"):
        whole_tumour_volume_ratio(pred[:2], ref)
    assert mean_defined([None, 1.0, 3.0]) == 2.0 and math.isnan(mean_defined([None]))


def test_validation_history_reports_the_mean_whole_tumour_volume_ratio(tmp_path: Path) -> None:
    config = ProfileConfig.model_validate({
        "task": "profile", "data": {"cohort": str(tmp_path)},
        "model": {"width": 4, "stages": 2, "window_size": 2, "swin_heads": 1, "head_hidden": 8},
        "augment": {"patch": [16, 16, 16]}, "inference": {"min_component_ml": 0.0}})
    torch.manual_seed(0)
    model = MGMTNet(4, 5, 3, width=4, stages=2, swin_heads=1, window_size=2, head_hidden=8)
    with torch.no_grad():  # a model that calls every voxel SNFH (class 2)
        model.decoder.head.bias.copy_(torch.tensor([0.0, 0.0, 100.0, 0.0, 0.0]))
    image = brain_image(4)[0].numpy()
    cases = []
    for sid, tumour_voxels in (("a", 8), ("b", 16), ("c", 0)):
        seg = np.zeros(image.shape[1:], dtype=np.uint8)
        seg.reshape(-1)[:tumour_voxels] = 2
        cases.append(ProfileCase(sid, image, np.ones(4, bool), seg, np.array([0.0, 1.0, np.nan], np.float32),
                                 np.diag([4.0, 4.0, 4.0, 1.0]), NativeGrid((16, 16, 16), np.eye(4), ((0, 16),) * 3)))
    task = ProfileTask(model, config, val_cases=cases)
    task.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no trainer here
    task.on_validation_epoch_end()
    voxels = image.shape[1] * image.shape[2] * image.shape[3]  # all predicted tumour; case c has no reference
    assert task._val_row["val_wt_volume_ratio"] == pytest.approx((voxels / 8 + voxels / 16) / 2, rel=1e-4)
