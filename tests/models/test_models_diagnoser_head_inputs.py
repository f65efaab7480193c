"""The diagnoser head's optional inputs: the prior's geometry (checked by hand / numpy), clinical variables and
the lesion-crop branch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.diagnoser import AdaptiveDiagnoser, drop_branch
from vbiopsy.models.lesion_crop_encoder import LesionCropEncoder, stage_channels
from vbiopsy.models.prior_geometry import N_GEOMETRY_FEATURES, VOLUME_EPS, VOLUME_SCALE, prior_geometry

torch.set_num_threads(1)
TINY = {"width": "tiny"}


def test_geometry_of_a_single_voxel_by_hand() -> None:
    prior = torch.zeros(1, 1, 4, 5, 2)
    prior[0, 0, 0, 4, 1] = 1.0
    g = prior_geometry(prior)[0]
    # voxel-centre coordinates in [-1, 1]: index i of n → (i + 0.5) / n · 2 − 1
    assert g[:3].tolist() == pytest.approx([-0.75, 0.8, 0.5])
    assert g[3].item() == pytest.approx(0.75)  # |x|
    assert g[4:7].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)  # no spread
    assert g[7].item() == pytest.approx(math.log(1 / 40 + VOLUME_EPS) / VOLUME_SCALE)


def test_geometry_matches_numpy_for_a_soft_prior() -> None:
    rng = np.random.default_rng(0)
    prior = rng.random((2, 1, 6, 7, 8)).astype(np.float32) ** 4
    g = prior_geometry(torch.from_numpy(prior)).numpy()
    assert g.shape == (2, N_GEOMETRY_FEATURES)
    for b in range(2):
        m = prior[b, 0].astype(np.float64)
        axes = [np.linspace(-1 + 1 / n, 1 - 1 / n, n) for n in m.shape]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"))
        w = m / m.sum()
        centre = (grid * w).sum(axis=(1, 2, 3))
        spread = np.sqrt((((grid - centre[:, None, None, None]) ** 2) * w).sum(axis=(1, 2, 3)))
        volume = np.log(m.sum() / m.size + VOLUME_EPS) / VOLUME_SCALE
        np.testing.assert_allclose(g[b], [*centre, abs(centre[0]), *spread, volume], rtol=1e-4, atol=1e-5)


def test_geometry_sees_a_left_right_flip_only_in_the_signed_x() -> None:
    prior = torch.zeros(1, 1, 8, 8, 8)
    prior[0, 0, 1:3, 2:6, 3:5] = 1.0
    g, flipped = prior_geometry(prior)[0], prior_geometry(prior.flip(2))[0]
    assert flipped[0].item() == pytest.approx(-g[0].item())
    torch.testing.assert_close(flipped[1:], g[1:])


def test_geometry_refuses_a_wrong_shape() -> None:
    with pytest.raises(InputError, match="prior"):
        prior_geometry(torch.zeros(1, 2, 4, 4, 4))


def test_geometry_changes_the_prediction_with_where_the_prior_is() -> None:
    torch.manual_seed(0)
    model = AdaptiveDiagnoser("densenet", mca=False, input_prior="none", geometry=True, backbone_options=TINY).eval()
    image = torch.randn(1, 1, 16, 16, 16)
    left, right = torch.zeros(1, 1, 16, 16, 16), torch.zeros(1, 1, 16, 16, 16)
    left[..., 1:5, 6:10, 6:10] = 1.0
    right[..., 6:10, 6:10, 6:10] = 1.0
    with torch.no_grad():
        assert not torch.allclose(model(image, left), model(image, right))
    assert model.classifier.in_features == model.backbone.out_channels + N_GEOMETRY_FEATURES


def test_clinical_inputs_are_imputed_and_standardised_inside_the_model() -> None:
    model = AdaptiveDiagnoser("densenet", clinical_features=2, backbone_options=TINY)
    model.set_clinical_statistics([40.0, 1.0], [50.0, 0.5], [10.0, 0.5])
    like = torch.zeros(1)
    values = model.clinical_inputs(torch.tensor([[30.0, float("nan")], [float("nan"), 0.0]]), 2, like)
    # by hand: (30 − 50) / 10 = −2, NaN sex → fill 1 → (1 − 0.5) / 0.5 = 1; NaN age → 40 → −1; sex 0 → −1
    torch.testing.assert_close(values, torch.tensor([[-2.0, 1.0], [-1.0, -1.0]]))
    state = model.state_dict()
    assert state["clinical_mean"].tolist() == [50.0, 0.5]  # statistics travel with the checkpoint
    copy = AdaptiveDiagnoser("densenet", clinical_features=2, backbone_options=TINY)
    copy.load_state_dict(state)
    assert copy.clinical_fill.tolist() == [40.0, 1.0]


def test_clinical_inputs_change_the_prediction_and_are_required() -> None:
    torch.manual_seed(0)
    model = AdaptiveDiagnoser("densenet", clinical_features=1, backbone_options=TINY).eval()
    image, prior = torch.randn(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        young, old = model(image, prior, torch.tensor([[10.0]])), model(image, prior, torch.tensor([[80.0]]))
    assert not torch.allclose(young, old)
    with pytest.raises(InputError, match="clinical"):
        model(image, prior)
    with pytest.raises(InputError, match="finite"):
        model(image, prior, torch.tensor([[float("inf")]]))


def test_clinical_statistics_are_validated() -> None:
    model = AdaptiveDiagnoser("densenet", clinical_features=1, backbone_options=TINY)
    with pytest.raises(ConfigError, match="std must be positive"):
        model.set_clinical_statistics([1.0], [0.0], [0.0])
    with pytest.raises(ConfigError, match="1 finite values"):
        model.set_clinical_statistics([1.0, 2.0], [0.0], [1.0])
    with pytest.raises(ConfigError, match="no clinical inputs"):
        AdaptiveDiagnoser("densenet", backbone_options=TINY).set_clinical_statistics([], [], [])
    with pytest.raises(ConfigError, match="clinical_features"):
        AdaptiveDiagnoser("densenet", clinical_features=-1, backbone_options=TINY)
    with pytest.raises(ConfigError, match="geometry"):
        AdaptiveDiagnoser("densenet", geometry="yes", backbone_options=TINY)  # type: ignore[arg-type]


def test_the_paper_model_keeps_its_state_dict_keys() -> None:
    keys = set(AdaptiveDiagnoser("densenet", backbone_options=TINY).state_dict())
    assert not any(k.startswith("clinical_") for k in keys)
    assert not any(k.startswith("crop_encoder") for k in keys)


def test_lesion_crop_encoder_layout_and_checks() -> None:
    encoder = LesionCropEncoder(2, width=4, stages=4)
    assert stage_channels(4, 4) == [4, 8, 16, 16] and encoder.out_channels == 16 and encoder.min_size == 8
    assert encoder(torch.randn(3, 2, 8, 10, 12)).shape == (3, 16)
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv3d)]
    pools = [m for m in encoder.modules() if isinstance(m, torch.nn.MaxPool3d)]
    assert [c.out_channels for c in convs] == [4, 8, 16, 16] and len(pools) == 3
    with pytest.raises(InputError, match=">= 8"):
        encoder(torch.randn(1, 2, 6, 8, 8))
    with pytest.raises(InputError, match="\\(B, 2, X, Y, Z\\)"):
        encoder(torch.randn(1, 3, 8, 8, 8))
    with pytest.raises(ConfigError, match="stages"):
        LesionCropEncoder(2, stages=7)
    with pytest.raises(ConfigError, match="width"):
        LesionCropEncoder(2, width=0)


def test_the_crop_branch_feeds_the_head_and_is_required() -> None:
    torch.manual_seed(0)
    plain = AdaptiveDiagnoser("densenet", backbone_options=TINY)
    model = AdaptiveDiagnoser("densenet", backbone_options=TINY, crop_channels=2, crop_width=4).eval()
    assert model.classifier.in_features == plain.classifier.in_features + 16
    image, prior = torch.randn(2, 1, 16, 16, 16), torch.rand(2, 1, 16, 16, 16)
    crop = torch.randn(2, 2, 12, 12, 12)
    with torch.no_grad():
        a, b = model(image, prior, None, crop), model(image, prior, crop=crop.flip(2))
    assert not torch.allclose(a, b)  # the crop reaches the logits
    logits = model.train()(image, prior, crop=crop)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.crop_encoder.parameters())
    with pytest.raises(InputError, match="lesion crop"):
        model(image, prior)
    with pytest.raises(InputError, match="lesion crop"):
        model(image, prior, crop=crop[:1])


def test_drop_branch_zeroes_whole_rows_and_rescales_the_kept_ones() -> None:
    torch.manual_seed(0)
    features = torch.rand(4000, 6) + 0.5
    dropped = drop_branch(features, 0.25)
    zero = (dropped == 0).all(dim=1)
    assert ((dropped == 0).any(dim=1) == zero).all()  # a row goes as a whole
    assert torch.allclose(dropped[~zero], features[~zero] / 0.75)
    assert abs(zero.float().mean().item() - 0.25) < 0.03  # 4000 rows: sd of the rate ≈ 0.007
    assert torch.equal(drop_branch(features, 0.0), features)


def test_whole_brain_dropout_acts_in_training_only_and_needs_a_crop_branch() -> None:
    torch.manual_seed(0)
    model = AdaptiveDiagnoser("densenet", backbone_options=TINY, crop_channels=1, crop_width=4,
                              whole_brain_dropout=0.5, dropout=0.0)
    plain = AdaptiveDiagnoser("densenet", backbone_options=TINY, crop_channels=1, crop_width=4, dropout=0.0)
    plain.load_state_dict(model.state_dict())  # same parameters and keys: the rate is not state
    image, prior, crop = torch.randn(8, 1, 16, 16, 16), torch.rand(8, 1, 16, 16, 16), torch.randn(8, 1, 8, 8, 8)
    model.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(model(image, prior, crop=crop), plain(image, prior, crop=crop))
    # training: a dropped sample's logits are those of the crop branch alone (whole-brain features zeroed)
    model.train()
    for m in model.modules():  # freeze BatchNorm statistics so the two passes see the same normalisation
        if isinstance(m, torch.nn.BatchNorm3d):
            m.eval()
    torch.manual_seed(3)
    with torch.no_grad():
        logits = model(image, prior, crop=crop)
        crop_only = model.classifier.bias + model.crop_encoder(crop) @ model.classifier.weight[:, -16:].T
    alone = torch.isclose(logits, crop_only, atol=1e-5).all(dim=1)
    assert 0 < int(alone.sum()) < 8  # seed 3: some samples dropped, some kept
    with pytest.raises(ConfigError, match="needs a crop branch"):
        AdaptiveDiagnoser("densenet", backbone_options=TINY, whole_brain_dropout=0.5)
    with pytest.raises(ConfigError, match="whole_brain_dropout"):
        AdaptiveDiagnoser("densenet", backbone_options=TINY, crop_channels=1, whole_brain_dropout=1.0)


def test_crop_dropout_leaves_a_dropped_sample_with_its_whole_brain_features_only() -> None:
    torch.manual_seed(0)
    model = AdaptiveDiagnoser("densenet", backbone_options=TINY, crop_channels=1, crop_width=4, crop_dropout=0.5,
                              dropout=0.0)
    plain = AdaptiveDiagnoser("densenet", backbone_options=TINY, crop_channels=1, crop_width=4, dropout=0.0)
    plain.load_state_dict(model.state_dict())
    image, prior, crop = torch.randn(8, 1, 16, 16, 16), torch.rand(8, 1, 16, 16, 16), torch.randn(8, 1, 8, 8, 8)
    model.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(model(image, prior, crop=crop), plain(image, prior, crop=crop))
        no_crop = plain(image, prior, crop=torch.zeros_like(crop)) - model.classifier.weight[:, -16:] @ \
            model.crop_encoder(torch.zeros_like(crop))[0]  # the head without the crop features
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.eval()
    torch.manual_seed(3)
    with torch.no_grad():
        logits = model(image, prior, crop=crop)
    dropped = torch.isclose(logits, no_crop, atol=1e-5).all(dim=1)
    assert 0 < int(dropped.sum()) < 8
    with pytest.raises(ConfigError, match="crop_dropout=0.5 needs a crop branch"):
        AdaptiveDiagnoser("densenet", backbone_options=TINY, crop_dropout=0.5)


def test_head_dropout_acts_on_image_features_not_on_tabular_inputs() -> None:
    torch.manual_seed(0)
    model = AdaptiveDiagnoser("densenet", backbone_options=TINY, clinical_features=2, dropout=0.5).train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.eval()
    model.set_clinical_statistics([0.0, 0.0], [1.0, 2.0], [2.0, 4.0])
    image, prior = torch.randn(6, 1, 16, 16, 16), torch.rand(6, 1, 16, 16, 16)
    clinical = torch.randn(6, 2)
    shifted = clinical + torch.tensor([1.0, -2.0])
    with torch.no_grad():
        torch.manual_seed(5)
        first = model(image, prior, clinical)
        torch.manual_seed(5)  # the same dropout masks on the image features
        second = model(image, prior, shifted)
        torch.manual_seed(6)
        other_mask = model(image, prior, clinical)
    # tabular inputs enter whole: the change in logits is exactly the head's weights times the scaled shift
    expected = model.classifier.weight[:, -2:] @ torch.tensor([1.0 / 2.0, -2.0 / 4.0])
    assert torch.allclose(second - first, expected.expand_as(first), atol=1e-5)
    assert not torch.allclose(first, other_mask)  # while the image features are dropped at random
