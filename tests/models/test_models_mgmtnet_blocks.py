"""MGMT-Net blocks used alone: hybrid encoder (MONAI Swin), segmentation decoder, marker head."""

from __future__ import annotations

import monai.networks.nets.swin_unetr as swin_unetr
import pytest
import torch
from monai.networks.blocks import ChannelSELayer, PatchEmbed
from monai.networks.nets.swin_unetr import BasicLayer, PatchMerging, SwinTransformerBlock
from torch.nn import functional as F

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.hybrid_encoder import HybridEncoder, monai_rearrange, run_swin_layer
from vbiopsy.models.marker_head import MarkerHead, tumour_gate
from vbiopsy.models.segmentation_decoder import AttentionGate, SegmentationDecoder

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("grid", [(8, 8, 8), (6, 8, 5)])  # whole windows; padded windows
def test_run_swin_layer_matches_monai_basic_layer_forward(grid: tuple[int, int, int],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swin_unetr, "rearrange", monai_rearrange)  # einops is optional and absent here
    torch.manual_seed(0)
    layer = BasicLayer(dim=8, depth=2, num_heads=2, window_size=(4, 4, 4), drop_path=[0.0, 0.0], qkv_bias=True,
                       downsample=None).eval()
    x = torch.randn(2, 8, *grid)
    expected = layer(x)  # MONAI's own forward: (B, C, D, H, W) in and out
    got = run_swin_layer(layer, x.permute(0, 2, 3, 4, 1).contiguous()).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not torch.allclose(expected, x)  # the layer did something


def test_monai_rearrange_refuses_unknown_patterns() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        monai_rearrange(torch.zeros(1, 2, 3, 4, 5), "b c d h w -> b c h w d")


def test_swin_branch_is_monai_with_shift_in_every_second_block() -> None:
    encoder = HybridEncoder(8, 8, 3, swin_heads=2, window_size=4)
    assert encoder.swin is not None
    assert isinstance(encoder.swin.patch_embed, PatchEmbed)
    assert all(isinstance(merge, PatchMerging) for merge in encoder.swin.merges) and len(encoder.swin.merges) == 1
    assert len(encoder.swin.layers) == 2  # stages 1 and 2; stage 0 is CNN only
    for layer in encoder.swin.layers:
        assert isinstance(layer, BasicLayer) and len(layer.blocks) == 2
        assert all(isinstance(block, SwinTransformerBlock) for block in layer.blocks)
        assert tuple(layer.blocks[0].shift_size) == (0, 0, 0)
        assert tuple(layer.blocks[1].shift_size) == (2, 2, 2)
        assert tuple(layer.blocks[1].window_size) == (4, 4, 4)


@pytest.mark.parametrize("swin", [True, False])
def test_encoder_stage_shapes(swin: bool) -> None:
    torch.manual_seed(0)
    encoder = HybridEncoder(6, 8, 3, swin=swin, swin_heads=2, window_size=2).eval()
    features = encoder(torch.randn(2, 6, 16, 24, 32))
    assert [tuple(f.shape) for f in features] == [(2, 8, 8, 12, 16), (2, 16, 4, 6, 8), (2, 32, 2, 3, 4)]
    assert encoder.divisor == 8
    assert (encoder.swin is None) != swin and len(encoder.fuse) == (2 if swin else 0)


def test_swin_branch_changes_the_fused_features() -> None:
    torch.manual_seed(0)
    encoder = HybridEncoder(4, 8, 2, swin_heads=2, window_size=2).eval()
    x = torch.randn(1, 4, 16, 16, 16)
    before = encoder(x)
    with torch.no_grad():
        encoder.swin.norms[0].bias.add_(1.0)  # perturb the Swin stage-1 output only
    after = encoder(x)
    assert torch.equal(before[0], after[0])  # stage 0 is CNN only
    assert not torch.allclose(before[1], after[1])


def test_swin_inference_path_matches_training_path() -> None:
    """MONAI switches to scaled_dot_product_attention when autograd is off; both must agree."""
    torch.manual_seed(0)
    encoder = HybridEncoder(4, 8, 3, swin_heads=2, window_size=2).eval()
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        fast = encoder(x)
    slow = encoder(x)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-5)


def test_encoder_errors() -> None:
    encoder = HybridEncoder(4, 8, 3, swin_heads=2, window_size=4)
    with pytest.raises(ConfigError, match=r"window_size 4 is bigger than the Swin grid \(2, 2, 2\)"):
        encoder(torch.randn(1, 4, 16, 16, 16))
    with pytest.raises(InputError, match=r"spatial size \(16, 16, 12\) must be a positive multiple of 8"):
        encoder(torch.randn(1, 4, 16, 16, 12))
    with pytest.raises(InputError, match=r"expected shape \(batch, 4, X, Y, Z\)"):
        encoder(torch.randn(1, 3, 32, 32, 32))
    with pytest.raises(ConfigError, match="needs stages >= 2"):
        HybridEncoder(4, 8, 1)
    assert HybridEncoder(4, 8, 1, swin=False).divisor == 2
    with pytest.raises(ConfigError, match="swin_heads 3 must divide"):
        HybridEncoder(4, 8, 2, swin_heads=3)
    with pytest.raises(ConfigError, match="window_size must be an integer >= 2, got 1"):
        HybridEncoder(4, 8, 2, window_size=1)
    with pytest.raises(ConfigError, match="swin must be True or False"):
        HybridEncoder(4, 8, 2, swin=1)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- decoder
def _features(batch: int, width: int, stages: int, size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    stem = torch.randn(batch, width, size, size, size)
    return stem, [torch.randn(batch, width * 2 ** s, *(size // 2 ** (s + 1),) * 3) for s in range(stages)]


@pytest.mark.parametrize("gates", [False, True])
def test_decoder_shapes_and_deep_supervision(gates: bool) -> None:
    torch.manual_seed(0)
    decoder = SegmentationDecoder(4, 3, 5, attention_gates=gates, deep_supervision=True).eval()
    out = decoder(*_features(2, 4, 3, 16))
    assert out.logits.shape == (2, 5, 16, 16, 16)
    assert [tuple(d.shape) for d in out.deep_supervision] == [(2, 5, 4, 4, 4), (2, 5, 8, 8, 8)]  # coarse → fine
    assert isinstance(decoder.se, ChannelSELayer)
    assert all((up.gate is not None) == gates for up in decoder.ups)
    assert SegmentationDecoder(4, 3, 5)(*_features(1, 4, 3, 16)).deep_supervision == []


def test_decoder_uses_every_skip() -> None:
    torch.manual_seed(0)
    decoder = SegmentationDecoder(4, 2, 3).eval()
    stem, features = _features(1, 4, 2, 8)
    base = decoder(stem, features).logits
    for index in range(len(features)):
        changed = [f.clone() for f in features]
        changed[index] += 1.0
        assert not torch.allclose(decoder(stem, changed).logits, base)
    assert not torch.allclose(decoder(stem + 1.0, features).logits, base)


def test_attention_gate_scales_skip_by_coefficients_in_unit_interval() -> None:
    torch.manual_seed(0)
    gate = AttentionGate(4, 6, 2)
    skip, signal = torch.randn(2, 4, 5, 5, 5), torch.randn(2, 6, 5, 5, 5)
    alpha = gate.coefficients(skip, signal)
    assert alpha.shape == (2, 1, 5, 5, 5) and bool(((alpha > 0) & (alpha < 1)).all())
    torch.testing.assert_close(gate(skip, signal), skip * alpha)
    with pytest.raises(InputError, match="share batch and spatial size"):
        gate(skip, signal[..., :4])


def test_decoder_errors() -> None:
    with pytest.raises(ConfigError, match="seg_classes must be an integer >= 2, got 1"):
        SegmentationDecoder(4, 3, 1)
    with pytest.raises(ConfigError, match="deep_supervision needs stages >= 2"):
        SegmentationDecoder(4, 1, 3, deep_supervision=True)
    with pytest.raises(ConfigError, match="attention_gates must be True or False, got 'yes'"):
        SegmentationDecoder(4, 2, 3, attention_gates="yes")  # type: ignore[arg-type]
    stem, features = _features(1, 4, 3, 16)
    with pytest.raises(InputError, match="expected 3 encoder maps, got 2"):
        SegmentationDecoder(4, 3, 3)(stem, features[:2])
    with pytest.raises(InputError, match=r"expected channels \[4, 4, 8, 16\]"):
        SegmentationDecoder(4, 3, 3)(stem[:, :3], features)


# ----------------------------------------------------------------------------------------------- marker head
def _seg_logits(batch: int, size: int, tumour: bool) -> torch.Tensor:
    logits = torch.zeros(batch, 4, size, size, size)
    logits[:, 0] = -30.0 if tumour else 30.0
    return logits


def test_tumour_gate_is_pooled_one_minus_background() -> None:
    logits = torch.randn(2, 3, 8, 8, 8)
    expected = F.avg_pool3d(1 - torch.softmax(logits, 1)[:, :1], kernel_size=4)
    torch.testing.assert_close(tumour_gate(logits, (2, 2, 2)), expected)


def test_gap_head_matches_manual_computation() -> None:
    torch.manual_seed(0)
    head = MarkerHead(6, 3, pooling="gap", hidden=5).eval()
    features, logits = torch.randn(2, 6, 2, 2, 2), torch.randn(2, 4, 8, 8, 8)
    out, attention = head(features, logits)
    gate = F.avg_pool3d(1 - torch.softmax(logits, 1)[:, :1], kernel_size=4)
    pooled = (features * gate).mean(dim=(2, 3, 4))
    expected = torch.cat([mlp[3](torch.relu(mlp[1](pooled))) for mlp in head.heads], dim=1)
    assert out.shape == (2, 3) and attention is None
    torch.testing.assert_close(out, expected)


def test_attention_pooling_weights_sum_to_one_and_match_formula() -> None:
    torch.manual_seed(0)
    head = MarkerHead(6, 2, hidden=5).eval()
    features, logits = torch.randn(2, 6, 2, 3, 2), _seg_logits(2, 8, tumour=True)
    _, attention = head(features, logits)
    assert attention is not None and attention.shape == (2, 1, 2, 3, 2)
    torch.testing.assert_close(attention.sum(dim=(1, 2, 3, 4)), torch.ones(2))
    pool = head.attention
    gated = features * tumour_gate(logits, (2, 3, 2))
    scores = F.conv3d(torch.tanh(F.conv3d(gated, pool.project.weight, pool.project.bias)), pool.score.weight)
    torch.testing.assert_close(attention, torch.softmax(scores.flatten(1), 1).reshape(attention.shape))


@pytest.mark.parametrize("pooling", ["attention", "gap"])
def test_markers_ignore_features_where_no_tumour_is_predicted(pooling: str) -> None:
    torch.manual_seed(0)
    head = MarkerHead(6, 3, pooling=pooling).eval()  # type: ignore[arg-type]
    no_tumour = _seg_logits(1, 8, tumour=False)
    a, _ = head(torch.randn(1, 6, 2, 2, 2), no_tumour)
    b, _ = head(torch.randn(1, 6, 2, 2, 2) * 10, no_tumour)
    torch.testing.assert_close(a, b, atol=1e-9, rtol=0)
    tumour = _seg_logits(1, 8, tumour=True)
    assert not torch.allclose(head(torch.randn(1, 6, 2, 2, 2), tumour)[0], a)


def test_marker_head_errors() -> None:
    with pytest.raises(ConfigError, match="marker_pooling must be 'attention' or 'gap', got 'max'"):
        MarkerHead(8, 3, pooling="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="head_hidden must be an integer >= 1, got 0"):
        MarkerHead(8, 3, hidden=0)
    with pytest.raises(ConfigError, match=r"head_dropout must be a probability in \[0, 1\), got 1.5"):
        MarkerHead(8, 3, dropout=1.5)
    head = MarkerHead(8, 3)
    with pytest.raises(InputError, match=r"expected shape \(batch, 8, x, y, z\)"):
        head(torch.randn(1, 7, 2, 2, 2), _seg_logits(1, 8, True))
    with pytest.raises(InputError, match="batch 2 differs"):
        head(torch.randn(1, 8, 2, 2, 2), _seg_logits(2, 8, True))
    with pytest.raises(InputError, match="classes >= 2"):
        head(torch.randn(1, 8, 2, 2, 2), torch.randn(1, 1, 8, 8, 8))
