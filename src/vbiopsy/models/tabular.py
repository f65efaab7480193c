"""Clinical (tabular) inputs in ASLNet: the normalising MLP encoder and the FiLM fusion model.

The survival model (reference code notes §3.3) normalises [age, sex, EOR] with the training
fold's mean and std, passes them through a small MLP to a condition vector t, and lets t
modulate the late ResNet stages through per-block FiLM generators. The normaliser is stored as
buffers so a fold's checkpoint carries its own statistics. Missing values must be imputed before
the model (training code); the encoder refuses NaN/Inf instead of propagating them as the
reference code did.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.film import check_int, check_int_sequence, check_rate
from vbiopsy.models.resnet3d import BlockKind, ResNet3D

#: smallest std the normaliser divides by (a constant column maps to 0, not to ±inf).
STD_FLOOR = 1e-7


class NonFiniteTabularError(InputError, ValueError):
    """Tabular input holds NaN or Inf (an InputError that is also a ValueError)."""


class TabularEncoder(nn.Module):
    """(B, n_features) → (B, hidden): fixed per-fold normaliser, then ``layers`` × [Linear → ReLU → Dropout].

    With ``layers = 0`` the output is the normalised input, (B, n_features). Linear layers are
    Glorot-uniform with zero bias. ``mean``/``std`` are buffers (saved in the state dict), default
    0 and 1; set them with :meth:`set_normalisation` from the training fold only.
    """

    def __init__(self, in_features: int, *, hidden: int = 128, layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_features = check_int("tabular_features", in_features)
        hidden = check_int("tabular_hidden", hidden)
        layers = check_int("tabular_layers", layers, minimum=0)
        rate = check_rate("tabular_dropout", dropout)
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        parts: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            linear = nn.Linear(width, hidden)
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
            parts += [linear, nn.ReLU(inplace=True)] + ([nn.Dropout(rate)] if rate > 0 else [])
            width = hidden
        self.mlp = nn.Sequential(*parts)
        self.out_features = width

    def set_normalisation(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        """Store the fold's per-feature mean and std (each length n_features; std floored at 1e-7)."""
        values = []
        for name, given in (("mean", mean), ("std", std)):
            tensor = torch.as_tensor(given, dtype=torch.float32).detach().reshape(-1)
            if tensor.numel() != self.in_features:
                raise InputError(f"tabular normaliser {name}",
                                 f"expected {self.in_features} values, got {tensor.numel()}: {tensor.tolist()}")
            if not torch.isfinite(tensor).all():
                raise InputError(f"tabular normaliser {name}", f"values must be finite, got {tensor.tolist()}")
            values.append(tensor)
        if (values[1] < 0).any():
            raise InputError("tabular normaliser std", f"values must be >= 0, got {values[1].tolist()}")
        with torch.no_grad():
            self.mean.copy_(values[0])
            self.std.copy_(values[1].clamp_min(STD_FLOOR))

    def normalise(self, x: Tensor) -> Tensor:
        """(x − mean) / std for x (B, n_features); raises on a wrong shape or NaN/Inf."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise InputError("tabular", f"expected shape (batch, {self.in_features}), got {tuple(x.shape)}")
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            rows = sorted({int(r) for r in (~finite).nonzero()[:, 0]})
            raise NonFiniteTabularError("tabular", f"NaN/Inf in batch rows {rows}; impute missing clinical "
                                                   "values before the model (training code does this per fold)")
        return (x - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.normalise(x))


class ASLNetSurvival(nn.Module):
    """FiLM fusion model: TabularEncoder → condition t → ResNet3D with FiLM on ``film_stages``.

    ``forward(x (B, C_in, X, Y, Z), tabular (B, n_features))`` → logits (B, out_channels). At
    initialisation every FiLM is the identity, so the output equals the same backbone without FiLM.
    Submodules: ``tabular`` (the encoder; call ``tabular.set_normalisation`` per fold) and
    ``backbone`` (the ResNet3D).
    """

    def __init__(self, in_channels: int, tabular_features: int, out_channels: int = 1, *, base_width: int = 32,
                 blocks: Sequence[int] = (2, 2, 2, 2), gn_groups: int = 32, dropout: float = 0.1,
                 tabular_hidden: int = 128, tabular_layers: int = 2, tabular_dropout: float = 0.0,
                 film_stages: Sequence[int] = (2, 3), film_hidden: int = 64, film_dropout: float = 0.1,
                 block: BlockKind = "basic") -> None:
        super().__init__()
        if not check_int_sequence("film_stages", film_stages, allow_empty=True, minimum=0):
            raise ConfigError("film_stages must name at least one stage for the fusion model, got []: "
                              "without FiLM the clinical inputs would be ignored")
        self.tabular = TabularEncoder(tabular_features, hidden=tabular_hidden, layers=tabular_layers,
                                      dropout=tabular_dropout)
        self.backbone = ResNet3D(in_channels, out_channels, base_width=base_width, blocks=blocks, block=block,
                                 gn_groups=gn_groups, dropout=dropout, film_stages=film_stages,
                                 film_dim=self.tabular.out_features, film_hidden=film_hidden,
                                 film_dropout=film_dropout)

    def condition(self, tabular: Tensor) -> Tensor:
        """Condition vector t (B, tabular_hidden) for raw clinical values (B, n_features)."""
        return self.tabular(tabular)

    @property
    def target_layer(self) -> nn.Module:
        """The backbone's last block (output of :meth:`feature_maps`), for Grad-CAM hooks."""
        return self.backbone.target_layer

    def feature_maps(self, x: Tensor, tabular: Tensor) -> Tensor:
        """Last-stage output of the conditioned backbone, (B, 8f, x', y', z')."""
        return self.backbone.feature_maps(x, self.condition(tabular))

    def forward(self, x: Tensor, tabular: Tensor) -> Tensor:
        """Logits (B, out_channels)."""
        return self.backbone(x, self.condition(tabular))
