"""Patient report pieces: viewer encoding, slice figure, outputs with fold spread, page content, validation."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from report_fakes import tumour

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.report.html import Cell, Figure, table_html
from vbiopsy.report.patient_report import (
    DISCLAIMER, Output, PatientFindings, PatientImages, patient_report_html,
)
from vbiopsy.report.run_folder import lookup
from vbiopsy.report.slices import focus_point, orthogonal_slices, plane_slice
from vbiopsy.report.viewer import encode_volume, stride_for, to_uint8, viewer_html

SHAPE = (10, 12, 10)


def _anatomy(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1, 100, SHAPE).astype(np.float32)


def test_encoded_volume_decodes_to_the_strided_uint8_array() -> None:
    labels = tumour(1, SHAPE)
    encoded = encode_volume(labels, "labels", 2)
    decoded = np.frombuffer(base64.b64decode(encoded["data"]), dtype=np.uint8).reshape(encoded["shape"])
    np.testing.assert_array_equal(decoded, labels[::2, ::2, ::2])
    assert encoded["shape"] == [5, 6, 5] and encoded["kind"] == "labels"


def test_uint8_windowing_of_anatomy_and_heat_maps() -> None:
    ramp = np.arange(1, 1001, dtype=np.float32).reshape(10, 10, 10)
    anatomy = to_uint8(ramp, "anatomy")
    lo, hi = np.percentile(ramp, [1, 99.5])
    assert anatomy.min() == 0 and anatomy.max() == 255
    assert anatomy.flat[500] == round((ramp.flat[500] - lo) / (hi - lo) * 255)
    heat = to_uint8(-ramp, "heat")  # magnitude is shown
    assert heat.flat[0] == round(1 / np.percentile(ramp, 99) * 255) and heat.max() == 255


def test_viewer_options_and_inputs_are_validated() -> None:
    assert stride_for((200, 100, 50), 96) == 3 and stride_for((20, 20, 20), 96) == 1
    with pytest.raises(ConfigError, match="max_side"):
        stride_for((20, 20, 20), 4)
    with pytest.raises(InputError, match="NaN"):
        to_uint8(np.full(SHAPE, np.nan), "anatomy")
    with pytest.raises(ConfigError, match="kind"):
        to_uint8(np.ones(SHAPE), "rainbow")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="differs"):
        viewer_html({"t1": _anatomy()}, {"seg": (np.zeros((4, 4, 4), np.uint8), "labels")}, (1.0, 1.0, 1.0))
    html = viewer_html({"t1": _anatomy()}, {"seg": (tumour(0, SHAPE), "labels")}, (1.0, 1.0, 2.0))
    assert 'value="seg" checked' in html and "</script>" in html and html.count("</script>") == 1


def test_slices_go_through_the_tumour_centroid() -> None:
    seg = tumour(2, SHAPE)
    centre = np.argwhere(seg > 0).mean(axis=0)
    assert focus_point(seg, None, None, SHAPE) == tuple(int(round(c)) for c in centre)
    heat = np.zeros(SHAPE)
    heat[1, 2, 3] = 5.0
    assert focus_point(None, heat, None, SHAPE) == (1, 2, 3)
    assert focus_point(None, None, None, SHAPE) == (5, 6, 5)
    assert plane_slice(_anatomy(), "coronal", (1, 2, 3)).shape == (10, 10)
    png = orthogonal_slices(_anatomy(), (1.0, 1.0, 2.0), seg=seg, saliency=heat)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="spacing"):
        orthogonal_slices(_anatomy(), (1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="plane"):
        plane_slice(_anatomy(), "oblique", (1, 2, 3))


def test_output_spread_is_the_fold_standard_deviation() -> None:
    output = Output("grade IV", 0.5, (0.2, 0.5, 0.8))
    assert output.spread == pytest.approx(np.std([0.2, 0.5, 0.8]))
    assert Output("x", 0.3).spread is None
    with pytest.raises(InputError, match="finite"):
        Output("x", float("nan"))


def test_patient_page_holds_prediction_modalities_images_viewer_and_disclaimer() -> None:
    images = PatientImages({"t1c": _anatomy()}, (1.0, 1.0, 1.0), seg=tumour(0, SHAPE), saliency=_anatomy(1))
    findings = PatientFindings("P7", "ASLNet (grade)", "run", (Output("grade IV", 0.8125, (0.7, 0.925)),),
                               "grade IV", "argmax", ("t1c",), ("asl",), ("a note",))
    page = patient_report_html(findings, images, ["P7_saliency.nii.gz"])
    assert DISCLAIMER in page and "not a diagnosis" in page
    assert "0.812" in page and "0.113" in page  # value and sd of (0.7, 0.925), 3 decimals
    assert ">t1c<" in page and ">asl<" in page and "P7_saliency.nii.gz" in page
    assert page.count("data:image/png;base64,") == 1 and 'id="vb-data"' in page and "function decode" in page
    assert "http://" not in page and "https://" not in page
    with pytest.raises(InputError, match="differs"):
        PatientImages({"t1c": _anatomy()}, (1.0, 1.0, 1.0), seg=np.zeros((3, 3, 3)))
    with pytest.raises(InputError, match="at least one"):
        PatientFindings("P7", "m", "r", (), "d", "r", ())


def test_html_helpers_validate_and_escape() -> None:
    with pytest.raises(ConfigError, match="mime"):
        Figure(b"x", "image/gif", "c", "a")
    with pytest.raises(ConfigError, match="cells"):
        table_html(("a", "b"), [(1,)])
    html = table_html(("a",), [("<script>",), (Cell(0.000123, "f#p", p_value=True),)])
    assert "&lt;script&gt;" in html and ">0.000123<" in html and 'data-json="f#p"' in html


def test_lookup_follows_keys_that_contain_dots() -> None:
    data = {"test": {"at_0.5": {"accuracy": 0.75}, "auc": {"auc": None}}}
    assert lookup(data, "test.at_0.5.accuracy") == 0.75
    assert lookup(data, "test.auc.auc", missing=KeyError) is None
    assert lookup(data, "test.nothing", missing=KeyError) is KeyError
