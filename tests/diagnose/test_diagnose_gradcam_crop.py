"""Grad-CAM of a crop-branch diagnoser: each branch's map sums to its logit contribution (what puts them on one
scale) and the crop's map lands in its box on the working grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vbiopsy.explain.gradcam import layer_grad_cam
from vbiopsy.models.diagnoser import AdaptiveDiagnoser
from vbiopsy.train.diagnosis_config import LesionCropSettings
from vbiopsy.train.diagnosis_gradcam import crop_to_working_grid, working_voxel_mm3

torch.set_num_threads(1)


def test_each_branch_map_sums_to_its_contribution_to_the_logit() -> None:
    torch.manual_seed(0)
    model = AdaptiveDiagnoser("densenet", mca=False, backbone_options={"width": "tiny"}, crop_channels=2,
                              crop_width=4).eval()
    image, crop = torch.randn(1, 1, 16, 16, 16), torch.randn(1, 2, 8, 8, 8)
    target = 2
    with torch.no_grad():
        features = model.backbone(image).mean(dim=(2, 3, 4))[0]
        crop_features = model.crop_encoder(crop)[0]
    weight = model.classifier.weight[target].detach()
    n = features.numel()
    expected = {"backbone": float(weight[:n] @ features), "crop": float(weight[n:] @ crop_features)}
    for name, layer in (("backbone", model.backbone), ("crop", model.crop_encoder.features)):
        raw = layer_grad_cam(model, layer, image, target, additional_forward_args=(None, None, crop))
        assert raw.sum().item() == pytest.approx(expected[name], rel=1e-4, abs=1e-5)


def test_the_crop_map_goes_to_its_box_on_the_working_grid() -> None:
    settings = LesionCropSettings(shape=(8, 8, 8), spacing_mm=1.0, modalities=("t1c",), jitter_voxels=2)
    record = {"box_start": [0, 0, 0], "box_stop": [32, 32, 32], "scan_affine": np.eye(4).tolist(),
              "crop_centres": {"refined": [20.0, 12.0, 16.0]}}
    # stored crop 12³ starts at scan voxel centre − 6 (+ 0.5, floored): 14, 6, 10; the window 2 voxels further in
    window_start = np.array([16, 8, 12])
    ramp = (window_start[0] + np.indices((8, 8, 8))[0]).astype(np.float32)  # the scan x coordinate of each voxel
    on_working = crop_to_working_grid(ramp, record, settings, "refined", (16, 16, 16))
    assert working_voxel_mm3(record, (16, 16, 16)) == 8.0
    # working voxel w covers scan voxels 2w, 2w + 1 (centre 2w + 0.5); fully inside the window for x in 9..10
    for w in (9, 10):
        np.testing.assert_allclose(on_working[w, 5:7, 7:9], 2 * w + 0.5, atol=1e-5)
    assert on_working[:7].max() == 0 and on_working[13:].max() == 0  # nothing outside the crop's box
