"""Real competing-risk data: CompetingRiskForest against riskRegression's CSC and FGR.

Issue 4, part 5. Reads what ``export_and_fit_r.R`` wrote to ``benchmarks/real_data/data/`` (the
data sets as numeric design matrices, 20 seeded 70/30 splits, the R models' predicted
cumulative incidences on each test split), fits the forest on the same training splits and
scores every model on the same test splits with the project's metric code (``auc_cr``,
``brier_cr``), per data set, cause and horizon.

Reported: mean AUC and Brier per model over the splits; and, per horizon, the mean paired
difference forest - best R model (the R model with the higher mean AUC at that horizon), with a
95 % t-interval over the splits. Splits share most of their patients, so the interval is only
indicative (it ignores the overlap; Nadeau & Bengio's correction would widen it).

Rerun (after the R script)::

    Rscript benchmarks/real_data/export_and_fit_r.R
    PYTHONPATH=. .venv/bin/python benchmarks/real_data/score_real_data.py

Forest variants beyond the defaults: ``--variant 'leaf5={"min_samples_leaf": 5}'``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from models.forest import CompetingRiskForest
from training.metrics import auc_cr, brier_cr

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
RESULTS_DIR = HERE.parent / "results"
DATASETS = ("colon", "melanoma")
R_MODELS = ("csc", "fgr")
FOREST = "forest"
N_CAUSES = 2
N_JOBS = 2
SEED = 0
GRID_STEP_MONTHS = 1.0
CONFIDENCE = 0.95
AUC_TARGET_GAP = 0.02
"""Target: the forest's mean AUC within 0.02 of the better R model's, at each horizon."""


def load(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(DATA_DIR / f"{name}.csv"), pd.read_csv(DATA_DIR / f"{name}_splits.csv")


def score_all(variants: dict[str, dict], causes: list[int]) -> pd.DataFrame:
    r_pred = pd.read_csv(DATA_DIR / "r_predictions.csv.gz")
    risk_cols = [c for c in r_pred.columns if c.startswith("risk_")]
    horizons = [float(c.removeprefix("risk_")) for c in risk_cols]
    grid_max = float(np.ceil(max(horizons)))
    rows = []
    for name in DATASETS:
        d, splits = load(name)
        X = d.drop(columns=["time", "status"]).to_numpy(dtype=float)
        y = np.empty(len(d), dtype=[("event", np.int64), ("time", float)])
        y["event"], y["time"] = d["status"].to_numpy(int), d["time"].to_numpy(float)
        for s, col in enumerate(splits.columns, start=1):
            train = splits[col].to_numpy() == 1
            test_rows = np.flatnonzero(~train)
            t, e = y["time"][test_rows], y["event"][test_rows]
            for cause in causes:
                preds: dict[str, np.ndarray] = {}
                sub = r_pred[
                    (r_pred.dataset == name) & (r_pred.split == s) & (r_pred.cause == cause)
                ]
                for model in R_MODELS:
                    m = sub[sub.model == model].set_index("row").loc[test_rows, risk_cols]
                    preds[model] = m.to_numpy(dtype=float)
                for vname, params in {FOREST: {}, **variants}.items():
                    label = FOREST if vname == FOREST else f"{FOREST}[{vname}]"
                    forest = CompetingRiskForest(
                        cause=cause,
                        n_causes=N_CAUSES,
                        time_grid_max=grid_max,
                        time_grid_step=GRID_STEP_MONTHS,
                        n_jobs=N_JOBS,
                        random_state=SEED + s,
                        **params,
                    ).fit(X[train], y[train])
                    preds[label] = forest.predict_cif(X[test_rows], times=horizons)[:, cause - 1]
                for model, p in preds.items():
                    for j, h in enumerate(horizons):
                        risk = p[:, j]
                        ok = np.all(np.isfinite(risk))
                        rows.append(
                            {
                                "dataset": name,
                                "split": s,
                                "cause": cause,
                                "model": model,
                                "horizon": h,
                                "n_cases": int(np.sum((t <= h) & (e == cause))),
                                "auc": auc_cr(t, e, risk, cause, h) if ok else np.nan,
                                "brier": brier_cr(t, e, np.clip(risk, 0, 1), cause, h)
                                if ok
                                else np.nan,
                            }
                        )
            print(f"[{time.strftime('%H:%M:%S')}] {name} split {s} done", flush=True)
    return pd.DataFrame(rows)


def _t_interval(x: np.ndarray) -> tuple[float, float, float]:
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float(np.mean(x)) if x.size else np.nan, np.nan, np.nan
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def summarise(res: pd.DataFrame) -> str:
    lines = []
    forests = [m for m in res.model.unique() if m.startswith(FOREST)]
    for (name, cause), g in res.groupby(["dataset", "cause"], sort=False):
        n_splits = g.split.nunique()
        lines.append(f"\n#### {name}, cause {cause} ({n_splits} splits; mean over splits)\n")
        head = (
            "| horizon (months) | cases/test split | "
            + " | ".join(f"AUC {m}" for m in [*R_MODELS, *forests])
            + " | best R | forest − best R, AUC (95 % CI) | within 0.02 | "
            + " | ".join(f"Brier {m}" for m in [*R_MODELS, FOREST])
            + " |"
        )
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for h, gh in g.groupby("horizon"):
            auc = gh.pivot(index="split", columns="model", values="auc")
            brier = gh.pivot(index="split", columns="model", values="brier")
            best = max(R_MODELS, key=lambda m: np.nanmean(auc[m]))
            mean, lo, hi = _t_interval((auc[FOREST] - auc[best]).to_numpy())
            ok = "yes" if mean >= -AUC_TARGET_GAP else "**no**"
            cells = [f"{np.nanmean(auc[m]):.3f}" for m in [*R_MODELS, *forests]]
            bcells = [f"{np.nanmean(brier[m]):.4f}" for m in [*R_MODELS, FOREST]]
            lines.append(
                f"| {h:g} | {gh.loc[gh.model == FOREST, 'n_cases'].mean():.1f} | "
                + " | ".join(cells)
                + f" | {best} | {mean:+.3f} ({lo:+.3f}, {hi:+.3f}) | {ok} | "
                + " | ".join(bcells)
                + " |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help='extra forest: name=JSON params, e.g. leaf5={"min_samples_leaf": 5}',
    )
    p.add_argument("--causes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "real_data_scores.csv")
    p.add_argument("--summary-only", action="store_true")
    args = p.parse_args()
    variants = {}
    for spec in args.variant:
        vname, _, params = spec.partition("=")
        variants[vname] = json.loads(params)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.summary_only:
        res = pd.read_csv(args.out)
    else:
        res = score_all(variants, args.causes)
        res.to_csv(args.out, index=False)
    text = summarise(res)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
