"""Tests for patient-level splits and the leakage check (vbiopsy.data.splits)."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from vbiopsy.data.splits import (
    Fold, Splits, assert_no_leakage, make_splits, min_patients_per_class,
)
from vbiopsy.errors import ConfigError, InputError, LeakageError

CLASS_SHARE = {"II": 0.15, "III": 0.10, "IV": 0.75}


def cohort(n_patients: int = 200, seed: int = 7, sessions: tuple[int, ...] = (1, 2, 3),
           shares: dict[str, float] = CLASS_SHARE) -> tuple[list[str], list[object], list[str]]:
    """Synthetic cohort: exact class shares over patients, 1-3 sessions per patient."""
    rng = random.Random(seed)
    names = [c for c, share in shares.items() for _ in range(round(share * n_patients))]
    rng.shuffle(names)
    sids, labels, pids = [], [], []
    for p, lab in enumerate(names):
        for s in range(rng.choice(sessions)):
            sids.append(f"sub-{p:03d}-ses{s}")
            pids.append(f"pat-{p:03d}")
            labels.append(lab)
    return sids, labels, pids


@pytest.fixture(scope="module")
def big() -> tuple[list[str], list[object], list[str], Splits]:
    sids, labels, pids = cohort()
    return sids, labels, pids, make_splits(sids, labels, patient_ids=pids, seed=1)


def patient_classes(pids_in: set[str], label_of: dict[str, object]) -> Counter:
    return Counter(label_of[p] for p in pids_in)


def test_stratification_keeps_class_proportions(big):
    sids, labels, pids, sp = big
    pat = dict(zip(sids, pids))
    label_of = dict(zip(pids, labels))
    n_patients = len(set(pids))
    test_pats = {pat[s] for s in sp.test}
    # test set: round(n_class * 0.2) patients of each class exactly
    assert patient_classes(test_pats, label_of) == {"II": 6, "III": 4, "IV": 30}
    assert abs(len(test_pats) / n_patients - 0.2) < 0.01
    rest_counts = Counter({c: round(share * n_patients) for c, share in CLASS_SHARE.items()})
    rest_counts.subtract(patient_classes(test_pats, label_of))
    for i, fold in enumerate(sp.folds):
        val_pats = {pat[s] for s in fold.val}
        got = patient_classes(val_pats, label_of)
        for cls, n in rest_counts.items():
            # each val fold holds about 1/5 of each class (at most one patient off, plus rounding)
            assert abs(got[cls] - n / 5) <= 1.5, (i, cls, got)
    assert sp.info["counts"]["test"] == {"II": 6, "III": 4, "IV": 30}
    assert sp.info["counts"]["all"] == {"II": 30, "III": 20, "IV": 150}


def test_groups_never_cross_partitions(big):
    sids, _, pids, sp = big
    by_patient: dict[str, list[str]] = {}
    for s, p in zip(sids, pids):
        by_patient.setdefault(p, []).append(s)
    assert max(len(v) for v in by_patient.values()) == 3  # multi-session patients are exercised
    test = set(sp.test)
    for p, sess in by_patient.items():
        in_test = {s in test for s in sess}
        assert len(in_test) == 1, p
        if in_test == {True}:
            continue
        assert len({next(i for i, f in enumerate(sp.folds) if s in f.val) for s in sess}) == 1, p
        for fold in sp.folds:
            assert len({s in fold.train for s in sess}) == 1, p


def test_kfold_property(big):
    sids, _, _, sp = big
    assert len(sp.folds) == 5
    rest = set(sids) - set(sp.test)
    vals = [set(f.val) for f in sp.folds]
    assert sum(len(v) for v in vals) == len(rest) and set().union(*vals) == rest
    for fold in sp.folds:
        assert set(fold.train) | set(fold.val) == rest
        assert not set(fold.train) & set(fold.val)
        assert fold.val and list(fold.val) == sorted(fold.val)


def test_deterministic_and_order_independent(big):
    sids, labels, pids, sp = big
    assert make_splits(sids, labels, patient_ids=pids, seed=1) == sp
    order = list(range(len(sids)))
    random.Random(3).shuffle(order)
    shuffled = make_splits([sids[i] for i in order], [labels[i] for i in order],
                           patient_ids=[pids[i] for i in order], seed=1)
    assert shuffled == sp
    assert shuffled.to_json() == sp.to_json()
    other = make_splits(sids, labels, patient_ids=pids, seed=2)
    assert other.test != sp.test


def test_keep_in_train_class_never_in_test():
    sids, labels, pids = cohort(100, shares={"II": 0.2, "III": 0.03, "IV": 0.77})
    with pytest.raises(ConfigError) as err:
        make_splits(sids, labels, patient_ids=pids)
    msg = str(err.value)
    assert "'III' has 3 patients" in msg and "keep_in_train=['III']" in msg and "at least 6" in msg
    for seed in range(5):
        sp = make_splits(sids, labels, patient_ids=pids, keep_in_train=["III"], seed=seed)
        label_of = dict(zip(sids, labels))
        assert "III" not in {label_of[s] for s in sp.test}
        assert {label_of[s] for s in sp.test} == {"II", "IV"}
        assert sum(label_of[s] == "III" for f in sp.folds for s in f.val) == labels.count("III")
        assert sp.info["policy"]["keep_in_train"] == ["III"]
        assert sp.info["counts"]["test"]["III"] == 0


def test_keep_in_train_does_not_change_other_classes():
    sids, labels, pids = cohort(100)
    a = make_splits(sids, labels, patient_ids=pids, seed=4)
    b = make_splits(sids, labels, patient_ids=pids, seed=4, keep_in_train=["III"])
    label_of = dict(zip(sids, labels))
    assert [s for s in a.test if label_of[s] != "III"] == list(b.test)


def test_rare_class_without_keep_option_names_it():
    sids, labels, pids = cohort(60, shares={"A": 0.5, "B": 0.45, "C": 0.05})
    with pytest.raises(ConfigError, match=r"'C' has 3 patients.*keep_in_train=\['C'\]"):
        make_splits(sids, labels, patient_ids=pids, n_folds=5)
    with pytest.raises(ConfigError, match="'C' has 3 patients"):  # also without a test set
        make_splits(sids, labels, patient_ids=pids, test_fraction=0, n_folds=5)
    sp = make_splits(sids, labels, patient_ids=pids, test_fraction=0, n_folds=3)
    assert sp.test == () and len(sp.folds) == 3


def test_rare_classes_train_policy_is_explicit_and_recorded():
    sids, labels, pids = cohort(60, shares={"A": 0.5, "B": 0.45, "C": 0.05})
    sp = make_splits(sids, labels, patient_ids=pids, n_folds=5, rare_classes="train")
    label_of = dict(zip(sids, labels))
    assert "C" not in {label_of[s] for s in sp.test} and {"A", "B"} <= {label_of[s] for s in sp.test}
    assert sp.info["policy"]["rare_classes"] == "train"
    assert sp.info["policy"]["rare_to_train"] == ["C"]
    default = make_splits(sids, labels, patient_ids=pids, n_folds=5, keep_in_train=["C"])
    assert default.test == sp.test  # the same patients as naming the class by hand
    with pytest.raises(ConfigError, match="rare_classes must be 'error' or 'train', got 'drop'"):
        make_splits(sids, labels, patient_ids=pids, rare_classes="drop")


def test_keep_in_train_unknown_value_is_refused():
    sids, labels, pids = cohort(60, shares={"A": 0.5, "B": 0.5})
    with pytest.raises(ConfigError, match="keep_in_train value 'III' matches no grade value"):
        make_splits(sids, labels, patient_ids=pids, keep_in_train=["III"], stratify_name="grade")
    with pytest.raises(ConfigError, match="collection"):
        make_splits(sids, labels, patient_ids=pids, keep_in_train="A")


def test_numeric_keep_in_train_matches_float_labels():
    sids, labels, pids = cohort(100, shares={"2": 0.2, "3": 0.03, "4": 0.77})
    floats = [float(x) for x in labels]
    sp = make_splits(sids, floats, patient_ids=pids, keep_in_train=[3])
    assert not [s for s, lab in zip(sids, floats) if lab == 3.0 and s in set(sp.test)]
    assert sp.info["counts"]["all"]["3.0"] == 3


def test_missing_labels_are_their_own_stratum():
    sids, labels, pids = cohort(100, shares={"A": 0.45, "B": 0.45, "M": 0.10})
    miss = {p for p, lab in zip(pids, labels) if lab == "M"}
    labels = [None if lab == "M" else lab for lab in labels]
    labels = [math.nan if lab is None and i % 2 else lab for i, lab in enumerate(labels)]
    sp = make_splits(sids, labels, patient_ids=pids)
    assert set(sp.subjects) == set(sids)
    pat = dict(zip(sids, pids))
    assert len({pat[s] for s in sp.test} & miss) == 2  # round(10 * 0.2)
    assert sp.info["counts"]["all"]["<missing>"] == 10
    assert sp.info["missing_labels"] == {"patients": 10, "subjects": sum(p in miss for p in pids)}


def test_missing_session_label_inherits_patient_label():
    sids = ["a1", "a2", "b1"] + [f"x{i}" for i in range(9)]
    pids = ["a", "a", "b"] + [f"x{i}" for i in range(9)]
    labels = [None, "L", "L"] + ["L"] * 9
    sp = make_splits(sids, labels, patient_ids=pids, test_fraction=0, n_folds=2)
    assert sp.info["counts"]["all"] == {"L": 11}


@pytest.mark.parametrize(("kwargs", "error", "pattern"), [
    ({"n_folds": 1}, ConfigError, "n_folds must be an integer >= 2, got 1"),
    ({"test_fraction": 1.0}, ConfigError, "got 1.0"),
    ({"test_fraction": -0.1}, ConfigError, r"got -0\.1"),
    ({"seed": -1}, ConfigError, "got -1"),
    ({"n_folds": 11}, ConfigError, "only 10 patients for n_folds=11"),
])
def test_bad_options(kwargs, error, pattern):
    sids = [f"s{i}" for i in range(10)]
    with pytest.raises(error, match=pattern):
        make_splits(sids, ["A"] * 10, **{"test_fraction": 0.0, **kwargs})


def test_bad_inputs():
    with pytest.raises(InputError, match="2 labels for 3 subject IDs"):
        make_splits(["a", "b", "c"], ["A", "A"])
    with pytest.raises(InputError, match="duplicate subject ID 'b'"):
        make_splits(["a", "b", "b"], ["A", "A", "A"])
    with pytest.raises(InputError, match="2 patient_ids for 3"):
        make_splits(["a", "b", "c"], ["A"] * 3, patient_ids=["p", "q"])
    with pytest.raises(InputError, match=r"patient 'p' has sessions with different label values: 'A' and 'B'"):
        make_splits(["a", "b", "c"], ["A", "B", "A"], patient_ids=["p", "p", "q"])
    with pytest.raises(InputError, match="non-empty strings, got 3"):
        make_splits(["a", 3], ["A", "A"])


def test_json_round_trip_and_save(tmp_path: Path, big):
    sids, _, pids, sp = big
    text = sp.to_json()
    data = json.loads(text)
    assert list(data) == ["format", "test", "folds", "info"]
    assert list(data["info"]) == sorted(data["info"])
    assert Splits.from_json(text) == sp
    path = sp.save(tmp_path / "splits.json")
    assert path.read_text(encoding="utf-8") == text
    assert [p.name for p in tmp_path.iterdir()] == ["splits.json"]  # no temp file left
    loaded = Splits.load(path, subject_to_patient=dict(zip(sids, pids)), all_subjects=sids)
    assert loaded == sp and loaded.to_json() == text


def edit(sp: Splits, fn) -> str:
    data = json.loads(sp.to_json())
    fn(data)
    return json.dumps(data, indent=2)


def test_hand_edit_moving_one_session_to_test_is_leakage(tmp_path: Path, big):
    sids, _, pids, sp = big
    patient = next(p for p, sess in sp.info["sessions_by_patient"].items() if not set(sess) & set(sp.test))
    moved = sp.info["sessions_by_patient"][patient][0]

    def move(data):
        data["test"].append(moved)
        for fold in data["folds"]:
            for part in ("train", "val"):
                if moved in fold[part]:
                    fold[part].remove(moved)
    path = tmp_path / "splits.json"
    path.write_text(edit(sp, move), encoding="utf-8")
    with pytest.raises(LeakageError, match=rf"splits.json: patient '{patient}' is in both test .* and fold 0"):
        Splits.load(path)  # grouping recorded in info
    text = edit(sp, lambda d: (move(d), d["info"].pop("sessions_by_patient")))
    with pytest.raises(LeakageError, match=f"patient '{patient}'"):
        Splits.from_json(text, subject_to_patient=dict(zip(sids, pids)))
    Splits.from_json(text)  # without any grouping the edit is a valid per-subject split


def test_train_val_leak_inside_a_fold(big):
    sp = big[3]
    patient, sess = next((p, s) for p, s in sp.info["sessions_by_patient"].items() if s[0] in sp.folds[2].val)

    def swap(data):  # move one session of the patient from val to train in fold 2 only
        data["folds"][2]["val"].remove(sess[0])
        data["folds"][2]["train"].append(sess[0])
    with pytest.raises(LeakageError, match=rf"patient '{patient}' is in both fold 2 train .* and fold 2 val"):
        Splits.from_json(edit(sp, swap))


@pytest.mark.parametrize(("text", "pattern"), [
    ("{not json", r"splits.json: not valid JSON \(line 1"),
    ("[1, 2]", "expected a JSON object"),
    ('{"test": []}', "missing key 'folds'"),
    ('{"test": [], "folds": [], "extra": 1}', "unknown key 'extra'"),
    ('{"test": "a", "folds": []}', "test must be a list of subject IDs, found a string"),
    ('{"test": [], "folds": [{"train": ["a"]}, {"train": [], "val": []}]}', "fold 0 must be an object with exactly"),
    ('{"test": [], "folds": [{"train": ["a"], "val": [3]}]}', "fold 0 val must hold non-empty subject ID strings"),
    ('{"format": "other/2", "test": [], "folds": []}', "unsupported format 'other/2'"),
    ('{"test": [], "folds": [{"train": [], "val": ["a"]}]}', "at least 2 folds, found 1"),
    ('{"test": [], "folds": [], "info": []}', "'info' must be an object"),
])
def test_malformed_json_is_input_error(text, pattern):
    with pytest.raises(InputError, match=pattern):
        Splits.from_json(text)


def test_load_missing_file(tmp_path: Path):
    with pytest.raises(InputError, match="nope.json: cannot read split file"):
        Splits.load(tmp_path / "nope.json")


def small() -> Splits:
    return Splits(test=("t1",), folds=(Fold(("b", "c"), ("a",)), Fold(("a", "c"), ("b",)), Fold(("a", "b"), ("c",))))


def test_check_accepts_valid_small_split():
    small().check(all_subjects=["a", "b", "c", "t1"])


@pytest.mark.parametrize(("folds", "pattern", "error"), [
    ((Fold(("b", "c", "c"), ("a",)), Fold(("a", "c"), ("b",)), Fold(("a", "b"), ("c",))),
     "subject 'c' is listed twice in fold 0 train", InputError),
    ((Fold(("b",), ("a",)), Fold(("a", "c"), ("b",)), Fold(("a", "b"), ("c",))),
     "subject 'c' is in neither train nor val of fold 0", InputError),
    ((Fold(("c",), ("a", "b")), Fold(("a", "c"), ("b",)), Fold(("a", "b"), ("c",))),
     "subject 'b' is in the val set of fold 0 and of fold 1", InputError),
    ((Fold(("b", "c"), ("a",)), Fold(("a", "c"), ("b",)), Fold(("a", "b", "c"), ())),
     "subject 'c' is in no fold's val set", InputError),
    ((Fold(("b", "c"), ("a",)), Fold(("a", "c", "t1"), ("b",)), Fold(("a", "b"), ("c",))),
     r"subject 't1' is in both test \(subject 't1'\) and fold 1 train", LeakageError),
])
def test_check_rejects_broken_kfold(folds, pattern, error):
    with pytest.raises(error, match=pattern):
        Splits(test=("t1",), folds=folds).check()


def test_check_unknown_and_unassigned_subjects():
    with pytest.raises(InputError, match="cohort.json: unknown subject 't1' in test"):
        small().check(all_subjects=["a", "b", "c"], source="cohort.json")
    with pytest.raises(InputError, match="subject 'd' of the cohort is in no partition"):
        small().check(all_subjects=["a", "b", "c", "d", "t1"])
    with pytest.raises(InputError, match=r"splits.json: unknown subject 'zz'"):
        Splits.from_json(small().to_json().replace('"t1"', '"zz"'), all_subjects=["a", "b", "c", "t1"])


def test_check_patient_grouping():
    mapping = {"a": "P", "t1": "P"}
    with pytest.raises(LeakageError, match=r"patient 'P' is in both test \(subject 't1'\) and fold 0 val \(subject 'a'\)"):
        small().check(mapping)


def test_assert_no_leakage_helper():
    assert_no_leakage(("x", ["a", "b"]), ("y", ["c"]))
    assert_no_leakage(("x", ["a1", "a2"]), ("y", ["b"]), subject_to_patient={"a1": "A", "a2": "A"})
    with pytest.raises(LeakageError, match=r"patient 'A' is in both x \(subject 'a1'\) and y \(subject 'a2'\)"):
        assert_no_leakage(("x", ["a1"]), ("y", ["b", "a2"]), subject_to_patient={"a1": "A", "a2": "A"})
    with pytest.raises(LeakageError, match="subject 'b' is in both x"):
        assert_no_leakage(("x", ["b"]), ("y", iter(["b"])))


def test_min_patients_per_class():
    assert min_patients_per_class(0.2, 5) == 6  # round(1.2) = 1 test + 5 left
    assert min_patients_per_class(0.0, 5) == 5
    assert min_patients_per_class(0.5, 2) == 4
    assert min_patients_per_class(0.1, 2) == 5  # round(0.5) = 1 test needs 5 patients
