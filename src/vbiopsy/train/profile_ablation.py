"""The MGMT-Net ablation (paper Fig. 4): full model, no CMAF, no Swin branch, GAP marker pooling.

Each variant is the user's config with one switch changed, trained on the *same* split (the first
variant's ``splits.json`` is passed to the others) and scored out-of-fold; the table has one row
per variant with the mean WT/TC/ET Dice, the marker AUCs, the parameter count and the time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from vbiopsy.atomic import ensure_writable_dir, write_with_atomic
from vbiopsy.train.profile_config import ProfileConfig

VARIANTS: dict[str, dict[str, str]] = {
    "full": {},
    "no CMAF (concatenation)": {"fusion": "concat"},
    "no Swin (CNN encoder)": {"encoder": "cnn"},
    "GAP marker pooling": {"marker_pooling": "gap"},
}
"""Variant name → ``model`` options changed from the user's config."""


def variant_config(config: ProfileConfig, changes: dict[str, str], splits: Path | None) -> ProfileConfig:
    """``config`` with ``model`` options ``changes`` and (when given) a fixed ``splits.json``."""
    data = config.data.model_copy(update={"splits": splits}) if splits is not None else config.data
    return config.model_copy(update={"model": config.model.model_copy(update=changes), "data": data})


def ablation_row(name: str, config: ProfileConfig, run_dir: Path, seconds: float) -> dict[str, Any]:
    """One table row from a finished, evaluated variant run."""
    from vbiopsy.train.profile_run import build_mgmtnet

    metrics = json.loads((run_dir / "metrics.json").read_text())["oof"]
    row: dict[str, Any] = {"variant": name, "params": sum(p.numel() for p in build_mgmtnet(config).parameters())}
    regions = metrics["segmentation"].get("regions", {})
    for region in ("WT", "TC", "ET"):
        dice = regions.get(region, {}).get("dice", {})
        row[f"dice_{region}"] = dice.get("mean")
    for marker, entry in metrics["markers"].items():
        row[f"auc_{marker}"] = entry["auc"]["auc"] if "auc" in entry else None
    row["n_oof"] = metrics["segmentation"].get("n_cases")
    row["seconds"] = round(seconds, 1)
    return row


def run_ablation(config: ProfileConfig, out: Path, variants: dict[str, dict[str, str]] | None = None) -> pd.DataFrame:
    """Train and evaluate every variant under ``out/<k>_<name>``; write and return ``ablation.csv``."""
    from vbiopsy.train.profile_evaluation import evaluate_profile
    from vbiopsy.train.profile_run import run_profile

    folder = ensure_writable_dir(out)
    splits: Path | None = config.data.splits
    rows = []
    for k, (name, changes) in enumerate((variants or VARIANTS).items()):
        variant = variant_config(config, changes, splits)
        run_dir = folder / f"{k}_{name.split(' ')[0].lower()}"
        started = time.perf_counter()
        run_profile(variant, run_dir)
        evaluate_profile(variant, run_dir)
        rows.append(ablation_row(name, variant, run_dir, time.perf_counter() - started))
        splits = splits or run_dir / "splits.json"
    table = pd.DataFrame(rows)
    write_with_atomic(folder / "ablation.csv", lambda tmp: table.to_csv(tmp, index=False, float_format="%.4f"))
    return table
