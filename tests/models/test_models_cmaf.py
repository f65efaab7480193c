"""CMAF and concat fusion: reference maths, missing-modality masking, slab independence, errors."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models import cmaf
from vbiopsy.models.cmaf import ConcatFusion, CrossModalityAttentionFusion, check_modality_mask

torch.set_num_threads(1)


def _cmaf(modalities: int = 4, width: int = 6) -> CrossModalityAttentionFusion:
    torch.manual_seed(0)
    return CrossModalityAttentionFusion(modalities, width).eval()


def _reference(block: CrossModalityAttentionFusion, image: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CMAF written the plain way: a per-modality loop of conv → GroupNorm → ReLU, the MLP as 1³ convs."""
    embeddings = []
    for m in range(image.shape[1]):
        e = F.conv3d(image[:, m:m + 1], block.embed.weight, padding=1)
        e = torch.relu(F.group_norm(e, block.norm.num_groups, block.norm.weight, block.norm.bias, block.norm.eps))
        embeddings.append(e * mask[:, m].reshape(-1, 1, 1, 1, 1))
    h = torch.cat(embeddings, dim=1)
    for layer in block.score:
        if isinstance(layer, torch.nn.Linear):
            h = F.conv3d(h, layer.weight[..., None, None, None], layer.bias)
        elif isinstance(layer, torch.nn.ReLU):
            h = torch.relu(h)
    h = h.masked_fill(~mask[..., None, None, None].bool(), float("-inf"))
    weights = torch.softmax(h, dim=1)
    fused = sum(weights[:, m:m + 1] * embeddings[m] for m in range(image.shape[1]))
    return fused, weights


@pytest.mark.parametrize("slab", [16, 2 ** 16])
def test_cmaf_matches_plain_reference(slab: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cmaf, "VOXELS_PER_SLAB", slab)  # 16 voxels: many slabs of one X row
    block = _cmaf()
    image = torch.randn(2, 4, 6, 5, 7)
    mask = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0]])
    with torch.no_grad():
        fused, weights = block(image, mask)
        ref_fused, ref_weights = _reference(block, image, mask)
    assert fused.shape == (2, 6, 6, 5, 7) and weights.shape == (2, 4, 6, 5, 7)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused, ref_fused, rtol=1e-5, atol=1e-6)


def test_weights_sum_to_one_over_present_and_are_zero_for_absent() -> None:
    block = _cmaf()
    mask = torch.tensor([[True, False, True, True], [False, False, True, False]])
    _, weights = block(torch.randn(2, 4, 6, 6, 6), mask)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 6, 6, 6))
    assert torch.all(weights[0, 1] == 0) and torch.all(weights[1, [0, 1, 3]] == 0)
    assert torch.all(weights[1, 2] == 1)  # one present modality takes all the weight
    assert torch.all(weights[0, [0, 2, 3]] > 0)


@pytest.mark.parametrize("fusion", ["cmaf", "concat"])
def test_output_ignores_absent_channels_even_nan(fusion: str) -> None:
    torch.manual_seed(1)
    block = _cmaf() if fusion == "cmaf" else ConcatFusion(4, 6).eval()
    image = torch.randn(2, 4, 6, 6, 6)
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0]])
    changed = image.clone()
    changed[0, 2] = torch.randn(6, 6, 6) * 100
    changed[1, 1] = float("nan")
    changed[1, 2:] = 7.0
    fused, weights = block(image, mask)
    fused_changed, weights_changed = block(changed, mask)
    assert torch.equal(fused, fused_changed)
    assert (weights is None) == (fusion == "concat")
    if weights is not None:
        assert torch.equal(weights, weights_changed)
    # and a present channel does matter
    changed[0, 0] += 1.0
    assert not torch.equal(block(changed, mask)[0][0], fused[0])


def test_concat_fusion_shape_and_no_weights() -> None:
    fused, weights = ConcatFusion(3, 5)(torch.randn(2, 3, 6, 6, 6))
    assert fused.shape == (2, 5, 6, 6, 6) and weights is None


def test_mask_forms_are_equivalent() -> None:
    block = _cmaf()
    image = torch.randn(2, 4, 6, 6, 6)
    bool_mask = torch.tensor([[True, False, True, True]] * 2)
    expected = block(image, bool_mask)[0]
    assert torch.equal(block(image, bool_mask.float())[0], expected)
    assert torch.equal(block(image, torch.tensor([[1, 0, 1, 1]]))[0], expected)  # (1, M) broadcast
    assert torch.equal(block(image, None)[0], block(image, torch.ones(2, 4))[0])


def test_mask_errors_name_the_problem() -> None:
    image = torch.randn(2, 4, 6, 6, 6)
    with pytest.raises(InputError, match=r"sample\(s\) \[1\] have no modality"):
        check_modality_mask(torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]), image)
    with pytest.raises(InputError, match=r"expected shape \(2, 4\) or \(1, 4\), got \(2, 3\)"):
        check_modality_mask(torch.ones(2, 3), image)
    with pytest.raises(InputError, match="0/1"):
        check_modality_mask(torch.tensor([[1.0, 0.5, 1.0, 1.0]] * 2), image)
    with pytest.raises(InputError, match=r"expected shape \(batch, 4, X, Y, Z\), got \(2, 3, 6, 6, 6\)"):
        _cmaf()(torch.randn(2, 3, 6, 6, 6))
    with pytest.raises(InputError, match="floating"):
        _cmaf()(torch.ones(1, 4, 6, 6, 6, dtype=torch.int64))


def test_constructor_errors_name_the_value() -> None:
    with pytest.raises(ConfigError, match=r"out_channels \(width\) must be an integer >= 1, got 0"):
        CrossModalityAttentionFusion(4, 0)
    with pytest.raises(ConfigError, match=r"cmaf_dropout must be a probability in \[0, 1\), got 1.0"):
        CrossModalityAttentionFusion(4, 8, dropout=1.0)
    with pytest.raises(ConfigError, match="in_modalities must be an integer >= 1, got 0"):
        ConcatFusion(0, 8)
    with pytest.raises(ConfigError, match="fusion must be 'cmaf' or 'concat', got 'sum'"):
        cmaf.build_fusion("sum", 4, 8, 0.2)


def test_gradients_reach_shared_embedding_and_mlp() -> None:
    block = _cmaf()
    block.train()
    fused, weights = block(torch.randn(2, 4, 6, 6, 6), torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]]))
    (fused.square().mean() + weights[:, 0].mean()).backward()
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
