from __future__ import annotations

import pytest

from vbiopsy.data import schema as s


@pytest.mark.parametrize(
    ("parse", "raw", "expected"),
    [
        (s.parse_idh, "wildtype", 0), (s.parse_idh, "IDH1 p.R132H", 1), (s.parse_idh, "mutated (NOS)", 1),
        (s.parse_idh, "IDH2 p.Arg172Trp", 1), (s.parse_idh, "1", 1),
        (s.parse_codel, "intact", 0), (s.parse_codel, "Co-deletion", 1), (s.parse_codel, "relative co-deletion", 1),
        (s.parse_mgmt, "positive", 1), (s.parse_mgmt, "negative", 0), (s.parse_mgmt, "unmethylated", 0),
        (s.parse_grade, "IV", 4), (s.parse_grade, "2", 2), (s.parse_grade, "3.0", 3), (s.parse_grade, "G4", 4),
        (s.parse_sex, "female", "F"), (s.parse_eor, "biopsy", "biopsy"), (s.parse_eor, "gtr", "GTR"),
        (s.parse_event, "1", 1), (s.parse_event, "alive", 0),
        (s.parse_diagnosis, "Glioblastoma, IDH-wildtype", "glioma"),
        (s.parse_diagnosis, "Primary CNS lymphoma", "lymphoma"), (s.parse_diagnosis, "Germinoma", "germinoma"),
        (s.parse_age, "66", 66.0),
    ],
)
def test_real_spellings_parse(parse, raw, expected) -> None:
    assert parse(raw) == expected


@pytest.mark.parametrize(
    ("parse", "raw", "message"),
    [
        (s.parse_age, "abc", "'abc' is not a number"), (s.parse_age, "140", "outside"),
        (s.parse_grade, "5", "not a WHO grade"), (s.parse_idh, "maybe", "not a IDH status"),
        (s.parse_sex, "X", "not a sex"), (s.parse_event, "2", "event indicator"),
        (s.parse_diagnosis, "meningioma", "not a known tumour type"),
    ],
)
def test_bad_values_name_the_value(parse, raw, message) -> None:
    with pytest.raises(s.ValueParseError, match=message):
        parse(raw)


def test_missing_tokens_and_aliases() -> None:
    assert all(s.is_missing(v) for v in ("", " NA ", "nan", None, float("nan"), "indeterminate"))
    assert not s.is_missing("0")
    assert s.canonical_column("Age at MRI") == "age"
    assert s.canonical_column("1-dead 0-alive") == "os_event"
    assert s.canonical_column("whatever") is None
