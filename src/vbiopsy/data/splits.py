"""Patient-level train/validation/test splits with a leakage check.

Every session of a patient lands in the same partition: the held-out test set and the
cross-validation folds are drawn over patients, never over sessions (nnU-Net's per-case default
puts several scans of one patient in train and val). A split is stored as a human-editable
``splits.json``; loading it re-runs :meth:`Splits.check`, so a hand edit that leaks a patient is
refused.

Test selection: labels are constant within a patient (enforced), so a stratified, group-aware
sample is a per-class sample of patients. For each class (sorted), a seeded permutation of its sorted
patients is drawn and the first ``round(n_class * test_fraction)`` go to test. This is exact per
class and works for any fraction, unlike taking one fold of ``StratifiedGroupKFold(round(1/f))``.
The folds inside the rest come from :class:`sklearn.model_selection.StratifiedGroupKFold`.
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vbiopsy import __version__
from vbiopsy.atomic import write_text_atomic
from vbiopsy.errors import ConfigError, InputError, LeakageError

FORMAT = "vbiopsy.splits/1"
MISSING_LABEL = "<missing>"
_TOP_KEYS = ("format", "test", "folds", "info")


class _Missing:
    """Sentinel for a missing label (None / NaN / pandas NA): its own stratum."""

    def __repr__(self) -> str:
        return MISSING_LABEL


_MISSING = _Missing()


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: subject IDs to train on and to validate on."""

    train: tuple[str, ...]
    val: tuple[str, ...]


@dataclass(frozen=True)
class Splits:
    """A patient-level split: held-out ``test`` subject IDs and cross-validation ``folds`` of the rest.

    ``info`` records how the split was made (seed, stratify column, options, per-class patient
    counts per partition, version). Its ``sessions_by_patient`` (patients with several sessions) is
    the grouping :meth:`check` uses when no explicit ``subject_to_patient`` is given.
    """

    test: tuple[str, ...]
    folds: tuple[Fold, ...]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def subjects(self) -> tuple[str, ...]:
        """All subject IDs of the split, sorted."""
        return tuple(sorted({*self.test, *(s for f in self.folds for s in (*f.train, *f.val))}))

    def to_json(self) -> str:
        """Indented JSON: ``format``, ``test``, ``folds``, then ``info`` with sorted keys."""
        data = {
            "format": FORMAT,
            "test": list(self.test),
            "folds": [{"train": list(f.train), "val": list(f.val)} for f in self.folds],
            "info": json.loads(json.dumps(self.info, sort_keys=True)),
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str | Path = "splits.json", *,
                  subject_to_patient: Mapping[str, str] | None = None,
                  all_subjects: Iterable[str] | None = None) -> Splits:
        """Parse a split and :meth:`check` it; ``source`` names the file in messages.

        Raises:
            InputError: malformed JSON or structure, or any :meth:`check` input problem.
            LeakageError: a patient in two partitions that must be disjoint.
        """
        where = str(source)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(where, f"not valid JSON (line {err.lineno} column {err.colno}: {err.msg})") from None
        if not isinstance(data, dict):
            raise InputError(where, f"expected a JSON object with 'test' and 'folds', found {_kind(data)}")
        for key in data:
            if key not in _TOP_KEYS:
                raise InputError(where, f"unknown key {key!r} (expected {', '.join(_TOP_KEYS)})")
        if data.get("format", FORMAT) != FORMAT:
            raise InputError(where, f"unsupported format {data['format']!r} (expected {FORMAT!r})")
        for key in ("test", "folds"):
            if key not in data:
                raise InputError(where, f"missing key {key!r}")
        if not isinstance(data["folds"], list):
            raise InputError(where, f"'folds' must be a list of {{train, val}} objects, found {_kind(data['folds'])}")
        folds = []
        for i, item in enumerate(data["folds"]):
            if not isinstance(item, dict) or set(item) != {"train", "val"}:
                found = sorted(item) if isinstance(item, dict) else _kind(item)
                raise InputError(where, f"fold {i} must be an object with exactly 'train' and 'val', found {found}")
            folds.append(Fold(_id_list(item["train"], f"fold {i} train", where),
                              _id_list(item["val"], f"fold {i} val", where)))
        info = data.get("info", {})
        if not isinstance(info, dict):
            raise InputError(where, f"'info' must be an object, found {_kind(info)}")
        splits = cls(test=_id_list(data["test"], "test", where), folds=tuple(folds), info=info)
        splits.check(subject_to_patient, all_subjects, source=where)
        return splits

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` atomically and return the path."""
        try:
            return write_text_atomic(path, self.to_json())
        except OSError as err:
            raise InputError(path, f"cannot write split file ({err.strerror or err})") from None

    @classmethod
    def load(cls, path: str | Path, *, subject_to_patient: Mapping[str, str] | None = None,
             all_subjects: Iterable[str] | None = None) -> Splits:
        """Read a split file and :meth:`check` it (see :meth:`from_json`)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise InputError(path, f"cannot read split file ({reason})") from None
        return cls.from_json(text, path, subject_to_patient=subject_to_patient, all_subjects=all_subjects)

    def check(self, subject_to_patient: Mapping[str, str] | None = None,
              all_subjects: Iterable[str] | None = None, *, source: str | Path = "splits") -> None:
        """Check the split is leak-free and a proper k-fold split; raise on the first problem.

        Patients are grouped by ``subject_to_patient`` when given, else by ``info``'s
        ``sessions_by_patient``, else each subject is its own patient. The non-test set is
        ``all_subjects`` minus test when given, else everything in the folds.

        Raises:
            InputError: a subject twice in one list, an ID not in ``all_subjects``, fewer than 2
                folds, a fold whose train ∪ val is not the non-test set, val sets that overlap or
                do not cover the non-test set.
            LeakageError: a patient in test and in a fold, or in train and val of one fold.
        """
        where = str(source)
        named = [("test", self.test)]
        for i, fold in enumerate(self.folds):
            named += [(f"fold {i} train", fold.train), (f"fold {i} val", fold.val)]
        if len(self.folds) < 2:
            raise InputError(where, f"a split needs at least 2 folds, found {len(self.folds)}")
        known = None if all_subjects is None else set(all_subjects)
        for name, ids in named:
            seen: set[str] = set()
            for sid in ids:
                if sid in seen:
                    raise InputError(where, f"subject {sid!r} is listed twice in {name}")
                if known is not None and sid not in known:
                    raise InputError(where, f"unknown subject {sid!r} in {name} (not in the cohort)")
                seen.add(sid)
        mapping = subject_to_patient if subject_to_patient is not None else _recorded_patients(self.info, where)
        try:
            for i, fold in enumerate(self.folds):
                assert_no_leakage(("test", self.test), (f"fold {i} train", fold.train),
                                  (f"fold {i} val", fold.val), subject_to_patient=mapping)
        except LeakageError as err:
            raise LeakageError(f"{where}: {err}") from None
        in_folds = {sid for fold in self.folds for sid in (*fold.train, *fold.val)}
        rest = (known - set(self.test)) if known is not None else in_folds
        for sid in sorted(rest - in_folds)[:1]:
            raise InputError(where, f"subject {sid!r} of the cohort is in no partition (not in test or any fold)")
        val_fold: dict[str, int] = {}
        for i, fold in enumerate(self.folds):
            for sid in sorted(rest - set(fold.train) - set(fold.val))[:1]:
                raise InputError(where, f"subject {sid!r} is in neither train nor val of fold {i}; "
                                 "every fold must hold all non-test subjects")
            for sid in fold.val:
                if sid in val_fold:
                    raise InputError(where, f"subject {sid!r} is in the val set of fold {val_fold[sid]} and of "
                                     f"fold {i}; val sets must be disjoint")
                val_fold[sid] = i
        for sid in sorted(rest - set(val_fold))[:1]:
            raise InputError(where, f"subject {sid!r} is in no fold's val set; val sets must cover the non-test set")


def assert_no_leakage(*partitions: tuple[str, Iterable[str]],
                      subject_to_patient: Mapping[str, str] | None = None) -> None:
    """Raise :class:`LeakageError` if one patient has subjects in two of the named ``partitions``.

    ``partitions`` are ``(name, subject_ids)`` pairs; subjects missing from ``subject_to_patient``
    (or all, when it is ``None``) are their own patient.
    """
    mapping = subject_to_patient or {}
    owner: dict[str, tuple[str, str]] = {}
    for name, ids in partitions:
        for sid in ids:
            pid = mapping.get(sid, sid)
            first = owner.setdefault(pid, (name, sid))
            if first[0] != name:
                who = f"subject {sid!r}" if pid == sid == first[1] else f"patient {pid!r}"
                raise LeakageError(f"{who} is in both {first[0]} (subject {first[1]!r}) and {name} (subject {sid!r})")


def make_splits(
    subject_ids: Sequence[str],
    labels: Sequence[object | None],
    *,
    patient_ids: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    n_folds: int = 5,
    seed: int = 0,
    keep_in_train: Collection[object] = (),
    rare_classes: str = "error",
    stratify_name: str = "label",
) -> Splits:
    """A seeded, label-stratified, patient-level test set and ``n_folds`` CV folds over the rest.

    One ``subject_ids``/``labels``/``patient_ids`` entry per session (``patient_ids`` default to
    the subject IDs). Missing labels (None/NaN) form their own stratum; a patient's sessions may
    not carry different non-missing labels. ``test_fraction`` of each class's patients is held
    out (0: no test set). Classes in ``keep_in_train`` (``None`` for missing) never go to test and
    are exempt from the minimum class size (:func:`min_patients_per_class`). A class below that
    minimum raises, unless ``rare_classes="train"``, which keeps every such class in training and
    records which in ``info["policy"]["rare_to_train"]``. The result depends only on the inputs
    and ``seed``, not on their order.

    Raises:
        ConfigError: a bad option, fewer patients than folds, or a class too rare to stratify
            that is not in ``keep_in_train``.
        InputError: unequal lengths, duplicate subject IDs, conflicting labels within a patient.
    """
    _check_options(test_fraction, n_folds, seed)
    if rare_classes not in ("error", "train"):
        raise ConfigError(f"rare_classes must be 'error' or 'train', got {rare_classes!r}")
    subjects = _str_list(subject_ids, "subject_ids")
    groups = subjects if patient_ids is None else _str_list(patient_ids, "patient_ids")
    for name, values in (("labels", labels), ("patient_ids", groups)):
        if len(values) != len(subjects):
            raise InputError("make_splits", f"{len(values)} {name} for {len(subjects)} subject IDs")
    sessions: dict[str, list[str]] = {}
    label_of: dict[str, object] = {}
    patient_of: dict[str, str] = {}
    for i in sorted(range(len(subjects)), key=lambda j: subjects[j]):
        sid, pid, lab = subjects[i], groups[i], _norm_label(labels[i], f"label of subject {subjects[i]!r}")
        if sid in patient_of:
            raise InputError("subject_ids", f"duplicate subject ID {sid!r}")
        patient_of[sid] = pid
        sessions.setdefault(pid, []).append(sid)
        prev = label_of.get(pid, _MISSING)
        if prev is not _MISSING and lab is not _MISSING and lab != prev:
            raise InputError("labels", f"patient {pid!r} has sessions with different {stratify_name} values: "
                             f"{prev!r} and {lab!r} (subject {sid!r})")
        if lab is not _MISSING or pid not in label_of:
            label_of[pid] = lab
    if len(sessions) < n_folds:
        raise ConfigError(f"only {len(sessions)} patients for n_folds={n_folds}; need at least one patient per fold")
    classes, class_value = _classes(label_of, stratify_name)
    keep, keep_values = _keep_keys(keep_in_train, class_value, stratify_name)
    rare_to_train = [n for n, _ in _rare(classes, keep, test_fraction, n_folds)] if rare_classes == "train" else []
    keep |= set(rare_to_train)
    _check_class_sizes(classes, class_value, keep, test_fraction, n_folds, stratify_name)

    rng = np.random.default_rng(seed)
    test_patients: set[str] = set()
    for name, pts in classes.items():
        perm = rng.permutation(len(pts))  # drawn for every class: keep_in_train changes only its own class
        if name not in keep:
            test_patients.update(pts[j] for j in perm[:_n_test(len(pts), test_fraction)])
    if test_fraction > 0 and not test_patients:
        raise ConfigError("every class is in keep_in_train, so no patient can go to the test set; use test_fraction=0")
    test = tuple(sorted(s for p in test_patients for s in sessions[p]))
    rest = sorted(s for p in sessions if p not in test_patients for s in sessions[p])
    folds = _make_folds(rest, patient_of, classes, n_folds, seed)

    def count(pids: Iterable[str]) -> dict[str, int]:
        pset = set(pids)
        return {name: sum(p in pset for p in pts) for name, pts in classes.items()}

    missing = classes.get(MISSING_LABEL, [])
    info: dict[str, Any] = {
        "created_with": f"vbiopsy {__version__}", "seed": int(seed), "stratify": stratify_name,
        "test_fraction": float(test_fraction), "n_folds": int(n_folds),
        "group_by": "subject_id" if patient_ids is None else "patient_id",
        "policy": {
            "keep_in_train": keep_values,
            "rare_classes": rare_classes,
            "rare_to_train": [_jsonable(class_value[n]) for n in rare_to_train],
            "missing_labels": f"own stratum {MISSING_LABEL!r}",
            "test_selection": "per class: seeded sample of round(n_patients * test_fraction) patients",
            "folds": "StratifiedGroupKFold(shuffle=True, random_state=seed) over non-test subjects",
        },
        "n_subjects": len(subjects), "n_patients": len(sessions),
        "missing_labels": {"patients": len(missing), "subjects": sum(len(sessions[p]) for p in missing)},
        "counts": {
            "unit": "patients", "all": count(sessions), "test": count(test_patients),
            "folds": [{"train": count(patient_of[s] for s in f.train), "val": count(patient_of[s] for s in f.val)}
                      for f in folds],
        },
        "sessions_by_patient": {p: s for p, s in sorted(sessions.items()) if len(s) > 1},
    }
    splits = Splits(test=test, folds=folds, info=info)
    splits.check(patient_of, subjects, source="make_splits")
    return splits


def min_patients_per_class(test_fraction: float, n_folds: int) -> int:
    """Fewest patients a stratified class needs: 1 in test (if ``test_fraction > 0``) and 1 per val fold."""
    if test_fraction <= 0:
        return n_folds
    n = max(1, math.floor((n_folds - 0.5) / (1 - test_fraction)), math.floor(0.5 / test_fraction))
    while _n_test(n, test_fraction) < 1 or n - _n_test(n, test_fraction) < n_folds:
        n += 1
    return n


def _n_test(n: int, fraction: float) -> int:
    """Test patients of a class of ``n``: ``n * fraction`` rounded half up."""
    return math.floor(n * fraction + 0.5)


def _make_folds(rest: list[str], patient_of: Mapping[str, str], classes: Mapping[str, list[str]],
                n_folds: int, seed: int) -> tuple[Fold, ...]:
    """``StratifiedGroupKFold`` over the sorted non-test subjects, grouped by patient."""
    from sklearn.model_selection import StratifiedGroupKFold

    code = {p: i for i, pts in enumerate(classes.values()) for p in pts}
    y = np.array([code[patient_of[s]] for s in rest])
    grp = np.array([patient_of[s] for s in rest])
    if len(set(grp)) < n_folds:
        raise ConfigError(f"only {len(set(grp))} patients left outside the test set for n_folds={n_folds}")
    cv = StratifiedGroupKFold(n_splits=int(n_folds), shuffle=True, random_state=int(seed))
    folds = []
    with warnings.catch_warnings():  # classes in keep_in_train may be rarer than n_folds, by choice
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        for i, (tr, va) in enumerate(cv.split(np.zeros((len(rest), 1)), y, grp)):
            if len(va) == 0:
                raise ConfigError(f"fold {i} got no validation patient; use fewer folds")
            folds.append(Fold(tuple(sorted(rest[j] for j in tr)), tuple(sorted(rest[j] for j in va))))
    return tuple(folds)


def _check_options(test_fraction: float, n_folds: int, seed: int) -> None:
    if isinstance(n_folds, bool) or not isinstance(n_folds, numbers.Integral) or n_folds < 2:
        raise ConfigError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction must be a number with 0 <= test_fraction < 1, got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")


def _check_class_sizes(classes: Mapping[str, list[str]], class_value: Mapping[str, object], keep: set[str],
                       test_fraction: float, n_folds: int, stratify_name: str) -> None:
    need = min_patients_per_class(test_fraction, n_folds)
    rare = _rare(classes, keep, test_fraction, n_folds)
    if not rare:
        return
    what = ", ".join(f"{name!r} has {n} patient{'s' * (n != 1)}" for name, n in rare)
    why = f"1 test patient and {n_folds} for the folds" if test_fraction > 0 else "one per validation fold"
    keys = [_jsonable(class_value[name]) for name, _ in rare]
    raise ConfigError(
        f"{stratify_name} class {what}; stratifying with test_fraction={test_fraction} and n_folds={n_folds} "
        f"needs at least {need} per class ({why}). Pass keep_in_train={keys!r} to keep them in training "
        "(never in test), or rare_classes='train' to do so for every class too rare, or use fewer folds")


def _rare(classes: Mapping[str, list[str]], keep: set[str], test_fraction: float, n_folds: int) -> list[tuple[str, int]]:
    """(class, patients) of every class not in ``keep`` with fewer patients than stratification needs."""
    need = min_patients_per_class(test_fraction, n_folds)
    return [(name, len(pts)) for name, pts in classes.items() if name not in keep and len(pts) < need]


def _classes(label_of: Mapping[str, object], stratify_name: str) -> tuple[dict[str, list[str]], dict[str, object]]:
    """Sorted patients per class keyed by the label's printed form (classes sorted), and each class's value."""
    classes: dict[str, list[str]] = {}
    value: dict[str, object] = {}
    for pid in sorted(label_of):
        lab = label_of[pid]
        name = MISSING_LABEL if lab is _MISSING else str(lab)
        if value.setdefault(name, lab) != lab:
            raise InputError("labels", f"{stratify_name} values {value[name]!r} and {lab!r} print the same; "
                             "use one type for the labels")
        classes.setdefault(name, []).append(pid)
    return {name: classes[name] for name in sorted(classes)}, value


def _keep_keys(keep_in_train: Collection[object], class_value: Mapping[str, object],
               stratify_name: str) -> tuple[set[str], list[Any]]:
    """Class names matched by ``keep_in_train`` (by equality or printed form: 3 matches 3.0 and '3'),
    and the values as JSON for ``info``."""
    if isinstance(keep_in_train, (str, bytes)):
        raise ConfigError(f"keep_in_train must be a collection of label values, got the string {keep_in_train!r}")
    keys, values = set(), []
    for raw in keep_in_train:
        v = _norm_label(raw, "keep_in_train")
        shown = MISSING_LABEL if v is _MISSING else str(v)
        hits = {name for name, cv in class_value.items() if name == shown or (cv is not _MISSING and cv == v)}
        if not hits:
            raise ConfigError(f"keep_in_train value {v!r} matches no {stratify_name} value "
                              f"(present: {', '.join(class_value)})")
        keys |= hits
        values.append(_jsonable(v))
    return keys, values


def _norm_label(value: object, where: str) -> object:
    """Missing (None, NaN, pandas NA) -> sentinel; numpy scalars -> Python; must be hashable."""
    if value is None or value is _MISSING or type(value).__name__ == "NAType":
        return _MISSING
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return _MISSING
    try:
        hash(value)
    except TypeError:
        raise InputError(where, f"label {value!r} is not a single value") from None
    return value


def _str_list(values: Sequence[str], name: str) -> list[str]:
    out = list(values)
    for v in out:
        if not isinstance(v, str) or not v:
            raise InputError(name, f"IDs must be non-empty strings, got {v!r}")
    return out


def _id_list(value: object, name: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InputError(where, f"{name} must be a list of subject IDs, found {_kind(value)}")
    for v in value:
        if not isinstance(v, str) or not v:
            raise InputError(where, f"{name} must hold non-empty subject ID strings, found {v!r}")
    return tuple(value)


def _recorded_patients(info: Mapping[str, Any], where: str) -> dict[str, str]:
    """Subject -> patient from ``info['sessions_by_patient']`` (empty when absent)."""
    recorded = info.get("sessions_by_patient", {})
    mapping: dict[str, str] = {}
    for pid, sids in recorded.items() if isinstance(recorded, dict) else [(None, None)]:
        if not isinstance(sids, list) or not all(isinstance(s, str) for s in sids):
            raise InputError(where, "info.sessions_by_patient must map patient IDs to lists of subject IDs")
        for sid in sids:
            if mapping.setdefault(sid, pid) != pid:
                raise InputError(where, f"info.sessions_by_patient lists subject {sid!r} under "
                                 f"patients {mapping[sid]!r} and {pid!r}")
    return mapping


def _jsonable(value: object) -> Any:
    if value is _MISSING:
        return None
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)
