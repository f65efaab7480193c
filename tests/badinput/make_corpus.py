"""Write the bad-input corpus: ``tests/badinput/cases/<case>/`` (inputs + ``case.json``).

Run once (``python tests/badinput/make_corpus.py``); the outputs are kept in the repository and
read by ``test_bad_input_corpus.py``. Every case is one malformed input given to one ``vbiopsy``
command. Volumes are 6³ int16/float32 (a few hundred bytes gzipped); the whole corpus is < 1 MB.

``case.json`` keys:
    ``args``: CLI arguments; ``{case}`` is the case folder, ``{tmp}`` a fresh temporary folder.
    ``exit_code``: expected exit status (1: ``cohort check`` found problems, 2: refused input).
    ``error``: regex the one ``error:``/``problem:`` line on stderr must match (names input + problem).
    ``out``: path that must be absent or empty afterwards (``null``: the command writes nothing).
    ``seed_out``: files put in ``out`` before the run (they must be all that is there afterwards).
    ``mkdir``: folders created before the run.
    ``subprocess``: also run as a real process and compare with the in-process run.
    ``xfail``: why the case fails today, in a file this task does not own (``null``: must pass).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from badinput_files import (  # noqa: E402  (run as a script from any folder)
    AFFINE, GRADES, SHAPE, TRAIN_YAML, UCSF_HEADER, Files, blob, cohort12,
    good_splits, gz, img, manifest, nifti_bytes, one_patient, patched_header, patient, row, run_folder,
    train_case, tumour, ucsf_case,
)

CASES = Path(__file__).resolve().parent / "cases"
OUT = "{tmp}/out"

XFAIL_PREPROCESS_PATIENT = ("by design the MRI-Processor checks images per patient inside the run: a bad patient is "
                            "reported ('problem: subject …', exit 1) and the others are processed, so its "
                            "OUT/<subject>/log.txt and OUT/run_summary.json are kept (a 500-patient run is not "
                            "aborted by one corrupt scan)")


def check(name: str, files: Files, error: str, *, target: str = "manifest.csv", code: int = 1, **extra: Any) -> None:
    case(name, files, ["cohort", "check", "{case}/" + target], code, error, out=None, **extra)


def case(name: str, files: Files, args: list[str], exit_code: int, error: str, *, out: str | None = OUT,
         xfail: str | None = None, subprocess: bool = False, **extra: Any) -> None:
    """Write one case folder."""
    folder = CASES / name
    folder.mkdir(parents=True)
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    spec = {"args": args, "exit_code": exit_code, "error": error, "out": out, "subprocess": subprocess,
            "xfail": xfail, **extra}
    (folder / "case.json").write_text(json.dumps(spec, indent=1) + "\n")


def make_cohort_check_cases() -> None:
    """``vbiopsy cohort check``: one problem line per bad file or cell (exit 1), or one error (exit 2)."""
    half = img(blob(1))
    check("nifti_truncated", one_patient(t1c=half[: len(half) // 2]),
          r"subject p0: t1c: .*p0_t1c\.nii\.gz: not a readable NIfTI image \(the gzip stream is cut short",
          subprocess=True)
    uncompressed = {**patient(), "p0_t1c.nii": nifti_bytes(blob())[:500],
                    "manifest.csv": manifest([row().replace("p0_t1c.nii.gz", "p0_t1c.nii")])}
    check("nifti_truncated_uncompressed", uncompressed, r"p0_t1c\.nii: file is truncated or corrupt")
    text_nii = {**uncompressed, "p0_t1c.nii": "subject,notes\n" * 40}
    check("nifti_text_named_nii", text_nii, r"p0_t1c\.nii: not a readable NIfTI image \(no NIfTI-1/2 header")
    check("nifti_empty_file", one_patient(flair=b""), r"subject p0: flair: .*p0_flair\.nii\.gz: not a readable NIfTI image \(the file is empty")
    check("nifti_text_named_nii_gz", one_patient(t1c=b"this is a text file, not an image\n"),
          r"p0_t1c\.nii\.gz: not a readable NIfTI image \(named \.gz but not gzip-compressed")
    check("nifti_gzip_of_garbage", one_patient(t1c=gz(b"\x00garbage" * 50)),
          r"p0_t1c\.nii\.gz: not a readable NIfTI image \(no NIfTI-1/2 header")
    check("nifti_header_without_voxels", one_patient(t1c=gz(nifti_bytes(blob())[:352])),
          r"p0_t1c\.nii\.gz: file is truncated or corrupt")
    check("nifti_2d", one_patient(flair=img(blob()[:, :, 0])), r"p0_flair\.nii\.gz: expected a 3-D image, got a 2-D")
    check("nifti_5d", one_patient(flair=img(np.ones((6, 6, 6, 2, 2), np.float32))),
          r"p0_flair\.nii\.gz: expected a 3-D image, got a 5-D")
    check("nifti_4d_series", one_patient(flair=img(np.ones((6, 6, 6, 3), np.float32))),
          r"p0_flair\.nii\.gz: expected a 3-D image, got a 4-D")
    nan = blob().astype(np.float32)
    nan[2, 2, 2] = np.nan
    check("voxels_nan", one_patient(t1c=img(nan)), r"p0_t1c\.nii\.gz: 1 voxels are NaN or infinite")
    inf = blob().astype(np.float32)
    inf[1, 1, 1:3] = np.inf
    check("voxels_inf", one_patient(flair=img(inf)), r"p0_flair\.nii\.gz: 2 voxels are NaN or infinite",
          subprocess=True)
    check("voxels_all_zero", one_patient(t1c=img(np.zeros(SHAPE, np.int16))), r"p0_t1c\.nii\.gz: image is empty")
    check("spacing_zero", one_patient(t1c=gz(patched_header(pixdim=(0.0, 2.0, 2.0), qform_code=0, sform_code=0))),
          r"p0_t1c\.nii\.gz: .*voxel size.*0", subprocess=True)
    check("spacing_negative", one_patient(t1c=gz(patched_header(pixdim=(-2.0, 2.0, 2.0), qform_code=1, sform_code=0))),
          r"p0_t1c\.nii\.gz: .*voxel size.*-2")
    check("spacing_1e6_mm", one_patient(t1c=gz(patched_header(
        srow=[(1e6, 0, 0, 0), (0, 1e6, 0, 0), (0, 0, 1e6, 0)], sform_code=1))),
        r"p0_t1c\.nii\.gz: .*voxel size.*1e\+06")
    check("affine_singular", one_patient(t1c=gz(patched_header(
        srow=[(0, 0, 0, 0), (0, 2, 0, 0), (0, 0, 2, 0)], qform_code=0, sform_code=1))),
        r"p0_t1c\.nii\.gz: .*affine")
    check("affine_nan", one_patient(t1c=gz(patched_header(
        srow=[(float("nan"), 0, 0, 0), (0, 2, 0, 0), (0, 0, 2, 0)], qform_code=0, sform_code=1))),
        r"p0_t1c\.nii\.gz: .*affine")
    check("orientation_flip_between_modalities", one_patient(flair=img(blob(2), np.diag([-2.0, 2.0, 2.0, 1.0]))),
          r"subject p0: flair: .*p0_flair\.nii\.gz: not on the grid of t1c \(affine differs.*stored orientation LAS vs RAS")
    shifted = AFFINE.copy()
    shifted[:3, 3] = [10.0, 0.0, 0.0]
    check("affine_differs_between_modalities", one_patient(flair=img(blob(2), shifted)),
          r"p0_flair\.nii\.gz: not on the grid of t1c \(affine differs by up to 10 mm")
    check("shape_mismatch_modalities", one_patient(flair=img(blob(2, (6, 6, 8)))),
          r"p0_flair\.nii\.gz: not on the grid of t1c \(shape \(6, 6, 8\) != \(6, 6, 6\)\)")
    check("shape_mismatch_seg", one_patient(seg=img(tumour((8, 6, 6)))),
          r"subject p0: seg: .*p0_seg\.nii\.gz: not on the grid of t1c \(shape")
    check("seg_label_9", one_patient(seg=img(tumour(value=9))),
          r"p0_seg\.nii\.gz: label values \[9\] are not in the brats2024 convention")
    check("seg_label_negative", one_patient(seg=img(tumour(value=-1))),
          r"p0_seg\.nii\.gz: label values \[-1\] are not in the brats2024")
    frac = tumour().astype(np.float32)
    frac[3, 3, 3] = 1.5
    check("seg_non_integer", one_patient(seg=img(frac)), r"p0_seg\.nii\.gz: label image has non-integer values")
    check("manifest_missing_file", {**patient(), "manifest.csv": manifest([row().replace("p0_flair", "absent")])},
          r"subject p0: flair: .*absent\.nii\.gz: file not found")
    check("manifest_duplicate_ids", {**patient(), "manifest.csv": manifest([row(), row()])},
          r"manifest\.csv line 3: duplicate subject ID 'p0' \(first at line 2\)", subprocess=True)
    check("grade_5", {**patient(), "manifest.csv": manifest([row(grade="5")])},
          r"manifest\.csv line 2 \(subject p0\): column 'grade': '5' is not a WHO grade")
    check("age_not_a_number", {**patient(), "manifest.csv": manifest([row(age="old")])},
          r"manifest\.csv line 2 \(subject p0\): column 'age': 'old' is not a number")
    check("age_out_of_range", {**patient(), "manifest.csv": manifest([row(age="250")])},
          r"line 2 \(subject p0\): column 'age': 250 is outside \[0, 120\]")
    check("sex_unknown_value", {**patient(), "manifest.csv": manifest([row(sex="Q")])},
          r"line 2 \(subject p0\): column 'sex': 'Q' is not a sex")
    check("os_days_negative", {**patient(), "manifest.csv": manifest([row() + ",-30"],
                                                                     "subject_id,t1c,flair,seg,age,sex,grade,os_days")},
          r"line 2 \(subject p0\): column 'os_days': -30 is outside")
    check("seg_convention_unknown", {**patient(), "manifest.csv": manifest(
        [row() + ",brats1999"], "subject_id,t1c,flair,seg,age,sex,grade,seg_convention")},
        r"column 'seg_convention': 'brats1999' is not a label convention")
    check("image_path_not_nifti", {**patient(), "manifest.csv": manifest([row().replace("p0_t1c.nii.gz", "p0_t1c.png")])},
          r"manifest\.csv line 2: column 't1c': 'p0_t1c\.png' is not a \.nii or \.nii\.gz path")
    check("empty_subject_id", {**patient(), "manifest.csv": manifest([row(sid="p0"), row(sid="p0").replace("p0,", ",", 1)])},
          r"manifest\.csv line 3: empty subject ID")
    check("missing_subject_id_column", {**patient(), "manifest.csv": manifest([row()[3:]], "t1c,flair,seg,age,sex,grade")},
          r"^error: .*manifest\.csv: missing required column 'subject_id'", code=2)
    check("no_image_columns", {"manifest.csv": "subject_id,age\np0,50\n"},
          r"^error: .*manifest\.csv: no image columns found", code=2)
    check("manifest_header_only", {"manifest.csv": manifest([])}, r"^error: .*manifest\.csv: no patients found", code=2)
    check("manifest_zero_bytes", {"manifest.csv": ""}, r"^error: .*manifest\.csv: cannot be read as a table", code=2)
    check("manifest_binary", {"manifest.csv": b"\xff\xfe\x00\x81subject_id\x00\x9c\n\x80\x81"},
          r"^error: .*manifest\.csv: cannot be read as a table", code=2)
    check("manifest_duplicate_columns", {**patient(), "manifest.csv": manifest([row() + ",60"],
                                                                               "subject_id,t1c,flair,seg,age,sex,grade,age")},
          r"^error: .*manifest\.csv: duplicate column names \['age'\]", code=2)
    check("manifest_alias_columns_clash", {**patient(), "manifest.csv": manifest(
        [row() + ",60"], "subject_id,t1c,flair,seg,age,sex,grade,Age at MRI")},
        r"^error: .*manifest\.csv: columns 'age' and 'Age at MRI' both mean 'age'", code=2)
    case("cohort_folder_empty", {}, ["cohort", "check", "{tmp}/empty"], 2, r"^error: .*empty: cohort folder is empty",
         out=None, mkdir=["{tmp}/empty"], subprocess=True)
    check("cohort_folder_unknown_layout", {"folder/notes.txt": "scans will follow\n"},
          r"^error: .*folder: no known cohort layout found", target="folder", code=2)
    check("cohort_path_is_a_nifti", patient(), r"^error: .*p0_t1c\.nii\.gz: a cohort is a folder or a manifest",
          target="p0_t1c.nii.gz", code=2)


def make_other_cohort_cases() -> None:
    """``cohort manifest`` and ``cohort split``: refused before anything is written."""
    manifest_out = ["--out", OUT + "/manifest.csv"]
    case("manifest_cmd_empty_folder", {}, ["cohort", "manifest", "{tmp}/empty", *manifest_out], 2,
         r"^error: .*empty: cohort folder is empty", mkdir=["{tmp}/empty"])
    case("manifest_cmd_clinical_age_old", ucsf_case(UCSF_HEADER + "UCSF-PDGM-001,M,old,4,wildtype,1,300,GTR\n"),
         ["cohort", "manifest", "{case}", *manifest_out], 2,
         r"^error: .*UCSF-PDGM-metadata_v2\.csv line 2 \(subject UCSF-PDGM-001\): column 'Age at MRI': 'old' is not a number")
    case("manifest_cmd_clinical_duplicate_id", ucsf_case(UCSF_HEADER + "UCSF-PDGM-001,M,50,4,wildtype,1,300,GTR\n"
                                                         "UCSF-PDGM-001,F,51,2,mutant,0,900,STR\n"),
         ["cohort", "manifest", "{case}", *manifest_out], 2,
         r"^error: .*metadata_v2\.csv line 3: duplicate subject ID 'UCSF-PDGM-001' \(first at line 2\)")
    case("manifest_cmd_clinical_missing_file", ucsf_case(UCSF_HEADER),
         ["cohort", "manifest", "{case}", "--clinical", "{case}/absent.csv", *manifest_out], 2,
         r"^error: .*absent\.csv: table not found")
    case("manifest_cmd_unknown_layout_option", ucsf_case(UCSF_HEADER),
         ["cohort", "manifest", "{case}", "--layout", "nnunet", *manifest_out], 2, r"^error: unknown layout 'nnunet'")

    split_out = ["--out", OUT + "/splits.json"]
    dup = cohort12()
    dup["manifest.csv"] = str(dup["manifest.csv"]).replace("s11,", "s10,")
    case("split_duplicate_ids", dup, ["cohort", "split", "{case}/manifest.csv", *split_out], 2,
         r"^error: .*manifest\.csv line 13: duplicate subject ID 's10' \(first at line 12\)")
    bad_grade = cohort12()
    bad_grade["manifest.csv"] = str(bad_grade["manifest.csv"]).replace(",M,4\n", ",M,5\n", 1)
    case("split_grade_out_of_range", bad_grade, ["cohort", "split", "{case}/manifest.csv", *split_out], 2,
         r"^error: .*manifest\.csv line \d+ \(subject s\d+\): column 'grade': '5' is not a WHO grade")
    case("split_rare_class", cohort12(), ["cohort", "split", "{case}/manifest.csv", "--folds", "5", *split_out], 2,
         r"^error: grade class '2' has 3 patients.*needs at least")
    case("split_test_fraction_1_5", cohort12(), ["cohort", "split", "{case}/manifest.csv", "--test-fraction", "1.5",
                                                 *split_out], 2, r"^error: test_fraction must be .* got 1\.5")
    case("split_one_fold", cohort12(), ["cohort", "split", "{case}/manifest.csv", "--folds", "1", *split_out], 2,
         r"^error: n_folds must be an integer >= 2, got 1")
    case("split_unknown_label", cohort12(), ["cohort", "split", "{case}/manifest.csv", "--label", "idh", *split_out], 2,
         r"^error: --label 'idh': no such column")
    case("split_rare_classes_option", cohort12(), ["cohort", "split", "{case}/manifest.csv", "--rare-classes", "drop",
                                                   *split_out], 2, r"^error: rare_classes must be 'error' or 'train', got 'drop'")
    sessions = cohort12(rows=[f"s{i:02d},P{i // 2},img/t1c.nii.gz,img/flair.nii.gz,img/seg.nii.gz,50,F,"
                              f"{'3' if i == 1 else GRADES[i]}" for i in range(12)],
                        header="subject_id,patient_id,t1c,flair,seg,age,sex,grade")
    case("split_patient_with_conflicting_grades", sessions, ["cohort", "split", "{case}/manifest.csv", *split_out], 2,
         r"^error: .*patient 'P0' has sessions with different grade values: 2 and 3")


def make_pipeline_cases() -> None:
    """``preprocess``, ``train``, ``predict`` and ``phantoms`` with bad configs, options and data."""
    pre = ["preprocess", "{case}/manifest.csv", "--out", OUT]
    case("preprocess_unknown_preset", one_patient(), [*pre, "--preset", "fast"], 2, r"^error: --preset 'fast'")
    case("preprocess_yaml_syntax", {**one_patient(), "pre.yaml": "resample: {spacing_mm: [1, 1\n"},
         [*pre, "--config", "{case}/pre.yaml"], 2, r"^error: .*pre\.yaml: not valid YAML at line \d+")
    case("preprocess_unknown_key", {**one_patient(), "pre.yaml": "resample:\n  spacing: 2\n"},
         [*pre, "--config", "{case}/pre.yaml"], 2, r"^error: .*pre\.yaml: resample\.spacing: Extra inputs")
    case("preprocess_wrong_type", {**one_patient(), "pre.yaml": "bias:\n  enabled: sometimes\n"},
         [*pre, "--config", "{case}/pre.yaml"], 2, r"^error: .*pre\.yaml: bias\.enabled: .*'sometimes'")
    case("preprocess_config_is_a_list", {**one_patient(), "pre.yaml": "- resample\n- bias_field\n"},
         [*pre, "--config", "{case}/pre.yaml"], 2, r"^error: .*pre\.yaml: expected a mapping of keys to values, got list")
    case("preprocess_config_missing", one_patient(), [*pre, "--config", "{case}/absent.yaml"], 2,
         r"^error: .*absent\.yaml: config file not found")
    case("preprocess_duplicate_ids", {**patient(), "manifest.csv": manifest([row(), row()])}, pre, 2,
         r"^error: .*manifest\.csv line 3: duplicate subject ID 'p0'")
    half = img(blob(1))
    case("preprocess_truncated_nifti", one_patient(t1c=half[: len(half) // 2]), [*pre, "--preset", "skull-stripped"], 2,
         r"p0_t1c\.nii\.gz: (file is truncated|not a readable NIfTI)", xfail=XFAIL_PREPROCESS_PATIENT)
    nan = blob().astype(np.float32)
    nan[0, 0, 0] = np.nan
    case("preprocess_nan_voxels", one_patient(flair=img(nan)), [*pre, "--preset", "skull-stripped"], 2,
         r"p0_flair\.nii\.gz: 1 voxels are NaN or infinite", xfail=XFAIL_PREPROCESS_PATIENT, subprocess=True)

    train = ["train", "{case}/config.yaml", "--out", OUT, "--max-epochs", "1"]
    case("train_yaml_syntax", train_case(TRAIN_YAML.replace("optim: {", "optim: {{")), train, 2,
         r"^error: .*config\.yaml: not valid YAML at line 11 column \d+ \(expected ',' or '\}'.*flow mapping started at line 10\)")
    case("train_unknown_key", train_case(TRAIN_YAML.replace("batch_size: 4", "batchsize: 4")), train, 2,
         r"^error: .*config\.yaml: optim\.batchsize: Extra inputs are not permitted")
    case("train_wrong_type", train_case(TRAIN_YAML.replace("folds: 2", "folds: two")), train, 2,
         r"^error: .*config\.yaml: data\.folds: .*'two'")
    case("train_negative_epochs", train_case(TRAIN_YAML.replace("max_epochs: 1", "max_epochs: -3")),
         ["train", "{case}/config.yaml", "--out", OUT], 2,
         r"^error: .*config\.yaml: optim\.max_epochs: .*greater than or equal to 1 \(got -3\)", subprocess=True)
    case("train_unknown_task", train_case(TRAIN_YAML.replace("task: grade", "task: grading")), train, 2,
         r"^error: .*config\.yaml: task: .*'grading'")
    case("train_missing_cohort_key", train_case(TRAIN_YAML.replace("  cohort: cohort/manifest.csv\n", "")), train, 2,
         r"^error: .*config\.yaml: data\.cohort: Field required")
    case("train_config_missing", {}, ["train", "{case}/absent.yaml", "--out", OUT], 2,
         r"^error: .*absent\.yaml: config file not found")
    case("train_max_epochs_zero", train_case(), ["train", "{case}/config.yaml", "--out", OUT, "--max-epochs", "0"], 2,
         r"^error: .*max-epochs.*0")
    case("train_cohort_path_missing", train_case(TRAIN_YAML.replace("cohort/manifest.csv", "absent/manifest.csv")),
         train, 2, r"^error: .*absent.manifest\.csv: cohort not found")
    case("train_cohort_duplicate_ids", train_case(rows=[f"s0,img/t1c.nii.gz,img/flair.nii.gz,img/seg.nii.gz,50,F,{g}" for g in (2, 4)]), train, 2,
         r"^error: .*manifest\.csv line 3: duplicate subject ID 's0'")
    with_splits = ["train", "{case}/config.yaml", "--out", OUT, "--max-epochs", "1", "--splits", "{case}/splits.json"]
    leak = good_splits(test=["s00", "s03", "s06", "s01"])
    case("splits_patient_in_train_and_test", train_case(splits=leak), with_splits, 2,
         r"^error: .*splits\.json: subject 's01' is in both test .* and fold 0 train")
    case("splits_unknown_subject", train_case(splits=good_splits(test=["s00", "s03", "s06", "ghost"])), with_splits, 2,
         r"^error: .*splits\.json: .*subject 'ghost' .*not in the cohort")
    case("splits_not_json", train_case(splits='{"test": ["s00",], "folds": []}'), with_splits, 2,
         r"^error: .*splits\.json: not valid JSON \(line 1")

    case("predict_not_a_run", {"run/notes.txt": "empty\n"}, ["predict", "{case}/run", "s00", "--out", OUT], 2,
         r"^error: .*run: not a finished training run \(no run\.json\)")
    case("predict_run_config_broken", run_folder("task: grade\ndata: [unclosed\n"),
         ["predict", "{case}/run", "s00", "--out", OUT], 2, r"^error: .*run.config\.yaml: not valid YAML at line \d+ column \d+ \(expected ',' or '\]'")
    case("predict_unknown_subject", run_folder(), ["predict", "{case}/run", "s99", "--out", OUT], 2,
         r"^error: .*manifest\.csv: no subject 's99' in the cohort", subprocess=True)

    ph = ["phantoms", OUT, "--jobs", "1"]
    case("phantoms_zero_patients", {}, [*ph, "--patients", "0"], 2, r"^error: options: n_patients: .*got 0")
    case("phantoms_spacing_negative", {}, [*ph, "--spacing", "-2"], 2, r"^error: options: spacing_mm: .*got -2\.0")
    case("phantoms_spacing_1e6_mm", {}, [*ph, "--spacing", "1e6"], 2, r"^error: options: spacing_mm: .*got 1000000\.0")
    case("phantoms_unknown_layout", {}, [*ph, "--layout", "nnunet"], 2, r"^error: options: layout: .*'nnunet'")
    case("phantoms_config_unknown_key", {"ph.yaml": "n_patients: 2\nnoise: 0.1\n"},
         [*ph, "--config", "{case}/ph.yaml"], 2, r"^error: .*ph\.yaml: noise: Extra inputs are not permitted")
    case("phantoms_config_wrong_type", {"ph.yaml": "n_patients: many\n"}, [*ph, "--config", "{case}/ph.yaml"], 2,
         r"^error: .*ph\.yaml: n_patients: .*'many'")
    case("phantoms_config_yaml_syntax", {"ph.yaml": "n_patients: 2\n  seed: [1\n"}, [*ph, "--config", "{case}/ph.yaml"],
         2, r"^error: .*ph\.yaml: not valid YAML")
    case("phantoms_config_not_text", {"ph.yaml": b"\xff\xfe\x00n_patients\x81"}, [*ph, "--config", "{case}/ph.yaml"],
         2, r"^error: .*ph\.yaml: not a text file")
    case("phantoms_out_not_empty", {}, [*ph, "--patients", "1"], 2, r"^error: .*out: output folder is not empty",
         seed_out={"notes.txt": "mine\n"})
    case("phantoms_jobs_zero", {}, [*ph[:2], "--jobs", "0"], 2, r"^error: .*jobs.*0")


def main() -> None:
    if CASES.exists():
        shutil.rmtree(CASES)
    CASES.mkdir(parents=True)
    for make in (make_cohort_check_cases, make_other_cohort_cases, make_pipeline_cases):
        make()
    total = sum(p.stat().st_size for p in CASES.rglob("*") if p.is_file())
    print(f"{len(list(CASES.iterdir()))} cases, {total / 1024:.0f} KiB in {CASES}")


if __name__ == "__main__":
    main()
