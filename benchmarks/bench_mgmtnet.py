"""Benchmark: MGMT-Net demo config on a glioma phantom cohort — WT Dice and marker AUCs vs the oracle, time.

The demo config (configs/mgmtnet-demo.yaml) is trained through the same code as ``vbiopsy train``
(cross-validation on the training pool, fold ensemble on the held-out test set, 2 cores) and
evaluated on the phantoms' own grid. Printed: wall time (goal ≤ 15 min), held-out Dice per region
(goal WT ≥ 0.85) and, per marker, the test AUC with its bootstrap CI next to the oracle of
``ground_truth.json`` on the *same* test patients (a cross-validated logistic regression on the
planted factors: what a model could at best extract) — goal AUC ≥ 0.9 × oracle — and the out-of-fold
AUC over the training pool (less noisy) with the oracle on those patients.

    python benchmarks/bench_mgmtnet.py [--cohort DIR] [--patients 150] [--epochs N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vbiopsy.data.phantoms import PhantomConfig, generate_cohort
from vbiopsy.evaluate import roc_auc
from vbiopsy.train.profile_evaluation import evaluate_profile
from vbiopsy.train.profile_run import run_profile
from vbiopsy.train.run import load_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ORACLE = {"idh": "idh", "codel_1p19q": "codel_1p19q", "tert": "tert"}


def oracle_auc(truth: dict, task: str, subjects: list[str]) -> float | None:
    """The oracle's AUC over ``subjects`` that have a label for ``task``."""
    spec = truth["tasks"][task]
    ids = [s for s in subjects if s in spec["labels"] and s in spec.get("oracle", {})]
    y = np.array([int(spec["labels"][s]) for s in ids])
    if len(np.unique(y)) < 2:
        return None
    prob = [spec["oracle"][s] for s in ids]  # P(positive), or {class: probability}
    return float(roc_auc(y, np.array([float(p["1"]) if isinstance(p, dict) else float(p) for p in prob])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, help="a glioma phantom cohort (default: generate one)")
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--epochs", type=int, help="override optim.max_epochs of the demo config")
    parser.add_argument("--keep", type=Path, help="keep the run here instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cohort = args.cohort
        if cohort is None:
            cohort = Path(tmp) / "cohort"
            start = time.perf_counter()
            generate_cohort(PhantomConfig(n_patients=args.patients, spacing_mm=2.0, diagnosis_mix={"glioma": 1.0},
                                          seed=0), cohort, jobs=2)
            print(f"generated {args.patients} glioma phantoms at 2 mm in {time.perf_counter() - start:.0f} s")
        truth = json.loads((cohort / "ground_truth.json").read_text())
        overrides: dict = {"data": {"cohort": str(cohort)}}
        if args.epochs:
            overrides["optim"] = {"max_epochs": args.epochs}
        config = load_train_config(CONFIGS / "mgmtnet-demo.yaml", overrides)
        run = args.keep or Path(tmp) / "run"
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        start = time.perf_counter()
        run_profile(config, run)
        trained = time.perf_counter() - start
        metrics = json.loads(evaluate_profile(config, run).read_text())
        total = time.perf_counter() - start
        test = pd.read_csv(run / "test" / "predictions.csv", dtype={"subject_id": str})
        oof_subjects = [s for path in sorted(run.glob("fold_*/oof/predictions.csv"))
                        for s in pd.read_csv(path, dtype={"subject_id": str})["subject_id"]]
        print(f"{config.data.folds} folds + test ensemble in {trained:.0f} s, with evaluation {total:.0f} s "
              f"(goal <= 900 s); test n = {len(test)}")
        for region, values in metrics["test"]["segmentation"]["regions"].items():
            dice = values["dice"]
            if dice.get("mean") is not None:
                print(f"  {region}: test Dice mean {dice['mean']:.3f}, median {dice['median']:.3f} "
                      f"(region present in {values['n_ref_present']})" + ("  goal >= 0.85" if region == "WT" else ""))
        for marker, entry in metrics["test"]["markers"].items():
            oracle = oracle_auc(truth, ORACLE[marker], list(test["subject_id"]))
            if "auc" not in entry or oracle is None:
                print(f"  {marker}: {entry.get('reason', 'oracle undefined on the test patients')} (n = {entry['n']})")
                continue
            auc = entry["auc"]
            oof_auc = metrics["oof"]["markers"][marker].get("auc", {}).get("auc", float("nan"))
            oof_oracle = oracle_auc(truth, ORACLE[marker], oof_subjects) or float("nan")
            print(f"  {marker}: test AUC {auc['auc']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}] (n = {entry['n']}); "
                  f"oracle on the same patients {oracle:.3f} → ratio {auc['auc'] / oracle:.2f} (goal >= 0.90); "
                  f"OOF AUC {oof_auc:.3f}, oracle {oof_oracle:.3f} → ratio {oof_auc / oof_oracle:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
