"""Clinical (tabular) inputs: encoding, imputation and normalisation statistics, fitted per fold.

ASLNet's survival model takes ``[age, sex, EOR]`` (reference notes §1.3): age in years, sex
M → 0 / F → 1, extent of resection GTR → 0 / STR → 1 / biopsy → 2 (one ordinal scalar, as the
reference; not one-hot). The reference has no imputation; here a missing value is filled with the
training fold's median (age) or mode (sex, EOR), and the normaliser's mean and population std
(floored at 1e-7, as the reference) are taken from the same training patients. Fit on a training
fold only, then transform that fold's training, validation and test patients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.tasks.labels import TABLE, parsed_column

TABULAR_FEATURES: tuple[str, ...] = ("age", "sex", "eor")
"""The model's clinical inputs, in vector order."""

CODES: dict[str, dict[str, float] | None] = {
    "age": None,
    "sex": {"M": 0.0, "F": 1.0},
    "eor": {"GTR": 0.0, "STR": 1.0, "biopsy": 2.0},
}
"""Encoding of each feature's canonical values (``None``: numeric, kept as is)."""

STD_FLOOR = 1e-7
"""Smallest std the normaliser divides by (a constant column maps to 0, not to inf)."""


def encode_column(frame: pd.DataFrame, feature: str) -> np.ndarray:
    """``(n,)`` float64 codes of ``feature`` (NaN where missing); cells parsed by the schema."""
    if feature not in CODES:
        raise ConfigError(f"unknown tabular feature {feature!r} (known: {', '.join(CODES)})")
    codes = CODES[feature]
    values = parsed_column(frame, feature)
    if codes is None:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.array([np.nan if v is None else codes[v] for v in values], dtype=np.float64)


def _fill_value(feature: str, column: np.ndarray) -> float:
    """Median for numeric features, mode (smallest code on ties) for categorical ones."""
    observed = column[np.isfinite(column)]
    if observed.size == 0:
        raise InputError(TABLE, f"column {feature!r} has no values in the training patients: cannot impute it")
    if CODES[feature] is None:
        return float(np.median(observed))
    codes, counts = np.unique(observed, return_counts=True)
    return float(codes[np.argmax(counts)])


@dataclass
class TabularEncoding:
    """Per-fold encoding of clinical features: fill values plus normaliser statistics.

    Attributes:
        features: feature names in vector order (default :data:`TABULAR_FEATURES`).
        fill: feature → value (encoded units) that replaces a missing cell.
        mean: ``(F,)`` mean of the imputed training matrix (years for age, codes otherwise).
        std: ``(F,)`` population std of the imputed training matrix, floored at :data:`STD_FLOOR`.
        n_fit: number of training patients it was fitted on.
    """

    features: tuple[str, ...]
    fill: dict[str, float]
    mean: np.ndarray
    std: np.ndarray
    n_fit: int

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        if not self.features or len(set(self.features)) != len(self.features):
            raise ConfigError(f"features must be distinct and non-empty, got {self.features!r}")
        for feature in self.features:
            if feature not in CODES:
                raise ConfigError(f"unknown tabular feature {feature!r} (known: {', '.join(CODES)})")
        if set(self.fill) != set(self.features):
            raise ConfigError(f"fill must give one value per feature {self.features}, got keys {sorted(self.fill)}")
        self.fill = {k: float(self.fill[k]) for k in self.features}
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        n = len(self.features)
        if self.mean.shape != (n,) or self.std.shape != (n,):
            raise ConfigError(f"mean and std must have shape ({n},), got {self.mean.shape} and {self.std.shape}")
        values = [*self.fill.values(), *self.mean, *self.std]
        if not all(math.isfinite(v) for v in values) or np.any(self.std <= 0):
            raise ConfigError("tabular encoding values must be finite and std > 0")

    @classmethod
    def fit(cls, frame: pd.DataFrame, features: Sequence[str] = TABULAR_FEATURES) -> TabularEncoding:
        """Fit fill values and normaliser on ``frame`` — the TRAINING patients of one fold only."""
        features = tuple(features)
        if not features:
            raise ConfigError("features must not be empty")
        columns = [encode_column(frame, f) for f in features]
        if not columns[0].size:
            raise InputError(TABLE, "no training patients to fit the tabular encoding on")
        fill = {f: _fill_value(f, c) for f, c in zip(features, columns)}
        matrix = np.stack([np.where(np.isfinite(c), c, fill[f]) for f, c in zip(features, columns)], axis=1)
        std = np.maximum(matrix.std(axis=0), STD_FLOOR)
        return cls(features, fill, matrix.mean(axis=0), std, int(matrix.shape[0]))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """``(n, F)`` float32 encoded and imputed features, NOT normalised (the model normalises)."""
        columns = [encode_column(frame, f) for f in self.features]
        matrix = np.stack([np.where(np.isfinite(c), c, self.fill[f]) for f, c in zip(self.features, columns)], axis=1)
        return matrix.astype(np.float32)

    def normalise(self, matrix: np.ndarray) -> np.ndarray:
        """``(x − mean) / std`` of an ``(n, F)`` matrix from :meth:`transform` (float64)."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.features):
            raise InputError("tabular", f"expected shape (n, {len(self.features)}), got {matrix.shape}")
        return (matrix - self.mean) / self.std

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in checkpoints)."""
        return {"features": list(self.features), "fill": dict(self.fill), "mean": self.mean.tolist(),
                "std": self.std.tolist(), "n_fit": self.n_fit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TabularEncoding:
        """Inverse of :meth:`to_dict`; raises :class:`ConfigError` naming a missing or bad key."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"tabular encoding must be a mapping, got {type(data).__name__}")
        for key in ("features", "fill", "mean", "std"):
            if key not in data:
                raise ConfigError(f"tabular encoding has no key {key!r}")
        if not isinstance(data["fill"], Mapping):
            raise ConfigError(f"tabular encoding key 'fill' must be a mapping, got {data['fill']!r}")
        try:
            return cls(tuple(data["features"]), dict(data["fill"]), np.asarray(data["mean"], dtype=np.float64),
                       np.asarray(data["std"], dtype=np.float64), int(data.get("n_fit", 0)))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"tabular encoding has a non-numeric value ({err})") from None
