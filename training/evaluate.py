"""Bootstrap optimism-corrected evaluation of the forest and its baselines (Harrell's method).

apparent = performance of the models fitted on the development data, on those data;
for each replicate b: refit *everything* (tuning included) on a bootstrap sample, and
optimism_b = performance on the sample - performance on the original data;
corrected = apparent - mean_b optimism_b.

Each replicate is one engine task with its own seed, and also returns its forest's risks on
the original patients (the prediction-instability plot) and subgroup metrics. Baselines are
fitted and scored exactly like the forest, so their numbers sit beside it on equal terms.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.config import ENDPOINTS, EVENT_OF_INTEREST
from training.config import TrainConfig
from training.data import Cohort
from training.engine import Engine, LocalEngine, task_seed
from training.metrics import auc_cr, brier_cr, calibration_cr, cumulative_incidence
from training.tune import N_CAUSES, fit_forests, tune

FOREST = "forest"
BOOT_SEED_TAG = 3
BASELINE_SEED_TAG = 4
CALIBRATION_KEYS = ("ici", "e50", "e90", "slope", "citl")
SUBGROUP_COLUMNS = ("rt_stage", "sex", "age_band")
METRIC_SEP = "/"


# ------------------------------------------------------------------------------ models
def make_baseline(name: str, config: TrainConfig, seed: int) -> Any:
    """A fresh, unfitted baseline with the config's parameters and a seed."""
    from models import baselines

    cls = {
        "cox": baselines.CauseSpecificCox,
        "xgb": baselines.CauseSpecificXGB,
        "published_rule": baselines.PublishedRule,
    }[name]
    model = cls()
    wanted: dict[str, Any] = {
        "cause": EVENT_OF_INTEREST,
        "n_causes": N_CAUSES,
        "random_state": seed,
        "n_jobs": 1,
        **config.baselines.params.get(name, {}),
    }
    known = model.get_params()
    return model.set_params(**{k: v for k, v in wanted.items() if k in known})


def fit_all(
    X: pd.DataFrame,
    y: dict[str, np.ndarray],
    groups: np.ndarray,
    config: TrainConfig,
    seed: int,
    engine: Engine | None = None,
    n_jobs: int = 1,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every modelling step: tune and fit the forests, fit the baselines.

    Returns ``(models[model][endpoint], tuned[endpoint])``.
    """
    tuned = tune(X, y, groups, config, seed, engine)
    models: dict[str, dict[str, Any]] = {FOREST: fit_forests(X, y, tuned, config, seed, n_jobs)}
    for bi, name in enumerate(config.baselines.models):
        models[name] = {}
        for ei, e in enumerate(ENDPOINTS):
            model = make_baseline(name, config, task_seed(seed, BASELINE_SEED_TAG, bi, ei))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                models[name][e] = model.fit(X, y[e])
    return models, tuned


def predict_horizons(model: Any, X: pd.DataFrame, horizons: np.ndarray) -> np.ndarray:
    """CIF of the event of interest at each horizon, (n, H), clipped to [0, 1]."""
    cif = model.predict_cif(X, horizons)[:, EVENT_OF_INTEREST - 1, :]
    return np.clip(np.nan_to_num(cif, nan=0.0), 0.0, 1.0)


# ----------------------------------------------------------------------------- metrics
def _key(*parts: object) -> str:
    return METRIC_SEP.join(str(p) for p in parts)


def score_risks(y: np.ndarray, risks: np.ndarray, horizons: np.ndarray) -> dict[str, float]:
    """AUC, Brier and calibration of one endpoint's risks (n, H) at each horizon."""
    out: dict[str, float] = {}
    t, e = y["time"], y["event"]
    for j, h in enumerate(horizons):
        r = risks[:, j]
        tag = f"{h:g}m"
        out[f"auc_{tag}"] = auc_cr(t, e, r, EVENT_OF_INTEREST, h)
        out[f"brier_{tag}"] = brier_cr(t, e, r, EVENT_OF_INTEREST, h)
        try:
            cal = calibration_cr(t, e, r, EVENT_OF_INTEREST, h)
            for k in CALIBRATION_KEYS:
                out[f"{k}_{tag}"] = float(getattr(cal, k))
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            for k in CALIBRATION_KEYS:
                out[f"{k}_{tag}"] = float("nan")
    return out


def score_models(
    models: dict[str, dict[str, Any]], X: pd.DataFrame, y: dict[str, np.ndarray], horizons
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Flat metrics ``model/endpoint/metric_Hm`` and the forest's risks per endpoint."""
    out: dict[str, float] = {}
    forest_risks: dict[str, np.ndarray] = {}
    for name, per_endpoint in models.items():
        for e, model in per_endpoint.items():
            risks = predict_horizons(model, X, horizons)
            if name == FOREST:
                forest_risks[e] = risks
            for k, v in score_risks(y[e], risks, horizons).items():
                out[_key(name, e, k)] = v
    return out, forest_risks


def subgroup_labels(records: pd.DataFrame, config: TrainConfig) -> pd.DataFrame:
    """rT stage, sex and age band of each patient (strings)."""
    edges = list(config.evaluation.age_band_edges)
    bounds = [-np.inf, *edges, np.inf]
    names = [f"under{edges[0]:g}"]  # MLflow metric names allow no '<' or '>'
    names += [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    names += [f"{edges[-1]:g}plus"]
    band = pd.cut(records["age_years"].astype(float), bounds, right=False, labels=names)
    return pd.DataFrame(
        {
            "rt_stage": records["rt_stage"].astype(str).to_numpy(),
            "sex": records["sex"].astype(str).to_numpy(),
            "age_band": band.astype(str).to_numpy(),
        }
    )


def score_subgroups(
    y: dict[str, np.ndarray],
    risks: dict[str, np.ndarray],
    labels: pd.DataFrame,
    horizon_index: int,
    horizon: float,
    min_size: int,
) -> dict[str, float]:
    """Forest AUC, Brier, observed (Aalen-Johansen) and expected risk per subgroup."""
    out: dict[str, float] = {}
    for col in SUBGROUP_COLUMNS:
        for level in sorted(pd.unique(labels[col])):
            mask = (labels[col] == level).to_numpy()
            for e in ENDPOINTS:
                base = _key(col, level, e)
                yy, r = y[e][mask], risks[e][mask, horizon_index]
                out[_key(base, "n")] = float(mask.sum())
                out[_key(base, "events")] = float(
                    np.sum((yy["event"] == EVENT_OF_INTEREST) & (yy["time"] <= horizon))
                )
                if mask.sum() < min_size:
                    continue
                out[_key(base, "auc")] = auc_cr(
                    yy["time"], yy["event"], r, EVENT_OF_INTEREST, horizon
                )
                out[_key(base, "brier")] = brier_cr(
                    yy["time"], yy["event"], r, EVENT_OF_INTEREST, horizon
                )
                out[_key(base, "observed")] = float(
                    cumulative_incidence(yy["time"], yy["event"], EVENT_OF_INTEREST, [horizon])[0]
                )
                out[_key(base, "expected")] = float(np.mean(r))
    return out


# ---------------------------------------------------------------------------- bootstrap
@dataclass(frozen=True)
class EvalData:
    """What every bootstrap task reads (sent once to each worker)."""

    X: pd.DataFrame
    y: dict[str, np.ndarray]
    labels: pd.DataFrame
    config: TrainConfig
    horizons: np.ndarray


@dataclass
class Replicate:
    optimism: dict[str, float]
    subgroup_optimism: dict[str, float]
    risks_on_original: dict[str, np.ndarray]
    tuned: dict[str, dict[str, Any]]


def _main_index(config: TrainConfig) -> int:
    return list(config.evaluation.horizons_months).index(config.gate.horizon_months)


def bootstrap_task(data: EvalData, b: int, seed: int) -> Replicate:
    """One replicate: resample patients, redo every step, score on the sample and the original."""
    n = data.X.shape[0]
    idx = np.random.default_rng(seed).integers(0, n, size=n)
    yb = {e: data.y[e][idx] for e in ENDPOINTS}
    Xb = data.X.iloc[idx].reset_index(drop=True)
    models, tuned = fit_all(Xb, yb, idx, data.config, seed, engine=None, n_jobs=1)
    boot, boot_risks = score_models(models, Xb, yb, data.horizons)
    orig, orig_risks = score_models(models, data.X, data.y, data.horizons)
    h = _main_index(data.config)
    horizon = float(data.config.gate.horizon_months)
    min_size = data.config.evaluation.min_subgroup_size
    sb = score_subgroups(
        yb, boot_risks, data.labels.iloc[idx].reset_index(drop=True), h, horizon, min_size
    )
    so = score_subgroups(data.y, orig_risks, data.labels, h, horizon, min_size)
    return Replicate(
        optimism={k: boot[k] - orig[k] for k in orig},
        subgroup_optimism={k: sb[k] - so[k] for k in so if k in sb},
        risks_on_original={e: orig_risks[e][:, h] for e in ENDPOINTS},
        tuned=tuned,
    )


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.nanmean(arr)) if np.any(np.isfinite(arr)) else float("nan")


@dataclass
class Evaluation:
    """The development-data evaluation: final models, apparent and corrected metrics."""

    models: dict[str, dict[str, Any]]
    tuned: dict[str, dict[str, Any]]
    horizons: np.ndarray
    apparent: dict[str, float]
    optimism: dict[str, float]
    corrected: dict[str, float]
    subgroups_apparent: dict[str, float]
    subgroups_corrected: dict[str, float]
    apparent_risks: dict[str, dict[str, np.ndarray]]
    """model -> endpoint -> (n, H) risks on the development data."""
    bootstrap_risks: dict[str, np.ndarray]
    """endpoint -> (B, n) forest risks at the main horizon from each replicate's models."""
    n_bootstrap: int
    main_horizon: float
    tuning_choices: dict[str, list[str]] = field(default_factory=dict)

    def metric(self, kind: str, model: str, endpoint: str, name: str) -> float:
        return float(getattr(self, kind)[_key(model, endpoint, name)])

    def instability(self) -> dict[str, float]:
        """Mean absolute difference between replicate and final forest risks (Riley & Collins)."""
        h = list(self.horizons).index(self.main_horizon)
        out = {}
        for e, boot in self.bootstrap_risks.items():
            final = self.apparent_risks[FOREST][e][:, h]
            out[e] = float(np.mean(np.abs(boot - final[None, :])))
        return out


def evaluate(
    dev: Cohort, config: TrainConfig, engine: Engine | None = None, n_jobs: int = 1
) -> Evaluation:
    """Fit the final models on ``dev`` and estimate their optimism-corrected performance."""
    engine = engine or LocalEngine(1, progress=False)
    X = dev.X.reset_index(drop=True)
    groups = np.arange(X.shape[0])
    horizons = np.asarray(config.evaluation.horizons_months, dtype=float)
    models, tuned = fit_all(X, dev.y, groups, config, config.seed, engine=engine, n_jobs=n_jobs)
    apparent, forest_risks = score_models(models, X, dev.y, horizons)
    labels = subgroup_labels(dev.records, config)
    h = _main_index(config)
    sub_app = score_subgroups(
        dev.y,
        forest_risks,
        labels,
        h,
        float(config.gate.horizon_months),
        config.evaluation.min_subgroup_size,
    )
    data = EvalData(X, dev.y, labels, config, horizons)
    tasks = [
        (b, task_seed(config.seed, BOOT_SEED_TAG, b)) for b in range(config.evaluation.n_bootstrap)
    ]
    reps: list[Replicate] = engine.map(bootstrap_task, data, tasks, desc="bootstrap")
    optimism = {k: _nanmean([r.optimism.get(k, np.nan) for r in reps]) for k in apparent}
    corrected = {k: apparent[k] - optimism[k] for k in apparent}
    sub_opt = {k: _nanmean([r.subgroup_optimism.get(k, np.nan) for r in reps]) for k in sub_app}
    sub_cor = {
        k: (sub_app[k] - sub_opt[k])
        if k.rsplit(METRIC_SEP, 1)[-1] in ("auc", "brier")
        else sub_app[k]
        for k in sub_app
    }
    apparent_risks = {
        name: {e: predict_horizons(m, X, horizons) for e, m in per.items()}
        for name, per in models.items()
    }
    choices = {e: [repr(sorted(r.tuned[e]["params"].items())) for r in reps] for e in ENDPOINTS}
    ev = Evaluation(
        models=models,
        tuned=tuned,
        horizons=horizons,
        apparent=apparent,
        optimism=optimism,
        corrected=corrected,
        subgroups_apparent=sub_app,
        subgroups_corrected=sub_cor,
        apparent_risks=apparent_risks,
        bootstrap_risks={e: np.stack([r.risks_on_original[e] for r in reps]) for e in ENDPOINTS},
        n_bootstrap=len(reps),
        main_horizon=float(config.gate.horizon_months),
        tuning_choices=choices,
    )
    return ev


def holdout_scores(
    risk_by_endpoint: dict[str, np.ndarray], cohort: Cohort, horizon: float
) -> dict[str, float]:
    """AUC and Brier at ``horizon`` of given risks (n,) on the hold-out, per endpoint."""
    out: dict[str, float] = {}
    for e in ENDPOINTS:
        y = cohort.y[e]
        r = np.clip(np.asarray(risk_by_endpoint[e], dtype=float), 0.0, 1.0)
        if len(cohort) == 0:
            out[f"{e}/auc"] = out[f"{e}/brier"] = float("nan")
            continue
        out[f"{e}/auc"] = auc_cr(y["time"], y["event"], r, EVENT_OF_INTEREST, horizon)
        out[f"{e}/brier"] = brier_cr(y["time"], y["event"], r, EVENT_OF_INTEREST, horizon)
        out[f"{e}/events"] = float(
            np.sum((y["event"] == EVENT_OF_INTEREST) & (y["time"] <= horizon))
        )
    return out
