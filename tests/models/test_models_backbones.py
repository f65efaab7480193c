"""Backbone registry: every backbone trains at 32³, and each matches the library network it is built from."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from monai.networks.nets import DenseNet, DenseNet121, EfficientNetBN
from torch import nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models import ResNet3D
from vbiopsy.models import backbones as registry
from vbiopsy.models.backbones import BACKBONES, build_backbone, register_backbone

torch.set_num_threads(1)
NAMES = ("densenet", "resnet", "swin", "vit", "efficient3d")
NEEDS_EINOPS = ("swin", "vit")
HAS_EINOPS = importlib.util.find_spec("einops") is not None


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tiny(name: str, **options: object) -> nn.Module:
    if name in NEEDS_EINOPS and not HAS_EINOPS:
        pytest.skip("MONAI's swin/vit blocks need einops, not installed here")
    torch.manual_seed(0)
    extra = {"img_size": 32} if name == "vit" else {}
    return build_backbone(name, 1, width="tiny", **{**extra, **options})


def test_registry_lists_the_five_paper_backbones() -> None:
    assert set(NAMES) <= set(BACKBONES)


@pytest.mark.parametrize("name", NAMES)
def test_every_backbone_trains_at_32_cubed(name: str) -> None:
    model = _tiny(name).train()
    image = torch.randn(2, 1, 32, 32, 32, requires_grad=True)
    features = model(image)
    grid = 32 // model.reduction
    assert features.shape == (2, model.out_channels, grid, grid, grid)
    assert grid > 1  # tiny presets keep a feature grid for the masked attention
    (features ** 2).mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    dead = [n for n, p in model.named_parameters() if p.grad is None]
    assert not dead, f"parameters without gradient (unused): {dead[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())  # type: ignore[arg-type]


def test_densenet_equals_monai_densenet_features() -> None:
    model = _tiny("densenet").eval()
    reference = DenseNet(3, 1, 5, init_features=8, growth_rate=4, block_config=(2, 2, 2), bn_size=2).eval()
    missing, unexpected = reference.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("class_layers") for key in missing)
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        ours = model(x)
        torch.testing.assert_close(ours, torch.relu(reference.features(x)))
        # MONAI's own head (ReLU → GAP → Linear) on our map equals its classifier output
        torch.testing.assert_close(reference.class_layers.out(ours.mean(dim=(2, 3, 4))), reference(x))


def test_base_presets_match_the_standard_library_networks() -> None:
    classes = 4
    densenet = build_backbone("densenet", 1)  # width "base" by default
    assert _n_params(densenet) == _n_params(DenseNet121(spatial_dims=3, in_channels=1, out_channels=classes)) \
        - (1024 * classes + classes)
    efficient = build_backbone("efficient3d", 1)
    b0 = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=3, in_channels=1, num_classes=classes)
    assert _n_params(efficient) == _n_params(b0) - (1280 * classes + classes)
    resnet = build_backbone("resnet", 2)
    assert _n_params(resnet) == _n_params(ResNet3D(2, classes, base_width=32)) - (256 * classes + classes)


def test_resnet_is_the_resnet3d_trunk() -> None:
    model = _tiny("resnet").eval()
    reference = ResNet3D(1, 3, base_width=8, blocks=(1, 1, 1), gn_groups=8, dropout=0.0).eval()
    missing, unexpected = reference.load_state_dict(
        {k.removeprefix("trunk."): v for k, v in model.state_dict().items()}, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected
    x = torch.randn(2, 1, 24, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.feature_maps(x))


def test_efficient3d_head_map_pools_to_monai_features() -> None:
    model = _tiny("efficient3d").eval()
    assert not hasattr(model, "_fc")  # classifier removed: no dead parameters
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, model.out_channels, 2, 2, 2) and bool((out > -0.3).all())  # swish ≥ −0.279


@pytest.mark.skipif(not HAS_EINOPS, reason="MONAI's swin blocks need einops")
def test_swin_base_equals_swinunetr_encoder_deepest_state() -> None:
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    ours = build_backbone("swin", 1).eval()
    reference = SwinUNETR(in_channels=1, out_channels=2, feature_size=48).swinViT.eval()
    assert _n_params(ours) == _n_params(reference)
    ours.swin.load_state_dict(reference.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x, normalize=True)[4])
    assert ours.out_channels == 768


@pytest.mark.skipif(not HAS_EINOPS, reason="MONAI's ViT blocks need einops")
def test_vit_tokens_land_on_their_own_patch() -> None:
    model = _tiny("vit").eval()
    model.vit.blocks = nn.ModuleList()  # no attention: each token then depends on its own patch only
    x = torch.randn(1, 1, 32, 32, 32)
    y = x.clone()
    y[:, :, 16:, :16, 16:] += 1.0  # patch (1, 0, 1) of the 2³ grid
    with torch.no_grad():
        changed = (model(x) - model(y)).abs().sum(dim=1)[0]
    assert changed[1, 0, 1] > 0
    changed[1, 0, 1] = 0
    assert torch.equal(changed, torch.zeros_like(changed))


@pytest.mark.skipif(not HAS_EINOPS, reason="MONAI's ViT blocks need einops")
def test_vit_refuses_another_input_size() -> None:
    model = _tiny("vit")
    with pytest.raises(InputError, match=r"\(1, 1, 48, 48, 48\)"):
        model(torch.randn(1, 1, 48, 48, 48))
    with pytest.raises(ConfigError, match="img_size"):
        build_backbone("vit", 1, width="tiny", img_size=40)


@pytest.mark.parametrize("name", NEEDS_EINOPS)
def test_transformers_without_einops_say_so(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == "einops" else real(mod, *a))
    with pytest.raises(ConfigError, match="einops"):
        build_backbone(name, 1, width="tiny")


def test_width_presets_and_integer_width() -> None:
    assert build_backbone("densenet", 1, width=12).features.conv0.out_channels == 12
    assert build_backbone("resnet", 1, width=6).out_channels == 6 * 4  # small layout: 3 stages → 4f
    tiny, small = (build_backbone("efficient3d", 1, width=w) for w in ("tiny", "small"))
    assert _n_params(tiny) < _n_params(small)


@pytest.mark.parametrize(("call", "pattern"), [
    (lambda: build_backbone("alexnet", 1), r"'alexnet'.*densenet.*efficient3d"),
    (lambda: build_backbone("densenet", 1, width="huge"), "'huge'"),
    (lambda: build_backbone("densenet", 1, width=0), "got 0"),
    (lambda: build_backbone("densenet", 0), "in_channels.*got 0"),
    (lambda: build_backbone("densenet", 1, depth=3), r"\['depth'\].*growth_rate"),
    (lambda: build_backbone("densenet", 1, block_config=()), r"block_config.*\[\]"),
    (lambda: build_backbone("resnet", 1, block="wide"), "'wide'"),
    (lambda: build_backbone("efficient3d", 1, stacks=9), "stacks.*9"),
])
def test_bad_options_raise_config_errors_naming_the_value(call: object, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        call()  # type: ignore[operator]


@pytest.mark.skipif(not HAS_EINOPS, reason="MONAI's swin blocks need einops")
def test_swin_heads_must_divide_widths() -> None:
    with pytest.raises(ConfigError, match=r"num_heads \(5, 2, 4\)"):
        build_backbone("swin", 1, width="tiny", num_heads=(5, 2, 4))


class _Probe(nn.Module):
    def __init__(self, in_channels: int, out_channels: object) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, 3, 3, stride=2, padding=1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_register_backbone_plugs_a_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "BACKBONES", dict(BACKBONES))
    seen: dict[str, object] = {}

    def factory(in_channels: int, *, width: str | int = "base", **options: object) -> nn.Module:
        seen.update(width=width, **options)
        return _Probe(in_channels, 3)

    register_backbone("probe", factory)
    module = registry.build_backbone("probe", 2, width=7, flag=True)
    assert isinstance(module, _Probe) and module.conv.in_channels == 2 and seen == {"width": 7, "flag": True}
    with pytest.raises(ConfigError, match="'probe' is already registered"):
        register_backbone("probe", factory)
    with pytest.raises(ConfigError, match="callable"):
        register_backbone("other", "not a factory")  # type: ignore[arg-type]
    register_backbone("broken", lambda in_channels, **_: _Probe(in_channels, "three"))
    with pytest.raises(ConfigError, match="out_channels='three'"):
        registry.build_backbone("broken", 1)
    assert "probe" not in BACKBONES  # the module-level registry was left alone
