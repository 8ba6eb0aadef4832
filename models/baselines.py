"""Baselines the forest must beat, on the same grid and with the same prediction interface.

- :class:`CauseSpecificCox`: a ridge Cox model per cause, combined into CIFs.
- :class:`CauseSpecificXGB`: gradient-boosted Cox (XGBoost ``survival:cox``) per cause.
- :class:`PublishedRule`: the published two-factor rule (TTR <= 24 months, GTV > 30 cm3),
  its risk groups' Aalen-Johansen CIFs.

All take ``y`` as a structured array (``event`` 0 censored / 1..K cause, ``time`` months), put
times on the grid like the forest does, and predict through :class:`models._cif.GridCIFMixin`.
"""

from __future__ import annotations

import warnings

import numba
import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data
from sksurv.linear_model import CoxPHSurvivalAnalysis

from features.config import GRID_MAX_MONTHS, GRID_STEP_MONTHS, GTV_LARGE_CM3, TTR_SHORT_MONTHS
from models._cif import (
    GridCIFMixin,
    aalen_johansen_grid,
    breslow_increments,
    checked_features,
    cif_from_cumulative_hazard_increments,
    prepare_grid_outcome,
)

COX_RIDGE_ALPHA = 0.1
"""Small ridge penalty: keeps the Cox fit finite with rare events or collinear dose features."""

XGB_N_ESTIMATORS = 200
XGB_MAX_DEPTH = 2
XGB_LEARNING_RATE = 0.03
XGB_SUBSAMPLE = 0.8
XGB_MIN_CHILD_WEIGHT = 5.0
"""Shallow, slow, subsampled boosting: few smooth effects and rare events in small cohorts."""
XGB_N_JOBS = 1
MAX_N_JOBS = 2
"""The project's machines share 2 cores."""


class _CauseSpecificHazards(GridCIFMixin, BaseEstimator):
    """Shared fit/predict: one relative-risk model per cause + Breslow baseline on the grid."""

    def _fit_cause(self, X, time_idx, is_event):  # pragma: no cover - abstract
        raise NotImplementedError

    def _log_risk(self, model, X) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, X, y):
        """Fit one model per cause (other causes censored) and its Breslow baseline hazard."""
        Xv = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        time_idx, event, k = prepare_grid_outcome(self, Xv.shape[0], y)
        n_grid = self.event_times_.size
        self.models_, self.baseline_increments_ = [], np.zeros((k, n_grid))
        for cause in range(1, k + 1):
            is_event = event == cause
            if not is_event.any():
                self.models_.append(None)  # no events of this cause: zero hazard
                continue
            model = self._fit_cause(Xv, time_idx, is_event)
            self.models_.append(model)
            risk = np.exp(self._log_risk(model, Xv))
            self.baseline_increments_[cause - 1] = breslow_increments(
                time_idx, is_event, risk, n_grid
            )
        return self

    def _cif_on_grid(self, X) -> np.ndarray:
        check_is_fitted(self, "models_")
        return self._cif_on_grid_checked(checked_features(self, X))

    def _cif_on_grid_checked(self, Xv: np.ndarray, cause: int | None = None) -> np.ndarray:
        """As ``_cif_on_grid`` for a float64 array its caller checked (no second check);
        with ``cause``, that cause's CIF, (n, G) (every cause's hazard enters it)."""
        return self._cif_from_checked(Xv, cause)

    def _cif_from_checked(self, Xv: np.ndarray, cause: int | None = None) -> np.ndarray:
        d_cumhaz = np.zeros((Xv.shape[0], self.n_causes_, self.event_times_.size))
        for c, model in enumerate(self.models_):
            if model is not None:
                hr = np.exp(self._log_risk(model, Xv))
                d_cumhaz[:, c, :] = hr[:, None] * self.baseline_increments_[c][None, :]
        return cif_from_cumulative_hazard_increments(d_cumhaz, cause)


class CauseSpecificCox(_CauseSpecificHazards):
    """Cause-specific Cox models (standardised X, small ridge), combined into CIFs.

    F_k(t) = sum_{s<=t} S(s-) dH_k(s) with S = exp(-sum_k H_k), computed on the grid as in
    :func:`models._cif.cif_from_cumulative_hazard_increments`; H_k = Breslow baseline x
    exp(linear predictor). Ties on the grid are Breslow's.

    Penalty: ``alpha`` is the ridge penalty (scikit-survival's: 0.5 * alpha * ||beta||^2 added
    to minus the log partial likelihood, on standardised X). With ``penalty_grid`` (ratios r)
    each cause's penalty is chosen among alpha_r = max(``alpha``, r * d), d that cause's
    number of events, by the penalised AIC -2 l(beta_r) + 2 df_r with the effective degrees
    of freedom df_r = tr(I (I + alpha_r)^-1), I the observed information (Gray 1992;
    Verweij & van Houwelingen 1994): shrinkage grows where events are few relative to the
    features, as in small cohorts. ``alphas_`` holds the chosen penalty per cause.
    """

    def __init__(
        self,
        alpha: float = COX_RIDGE_ALPHA,
        penalty_grid: tuple[float, ...] | None = None,
        cause: int = 1,
        time_grid_max: float = GRID_MAX_MONTHS,
        time_grid_step: float = GRID_STEP_MONTHS,
        n_causes: int | None = None,
    ):
        self.alpha = alpha
        self.penalty_grid = penalty_grid
        self.cause = cause
        self.time_grid_max = time_grid_max
        self.time_grid_step = time_grid_step
        self.n_causes = n_causes

    def fit(self, X, y):
        """Fit each cause's ridge Cox model (penalty chosen per cause with ``penalty_grid``)."""
        super().fit(X, y)
        self.alphas_ = np.array([np.nan if m is None else float(m[-1].alpha) for m in self.models_])
        return self

    def _fit_cause(self, X, time_idx, is_event) -> Pipeline:
        y = np.empty(X.shape[0], dtype=[("event", bool), ("time", float)])
        y["event"] = is_event
        y["time"] = self.event_times_[time_idx]
        if self.penalty_grid is None:
            candidates = [float(self.alpha)]
        else:
            d = float(is_event.sum())
            candidates = sorted({max(float(self.alpha), float(r) * d) for r in self.penalty_grid})
        best, best_aic = None, np.inf
        for a in candidates:
            pipe = make_pipeline(StandardScaler(), CoxPHSurvivalAnalysis(alpha=a, ties="breslow"))
            if len(candidates) == 1:
                return pipe.fit(X, y)
            with warnings.catch_warnings():  # a weak penalty may not converge: AIC judges it
                warnings.simplefilter("ignore")
                pipe.fit(X, y)
            Z = pipe[0].transform(X)
            loglik, info = cox_loglik_information(Z, time_idx, is_event, pipe[-1].coef_)
            df = float(np.trace(np.linalg.solve(info + a * np.eye(info.shape[0]), info)))
            aic = -2.0 * loglik + 2.0 * df
            if aic < best_aic - 1e-9:
                best, best_aic = pipe, aic
        return best

    def _log_risk(self, model, X) -> np.ndarray:
        """The pipeline's linear predictor (scale: ``(X - mean) / scale``, then the sum of
        ``Z * coef_``) without its two rounds of input checks (~0.5 ms per call, more than the
        rest of a served prediction). The sum runs row by row in a fixed order
        (:func:`_row_dot`): sksurv's ``np.dot`` rounds a row differently depending on how many
        rows share the call (BLAS picks another kernel), which made a patient's last digit
        depend on its batch; the two agree to 1e-12 (tests/test_fast_paths.py)."""
        scaler, cox = model[0], model[-1]
        Z = (np.asarray(X, dtype=np.float64) - scaler.mean_) / scaler.scale_
        return _row_dot(np.ascontiguousarray(Z), np.ascontiguousarray(cox.coef_, dtype=np.float64))


def cox_loglik_information(
    Z: np.ndarray, time_idx: np.ndarray, is_event: np.ndarray, beta: np.ndarray
) -> tuple[float, np.ndarray]:
    """Breslow log partial likelihood at ``beta`` and its observed information (p x p).

    Times are grid indices (ties: everyone with a time >= t is at risk at t, Breslow).
    """
    eta = Z @ beta
    eta = eta - eta.max()  # the likelihood is invariant to a shift; exp stays finite
    r = np.exp(eta)
    n_grid = int(time_idx.max()) + 1
    p = Z.shape[1]
    s0 = np.bincount(time_idx, weights=r, minlength=n_grid)
    s1 = np.zeros((n_grid, p))
    np.add.at(s1, time_idx, r[:, None] * Z)
    s2 = np.zeros((n_grid, p, p))
    np.add.at(s2, time_idx, r[:, None, None] * Z[:, :, None] * Z[:, None, :])
    # risk sets: sums over times >= t
    s0, s1, s2 = (np.cumsum(a[::-1], axis=0)[::-1] for a in (s0, s1, s2))
    d = np.bincount(time_idx, weights=is_event.astype(float), minlength=n_grid)
    at = d > 0
    loglik = float(eta[is_event].sum() - np.sum(d[at] * np.log(s0[at])))
    m1 = s1[at] / s0[at, None]
    info = np.einsum("g,gij->ij", d[at], s2[at] / s0[at, None, None]) - np.einsum(
        "g,gi,gj->ij", d[at], m1, m1
    )
    return loglik, info


class CauseSpecificXGB(_CauseSpecificHazards):
    """Gradient-boosted Cox (XGBoost ``survival:cox``) per cause, Breslow baseline, CIFs.

    Competing events are censored for each cause's model. The boosted margin is the log
    relative hazard; the Breslow estimator on the training margins gives the baseline.
    """

    def __init__(
        self,
        n_estimators: int = XGB_N_ESTIMATORS,
        max_depth: int = XGB_MAX_DEPTH,
        learning_rate: float = XGB_LEARNING_RATE,
        subsample: float = XGB_SUBSAMPLE,
        min_child_weight: float = XGB_MIN_CHILD_WEIGHT,
        cause: int = 1,
        time_grid_max: float = GRID_MAX_MONTHS,
        time_grid_step: float = GRID_STEP_MONTHS,
        n_causes: int | None = None,
        n_jobs: int = XGB_N_JOBS,
        random_state: int | None = 0,
    ):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.min_child_weight = min_child_weight
        self.cause = cause
        self.time_grid_max = time_grid_max
        self.time_grid_step = time_grid_step
        self.n_causes = n_causes
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit_cause(self, X, time_idx, is_event) -> xgb.XGBRegressor:
        t = self.event_times_[time_idx]
        label = np.where(is_event, t, -t)  # xgboost's convention: negative = censored
        model = xgb.XGBRegressor(
            objective="survival:cox",
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            subsample=self.subsample,
            min_child_weight=self.min_child_weight,
            tree_method="hist",
            n_jobs=min(int(self.n_jobs), MAX_N_JOBS),
            random_state=self.random_state,
        )
        return model.fit(X, label)

    def _log_risk(self, model, X) -> np.ndarray:
        return model.predict(X, output_margin=True).astype(np.float64)


class PublishedRule(GridCIFMixin, BaseEstimator):
    """The published rule: risk group = number of factors (TTR <= 24 months, GTV > 30 cm3).

    Each group (0, 1, 2 factors) predicts its Aalen-Johansen CIFs from the training data; a
    group absent from the training data falls back to the whole cohort's curve. X must be a
    DataFrame holding ``ttr_column`` and ``gtv_column`` (``build_features`` keeps those names).
    """

    N_GROUPS = 3

    def __init__(
        self,
        ttr_column: str = "ttr_months",
        gtv_column: str = "gtv_cm3",
        ttr_threshold_months: float = TTR_SHORT_MONTHS,
        gtv_threshold_cm3: float = GTV_LARGE_CM3,
        cause: int = 1,
        time_grid_max: float = GRID_MAX_MONTHS,
        time_grid_step: float = GRID_STEP_MONTHS,
        n_causes: int | None = None,
    ):
        self.ttr_column = ttr_column
        self.gtv_column = gtv_column
        self.ttr_threshold_months = ttr_threshold_months
        self.gtv_threshold_cm3 = gtv_threshold_cm3
        self.cause = cause
        self.time_grid_max = time_grid_max
        self.time_grid_step = time_grid_step
        self.n_causes = n_causes

    def risk_group(self, X) -> np.ndarray:
        """Number of rule factors present per row (0, 1 or 2)."""
        if not isinstance(X, pd.DataFrame):
            raise TypeError("PublishedRule needs a DataFrame with the TTR and GTV columns")
        missing = [c for c in (self.ttr_column, self.gtv_column) if c not in X.columns]
        if missing:
            raise ValueError(f"PublishedRule: missing column(s) {missing}")
        ttr = X[self.ttr_column].to_numpy(dtype=float)
        gtv = X[self.gtv_column].to_numpy(dtype=float)
        return (ttr <= self.ttr_threshold_months).astype(int) + (
            gtv > self.gtv_threshold_cm3
        ).astype(int)

    def fit(self, X, y):
        """Estimate each risk group's Aalen-Johansen CIFs on the grid."""
        groups = self.risk_group(X)
        time_idx, event, k = prepare_grid_outcome(self, groups.shape[0], y)
        n_grid = self.event_times_.size
        cif = aalen_johansen_grid(time_idx, event, k, n_grid, groups=groups, n_groups=self.N_GROUPS)
        overall = aalen_johansen_grid(time_idx, event, k, n_grid)[0]
        self.group_sizes_ = np.bincount(groups, minlength=self.N_GROUPS)
        cif[self.group_sizes_ == 0] = overall
        self.group_cif_ = cif
        return self

    def _cif_on_grid(self, X) -> np.ndarray:
        check_is_fitted(self, "group_cif_")
        return self.group_cif_[self.risk_group(X)].copy()


@numba.njit(cache=True, nogil=True)
def _row_dot(Z: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Each row of ``Z`` times ``coef``, summed in column order: a row's value never depends
    on the other rows of the call."""
    out = np.empty(Z.shape[0])
    for i in range(Z.shape[0]):
        acc = 0.0
        for j in range(Z.shape[1]):
            acc += Z[i, j] * coef[j]
        out[i] = acc
    return out
