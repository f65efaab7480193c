"""ResNet3D-GN (ASLNet backbone): shapes, parameter count, spatial sizes, per-sample GN, init, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models import ResNet3D, build_aslnet, group_norm

torch.set_num_threads(1)


def _tiny(**kwargs: object) -> ResNet3D:
    torch.manual_seed(0)
    options = {"base_width": 4, "gn_groups": 2, "dropout": 0.0, **kwargs}
    return ResNet3D(options.pop("in_channels", 4), options.pop("out_channels", 3), **options).eval()


@pytest.mark.parametrize("shape", [(2, 4, 16, 16, 16), (1, 4, 13, 13, 13), (3, 4, 6, 9, 7)])
def test_output_and_feature_map_shapes(shape: tuple[int, ...]) -> None:
    model = _tiny()
    x = torch.randn(shape)
    assert model(x).shape == (shape[0], 3)
    feats = model.feature_maps(x)
    assert feats.shape[:2] == (shape[0], 8 * 4)  # 8f channels for basic blocks


def test_arbitrary_channels_and_width() -> None:
    model = _tiny(in_channels=1, out_channels=5, base_width=3, blocks=(1, 1, 1))
    out = model(torch.randn(2, 1, 12, 12, 12))
    assert out.shape == (2, 5)
    assert model.feature_maps(torch.randn(1, 1, 12, 12, 12)).shape[1] == 3 * 4  # three stages: 4f
    assert torch.isfinite(out).all()


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k ** 3  # bias-free


def _gn(c: int) -> int:
    return 2 * c  # affine γ and β per channel


def _analytic_basic_resnet(cin: int, f: int, blocks: list[int], classes: int) -> int:
    """Parameter count derived by hand from the layer list (notes §3.1), independent of the module code."""
    total = _conv(cin, f, 7) + _gn(f)  # stem (max-pool has no parameters)
    c = f
    for i, n in enumerate(blocks):
        w = f * 2 ** i
        for j in range(n):
            total += _conv(c, w, 3) + _gn(w) + _conv(w, w, 3) + _gn(w)
            if c != w or (i > 0 and j == 0):
                total += _conv(c, w, 1) + _gn(w)  # projection shortcut
            c = w
    return total + c * classes + classes  # Linear head


def test_paper_grade_model_parameter_count() -> None:
    # The notes' figure (§3.2) counts GN γ/β like PyTorch does, so PyTorch's count matches it exactly.
    # Hand check of the stem: 4·32·7³ = 43,904 weights + 2·32 GN = 43,968 = the notes' stem figure.
    assert _conv(4, 32, 7) + _gn(32) == 43_968
    assert _analytic_basic_resnet(4, 32, [2, 2, 2, 2], 3) == 8_331_587
    model = build_aslnet("grade")
    assert sum(p.numel() for p in model.parameters()) == 8_331_587
    assert all(p.requires_grad for p in model.parameters())
    # per stage, notes §3.2: 110,848 / 389,760 / 1,557,760 / 6,228,480; head 771
    per_stage = [sum(p.numel() for p in stage.parameters()) for stage in model.stages]
    assert per_stage == [110_848, 389_760, 1_557_760, 6_228_480]
    assert sum(p.numel() for p in model.fc.parameters()) == 771


def test_spatial_sizes_at_70_cubed() -> None:
    model = _tiny(blocks=(1, 1, 1, 1))  # widths do not change spatial sizes
    sizes: list[tuple[int, ...]] = []
    hooks = [model.stem[0].register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[2:]))),
             model.stem[3].register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[2:])))]
    for stage in model.stages:
        hooks.append(stage[-1].register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[2:]))))
    with torch.no_grad():
        model(torch.zeros(1, 4, 70, 70, 70))
    for hook in hooks:
        hook.remove()
    # 70 → conv 35 → pool 18 → stage 1 18 → 9 → 5 → 3, i.e. floor((n + 2p − k)/s) + 1 each time
    assert [s[0] for s in sizes] == [35, 18, 18, 9, 5, 3]
    assert all(len(set(s)) == 1 for s in sizes)


def test_group_norm_group_rule() -> None:
    # groups = gcd(min(G, C), C): hand values
    assert group_norm(32, 32).num_groups == 32
    assert group_norm(8, 32).num_groups == 8
    assert group_norm(48, 32).num_groups == 16
    assert group_norm(12, 8).num_groups == 4
    assert group_norm(7, 4).num_groups == 1


def test_group_norm_is_per_sample() -> None:
    model = _tiny()
    torch.manual_seed(1)
    a, b, c = torch.randn(3, 1, 4, 16, 16, 16)
    with torch.no_grad():
        first = model(torch.cat([a, b]))[0]
        second = model(torch.cat([a, c * 50 + 3]))[0]
        alone = model(a)[0]
    torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first, alone, rtol=1e-5, atol=1e-6)


def test_initialisation() -> None:
    torch.manual_seed(0)
    model = ResNet3D(4, 3, base_width=32, blocks=(1, 1, 1, 1))
    conv = model.stages[3][0].main[3]  # 256 → 256, 3³: fan_in 6912, 1.77 M weights
    expected = math.sqrt(2.0 / (256 * 27))
    assert abs(conv.weight.std().item() / expected - 1) < 0.01
    assert abs(conv.weight.mean().item()) < 0.01 * expected
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in norms)
    bound = math.sqrt(6.0 / (256 + 3))  # Glorot-uniform limit
    assert model.fc.weight.abs().max() <= bound and model.fc.weight.abs().max() > 0.9 * bound
    assert not model.fc.bias.any()


def test_dropout_placement() -> None:
    model = ResNet3D(4, 3, base_width=4, blocks=(2, 1), dropout=0.25, head_dropout=0.5)
    spatial = [m for m in model.modules() if isinstance(m, nn.Dropout3d)]
    assert len(spatial) == 3 and all(m.p == 0.25 for m in spatial)  # one after every block
    assert isinstance(model.head_dropout, nn.Dropout) and model.head_dropout.p == 0.5
    plain = ResNet3D(4, 3, base_width=4, blocks=(2, 1), dropout=0.0)
    assert not any(isinstance(m, (nn.Dropout3d, nn.Dropout)) for m in plain.modules())
    assert build_aslnet("grade").head_dropout.p == 0.3  # head follows `dropout` when not given


def test_bottleneck_widths_grow_twofold() -> None:
    model = _tiny(block="bottleneck", blocks=(1, 2, 1, 1))
    outs = [stage[-1].out_channels for stage in model.stages]
    assert outs == [16, 32, 64, 128]  # 4f·2^i, not the reference's 4f·4^i
    x = torch.randn(2, 4, 16, 16, 16)
    assert model(x).shape == (2, 3)
    assert model.feature_maps(x).shape[1] == 128
    # stride on the 3³ conv: the first 1³ conv of a downsampling block keeps the resolution
    assert model.stages[1][0].main[0].stride == (1, 1, 1) and model.stages[1][0].main[3].stride == (2, 2, 2)


def test_target_layer_output_is_feature_maps() -> None:
    model = _tiny()
    x = torch.randn(2, 4, 16, 16, 16)
    captured: list[torch.Tensor] = []
    hook = model.target_layer.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        model(x)
        feats = model.feature_maps(x)
    hook.remove()
    torch.testing.assert_close(captured[0], feats)


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"in_channels": 0}, "in_channels"), ({"out_channels": -1}, "-1"), ({"base_width": 2.5}, "2.5"),
    ({"blocks": ()}, "blocks"), ({"blocks": (2, 0)}, "[2, 0]"), ({"block": "wide"}, "'wide'"),
    ({"gn_groups": 0}, "gn_groups"), ({"dropout": 1.0}, "1.0"), ({"dropout": -0.1}, "-0.1"),
    ({"head_dropout": 1.5}, "1.5"), ({"film_stages": (4,), "film_dim": 3}, "[4]"),
    ({"film_stages": (1,), "film_dim": 0}, "film_dim"), ({"film_stages": (1, 1), "film_dim": 2}, "[1, 1]"),
    ({"film_hidden": 0, "film_stages": (1,), "film_dim": 2}, "film_hidden"), ({"in_channels": True}, "True"),
])
def test_bad_arguments_raise_config_error(kwargs: dict, named: str) -> None:
    options = {"in_channels": 4, "out_channels": 3, **kwargs}
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace(".", r"\.")):
        ResNet3D(options.pop("in_channels"), options.pop("out_channels"), **options)


def test_bad_inputs_raise_input_error() -> None:
    model = _tiny()
    with pytest.raises(InputError, match=r"\(2, 3, 8, 8, 8\)"):
        model(torch.randn(2, 3, 8, 8, 8))
    with pytest.raises(InputError, match="no FiLM"):
        model(torch.randn(1, 4, 8, 8, 8), torch.randn(1, 2))
    with pytest.raises(InputError, match="condition"):
        _tiny(film_stages=(1,), film_dim=2)(torch.randn(1, 4, 8, 8, 8))


def test_build_aslnet_options() -> None:
    grade = build_aslnet("grade", base_width=4, gn_groups=4)
    assert isinstance(grade, ResNet3D) and grade.out_channels == 3 and grade.in_channels == 4
    assert [m.p for m in grade.modules() if isinstance(m, nn.Dropout3d)][0] == 0.3
    with pytest.raises(ConfigError, match="tabular_hidden"):
        build_aslnet("grade", tabular_hidden=8)
    with pytest.raises(ConfigError, match="'os'"):
        build_aslnet("os")  # type: ignore[arg-type]


def test_numpy_integers_are_accepted() -> None:
    model = ResNet3D(np.int64(4), np.int32(2), base_width=np.int64(4), blocks=[np.int64(1), 1], gn_groups=2)
    assert model.base_width == 4 and isinstance(model.base_width, int) and model.blocks == (1, 1)
    assert model(torch.randn(1, 4, 8, 8, 8)).shape == (1, 2)


def test_batch_one_training_step_on_tiny_input() -> None:
    # 16³ with f = 4 and G = 32 ends in a 1³ map with one channel per group: F.group_norm would refuse
    # it; the map is then exactly β (no signal passes, as in the TF reference), but the step runs
    torch.manual_seed(0)
    model = ResNet3D(4, 3, base_width=4, dropout=0.3).train()
    loss = nn.functional.cross_entropy(model(torch.randn(1, 4, 16, 16, 16)), torch.tensor([2]))
    loss.backward()
    assert torch.isfinite(loss) and model.fc.bias.grad.abs().sum() > 0
    assert not model.stem[0].weight.grad.any()  # the degenerate 1-value groups stop the gradient
    # with 2 groups of 2 channels the same tiny batch-1 step reaches the stem
    model = ResNet3D(4, 3, base_width=4, gn_groups=2, dropout=0.3).train()
    nn.functional.cross_entropy(model(torch.randn(1, 4, 13, 13, 13)), torch.tensor([0])).backward()
    assert model.stem[0].weight.grad.abs().sum() > 0
    x = torch.randn(2, 32, 3, 3, 3)
    torch.testing.assert_close(group_norm(32, 8)(x), nn.functional.group_norm(x, 8, eps=1e-5))
