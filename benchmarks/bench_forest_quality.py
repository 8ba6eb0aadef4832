"""Synthetic-cohort quality of the competing-risks forest against the baselines and the truth.

Issue 4, part 5. For each cohort mix, training size and seed, every model is fit on a synthetic
training cohort and scored on one large test cohort drawn from a different seed, per endpoint
(mucosal necrosis, fatal haemorrhage) and horizon (6, 12, 24, 36 months), with the project's own
metric code (``training.metrics``):

- AUC (``auc_cr``, Blanche et al.'s competing-risk AUC), Brier (``brier_cr``), ICI
  (``calibration_cr(...).ici``) at each horizon;
- integrated Brier score over months 1..``--ibs-max`` (``integrated_brier_cr``);
- the mean absolute error of the predicted against the true CIF (``true_cif``), which only a
  simulation can give.

The oracle is the true CIF itself: its AUC and Brier are the ceiling the finite test set allows,
its ICI the calibration noise of the metric on this test set.

Mixes: ``modern`` (``twice_daily_share=0.2``: what the product trains on) and ``default``
(the reference cohort's all-once-daily mix). Raw results go to a CSV (one row per mix, n, seed,
endpoint, model, horizon); a markdown summary (mean +- sd over seeds) is printed and saved.

Rerun (about 15 min on 2 shared cores)::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_forest_quality.py \
        --seeds 0 1 2 3 4 --train-n 184 500 2000 --mix modern default

Forest variants (settings other than the defaults) are added with ``--variant``, e.g.
``--variant 'leaf30={"min_samples_leaf": 30}'``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.config import ENDPOINTS, EVENT_OF_INTEREST, HORIZONS_MONTHS
from features.pipeline import build_features, encode_endpoint
from features.synthetic import simulate_cohort, true_cif
from features.synthetic_params import DEFAULT_PARAMS, with_overrides
from models.baselines import CauseSpecificCox, CauseSpecificXGB, PublishedRule
from models.forest import CompetingRiskForest
from training.metrics import auc_cr, brier_cr, calibration_cr, integrated_brier_cr

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIXES: dict[str, dict[str, float]] = {"modern": {"twice_daily_share": 0.2}, "default": {}}
TEST_SEED = 10_000
"""Test cohorts come from this seed: disjoint from the training seeds (0, 1, 2, ...)."""
TEST_N = 5000
IBS_MAX_MONTHS = 36
"""The integrated Brier score runs over months 1..36, the span of the reported horizons."""
N_JOBS = 2
ORACLE = "oracle"
FOREST = "forest"


def make_models(seed: int, variants: dict[str, dict]) -> dict[str, object]:
    """Fresh, seeded models: the forest (defaults), its variants, and the baselines."""
    models: dict[str, object] = {FOREST: CompetingRiskForest(n_jobs=N_JOBS, random_state=seed)}
    for name, params in variants.items():
        models[f"{FOREST}[{name}]"] = CompetingRiskForest(
            n_jobs=N_JOBS, random_state=seed, **params
        )
    models["cs_cox"] = CauseSpecificCox()
    models["cs_xgb"] = CauseSpecificXGB(random_state=seed)
    models["published_rule"] = PublishedRule()
    return models


def score(
    y_test: np.ndarray,
    cif: np.ndarray,
    truth: np.ndarray,
    months: np.ndarray,
    horizons: tuple[int, ...],
) -> list[dict]:
    """Metrics of one model's CIF matrix (n_test, len(months)) on one endpoint."""
    t, e = y_test["time"], y_test["event"]
    ibs = integrated_brier_cr(t, e, cif, EVENT_OF_INTEREST, months)
    mae_all = float(np.mean(np.abs(cif - truth)))
    rows = []
    for h in horizons:
        j = int(np.searchsorted(months, h))
        risk = np.clip(cif[:, j], 0.0, 1.0)
        cal = calibration_cr(t, e, risk, EVENT_OF_INTEREST, h)
        rows.append(
            {
                "horizon": h,
                "auc": auc_cr(t, e, risk, EVENT_OF_INTEREST, h),
                "brier": brier_cr(t, e, risk, EVENT_OF_INTEREST, h),
                "ici": cal.ici,
                "calib_slope": cal.slope,
                "mae_true": float(np.mean(np.abs(risk - truth[:, j]))),
                "mean_risk": float(risk.mean()),
                "mean_true": float(truth[:, j].mean()),
                "ibs": ibs,
                "mae_true_1_to_max": mae_all,
            }
        )
    return rows


def run(args: argparse.Namespace) -> pd.DataFrame:
    variants = {k: v for k, v in (_parse_variant(s) for s in args.variant)}
    months = np.arange(1, args.ibs_max + 1, dtype=float)
    horizons = tuple(args.horizons)
    rows: list[dict] = []
    for mix in args.mix:
        overrides = MIXES[mix]
        params = with_overrides(DEFAULT_PARAMS, **overrides) if overrides else DEFAULT_PARAMS
        test = simulate_cohort(args.test_n, args.test_seed, **overrides)
        X_test = build_features(test)
        truths = {ep: true_cif(test, ep, months, params=params) for ep in ENDPOINTS}
        y_tests = {ep: encode_endpoint(test, ep) for ep in ENDPOINTS}
        for ep in ENDPOINTS:
            for r in score(y_tests[ep], truths[ep], truths[ep], months, horizons):
                rows.append(
                    {
                        "mix": mix,
                        "n_train": 0,
                        "seed": -1,
                        "endpoint": ep,
                        "model": ORACLE,
                        "fit_s": 0.0,
                        **r,
                    }
                )
        for n in args.train_n:
            for seed in args.seeds:
                train = simulate_cohort(n, seed, **overrides)
                X = build_features(train)
                for ep in ENDPOINTS:
                    y = encode_endpoint(train, ep)
                    for name, model in make_models(seed, variants).items():
                        t0 = time.perf_counter()
                        model.fit(X, y)
                        fit_s = time.perf_counter() - t0
                        cif = model.predict_cif(X_test, times=months)[:, EVENT_OF_INTEREST - 1]
                        for r in score(y_tests[ep], cif, truths[ep], months, horizons):
                            rows.append(
                                {
                                    "mix": mix,
                                    "n_train": n,
                                    "seed": seed,
                                    "endpoint": ep,
                                    "model": name,
                                    "fit_s": fit_s,
                                    **r,
                                }
                            )
                    print(
                        f"[{time.strftime('%H:%M:%S')}] {mix} n={n} seed={seed} {ep} done",
                        flush=True,
                    )
                # checkpoint after every training cohort: a long run can be read while it goes
                pd.DataFrame(rows).to_csv(args.out, index=False)
    out = pd.DataFrame(rows)
    out.to_csv(args.out, index=False)
    return out


def _parse_variant(spec: str) -> tuple[str, dict]:
    name, _, params = spec.partition("=")
    return name, json.loads(params)


def _mean_sd(x: pd.Series, digits: int = 3) -> str:
    if x.size <= 1 or np.isnan(x.std()):
        return f"{x.mean():.{digits}f}"
    return f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f}"


def summarise(res: pd.DataFrame, metrics=("auc", "brier", "ici", "mae_true")) -> str:
    """Markdown: per mix and endpoint, one table per metric (rows n x model, columns horizons)."""
    lines: list[str] = []
    n_seeds = res.loc[res.model != ORACLE, "seed"].nunique()
    for mix in res["mix"].unique():
        for ep in res["endpoint"].unique():
            sub = res[(res.mix == mix) & (res.endpoint == ep)]
            lines.append(f"\n#### {mix} mix, {ep} (mean ± sd over {n_seeds} seeds)\n")
            horizons = sorted(sub["horizon"].unique())
            head = (
                "| n | model | "
                + " | ".join(f"{m} {h}m" for m in metrics for h in horizons)
                + " | IBS |"
            )
            lines += [head, "|" + "---|" * (3 + len(metrics) * len(horizons))]
            for (n, model), g in sub.groupby(["n_train", "model"], sort=True):
                cells = [_mean_sd(g.loc[g.horizon == h, m]) for m in metrics for h in horizons]
                ibs = _mean_sd(g.loc[g.horizon == horizons[0], "ibs"], 4)
                label = "—" if model == ORACLE else str(n)
                lines.append(f"| {label} | {model} | " + " | ".join(cells) + f" | {ibs} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-n", type=int, nargs="+", default=[184, 500, 2000])
    p.add_argument("--test-n", type=int, default=TEST_N)
    p.add_argument("--test-seed", type=int, default=TEST_SEED)
    p.add_argument("--mix", nargs="+", choices=sorted(MIXES), default=["modern", "default"])
    p.add_argument("--horizons", type=int, nargs="+", default=list(HORIZONS_MONTHS))
    p.add_argument("--ibs-max", type=int, default=IBS_MAX_MONTHS)
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help='extra forest: name=JSON params, e.g. leaf30={"min_samples_leaf": 30}',
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "forest_quality.csv")
    p.add_argument("--summary-only", action="store_true", help="re-summarise --out, no fitting")
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    res = pd.read_csv(args.out) if args.summary_only else run(args)
    text = summarise(res)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
