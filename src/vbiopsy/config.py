"""Configuration: YAML files validated by pydantic models, with one-line errors.

Each pipeline's model lives next to its code (``PhantomConfig`` in :mod:`vbiopsy.data.phantoms`,
``DemoConfig`` here); this module is the one way to load any of them from YAML, merge command-line
overrides, and save the resolved config next to a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from vbiopsy.atomic import write_text_atomic
from vbiopsy.errors import ConfigError, InputError

M = TypeVar("M", bound=BaseModel)


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per invalid key: ``source: key: message (got value)``."""
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(root)"
        msg = item["msg"].removeprefix("Value error, ")
        shown = repr(item.get("input"))
        got = "" if "input" not in item or isinstance(item["input"], dict) or shown in msg else f" (got {shown})"
        lines.append(f"{source}: {key}: {msg}{got}")
    return "; ".join(lines)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; raise :class:`InputError` naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(path, f"not valid YAML{_yaml_problem(err)}") from None
    except UnicodeDecodeError:
        raise InputError(path, "not a text file (not UTF-8)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, f"expected a mapping of keys to values, got {type(data).__name__}")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """`` at line L column C (problem; while parsing X started at line K)`` from a PyYAML error:
    the line YAML stops at is often one after the typo, so the construct it was in is named too."""
    mark = getattr(err, "problem_mark", None)
    if mark is None:
        return ""
    details = [str(getattr(err, "problem", "") or "").strip()]
    context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and start is not None:
        details.append(f"{context} started at line {start.line + 1}")
    detail = "; ".join(d for d in details if d)
    return f" at line {mark.line + 1} column {mark.column + 1}" + (f" ({detail})" if detail else "")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``, merging nested mappings key by key (a preset plus a YAML)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class ConfigSection(BaseModel):
    """A section of a training config: unknown keys refused, values frozen after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Precision = Literal["auto", "32", "bf16-mixed"]


class RunNumerics(ConfigSection):
    """What every task's ``optim`` section shares: numeric precision, seeding, determinism and how often a
    resumable training state is saved (read by :func:`vbiopsy.train.fit.fit` for every task)."""

    precision: Precision = Field("auto", description="auto: bf16 autocast where the CPU/GPU supports it, else fp32")
    seed: int = Field(0, ge=0)
    deterministic: bool = Field(True, description="seed every RNG and use deterministic algorithms "
                                                  "(see vbiopsy.train.fit; `vbiopsy train --deterministic`)")
    checkpoint_every: int = Field(1, ge=1, le=10000, description="epochs between resumable training-state saves "
                                                                 "(`vbiopsy train --resume`)")


class CohortSource(ConfigSection):
    """Where a training config's patients come from (the first keys of every ``data`` section)."""

    cohort: Path = Field(..., description="cohort folder (known layout) or manifest CSV")
    layout: str = "auto"
    clinical: Path | None = None


RUN_PATH_KEYS = ("cohort", "clinical", "splits")
"""Keys of a training config's ``data`` section that hold paths (relative ones are relative to the YAML)."""


def read_run_yaml(path: str | Path | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A training config's raw mapping: the YAML (if any) with its relative ``data`` paths made absolute
    against the YAML's folder, then ``overrides`` merged in (e.g. ``{"data": {"cohort": ...}}``)."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path)
        section = data.get("data")
        if isinstance(section, dict):
            for key in RUN_PATH_KEYS:
                value = section.get(key)
                if isinstance(value, str) and value and not Path(value).is_absolute():
                    section[key] = str((Path(path).parent / value).resolve())
    return deep_merge(data, overrides or {})


def build_config(model: type[M], data: dict[str, Any], source: str = "config") -> M:
    """Validate ``data`` against ``model``; raise :class:`ConfigError` with one line per bad key."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(model: type[M], path: str | Path | None = None, **overrides: Any) -> M:
    """Load ``model`` from a YAML file (optional), then apply the non-``None`` ``overrides``."""
    data = read_yaml(path) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(model, data, str(path) if path is not None else "options")


def save_config(config: BaseModel, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically) so a run can be reproduced from it."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    return write_text_atomic(path, text)


QUICK_DEMO: dict[str, Any] = {
    "n_patients": 40, "spacing_mm": 3.0, "n4_iterations": (20, 20), "n_folds": 3,
    "aslnet_epochs": 3, "aslnet_folds": 2, "mgmtnet_epochs": 2,
    "diagnoser_epochs": 3, "diagnoser_folds": 2,
}
"""What ``vbiopsy demo --quick`` (``quick: true``) changes: fewer, coarser phantoms, lighter N4, fewer
epochs and folds. Keys given explicitly (YAML or command line) win over these."""


class DemoConfig(BaseModel):
    """What ``vbiopsy demo`` runs: a phantom cohort → check, summary, splits → MRI-Processor preprocessing →
    the demo configs of ASLNet, MGMT-Net and the Adaptive-Diagnoser → cohort report and two patient reports.

    ``quick: true`` fills every field not given with :data:`QUICK_DEMO` (the README's first command);
    both variants run the same code. Sizes are validated here; whether a generated cohort has enough
    patients per class for a system's split is checked after generation (that system is then skipped,
    with the reason printed).
    """

    model_config = ConfigDict(extra="forbid")

    quick: bool = Field(False, description="the quick preset: unset fields take the QUICK_DEMO values")
    n_patients: int = Field(80, ge=4, le=2000, description="phantom patients to generate")
    seed: int = Field(0, ge=0, description="seed of the cohort, the splits and the trainings")
    spacing_mm: float = Field(2.0, ge=1.0, le=8.0, description="isotropic voxel size of the cohort (mm)")
    glioma_fraction: float = Field(0.6, ge=0.1, le=1.0, description="share of gliomas (what ASLNet and MGMT-Net "
                                   "train on); the rest is split equally among lymphoma, germinoma and other")
    jobs: int = Field(2, ge=1, le=64, description="worker processes")
    split_label: str = Field("grade", min_length=1, description="manifest column the cohort splits are stratified on")
    test_fraction: float = Field(0.2, gt=0.0, le=0.5, description="held-out test share of the cohort splits and of "
                                 "every run (> 0: the patient reports are of held-out test patients)")
    n_folds: int = Field(5, ge=2, le=20, description="cross-validation folds of the cohort splits")
    rare_classes: Literal["error", "train"] = Field(
        "train", description="classes too rare for a stratified test set: refuse, or keep in training")
    n4_iterations: tuple[int, ...] | None = Field(None, description="N4 bias-correction iterations per fitting "
                                                  "level of the preprocessing; None: the preset's default")
    aslnet: bool = Field(True, description="train the ASLNet 12-month survival demo config on the gliomas")
    aslnet_epochs: int = Field(30, ge=1, le=200, description="maximum epochs of the demo ASLNet training")
    aslnet_folds: int = Field(3, ge=2, le=10, description="cross-validation folds of the demo ASLNet training")
    mgmtnet: bool = Field(True, description="train the MGMT-Net demo config (segmentation + markers) on the gliomas")
    mgmtnet_epochs: int = Field(10, ge=1, le=500, description="maximum epochs of the demo MGMT-Net training")
    mgmtnet_folds: int = Field(2, ge=2, le=10, description="cross-validation folds of the demo MGMT-Net training")
    diagnoser: bool = Field(True, description="train the Adaptive-Diagnoser demo config (tumour type) on all patients")
    diagnoser_epochs: int = Field(30, ge=1, le=500, description="maximum epochs of the demo Adaptive-Diagnoser")
    diagnoser_folds: int = Field(3, ge=2, le=10, description="cross-validation folds of the demo Adaptive-Diagnoser")

    @model_validator(mode="before")
    @classmethod
    def _quick_preset(cls, data: Any) -> Any:
        """With ``quick`` true, fill the fields not given with :data:`QUICK_DEMO`."""
        if not isinstance(data, dict) or "quick" not in data:
            return data
        try:
            quick = TypeAdapter(bool).validate_python(data["quick"])
        except ValidationError:
            return data  # the field's own validation names the bad value
        return {**QUICK_DEMO, **data} if quick else data

    @field_validator("n4_iterations")
    @classmethod
    def _check_n4(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        """Checked by the preprocessing's own model, so the rule lives once."""
        from vbiopsy.preprocess.config import BiasFieldConfig

        if value is not None:
            try:
                BiasFieldConfig(iterations=value)
            except ValidationError as err:
                raise ValueError(err.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return value

    @property
    def diagnosis_mix(self) -> dict[str, float]:
        """Tumour-type probabilities of the phantom cohort (``PhantomConfig.diagnosis_mix``)."""
        other = (1.0 - self.glioma_fraction) / 3.0
        return {"glioma": self.glioma_fraction, "lymphoma": other, "germinoma": other,
                "other": 1.0 - self.glioma_fraction - 2.0 * other}
