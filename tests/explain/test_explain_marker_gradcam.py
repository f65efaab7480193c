"""Grad-CAM of MGMT-Net's marker heads: shapes and range, identity with captum's LayerGradCam on the bottleneck
the marker head receives, a planted model, argument checks, and ``vbiopsy predict`` writing one map per marker
on the patient's scan grid from the same patch that gave the marker probability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from scipy import ndimage
from torch import Tensor, nn

from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.nifti import load_volume
from vbiopsy.data.phantoms import PhantomConfig, generate_cohort
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.explain import marker_grad_cam, marker_layer
from vbiopsy.models.mgmtnet import MGMTNet, MGMTNetOutput
from vbiopsy.train.checkpoint import save_checkpoint
from vbiopsy.train.profile_config import ProfileConfig
from vbiopsy.train.profile_data import MARKERS, load_case
from vbiopsy.train.profile_infer import marker_gradcam, predict_case
from vbiopsy.train.profile_predict import predict_profile
from vbiopsy.train.profile_run import ProfileEnsemble, build_mgmtnet, model_metadata

torch.set_num_threads(1)
SHAPE = (16, 16, 16)
TINY = {"width": 4, "stages": 2, "window_size": 2, "swin_heads": 1, "head_hidden": 8}


def tiny_net(seed: int, encoder: str = "hybrid", pooling: str = "attention") -> MGMTNet:
    torch.manual_seed(seed)
    return MGMTNet(4, 5, 3, encoder=encoder, marker_pooling=pooling, **TINY)  # type: ignore[arg-type]


def test_maps_are_in_unit_range_on_the_input_grid_and_the_model_modes_are_kept() -> None:
    model = tiny_net(0).train()
    torch.manual_seed(1)
    image = torch.randn(2, 4, *SHAPE, requires_grad=True)
    model.eval()
    model(image).marker_logits.sum().backward()  # the logits do depend on the input
    assert image.grad is not None and float(image.grad.abs().sum()) > 0
    model.train()
    maps = marker_grad_cam(model, image.detach(), torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]]))
    assert list(maps) == list(MARKERS)
    for cam in maps.values():
        assert cam.shape == (2, *SHAPE) and cam.dtype == np.float32
        assert cam.min() >= 0 and np.allclose(cam.reshape(2, -1).max(axis=1), 1.0)  # per sample, not all zero
    assert model.training and all(m.training for m in model.modules())
    assert set(marker_grad_cam(model, image.detach(), markers=["tert"])) == {"tert"}


@pytest.mark.parametrize("encoder, pooling", [("hybrid", "attention"), ("cnn", "gap")])
def test_same_map_as_captum_on_the_tensor_the_marker_head_pools(encoder: str, pooling: str) -> None:
    model = tiny_net(2, encoder, pooling).eval()
    torch.manual_seed(3)
    image, mask = torch.randn(2, 4, *SHAPE), torch.tensor([[1.0, 0.0, 1.0, 1.0]] * 2)
    seen: dict[str, Tensor] = {}
    handles = [model.marker_head.register_forward_pre_hook(lambda _, args: seen.update(head=args[0])),
               marker_layer(model).register_forward_hook(lambda _, __, out: seen.update(layer=out))]
    with torch.no_grad():
        model(image, mask)
    for handle in handles:
        handle.remove()
    assert seen["head"] is seen["layer"]  # the explained layer's output is the marker head's input
    ours = marker_grad_cam(model, image, mask)
    cam = LayerGradCam(lambda x, m: model(x, m).marker_logits, marker_layer(model))
    for k, name in enumerate(MARKERS):
        raw = cam.attribute(image, target=k, additional_forward_args=(mask,), relu_attributions=True)
        up = LayerAttribution.interpolate(raw.detach(), SHAPE, interpolate_mode="trilinear")[:, 0].numpy()
        peak = up.reshape(2, -1).max(axis=1)
        assert (peak > 0).all()
        np.testing.assert_allclose(ours[name], up / peak[:, None, None, None], atol=1e-6, rtol=0)


def test_fold_models_give_the_rescaled_mean_of_their_maps() -> None:
    models = [tiny_net(4).eval(), tiny_net(5).eval()]
    torch.manual_seed(6)
    image = torch.randn(1, 4, *SHAPE)
    joint = marker_grad_cam(models, image)
    for name in MARKERS:
        mean = (marker_grad_cam(models[0], image)[name] + marker_grad_cam(models[1], image)[name]) / 2
        np.testing.assert_allclose(joint[name], mean / mean.max(), atol=1e-6)


class PlantedNet(nn.Module):
    """Marker k's logit is the mean of modality k's stride-2 features over region k only (a hand-set gate)."""

    def __init__(self, regions: Tensor) -> None:
        super().__init__()
        self.register_buffer("regions", regions.float())  # (K, 8, 8, 8) on the feature grid
        self.features = nn.Sequential(nn.Conv3d(2, 2, 2, stride=2, bias=False), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.zero_()
            for c in range(2):
                self.features[0].weight[c, c] = 1 / 8  # 2³ average of modality c

    def forward(self, image: Tensor, modality_mask: Tensor | None = None) -> MGMTNetOutput:
        a = self.features(image)
        logits = torch.stack([(a[:, k] * self.regions[k]).sum(dim=(1, 2, 3)) / self.regions[k].sum()
                              for k in range(len(self.regions))], dim=1)
        return MGMTNetOutput(image[:, :1], logits, None, [])


def test_planted_region_holds_the_peak_and_the_other_markers_blob_is_ignored() -> None:
    regions = torch.zeros(2, 8, 8, 8, dtype=torch.bool)
    regions[0, 0:3, 1:4, 4:7] = True
    regions[1, 4:7, 4:7, 0:3] = True
    torch.manual_seed(7)
    image = 0.05 * torch.rand(1, 2, *SHAPE)
    image[0, 0, 0:6, 2:8, 8:14] += 1.0  # modality 0 bright inside region 0 (input grid = 2 × feature grid)
    image[0, 1, 8:14, 8:14, 0:6] += 1.0  # modality 1 as bright, inside region 1: a distractor for marker 0
    model = PlantedNet(regions)
    maps = marker_grad_cam(model, image, marker_names=("a", "b"), layers=[model.features])
    for name, region in zip(("a", "b"), regions):
        inside = region.repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2).numpy()
        cam = maps[name][0]
        assert inside[np.unravel_index(np.argmax(cam), SHAPE)]
        near = ndimage.binary_dilation(inside)  # trilinear upsampling spreads each feature voxel by 1 voxel
        assert cam[~near].max() < 0.1  # only modality-k noise (≤ 0.05 of the blob) lies there
    with pytest.raises(ConfigError, match="not an MGMT-Net"):
        marker_grad_cam(model, image, marker_names=("a", "b"))


def test_bad_arguments_are_named() -> None:
    model = tiny_net(8).eval()
    image = torch.zeros(1, 4, *SHAPE)
    with pytest.raises(ConfigError, match="'mgmt'"):
        marker_grad_cam(model, image, markers=["idh", "mgmt"])
    with pytest.raises(ConfigError, match=r"marker_logits must have shape \(B, 2\)"):
        marker_grad_cam(model, image, marker_names=("idh", "tert"))
    with pytest.raises(ConfigError, match="distinct"):
        marker_grad_cam(model, image, marker_names=("idh", "idh", "tert"))
    with pytest.raises(InputError, match=r"image.*\(1, 4, 16, 16\)"):
        marker_grad_cam(model, image[..., 0])
    with pytest.raises(InputError, match=r"image.*\(1, 3, 16, 16, 16\)"):
        marker_grad_cam(model, image[:, :3])
    with pytest.raises(InputError, match="modality_mask"):
        marker_grad_cam(model, image, torch.ones(1, 3))
    with pytest.raises(ConfigError, match="one layer per model"):
        marker_grad_cam([model, model], image, layers=[marker_layer(model)])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProfileConfig, Path, Path]:
    """Two phantoms on a 6 mm scan grid and a 2-fold run of untrained tiny MGMT-Nets on an 8 mm working grid."""
    root = tmp_path_factory.mktemp("marker_cam")
    generate_cohort(PhantomConfig(n_patients=2, spacing_mm=6.0, diagnosis_mix={"glioma": 1.0}, seed=3), root / "cohort")
    config = ProfileConfig.model_validate({
        "task": "profile", "data": {"cohort": root / "cohort", "spacing_mm": 8.0, "folds": 2}, "model": TINY,
        "augment": {"patch": [16, 16, 16]}, "inference": {"roi": [32, 32, 32], "overlap": 0.0, "min_component_ml": 0},
        "explain": {"max_patients": 1}})
    for k in range(2):
        torch.manual_seed(10 + k)
        (root / "run" / f"fold_{k}").mkdir(parents=True)
        save_checkpoint(root / "run" / f"fold_{k}" / "model.safetensors", build_mgmtnet(config).state_dict(),
                        model_metadata(config, k))
    return config, root / "run", root / "cohort"


def test_maps_explain_the_patch_that_gave_the_marker_probability(run: tuple[ProfileConfig, Path, Path]) -> None:
    config, _, cohort = run
    manifest = read_cohort(cohort)
    row = {k: v for k, v in manifest.row(manifest.subjects[0]).items() if k not in ("seg", *MARKERS)}
    case = load_case(row, config.data.modalities, config.data.spacing_mm, with_seg=False, markers=MARKERS)
    models = [tiny_net(20).eval(), tiny_net(21).eval()]
    ensemble = ProfileEnsemble(models).eval()
    pred = predict_case(ensemble, case, patch=(16, 16, 16), settings=config.inference)
    shape = np.array(case.image.shape[1:])
    assert pred.centre is not None and (shape > 16).all()  # the patch is a true part of the volume
    start = np.clip(np.array(pred.centre) - 8, 0, shape - 16)  # by hand: centred, shifted inside
    box = tuple(slice(s, s + 16) for s in start)
    patch = torch.from_numpy(case.image[(slice(None), *box)])[None]
    mask = torch.from_numpy(case.present.astype(np.float32))[None]
    with torch.no_grad():
        reported = torch.sigmoid(ensemble(patch, mask).marker_logits)[0].numpy()
    np.testing.assert_allclose(reported, pred.markers, atol=1e-6)  # this patch gave the reported numbers
    working = marker_gradcam(models, case, pred, patch=(16, 16, 16), markers=MARKERS)
    direct = marker_grad_cam(models, patch, mask)
    for name in MARKERS:
        assert working[name].shape == tuple(shape)
        np.testing.assert_allclose(working[name][box], direct[name][0], atol=1e-6)
        outside = np.ones(shape, bool)
        outside[box] = False
        assert working[name][outside].max() == 0 and working[name].max() == pytest.approx(1.0)


def test_predict_writes_one_map_per_marker_on_the_scan_grid(run: tuple[ProfileConfig, Path, Path],
                                                            tmp_path: Path) -> None:
    config, run_dir, cohort = run
    manifest = read_cohort(cohort)
    first, second = manifest.subjects
    csv = predict_profile(config, run_dir, [first, second], tmp_path / "pred", report=True)
    table = pd.read_csv(csv, dtype={"subject_id": str}).set_index("subject_id")
    scan = load_volume(manifest.row(first)["t1"])
    for name in MARKERS:
        path = tmp_path / "pred" / f"{first}_gradcam_{name}.nii.gz"
        assert table.loc[first, f"gradcam_{name}"] == str(path)
        cam = load_volume(path, allow_empty=True)
        assert cam.array.shape == scan.array.shape and np.allclose(cam.affine, scan.affine)
        assert cam.array.min() >= 0 and 0.5 < cam.array.max() <= 1 + 1e-6
        assert pd.isna(table.loc[second, f"gradcam_{name}"])  # explain.max_patients = 1
    assert not list((tmp_path / "pred").glob(f"{second}_gradcam_*"))
    html = (tmp_path / "pred" / f"{first}_report.html").read_text()
    assert f"{first}_gradcam_tert.nii.gz" in html and "Grad-CAM of idh positive" in html
    predict_profile(config, run_dir, [second], tmp_path / "none", saliency=False)
    assert not list((tmp_path / "none").glob("*_gradcam_*"))
    with pytest.raises(ConfigError, match="saliency"):
        predict_profile(config, run_dir, [second], tmp_path / "bad", saliency="yes")  # type: ignore[arg-type]
