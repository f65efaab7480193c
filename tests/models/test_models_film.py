"""FiLM generator, tabular encoder and the ASLNet survival fusion model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models import (ASLNetSurvival, FiLMGenerator, NonFiniteTabularError, ResNet3D, TabularEncoder,
                            build_aslnet, modulate)

torch.set_num_threads(1)
SMALL = {"base_width": 4, "gn_groups": 2, "blocks": (1, 2, 2, 1), "tabular_hidden": 8, "film_hidden": 6}


def _survival(**kwargs: object) -> ASLNetSurvival:
    torch.manual_seed(0)
    return ASLNetSurvival(4, 3, **{**SMALL, **kwargs})


def test_generator_is_identity_at_init() -> None:
    torch.manual_seed(0)
    gen = FiLMGenerator(5, 7, hidden=4, dropout=0.0)
    gamma, beta = gen(torch.randn(3, 5) * 100)
    assert torch.equal(gamma, torch.ones(3, 7)) and torch.equal(beta, torch.zeros(3, 7))
    g_gamma, g_beta = gen.gates()
    assert g_gamma.item() == pytest.approx(0.05) and g_beta.item() == pytest.approx(0.05)  # 0.5·sigmoid(logit 0.1)


def test_gates_bound_gamma_and_beta_after_perturbation() -> None:
    torch.manual_seed(1)
    gen = FiLMGenerator(4, 16, hidden=8, dropout=0.0)
    with torch.no_grad():
        for p in (gen.gamma_head.weight, gen.gamma_head.bias, gen.beta_head.weight, gen.beta_head.bias):
            p.normal_(0, 5)
        gen.gamma_gate_logit.fill_(4.0)
        gen.beta_gate_logit.fill_(-1.0)
    cond = torch.randn(64, 4) * 3
    gamma, beta = gen(cond)
    assert ((gamma > 0.5) & (gamma < 1.5)).all() and ((beta > -0.5) & (beta < 0.5)).all()
    assert gamma.max() > 1.3 and gamma.min() < 0.7  # the bound is approached, not trivially met
    # by hand: γ = 1 + 0.5·σ(ℓγ)·tanh(Wγ h + bγ), β = 0.5·σ(ℓβ)·tanh(Wβ h + bβ), h = relu(W1 c + b1)
    h = torch.relu(cond @ gen.hidden.weight.T + gen.hidden.bias)
    expect_gamma = 1 + 0.5 / (1 + np.exp(-4.0)) * torch.tanh(h @ gen.gamma_head.weight.T + gen.gamma_head.bias)
    expect_beta = 0.5 / (1 + np.exp(1.0)) * torch.tanh(h @ gen.beta_head.weight.T + gen.beta_head.bias)
    torch.testing.assert_close(gamma, expect_gamma)
    torch.testing.assert_close(beta, expect_beta)


def test_modulate_broadcasts_per_channel() -> None:
    x = torch.arange(2 * 3 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2, 2)
    gamma = torch.tensor([[1.0, 2.0, 0.5], [0.0, 1.0, -1.0]])
    beta = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    out = modulate(x, gamma, beta)
    for b in range(2):
        for c in range(3):
            assert torch.equal(out[b, c], x[b, c] * gamma[b, c] + beta[b, c])
    with pytest.raises(InputError, match="gamma"):
        modulate(x, gamma[:, :2], beta[:, :2])


def test_film_sits_before_the_residual_add() -> None:
    model = _survival(dropout=0.0).eval()
    block = model.backbone.stages[2][0]
    with torch.no_grad():
        block.film.gamma_head.bias.fill_(3.0)  # γ ≈ 1.05, β ≈ −0.05 everywhere
        block.film.beta_head.bias.fill_(-3.0)
        x = torch.randn(2, block.main[0].in_channels, 5, 5, 5)
        cond = torch.randn(2, model.tabular.out_features)
        gamma, beta = block.film(cond)
        expected = torch.relu(block.main(x) * gamma[:, :, None, None, None] + beta[:, :, None, None, None]
                              + block.shortcut(x))
        torch.testing.assert_close(block(x, cond), expected)
        assert not torch.allclose(block(x, cond), torch.relu(block.main(x) + block.shortcut(x)))


def test_fusion_equals_plain_backbone_at_init() -> None:
    model = _survival().eval()
    torch.manual_seed(5)
    plain = ResNet3D(4, 1, base_width=4, gn_groups=2, blocks=(1, 2, 2, 1), dropout=0.1).eval()
    missing, unexpected = plain.load_state_dict(model.backbone.state_dict(), strict=False)
    assert not missing and unexpected and all(".film." in key for key in unexpected)
    x = torch.randn(2, 4, 13, 13, 13)
    with torch.no_grad():
        reference = plain(x)
        for tabular in (torch.randn(2, 3), torch.randn(2, 3) * 1e4, torch.zeros(2, 3)):
            assert torch.equal(model(x, tabular), reference)


def test_film_generators_per_block() -> None:
    model = _survival(film_stages=(1, 3))
    films = [(i, block.film) for i, stage in enumerate(model.backbone.stages) for block in stage]
    conditioned = [i for i, film in films if film is not None]
    assert conditioned == [1, 1, 3]  # every block of the chosen stages, each with its own generator
    gens = [film for _, film in films if film is not None]
    assert len({id(g) for g in gens}) == 3 and [g.channels for g in gens] == [8, 8, 32]


def test_paper_survival_parameter_count() -> None:
    model = build_aslnet("survival")
    count = sum(p.numel() for p in model.parameters())
    # notes §3.3, by hand: backbone 8,330,816 + head 256+1 + MLP (3·128+128)+(128·128+128)
    # + FiLM per block (D·64+64) + 2·(64·C+C) + 2 gates, C = 128 (stage 2), 256 (stage 3)
    film = 2 * (128 * 64 + 64 + 2 * (64 * 128 + 128) + 2) + 2 * (128 * 64 + 64 + 2 * (64 * 256 + 256) + 2)
    assert film == 132_872
    assert count == 8_330_816 + 257 + (3 * 128 + 128) + (128 * 128 + 128) + film == 8_480_969
    assert isinstance(model, ASLNetSurvival) and model.backbone.film_stages == (2, 3)
    assert model.backbone.head_dropout.p == 0.1


def test_gradient_reaches_tabular_encoder_after_one_step() -> None:
    model = _survival(dropout=0.0, film_dropout=0.0).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(2)
    x, tab = torch.randn(2, 4, 12, 12, 12), torch.randn(2, 3)

    def step() -> None:
        optimiser.zero_grad()
        model(x, tab).square().sum().backward()

    step()
    tab_grads = [p.grad for p in model.tabular.parameters()]
    head = model.backbone.stages[3][0].film.gamma_head
    assert all(g is not None and not g.any() for g in tab_grads)  # zero FiLM heads block the path at init
    assert head.weight.grad.abs().sum() > 0  # …but the heads themselves learn
    optimiser.step()
    step()
    assert all(g.abs().sum() > 0 for g in (p.grad for p in model.tabular.parameters()))


def test_survival_model_is_per_sample() -> None:
    model = _survival().eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for block in model.backbone.stages[3]:
            block.film.gamma_head.weight.normal_()
        x, tab = torch.randn(2, 4, 12, 12, 12), torch.randn(2, 3)
        first = model(x, tab)[0]
        other = model(torch.stack([x[0], x[1] * 9 - 2]), torch.stack([tab[0], tab[1] + 10]))[0]
        alone = model(x[:1], tab[:1])[0]
    torch.testing.assert_close(first, other, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first, alone, rtol=1e-5, atol=1e-6)
    assert model.feature_maps(x, tab).shape == (2, 32, 1, 1, 1)


def test_tabular_normaliser_matches_standard_scaler_and_is_saved() -> None:
    rng = np.random.default_rng(0)
    table = np.column_stack([rng.normal(60, 12, 40), rng.integers(0, 2, 40), rng.integers(0, 3, 40)])
    scaler = StandardScaler().fit(table)
    encoder = TabularEncoder(3, hidden=8)
    encoder.set_normalisation(scaler.mean_, scaler.scale_)
    x = torch.as_tensor(table, dtype=torch.float32)
    np.testing.assert_allclose(encoder.normalise(x).numpy(), scaler.transform(table), rtol=1e-5, atol=1e-5)
    state = encoder.state_dict()
    assert {"mean", "std"} <= set(state)
    copy = TabularEncoder(3, hidden=8)
    copy.load_state_dict(state)
    assert torch.equal(copy(x), encoder(x))


def test_tabular_std_floor_and_shapes() -> None:
    encoder = TabularEncoder(2, hidden=5, layers=0)
    encoder.set_normalisation(torch.tensor([1.0, 2.0]), [0.0, 4.0])
    assert encoder.std.tolist() == pytest.approx([1e-7, 4.0])
    out = encoder(torch.tensor([[1.0, 6.0]]))
    assert out.tolist() == [[0.0, 1.0]] and encoder.out_features == 2
    assert TabularEncoder(3, hidden=5, layers=2)(torch.zeros(4, 3)).shape == (4, 5)
    with pytest.raises(InputError, match="expected 2 values"):
        encoder.set_normalisation([0.0, 1.0, 2.0], [1.0, 1.0])
    with pytest.raises(InputError, match="-1.0"):
        encoder.set_normalisation([0.0, 1.0], [1.0, -1.0])
    with pytest.raises(InputError, match=r"\(1, 3\)"):
        encoder(torch.zeros(1, 3))


def test_nan_tabular_raises() -> None:
    model = _survival()
    tab = torch.tensor([[60.0, 1.0, 0.0], [55.0, float("nan"), 2.0]])
    with pytest.raises(ValueError, match=r"NaN.*rows \[1\]"):
        model(torch.randn(2, 4, 8, 8, 8), tab)
    with pytest.raises(NonFiniteTabularError):
        model.tabular(torch.tensor([[float("inf"), 0.0, 0.0]]))
    with pytest.raises(InputError):
        model.tabular(tab)


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"film_stages": ()}, "film_stages"), ({"film_stages": (4,)}, r"\[4\]"), ({"tabular_layers": -1}, "-1"),
    ({"tabular_hidden": 0}, "tabular_hidden"), ({"film_dropout": 1.0}, "film_dropout"),
    ({"tabular_dropout": 2}, "tabular_dropout"), ({"block": "deep"}, "'deep'"),
])
def test_fusion_bad_arguments(kwargs: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        _survival(**kwargs)
    with pytest.raises(ConfigError, match="tabular_features"):
        ASLNetSurvival(4, 0)
