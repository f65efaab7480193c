"""Builders of the bad-input corpus's files: tiny NIfTI volumes (good and broken), manifests,
configs and split files. Used by ``make_corpus.py``; nothing here is a test."""

from __future__ import annotations

import gzip
import io
import json
import struct
from typing import Any

import nibabel as nib
import numpy as np

SHAPE = (6, 6, 6)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def blob(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """An int16 bright ball with a little seeded texture (compresses to a few hundred bytes)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape[:3]], indexing="ij"))
    ball = np.clip(1.3 - np.sqrt((grid**2).sum(0)), 0, None) * 100 + rng.integers(0, 4, shape[:3])
    return ball.astype(np.int16)


def tumour(shape: tuple[int, ...] = SHAPE, value: int = 2) -> np.ndarray:
    """A segmentation with a 2³ core of label ``value`` in a 4³ oedema (label 2)."""
    seg = np.zeros(shape, np.int16)
    seg[1:5, 1:5, 1:5] = 2
    seg[2:4, 2:4, 2:4] = value
    return seg


def nifti_bytes(data: np.ndarray, affine: np.ndarray = AFFINE) -> bytes:
    """An uncompressed single-file NIfTI-1 image as bytes."""
    bio = io.BytesIO()
    img = nib.Nifti1Image(data, affine)
    img.to_file_map(img.make_file_map({"image": bio, "header": bio}))
    return bio.getvalue()


def patched_header(*, pixdim: tuple[float, float, float] | None = None, qform_code: int | None = None,
                   sform_code: int | None = None, srow: list[tuple[float, ...]] | None = None) -> bytes:
    """A valid 6³ image whose raw header fields are overwritten (what nibabel refuses to write)."""
    raw = bytearray(nifti_bytes(blob()))
    if pixdim is not None:
        raw[80:92] = struct.pack("<3f", *pixdim)
    if qform_code is not None:
        raw[252:254] = struct.pack("<h", qform_code)
    if sform_code is not None:
        raw[254:256] = struct.pack("<h", sform_code)
    for i, row in enumerate(srow or []):
        raw[280 + 16 * i:296 + 16 * i] = struct.pack("<4f", *row)
    return bytes(raw)


def gz(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


def img(data: np.ndarray, affine: np.ndarray = AFFINE) -> bytes:
    return gz(nifti_bytes(data, affine))


GOOD_T1C, GOOD_FLAIR, GOOD_SEG = img(blob(1)), img(blob(2)), img(tumour())
Files = dict[str, bytes | str]


def patient(sid: str = "p0", **override: bytes) -> Files:
    """Files of one good patient ``<sid>_{t1c,flair,seg}.nii.gz``; ``override`` replaces by modality."""
    files: Files = {f"{sid}_t1c.nii.gz": GOOD_T1C, f"{sid}_flair.nii.gz": GOOD_FLAIR, f"{sid}_seg.nii.gz": GOOD_SEG}
    for key, content in override.items():
        files[f"{sid}_{key}.nii.gz"] = content
    return files


def manifest(rows: list[str], header: str = "subject_id,t1c,flair,seg,age,sex,grade") -> str:
    return "\n".join([header, *rows]) + "\n"


def row(sid: str = "p0", age: str = "55", sex: str = "F", grade: str = "4") -> str:
    return f"{sid},{sid}_t1c.nii.gz,{sid}_flair.nii.gz,{sid}_seg.nii.gz,{age},{sex},{grade}"


def one_patient(**override: bytes) -> Files:
    """A one-patient manifest cohort with ``override`` files."""
    return {**patient(**override), "manifest.csv": manifest([row()])}


GRADES = ["2", "2", "2", "3", "3", "3", "4", "4", "4", "4", "4", "4"]


def cohort12(rows: list[str] | None = None, header: str | None = None) -> Files:
    """Twelve patients s00..s11 (grades 2/3/4 ×3/3/6) sharing one set of good images, + manifest."""
    files: Files = {"img/t1c.nii.gz": GOOD_T1C, "img/flair.nii.gz": GOOD_FLAIR, "img/seg.nii.gz": GOOD_SEG}
    body = rows if rows is not None else [
        f"s{i:02d},img/t1c.nii.gz,img/flair.nii.gz,img/seg.nii.gz,{40 + i},{'MF'[i % 2]},{g}"
        for i, g in enumerate(GRADES)]
    files["manifest.csv"] = manifest(body, header or "subject_id,t1c,flair,seg,age,sex,grade")
    return files


def ucsf_case(metadata: str) -> Files:
    """One UCSF-PDGM case folder plus a metadata table."""
    sid = "UCSF-PDGM-0001"
    files: Files = {f"{sid}_nifti/{sid}_{m}.nii.gz": GOOD_T1C for m in ("T1", "T1c", "T2", "FLAIR", "ASL")}
    files[f"{sid}_nifti/{sid}_tumor_segmentation.nii.gz"] = img(tumour(value=4))
    files["UCSF-PDGM-metadata_v2.csv"] = metadata
    return files


UCSF_HEADER = "ID,Sex,Age at MRI,WHO CNS Grade,IDH,1-dead 0-alive,OS,EOR\n"

TRAIN_YAML = """task: grade
data:
  cohort: cohort/manifest.csv
  modality: t1c
  folds: 2
  test_fraction: 0.25
  roi: {side_mm: 8, centre: seg, window_mm: 4}
model: {base_width: 4, blocks: [1], gn_groups: 2}
augment: {enabled: false}
optim: {max_epochs: 1, batch_size: 4, precision: "32"}
explain: {enabled: false}
baseline: false
"""


def train_case(yaml_text: str = TRAIN_YAML, splits: dict[str, Any] | str | None = None,
               rows: list[str] | None = None) -> Files:
    """A tiny ASLNet grade config next to a 12-patient cohort (and a hand-edited ``splits.json``)."""
    files = {f"cohort/{k}": v for k, v in cohort12(rows).items()}
    files["config.yaml"] = yaml_text
    if splits is not None:
        files["splits.json"] = splits if isinstance(splits, str) else json.dumps(splits, indent=1)
    return files


def good_splits(**change: Any) -> dict[str, Any]:
    """A leak-free hand-written split of s00..s11 (3 test, 2 folds); ``change`` replaces keys."""
    data: dict[str, Any] = {"test": ["s00", "s03", "s06"], "folds": [
        {"train": ["s01", "s04", "s07", "s08"], "val": ["s02", "s05", "s09", "s10", "s11"]},
        {"train": ["s02", "s05", "s09", "s10", "s11"], "val": ["s01", "s04", "s07", "s08"]}]}
    data.update(change)
    return data


def run_folder(config: str = TRAIN_YAML.replace("cohort/", "../cohort/")) -> Files:
    """A "finished" run folder (run.json + config.yaml, no checkpoints) beside a 12-patient cohort."""
    files = {f"cohort/{k}": v for k, v in cohort12().items()}
    files["run/run.json"] = json.dumps({"task": "grade"})
    files["run/config.yaml"] = config
    return files
