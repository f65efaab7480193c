"""Integrated Gradients: against captum, closed forms, completeness, bounded batches, the binary bug."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.explain import class_outputs, class_probability, ig_channel_shares, integrated_gradients

torch.set_num_threads(1)
SHAPE = (2, 6, 6, 6)


class TinyCNN(nn.Module):
    """Two convolutions, global pooling, a linear head: (B, C, X, Y, Z) → (B, n_out) logits."""

    def __init__(self, channels: int = 2, n_out: int = 3, tabular: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(channels, 4, 3, padding=1), nn.Tanh(),
                                      nn.Conv3d(4, 4, 3, padding=1, stride=2), nn.Tanh(),
                                      nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(4 + tabular, n_out)

    def forward(self, image: Tensor, tabular: Tensor | None = None) -> Tensor:
        features = self.features(image)
        return self.head(features if tabular is None else torch.cat([features, tabular], dim=1))


class LinearLogits(nn.Module):
    """Class scores linear in the input: logits_k = Σ W_k ⊙ x + b_k."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, *SHAPE))
        self.bias = nn.Parameter(torch.randn(n_out))

    def forward(self, image: Tensor) -> Tensor:
        return torch.einsum("bcxyz,kcxyz->bk", image, self.weight) + self.bias


@pytest.fixture
def images() -> Tensor:
    torch.manual_seed(0)
    return torch.randn(3, *SHAPE)


def test_class_probability_is_softmax_and_binary_sigmoid(images: Tensor) -> None:
    torch.manual_seed(1)
    multi, binary = TinyCNN(n_out=3), TinyCNN(n_out=1)
    torch.testing.assert_close(class_probability(multi, 2)(images), torch.softmax(multi(images), 1)[:, 2])
    p = torch.sigmoid(binary(images)[:, 0])
    torch.testing.assert_close(class_probability(binary, 1)(images), p)
    torch.testing.assert_close(class_probability(binary, 0)(images), 1 - p)
    torch.testing.assert_close(class_outputs(binary, output="logit")(images)[:, 0], -binary(images)[:, 0])
    with pytest.raises(ConfigError, match="target class 3 does not exist"):
        class_probability(multi, 3)(images)
    with pytest.raises(ConfigError, match="binary=True"):
        class_probability(multi, 0, binary=True)(images)
    with pytest.raises(ConfigError, match="target"):
        class_probability(multi, -1)


def test_ig_matches_captum_with_per_sample_targets(images: Tensor) -> None:
    torch.manual_seed(2)
    model = TinyCNN(n_out=3).eval()
    ours = integrated_gradients(model, images, [0, 2, 1], n_steps=16, internal_batch_size=4)
    theirs = IntegratedGradients(lambda x: torch.softmax(model(x), 1)).attribute(
        images, baselines=torch.zeros_like(images), target=[0, 2, 1], n_steps=16)
    assert len(ours) == 1 and ours[0].shape == images.shape
    torch.testing.assert_close(ours[0], theirs, rtol=1e-5, atol=1e-8)


def test_ig_of_a_linear_logit_is_weight_times_displacement(images: Tensor) -> None:
    torch.manual_seed(3)
    model = LinearLogits(3)
    baseline = torch.randn(1, *SHAPE)
    (attr,) = integrated_gradients(model, images, 1, baselines=baseline, output="logit", n_steps=3)
    expected = model.weight[1].detach() * (images - baseline)
    torch.testing.assert_close(attr, expected, rtol=1e-5, atol=1e-5)


def test_ig_is_complete_on_probabilities(images: Tensor) -> None:
    torch.manual_seed(4)
    model = TinyCNN(n_out=3).eval()
    (attr,) = integrated_gradients(model, images, 1, n_steps=64)
    prob = class_probability(model, 1)
    with torch.no_grad():
        gap = (prob(images) - prob(torch.zeros_like(images))).double()
    assert gap.abs().min() > 1e-3  # the test is not vacuous
    torch.testing.assert_close(attr.double().sum(dim=(1, 2, 3, 4)), gap, rtol=1e-3, atol=1e-5)


def test_internal_batch_size_bounds_forward_batches_and_keeps_results(images: Tensor) -> None:
    torch.manual_seed(5)
    model = TinyCNN(n_out=3).eval()
    seen: list[int] = []
    model.features.register_forward_hook(lambda module, args, out: seen.append(int(args[0].shape[0])))
    (small,) = integrated_gradients(model, images, 2, n_steps=20, internal_batch_size=3)
    assert seen and max(seen) <= 3
    seen.clear()
    (large,) = integrated_gradients(model, images, 2, n_steps=20, internal_batch_size=1000)
    assert max(seen) == 20  # one sample at a time: all steps of that sample together
    torch.testing.assert_close(small, large, rtol=1e-5, atol=1e-8)


def test_binary_class_zero_is_the_sign_flipped_class_one(images: Tensor) -> None:
    torch.manual_seed(6)
    model = TinyCNN(n_out=1)
    (one,) = integrated_gradients(model, images, 1, n_steps=8)
    (zero,) = integrated_gradients(model, images, 0, n_steps=8)
    assert one.abs().sum() > 0 and zero.abs().sum() > 0  # the reference's slice gave all zeros here
    torch.testing.assert_close(zero, -one, rtol=1e-5, atol=1e-8)


def test_smoothgrad_is_seeded_and_equals_captum_noise_tunnel(images: Tensor) -> None:
    torch.manual_seed(7)
    model = TinyCNN(n_out=3).eval()
    sample = images[:1]
    state = torch.get_rng_state()
    (ours,) = integrated_gradients(model, sample, 1, n_steps=8, smooth_repeats=3, noise_fraction=0.05, seed=11)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is untouched
    (again,) = integrated_gradients(model, sample, 1, n_steps=8, smooth_repeats=3, noise_fraction=0.05, seed=11)
    (other,) = integrated_gradients(model, sample, 1, n_steps=8, smooth_repeats=3, noise_fraction=0.05, seed=12)
    (plain,) = integrated_gradients(model, sample, 1, n_steps=8)
    torch.testing.assert_close(ours, again, rtol=0, atol=0)
    assert not torch.allclose(ours, other) and not torch.allclose(ours, plain)
    torch.manual_seed(11)
    theirs = NoiseTunnel(IntegratedGradients(lambda x: torch.softmax(model(x), 1))).attribute(
        sample, nt_type="smoothgrad", nt_samples=3, nt_samples_batch_size=1,
        stdevs=0.05 * float(np.std(sample.numpy())), baselines=torch.zeros_like(sample), target=1, n_steps=8)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_image_and_tabular_are_attributed_and_model_mode_restored(images: Tensor) -> None:
    torch.manual_seed(8)
    model = TinyCNN(n_out=2, tabular=3, dropout=0.5)  # training mode: dropout would make IG random
    tabular = torch.randn(3, 3)
    img_attr, tab_attr = integrated_gradients(model, (images, tabular), 1, n_steps=64)
    assert model.training and model.features[-1].training
    assert img_attr.shape == images.shape and tab_attr.shape == tabular.shape
    model.eval()
    prob = class_probability(model, 1)
    with torch.no_grad():
        gap = prob(images, tabular) - prob(torch.zeros_like(images), torch.zeros_like(tabular))
    total = img_attr.sum(dim=(1, 2, 3, 4)) + tab_attr.sum(dim=1)
    torch.testing.assert_close(total, gap, rtol=1e-3, atol=1e-5)
    (held,) = integrated_gradients(model, images, 1, n_steps=16, additional_forward_args=(tabular,))
    theirs = IntegratedGradients(lambda x, t: torch.softmax(model(x, t), 1)).attribute(
        images, target=1, n_steps=16, additional_forward_args=(tabular,))
    torch.testing.assert_close(held, theirs, rtol=1e-5, atol=1e-8)


def test_ig_rejects_bad_arguments(images: Tensor) -> None:
    model = TinyCNN(n_out=3)
    with pytest.raises(ConfigError, match="n_steps"):
        integrated_gradients(model, images, 0, n_steps=0)
    with pytest.raises(ConfigError, match="internal_batch_size"):
        integrated_gradients(model, images, 0, internal_batch_size=0)
    with pytest.raises(ConfigError, match="method"):
        integrated_gradients(model, images, 0, method="simpson")
    with pytest.raises(ConfigError, match="noise_fraction"):
        integrated_gradients(model, images, 0, smooth_repeats=2, noise_fraction=-1.0)
    with pytest.raises(ConfigError, match="target class 3 does not exist: the model has 3 classes"):
        integrated_gradients(model, images, [0, 3, 1])
    with pytest.raises(ConfigError, match="one per sample"):
        integrated_gradients(model, images, [0, 1])
    with pytest.raises(ConfigError, match="torch.nn.Module"):
        integrated_gradients("model", images, 0)  # type: ignore[arg-type]
    bad = images.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="1 values are NaN"):
        integrated_gradients(model, bad, 0)
    with pytest.raises(InputError, match="baselines"):
        integrated_gradients(model, images, 0, baselines=torch.zeros(2, *SHAPE))


def test_ig_channel_shares_by_hand() -> None:
    attribution = np.zeros((3, 4, 4, 4))
    attribution[0, 0, 0, 0] = -3.0
    attribution[1, 1, 1, 1] = 1.0
    np.testing.assert_allclose(ig_channel_shares(attribution), [0.75, 0.25, 0.0])
    smoothed = ig_channel_shares(attribution, sigma_vox=1.0)
    assert smoothed[2] == 0 and abs(smoothed.sum() - 1) < 1e-12
    assert np.isnan(ig_channel_shares(np.zeros((2, 3, 3, 3)))).all()
    with pytest.raises(InputError, match="C, X, Y, Z"):
        ig_channel_shares(np.zeros((3, 3, 3)))
