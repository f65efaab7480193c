"""VLM proposer: axial slices to a vision-language model behind an OpenAI-compatible endpoint.

The user runs the model (e.g. ``vllm serve Qwen/Qwen2.5-VL-7B-Instruct`` or a llama.cpp server)
and gives its base URL; nothing is downloaded here. Each brain slice is sent as one PNG per
modality (base64 data URLs) with the radiological prompt of :mod:`.vlm_answer` to
``{base_url}/chat/completions``; the answer is parsed strictly. Only the standard library is
used (``urllib.request``).

Slices are those of the scan the localiser prepared: the brain's bounding box plus
``LocalizerConfig.crop_margin_mm``, so the brain fills the image.

Failures are bounded: each request waits at most ``timeout_s`` per socket operation (connect,
each read); a timeout, a connection or HTTP error, a malformed response or an answer that fails
the schema is retried ``max_retries`` times with exponential backoff (``backoff_s``, doubling).
If a slice still fails, :meth:`VLMProposer.propose` raises :class:`ProposalError` naming the
slice and the last reason — :func:`vbiopsy.localize.localize` then falls back to the built-in
proposer (recorded) or raises, as configured. Proxies from the environment are honoured except
for loopback hosts.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import numpy as np

from vbiopsy.errors import ConfigError
from vbiopsy.localize.boxes import Box, ProposalError, Proposals
from vbiopsy.localize.config import VLMConfig
from vbiopsy.localize.render import SliceView, data_url, encode_png, intensity_window
from vbiopsy.localize.scan import Scan
from vbiopsy.localize.vlm_answer import SYSTEM_PROMPT, AnswerError, build_prompt, parse_answer

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class TransportError(RuntimeError):
    """The endpoint did not give a usable chat completion (timeout, refused, HTTP error, bad envelope)."""


class ChatClient:
    """Minimal OpenAI-compatible chat client (``POST {base_url}/chat/completions``)."""

    def __init__(self, config: VLMConfig) -> None:
        self.config = config
        self.url = f"{config.base_url}/chat/completions"
        handlers = [urllib.request.ProxyHandler({})] if urlparse(self.url).hostname in LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    def complete(self, messages: list[dict[str, Any]]) -> str:
        """The assistant's text for ``messages``; :class:`TransportError` on any transport problem."""
        payload: dict[str, Any] = {"model": self.config.model, "messages": messages,
                                   "temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
        if self.config.json_mode:
            payload["response_format"] = {"type": "json_object"}
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(payload).encode("utf-8"), headers=headers,
                                         method="POST")
        try:
            with self._opener.open(request, timeout=self.config.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            raise TransportError(f"HTTP {err.code} {err.reason} from {self.url}") from None
        except TimeoutError:
            raise TransportError(f"no answer from {self.url} within {self.config.timeout_s:g} s") from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, TimeoutError):
                raise TransportError(f"no answer from {self.url} within {self.config.timeout_s:g} s") from None
            raise TransportError(f"cannot reach {self.url} ({reason})") from None
        except (ConnectionError, OSError) as err:
            raise TransportError(f"connection to {self.url} failed ({err})") from None
        return _message_text(body, self.url)


def _message_text(body: bytes, url: str) -> str:
    """``choices[0].message.content`` of a chat-completion response (text or text parts)."""
    try:
        envelope = json.loads(body.decode("utf-8"))
        content = envelope["choices"][0]["message"]["content"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError):
        raise TransportError(f"{url} did not return a chat completion: {body[:120]!r}") from None
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if parts and all(isinstance(p, str) for p in parts):
            return "".join(parts)
    if not isinstance(content, str):
        raise TransportError(f"{url} returned a message without text content: {str(content)[:120]!r}")
    return content


class VLMProposer:
    """Slice boxes from a vision-language model (see module doc); implements ``SliceProposer``.

    Args:
        config: endpoint, model, retry and rendering settings.
        sleep: the backoff wait (tests pass a recorder).
    """

    def __init__(self, config: VLMConfig, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.name = f"vlm:{config.model}"
        self.client = ChatClient(config)
        self._sleep = sleep

    def _messages(self, images: list[np.ndarray], view: SliceView) -> list[dict[str, Any]]:
        prompt = build_prompt(self.config.modalities, view.width, view.height, self.config.coordinates)
        content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        content += [{"type": "image_url", "image_url": {"url": data_url(encode_png(img))}} for img in images]
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]

    def ask(self, images: list[np.ndarray], view: SliceView) -> tuple[list[Box], int]:
        """Boxes for one slice and the number of attempts used; :class:`ProposalError` when all fail."""
        messages = self._messages(images, view)
        reason = ""
        attempts = self.config.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                self._sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                text = self.client.complete(messages)
                boxes = parse_answer(text, view.width, view.height, self.config.coordinates)
            except (TransportError, AnswerError) as err:
                reason = str(err)
                continue
            voxel_boxes = [view.to_voxels(b.x_min, b.y_min, b.x_max, b.y_max, b.confidence)
                           for b in boxes if b.confidence > 0]
            return [b for b in voxel_boxes if b is not None], attempt + 1
        raise ProposalError(f"{self.name} at {self.config.base_url}: {reason} (after {attempts} attempts)")

    def propose(self, scan: Scan) -> Proposals:
        missing = [m for m in self.config.modalities if m not in scan.images]
        if missing:
            raise ConfigError(f"VLMConfig.modalities names {missing[0]!r}, but the scan only has "
                              f"{', '.join(scan.modalities)} (LocalizerConfig.modalities)")
        started = time.perf_counter()
        nx, ny, nz = scan.shape
        view = SliceView(nx, ny, self.config.upscale)
        windows = {m: intensity_window(scan.images[m], scan.brain) for m in self.config.modalities}
        brain_fraction = scan.brain.sum(axis=(0, 1)) / float(nx * ny)
        eligible = np.nonzero(brain_fraction >= self.config.min_brain_fraction)[0]
        boxes: dict[int, list[Box]] = {}
        requests = attempts_total = 0
        stride = self.config.slice_stride
        for z in eligible[::stride] if eligible.size else []:
            images = [view.image(scan.images[m][:, :, z], windows[m]) for m in self.config.modalities]
            try:
                found, attempts = self.ask(images, view)
            except ProposalError as err:
                raise ProposalError(f"slice {int(z)}: {err}") from None
            requests += 1
            attempts_total += attempts
            for covered in range(int(z), min(int(z) + stride, nz)):
                if found and brain_fraction[covered] >= self.config.min_brain_fraction:
                    boxes[covered] = list(found)
        record = {"endpoint": self.config.base_url, "model": self.config.model, "slices_sent": requests,
                  "attempts": attempts_total, "retries": attempts_total - requests,
                  "slice_stride": stride, "coordinates": self.config.coordinates, "upscale": self.config.upscale,
                  "seconds": round(time.perf_counter() - started, 3)}
        return Proposals.from_boxes(scan.shape, boxes, self.name, record)
