"""End to end in headless Chromium: the cohort report and a patient report load every image without a
console error, and the slice viewer answers the keyboard, the mouse wheel, the overlay checkboxes and
the heat-map list.

Needs a Chromium-family browser (``apt-get install -y --no-install-recommends chromium`` on Debian, or
``$VBIOPSY_BROWSER``); skipped with the reason when none is found. The DevTools protocol runs over a
pipe, so no extra Python package is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from report_browser import Browser, find_browser
from report_fakes import aslnet_run, diagnosis_run, profile_run, tumour, write_cohort

from vbiopsy.report.cohort_report import build_cohort_report
from vbiopsy.report.patient_report import HeatMap, Output, PatientFindings, PatientImages, write_patient_report

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium/Chrome found (install chromium or set "
                                                        "VBIOPSY_BROWSER) — browser test skipped")

IMAGES_LOADED = "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
CANVAS = "document.getElementById('vb-canvas')"
STATE = f"[document.getElementById('vb-slice-label').textContent, {CANVAS}.toDataURL()]"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Browser:
    session = Browser(str(BROWSER), tmp_path_factory.mktemp("chromium-profile"))
    yield session
    session.close()


def patient_page(folder: Path, markers: tuple[str, ...] = ()) -> Path:
    """A patient report on synthetic anatomy (20×24×16 voxels) with a segmentation and a saliency map, or
    with one heat map per name in ``markers`` (blobs at different places of the central axial slice)."""
    rng = np.random.default_rng(0)
    shape = (20, 24, 16)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    anatomy = (np.clip(1.2 - np.sqrt((grid ** 2).sum(0)), 0, None) * 100 + rng.random(shape)).astype(np.float32)
    seg = tumour(2, shape)
    saliency = np.exp(-((grid ** 2).sum(0)) * 6).astype(np.float32)
    maps = tuple(HeatMap(name, np.exp(-(((grid[0] - 0.5 * np.cos(2 * k)) ** 2 + (grid[1] - 0.5 * np.sin(2 * k)) ** 2)
                                        * 6 + grid[2] ** 2)).astype(np.float32), f"what {name} shows")
                 for k, name in enumerate(markers))
    images = PatientImages({"t1c": anatomy, "flair": anatomy[::-1].copy()}, (1.0, 1.0, 2.0), seg=seg,
                           saliency=None if maps else saliency, heat_maps=maps)
    findings = PatientFindings("P001", "test model", "run", (Output("grade IV", 0.7, (0.6, 0.8)),), "grade IV",
                               "argmax", ("t1c", "flair"), ("t2",))
    return write_patient_report(findings, images, folder)


def test_cohort_report_renders_every_image_without_errors(browser: Browser, tmp_path: Path) -> None:
    cohort = write_cohort(tmp_path / "cohort")
    runs = [aslnet_run(tmp_path, cohort, "grade"), aslnet_run(tmp_path, cohort, "survival_cox"),
            profile_run(tmp_path, cohort), diagnosis_run(tmp_path, cohort)]
    page = build_cohort_report(runs, tmp_path / "cohort.html")
    browser.open(page.as_uri())
    assert browser.evaluate("document.images.length") >= 15
    assert browser.evaluate(IMAGES_LOADED) is True
    assert browser.errors() == []
    shot = browser.screenshot(tmp_path / "cohort.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_patient_report_viewer_answers_keyboard_wheel_and_checkboxes(browser: Browser, tmp_path: Path) -> None:
    page = patient_page(tmp_path)
    browser.open(page.as_uri())
    assert browser.evaluate("document.getElementById('vb-viewer').dataset.ready") == "true"
    assert browser.evaluate(IMAGES_LOADED) is True and browser.evaluate("document.images.length") == 1
    label, pixels = browser.evaluate(STATE)
    start = int(label.split("slice ")[1].split(" /")[0])
    assert label.endswith("/ 16")  # axial: Z = 16 slices

    browser.evaluate(f"{CANVAS}.focus()")
    for kind in ("keyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", {"type": kind, "key": "ArrowDown", "code": "ArrowDown",
                                                "windowsVirtualKeyCode": 40})
    label_key, pixels_key = browser.evaluate(STATE)
    assert label_key == f"axial slice {start - 1} / 16" and pixels_key != pixels

    box = browser.evaluate(f"(r => [r.x + r.width / 2, r.y + r.height / 2])({CANVAS}.getBoundingClientRect())")
    browser.call("Input.dispatchMouseEvent", {"type": "mouseWheel", "x": box[0], "y": box[1], "deltaX": 0,
                                              "deltaY": -100})
    label_wheel, _ = browser.evaluate(STATE)
    assert label_wheel == f"axial slice {start} / 16"

    checkbox = "document.querySelector('input.vb-overlay[value=saliency]')"
    where = browser.evaluate(f"(r => [r.x + r.width / 2, r.y + r.height / 2])({checkbox}.getBoundingClientRect())")
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", {"type": kind, "x": where[0], "y": where[1], "button": "left",
                                                  "clickCount": 1})
    assert browser.evaluate(f"{checkbox}.checked") is False
    _, pixels_off = browser.evaluate(STATE)
    assert pixels_off != pixels  # same slice as at the start, saliency hidden: the picture changed

    browser.evaluate("(s => { s.value = 'sagittal'; s.dispatchEvent(new Event('change')); })"
                     "(document.getElementById('vb-plane'))")
    assert browser.evaluate("document.getElementById('vb-slice-label').textContent").endswith("/ 20")
    assert browser.errors() == []
    shot = browser.screenshot(tmp_path / "patient.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_patient_report_viewer_switches_between_named_heat_maps(browser: Browser, tmp_path: Path) -> None:
    markers = ("IDH mutant", "1p/19q co-deleted", "TERT promoter mutant")
    browser.open(patient_page(tmp_path, markers).as_uri())
    viewer, caption = "document.getElementById('vb-viewer')", "document.getElementById('vb-heat-caption')"
    assert browser.evaluate(f"{viewer}.dataset.ready") == "true"
    assert browser.evaluate(f"{viewer}.dataset.heat") == markers[0]
    assert browser.evaluate(f"{caption}.textContent") == f"{markers[0]} heat map: what {markers[0]} shows."
    _, first = browser.evaluate(STATE)
    drawn = {first}
    for name in (*markers[1:], ""):  # each other map, then "none"
        browser.evaluate(f"(s => {{ s.value = {name!r}; s.dispatchEvent(new Event('change')); }})"
                         "(document.getElementById('vb-heat'))")
        assert browser.evaluate(f"{viewer}.dataset.heat") == name
        _, pixels = browser.evaluate(STATE)
        assert pixels not in drawn  # a different heat map (or none) draws a different picture
        drawn.add(pixels)
    assert browser.evaluate(f"{caption}.textContent") == "No heat map drawn."
    assert browser.errors() == []
