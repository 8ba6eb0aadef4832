"""Do the validated figures tell the truth? (issue 9 part 3)

For each (n, seed): draw a synthetic cohort of n patients (modern mix), run the training job's
own evaluation (``training.evaluate.evaluate`` on the development rows, exactly as
``reirrad train`` does: no extra patients, no true risks), then score the registered model
on a fresh cohort of 20,000 patients of the same mix (the "real" figure). One CSV row per
run and endpoint, appended as soon as the run ends, so the benchmark resumes where it
stopped; ``--summary`` prints the table for RESULTS.md.

    nice -n 10 python benchmarks/bench_validation_truth.py --n 600 --seeds 20
    python benchmarks/bench_validation_truth.py --summary
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.config import ENDPOINTS, EVENT_OF_INTEREST
from features.synthetic import simulate_cohort
from training.config import TrainConfig, load_config
from training.data import Cohort, synthetic_training_data
from training.engine import LocalEngine
from training.evaluate import REGISTERED, cv_folds, evaluate
from training.metrics import auc_cr, brier_cr, ici_and_slope_cr

OUT = Path(__file__).resolve().parent / "results" / "validation_truth.csv"
MIX = {"twice_daily_share": 0.2}
TEST_N = 20_000
TEST_SEED = 987_654
SEED_BASE = 1_000
HORIZON = 24.0
CALIBRATION = ("ici", "slope")
"""Calibration figures compared with the truth: the interval as logged (``lo``/``hi``) and
the plain percentile interval of the same bootstrap draws (``pct_lo``/``pct_hi``)."""
FIELDS = (
    "preset",
    "n",
    "seed",
    "endpoint",
    "n_dev",
    "events_24m",
    "auc_validated",
    "auc_lo",
    "auc_hi",
    "auc_real",
    "auc_se",
    "auc_repeat_sd",
    "auc_apparent",
    "auc_foldmean",
    "brier_validated",
    "brier_lo",
    "brier_hi",
    "brier_real",
    "brier_se",
    *(
        f"{m}_{k}"
        for m in CALIBRATION
        for k in ("validated", "lo", "hi", "pct_lo", "pct_hi", "boot_mean", "se", "real")
    ),
    "seconds",
)
TARGET_MEAN_AUC, TARGET_MEAN_BRIER = 0.01, 0.003
TARGET_COVERAGE, TARGET_WIDTH_600 = 0.90, 0.15
TARGET_WORST_AUC, TARGET_WORST_BRIER = 0.06, 0.02


def bench_config(
    preset: str,
    workers: int,
    kind: str | None = None,
    cv_folds: int | None = None,
    cv_repeats: int | None = None,
    stratify: bool | None = None,
) -> TrainConfig:
    """The preset, without baselines (only the registered model is compared with the truth).

    ``kind`` replaces the registered architecture (e.g. the release ensemble with the quick
    preset's tree counts); ``cv_folds``/``cv_repeats`` the validation design, so that two
    designs can be compared on the same seeds. The label (the CSV's ``preset`` column, which
    keys resumption) names every override.
    """
    cfg = load_config(preset).with_kind(kind)
    label = cfg.name
    update: dict = {
        "baselines": cfg.baselines.model_copy(update={"models": ()}),
        "n_workers": workers,
        "fit_n_jobs": workers,
    }
    ev: dict = {}
    if cv_folds is not None:
        ev["cv_folds"] = cv_folds
    if cv_repeats is not None:
        ev["cv_repeats"] = cv_repeats
    if stratify is not None:
        ev["stratify"] = stratify
    if ev:
        e = cfg.evaluation.model_copy(update=ev)
        update["evaluation"] = e
        label += f"+cv{e.cv_folds}x{e.cv_repeats}" + ("" if e.stratify else "u")
    update["name"] = label
    return cfg.model_copy(update=update)


_TEST: dict[str, Cohort] = {}


def test_cohort() -> Cohort:
    """The fresh cohort of the same mix (built once per process)."""
    if "c" not in _TEST:
        from features.schema import validated_frame

        df = validated_frame(simulate_cohort(TEST_N, seed=TEST_SEED, **MIX), require_outcomes=True)
        _TEST["c"] = Cohort.from_records(df)
    return _TEST["c"]


def one_run(n: int, seed: int, cfg: TrainConfig, workers: int) -> list[dict]:
    started = time.perf_counter()
    cfg = cfg.with_seed(SEED_BASE + seed)
    data = synthetic_training_data(
        n, SEED_BASE + seed, cfg.holdout.salt, cfg.holdout.fraction, cfg.min_rows, **MIX
    )
    dev = data.development
    ev = evaluate(
        dev,
        cfg,
        LocalEngine(workers, progress=False),
        n_jobs=workers,
        interval_metrics=("auc", "brier", *CALIBRATION),
        interval_horizons=(HORIZON,),
    )
    test = test_cohort()
    folds = cv_folds(dev.y, cfg)  # the evaluation's folds (seeded by the config)
    rows = []
    for e in ENDPOINTS:
        model = ev.models[REGISTERED][e]
        risk = np.clip(model.predict_cif(test.X, [HORIZON])[:, EVENT_OF_INTEREST - 1, 0], 0, 1)
        yt = test.y[e]
        auc, auc_lo, auc_hi = ev.registered(e, "auc_24m")
        brier, brier_lo, brier_hi = ev.registered(e, "brier_24m")
        real_ici, real_slope = ici_and_slope_cr(
            yt["time"], yt["event"], risk, EVENT_OF_INTEREST, HORIZON
        )
        calibration = {}
        for m, real in (("ici", real_ici), ("slope", real_slope)):
            est, lo, hi = ev.registered(e, f"{m}_24m")
            detail = ev.interval_detail[f"{e}/{m}_24m"]
            calibration.update(
                {
                    f"{m}_validated": est,
                    f"{m}_lo": lo,
                    f"{m}_hi": hi,
                    f"{m}_pct_lo": detail["pct_lo"],
                    f"{m}_pct_hi": detail["pct_hi"],
                    f"{m}_boot_mean": detail["boot_mean"],
                    f"{m}_se": ev.interval_sd[f"{e}/{m}_24m"],
                    f"{m}_real": real,
                }
            )
        rows.append(
            {
                "preset": cfg.name,
                "n": n,
                "seed": seed,
                "endpoint": e,
                "n_dev": len(dev),
                "events_24m": int(ev.counts[f"{e}/events_24m"]),
                "auc_validated": auc,
                "auc_lo": auc_lo,
                "auc_hi": auc_hi,
                "auc_real": auc_cr(yt["time"], yt["event"], risk, EVENT_OF_INTEREST, HORIZON),
                "auc_se": ev.interval_sd[f"{e}/auc_24m"],
                "auc_repeat_sd": repeat_sd(ev, e, dev.y[e]),
                "brier_se": ev.interval_sd[f"{e}/brier_24m"],
                "auc_apparent": ev.apparent[f"{REGISTERED}/{e}/auc_24m"],
                "auc_foldmean": fold_mean_auc(ev, e, dev.y, folds),
                "brier_validated": brier,
                "brier_lo": brier_lo,
                "brier_hi": brier_hi,
                "brier_real": brier_cr(yt["time"], yt["event"], risk, EVENT_OF_INTEREST, HORIZON),
                **calibration,
                "seconds": 0.0,
            }
        )
    for r in rows:
        r["seconds"] = round(time.perf_counter() - started, 1)
    return rows


def repeat_sd(ev, endpoint: str, y: np.ndarray) -> float:
    """SD over repeats of the pooled out-of-fold AUC (NaN with one repeat)."""
    oof = ev.oof_risks[REGISTERED][endpoint]
    j = list(ev.horizons).index(HORIZON)
    vals = [auc_cr(y["time"], y["event"], r[:, j], EVENT_OF_INTEREST, HORIZON) for r in oof]
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")


def fold_mean_auc(ev, endpoint: str, y: dict[str, np.ndarray], folds: np.ndarray) -> float:
    """Mean over repeats and folds of each fold's own AUC (no pooling across fold models):
    a diagnostic beside the pooled figure the job reports."""
    oof = ev.oof_risks[REGISTERED][endpoint]
    j = list(ev.horizons).index(HORIZON)
    yy = y[endpoint]
    vals = []
    for r in range(folds.shape[0]):
        for k in np.unique(folds[r]):
            t = folds[r] == k
            vals.append(
                auc_cr(yy["time"][t], yy["event"][t], oof[r, t, j], EVENT_OF_INTEREST, HORIZON)
            )
    return float(np.nanmean(vals))


def done_runs(path: Path) -> set[tuple[str, int, int]]:
    if not path.exists():
        return set()
    df = pd.read_csv(path)
    return {(str(p), int(n), int(s)) for p, n, s in zip(df.preset, df.n, df.seed, strict=True)}


def append(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())


def summary(path: Path) -> pd.DataFrame:
    """Per preset, n and endpoint: mean difference, coverage, width, worst run."""
    df = pd.read_csv(path)
    out = []
    for (preset, n, e), g in df.groupby(["preset", "n", "endpoint"]):
        d_auc = g.auc_validated - g.auc_real
        d_brier = g.brier_validated - g.brier_real
        out.append(
            {
                "preset": preset,
                "n": n,
                "endpoint": e,
                "runs": len(g),
                "events_24m": g.events_24m.mean(),
                "auc_validated": g.auc_validated.mean(),
                "auc_real": g.auc_real.mean(),
                "auc_apparent": g.auc_apparent.mean(),
                "auc_foldmean_diff": (
                    (g.auc_foldmean - g.auc_real).mean() if "auc_foldmean" in g else np.nan
                ),
                "auc_mean_diff": d_auc.mean(),
                "auc_worst": d_auc.abs().max(),
                "auc_coverage": ((g.auc_lo <= g.auc_real) & (g.auc_real <= g.auc_hi)).mean(),
                "auc_width": (g.auc_hi - g.auc_lo).mean(),
                "brier_validated": g.brier_validated.mean(),
                "brier_real": g.brier_real.mean(),
                "brier_mean_diff": d_brier.mean(),
                "brier_worst": d_brier.abs().max(),
                "brier_coverage": (
                    (g.brier_lo <= g.brier_real) & (g.brier_real <= g.brier_hi)
                ).mean(),
                "brier_width": (g.brier_hi - g.brier_lo).mean(),
                **calibration_summary(g),
                "seconds": g.seconds.mean(),
            }
        )
    return pd.DataFrame(out)


def calibration_summary(g: pd.DataFrame) -> dict[str, float]:
    """ICI and slope against the real figure: mean difference, coverage and width of the
    logged interval and of the plain percentile interval of the same draws ("pct"), and how
    often each contains its own estimate (empty for rows written before they were recorded)."""
    out: dict[str, float] = {}
    for m in CALIBRATION:
        if f"{m}_real" not in g or g[f"{m}_real"].isna().all():
            continue
        est, real = g[f"{m}_validated"], g[f"{m}_real"]
        out[f"{m}_validated"] = est.mean()
        out[f"{m}_real"] = real.mean()
        out[f"{m}_mean_diff"] = (est - real).mean()
        out[f"{m}_boot_bias"] = (g[f"{m}_boot_mean"] - est).mean()
        for tag, lo, hi in (
            ("", g[f"{m}_lo"], g[f"{m}_hi"]),
            ("pct_", g[f"{m}_pct_lo"], g[f"{m}_pct_hi"]),
        ):
            out[f"{m}_{tag}coverage"] = ((lo <= real) & (real <= hi)).mean()
            out[f"{m}_{tag}below"] = (real < lo).mean()
            out[f"{m}_{tag}width"] = (hi - lo).mean()
            out[f"{m}_{tag}has_estimate"] = ((lo <= est) & (est <= hi)).mean()
    return out


def label_kind(label: str) -> str | None:
    """The registered kind a CSV label ran (``quick+ensemble`` -> ensemble, ``quick`` -> the
    preset's), or None for a label that changed the validation design (``+cv...``): only the
    shipped design goes into the coverage record."""
    base, *extra = label.split("+")
    if any(x.startswith("cv") for x in extra):
        return None
    kinds = [x for x in extra if x in ("forest", "ensemble")]
    return kinds[0] if kinds else load_config(base).model.kind


def coverage_record(path: Path) -> dict:
    """What ``training/validation_coverage.json`` holds: per kind and n, the share of runs
    whose interval contained the real figure (AUC and Brier at 24 months, per endpoint)."""
    df = pd.read_csv(path)
    df["kind"] = df.preset.astype(str).map({p: label_kind(p) for p in set(df.preset.astype(str))})
    df = df[df.kind.notna()]
    designs = {load_config(p.split("+")[0]).evaluation for p in set(df.preset.astype(str))}
    if len(designs) != 1:
        raise ValueError("the shipped design differs between the presets in the file")
    (design,) = designs
    out: dict = {
        "what": "share of synthetic training cohorts whose 95 % interval of the validated "
        f"figure at {HORIZON:g} months contained the same model's figure on {TEST_N:,} new "
        "patients of the same mix (benchmarks/bench_validation_truth.py)",
        "mix": "modern mix (twice_daily_share 0.2)",
        "design": f"{design.cv_repeats} x {design.cv_folds}-fold"
        + (" stratified" if design.stratify else "")
        + " cross-validation",
        "measured": time.strftime("%Y-%m-%d"),
        "by_model": {},
    }
    for (kind, n), g in df.groupby(["kind", "n"]):
        row: dict = {"runs": int(g.seed.nunique())}
        for m in ("auc", "brier"):
            inside = (g[f"{m}_lo"] <= g[f"{m}_real"]) & (g[f"{m}_real"] <= g[f"{m}_hi"])
            row[m] = {e: round(float(inside[g.endpoint == e].mean()), 3) for e in ENDPOINTS}
            diff = g[f"{m}_validated"] - g[f"{m}_real"]
            row[f"{m}_mean_diff"] = {
                e: round(float(diff[g.endpoint == e].mean()), 4) for e in ENDPOINTS
            }
        out["by_model"].setdefault(kind, {"by_n": {}})["by_n"][str(int(n))] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[600])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--preset", default="quick")
    ap.add_argument(
        "--kind", choices=("forest", "ensemble"), help="registered architecture (default: preset's)"
    )
    ap.add_argument("--cv-folds", type=int, help="validation folds (default: the preset's)")
    ap.add_argument("--cv-repeats", type=int, help="validation repeats (default: the preset's)")
    ap.add_argument(
        "--stratify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stratified validation folds (default: the preset's)",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--summary", action="store_true")
    ap.add_argument(
        "--record",
        type=Path,
        help="with --summary: write the coverage record (training/validation_coverage.json)",
    )
    args = ap.parse_args()
    if args.summary:
        with pd.option_context("display.width", 250, "display.max_columns", 30):
            print(summary(args.out).round(4).T.to_string())
        if args.record:
            args.record.write_text(json.dumps(coverage_record(args.out), indent=1) + "\n")
            print(f"wrote {args.record}")
        return
    cfg = bench_config(
        args.preset, args.workers, args.kind, args.cv_folds, args.cv_repeats, args.stratify
    )
    done = done_runs(args.out)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for n in args.n:
            if (cfg.name, n, seed) in done:
                continue
            rows = one_run(n, seed, cfg, args.workers)
            append(args.out, rows)
            print(
                f"n={n} seed={seed} "
                + " ".join(
                    f"{r['endpoint'][:8]}: AUC {r['auc_validated']:.3f} "
                    f"[{r['auc_lo']:.3f},{r['auc_hi']:.3f}] real {r['auc_real']:.3f}"
                    for r in rows
                )
                + f" ({rows[0]['seconds']:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
