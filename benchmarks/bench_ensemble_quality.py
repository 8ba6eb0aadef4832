"""Synthetic-cohort quality of the stacked ensemble against each of its members and the truth.

Issue 10, targets for the ensemble. For each training size and seed, the ensemble
(``models.ensemble.CompetingRiskEnsemble`` with its defaults) is fit on a synthetic training
cohort (modern mix) per endpoint, and it and each of its members (the members it fitted on all
the training data, i.e. exactly the stand-alone models) are scored on one large test cohort
drawn from a different seed, at 12, 24 and 36 months, with the project's metric code:

- ``mae_true``: mean absolute error of the predicted against the true CIF (``true_cif``);
- ``auc`` (``auc_cr``) beside the oracle's (the true CIF's) AUC on the same test set;
- ``calib_slope`` (``calibration_cr(...).slope``) and ``brier`` (``brier_cr``).

Results are appended per (n, seed, endpoint) to a CSV and the run resumes where it stopped
(rows already in the CSV are skipped). A markdown summary (mean over seeds) with the issue's
targets checked is printed and saved beside the CSV.

Rerun (niced; about 20-40 min on 2 shared cores)::

    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/bench_ensemble_quality.py \
        --seeds 0 1 2 3 4 --train-n 184 600 2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.config import ENDPOINTS, EVENT_OF_INTEREST
from features.pipeline import build_features, encode_endpoint
from features.synthetic import simulate_cohort, true_cif
from features.synthetic_params import DEFAULT_PARAMS, with_overrides
from models.ensemble import CompetingRiskEnsemble
from training.metrics import auc_cr, brier_cr, calibration_cr

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIX = {"twice_daily_share": 0.2}
TEST_SEED = 10_000
TEST_N = 5000
HORIZONS = (12, 24, 36)
N_JOBS = 2
ORACLE = "oracle"
ENSEMBLE = "ensemble"
MAE_SLACK = 0.002
AUC_ORACLE_SLACK = 0.015
SLOPE_RANGE = (0.9, 1.1)


def score(y_test: np.ndarray, risk: np.ndarray, truth: np.ndarray, h: float) -> dict:
    """Metrics of one model's risks (n_test,) at one horizon."""
    t, e = y_test["time"], y_test["event"]
    risk = np.clip(risk, 0.0, 1.0)
    try:
        slope = calibration_cr(t, e, risk, EVENT_OF_INTEREST, h).slope
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        slope = float("nan")
    return {
        "auc": auc_cr(t, e, risk, EVENT_OF_INTEREST, h),
        "brier": brier_cr(t, e, risk, EVENT_OF_INTEREST, h),
        "calib_slope": slope,
        "mae_true": float(np.mean(np.abs(risk - truth))),
        "mean_risk": float(risk.mean()),
    }


def run(args: argparse.Namespace) -> pd.DataFrame:
    params = with_overrides(DEFAULT_PARAMS, **MIX)
    test = simulate_cohort(args.test_n, args.test_seed, **MIX)
    X_test = build_features(test)
    months = np.asarray(HORIZONS, dtype=float)
    truths = {ep: true_cif(test, ep, months, params=params) for ep in ENDPOINTS}
    y_tests = {ep: encode_endpoint(test, ep) for ep in ENDPOINTS}
    done = pd.read_csv(args.out) if args.out.exists() else pd.DataFrame()
    rows = done.to_dict("records")
    seen = {(int(r["n_train"]), int(r["seed"]), r["endpoint"]) for r in rows}
    for ep in ENDPOINTS:
        if (0, -1, ep) not in seen:
            for j, h in enumerate(HORIZONS):
                r = score(y_tests[ep], truths[ep][:, j], truths[ep][:, j], h)
                rows.append(_row(0, -1, ep, ORACLE, h, 0.0, r, {}))
    ens_params = json.loads(args.params)
    for n in args.train_n:
        for seed in args.seeds:
            if all((n, seed, ep) in seen for ep in ENDPOINTS):
                continue
            train = simulate_cohort(n, seed, **MIX)
            X = build_features(train)
            for ep in ENDPOINTS:
                if (n, seed, ep) in seen:
                    continue
                y = encode_endpoint(train, ep)
                t0 = time.perf_counter()
                model = CompetingRiskEnsemble(random_state=seed, n_jobs=N_JOBS, **ens_params)
                model.fit(X, y)
                fit_s = time.perf_counter() - t0
                cifs = {ENSEMBLE: model.predict_cif(X_test, months)}
                cifs.update(model.predict_member_cifs(X_test, months))
                weights = {
                    name: float(model.weights_[0, m]) for m, (name, _) in enumerate(model.members_)
                }
                for name, cif in cifs.items():
                    for j, h in enumerate(HORIZONS):
                        r = score(
                            y_tests[ep], cif[:, EVENT_OF_INTEREST - 1, j], truths[ep][:, j], h
                        )
                        rows.append(_row(n, seed, ep, name, h, fit_s, r, weights))
                print(
                    f"[{time.strftime('%H:%M:%S')}] n={n} seed={seed} {ep} fit {fit_s:.1f}s "
                    f"weights {np.round(model.weights_[0], 3).tolist()}",
                    flush=True,
                )
            pd.DataFrame(rows).to_csv(args.out, index=False)  # resumable checkpoint
    out = pd.DataFrame(rows)
    out.to_csv(args.out, index=False)
    return out


def _row(n, seed, ep, model, h, fit_s, r, weights) -> dict:
    return {
        "n_train": n,
        "seed": seed,
        "endpoint": ep,
        "model": model,
        "horizon": h,
        "fit_s": fit_s,
        **r,
        "weight": weights.get(model, 1.0 if model == ENSEMBLE else float("nan")),
        "weights": json.dumps(weights),
    }


def summarise(res: pd.DataFrame) -> str:
    """Markdown: per endpoint, rows n x model, columns metric x horizon; then the targets."""
    lines: list[str] = []
    n_seeds = res.loc[res.model != ORACLE, "seed"].nunique()
    metrics = ("mae_true", "auc", "calib_slope", "brier")
    means = res.groupby(["endpoint", "n_train", "model", "horizon"])[list(metrics)].mean()
    weight = res.groupby(["endpoint", "n_train", "model"])["weight"].mean()
    for ep in ENDPOINTS:
        lines.append(f"\n#### {ep} (mean over {n_seeds} seeds)\n")
        head = (
            "| n | model | mean weight | "
            + " | ".join(f"{m} {h}m" for m in metrics for h in HORIZONS)
            + " |"
        )
        lines += [head, "|" + "---|" * (3 + len(metrics) * len(HORIZONS))]
        sub = means.loc[ep]
        for n, model in sorted({(a, b) for a, b, _ in sub.index}, key=_order):
            cells = []
            for m in metrics:
                for h in HORIZONS:
                    v = sub.loc[(n, model, h), m]
                    cells.append(f"{v:.4f}" if m in ("mae_true", "brier") else f"{v:.3f}")
            w = "—" if model in (ORACLE, ENSEMBLE) else f"{weight.loc[(ep, n, model)]:.2f}"
            label = "—" if model == ORACLE else str(n)
            lines.append(f"| {label} | {model} | {w} | " + " | ".join(cells) + " |")
    lines.append("\n#### Targets (issue 10)\n")
    lines.append(
        "| endpoint | n | horizon | ensemble MAE | best member (MAE) | Δ (target ≤ +0.002) | "
        "AUC − oracle (target ≥ −0.015 at n = 2000) | calibration slope (0.9–1.1 at n ≥ 600) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for ep in ENDPOINTS:
        sub = means.loc[ep]
        for n in sorted({a for a, _, _ in sub.index if a > 0}):
            for h in HORIZONS:
                ens = sub.loc[(n, ENSEMBLE, h)]
                members = {
                    m: sub.loc[(n, m, h), "mae_true"]
                    for (nn, m, hh) in sub.index
                    if nn == n and hh == h and m not in (ENSEMBLE, ORACLE)
                }
                best = min(members, key=members.get)
                d = ens["mae_true"] - members[best]
                d_auc = ens["auc"] - sub.loc[(0, ORACLE, h), "auc"]
                slope = ens["calib_slope"]
                ok_mae = "met" if d <= MAE_SLACK else f"MISSED by {d - MAE_SLACK:.4f}"
                ok_auc = (
                    "met"
                    if d_auc >= -AUC_ORACLE_SLACK
                    else (f"MISSED by {-AUC_ORACLE_SLACK - d_auc:.3f}")
                )
                lo, hi = SLOPE_RANGE
                ok_slope = (
                    "met" if lo <= slope <= hi else (f"MISSED by {max(lo - slope, slope - hi):.3f}")
                )
                lines.append(
                    f"| {ep} | {n} | {h} | {ens['mae_true']:.4f} | {best} ({members[best]:.4f}) "
                    f"| {d:+.4f}"
                    + (f" {ok_mae}" if n >= 600 else " (n < 600: report only)")
                    + f" | {d_auc:+.3f}"
                    + (f" {ok_auc}" if n >= 2000 else "")
                    + f" | {slope:.3f}"
                    + (f" {ok_slope}" if n >= 600 else "")
                    + " |"
                )
    return "\n".join(lines)


def _order(key):
    n, model = key
    return (n, {ORACLE: 0, ENSEMBLE: 1}.get(model, 2), model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--train-n", type=int, nargs="+", default=[184, 600, 2000])
    p.add_argument("--test-n", type=int, default=TEST_N)
    p.add_argument("--test-seed", type=int, default=TEST_SEED)
    p.add_argument("--params", default="{}", help="JSON keyword arguments of the ensemble")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "ensemble_quality.csv")
    p.add_argument("--summary-only", action="store_true", help="re-summarise --out, no fitting")
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    res = pd.read_csv(args.out) if args.summary_only else run(args)
    text = summarise(res)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
