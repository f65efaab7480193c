"""Exact Shapley values of a few players: input channels and, for survival, clinical variables.

The ASLNet paper reports "exact Shapley values" of its four input channels but the released code
only computes IG ratios (``../shared/reference/aslnet-reference-code-notes.md`` §7.2). Here the
game is played for real: with ``n`` players every one of the ``2ⁿ`` coalitions is evaluated once
(4 channels → 16, 4 channels + age/sex/EOR → 128) and

    φ_i = Σ_{S ⊆ N∖{i}} |S|! (n − |S| − 1)! / n! · (v(S ∪ {i}) − v(S)).

A player outside the coalition is replaced by its baseline: image channels by 0 (the
background/pad value of every ASLNet channel and of z-scored MRI outside the brain; per-channel
values may be given), tabular features by a value the caller passes, normally the training-set
mean (the reference's tabular baseline was the test-set mean). ``v`` is the probability of the
explained class. The model must treat samples independently in eval mode (coalitions are batched).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.explain.attribution import (Output, as_tensor_tuple, check_count, check_model, class_probability,
                                         eval_mode)

MAX_PLAYERS = 16
"""Largest game solved exactly (2¹⁶ = 65 536 coalitions)."""


def coalition_matrix(n_players: int) -> np.ndarray:
    """All ``2ⁿ`` coalitions as a ``(2ⁿ, n)`` bool matrix: row ``m`` holds player ``i`` iff bit ``i`` of ``m``."""
    n = _check_players(n_players)
    rows = np.arange(2**n)[:, None]
    return ((rows >> np.arange(n)[None, :]) & 1).astype(bool)


def _check_players(n_players: object) -> int:
    n = check_count("n_players", n_players)
    if n > MAX_PLAYERS:
        raise ConfigError(f"n_players must be at most {MAX_PLAYERS} for an exact solution, got {n}")
    return n


def shapley_weights(n_players: int) -> np.ndarray:
    """Weight of a coalition of size ``s = 0 … n−1`` not holding the player: ``s!(n−s−1)!/n!``, shape (n,)."""
    n = _check_players(n_players)
    return np.array([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)])


def shapley_from_values(values: np.ndarray, n_players: int) -> np.ndarray:
    """Shapley values ``φ`` (n,) from the values ``v`` (2ⁿ,) of the coalitions of :func:`coalition_matrix`."""
    n = _check_players(n_players)
    v = np.asarray(values, dtype=float)
    if v.shape != (2**n,):
        raise InputError("coalition values", f"expected shape ({2**n},) for {n} players, got {v.shape}")
    if not np.isfinite(v).all():
        raise InputError("coalition values", f"{int((~np.isfinite(v)).sum())} values are NaN or infinite")
    rows = np.arange(2**n)
    sizes = coalition_matrix(n).sum(axis=1)
    weights = shapley_weights(n)
    phi = np.empty(n)
    for player in range(n):
        without = rows[(rows >> player) & 1 == 0]
        phi[player] = np.sum(weights[sizes[without]] * (v[without | (1 << player)] - v[without]))
    return phi


def exact_shapley(value: Callable[[np.ndarray], np.ndarray], n_players: int) -> np.ndarray:
    """Exact Shapley values ``φ`` (n_players,) of the game ``value``.

    ``value`` receives every coalition at once as the ``(2ⁿ, n)`` bool matrix of
    :func:`coalition_matrix` and returns their ``(2ⁿ,)`` values. ``Σφ = v(all) − v(∅)``.
    """
    if not callable(value):
        raise ConfigError(f"value must be a callable, got {type(value).__name__}")
    coalitions = coalition_matrix(n_players)
    return shapley_from_values(np.asarray(value(coalitions.copy())), n_players)


@dataclass(frozen=True)
class ShapleyResult:
    """Shapley values of one patient's prediction.

    Attributes:
        players: player names, e.g. ``["raw", "zg", "zl", "log", "age", "sex", "eor"]``.
        values: ``φ`` per player (probability units), shape ``(n,)``.
        base_value: ``v(∅)``, the probability with every player at its baseline.
        full_value: ``v(all)``, the model's probability for the patient; ``Σφ = full − base``.
    """

    players: list[str]
    values: np.ndarray
    base_value: float
    full_value: float

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=float)
        if values.shape != (len(self.players),):
            raise InputError("ShapleyResult", f"{len(self.players)} players but values of shape {values.shape}")
        if len(set(self.players)) != len(self.players):
            raise InputError("ShapleyResult", f"player names repeat: {self.players}")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "players", list(self.players))

    def shares(self) -> np.ndarray:
        """``|φ| / Σ|φ|`` per player (fractions summing to 1; NaN when every ``φ`` is 0)."""
        magnitude = np.abs(self.values)
        total = magnitude.sum()
        return magnitude / total if total > 0 else np.full(len(self.players), np.nan)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record: players, values, shares, base and full value."""
        return {"players": list(self.players), "values": self.values.tolist(), "shares": self.shares().tolist(),
                "base_value": self.base_value, "full_value": self.full_value}


def mean_shares(results: Sequence[ShapleyResult]) -> dict[str, tuple[float, float]]:
    """Mean and sample standard deviation (ddof = 1; NaN for one patient) of each player's share.

    Patients whose ``φ`` are all zero (no share defined) are left out. All results must have
    the same players in the same order.
    """
    results = list(results)
    if not results or not all(isinstance(r, ShapleyResult) for r in results):
        raise InputError("mean_shares", "expected a non-empty sequence of ShapleyResult")
    players = results[0].players
    for index, result in enumerate(results):
        if result.players != players:
            raise InputError(f"results[{index}]", f"players {result.players} differ from {players}")
    shares = np.array([r.shares() for r in results])
    shares = shares[np.isfinite(shares).all(axis=1)]
    if not len(shares):
        raise InputError("mean_shares", "every result has all-zero Shapley values")
    std = shares.std(axis=0, ddof=1) if len(shares) > 1 else np.full(len(players), np.nan)
    return {name: (float(m), float(s)) for name, m, s in zip(players, shares.mean(axis=0), std)}


def _baseline_like(baseline: Tensor | float, reference: Tensor, name: str) -> Tensor:
    """``baseline`` (a number or a tensor broadcastable to ``reference``) as a tensor of its shape."""
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        if not math.isfinite(baseline):
            raise InputError(name, f"must be finite, got {baseline!r}")
        return torch.full_like(reference, float(baseline))
    if not isinstance(baseline, Tensor):
        raise InputError(name, f"expected a number or a tensor, got {type(baseline).__name__}")
    try:
        out = torch.broadcast_to(baseline.to(device=reference.device, dtype=reference.dtype), reference.shape)
    except RuntimeError:
        raise InputError(name, f"shape {tuple(baseline.shape)} does not broadcast to "
                               f"{tuple(reference.shape)}") from None
    if not bool(torch.isfinite(out).all()):
        raise InputError(name, "has NaN or infinite values")
    return out


def _names(given: Sequence[str] | None, count: int, prefix: str, label: str) -> list[str]:
    if given is None:
        return [f"{prefix}{i}" for i in range(count)]
    names = [str(n) for n in given]
    if len(names) != count:
        raise ConfigError(f"{label} must name {count} players, got {len(names)}: {names}")
    return names


def channel_shapley(
    model: nn.Module,
    image: Tensor,
    target: int,
    *,
    tabular: Tensor | None = None,
    image_baseline: Tensor | float = 0.0,
    tabular_baseline: Tensor | None = None,
    batch_size: int = 8,
    channel_names: Sequence[str] | None = None,
    tabular_names: Sequence[str] | None = None,
    output: Output = "probability",
) -> ShapleyResult:
    """Exact Shapley values of the image channels (and tabular features) for one sample.

    Args:
        model: ``model(image)`` or, with ``tabular``, ``model(image, tabular)`` → logits.
        image: one sample ``(1, C, X, Y, Z)``; each channel is a player.
        target: explained class; ``v(S)`` = its probability (:func:`class_probability`).
        tabular: ``(1, F)`` clinical features (e.g. age, sex, EOR as the model takes them); each
            feature is a player.
        image_baseline: value of an absent channel: a number (default 0, the background value) or
            a tensor broadcastable to ``image`` (e.g. ``(1, C, 1, 1, 1)`` per channel).
        tabular_baseline: value of an absent feature, broadcastable to ``tabular``; required with
            ``tabular`` (use the training-set mean, in the units the model takes).
        batch_size: coalitions evaluated per forward pass (memory of ``batch_size`` samples).
        channel_names, tabular_names: player names (default ``channel_i``, ``tabular_j``).
        output: ``"logit"`` plays the game on the class score instead.
    """
    check_model(model)
    (image,) = as_tensor_tuple(image, "image")
    if image.ndim != 5 or image.shape[0] != 1:
        raise InputError("image", f"expected one sample (1, C, X, Y, Z), got shape {tuple(image.shape)}")
    check_count("batch_size", batch_size)
    forward = class_probability(model, target, output=output)
    image_base = _baseline_like(image_baseline, image, "image_baseline")
    n_channels = int(image.shape[1])
    players = _names(channel_names, n_channels, "channel_", "channel_names")
    tabular_base: Tensor | None = None
    if tabular is not None:
        (tabular,) = as_tensor_tuple(tabular, "tabular")
        if tabular.ndim != 2 or tabular.shape[0] != 1:
            raise InputError("tabular", f"expected one sample (1, F), got shape {tuple(tabular.shape)}")
        if tabular_baseline is None:
            raise ConfigError("tabular_baseline is required with tabular (use the training-set mean)")
        tabular = tabular.to(image.device)
        tabular_base = _baseline_like(tabular_baseline, tabular, "tabular_baseline")
        players += _names(tabular_names, int(tabular.shape[1]), "tabular_", "tabular_names")
    elif tabular_baseline is not None or tabular_names is not None:
        raise ConfigError("tabular_baseline / tabular_names given without tabular")
    n_players = _check_players(len(players))

    def value(coalitions: np.ndarray) -> np.ndarray:
        present = torch.as_tensor(coalitions, device=image.device)
        out = []
        for start in range(0, len(present), batch_size):
            chunk = present[start:start + batch_size]
            channels = chunk[:, :n_channels].reshape(len(chunk), n_channels, 1, 1, 1)
            args = [torch.where(channels, image, image_base)]
            if tabular is not None and tabular_base is not None:
                args.append(torch.where(chunk[:, n_channels:], tabular, tabular_base))
            out.append(forward(*args).double().cpu())
        return torch.cat(out).numpy()

    with eval_mode(model), torch.no_grad():
        coalition_values = value(coalition_matrix(n_players))
    phi = shapley_from_values(coalition_values, n_players)
    return ShapleyResult(players, phi, float(coalition_values[0]), float(coalition_values[-1]))
