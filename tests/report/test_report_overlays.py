"""Several named heat maps in the patient report: one slice row and one viewer overlay each, picked one at
a time in the viewer with their own caption; a single map stays the report it was (a list of one); the
MGMT-Net hook shows the Grad-CAM of every marker with its positive class in the caption."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from report_fakes import SHAPE, tumour, write_nifti

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.report.patient_report import HeatMap, Output, PatientFindings, PatientImages, patient_report_html
from vbiopsy.report.slices import orthogonal_slices
from vbiopsy.report.viewer import viewer_html

MARKERS = ("IDH mutant", "1p/19q co-deleted", "TERT promoter mutant")
KEYS = ("idh", "codel_1p19q", "tert")
"""MGMT-Net's markers (manifest columns) and the positive class each Grad-CAM explains."""


def _anatomy() -> np.ndarray:
    return np.random.default_rng(0).uniform(1, 100, SHAPE).astype(np.float32)


def _blob(centre: tuple[int, int, int]) -> np.ndarray:
    """A Gaussian heat map peaking at voxel ``centre``."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"))
    return np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre)) / 4.0).astype(np.float32)


CENTRES = ((2, 3, 5), (7, 9, 5), (5, 6, 2))
MAPS = tuple(HeatMap(name, _blob(c), f"caption of {name}: bright = evidence for {name}")
             for name, c in zip(MARKERS, CENTRES))


def _findings() -> PatientFindings:
    return PatientFindings("P9", "MGMT-Net", "run", (Output("idh positive", 0.7, (0.6, 0.8)),), "d", "r", ("t1c",))


def _viewer_data(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="vb-data">(.*?)</script>', page, re.S)
                      .group(1).replace("<\\/", "</"))


def _html(page: str) -> str:
    """The page without its inline viewer script (which names every element it may find)."""
    return re.sub(r"<script>\n.*?\n</script>", "", page, flags=re.S)


def _png_size(page: str) -> tuple[int, int]:
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1))
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_three_named_maps_give_three_overlays_slice_rows_and_captions() -> None:
    images = PatientImages({"t1c": _anatomy()}, (2.0, 2.0, 2.0), seg=tumour(0), heat_maps=MAPS)
    page = patient_report_html(_findings(), images)
    data = _viewer_data(page)
    assert list(data["overlays"]) == ["segmentation", *MARKERS]
    assert data["captions"] == {m.name: f"{m.name} heat map: {m.caption}." for m in MAPS}
    for heat_map, centre in zip(MAPS, CENTRES):  # each overlay is its own map: brightest at its own peak
        entry = data["overlays"][heat_map.name]
        voxels = np.frombuffer(base64.b64decode(entry["data"]), np.uint8).reshape(entry["shape"])
        assert entry["kind"] == "heat" and voxels[centre] == 255
        assert all(voxels[other] < 255 for other in CENTRES if other != centre)
        assert f"{heat_map.name} heat map ({heat_map.caption})" in page  # the slice figure's caption
    listed = re.search(r'<select id="vb-heat">(.*?)</select>', page).group(1)
    assert re.findall(r'value="([^"]*)"', listed) == [*MARKERS, ""]  # first map drawn first, "none" last
    assert re.findall(r'class="vb-overlay" value="([^"]*)"', page) == ["segmentation"]  # heat maps: no checkbox
    assert f'id="vb-heat-caption" class="note">{MAPS[0].name} heat map: {MAPS[0].caption}.<' in page
    assert "own 99th percentile" in page
    assert _png_size(page) == (840, 4 * 290)  # figsize (8.4, 2.9 per row) at 100 dpi: segmentation + 3 maps
    assert page.count("data:image/png;base64,") == 1


def test_a_single_map_is_a_list_of_one_and_keeps_the_checkbox_viewer() -> None:
    saliency = _blob(CENTRES[0])
    by_keyword = PatientImages({"t1c": _anatomy()}, (2.0, 2.0, 2.0), seg=tumour(0), saliency=saliency,
                               sources={"saliency": "Integrated Gradients"})
    as_list = PatientImages({"t1c": _anatomy()}, (2.0, 2.0, 2.0), seg=tumour(0), sources={}, heat_maps=(
        HeatMap("saliency", saliency, "Integrated Gradients: bright = voxels that raised the predicted class most"),))
    page = patient_report_html(_findings(), by_keyword)
    assert page == patient_report_html(_findings(), as_list)
    data = _viewer_data(page)
    assert list(data["overlays"]) == ["segmentation", "saliency"] and "captions" not in data
    assert re.findall(r'class="vb-overlay" value="([^"]*)"', page) == ["segmentation", "saliency"]
    assert 'id="vb-heat"' not in _html(page) and "vb-heat-caption" not in _html(page)
    assert "own 99th percentile" not in page
    assert ("saliency heat map (Integrated Gradients: bright = voxels that raised the predicted class most)"
            in page)
    assert _png_size(page) == (840, 2 * 290)


def test_saliency_and_named_maps_are_drawn_together_in_that_order() -> None:
    images = PatientImages({"t1c": _anatomy()}, (2.0, 2.0, 2.0), saliency=_blob(CENTRES[2]), heat_maps=MAPS[:1],
                           prior=_blob(CENTRES[1]))
    assert [m.name for m in images.drawn_heat_maps] == ["saliency", MAPS[0].name]
    data = _viewer_data(patient_report_html(_findings(), images))
    assert list(data["overlays"]) == ["saliency", MAPS[0].name, "prior"]
    assert list(data["captions"]) == ["saliency", MAPS[0].name]


def test_heat_maps_and_the_selector_are_validated() -> None:
    with pytest.raises(ConfigError, match="unique"):
        PatientImages({"t1c": _anatomy()}, (1.0, 1.0, 1.0), heat_maps=(MAPS[0], MAPS[0]))
    with pytest.raises(ConfigError, match="unique"):
        PatientImages({"t1c": _anatomy()}, (1.0, 1.0, 1.0), saliency=_anatomy(),
                      heat_maps=(HeatMap("saliency", _anatomy(), "c"),))
    with pytest.raises(InputError, match="differs"):
        PatientImages({"t1c": _anatomy()}, (1.0, 1.0, 1.0), heat_maps=(HeatMap("m", np.ones((3, 3, 3)), "c"),))
    with pytest.raises(ConfigError, match="HeatMap"):
        PatientImages({"t1c": _anatomy()}, (1.0, 1.0, 1.0), heat_maps=(_anatomy(),))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'prior'"):
        HeatMap("prior", _anatomy(), "c")
    with pytest.raises(ConfigError, match="caption"):
        HeatMap("IDH mutant", _anatomy(), " ")
    with pytest.raises(InputError, match="3-D"):
        HeatMap("IDH mutant", np.ones((4, 4)), "c")
    with pytest.raises(ConfigError, match="'TERT'"):
        viewer_html({"t1c": _anatomy()}, {"IDH": (_anatomy(), "heat")}, (1.0, 1.0, 1.0), selectable={"TERT": "c"})
    with pytest.raises(ConfigError, match="twice"):
        orthogonal_slices(_anatomy(), (1.0, 1.0, 1.0), saliency=_anatomy(), heat_maps={"saliency": _anatomy()})


def test_profile_report_shows_the_grad_cam_of_every_marker(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import vbiopsy.train.profile_infer as profile_infer
    from vbiopsy.report.patient_hooks import marker_heat_maps, profile_report

    folds = [np.array([0.9, 0.2, 0.5]), np.array([0.7, 0.4, 0.3])]
    monkeypatch.setattr(profile_infer, "marker_probabilities", lambda model, *args: (folds[model], None))
    modalities = ("t1", "t1c", "t2", "flair")
    row = {m: write_nifti(tmp_path / f"{m}.nii.gz", _anatomy()) for m in modalities}
    record = {"subject_id": "P9", "segmentation": write_nifti(tmp_path / "P9_seg.nii.gz", tumour(0)),
              "volume_ml_WT": 1.5, "cmaf_t1": 0.25}
    for key, centre in zip(KEYS, CENTRES):
        record[f"gradcam_{key}"] = write_nifti(tmp_path / f"P9_gradcam_{key}.nii.gz", _blob(centre))
    config = SimpleNamespace(data=SimpleNamespace(markers=KEYS, modalities=modalities),
                             augment=SimpleNamespace(patch=(8, 8, 8)))
    case = SimpleNamespace(subject_id="P9", image=np.zeros((4, *SHAPE), np.float32), present=np.ones(4, bool))
    prediction = SimpleNamespace(centre=(5, 6, 5), markers=np.array([0.8, 0.3, 0.4]), labels=tumour(0))
    page = profile_report(config, tmp_path, SimpleNamespace(members=[0, 1]), case, prediction, tumour(0), row,
                          record, tmp_path / "out").read_text(encoding="utf-8")
    data = _viewer_data(page)
    assert list(data["overlays"]) == ["segmentation", *MARKERS]
    for key, name in zip(KEYS, MARKERS):  # the caption names the output row "<key> positive" it explains
        assert f"Grad-CAM of {key} positive, i.e. {name}, on the marker patch" in data["captions"][name]
        assert f"where the evidence for {name} is strongest, whatever its predicted probability" in page
        assert f"P9_gradcam_{key}.nii.gz" in page
    assert "raised the predicted class most" not in page
    assert "0.800" in page and f"{np.std([0.9, 0.7]):.3f}" in page  # ensemble value and fold spread of IDH
    del record["gradcam_codel_1p19q"]
    maps = marker_heat_maps(("idh", "codel_1p19q", "tert", "mgmt"), {**record, "gradcam_mgmt": record["gradcam_idh"]})
    assert [m.name for m in maps] == ["IDH mutant", "TERT promoter mutant", "mgmt positive"]
    np.testing.assert_allclose(maps[1].array, _blob(CENTRES[2]), atol=1e-6)  # the TERT file, read back as written
