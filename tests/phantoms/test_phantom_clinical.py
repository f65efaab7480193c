"""Clinical variables: bootstrapped from the real UCSF-PDGM table, TERT and non-glioma models."""

from __future__ import annotations

import numpy as np
import pytest

from vbiopsy.data.phantoms.clinical import (
    NON_GLIOMA_MODELS, TERT_RATES, UCSF_COLUMNS, ClinicalVariables, draw_clinical, glioma_rows, survival_12m,
)
from vbiopsy.data.schema import (
    is_missing, parse_codel, parse_days, parse_diagnosis, parse_eor, parse_event, parse_grade, parse_idh, parse_mgmt,
    parse_tert,
)

N_DRAWS = 4000


@pytest.fixture(scope="module")
def gliomas() -> list[ClinicalVariables]:
    rng = np.random.default_rng(123)
    return [draw_clinical(rng, {"glioma": 1.0}) for _ in range(N_DRAWS)]


def _rate(values: list[object], target: object) -> float:
    return float(np.mean([v == target for v in values]))


def test_real_table_is_parsed_with_the_schema_parsers() -> None:
    rows = glioma_rows()
    assert len(rows) == 501
    grades = [r["grade"] for r in rows]
    assert grades.count(4) == 402 and grades.count(3) == 43 and grades.count(2) == 56
    assert sum(r["idh"] == 1 for r in rows) == 103  # 'IDH1 p.R132H', 'mutated (NOS)', … all read as mutant
    assert all(r["codel_1p19q"] != 1 or r["idh"] == 1 for r in rows)


def test_prevalences_match_the_real_table(gliomas: list[ClinicalVariables]) -> None:
    rows = glioma_rows()
    for attr, value in [("grade", 4), ("grade", 3), ("grade", 2), ("idh", 1), ("codel_1p19q", 1), ("os_event", 1),
                        ("mgmt", 1), ("sex", "M"), ("eor", "biopsy")]:
        real = _rate([r[attr] for r in rows], value)
        drawn = _rate([getattr(c, attr) for c in gliomas], value)
        assert abs(drawn - real) < 0.03, (attr, value, drawn, real)
    assert 0.76 < _rate([c.grade for c in gliomas], 4) < 0.84


def test_codeletion_only_in_idh_mutant(gliomas: list[ClinicalVariables]) -> None:
    codeleted = [c for c in gliomas if c.codel_1p19q == 1]
    assert codeleted and all(c.idh == 1 for c in codeleted)


def test_real_correlations_are_kept(gliomas: list[ClinicalVariables]) -> None:
    g4 = [c for c in gliomas if c.grade == 4]
    g2 = [c for c in gliomas if c.grade == 2]
    assert np.mean([c.age for c in g4]) - np.mean([c.age for c in g2]) > 10
    assert np.median([c.os_days for c in g4 if c.os_days]) < np.median([c.os_days for c in g2 if c.os_days])
    assert _rate([c.os_event for c in g4], 1) > _rate([c.os_event for c in g2], 1) + 0.2
    assert _rate([c.idh for c in g2], 1) > 0.5 > _rate([c.idh for c in g4], 1)
    real_ages = [r["age"] for r in glioma_rows()]
    assert abs(np.mean([c.age for c in gliomas]) - np.mean(real_ages)) < 1.0


def test_tert_follows_the_documented_model(gliomas: list[ClinicalVariables]) -> None:
    groups = {
        "oligodendroglioma": [c.tert for c in gliomas if c.codel_1p19q == 1],
        "astrocytoma_idh_mutant": [c.tert for c in gliomas if c.idh == 1 and c.codel_1p19q == 0],
        "glioblastoma_idh_wildtype": [c.tert for c in gliomas if c.idh == 0 and c.grade == 4],
    }
    for name, values in groups.items():
        assert abs(np.mean(values) - TERT_RATES[name]) < 0.07, name


def test_diagnosis_mix_and_non_glioma_models() -> None:
    rng = np.random.default_rng(5)
    mix = {"glioma": 0.4, "lymphoma": 0.2, "germinoma": 0.2, "other": 0.2}
    drawn = [draw_clinical(rng, mix) for _ in range(N_DRAWS)]
    for diagnosis, p in mix.items():
        assert abs(_rate([c.diagnosis for c in drawn], diagnosis) - p) < 0.03
    for c in drawn:
        if c.diagnosis != "glioma":
            assert (c.grade, c.idh, c.codel_1p19q, c.tert, c.mgmt) == (None, None, None, None, None)
            low, high = NON_GLIOMA_MODELS[c.diagnosis].age_range
            assert low <= c.age <= high and c.os_days is not None and c.os_event in (0, 1)
    ages = {d: np.mean([c.age for c in drawn if c.diagnosis == d]) for d in mix}
    assert ages["germinoma"] < 25 < ages["glioma"] and ages["lymphoma"] > 55
    assert parse_diagnosis(NON_GLIOMA_MODELS["lymphoma"].text) == "lymphoma"
    assert parse_diagnosis(NON_GLIOMA_MODELS["other"].text) == "other"


def test_spellings_parse_back_to_the_canonical_values() -> None:
    rng = np.random.default_rng(9)
    parsers = {"WHO CNS Grade": ("grade", parse_grade), "IDH": ("idh", parse_idh),
               "1p/19q": ("codel_1p19q", parse_codel),
               "MGMT status": ("mgmt", parse_mgmt), "1-dead 0-alive": ("os_event", parse_event),
               "OS": ("os_days", parse_days), "EOR": ("eor", parse_eor), "TERT": ("tert", parse_tert),
               "Final pathologic diagnosis (WHO 2021)": ("diagnosis", parse_diagnosis)}
    for _ in range(300):
        clin = draw_clinical(rng, {"glioma": 0.7, "lymphoma": 0.1, "germinoma": 0.1, "other": 0.1})
        assert set(clin.spelling) == {*UCSF_COLUMNS, "TERT"}
        canonical = clin.canonical()
        for column, (key, parse) in parsers.items():
            cell = clin.spelling[column]
            assert (None if is_missing(cell) else parse(cell)) == canonical[key], (column, cell)
        assert int(clin.spelling["Age at MRI"]) == clin.age


def test_age_jitter_is_small_and_seeded() -> None:
    a = [draw_clinical(np.random.default_rng(i), {"glioma": 1.0}) for i in range(200)]
    b = [draw_clinical(np.random.default_rng(i), {"glioma": 1.0}) for i in range(200)]
    assert a == b
    rows = glioma_rows()
    jitter = [c.age - rows[c.source_row]["age"] for c in a]  # type: ignore[index]
    assert 0.5 < np.std(jitter) < 3.0 and max(abs(j) for j in jitter) <= 8


@pytest.mark.parametrize("os_days, event, label", [(100.0, 1, 1), (364.0, 1, 1), (365.0, 1, 0), (900.0, 0, 0),
                                                   (200.0, 0, None), (None, 1, None)])
def test_survival_12m(os_days: float | None, event: int, label: int | None) -> None:
    assert survival_12m(os_days, event) == label
