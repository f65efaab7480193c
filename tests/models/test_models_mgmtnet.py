"""MGMT-Net end to end: every switch, missing modalities, gradients, errors, parameter count, sliding window."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from monai.inferers import sliding_window_inference

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.mgmtnet import MGMTNet, MGMTNetOutput

torch.set_num_threads(1)

#: a tiny network that runs at 16³: the Swin window must fit the 2³ bottleneck grid.
TINY: dict[str, Any] = {"width": 4, "swin_heads": 2, "window_size": 2, "head_hidden": 8}

SWITCHES = {
    "full": {},
    "concat": {"fusion": "concat"},
    "cnn": {"encoder": "cnn"},
    "gap": {"marker_pooling": "gap"},
    "gates": {"attention_gates": True},
    "deep_supervision": {"deep_supervision": True},
    "composition": {"marker_composition": True},
    "all_ablations": {"fusion": "concat", "encoder": "cnn", "marker_pooling": "gap", "attention_gates": True,
                      "deep_supervision": True},
}


def _model(**kwargs: Any) -> MGMTNet:
    torch.manual_seed(0)
    return MGMTNet(**{**TINY, **kwargs}).eval()


@pytest.mark.parametrize("name", list(SWITCHES))
@pytest.mark.parametrize("batch, size", [(2, 16), (1, 32)])
def test_output_shapes_for_every_switch(name: str, batch: int, size: int) -> None:
    options = SWITCHES[name]
    model = _model(**options)
    mask = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0]])[:batch]  # 1..M modalities present
    out = model(torch.randn(batch, 4, size, size, size), mask)
    assert isinstance(out, MGMTNetOutput)
    assert out.seg_logits.shape == (batch, 5, size, size, size)
    assert out.marker_logits.shape == (batch, 3)
    if options.get("fusion") == "concat":
        assert out.modality_weights is None
    else:
        assert out.modality_weights is not None and out.modality_weights.shape == (batch, 4, size, size, size)
        torch.testing.assert_close(out.modality_weights.sum(1), torch.ones(batch, size, size, size))
        assert torch.all(out.modality_weights[:, 1] == 0)
    if options.get("deep_supervision"):
        assert [tuple(d.shape) for d in out.deep_supervision] == [(batch, 5, *(size // 4,) * 3),
                                                                  (batch, 5, *(size // 2,) * 3)]
    else:
        assert out.deep_supervision == []
    if options.get("marker_pooling") == "gap":
        assert out.marker_attention is None
    else:
        assert out.marker_attention is not None and out.marker_attention.shape == (batch, 1, *(size // 8,) * 3)
    assert all(torch.isfinite(t).all() for t in (out.seg_logits, out.marker_logits))


def test_default_configuration_runs_at_32_cubed() -> None:
    torch.manual_seed(0)
    model = MGMTNet().eval()
    out = model(torch.randn(1, 4, 32, 32, 32))
    assert out.seg_logits.shape == (1, 5, 32, 32, 32) and out.marker_logits.shape == (1, 3)
    assert model.divisor == 8


@pytest.mark.parametrize("fusion, composition", [("cmaf", False), ("concat", False), ("cmaf", True)])
def test_outputs_do_not_depend_on_absent_modality_values(fusion: str, composition: bool) -> None:
    model = _model(fusion=fusion, attention_gates=True, deep_supervision=True, marker_composition=composition)
    image = torch.randn(2, 4, 16, 16, 16)
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 0, 0]])
    changed = image.clone()
    changed[0, 2] = torch.randn(16, 16, 16) * 50
    changed[1, [0, 2, 3]] = torch.rand(3, 16, 16, 16)
    a, b = model(image, mask), model(changed, mask)
    for x, y in [(a.seg_logits, b.seg_logits), (a.marker_logits, b.marker_logits), *zip(a.deep_supervision,
                                                                                          b.deep_supervision)]:
        assert torch.equal(x, y)
    changed[0, 0] += 1.0  # a present modality does change the output
    assert not torch.equal(model(changed, mask).seg_logits[0], a.seg_logits[0])


@pytest.mark.parametrize("options", [{}, {"attention_gates": True, "deep_supervision": True},
                                     {"marker_composition": True}])
def test_gradient_reaches_every_parameter(options: dict[str, Any]) -> None:
    model = _model(**options).train()
    out = model(torch.randn(2, 4, 16, 16, 16), torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]]))
    target = torch.randint(0, 5, (2, 16, 16, 16))
    loss = torch.nn.functional.cross_entropy(out.seg_logits, target) + out.marker_logits.square().mean()
    loss = loss + sum(d.square().mean() for d in out.deep_supervision)
    loss.backward()
    missing = [name for name, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert missing == []


def test_segment_matches_forward_and_runs_in_sliding_window() -> None:
    model = _model()
    image = torch.randn(1, 4, 16, 16, 16)
    mask = torch.tensor([[1, 1, 0, 1]])
    torch.testing.assert_close(model.segment(image, mask), model(image, mask).seg_logits)
    volume = torch.randn(1, 4, 40, 24, 20)
    with torch.no_grad():
        out = sliding_window_inference(volume, (16, 16, 16), 2, model.segment, overlap=0.5, mode="gaussian",
                                       modality_mask=mask)
    assert out.shape == (1, 5, 40, 24, 20) and torch.isfinite(out).all()


def test_bad_arguments_raise_with_the_value() -> None:
    with pytest.raises(ConfigError, match="width must be an integer >= 1, got 0"):
        MGMTNet(width=0)
    with pytest.raises(ConfigError, match="encoder must be 'hybrid' or 'cnn', got 'vit'"):
        MGMTNet(encoder="vit")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fusion must be 'cmaf' or 'concat', got 'sum'"):
        MGMTNet(fusion="sum")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"cmaf_dropout must be a probability in \[0, 1\), got -0.1"):
        MGMTNet(cmaf_dropout=-0.1)
    with pytest.raises(ConfigError, match="seg_classes must be an integer >= 2, got 1"):
        MGMTNet(seg_classes=1)
    with pytest.raises(ConfigError, match="n_markers must be an integer >= 1, got 0"):
        MGMTNet(n_markers=0)
    with pytest.raises(ConfigError, match="deep_supervision must be True or False, got 1"):
        MGMTNet(deep_supervision=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="marker_composition must be True or False, got 'yes'"):
        MGMTNet(marker_composition="yes")  # type: ignore[arg-type]
    model = MGMTNet(width=8)
    with pytest.raises(ConfigError, match=r"window_size 4 is bigger than the Swin grid \(2, 2, 2\)"):
        model(torch.randn(1, 4, 16, 16, 16))
    with pytest.raises(InputError, match=r"spatial size \(32, 32, 20\) must be a positive multiple of 8"):
        model(torch.randn(1, 4, 32, 32, 20))
    with pytest.raises(InputError, match=r"sample\(s\) \[0\] have no modality present"):
        _model()(torch.randn(2, 4, 16, 16, 16), torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0]]))
    with pytest.raises(InputError, match=r"expected shape \(batch, 4, X, Y, Z\), got \(1, 4, 16, 16\)"):
        model.segment(torch.randn(1, 4, 16, 16))


def _conv(cin: int, cout: int, k: int, bias: bool = False) -> int:
    return cin * cout * k ** 3 + (cout if bias else 0)


def _linear(cin: int, cout: int, bias: bool = True) -> int:
    return cin * cout + (cout if bias else 0)


def _swin_block(d: int, heads: int, window: int) -> int:
    """LayerNorm, qkv, proj, relative position table, LayerNorm, MLP ×4 (Liu et al. 2021)."""
    return 2 * d + _linear(d, 3 * d) + _linear(d, d) + (2 * window - 1) ** 3 * heads + 2 * d + \
        _linear(d, 4 * d) + _linear(4 * d, d)


def _hand_count(m: int = 4, k: int = 5, markers: int = 3, w: int = 16, heads: int = 4, window: int = 4,
                hidden: int = 64) -> int:
    """Parameters of the default 3-stage MGMT-Net, from the layer list in the module docs."""
    gn = 2  # GroupNorm γ, β per channel
    c = [w, 2 * w, 4 * w]
    cmaf = _conv(1, w, 3) + gn * w + _linear(m * w, 4 * w) + _linear(4 * w, w // 2) + _linear(w // 2, m)
    downs = sum(_conv(cin, cout, 2) + gn * cout for cin, cout in zip([w, c[0], c[1]], c))
    residual = [2 * (2 * (_conv(ch, ch, 3) + gn * ch)) for ch in c]  # 2 blocks × 2 conv+GN, identity shortcut
    swin = _conv(w, c[1], 4, bias=True)  # PatchEmbed to stage 1 (patch 4)
    swin += 2 * (8 * c[1]) + _linear(8 * c[1], c[2], bias=False)  # PatchMerging 1 → 2: LayerNorm + reduction
    swin += sum(2 * _swin_block(ch, heads, window) + 2 * ch for ch in c[1:])  # 2 blocks + output LayerNorm
    fuse = sum(_conv(2 * ch, ch, 1) + gn * ch for ch in c[1:])
    encoder = downs + sum(residual) + swin + fuse

    def up(cin: int, cout: int) -> int:
        refine = _conv(cin, cout, 3) + gn * cout
        block = _conv(2 * cout, cout, 3) + _conv(cout, cout, 3) + _conv(2 * cout, cout, 1) + 3 * gn * cout
        return refine + block

    decoder = up(c[2], c[1]) + up(c[1], c[0]) + up(c[0], w)
    decoder += _linear(w, w // 2) + _linear(w // 2, w) + _conv(w, k, 1, bias=True)  # SE (r = 2) + 1³ head
    head = _conv(c[2], c[2], 1, bias=True) + _conv(c[2], 1, 1) + markers * (_linear(c[2], hidden) + _linear(hidden, 1))
    return cmaf + encoder + decoder + head


def test_parameter_count_of_default_configuration() -> None:
    count = sum(p.numel() for p in MGMTNet().parameters())
    assert count == _hand_count() == 1_021_916  # the figure quoted in the mgmtnet module docstring
