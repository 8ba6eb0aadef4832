"""Coverage of the true risk by the per-patient intervals (models/intervals.py), issue 9 part 5.

For each training size n and seed: simulate a training cohort (modern mix), fit the registered
architecture per endpoint (``training.model_factory.build_model`` when it exists, else the
forest), fit the interval model (timed), then score a fixed test cohort and compare with
``true_cif`` (the only place the truth is read). Every variant of the serving-time formula is
evaluated from the same fit. One CSV row per (n, seed, endpoint, horizon, variant, quintile of
true risk); the run resumes by skipping (n, seed) pairs already in the CSV.

    PYTHONPATH=. nice -n 10 python benchmarks/bench_intervals.py --n 600 2000 --seeds 0-9 \
        --out benchmarks/results/intervals.csv
    PYTHONPATH=. python benchmarks/bench_intervals.py --summarise benchmarks/results/intervals.csv \
        --record models/interval_coverage.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.config import ENDPOINTS, HORIZONS_MONTHS  # noqa: E402
from features.synthetic import simulate_cohort, true_cif  # noqa: E402
from features.timegrid import DEFAULT_GRID  # noqa: E402
from models.intervals import (  # noqa: E402
    DEFAULT_NEIGHBOURS,
    DEFAULT_RESAMPLE_PARAMS,
    VARIANTS,
    fit_resample_intervals,
)
from training.data import Cohort  # noqa: E402

MIX = {"twice_daily_share": 0.2}
TEST_SEED = 10_000
FIELDS = [
    "model",
    "n",
    "seed",
    "endpoint",
    "horizon",
    "variant",
    "quintile",
    "pairs",
    "covered",
    "width_sum",
    "abs_err_sum",
    "monotone_violations",
    "order_violations",
    "fit_s",
    "interval_fit_s",
    "serve_ms_per_patient",
    "single_patient_ms",
    "two_plan_difference_ms",
    "n_resamples",
]


def build(model: str, seed: int):
    """The estimator under test: the registered architecture, or the forest."""
    if model == "factory":
        from training.config import load_config
        from training.model_factory import build_model

        return build_model(load_config("release"), seed)
    if model == "forest":
        from models.forest import CompetingRiskForest

        return CompetingRiskForest(
            n_estimators=200, min_samples_leaf=15, n_jobs=1, random_state=seed
        )
    if model == "ensemble":
        from models.ensemble import CompetingRiskEnsemble

        return CompetingRiskEnsemble(n_estimators=200, n_causes=2, n_jobs=1, random_state=seed)
    raise ValueError(model)


def parse_seeds(spec: str) -> list[int]:
    if "-" in spec:
        a, b = spec.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in spec.split(",")]


def done_keys(path: Path) -> set[tuple[str, int, int]]:
    if not path.exists():
        return set()
    df = pd.read_csv(path)
    return {
        (str(m), int(n), int(s)) for m, n, s in zip(df["model"], df["n"], df["seed"], strict=True)
    }


def fit_one(model: str, n: int, seed: int, test: Cohort, resamples: int, cache: Path | None):
    """Per endpoint: (interval model, test grid CIF, model fit s, interval fit s); cached."""
    path = None if cache is None else cache / f"{model}_n{n}_s{seed}_r{resamples}.joblib"
    if path is not None and path.exists():
        return joblib.load(path)
    train = Cohort.from_records(simulate_cohort(n, seed=seed, **MIX))
    out = {}
    for ei, e in enumerate(ENDPOINTS):
        t0 = time.perf_counter()
        est = build(model, seed * 10 + ei).fit(train.X, train.y[e])
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        iv = fit_resample_intervals(
            est, train.X, train.y[e], n_resamples=resamples, random_state=seed * 10 + ei
        )
        out[e] = (iv, est.predict_cif(test.X)[:, 0, :], fit_s, time.perf_counter() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(out, path)
    return out


def single_call_ms(fn, *args, repeats: int = 30) -> float:
    """Median wall time of one call, in ms (the serving cost of one request's intervals)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def run_one(
    model: str, n: int, seed: int, test: Cohort, truth: dict, resamples: int, cache: Path | None
) -> list:
    fits = fit_one(model, n, seed, test, resamples, cache)
    rows = []
    H = np.asarray(HORIZONS_MONTHS, dtype=float)
    cols = DEFAULT_GRID.index_of(H)
    for e in ENDPOINTS:
        iv, grid_cif, fit_s, iv_s = fits[e]
        tr = truth[e]
        est_h = grid_cif[:, cols]
        for variant in VARIANTS:
            iv.variant = variant
            t0 = time.perf_counter()
            lo, hi = iv.grid_interval(test.X, grid_cif)
            serve_ms = (time.perf_counter() - t0) / len(test) * 1e3
            one = single_call_ms(iv.grid_interval, test.X.iloc[:1], grid_cif[:1])
            pair = single_call_ms(iv.grid_difference, test.X.iloc[:2], grid_cif[:2, cols], cols)
            mono = int((np.diff(lo, axis=1) < -1e-12).sum() + (np.diff(hi, axis=1) < -1e-12).sum())
            order = int(
                ((lo > grid_cif + 1e-12) | (hi < grid_cif - 1e-12) | (lo < 0) | (hi > 1)).sum()
            )
            lo_h, hi_h = lo[:, cols], hi[:, cols]
            for j, h in enumerate(H):
                q = np.digitize(tr[:, j], np.quantile(tr[:, j], [0.2, 0.4, 0.6, 0.8]))
                cov = (lo_h[:, j] <= tr[:, j] + 1e-12) & (tr[:, j] <= hi_h[:, j] + 1e-12)
                for quint in range(5):
                    m = q == quint
                    rows.append(
                        {
                            "model": model,
                            "n": n,
                            "seed": seed,
                            "endpoint": e,
                            "horizon": h,
                            "variant": variant,
                            "quintile": quint + 1,
                            "pairs": int(m.sum()),
                            "covered": int(cov[m].sum()),
                            "width_sum": float((hi_h[m, j] - lo_h[m, j]).sum()),
                            "abs_err_sum": float(np.abs(est_h[m, j] - tr[m, j]).sum()),
                            "monotone_violations": mono,
                            "order_violations": order,
                            "fit_s": round(fit_s, 2),
                            "interval_fit_s": round(iv_s, 2),
                            "serve_ms_per_patient": round(serve_ms, 4),
                            "single_patient_ms": round(one, 4),
                            "two_plan_difference_ms": round(pair, 4),
                            "n_resamples": resamples,
                        }
                    )
    return rows


def summarise(paths: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    keys = ["model", "n", "variant"]
    g = df.groupby(keys)
    overall = g[["pairs", "covered", "width_sum", "abs_err_sum"]].sum()
    overall["coverage"] = overall["covered"] / overall["pairs"]
    overall["width_over_mae"] = overall["width_sum"] / overall["abs_err_sum"]
    overall["mean_width"] = overall["width_sum"] / overall["pairs"]
    overall["mae"] = overall["abs_err_sum"] / overall["pairs"]
    overall["seeds"] = g["seed"].nunique()
    overall["n_resamples"] = g["n_resamples"].max()
    overall["test_patients"] = g["pairs"].sum() / (overall["seeds"] * 2 * len(HORIZONS_MONTHS))
    overall["monotone_violations"] = g["monotone_violations"].sum()
    overall["order_violations"] = g["order_violations"].sum()
    overall["serve_ms_per_patient"] = g["serve_ms_per_patient"].mean()
    overall["single_patient_ms"] = g["single_patient_ms"].median()
    overall["two_plan_difference_ms"] = g["two_plan_difference_ms"].median()
    overall["interval_fit_s_per_endpoint"] = g["interval_fit_s"].mean()
    overall["fit_s_per_endpoint"] = g["fit_s"].mean()
    byq = df.groupby([*keys, "quintile"])[["pairs", "covered"]].sum()
    byq["coverage"] = byq["covered"] / byq["pairs"]
    quint = byq["coverage"].unstack("quintile")
    quint.columns = [f"q{c}" for c in quint.columns]
    return overall.join(quint).reset_index(), df


def write_record(summary: pd.DataFrame, path: Path, variant: str) -> None:
    """The coverage record the bundle carries and the report quotes, per model kind."""
    rows = summary[summary["variant"] == variant]
    by_model: dict[str, dict] = {}
    for r in rows.itertuples():
        entry = by_model.setdefault(str(r.model), {"by_n": {}})
        entry["by_n"][str(int(r.n))] = {
            "coverage": round(float(r.coverage), 4),
            "min_quintile_coverage": round(float(min(r.q1, r.q2, r.q3, r.q4, r.q5)), 4),
            "width_over_mae": round(float(r.width_over_mae), 2),
            "training_cohorts": int(r.seeds),
            "n_resamples": int(r.n_resamples),
            "test_patients": int(r.test_patients),
        }
    record = {
        "what": "share of (test patient, horizon, endpoint) pairs whose true CIF lay inside the "
        "95 % interval, synthetic cohort, benchmarks/bench_intervals.py",
        "mix": "modern mix (twice_daily_share 0.2)",
        "configuration": {
            "resample_params": DEFAULT_RESAMPLE_PARAMS,
            "n_neighbours": DEFAULT_NEIGHBOURS,
            "variant": variant,
        },
        "level": 0.95,
        "horizons_months": list(HORIZONS_MONTHS),
        "by_model": by_model,
        "measured": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    path.write_text(json.dumps(record, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[600, 2000])
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--model", default="factory", choices=["factory", "forest", "ensemble"])
    ap.add_argument("--resamples", type=int, default=8)
    ap.add_argument("--test-n", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/intervals.csv")
    ap.add_argument("--cache", type=Path, help="keep fitted interval models here (re-evaluate)")
    ap.add_argument("--summarise", type=Path, nargs="+")
    ap.add_argument("--record", type=Path)
    ap.add_argument("--record-variant", default="shrink_rms")
    args = ap.parse_args(argv)
    if args.summarise:
        s, _ = summarise(args.summarise)
        with pd.option_context("display.width", 250, "display.max_columns", 40):
            print(s.round(3).to_string(index=False))
        if args.record:
            write_record(s, args.record, args.record_variant)
        return 0
    print(
        f"nproc {os.cpu_count()}, load {os.getloadavg()}, {platform.node()}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        flush=True,
    )
    test = Cohort.from_records(simulate_cohort(args.test_n, seed=TEST_SEED, **MIX))
    truth = {e: true_cif(test.records, e, HORIZONS_MONTHS) for e in ENDPOINTS}
    done = done_keys(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for n in args.n:
        for seed in parse_seeds(args.seeds):
            if (args.model, n, seed) in done:
                continue
            t0 = time.perf_counter()
            rows = run_one(args.model, n, seed, test, truth, args.resamples, args.cache)
            new = not args.out.exists()
            with open(args.out, "a", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=FIELDS)
                if new:
                    w.writeheader()
                w.writerows(rows)
            r = pd.DataFrame(rows)
            r = r[r["variant"] == args.record_variant]
            print(
                f"n={n} seed={seed}: coverage {r.covered.sum() / r.pairs.sum():.3f}, "
                f"width/MAE {r.width_sum.sum() / r.abs_err_sum.sum():.2f}, "
                f"{time.perf_counter() - t0:.0f}s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
