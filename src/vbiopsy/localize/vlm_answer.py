"""The radiological prompt sent with each slice and the strict parser of the model's answer.

The prompt carries the cues the Virtual Biopsy paper names (abnormal signal intensity,
irregular boundaries, oedema-associated gradients, midline asymmetry) and asks for exactly one
JSON object::

    {"boxes": [{"x_min": 10, "y_min": 20, "x_max": 60, "y_max": 80, "confidence": 0.9}]}

Parsing is strict: the answer must be that object (bare, or alone in one fenced code block);
any other text, an extra key, a non-numeric or out-of-image coordinate, an empty or inverted box,
a confidence outside [0, 1] or more than ``MAX_BOXES`` boxes is rejected with
:class:`AnswerError`, never repaired or guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_BOXES = 10
RELATIVE_RANGE = 1000.0

SYSTEM_PROMPT = (
    "You are an expert neuroradiologist. You localise intracranial tumours on single axial MRI "
    "slices and answer only with JSON."
)

_MODALITY_NAMES = {"t1c": "contrast-enhanced T1-weighted (T1c)", "flair": "T2-FLAIR", "t2": "T2-weighted",
                   "t1": "T1-weighted", "asl": "ASL perfusion (CBF)"}

_FENCE = re.compile(r"\A```(?:json|JSON)?[ \t]*\n(?P<body>.*?)\n?```\Z", re.DOTALL)


class AnswerError(ValueError):
    """The model's answer is not the JSON object the prompt asked for (the message says why)."""


class PixelBox(BaseModel):
    """One box in the answer's units (pixels or 0–1000), columns × rows, origin top-left."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    confidence: float = Field(1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_order(self) -> PixelBox:
        if not (0 <= self.x_min < self.x_max and 0 <= self.y_min < self.y_max):
            raise ValueError(f"box needs 0 <= x_min < x_max and 0 <= y_min < y_max, got "
                             f"x {self.x_min}..{self.x_max}, y {self.y_min}..{self.y_max}")
        return self


class Answer(BaseModel):
    """The whole answer: a list of boxes (empty when the slice shows no tumour)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    boxes: list[PixelBox] = Field(..., max_length=MAX_BOXES)


def build_prompt(modalities: Sequence[str], width: int, height: int, coordinates: str) -> str:
    """The user prompt for one slice shown as ``len(modalities)`` images of ``width × height``."""
    images = "; ".join(f"image {k + 1} is {_MODALITY_NAMES.get(m, m)}" for k, m in enumerate(modalities))
    if coordinates == "pixels":
        units = (f"in pixels of the {width}×{height} image: x from 0 (left edge) to {width} (right edge), "
                 f"y from 0 (top edge) to {height} (bottom edge)")
    else:
        units = "relative to the image, from 0 to 1000 on each axis, origin at the top-left corner"
    return (
        f"These {len(modalities)} images show the same axial slice of a brain MRI, in radiological "
        f"convention (anterior at the top, the patient's right on the image's left); {images}.\n"
        "Assess whether this slice contains an intracranial tumour. Look for: abnormal signal "
        "intensity (hyper- or hypointense relative to normal-appearing white matter, or "
        "enhancement), irregular boundaries, edema-associated signal gradients, mass effect and "
        "asymmetry between the two hemispheres across the midline.\n"
        "Draw one tight bounding box around each separate tumour region, including its edema, "
        f"with coordinates {units}, and a confidence between 0 and 1.\n"
        "Answer with exactly one JSON object and nothing else, of the form "
        '{"boxes": [{"x_min": 0, "y_min": 0, "x_max": 0, "y_max": 0, "confidence": 0.0}]}. '
        'If the slice shows no tumour, answer {"boxes": []}.'
    )


def parse_answer(text: str, width: int, height: int, coordinates: str) -> list[PixelBox]:
    """Validate the model's answer and return its boxes in pixels of the ``width × height`` image.

    Raises:
        AnswerError: anything but the requested JSON object, or boxes outside the image.
    """
    if not isinstance(text, str):
        raise AnswerError(f"answer is not text but {type(text).__name__}")
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group("body").strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        raise AnswerError(f"answer is not JSON ({err.msg} at char {err.pos}): {_clip(text)}") from None
    try:
        answer = Answer.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise AnswerError(f"answer does not match the schema at {where}: "
                          f"{first['msg'].removeprefix('Value error, ')}: {_clip(text)}") from None
    limit_x, limit_y = (width, height) if coordinates == "pixels" else (RELATIVE_RANGE, RELATIVE_RANGE)
    boxes = []
    for k, box in enumerate(answer.boxes):
        if box.x_max > limit_x or box.y_max > limit_y:
            raise AnswerError(f"box {k} x {box.x_min}..{box.x_max}, y {box.y_min}..{box.y_max} leaves the "
                              f"image ({limit_x:g}×{limit_y:g} {coordinates})")
        if coordinates != "pixels":
            sx, sy = width / RELATIVE_RANGE, height / RELATIVE_RANGE
            box = PixelBox(x_min=box.x_min * sx, y_min=box.y_min * sy, x_max=box.x_max * sx,
                           y_max=box.y_max * sy, confidence=box.confidence)
        boxes.append(box)
    return boxes


def _clip(text: str, limit: int = 120) -> str:
    flat = " ".join(str(text).split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "…")
