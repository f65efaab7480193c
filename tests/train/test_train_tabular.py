"""Tabular encoding: codes by hand; imputation and normaliser against scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.train.tabular import STD_FLOOR, TABULAR_FEATURES, TabularEncoding


def training_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "subject_id": [f"s{i}" for i in range(7)],
        "age": [30.0, None, 50.0, 71.5, np.nan, 40.0, "62"],
        "sex": ["M", "F", None, "female", "M", "M", "F"],
        "eor": ["GTR", "STR", "biopsy", None, "STR", "STR", "GTR"],
    })


def test_codes_and_fill_values_by_hand() -> None:
    encoding = TabularEncoding.fit(training_frame())
    assert encoding.features == TABULAR_FEATURES
    # median of 30, 50, 71.5, 40, 62; mode of sex M,F,F,M,M,F → tie 3:3 → smallest code (M = 0);
    # mode of EOR codes 0,1,2,1,1,0 → STR = 1
    assert encoding.fill == {"age": 50.0, "sex": 0.0, "eor": 1.0}
    x = encoding.transform(training_frame())
    assert x.dtype == np.float32 and x.shape == (7, 3)
    np.testing.assert_array_equal(x[:, 1], [0, 1, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(x[:, 2], [0, 1, 2, 1, 1, 1, 0])
    np.testing.assert_array_equal(x[:, 0], [30, 50, 50, 71.5, 50, 40, 62])


def test_imputation_and_normaliser_match_sklearn() -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    frame = training_frame()
    encoding = TabularEncoding.fit(frame)
    codes = pd.DataFrame({
        "age": pd.to_numeric(frame["age"], errors="coerce"),
        "sex": frame["sex"].map({"M": 0, "F": 1, "female": 1}),
        "eor": frame["eor"].map({"GTR": 0, "STR": 1, "biopsy": 2}),
    }).to_numpy(dtype=float)
    imputed = np.column_stack([
        SimpleImputer(strategy="median").fit_transform(codes[:, :1]),
        SimpleImputer(strategy="most_frequent").fit_transform(codes[:, 1:]),
    ])
    np.testing.assert_allclose(encoding.transform(frame), imputed, rtol=1e-6)
    scaler = StandardScaler().fit(imputed)
    np.testing.assert_allclose(encoding.mean, scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(encoding.std, scaler.scale_, rtol=1e-12)
    np.testing.assert_allclose(encoding.normalise(encoding.transform(frame)), scaler.transform(imputed), atol=1e-6)


def test_transform_does_not_refit_and_roundtrips() -> None:
    encoding = TabularEncoding.fit(training_frame())
    other = pd.DataFrame({"subject_id": ["t1", "t2"], "age": [None, 99.0], "sex": [None, "F"], "eor": [None, "GTR"]})
    x = encoding.transform(other)
    np.testing.assert_array_equal(x, [[50, 0, 1], [99, 1, 0]])
    again = TabularEncoding.from_dict(json.loads(json.dumps(encoding.to_dict())))
    np.testing.assert_array_equal(again.transform(other), x)
    np.testing.assert_array_equal(again.std, encoding.std)
    assert again.fill == encoding.fill and again.n_fit == 7


def test_constant_column_std_is_floored() -> None:
    frame = pd.DataFrame({"subject_id": ["a", "b"], "age": [60, 60], "sex": ["F", "F"], "eor": ["GTR", "STR"]})
    encoding = TabularEncoding.fit(frame)
    assert encoding.std[0] == STD_FLOOR and encoding.std[1] == STD_FLOOR and encoding.std[2] == pytest.approx(0.5)
    assert np.all(np.isfinite(encoding.normalise(encoding.transform(frame))))


def test_bad_values_and_configs_are_named() -> None:
    frame = training_frame().astype(object)
    frame.loc[2, "sex"] = "X"
    with pytest.raises(InputError, match="subject s2.*'sex'.*'X'"):
        TabularEncoding.fit(frame)
    with pytest.raises(InputError, match="'eor'"):
        TabularEncoding.fit(training_frame().drop(columns="eor"))
    with pytest.raises(InputError, match="'age' has no values"):
        TabularEncoding.fit(training_frame().assign(age=None))
    with pytest.raises(ConfigError, match="'bmi'"):
        TabularEncoding.fit(training_frame(), features=("age", "bmi"))
    with pytest.raises(ConfigError, match="'std'"):
        TabularEncoding.from_dict({"features": ["age"], "fill": {"age": 1.0}, "mean": [0.0]})
    encoding = TabularEncoding.fit(training_frame(), features=("age",))
    assert encoding.transform(training_frame()).shape == (7, 1)
