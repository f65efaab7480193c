"""Masked Channel Attention maths (by hand and against numpy) and the Adaptive-Diagnoser's behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.explain.gradcam import grad_cam
from vbiopsy.models.diagnoser import AdaptiveDiagnoser
from vbiopsy.models.masked_channel_attention import MaskedChannelAttention, masked_average_pool, resize_prior

torch.set_num_threads(1)
SIZE = 32
TINY = {"width": "tiny"}


# ---------------------------------------------------------------- masked average pooling and MCA


def test_hard_mask_pool_is_the_mean_over_mask_voxels() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 3, 4, 5, 6)
    mask = (torch.rand(2, 1, 4, 5, 6) > 0.6).float()
    pooled = masked_average_pool(features, mask, eps=0.0)
    for b in range(2):
        inside = mask[b, 0].bool()
        for c in range(3):
            assert pooled[b, c].item() == pytest.approx(features[b, c][inside].mean().item(), rel=1e-5)
    # with the paper's ε the difference is of order ε / |mask|
    torch.testing.assert_close(masked_average_pool(features, mask), pooled, rtol=1e-5, atol=1e-6)


def test_soft_mask_weights_voxels() -> None:
    features = torch.tensor([2.0, 6.0, 100.0]).reshape(1, 1, 3, 1, 1)
    mask = torch.tensor([0.25, 0.75, 0.0]).reshape(1, 1, 3, 1, 1)
    # by hand: (0.25·2 + 0.75·6 + 0·100) / (0.25 + 0.75) = 5
    assert masked_average_pool(features, mask, eps=0.0).item() == pytest.approx(5.0)
    rng = np.random.default_rng(1)
    f, m = rng.normal(size=(2, 4, 3, 3, 3)), rng.uniform(size=(2, 1, 3, 3, 3))
    expected = [[np.average(f[b, c], weights=m[b, 0]) for c in range(4)] for b in range(2)]
    got = masked_average_pool(torch.tensor(f), torch.tensor(m), eps=0.0).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_empty_mask_falls_back_to_global_average() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 3, 4, 4, 4)
    mask = torch.zeros(2, 1, 4, 4, 4)
    mask[1, 0, 0, 0, 0] = 1.0
    pooled = masked_average_pool(features, mask)
    torch.testing.assert_close(pooled[0], features[0].mean(dim=(1, 2, 3)))  # empty prior → whole brain
    torch.testing.assert_close(pooled[1], features[1, :, 0, 0, 0], rtol=1e-5, atol=1e-6)


def test_mca_weights_are_in_unit_interval_and_rescale_channels() -> None:
    torch.manual_seed(0)
    mca = MaskedChannelAttention(8, reduction=4)
    assert mca.mlp[0].out_features == 2 and mca.mlp[2].out_features == 8  # C → C/r → C
    features = torch.randn(3, 8, 4, 4, 4) * 10
    mask = torch.rand(3, 1, 4, 4, 4)
    attended, w = mca(features, mask)
    assert w.shape == (3, 8) and bool(((w > 0) & (w < 1)).all())
    torch.testing.assert_close(attended, features * w[:, :, None, None, None])
    z = masked_average_pool(features, mask)
    manual = torch.sigmoid(mca.mlp[2](torch.relu(mca.mlp[0](z))))
    torch.testing.assert_close(w, manual)


def test_mask_checks_name_the_problem() -> None:
    features = torch.randn(2, 3, 4, 4, 4)
    with pytest.raises(InputError, match=r"\(2, 1, 4, 4, 4\).*\(2, 1, 4, 4, 5\)"):
        masked_average_pool(features, torch.ones(2, 1, 4, 4, 5))
    with pytest.raises(InputError, match="1.5"):
        masked_average_pool(features, torch.full((2, 1, 4, 4, 4), 1.5))
    with pytest.raises(InputError, match="nan"):
        masked_average_pool(features, torch.full((2, 1, 4, 4, 4), float("nan")))
    with pytest.raises(ConfigError, match="-1"):
        masked_average_pool(features, torch.ones(2, 1, 4, 4, 4), eps=-1.0)
    with pytest.raises(ConfigError, match="reduction.*got 0"):
        MaskedChannelAttention(8, reduction=0)


def test_resize_prior_area_keeps_the_tumour_fraction() -> None:
    torch.manual_seed(0)
    prior = torch.rand(2, 1, 8, 8, 8)
    small = resize_prior(prior, (2, 4, 8))
    blocks = prior.reshape(2, 1, 2, 4, 4, 2, 8, 1).mean(dim=(3, 5, 7))  # 4×2×1 footprints, by hand
    torch.testing.assert_close(small, blocks)
    tiny_tumour = torch.zeros(1, 1, 16, 16, 16)
    tiny_tumour[0, 0, 5, 5, 5] = 1.0  # one voxel: area keeps it (1/64 of its cell), never drops it
    assert resize_prior(tiny_tumour, (4, 4, 4)).sum().item() == pytest.approx(1 / 64)
    bigger = resize_prior(torch.full((1, 1, 2, 2, 2), 3.0), (4, 4, 4))  # upsampling: trilinear, clamped
    assert bigger.shape == (1, 1, 4, 4, 4) and torch.equal(bigger, torch.ones_like(bigger))
    with pytest.raises(ConfigError, match=r"\(4, 4\)"):
        resize_prior(prior, (4, 4))
    with pytest.raises(InputError, match=r"\(2, 8, 8, 8\)"):
        resize_prior(prior[:, 0], (4, 4, 4))


# ---------------------------------------------------------------- the diagnoser


def _model(**kwargs: object) -> AdaptiveDiagnoser:
    torch.manual_seed(0)
    options = {"backbone_options": TINY, "dropout": 0.0, **kwargs}
    return AdaptiveDiagnoser(**options).eval()  # type: ignore[arg-type]


def _priors() -> tuple[torch.Tensor, torch.Tensor]:
    """Two priors on opposite corners of the 32³ grid (different cells of the 2³ feature grid)."""
    first, second = torch.zeros(2, 1, SIZE, SIZE, SIZE), torch.zeros(2, 1, SIZE, SIZE, SIZE)
    first[:, :, :12, :12, :12] = 1.0
    second[:, :, 20:, 20:, 20:] = 0.7
    return first, second


def _image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 1, SIZE, SIZE, SIZE)


def test_mca_logits_depend_on_the_prior() -> None:
    model = _model(mca=True)
    first, second = _priors()
    with torch.no_grad():
        a, b = model(_image(), first), model(_image(), second)
    assert a.shape == (2, 4)
    assert (a - b).abs().max() > 1e-4


def test_without_mca_or_input_prior_the_prior_is_ignored() -> None:
    model = _model(mca=False, input_prior="none")
    first, second = _priors()
    with torch.no_grad():
        a, b, c = model(_image(), first), model(_image(), second), model(_image())
    assert torch.equal(a, b) and torch.equal(a, c)
    assert model.classifier.in_features == model.backbone.out_channels


@pytest.mark.parametrize("input_prior", ["multiply", "channel"])
def test_input_prior_reaches_the_input(input_prior: str) -> None:
    model = _model(mca=False, input_prior=input_prior)
    assert model.backbone.features.conv0.in_channels == (2 if input_prior == "channel" else 1)
    first, second = _priors()
    with torch.no_grad():
        assert (model(_image(), first) - model(_image(), second)).abs().max() > 1e-4
        torch.testing.assert_close(model(_image(), first.double()), model(_image(), first))  # prior dtype follows image


def test_head_is_linear_on_global_and_attended_pools() -> None:
    model = _model(mca=True)
    image, (prior, _) = _image(), _priors()
    with torch.no_grad():
        logits, w = model.forward_with_weights(image, prior)
        pooled = model.backbone(image).mean(dim=(2, 3, 4))
        # Eq. (9): GAP(F ⊙ w) = GAP(F) ⊙ w, concatenated after GAP(F)
        expected = model.classifier(torch.cat([pooled, pooled * w], dim=1))
    torch.testing.assert_close(logits, expected)
    assert model.classifier.in_features == 2 * model.backbone.out_channels


@pytest.mark.parametrize(("mca", "input_prior"), [(True, "none"), (True, "multiply"), (False, "channel")])
def test_missing_or_empty_prior_means_whole_brain(mca: bool, input_prior: str) -> None:
    model = _model(mca=mca, input_prior=input_prior)
    image, (prior, _) = _image(), _priors()
    mixed = prior.clone()
    mixed[0] = 0.0  # sample 0 has an empty prior
    with torch.no_grad():
        whole = model(image, torch.ones_like(prior))
        torch.testing.assert_close(model(image), whole)
        out = model(image, mixed)
        torch.testing.assert_close(out[0], whole[0])
        torch.testing.assert_close(out[1], model(image, prior)[1])
    assert torch.isfinite(out).all()


def test_gradient_reaches_the_mca_mlp_and_the_backbone() -> None:
    model = _model(mca=True).train()
    image, (prior, _) = _image(), _priors()
    loss = nn.functional.cross_entropy(model(image, prior), torch.tensor([0, 3]))
    loss.backward()
    for layer in (model.mca.mlp[0], model.mca.mlp[2]):  # type: ignore[union-attr]
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert model.backbone.features.conv0.weight.grad.abs().sum() > 0


def test_custom_backbone_module() -> None:
    class Trunk(nn.Module):
        out_channels = 5

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv3d(1, 5, 3, stride=4, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.conv(x))

    torch.manual_seed(0)
    model = AdaptiveDiagnoser(Trunk(), n_classes=3, reduction=1).eval()  # C = 5: keep a 5-wide hidden layer
    first, second = _priors()
    with torch.no_grad():
        assert model(_image(), first).shape == (2, 3)
        assert not torch.equal(model(_image(), first), model(_image(), second))


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"backbone": "alexnet"}, r"'alexnet'.*densenet"),
    ({"n_classes": 1}, "n_classes.*got 1"),
    ({"reduction": 0}, "reduction.*got 0"),
    ({"input_prior": "crop"}, "'crop'"),
    ({"dropout": 1.0}, "dropout.*1.0"),
    ({"mca": "yes"}, "'yes'"),
    ({"backbone": nn.Identity(), "backbone_options": None}, "out_channels.*None"),
    ({"backbone": nn.Identity(), "backbone_options": {"width": "tiny"}}, "backbone name only"),
    ({"backbone_options": {"width": "tiny", "depth": 2}}, r"\['depth'\]"),
])
def test_bad_arguments_raise_config_errors(kwargs: dict[str, object], pattern: str) -> None:
    options = {"backbone_options": TINY, **kwargs}
    with pytest.raises(ConfigError, match=pattern):
        AdaptiveDiagnoser(**options)  # type: ignore[arg-type]


def test_bad_inputs_raise_input_errors_naming_the_shape() -> None:
    model = _model()
    with pytest.raises(InputError, match=r"prior.*\(2, 1, 32, 32, 32\).*\(2, 1, 16, 16, 16\)"):
        model(_image(), torch.ones(2, 1, 16, 16, 16))
    with pytest.raises(InputError, match=r"prior.*\(2, 32, 32, 32\)"):
        model(_image(), torch.ones(2, SIZE, SIZE, SIZE))
    with pytest.raises(InputError, match=r"prior.*-0.5"):
        model(_image(), torch.full((2, 1, SIZE, SIZE, SIZE), -0.5))
    with pytest.raises(InputError, match=r"image.*\(2, 3, 32, 32, 32\)"):
        model(torch.randn(2, 3, SIZE, SIZE, SIZE))


def test_grad_cam_on_the_feature_module() -> None:
    model = _model(mca=True, input_prior="multiply")
    model.train()  # grad_cam must switch to eval and restore
    image, (prior, _) = _image(), _priors()
    cam = grad_cam(model, model.feature_module, image, [1, 2], additional_forward_args=(prior,))
    assert cam.shape == (2, SIZE, SIZE, SIZE) and np.isfinite(cam).all()
    assert cam.min() >= 0 and cam.max() <= 1 and cam.max() == pytest.approx(1.0)
    assert model.training
