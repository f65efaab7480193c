"""VLM proposer against a local OpenAI-compatible server: good answers, garbage, hangs, HTTP errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from localize_helpers import SPACING, synthetic_brain

from vbiopsy.errors import ConfigError
from vbiopsy.localize import Box, ProposalError, VLMConfig, VLMProposer, localize, prepare_scan
from vbiopsy.localize.render import SliceView, encode_png
from vbiopsy.localize.vlm_answer import AnswerError, build_prompt, parse_answer

HANG_S = 1.0
"""A hanging answer sleeps this long (bounded), well past the client's timeout."""


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script: list[tuple[str, object]] = []
        self.default: tuple[str, object] = ("text", '{"boxes": []}')
        self.requests: list[dict] = []
        self.headers_seen: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        self.server.headers_seen.append(dict(self.headers))
        kind, payload = self.server.script.pop(0) if self.server.script else self.server.default
        try:
            if kind == "hang":
                time.sleep(HANG_S)
            if kind == "http":
                self.send_error(int(payload))  # type: ignore[arg-type]
                return
            if kind == "raw":
                data = payload if isinstance(payload, bytes) else str(payload).encode()
            else:
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": payload}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=2)


@pytest.fixture(scope="module")
def scan():
    s = synthetic_brain()
    return prepare_scan(s.images, SPACING, brain_mask=s.brain)


def _config(server: FakeServer, **kw: object) -> VLMConfig:
    base = {"base_url": server.url, "model": "qwen-vl-test", "timeout_s": 0.2, "max_retries": 1,
            "backoff_s": 0.01, "slice_stride": 4, "upscale": 2}
    return VLMConfig(**{**base, **kw})


def test_png_is_a_valid_image() -> None:
    image_module = pytest.importorskip("PIL.Image")
    import io

    pixels = (np.arange(35, dtype=np.uint8).reshape(5, 7) * 7)
    decoded = np.asarray(image_module.open(io.BytesIO(encode_png(pixels))))
    assert np.array_equal(decoded, pixels)


def test_display_orientation_and_box_round_trip() -> None:
    view = SliceView(20, 16, upscale=3)
    section = np.zeros((20, 16), np.float32)
    section[12:17, 2:6] = 1.0  # towards the patient's right (high x), posterior (low y)
    image = view.image(section, (0.0, 1.0))
    assert image.shape == (48, 60)
    rows, cols = np.nonzero(image)
    assert cols.max() < 30 and rows.min() > 24  # right side of the patient drawn on the left, posterior at the bottom
    box = view.to_voxels(cols.min(), rows.min(), cols.max() + 1, rows.max() + 1, 0.8)
    assert box == Box(12, 2, 17, 6, 0.8)


def test_prompt_carries_the_radiological_cues() -> None:
    prompt = build_prompt(("t1c", "flair"), 96, 80, "pixels")
    for cue in ("abnormal signal intensity", "irregular boundaries", "edema", "asymmetry", "midline",
                "96×80", "image 1 is contrast-enhanced T1", "image 2 is T2-FLAIR", '{"boxes": []}'):
        assert cue in prompt


@pytest.mark.parametrize(("text", "message"), [
    ("There is a tumour at the left.", "not JSON"),
    ('Sure! {"boxes": []}', "not JSON"),
    ('{"boxes": [], "note": "x"}', "boxes.*|note.*Extra inputs"),
    ('{"boxes": [{"x_min": "1", "y_min": 0, "x_max": 5, "y_max": 5}]}', "valid number"),
    ('{"boxes": [{"x_min": 6, "y_min": 0, "x_max": 5, "y_max": 5}]}', "x_min < x_max"),
    ('{"boxes": [{"x_min": 0, "y_min": 0, "x_max": 50, "y_max": 5}]}', "leaves the image"),
    ('{"boxes": [{"x_min": 0, "y_min": 0, "x_max": 5, "y_max": 5, "confidence": 2}]}', "less than or equal to 1"),
    ('{"boxes": ' + json.dumps([{"x_min": 0, "y_min": 0, "x_max": 1, "y_max": 1}] * 11) + "}", "at most 10"),
    ('[]', "valid dictionary"),
])
def test_strict_parser_rejects_everything_but_the_schema(text: str, message: str) -> None:
    with pytest.raises(AnswerError, match=message):
        parse_answer(text, 40, 30, "pixels")


def test_strict_parser_accepts_bare_or_fenced_json_and_scales_relative_units() -> None:
    bare = parse_answer('{"boxes": [{"x_min": 2, "y_min": 3, "x_max": 10.5, "y_max": 20, "confidence": 0.7}]}',
                        40, 30, "pixels")
    assert bare[0].x_max == 10.5 and bare[0].confidence == 0.7
    fenced = parse_answer('```json\n{"boxes": []}\n```', 40, 30, "pixels")
    assert fenced == []
    relative = parse_answer('{"boxes": [{"x_min": 500, "y_min": 0, "x_max": 1000, "y_max": 500}]}', 40, 30,
                            "relative-1000")
    assert (relative[0].x_min, relative[0].x_max, relative[0].y_max) == (20.0, 40.0, 15.0)


def test_good_answers_become_voxel_boxes_on_the_queried_slices(server: FakeServer, scan) -> None:
    server.default = ("text", '{"boxes": [{"x_min": 10, "y_min": 20, "x_max": 30, "y_max": 40, "confidence": 0.9}]}')
    proposer = VLMProposer(_config(server, api_key="secret"))
    proposals = proposer.propose(scan)
    nx, ny, _ = scan.shape
    expected = Box(nx - 15, ny - 20, nx - 5, ny - 10, 0.9)  # pixels / upscale 2, flipped to RAS
    non_empty = [s for s in proposals.slices if s.boxes]
    assert non_empty and all(s.boxes == (expected,) for s in non_empty)
    assert proposals.record["slices_sent"] == len(server.requests) and proposals.record["retries"] == 0
    assert len(non_empty) <= 4 * len(server.requests)
    first = server.requests[0]
    assert first["model"] == "qwen-vl-test" and first["temperature"] == 0.0
    images = [p for p in first["messages"][1]["content"] if p["type"] == "image_url"]
    assert len(images) == 2 and all(p["image_url"]["url"].startswith("data:image/png;base64,") for p in images)
    assert server.headers_seen[0]["Authorization"] == "Bearer secret"
    assert "secret" not in json.dumps(proposals.record)


def test_garbage_is_retried_with_backoff_then_reported(server: FakeServer, scan) -> None:
    server.default = ("text", "I think there might be something in the left frontal lobe.")
    waits: list[float] = []
    proposer = VLMProposer(_config(server, max_retries=2, backoff_s=0.5), sleep=waits.append)
    with pytest.raises(ProposalError, match=r"slice \d+: .*answer is not JSON.*after 3 attempts"):
        proposer.propose(scan)
    assert len(server.requests) == 3 and waits == [0.5, 1.0]


def test_a_hanging_endpoint_times_out_within_the_bound(server: FakeServer, scan) -> None:
    server.default = ("hang", None)
    started = time.perf_counter()
    with pytest.raises(ProposalError, match=r"no answer from .* within 0.2 s \(after 2 attempts\)"):
        VLMProposer(_config(server)).propose(scan)
    assert time.perf_counter() - started < 2 * 0.2 + 0.8


def test_http_errors_and_bad_envelopes_are_retried(server: FakeServer, scan) -> None:
    server.script = [("http", 503), ("raw", b"<html>oops</html>")]
    server.default = ("text", '```json\n{"boxes": []}\n```')
    proposals = VLMProposer(_config(server, max_retries=2, backoff_s=0.0)).propose(scan)
    assert proposals.empty and proposals.record["retries"] == 2
    server.script, server.default = [], ("http", 500)
    with pytest.raises(ProposalError, match="HTTP 500"):
        VLMProposer(_config(server, max_retries=0)).propose(scan)


def test_an_unreachable_endpoint_is_reported() -> None:
    with FakeServer() as closed:
        url = closed.url
    config = VLMConfig(base_url=url, model="m", timeout_s=0.5, max_retries=0, slice_stride=8)
    with pytest.raises(ProposalError, match="cannot reach|connection"):
        VLMProposer(config).propose(prepare_scan(synthetic_brain().images, SPACING))


def test_localize_falls_back_from_a_hanging_vlm_and_records_why(server: FakeServer) -> None:
    s = synthetic_brain()
    server.default = ("hang", None)
    result = localize(s.images, spacing_mm=SPACING, proposer=VLMProposer(_config(server, max_retries=0)))
    assert result.record["fallback"]["from"] == "vlm:qwen-vl-test"
    assert "within 0.2 s" in result.record["fallback"]["reason"]
    assert result.record["proposer"] == "builtin-asymmetry" and result.found
    with pytest.raises(ProposalError, match="within 0.2 s"):
        localize(s.images, spacing_mm=SPACING, proposer=VLMProposer(_config(server, max_retries=0)),
                 config={"on_proposer_failure": "error"})


def test_localize_uses_vlm_boxes_when_they_parse(server: FakeServer) -> None:
    s = synthetic_brain()
    scan_ = prepare_scan(s.images, SPACING, brain_mask=s.brain, crop_margin_mm=20.0)
    nx, ny, _ = scan_.shape
    # a box around the lesion, in display pixels of the cropped slice (upscale 1)
    lesion = s.lesion[scan_.window]
    xs, ys = np.nonzero(lesion.any(axis=2))
    box = {"x_min": int(nx - 1 - xs.max()), "x_max": int(nx - xs.min()), "y_min": int(ny - 1 - ys.max()),
           "y_max": int(ny - ys.min()), "confidence": 1.0}
    server.default = ("text", json.dumps({"boxes": [box]}))
    proposer = VLMProposer(_config(server, upscale=1, slice_stride=1))
    result = localize(s.images, spacing_mm=SPACING, brain_mask=s.brain, proposer=proposer)
    assert result.record["proposer"] == "vlm:qwen-vl-test" and result.record["fallback"] is None
    assert np.count_nonzero(result.refined_mask & s.lesion) / s.lesion.sum() > 0.9  # boxes mapped back right
    assert result.record["proposals"]["n_boxes"] == len(server.requests)


def test_vlm_config_validates_values() -> None:
    with pytest.raises(ValueError, match="base_url must be an http\\(s\\) URL"):
        VLMConfig(base_url="ftp://x", model="m")
    with pytest.raises(ValueError, match="max_retries must be between 0 and 10, got 11"):
        VLMConfig(base_url="http://127.0.0.1:1/v1", model="m", max_retries=11)


def test_asking_for_an_image_the_scan_lacks_is_a_config_error_not_a_fallback(server: FakeServer, scan) -> None:
    with pytest.raises(ConfigError, match="VLMConfig.modalities names 't2'"):
        VLMProposer(_config(server, modalities=("t2",))).propose(scan)
    assert server.requests == []
