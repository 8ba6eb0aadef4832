"""Issue 9's "done when": `reirrad train --synthetic 600 --seed 11` (release preset) logs
validated figures whose 95 % intervals contain what a fresh cohort of 20,000 measures
(AUC, Brier, ICI and calibration slope at 24 months).

Runs the job into a throw-away MLflow store (timed like bench_release_time.py), loads the
registered bundle, scores it on the fresh cohort of benchmarks/bench_validation_truth.py and
prints validated [interval] against real for both endpoints; writes the model card of that
bundle when ``--card`` is given (docs/sample_model_card.md is made this way).

    nice -n 10 python benchmarks/check_train_truth.py --card docs/sample_model_card.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.bench_release_time import OUT as TIME_OUT
from benchmarks.bench_release_time import TreeCpu
from benchmarks.bench_validation_truth import HORIZON, test_cohort
from features.config import ENDPOINTS, EVENT_OF_INTEREST
from models.store import load_champion
from training.config import load_config
from training.metrics import auc_cr, brier_cr, ici_and_slope_cr
from training.model_card import build_model_card
from training.train import train

OUT = Path(__file__).resolve().parent / "results" / "train_truth.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--preset", default="release")
    ap.add_argument("--card", type=Path, default=None)
    ap.add_argument(
        "--store",
        type=Path,
        default=None,
        help="keep the MLflow store (and artifacts) in this new folder, e.g. to write the "
        "sample reports from the same model (default: a temporary folder)",
    )
    args = ap.parse_args()
    cfg = load_config(args.preset)
    if args.store is not None:
        args.store.mkdir(parents=True, exist_ok=False)
    keep = contextlib.nullcontext(str(args.store.resolve())) if args.store else None
    with keep or tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        load_before = os.getloadavg()
        started = time.perf_counter()
        with TreeCpu() as cpu:
            result = train(
                synthetic_n=args.n,
                seed=args.seed,
                config=cfg,
                tracking_uri=uri,
                progress=False,
                echo=print,
            )
        wall = time.perf_counter() - started
        bundle, info = load_champion(uri, cfg.model_name, "challenger", dst_dir=tmp)
        if args.card:
            args.card.write_text(build_model_card(bundle, info))
    test = test_cohort()
    risks = bundle.predict_cif_features(test.X, [HORIZON])
    rows = []
    for e in ENDPOINTS:
        r = np.clip(risks[e][:, 0], 0, 1)
        y = test.y[e]
        ici, slope = ici_and_slope_cr(y["time"], y["event"], r, EVENT_OF_INTEREST, HORIZON)
        real = {
            "auc": auc_cr(y["time"], y["event"], r, EVENT_OF_INTEREST, HORIZON),
            "brier": brier_cr(y["time"], y["event"], r, EVENT_OF_INTEREST, HORIZON),
            "ici": ici,
            "slope": slope,
        }
        for m in real:
            key = f"{e}/{m}_{HORIZON:g}m"
            lo, est, hi = (result.headline[key + s] for s in ("_lo", "", "_hi"))
            rows.append(
                {
                    "endpoint": e,
                    "metric": m,
                    "validated": est,
                    "lo": lo,
                    "hi": hi,
                    "real": real[m],
                    "covered": bool(lo <= real[m] <= hi),
                }
            )
            print(
                f"{e:18s} {m:5s} validated {est:.3f} [{lo:.3f}, {hi:.3f}]  real {real[m]:.3f}"
                f"  {'covered' if lo <= real[m] <= hi else 'NOT covered'}"
            )
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"train --synthetic {args.n} --seed {args.seed} --config {args.preset}",
        "rows": rows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    timing = {
        "date": record["date"],
        "preset": cfg.name,
        "model_kind": cfg.model.kind,
        "n": args.n,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu.seconds, 1),
        "idle_2core_estimate_seconds": round(cpu.seconds / 2, 1),
        "nproc": os.cpu_count(),
        "load_before": [round(x, 1) for x in load_before],
        "load_after": [round(x, 1) for x in os.getloadavg()],
        "cv": f"{cfg.evaluation.cv_repeats}x{cfg.evaluation.cv_folds}",
        "trees": cfg.forest.n_estimators,
        "source": "check_train_truth.py",
    }
    with TIME_OUT.open("a") as fh:
        fh.write(json.dumps(timing) + "\n")
    print(json.dumps(timing))


if __name__ == "__main__":
    main()
