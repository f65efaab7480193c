"""Tumour sub-regions and the planted phenotype's dependence on the variables (latent level)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vbiopsy.data.phantoms.clinical import ClinicalVariables
from vbiopsy.data.phantoms.phenotype import TumourGeometry, TumourPhenotype, draw_phenotype
from vbiopsy.data.phantoms.sites import PINEAL_MM, SUPRASELLAR_MM
from vbiopsy.data.phantoms.tumour import ET, NETC, RC, SNFH, region_volumes_ml, render_tumour

from .conftest import glioma, non_glioma

VOXEL_MM = 1.5


def _box(centre: np.ndarray, half_mm: float = 45.0) -> np.ndarray:
    axis = np.arange(-half_mm, half_mm + 1e-6, VOXEL_MM, dtype=np.float32)
    grids = np.meshgrid(*(axis + np.float32(c) for c in centre), indexing="ij")
    return np.stack(grids)


def _tissue(shape: tuple[int, ...], wm: float) -> dict[str, np.ndarray]:
    return {"brain": np.ones(shape, np.float32), "wm": np.full(shape, wm, np.float32),
            "gm": np.full(shape, 1.0 - wm, np.float32), "csf": np.zeros(shape, np.float32)}


def _planted(**changes: object) -> tuple[TumourPhenotype, TumourGeometry, np.ndarray]:
    pheno, geo = draw_phenotype(np.random.default_rng(0), glioma(4, idh=0))
    base = {"radius_mm": 15.0, "necrosis_fraction": 0.45, "enhancement": 0.8, "oedema_extent": 0.8,
            "irregularity": 0.15, "n_calcifications": 0, "cavity": False}
    pheno = dataclasses.replace(pheno, **{**base, **changes})
    y = _box(np.asarray(pheno.centre_mm))
    return pheno, geo, y


def _distance(y: np.ndarray, pheno: TumourPhenotype, mask: np.ndarray) -> float:
    d = y - np.asarray(pheno.centre_mm, dtype=np.float32)[:, None, None, None]
    return float(np.sqrt((d * d).sum(axis=0))[mask].mean())


def test_sub_regions_are_nested() -> None:
    pheno, geo, y = _planted()
    maps = render_tumour(pheno, geo, y, _tissue(y.shape[1:], 1.0), VOXEL_MM)
    labels = maps.labels
    assert set(np.unique(labels)) == {0, NETC, SNFH, ET}
    necrosis = maps.compartment == 1
    flat = labels.ravel()
    assert np.all(flat[maps.index[necrosis]] == NETC)
    d_nec = _distance(y, pheno, np.isin(np.arange(labels.size), maps.index[necrosis]).reshape(labels.shape))
    d_et, d_snfh = _distance(y, pheno, labels == ET), _distance(y, pheno, labels == SNFH)
    assert d_nec < d_et < d_snfh
    solid = np.isin(maps.compartment, (2, 3))
    assert np.mean(maps.compartment[solid] == 3) == pytest.approx(pheno.et_fraction, abs=0.02)
    volumes = region_volumes_ml(labels, VOXEL_MM**3 / 1000)
    assert volumes["WT"] == pytest.approx(volumes["NETC"] + volumes["SNFH"] + volumes["ET"])
    assert 0.5 < volumes["TC"] / (4 / 3 * np.pi * 15.0**3 / 1000) < 2.0


def test_low_grade_has_no_necrosis_and_little_enhancement() -> None:
    pheno, geo, y = _planted(necrosis_fraction=0.0, enhancement=0.1)
    labels = render_tumour(pheno, geo, y, _tissue(y.shape[1:], 1.0), VOXEL_MM).labels
    core = np.isin(labels, (NETC, ET))
    assert np.mean(labels[core] == ET) < 0.25


def test_oedema_spreads_along_white_matter() -> None:
    pheno, geo, y = _planted()
    in_wm = render_tumour(pheno, geo, y, _tissue(y.shape[1:], 1.0), VOXEL_MM).labels
    in_gm = render_tumour(pheno, geo, y, _tissue(y.shape[1:], 0.0), VOXEL_MM).labels
    assert np.sum(in_wm == SNFH) > 2 * np.sum(in_gm == SNFH)
    assert np.sum(np.isin(in_wm, (NETC, ET))) == np.sum(np.isin(in_gm, (NETC, ET)))


def test_resection_cavity_and_brain_limit() -> None:
    pheno, geo, y = _planted(cavity=True)
    tissue = _tissue(y.shape[1:], 1.0)
    labels = render_tumour(pheno, geo, y, tissue, VOXEL_MM).labels
    assert np.sum(labels == RC) > 0 and np.sum(np.isin(labels, (NETC, ET))) > 0
    tissue["brain"][: y.shape[1] // 2] = 0.0
    clipped = render_tumour(pheno, geo, y, tissue, VOXEL_MM).labels
    assert not clipped[: y.shape[1] // 2].any()


def _draw(clin: ClinicalVariables, n: int, seed: int = 0) -> list[TumourPhenotype]:
    rng = np.random.default_rng(seed)
    return [draw_phenotype(rng, clin)[0] for _ in range(n)]


def _mean(phenos: list[TumourPhenotype], attr: str) -> float:
    return float(np.mean([getattr(p, attr) for p in phenos]))


def test_grade_raises_enhancement_necrosis_oedema_and_perfusion() -> None:
    by_grade = {g: _draw(glioma(g, idh=0), 150, seed=g) for g in (2, 3, 4)}
    for attr in ("enhancement", "necrosis_fraction", "oedema_extent", "cbf_tumour_ratio"):
        means = [_mean(by_grade[g], attr) for g in (2, 3, 4)]
        assert means[0] < means[1] < means[2], attr


def test_idh_and_codeletion_phenotypes() -> None:
    wildtype = _draw(glioma(3, idh=0), 200, 1)
    astro = _draw(glioma(3, idh=1, codel=0), 200, 2)
    oligo = _draw(glioma(3, idh=1, codel=1), 200, 3)
    assert _mean(astro, "enhancement") < _mean(wildtype, "enhancement")
    assert max(p.mismatch for p in wildtype + oligo) <= 0.25 < max(p.mismatch for p in astro)
    assert 0.3 < np.mean([p.mismatch > 0.5 for p in astro]) < 0.6
    frontal = {name: np.mean([p.centre_mm[1] for p in group]) for name, group in
               {"wt": wildtype, "astro": astro, "oligo": oligo}.items()}
    assert frontal["oligo"] > frontal["astro"] > frontal["wt"] and frontal["oligo"] - frontal["wt"] > 15
    assert _mean(oligo, "heterogeneity") > _mean(astro, "heterogeneity") + 0.04
    assert _mean(oligo, "n_calcifications") > 2 * _mean(astro, "n_calcifications")


def test_early_death_raises_peritumoural_perfusion() -> None:
    early = _draw(glioma(4, idh=0, os_days=150, os_event=1), 200, 4)
    late = _draw(glioma(4, idh=0, os_days=1500, os_event=0), 200, 5)
    assert _mean(early, "cbf_peri_ratio") > 1.25 * _mean(late, "cbf_peri_ratio")
    overlap = np.mean([p.cbf_peri_ratio for p in early] < np.median([p.cbf_peri_ratio for p in late]))
    assert overlap > 0.05  # noisy: learnable, not trivial


def test_non_glioma_sites_and_cues() -> None:
    glio = _draw(glioma(4, idh=0), 200, 6)
    lymphoma = _draw(non_glioma("lymphoma"), 200, 7)
    germinoma = _draw(non_glioma("germinoma"), 200, 8)
    metastasis = _draw(non_glioma("other"), 200, 9)
    assert _mean(lymphoma, "ventricle_distance_mm") < _mean(glio, "ventricle_distance_mm") - 5
    assert _mean(lymphoma, "t2_solid") < _mean(glio, "t2_solid") - 0.1
    assert _mean(lymphoma, "necrosis_fraction") < 0.1 < _mean(glio, "necrosis_fraction")
    midline = [p for p in germinoma if p.site in ("pineal", "suprasellar")]
    assert 0.7 < len(midline) / len(germinoma) < 0.9
    for p in midline:
        site = PINEAL_MM if p.site == "pineal" else SUPRASELLAR_MM
        assert np.linalg.norm(np.asarray(p.centre_mm) - site) < 12
    assert {p.site for p in metastasis} == {"grey-white junction"}
    assert _mean(metastasis, "oedema_extent") > 1.5 * _mean(glio, "oedema_extent")
    assert _mean(metastasis, "radius_mm") < _mean(glio, "radius_mm")
