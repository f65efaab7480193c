"""Exact Shapley values: axioms, a game solved by hand, equality with captum's ShapleyValues."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from captum.attr import ShapleyValues
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.explain import (ShapleyResult, channel_shapley, class_probability, coalition_matrix, exact_shapley,
                             mean_shares)

torch.set_num_threads(1)
SPATIAL = (6, 6, 6)


class ChannelMixer(nn.Module):
    """Non-linear in the channels (so the players interact), optionally with tabular features."""

    def __init__(self, channels: int = 4, tabular: int = 0, n_out: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, 5, 3, padding=1)
        self.head = nn.Sequential(nn.Linear(5 + tabular, 6), nn.Tanh(), nn.Linear(6, n_out))

    def forward(self, image: Tensor, tabular: Tensor | None = None) -> Tensor:
        features = torch.tanh(self.conv(image)).mean(dim=(2, 3, 4))
        return self.head(features if tabular is None else torch.cat([features, tabular], dim=1))


def _random_game(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=2**n)


def _play(values: np.ndarray):  # type: ignore[no-untyped-def]
    """The game whose coalition m (bit i = player i) is worth ``values[m]``."""
    return lambda coalitions: values[(coalitions * (1 << np.arange(coalitions.shape[1]))).sum(axis=1)]


def test_coalition_matrix_enumerates_every_subset_once() -> None:
    matrix = coalition_matrix(4)
    assert matrix.shape == (16, 4) and matrix.dtype == bool
    assert {tuple(row) for row in matrix} == set(itertools.product([False, True], repeat=4))
    assert not matrix[0].any() and matrix[-1].all() and list(matrix[5]) == [True, False, True, False]


def test_quadratic_game_solved_by_hand() -> None:
    # v(S) = (Σ_{i∈S} w_i)²: each w_i² goes to i, each cross term 2·w_i·w_j is split evenly,
    # so φ_i = w_i · Σ_j w_j; with w = (1, 2, 3): φ = (6, 12, 18).
    weights = np.array([1.0, 2.0, 3.0])
    calls: list[int] = []

    def value(coalitions: np.ndarray) -> np.ndarray:
        calls.append(len(coalitions))
        return (coalitions @ weights) ** 2

    np.testing.assert_allclose(exact_shapley(value, 3), [6.0, 12.0, 18.0], rtol=1e-12)
    assert calls == [8]  # all coalitions in one batched call


@pytest.mark.parametrize("n", [1, 3, 5])
def test_efficiency_symmetry_dummy_additivity(n: int) -> None:
    values = _random_game(n, n)
    values[0] = 0.3
    phi = exact_shapley(_play(values), n)
    assert phi.sum() == pytest.approx(values[-1] - values[0], abs=1e-12)
    other = _random_game(n, 100 + n)
    np.testing.assert_allclose(exact_shapley(_play(values + other), n),
                               phi + exact_shapley(_play(other), n), atol=1e-12)
    if n < 3:
        return
    # player 0 a dummy (adds 0.7 to every coalition), players 1 and 2 interchangeable
    members = coalition_matrix(n)
    key = members[:, 1].astype(int) + members[:, 2]
    table = np.random.default_rng(7).normal(size=(3, 2 ** (n - 3)))
    rest = (members[:, 3:] * (1 << np.arange(n - 3))).sum(axis=1)
    game = table[key, rest] + 0.7 * members[:, 0]
    phi = exact_shapley(_play(game), n)
    assert phi[0] == pytest.approx(0.7, abs=1e-12) and phi[1] == pytest.approx(phi[2], abs=1e-12)


def test_exact_shapley_checks_the_game() -> None:
    with pytest.raises(InputError, match=r"expected shape \(8,\)"):
        exact_shapley(lambda c: np.zeros(7), 3)
    with pytest.raises(InputError, match="NaN"):
        exact_shapley(lambda c: np.full(len(c), np.nan), 2)
    with pytest.raises(ConfigError, match="n_players"):
        exact_shapley(lambda c: np.zeros(len(c)), 0)
    with pytest.raises(ConfigError, match="at most 16"):
        coalition_matrix(17)


def _channel_mask(channels: int, spatial: tuple[int, int, int] = SPATIAL) -> Tensor:
    return torch.arange(channels).reshape(1, channels, 1, 1, 1).expand(1, channels, *spatial).contiguous()


def test_channel_shapley_equals_captum_shapley_values() -> None:
    torch.manual_seed(0)
    model = ChannelMixer().eval()
    image = torch.randn(1, 4, *SPATIAL) + 1.0
    result = channel_shapley(model, image, 2, channel_names=["raw", "zg", "zl", "log"])
    attr = ShapleyValues(class_probability(model, 2)).attribute(
        image, baselines=0.0, feature_mask=_channel_mask(4), perturbations_per_eval=24)
    np.testing.assert_allclose(result.values, attr[0, :, 0, 0, 0].double().numpy(), rtol=1e-5, atol=1e-7)
    assert result.players == ["raw", "zg", "zl", "log"]
    with torch.no_grad():
        full = float(class_probability(model, 2)(image))
        empty = float(class_probability(model, 2)(torch.zeros_like(image)))
    assert result.full_value == pytest.approx(full, abs=1e-6) and result.base_value == pytest.approx(empty, abs=1e-6)
    assert result.values.sum() == pytest.approx(full - empty, abs=1e-6)
    assert np.abs(result.values).min() > 0


def test_channel_and_tabular_shapley_equals_captum_and_batching_is_neutral() -> None:
    torch.manual_seed(1)
    model = ChannelMixer(tabular=3, n_out=1)
    image, tabular = torch.randn(1, 4, 4, 4, 4), torch.tensor([[0.8, 1.0, -0.5]])  # 4³: captum takes 5040 orders
    mean = torch.tensor([0.1, 0.5, 0.2])
    per_channel = torch.tensor([0.0, 0.3, -0.2, 0.1]).reshape(1, 4, 1, 1, 1)
    result = channel_shapley(model, image, 0, tabular=tabular, image_baseline=per_channel, tabular_baseline=mean,
                             tabular_names=["age", "sex", "eor"])
    assert result.players == ["channel_0", "channel_1", "channel_2", "channel_3", "age", "sex", "eor"]
    model.eval()
    attr_img, attr_tab = ShapleyValues(class_probability(model, 0)).attribute(
        (image, tabular), baselines=(per_channel.expand_as(image), mean[None]),
        feature_mask=(_channel_mask(4, (4, 4, 4)), torch.tensor([[4, 5, 6]])), perturbations_per_eval=256)
    expected = np.concatenate([attr_img[0, :, 0, 0, 0].numpy(), attr_tab[0].numpy()])
    np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-7)
    assert np.abs(result.values).min() > 1e-6  # every player, tabular ones included, matters
    one_by_one = channel_shapley(model, image, 0, tabular=tabular, image_baseline=per_channel,
                                 tabular_baseline=mean, batch_size=1)
    np.testing.assert_allclose(one_by_one.values, result.values, rtol=1e-5, atol=1e-8)


def test_channel_shapley_rejects_bad_input() -> None:
    model = ChannelMixer()
    with pytest.raises(InputError, match="one sample"):
        channel_shapley(model, torch.zeros(2, 4, *SPATIAL), 0)
    with pytest.raises(ConfigError, match="tabular_baseline is required"):
        channel_shapley(ChannelMixer(tabular=2), torch.zeros(1, 4, *SPATIAL), 0, tabular=torch.zeros(1, 2))
    with pytest.raises(InputError, match="does not broadcast"):
        channel_shapley(model, torch.zeros(1, 4, *SPATIAL), 0, image_baseline=torch.zeros(3))
    with pytest.raises(ConfigError, match="channel_names must name 4"):
        channel_shapley(model, torch.zeros(1, 4, *SPATIAL), 0, channel_names=["raw"])
    with pytest.raises(ConfigError, match="batch_size"):
        channel_shapley(model, torch.zeros(1, 4, *SPATIAL), 0, batch_size=0)


def test_shares_and_their_mean_over_patients() -> None:
    first = ShapleyResult(["a", "b"], np.array([0.3, -0.1]), 0.2, 0.4)
    second = ShapleyResult(["a", "b"], np.array([0.1, 0.1]), 0.5, 0.7)
    np.testing.assert_allclose(first.shares(), [0.75, 0.25])
    summary = mean_shares([first, second, ShapleyResult(["a", "b"], np.zeros(2), 0.5, 0.5)])
    assert summary["a"][0] == pytest.approx(0.625) and summary["b"][0] == pytest.approx(0.375)
    assert summary["a"][1] == pytest.approx(math.sqrt(2 * 0.125**2))  # sample std of (0.75, 0.5)
    assert math.isnan(mean_shares([first])["a"][1])
    assert first.to_dict()["shares"] == pytest.approx([0.75, 0.25])
    with pytest.raises(InputError, match="differ"):
        mean_shares([first, ShapleyResult(["b", "a"], np.ones(2), 0.0, 2.0)])
    with pytest.raises(InputError, match="all-zero"):
        mean_shares([ShapleyResult(["a"], np.zeros(1), 0.5, 0.5)])
    with pytest.raises(InputError, match="2 players"):
        ShapleyResult(["a", "b"], np.zeros(3), 0.0, 0.0)
