"""Tumour-composition features of MGMT-Net's marker head: values (vs NumPy), detachment, switch, learnability."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.marker_head import MarkerHead, composition_features, n_composition_features
from vbiopsy.models.mgmtnet import MGMTNet

torch.set_num_threads(1)


def test_features_match_numpy_weighted_statistics_with_a_pseudo_voxel() -> None:
    torch.manual_seed(0)
    logits, image = torch.randn(2, 4, 6, 5, 4) * 3, torch.randn(2, 3, 6, 5, 4)
    got = composition_features(logits, image).numpy()
    assert got.shape == (2, n_composition_features(3, 4)) == (2, 2 * 3 * 4)
    prob = torch.softmax(logits, 1).numpy().reshape(2, 4, -1)
    x = image.numpy().reshape(2, 3, -1).astype(np.float64)
    n = prob.shape[2]
    for b in range(2):
        volume = prob[b, 1:].sum(axis=1)
        expected = [np.log1p(volume) / np.log1p(n), volume / (volume.sum() + 1.0)]
        means, sds = [], []
        for r in range(1, 4):  # weighted statistics over the patch plus one voxel of value 0 and weight 1
            weights = np.append(prob[b, r], 1.0)
            for m in range(3):
                values = np.append(x[b, m], 0.0)
                mean = np.average(values, weights=weights)
                means.append(mean)
                sds.append(np.sqrt(np.average((values - mean) ** 2, weights=weights) + 1e-6))
        expected = np.concatenate([*expected, means, sds])
        np.testing.assert_allclose(got[b], expected, rtol=1e-4, atol=1e-5)


def test_empty_region_reads_as_brain_average_and_full_region_as_its_mean() -> None:
    logits = torch.full((1, 3, 4, 4, 4), -20.0)
    logits[:, 1] = 20.0  # every voxel is region 1, none region 2
    image = torch.full((1, 1, 4, 4, 4), 2.0)
    log_volume, share, mean, sd = composition_features(logits, image)[0].split(2)
    torch.testing.assert_close(log_volume, torch.tensor([1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(share, torch.tensor([64 / 65, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(mean, torch.tensor([2.0 * 64 / 65, 0.0]), atol=1e-5, rtol=0)
    assert float(sd[1]) == pytest.approx(1e-3, rel=1e-3)  # sqrt(0 + 1e-6)


def test_segmentation_is_detached_but_the_image_is_not() -> None:
    logits = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    image = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    composition_features(logits, image).sum().backward()
    assert logits.grad is None
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_head_reads_the_image_only_with_the_switch() -> None:
    torch.manual_seed(0)
    features, logits = torch.randn(1, 6, 2, 2, 2), torch.randn(1, 5, 8, 8, 8)
    bright = torch.randn(1, 4, 8, 8, 8)
    dim = bright - 2.0
    paper = MarkerHead(6, 3, hidden=5).eval()
    torch.testing.assert_close(paper(features, logits)[0], paper(features, logits, dim)[0])
    head = MarkerHead(6, 3, hidden=5, composition_modalities=4, seg_classes=5).eval()
    assert head.heads[0][1].in_features == 6 + 2 * 4 * 5
    assert not torch.allclose(head(features, logits, bright)[0], head(features, logits, dim)[0])


def test_paper_configuration_keeps_its_state_dict() -> None:
    torch.manual_seed(0)
    paper, composed = MGMTNet(), MGMTNet(marker_composition=True)
    assert paper.state_dict().keys() == composed.state_dict().keys()
    assert paper.marker_head.heads[0][1].in_features == 64  # bottleneck: width 16 · 2^(stages − 1)
    assert composed.marker_head.heads[0][1].in_features == 64 + 2 * 4 * 5


def test_composition_errors() -> None:
    with pytest.raises(ConfigError, match="composition_modalities must be an integer >= 0, got -1"):
        MarkerHead(6, 3, composition_modalities=-1, seg_classes=5)
    with pytest.raises(ConfigError, match="seg_classes must be an integer >= 2, got 0"):
        MarkerHead(6, 3, composition_modalities=4)
    head = MarkerHead(6, 3, composition_modalities=4, seg_classes=5)
    features, logits = torch.randn(1, 6, 2, 2, 2), torch.randn(1, 5, 8, 8, 8)
    with pytest.raises(InputError, match=r"need the input image \(batch, 4, X, Y, Z\), got None"):
        head(features, logits)
    with pytest.raises(InputError, match=r"need the input image \(batch, 4, X, Y, Z\), got \(1, 3, 8, 8, 8\)"):
        head(features, logits, torch.randn(1, 3, 8, 8, 8))
    with pytest.raises(InputError, match="expected 5 classes, got 4"):
        head(features, torch.randn(1, 4, 8, 8, 8), torch.randn(1, 4, 8, 8, 8))
    with pytest.raises(InputError, match=r"like the seg logits, got \(1, 4, 8, 8, 6\)"):
        composition_features(logits, torch.randn(1, 4, 8, 8, 6))


def _toy_batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A cube of 'enhancing tumour' (class 3) whose brightness on channel 1 is the label; features are noise."""
    label = torch.randint(0, 2, (n,), generator=generator)
    logits = torch.full((n, 5, 8, 8, 8), -10.0)
    logits[:, 0] = 10.0
    logits[:, 0, 2:6, 2:6, 2:6], logits[:, 3, 2:6, 2:6, 2:6] = -10.0, 10.0
    image = torch.randn(n, 4, 8, 8, 8, generator=generator)
    image[:, 1, 2:6, 2:6, 2:6] += (0.5 + label.float())[:, None, None, None]
    return torch.randn(n, 6, 2, 2, 2, generator=generator), logits, image, label


@pytest.mark.parametrize("composition", [True, False])
def test_head_learns_a_marker_carried_by_the_enhancement_level(composition: bool) -> None:
    """The label lives in the mean intensity inside the predicted ET: a composition head learns it; the
    pooled features (here noise, as the demo model's bottleneck evidently was) cannot."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    head = MarkerHead(6, 1, pooling="gap", hidden=8, dropout=0.0,
                      composition_modalities=4 if composition else 0, seg_classes=5)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(60):
        features, logits, image, label = _toy_batch(16, generator)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(features, logits, image)[0][:, 0],
                                                                    label.float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    features, logits, image, label = _toy_batch(64, generator)
    with torch.no_grad():
        score = head.eval()(features, logits, image)[0][:, 0]
    auc = roc_auc_score(label.numpy(), score.numpy())
    assert (auc > 0.95) if composition else (auc < 0.75)
