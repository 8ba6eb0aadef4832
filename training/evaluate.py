"""Validation of the registered model and its baselines by repeated K-fold cross-validation.

Every model is scored only on patients it never saw: the development rows are split into K
folds (by patient), R times with different seeds; for each fold *everything that learns*
(tuning, the fit, any ensemble weights) is redone on the other K-1 folds, and the fold's
patients get out-of-fold predictions. Each repeat's pooled out-of-fold predictions are scored
on all n patients; the validated figure is the mean over the R repeats. Every candidate (the
registered model and the baselines) is fitted and scored on the same folds.

A 95 % interval for each of the registered model's validated figures comes from a bootstrap
of patients over the pooled out-of-fold predictions (each replicate recomputes the metric,
IPCW weights and pseudo-values included), percentile method; its coverage of the real
performance is measured in benchmarks/bench_validation_truth.py. The ICI's percentile interval
is shifted by the bootstrap's bias estimate (Efron & Tibshirani 1993, ch. 10): ICI is a mean
absolute deviation, inflated by noise, and a resample of patients with replacement adds noise
again, so its replicates sit above the estimate (before this, an ICI of 0.009 came with an
interval of [0.012, 0.044]).

The optimism bootstrap used before (Harrell) scored each replicate's forest on the original
sample, about 63 % of which it had trained on; a forest nearly memorises its training
patients, so it underestimated the optimism about threefold (issue 9).
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
from training.metrics import (
    auc_cr,
    brier_cr,
    calibration_cr,
    cumulative_incidence,
    ici_and_slope_cr,
    ici_cr,
)
from training.model_factory import member_candidates
from training.tune import N_CAUSES, fit_forests, patient_folds, tune

REGISTERED = "registered"
"""The candidate that gets registered (key in ``Evaluation.models`` and the metric names:
``registered/<endpoint>/<metric>``), a forest or an ensemble; an ensemble's members are
``ensemble:<member>``; the rest are baselines."""
CV_SEED_TAG = 3
BASELINE_SEED_TAG = 4
INTERVAL_SEED_TAG = 5
INTERVAL_LEVEL = 0.95
INTERVAL_METRICS = ("auc", "brier", "ici", "slope")
MIN_FINITE_REPLICATES = 20
"""Fewer finite bootstrap replicates than this (no events in most draws): no interval."""
BIAS_SHIFTED = {"ici": 0.0}
"""Metrics whose percentile interval is shifted by the bootstrap bias estimate, with the
floor they cannot go below. ICI's bootstrap bias is of the order of its standard error (a
mean absolute deviation gains from every bit of noise), so its plain percentile interval can
miss its own estimate. AUC, Brier and the calibration slope are smooth in the data: their
bootstrap bias is small beside their spread (the slope's about a tenth of its standard
error, measured), so they keep the plain percentile interval, whose coverage of the real
figures is recorded in benchmarks/RESULTS.md, "Validated against real figures"."""
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


def fit_registered(
    X: pd.DataFrame,
    y: dict[str, np.ndarray],
    groups: np.ndarray,
    config: TrainConfig,
    seed: int,
    engine: Engine | None = None,
    n_jobs: int = 1,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The registered architecture, fitted per endpoint with everything it learns (tuning).

    The one place the registered model is built; cross-validation calls it inside each fold.
    Returns ``(model per endpoint, tuning record per endpoint)``.
    """
    tuned = tune(X, y, groups, config, seed, engine)
    return fit_forests(X, y, tuned, config, seed, n_jobs), tuned


def fit_all(
    X: pd.DataFrame,
    y: dict[str, np.ndarray],
    groups: np.ndarray,
    config: TrainConfig,
    seed: int,
    engine: Engine | None = None,
    n_jobs: int = 1,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every candidate: the registered model (tuned) and the baselines, on the same rows.

    Returns ``(models[model][endpoint], tuned[endpoint])``.
    """
    registered, tuned = fit_registered(X, y, groups, config, seed, engine, n_jobs)
    models: dict[str, dict[str, Any]] = {REGISTERED: registered}
    models.update(member_candidates(registered))  # an ensemble's members, at no extra fit
    for bi, name in enumerate(config.baselines.models):
        models[name] = {}
        for ei, e in enumerate(ENDPOINTS):
            model = make_baseline(name, config, task_seed(seed, BASELINE_SEED_TAG, bi, ei))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                models[name][e] = model.fit(X, y[e])
    return models, tuned


def predict_horizons(model: Any, X: pd.DataFrame, horizons: np.ndarray) -> np.ndarray:
    """CIF of the event of interest at each horizon, (n, H), clipped to [0, 1].

    An ensemble's members were fitted on the ensemble's array, without column names; they get
    the array too (scikit-learn warns, once per call, when names appear only at predict time).
    A model that never saw a matrix (the published rule reads columns by name) gets the frame.
    """
    fitted_on_array = hasattr(model, "n_features_in_") and not hasattr(model, "feature_names_in_")
    rows = np.asarray(X) if fitted_on_array else X
    cif = model.predict_cif(rows, horizons)[:, EVENT_OF_INTEREST - 1, :]
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
    """Flat metrics ``model/endpoint/metric_Hm`` and the registered model's risks per endpoint."""
    out: dict[str, float] = {}
    registered_risks: dict[str, np.ndarray] = {}
    for name, per_endpoint in models.items():
        for e, model in per_endpoint.items():
            risks = predict_horizons(model, X, horizons)
            if name == REGISTERED:
                registered_risks[e] = risks
            for k, v in score_risks(y[e], risks, horizons).items():
                out[_key(name, e, k)] = v
    return out, registered_risks


def _main_index(config: TrainConfig) -> int:
    return list(config.evaluation.horizons_months).index(config.gate.horizon_months)


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


# ------------------------------------------------------------------------- cross-validation
@dataclass(frozen=True)
class EvalData:
    """What every fold task reads (sent once to each worker)."""

    X: pd.DataFrame
    y: dict[str, np.ndarray]
    folds: np.ndarray
    """(R, n): the fold of each patient in each repeat."""
    config: TrainConfig
    horizons: np.ndarray


@dataclass
class FoldResult:
    """One fold's out-of-fold risks per model and endpoint, and its tuning choice."""

    test: np.ndarray
    risks: dict[str, dict[str, np.ndarray]]
    """model -> endpoint -> (n_test, H)."""
    tuned: dict[str, dict[str, Any]]


def fold_task(data: EvalData, repeat: int, fold: int, seed: int) -> FoldResult:
    """Fit every candidate (tuning included) without fold ``fold`` of ``repeat``; predict it."""
    test = np.flatnonzero(data.folds[repeat] == fold)
    train = np.flatnonzero(data.folds[repeat] != fold)
    Xtr = data.X.iloc[train].reset_index(drop=True)
    ytr = {e: data.y[e][train] for e in ENDPOINTS}
    models, tuned = fit_all(Xtr, ytr, train, data.config, seed, engine=None, n_jobs=1)
    Xte = data.X.iloc[test].reset_index(drop=True)
    risks = {
        name: {e: predict_horizons(m, Xte, data.horizons) for e, m in per.items()}
        for name, per in models.items()
    }
    return FoldResult(test, risks, tuned)


def outcome_strata(y: dict[str, np.ndarray]) -> np.ndarray:
    """One stratum per combination of "had the event of interest" over the endpoints (4 here).

    Why stratify: with pooled out-of-fold predictions, a fold that happens to hold more events
    leaves fewer in its training set, so its model predicts lower risks exactly for the fold
    with more cases; pooling then ranks cases of such folds too low and the pooled AUC is
    pessimistic (Parker et al. 2007; Forman & Scholz 2010). Equal event shares in every fold
    remove that anti-correlation.
    """
    label = np.zeros(len(next(iter(y.values()))), dtype=int)
    for i, e in enumerate(ENDPOINTS):
        label += (np.asarray(y[e]["event"]) == EVENT_OF_INTEREST).astype(int) << i
    return label


def cv_folds(y: dict[str, np.ndarray], config: TrainConfig) -> np.ndarray:
    """(R, n) fold numbers: one split into K folds per repeat, seeded; one row per patient.

    Stratified by :func:`outcome_strata` (scikit-learn's ``StratifiedKFold``) unless the
    configuration says ``stratify = false`` or no stratum has K patients; a stratum smaller
    than K is spread as evenly as it can be.
    """
    from sklearn.model_selection import StratifiedKFold

    ev = config.evaluation
    seeds = [task_seed(config.seed, CV_SEED_TAG, r) for r in range(ev.cv_repeats)]
    strata = outcome_strata(y)
    n = strata.size
    if not ev.stratify or np.bincount(strata).max() < ev.cv_folds:
        # unstratified, or too few patients in every stratum for StratifiedKFold
        return np.stack([patient_folds(np.arange(n), ev.cv_folds, s) for s in seeds])
    out = np.empty((len(seeds), n), dtype=int)
    for r, s in enumerate(seeds):
        splitter = StratifiedKFold(ev.cv_folds, shuffle=True, random_state=s % 2**32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "the least populated class has only m members"
            for k, (_, test) in enumerate(splitter.split(np.zeros(n), strata)):
                out[r, test] = k
    return out


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.nanmean(arr)) if np.any(np.isfinite(arr)) else float("nan")


def _mean_over_repeats(y: np.ndarray, risks: np.ndarray, horizons: np.ndarray) -> dict[str, float]:
    """Score each repeat's pooled out-of-fold risks (R, n, H) and average over repeats."""
    per = [score_risks(y, risks[r], horizons) for r in range(risks.shape[0])]
    return {k: _nanmean([p[k] for p in per]) for k in per[0]}


def _interval_metrics(
    y: np.ndarray, risks: np.ndarray, horizon: float, metrics: tuple[str, ...]
) -> dict[str, float]:
    """The interval's metrics of (R, n) risks at one horizon, averaged over repeats."""
    t, e = y["time"], y["event"]
    vals: dict[str, list[float]] = {m: [] for m in metrics}
    calibration = "ici" in metrics or "slope" in metrics
    for r in risks:
        if "auc" in metrics:
            vals["auc"].append(auc_cr(t, e, r, EVENT_OF_INTEREST, horizon))
        if "brier" in metrics:
            vals["brier"].append(brier_cr(t, e, r, EVENT_OF_INTEREST, horizon))
        if calibration:
            try:
                if "slope" in metrics:
                    ici, slope = ici_and_slope_cr(t, e, r, EVENT_OF_INTEREST, horizon)
                else:
                    ici, slope = ici_cr(t, e, r, EVENT_OF_INTEREST, horizon), float("nan")
            except (ValueError, FloatingPointError, np.linalg.LinAlgError):
                ici = slope = float("nan")
            for m, v in (("ici", ici), ("slope", slope)):
                if m in metrics:
                    vals[m].append(v)
    return {m: _nanmean(v) for m, v in vals.items()}


@dataclass(frozen=True)
class IntervalData:
    """What each endpoint's bootstrap task reads."""

    y: dict[str, np.ndarray]
    oof: dict[str, np.ndarray]
    horizons: np.ndarray
    n_boot: int
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class EndpointDraws:
    """One endpoint's bootstrap: the estimate on all patients and the B replicate values."""

    estimates: dict[str, float]
    """``metric_Hm`` -> the metric on the original patients (same code as the replicates)."""
    draws: dict[str, np.ndarray]
    """``metric_Hm`` -> the B replicate values."""


def _endpoint_bootstrap(data: IntervalData, endpoint: str, seed: int) -> EndpointDraws:
    """The estimate and the B replicate values of every ``metric_Hm`` of one endpoint."""
    risks = data.oof[endpoint]
    n = risks.shape[1]
    rng = np.random.default_rng(seed)

    def scores(idx: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        yb = data.y[endpoint][idx]
        for j, h in enumerate(data.horizons):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vals = _interval_metrics(yb, risks[:, idx, j], float(h), data.metrics)
            out.update({f"{m}_{h:g}m": v for m, v in vals.items()})
        return out

    estimates = scores(np.arange(n))
    draws: dict[str, list[float]] = {k: [] for k in estimates}
    for _ in range(data.n_boot):
        for k, v in scores(rng.integers(0, n, size=n)).items():
            draws[k].append(v)
    return EndpointDraws(estimates, {k: np.asarray(v, dtype=float) for k, v in draws.items()})


def bias_shifted_interval(
    draws: np.ndarray, estimate: float, level: float = INTERVAL_LEVEL, floor: float | None = None
) -> tuple[float, float]:
    """Percentile interval shifted down by the bootstrap bias estimate ``mean(draws) - estimate``.

    The bias-corrected percentile interval of Efron & Tibshirani (1993, section 10.6): the
    replicates spread as the estimate does, but around ``estimate + bias``; moving them back
    by the bias centres them on the estimate. It contains the estimate whenever the replicates'
    mean lies inside their own percentile interval (always, unless a few extreme replicates
    drag the mean past a 2.5 % tail); ``floor`` (0 for an ICI) clips both bounds from below.
    NaN bounds when fewer than ``MIN_FINITE_REPLICATES`` replicates are finite or the
    estimate is NaN.
    """
    arr = np.asarray(draws, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size < MIN_FINITE_REPLICATES or not np.isfinite(estimate):
        return float("nan"), float("nan")
    alpha = 100 * (1 - level) / 2
    bias = float(arr.mean()) - float(estimate)
    lo = float(np.percentile(arr, alpha)) - bias
    hi = float(np.percentile(arr, 100 - alpha)) - bias
    if floor is not None:
        lo, hi = max(lo, floor), max(hi, floor)
    return lo, hi


def percentile_interval(draws: np.ndarray, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """The plain percentile interval of the finite replicates (NaN when too few)."""
    arr = np.asarray(draws, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size < MIN_FINITE_REPLICATES:
        return float("nan"), float("nan")
    alpha = 100 * (1 - level) / 2
    return float(np.percentile(arr, alpha)), float(np.percentile(arr, 100 - alpha))


def bootstrap_intervals(
    y: dict[str, np.ndarray],
    oof: dict[str, np.ndarray],
    horizons: np.ndarray,
    n_boot: int,
    seed: int,
    level: float = INTERVAL_LEVEL,
    metrics: tuple[str, ...] = INTERVAL_METRICS,
    engine: Engine | None = None,
    sd_out: dict[str, float] | None = None,
    detail_out: dict[str, dict[str, float]] | None = None,
) -> dict[str, tuple[float, float]]:
    """95 % intervals of ``endpoint/metric_Hm`` from a bootstrap of patients.

    ``oof[endpoint]`` is (R, n, H); every replicate draws n patients with replacement and
    recomputes each metric on each repeat's pooled out-of-fold risks (mean over repeats).
    Percentile intervals, but for the metrics of ``BIAS_SHIFTED`` (the ICI), whose interval
    is shifted by the bootstrap bias (:func:`bias_shifted_interval`). One engine task per
    endpoint, each with its own seed. ``sd_out``, when given, receives the replicates'
    standard deviation of each figure (its bootstrap standard error); ``detail_out`` the
    estimate, the replicates' mean and the plain percentile bounds (for the benchmark that
    compares the two methods on the same draws).
    """
    engine = engine or LocalEngine(1, progress=False)
    data = IntervalData(y, oof, np.asarray(horizons, dtype=float), int(n_boot), tuple(metrics))
    tasks = [(e, task_seed(seed, i)) for i, e in enumerate(ENDPOINTS)]
    results: list[EndpointDraws] = engine.map(_endpoint_bootstrap, data, tasks, desc="intervals")
    out: dict[str, tuple[float, float]] = {}
    for (e, _), res in zip(tasks, results, strict=True):
        for k, arr in res.draws.items():
            finite = arr[np.isfinite(arr)]
            key = _key(e, k)
            if sd_out is not None:
                sd_out[key] = float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan")
            pct = percentile_interval(arr, level)
            metric = k.rsplit("_", 1)[0]
            if metric in BIAS_SHIFTED:
                out[key] = bias_shifted_interval(
                    arr, res.estimates[k], level, floor=BIAS_SHIFTED[metric]
                )
            else:
                out[key] = pct
            if detail_out is not None:
                detail_out[key] = {
                    "estimate": res.estimates[k],
                    "boot_mean": float(finite.mean()) if finite.size else float("nan"),
                    "pct_lo": pct[0],
                    "pct_hi": pct[1],
                }
    return out


def event_counts(y: dict[str, np.ndarray], horizons: np.ndarray) -> dict[str, float]:
    """``endpoint/n`` and ``endpoint/events_Hm``: what the validated figures rest on."""
    out: dict[str, float] = {}
    for e in ENDPOINTS:
        out[_key(e, "n")] = float(len(y[e]))
        for h in horizons:
            hit = (y[e]["event"] == EVENT_OF_INTEREST) & (y[e]["time"] <= h)
            out[_key(e, f"events_{h:g}m")] = float(hit.sum())
    return out


@dataclass
class Evaluation:
    """The development-data evaluation: final models, apparent and validated metrics."""

    models: dict[str, dict[str, Any]]
    tuned: dict[str, dict[str, Any]]
    horizons: np.ndarray
    apparent: dict[str, float]
    validated: dict[str, float]
    """``model/endpoint/metric_Hm``: pooled out-of-fold, mean over repeats."""
    intervals: dict[str, tuple[float, float]]
    """``endpoint/metric_Hm`` -> 95 % interval, for the registered model."""
    interval_sd: dict[str, float]
    """``endpoint/metric_Hm`` -> bootstrap standard error (the SD of the replicates)."""
    counts: dict[str, float]
    subgroups_apparent: dict[str, float]
    subgroups_validated: dict[str, float]
    apparent_risks: dict[str, dict[str, np.ndarray]]
    """model -> endpoint -> (n, H) risks on the development data."""
    oof_risks: dict[str, dict[str, np.ndarray]]
    """model -> endpoint -> (R, n, H) out-of-fold risks, one slice per repeat."""
    n_folds: int
    n_repeats: int
    n_interval_bootstrap: int
    main_horizon: float
    tuning_choices: dict[str, list[str]] = field(default_factory=dict)
    stratified: bool = False
    """Whether the folds were stratified by outcome (:func:`outcome_strata`)."""
    interval_detail: dict[str, dict[str, float]] = field(default_factory=dict)
    """``endpoint/metric_Hm`` -> the bootstrap's estimate, replicate mean and plain
    percentile bounds (what the interval was built from)."""

    def metric(self, kind: str, model: str, endpoint: str, name: str) -> float:
        return float(getattr(self, kind)[_key(model, endpoint, name)])

    @property
    def corrected(self) -> dict[str, float]:
        """The validated figures under their former name (the gate's inputs)."""
        return self.validated

    def registered(self, endpoint: str, name: str) -> tuple[float, float, float]:
        """(estimate, lo, hi) of the registered model's validated ``name`` (e.g. auc_24m)."""
        lo, hi = self.intervals.get(_key(endpoint, name), (float("nan"), float("nan")))
        return self.validated[_key(REGISTERED, endpoint, name)], lo, hi

    def instability(self) -> dict[str, float]:
        """Mean |out-of-fold - final| risk at the main horizon (Riley & Collins): how much a
        patient's prediction moves when the model is refitted without them."""
        h = list(self.horizons).index(self.main_horizon)
        out = {}
        for e, oof in self.oof_risks[REGISTERED].items():
            final = self.apparent_risks[REGISTERED][e][:, h]
            out[e] = float(np.mean(np.abs(oof[:, :, h] - final[None, :])))
        return out


def evaluate(
    dev: Cohort,
    config: TrainConfig,
    engine: Engine | None = None,
    n_jobs: int = 1,
    interval_metrics: tuple[str, ...] = INTERVAL_METRICS,
    interval_horizons: tuple[float, ...] | None = None,
) -> Evaluation:
    """Fit the final models on ``dev`` and validate them by repeated K-fold CV.

    ``interval_metrics`` / ``interval_horizons`` (None: all evaluated horizons) limit the
    intervals computed; the job computes them all, a benchmark only those it checks.
    """
    engine = engine or LocalEngine(1, progress=False)
    X = dev.X.reset_index(drop=True)
    n = X.shape[0]
    groups = np.arange(n)
    horizons = np.asarray(config.evaluation.horizons_months, dtype=float)
    models, tuned = fit_all(X, dev.y, groups, config, config.seed, engine=engine, n_jobs=n_jobs)
    apparent, registered_risks = score_models(models, X, dev.y, horizons)
    labels = subgroup_labels(dev.records, config)
    h = _main_index(config)
    horizon = float(config.gate.horizon_months)
    min_size = config.evaluation.min_subgroup_size
    sub_app = score_subgroups(dev.y, registered_risks, labels, h, horizon, min_size)

    folds = cv_folds(dev.y, config)
    data = EvalData(X, dev.y, folds, config, horizons)
    tasks = [
        (r, k, task_seed(config.seed, CV_SEED_TAG, r, k))
        for r in range(folds.shape[0])
        for k in range(config.evaluation.cv_folds)
    ]
    results: list[FoldResult] = engine.map(fold_task, data, tasks, desc="cross-validation")
    R = folds.shape[0]
    oof = {name: {e: np.full((R, n, len(horizons)), np.nan) for e in ENDPOINTS} for name in models}
    for (r, _, _), res in zip(tasks, results, strict=True):
        for name, per in res.risks.items():
            for e, risk in per.items():
                oof[name][e][r, res.test] = risk

    validated: dict[str, float] = {}
    for name in models:
        for e in ENDPOINTS:
            for k, v in _mean_over_repeats(dev.y[e], oof[name][e], horizons).items():
                validated[_key(name, e, k)] = v
    per_repeat = [
        score_subgroups(
            dev.y, {e: oof[REGISTERED][e][r] for e in ENDPOINTS}, labels, h, horizon, min_size
        )
        for r in range(R)
    ]
    sub_val = {k: _nanmean([p.get(k, np.nan) for p in per_repeat]) for k in sub_app}
    interval_sd: dict[str, float] = {}
    interval_detail: dict[str, dict[str, float]] = {}
    wanted = horizons if interval_horizons is None else np.asarray(interval_horizons, float)
    columns = [list(horizons).index(h) for h in wanted]
    intervals = bootstrap_intervals(
        dev.y,
        {e: r[:, :, columns] for e, r in oof[REGISTERED].items()},
        wanted,
        config.evaluation.n_interval_bootstrap,
        task_seed(config.seed, INTERVAL_SEED_TAG),
        metrics=tuple(interval_metrics),
        engine=engine,
        sd_out=interval_sd,
        detail_out=interval_detail,
    )
    apparent_risks = {
        name: {e: predict_horizons(m, X, horizons) for e, m in per.items()}
        for name, per in models.items()
    }
    choices = {e: [repr(sorted(r.tuned[e]["params"].items())) for r in results] for e in ENDPOINTS}
    return Evaluation(
        models=models,
        tuned=tuned,
        horizons=horizons,
        apparent=apparent,
        validated=validated,
        intervals=intervals,
        interval_sd=interval_sd,
        interval_detail=interval_detail,
        counts=event_counts(dev.y, horizons),
        subgroups_apparent=sub_app,
        subgroups_validated=sub_val,
        apparent_risks=apparent_risks,
        oof_risks=oof,
        n_folds=config.evaluation.cv_folds,
        n_repeats=R,
        n_interval_bootstrap=config.evaluation.n_interval_bootstrap,
        main_horizon=horizon,
        tuning_choices=choices,
        stratified=config.evaluation.stratify,
    )


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
