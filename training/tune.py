"""Seeded grid search with cross-validation for each endpoint's forest.

Folds split *patients*, not rows: inside a bootstrap replicate a patient drawn twice must not
sit on both sides of a fold. The score is the integrated IPCW Brier score over the standard
horizons on the validation fold (a proper score, so it rewards calibration and
discrimination together); ties go to the earlier grid point, so the choice is deterministic.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.config import ENDPOINTS, EVENT_OF_INTEREST
from models.forest import CompetingRiskForest
from training.config import TrainConfig
from training.engine import Engine, LocalEngine, task_seed
from training.metrics import integrated_brier_cr
from training.model_factory import build_model, needs_tuning

N_CAUSES = 2
"""Event of interest and the competing event: fixed so every resample has the same shape."""
TUNE_SEED_TAG = 1
FIT_SEED_TAG = 2


def grid_points(config: TrainConfig) -> list[dict[str, Any]]:
    """The product of the grid's values, in a fixed order."""
    keys = sorted(config.forest.grid)
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(config.forest.grid[k] for k in keys))
    ]


def make_forest(
    config: TrainConfig,
    params: dict[str, Any],
    seed: int,
    n_jobs: int = 1,
    n_estimators: int | None = None,
) -> CompetingRiskForest:
    """A forest with the config's fixed settings, the tuned ``params`` and a seed."""
    kwargs: dict[str, Any] = {
        "n_estimators": n_estimators or config.forest.n_estimators,
        "n_causes": N_CAUSES,
        **config.forest.fixed,
        **params,
    }
    return CompetingRiskForest(cause=EVENT_OF_INTEREST, n_jobs=n_jobs, random_state=seed, **kwargs)


def patient_folds(groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number of each row; all rows of one patient (group) share a fold."""
    uniq = np.unique(groups)
    order = np.random.default_rng(seed).permutation(uniq.size)
    fold_of_group = np.empty(uniq.size, dtype=int)
    fold_of_group[order] = np.arange(uniq.size) % n_folds
    return fold_of_group[np.searchsorted(uniq, groups)]


@dataclass(frozen=True)
class TuningData:
    """What every tuning task reads (sent once to each worker)."""

    X: pd.DataFrame
    y: dict[str, np.ndarray]
    folds: np.ndarray
    config: TrainConfig
    horizons: np.ndarray


def cv_score_task(data: TuningData, endpoint: str, point: int, fold: int, seed: int) -> float:
    """Integrated Brier on one validation fold for one grid point (lower is better)."""
    params = grid_points(data.config)[point]
    train = data.folds != fold
    y = data.y[endpoint]
    model = make_forest(
        data.config, params, seed, n_estimators=data.config.tuning.n_estimators
    ).fit(data.X.loc[train], y[train])
    test = ~train
    risk = model.predict_cif(data.X.loc[test], data.horizons)[:, EVENT_OF_INTEREST - 1, :]
    yt = y[test]
    try:
        return integrated_brier_cr(yt["time"], yt["event"], risk, EVENT_OF_INTEREST, data.horizons)
    except ValueError:
        return float("nan")


def tune(
    X: pd.DataFrame,
    y: dict[str, np.ndarray],
    groups: np.ndarray,
    config: TrainConfig,
    seed: int,
    engine: Engine | None = None,
) -> dict[str, dict[str, Any]]:
    """Best grid point per endpoint, and the CV scores behind the choice.

    Returns ``{endpoint: {"params": {...}, "scores": [mean score per grid point]}}``.
    """
    points = grid_points(config)
    horizons = np.asarray(config.evaluation.horizons_months, dtype=float)
    folds = patient_folds(groups, config.tuning.cv_folds, task_seed(seed, TUNE_SEED_TAG))
    data = TuningData(X.reset_index(drop=True), y, folds, config, horizons)
    if not needs_tuning(config):  # the ensemble chooses between its members inside fit
        return {e: {"params": {}, "scores": [float("nan")]} for e in ENDPOINTS}
    if len(points) == 1:
        return {e: {"params": points[0], "scores": [float("nan")]} for e in ENDPOINTS}
    tasks = [
        (e, p, f, task_seed(seed, TUNE_SEED_TAG, ei, p, f))
        for ei, e in enumerate(ENDPOINTS)
        for p in range(len(points))
        for f in range(config.tuning.cv_folds)
    ]
    engine = engine or LocalEngine(1, progress=False)
    scores = engine.map(cv_score_task, data, tasks, desc="tuning")
    out: dict[str, dict[str, Any]] = {}
    for e in ENDPOINTS:
        table = np.full((len(points), config.tuning.cv_folds), np.nan)
        for (te, p, f, _), s in zip(tasks, scores, strict=True):
            if te == e:
                table[p, f] = s
        with np.errstate(invalid="ignore"):
            mean = np.array([np.nanmean(r) if np.any(np.isfinite(r)) else np.inf for r in table])
        best = int(np.argmin(mean))  # first of ties
        out[e] = {"params": points[best], "scores": [float(m) for m in mean]}
    return out


def fit_forests(
    X: pd.DataFrame,
    y: dict[str, np.ndarray],
    tuned: dict[str, dict[str, Any]],
    config: TrainConfig,
    seed: int,
    n_jobs: int = 1,
) -> dict[str, Any]:
    """The registered model per endpoint (``[model] kind``: a tuned forest or the ensemble)."""
    return {
        e: build_model(config, task_seed(seed, FIT_SEED_TAG, i), tuned[e]["params"], n_jobs).fit(
            X, y[e]
        )
        for i, e in enumerate(ENDPOINTS)
    }
