"""Task labels: the 12-month definition on the real bundled UCSF-PDGM table, edge cases by hand."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest

from vbiopsy.data.tables import parse_table, read_csv_table
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.tasks import GRADE_CLASSES, TaskLabels, cox_labels, grade_labels, survival_labels, task_labels


@pytest.fixture(scope="module")
def real_table() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(parsed canonical frame, raw string table) of the bundled UCSF-PDGM clinical CSV."""
    with resources.as_file(resources.files("vbiopsy.data") / "resources" / "ucsf_pdgm_clinical.csv") as path:
        raw = read_csv_table(path)
        raw.insert(0, "subject_id", [f"row{i:03d}" for i in range(len(raw))])
        parsed = parse_table(raw, path)
    assert not parsed.problems
    return pd.DataFrame(parsed.rows), raw


def test_12m_label_on_real_table_matches_baselines(real_table: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    frame, raw = real_table
    labels = survival_labels(frame)
    # baselines.md: 118 positive, 282 negative, 100 excluded among the 500 with OS
    assert labels.counts() == {0: 282, 1: 118}
    reasons = pd.Series(labels.excluded).value_counts().to_dict()
    assert reasons == {"censored before 365 days": 100, "no survival time (os_days)": 1}
    # independent derivation from the raw strings
    days = pd.to_numeric(raw["OS"], errors="coerce")
    dead = raw["1-dead 0-alive"] == "1"
    positive = set(raw["subject_id"][dead & (days < 365)])
    negative = set(raw["subject_id"][days >= 365])
    y = dict(zip(labels.subject_ids, labels.y))
    assert {s for s, v in y.items() if v == 1} == positive
    assert {s for s, v in y.items() if v == 0} == negative
    assert labels.name == "survival_12m" and labels.y.dtype == np.int64


def test_vital_status_on_real_table(real_table: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    frame, raw = real_table
    with_os = frame[frame["os_days"].notna()]
    assert len(with_os) == 500
    assert survival_labels(with_os, definition="vital_status").counts() == {0: 250, 1: 250}
    # the one patient without OS is dead: the reference code's label keeps them
    everyone = task_labels(frame, "survival", definition="vital_status")
    event = raw["1-dead 0-alive"]
    assert everyone.counts() == {0: int((event == "0").sum()), 1: int((event == "1").sum())} == {0: 250, 1: 251}
    assert not everyone.excluded


def test_grade_and_cox_on_real_table(real_table: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    frame, raw = real_table
    grades = grade_labels(frame)
    expected = raw["WHO CNS Grade"].astype(int).value_counts().to_dict()
    assert grades.counts() == {g: expected[g] for g in GRADE_CLASSES}
    cox = cox_labels(frame)
    assert cox.y.shape == (500, 2) and cox.counts() == {"events": 250, "censored": 250}


def hand_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "subject_id": ["a", "b", "c", "d", "e", "f", "g", "h"],
        "os_days": [365.0, 364.9, 364.0, 365, 400, 100, None, np.nan],
        "os_event": [1, 1, 0, 0, None, np.nan, 1, 0],
        "grade": [2, "IV", 3.0, "4", None, np.nan, pd.NA, "grade 3"],
    })


def test_12m_edge_cases_by_hand() -> None:
    labels = survival_labels(hand_frame())
    assert dict(zip(labels.subject_ids, labels.y.tolist())) == {"a": 0, "b": 1, "d": 0, "e": 0}
    assert labels.excluded["c"] == "censored before 365 days"
    assert labels.excluded["f"].startswith("no event status")
    assert labels.excluded["g"] == labels.excluded["h"] == "no survival time (os_days)"
    longer = survival_labels(hand_frame(), horizon_days=730)
    assert dict(zip(longer.subject_ids, longer.y.tolist())) == {"a": 1, "b": 1}
    assert longer.excluded["e"].startswith("no event status") and longer.excluded["c"] == "censored before 730 days"


def test_grade_and_cox_by_hand() -> None:
    grades = grade_labels(hand_frame())
    assert dict(zip(grades.subject_ids, grades.y.tolist())) == {"a": 0, "b": 2, "c": 1, "d": 2, "h": 1}
    assert set(grades.excluded) == {"e", "f", "g"} and grades.excluded["e"] == "no grade"
    cox = cox_labels(hand_frame())
    assert cox.subject_ids == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(cox.y, [[365, 1], [364.9, 1], [364, 0], [365, 0]])


@pytest.mark.parametrize(("column", "value"), [("grade", "high"), ("grade", 5), ("os_days", "soon"),
                                                ("os_days", -3), ("os_event", 2), ("os_days", np.inf)])
def test_invalid_cells_raise_naming_subject_and_value(column: str, value: object) -> None:
    frame = hand_frame().astype(object)
    frame.loc[1, column] = value
    func = grade_labels if column == "grade" else survival_labels
    with pytest.raises(InputError) as info:
        func(frame)
    assert "subject b" in str(info.value) and column in str(info.value)


def test_dispatch_and_bad_options() -> None:
    frame = hand_frame()
    assert task_labels(frame, "cox").name == "cox"
    assert task_labels(frame, "survival", horizon_days=730).name == "survival_730d"
    with pytest.raises(ConfigError, match="'stage'"):
        task_labels(frame, "stage")
    with pytest.raises(ConfigError, match="'horizon_days'"):
        task_labels(frame, "grade", horizon_days=365)
    with pytest.raises(ConfigError, match="'5y'"):
        task_labels(frame, "survival", definition="5y")
    with pytest.raises(ConfigError, match="horizon_days"):
        survival_labels(frame, horizon_days=0)
    with pytest.raises(InputError, match="'grade'"):
        task_labels(frame.drop(columns="grade"), "grade")
    with pytest.raises(InputError, match="subject_id"):
        grade_labels(frame.drop(columns="subject_id"))
    with pytest.raises(InputError, match="duplicate subject_id 'a'"):
        grade_labels(frame.assign(subject_id=["a"] * len(frame)))


def test_task_labels_validates_its_shape() -> None:
    with pytest.raises(ConfigError, match="2 subjects but 1 targets"):
        TaskLabels(["a", "b"], np.array([0]), {}, (0, 1), "x")
    with pytest.raises(ConfigError, match="'a'"):
        TaskLabels(["a"], np.array([0]), {"a": "no grade"}, (0, 1), "x")
