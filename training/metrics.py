"""Competing-risk evaluation metrics, checked against scikit-survival and riskRegression.

Every function takes plain numpy arrays: ``time`` in months (float, >= 0), ``event`` an integer
code (0 = censored, 1..K = the cause that ended follow-up) and a predicted ``risk`` (the
cumulative incidence of ``cause`` by the horizon, or any score where higher means earlier for the
rank-based measures).

Conventions (the same as riskRegression/prodlim and scikit-survival):

* **Ties in time.** At a tied time, events happen before censoring: a patient censored at t is
  still at risk for an event at t. The censoring distribution G is the "reverse" Kaplan-Meier
  estimate with the same ordering, so at a time s its risk set excludes the patients who had an
  event at s: ``G(t) = prod_{s <= t} (1 - c(s) / (Y(s) - d(s)))``.
* **Censoring weights.** A patient whose event (any cause) is observed at T_i is weighted by
  ``1 / G(T_i-)`` (the left limit, as ``prodlim::predictSurvIndividual(lag = 1)``); a patient
  still event-free after the horizon by ``1 / G(horizon)``. Patients censored before or at the
  horizon get weight 0. Cases are ``T_i <= horizon`` with the cause of interest; event-free
  controls are ``T_j > horizon``.
* **Ties in risk** count 1/2 in every concordance-type measure.
* **Competing events** stay in the competing-risk measures (Aalen-Johansen, Blanche et al.'s AUC,
  the IPCW Brier score, pseudo-observations); only ``harrell_c`` and ``uno_c`` give the
  cause-specific view, where a competing event is treated as censoring at its time.

The censoring G is estimated from the evaluated data themselves (scikit-survival's metrics take
it from a ``survival_train`` argument; pass the same data to both to compare).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import statsmodels.api as sm
from statsmodels.nonparametric.smoothers_lowess import lowess

from features.config import EVENT_CENSORED

LOWESS_FRAC: float = 0.75
"""Span of the lowess calibration smoother: R's loess default, used by Austin et al. (2020)."""

LOWESS_DELTA_FRACTION: float = 0.01
"""Lowess skips re-fitting within this fraction of the risk range (linear interpolation there):
exact enough for a curve and what keeps n = 5000 well under a second."""

CURVE_POINTS: int = 101
"""Points of the returned calibration curve, evenly spread over the observed risk range."""

RISK_CLIP: float = 1e-6
"""Predicted risks are clipped to [RISK_CLIP, 1 - RISK_CLIP] before the cloglog transform."""

GLM_MAX_ITER: int = 100

GLM_MAX_ABS_COEF: float = 20.0
"""A calibration coefficient beyond this on the cloglog scale means the fit diverged."""

E50_QUANTILE: float = 0.5
E90_QUANTILE: float = 0.9

CHUNK_SIZE: int = 512
"""Rows per block in the pairwise concordance loops (bounds memory at CHUNK_SIZE * n)."""


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _check_outcome(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    time = np.asarray(time, dtype=float)
    event_raw = np.asarray(event)
    if time.ndim != 1 or event_raw.ndim != 1:
        raise ValueError("time and event must be one-dimensional arrays")
    if time.shape[0] != event_raw.shape[0]:
        raise ValueError(
            f"length mismatch: time has {time.shape[0]} values, event has {event_raw.shape[0]}"
        )
    if time.shape[0] == 0:
        raise ValueError("time and event are empty")
    if not np.all(np.isfinite(time)):
        raise ValueError("time contains NaN or infinite values")
    if np.any(time < 0):
        raise ValueError(f"time contains negative values (min {time.min():g})")
    if event_raw.dtype == bool:
        event_raw = event_raw.astype(int)
    event_f = np.asarray(event_raw, dtype=float)
    if not np.all(np.isfinite(event_f)):
        raise ValueError("event contains NaN or infinite values")
    bad = (event_f != np.round(event_f)) | (event_f < EVENT_CENSORED)
    if np.any(bad):
        codes = np.unique(event_f[bad])[:5]
        raise ValueError(
            f"unknown event codes {codes.tolist()}: expected 0 (censored) or a cause 1..K"
        )
    return time, event_f.astype(int)


def _check_cause(cause: int) -> int:
    if isinstance(cause, bool) or int(cause) != cause or int(cause) <= EVENT_CENSORED:
        raise ValueError(f"cause must be a positive integer event code, got {cause!r}")
    return int(cause)


def _check_risk(risk: np.ndarray, n: int, *, probability: bool, name: str = "risk") -> np.ndarray:
    risk = np.asarray(risk, dtype=float)
    if risk.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if risk.shape[0] != n:
        raise ValueError(f"length mismatch: {name} has {risk.shape[0]} values, time has {n}")
    if np.any(np.isnan(risk)):
        raise ValueError(f"{name} contains NaN values")
    if not np.all(np.isfinite(risk)):
        raise ValueError(f"{name} contains infinite values")
    if probability and (np.any(risk < 0) or np.any(risk > 1)):
        raise ValueError(f"{name} must be a probability in [0, 1]")
    return risk


def _check_horizon(horizon: float) -> float:
    horizon = float(horizon)
    if not np.isfinite(horizon) or horizon <= 0:
        raise ValueError(f"horizon must be a positive finite number of months, got {horizon!r}")
    return horizon


# --------------------------------------------------------------------------------------------
# non-parametric building blocks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Counts:
    """Counts at the distinct observed times (ascending)."""

    times: np.ndarray
    at_risk: np.ndarray  # Y(s): patients with T >= s
    events: np.ndarray  # d(s): events of any cause at s
    cause_events: np.ndarray  # d_k(s): events of the given cause at s
    censored: np.ndarray  # c(s): censorings at s


def _counts(time: np.ndarray, event: np.ndarray, cause: int) -> _Counts:
    times, inverse = np.unique(time, return_inverse=True)
    m = times.shape[0]
    total = np.bincount(inverse, minlength=m)
    events = np.bincount(inverse, weights=(event != EVENT_CENSORED), minlength=m)
    cause_events = np.bincount(inverse, weights=(event == cause), minlength=m)
    at_risk = time.shape[0] - np.concatenate(([0], np.cumsum(total)[:-1]))
    return _Counts(times, at_risk.astype(float), events, cause_events, total - events)


def _censoring_survival(counts: _Counts) -> np.ndarray:
    """Reverse Kaplan-Meier G at each distinct time (right-continuous), events first at ties."""
    risk_set = counts.at_risk - counts.events
    hazard = np.divide(counts.censored, risk_set, out=np.zeros_like(risk_set), where=risk_set > 0)
    return np.cumprod(1.0 - hazard)


def _step_at(times: np.ndarray, values: np.ndarray, t: np.ndarray, *, left: bool) -> np.ndarray:
    """Evaluate a right-continuous step function starting at 1 (left=True: the left limit)."""
    idx = np.searchsorted(times, t, side="left" if left else "right")
    return np.concatenate(([1.0], values))[idx]


def _ipcw_weights(time: np.ndarray, event: np.ndarray, horizon: float) -> np.ndarray:
    """1/G(T_i-) for observed events by the horizon, 1/G(horizon) beyond it, 0 if censored."""
    counts = _counts(time, event, cause=1)
    g = _censoring_survival(counts)
    weights = np.zeros(time.shape[0])
    observed = (time <= horizon) & (event != EVENT_CENSORED)
    weights[observed] = 1.0 / _step_at(counts.times, g, time[observed], left=True)
    beyond = time > horizon
    if np.any(beyond):
        weights[beyond] = 1.0 / _step_at(counts.times, g, np.array([horizon]), left=False)[0]
    return weights


def _aalen_johansen(counts: _Counts) -> np.ndarray:
    """Cumulative incidence of the counted cause at each distinct time."""
    hazard_all = np.divide(
        counts.events, counts.at_risk, out=np.zeros_like(counts.at_risk), where=counts.at_risk > 0
    )
    surv_before = np.concatenate(([1.0], np.cumprod(1.0 - hazard_all)[:-1]))
    hazard_cause = np.divide(
        counts.cause_events,
        counts.at_risk,
        out=np.zeros_like(counts.at_risk),
        where=counts.at_risk > 0,
    )
    return np.cumsum(surv_before * hazard_cause)


def cumulative_incidence(
    time: np.ndarray, event: np.ndarray, cause: int, times: np.ndarray
) -> np.ndarray:
    """Aalen-Johansen cumulative incidence of ``cause`` at ``times`` (right-continuous).

    Events of every cause leave the risk set; with a single cause this is 1 - Kaplan-Meier.
    """
    time, event = _check_outcome(time, event)
    cause = _check_cause(cause)
    times = np.atleast_1d(np.asarray(times, dtype=float))
    if np.any(np.isnan(times)):
        raise ValueError("times contains NaN values")
    counts = _counts(time, event, cause)
    cif = np.concatenate(([0.0], _aalen_johansen(counts)))
    return cif[np.searchsorted(counts.times, times, side="right")]


def _cif_at(time: np.ndarray, event: np.ndarray, cause: int, horizon: float) -> float:
    counts = _counts(time, event, cause)
    cif = _aalen_johansen(counts)
    idx = np.searchsorted(counts.times, horizon, side="right")
    return float(cif[idx - 1]) if idx > 0 else 0.0


def pseudo_observations(
    time: np.ndarray, event: np.ndarray, cause: int, horizon: float
) -> np.ndarray:
    """Jackknife pseudo-observations of the Aalen-Johansen CIF at ``horizon``.

    ``theta_i = n F(h) - (n - 1) F_{-i}(h)``, exact, in O(n log n): removing patient i only
    lowers the risk sets up to T_i by one and its own event count at T_i, so every
    leave-one-out estimate is a prefix sum over the modified risk sets, plus one modified term
    at T_i, plus the untouched tail rescaled by the new survival (agrees with
    ``prodlim::jackknife``; the textbook loop refits n times).
    """
    time, event = _check_outcome(time, event)
    cause = _check_cause(cause)
    horizon = _check_horizon(horizon)
    n = time.shape[0]
    counts = _counts(time, event, cause)
    keep = counts.times <= horizon
    if not np.any(keep):
        return np.zeros(n)
    at_risk = counts.at_risk[keep]
    d_all = counts.events[keep]
    d_cause = counts.cause_events[keep]

    surv = np.cumprod(1.0 - d_all / at_risk)
    surv_before = np.concatenate(([1.0], surv[:-1]))
    cif = np.cumsum(surv_before * d_cause / at_risk)
    cif_h = cif[-1]
    # tail after time k relative to S(t_k): sum_{j>k} S(t_{j-1}) / S(t_k) * d_cause_j / Y_j
    tail = np.divide(cif_h - cif, surv, out=np.zeros_like(surv), where=surv > 0)

    at_risk_minus = at_risk - 1.0
    pos = at_risk_minus > 0
    q_all = np.divide(d_all, at_risk_minus, out=np.zeros_like(d_all), where=pos)
    q_cause = np.divide(d_cause, at_risk_minus, out=np.zeros_like(d_cause), where=pos)
    prod_minus = np.concatenate(([1.0], np.cumprod(1.0 - q_all)))  # P_{k-1}, length m+1
    sum_minus = np.concatenate(([0.0], np.cumsum(prod_minus[:-1] * q_cause)))  # A_{k-1}

    loo = np.full(n, sum_minus[-1])  # patients followed beyond the horizon
    inside = time <= horizon
    k = np.searchsorted(counts.times[keep], time[inside])
    ev = event[inside]
    d_all_i = d_all[k] - (ev != EVENT_CENSORED)
    d_cause_i = d_cause[k] - (ev == cause)
    denom = at_risk_minus[k]
    ok = denom > 0
    own_cause = np.divide(d_cause_i, denom, out=np.zeros(k.shape[0]), where=ok)
    own_all = np.divide(d_all_i, denom, out=np.zeros(k.shape[0]), where=ok)
    loo[inside] = sum_minus[k] + prod_minus[k] * (own_cause + (1.0 - own_all) * tail[k])
    return n * cif_h - (n - 1) * loo


# --------------------------------------------------------------------------------------------
# discrimination
# --------------------------------------------------------------------------------------------


def _weighted_auc(
    case_risk: np.ndarray, case_w: np.ndarray, ctrl_risk: np.ndarray, ctrl_w: np.ndarray
) -> float:
    """Weighted Mann-Whitney statistic, ties 1/2, O(n log n)."""
    order = np.argsort(ctrl_risk, kind="mergesort")
    ctrl_sorted = ctrl_risk[order]
    cum_w = np.concatenate(([0.0], np.cumsum(ctrl_w[order])))
    below = cum_w[np.searchsorted(ctrl_sorted, case_risk, side="left")]
    upto = cum_w[np.searchsorted(ctrl_sorted, case_risk, side="right")]
    concordant = np.sum(case_w * (below + 0.5 * (upto - below)))
    return float(concordant / (case_w.sum() * cum_w[-1]))


def auc_cr(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, cause: int, horizon: float
) -> float:
    """IPCW time-dependent AUC of ``cause`` at ``horizon`` with competing risks.

    Blanche, Dartigues & Jacqmin-Gadda (Stat Med 2013), definition 2 of riskRegression::Score:
    cases had ``cause`` by the horizon (weight 1/G(T_i-)); controls are event-free at the
    horizon (1/G(horizon)) or had a competing event before it (1/G(T_j-)). Returns NaN when
    there are no cases or no controls.
    """
    time, event = _check_outcome(time, event)
    cause = _check_cause(cause)
    risk = _check_risk(risk, time.shape[0], probability=False)
    horizon = _check_horizon(horizon)
    weights = _ipcw_weights(time, event, horizon)
    by_horizon = time <= horizon
    cases = by_horizon & (event == cause)
    controls = (time > horizon) | (by_horizon & (event != cause) & (event != EVENT_CENSORED))
    if not np.any(cases) or not np.any(controls):
        return float("nan")
    return _weighted_auc(risk[cases], weights[cases], risk[controls], weights[controls])


def brier_cr(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, cause: int, horizon: float
) -> float:
    """IPCW Brier score of the predicted cumulative incidence of ``cause`` at ``horizon``.

    ``mean_i w_i (I(T_i <= h, cause_i) - risk_i)^2`` with the weights of the module docstring
    (the residuals of riskRegression's Brier.competing.risks).
    """
    time, event = _check_outcome(time, event)
    cause = _check_cause(cause)
    risk = _check_risk(risk, time.shape[0], probability=True)
    horizon = _check_horizon(horizon)
    weights = _ipcw_weights(time, event, horizon)
    outcome = ((time <= horizon) & (event == cause)).astype(float)
    return float(np.mean(weights * (outcome - risk) ** 2))


def integrated_brier_cr(
    time: np.ndarray,
    event: np.ndarray,
    risk_matrix: np.ndarray,
    cause: int,
    times: np.ndarray,
) -> float:
    """Integrated Brier score: trapezoid rule over ``times``, divided by their range.

    ``risk_matrix[i, j]`` is patient i's predicted cumulative incidence at ``times[j]``; with
    one cause this is scikit-survival's ``integrated_brier_score``.
    """
    times = np.asarray(times, dtype=float)
    risk_matrix = np.asarray(risk_matrix, dtype=float)
    if times.ndim != 1 or times.shape[0] < 2:
        raise ValueError("times must be a one-dimensional array of at least two time points")
    if np.any(np.diff(times) <= 0):
        raise ValueError("times must be strictly increasing")
    if risk_matrix.ndim != 2 or risk_matrix.shape[1] != times.shape[0]:
        raise ValueError(
            f"risk_matrix must have shape (n, {times.shape[0]}), got {risk_matrix.shape}"
        )
    scores = np.array(
        [brier_cr(time, event, risk_matrix[:, j], cause, t) for j, t in enumerate(times)]
    )
    return float(np.trapezoid(scores, times) / (times[-1] - times[0]))


def _concordance_pairs(
    time: np.ndarray, is_event: np.ndarray, risk: np.ndarray, row_weight: np.ndarray
) -> float:
    """Weighted Harrell-type concordance: patient i with an event (weight row_weight_i) is
    comparable with every j followed longer, or censored at the same time (events first at
    ties); ties in risk count 1/2. Blocks of CHUNK_SIZE rows keep memory linear."""
    rows = np.flatnonzero(is_event & (row_weight > 0))
    numerator = 0.0
    denominator = 0.0
    for start in range(0, rows.shape[0], CHUNK_SIZE):
        block = rows[start : start + CHUNK_SIZE]
        t_i = time[block, None]
        comparable = (time[None, :] > t_i) | ((time[None, :] == t_i) & ~is_event[None, :])
        r_i = risk[block, None]
        score = (risk[None, :] < r_i) + 0.5 * (risk[None, :] == r_i)
        w = row_weight[block]
        numerator += float(np.sum(w * np.sum(comparable * score, axis=1)))
        denominator += float(np.sum(w * np.sum(comparable, axis=1)))
    return numerator / denominator if denominator > 0 else float("nan")


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray, cause: int) -> float:
    """Harrell's C for ``cause``, cause-specific view: a competing event counts as censoring.

    Matches scikit-survival's ``concordance_index_censored(event == cause, time, risk)``;
    NaN when no pair is comparable (no event of the cause).
    """
    time, event = _check_outcome(time, event)
    cause = _check_cause(cause)
    risk = _check_risk(risk, time.shape[0], probability=False)
    is_event = event == cause
    return _concordance_pairs(time, is_event, risk, np.ones(time.shape[0]))


def uno_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray, cause: int, tau: float) -> float:
    """Uno's IPCW C for ``cause`` truncated at ``tau``, cause-specific view.

    A competing event counts as censoring, also in the censoring distribution G; event rows with
    T_i < tau are weighted by 1/G(T_i-)^2 (Uno et al., Stat Med 2011). Matches
    scikit-survival's ``concordance_index_ipcw`` on untied data.
    """
    time, event = _check_outcome(time, event)
    cause = _check_cause(cause)
    risk = _check_risk(risk, time.shape[0], probability=False)
    tau = _check_horizon(tau)
    is_event = event == cause
    binary = is_event.astype(int)
    counts = _counts(time, binary, cause=1)
    g = _censoring_survival(counts)
    weight = np.zeros(time.shape[0])
    rows = is_event & (time < tau)
    weight[rows] = _step_at(counts.times, g, time[rows], left=True) ** -2.0
    return _concordance_pairs(time, is_event, risk, weight)


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationResult:
    """Calibration of predicted cumulative incidence at one horizon.

    ``ici``, ``e50``, ``e90``: mean, median and 90th percentile over the patients of
    |smoothed observed - predicted| (Austin, Harrell & van Klaveren, Stat Med 2020).
    ``slope``/``intercept``: the fit ``cloglog E[pseudo] = intercept + slope * cloglog(risk)``;
    ``citl``: the intercept with the slope fixed at 1 (calibration-in-the-large, cloglog scale).
    These three are NaN, and ``glm_converged`` False, when the fit is degenerate.
    ``observed``/``expected``: Aalen-Johansen CIF (mean pseudo-observation) and mean risk.
    ``curve_risk``/``curve_observed``: the smoothed calibration curve for plotting.
    """

    horizon: float
    n: int
    ici: float
    e50: float
    e90: float
    slope: float
    intercept: float
    citl: float
    observed: float
    expected: float
    glm_converged: bool
    curve_risk: np.ndarray = field(repr=False)
    curve_observed: np.ndarray = field(repr=False)

    def as_dict(self) -> dict[str, float | int | bool | list[float]]:
        """Plain JSON-friendly values (for MLflow and the model bundle)."""
        out: dict[str, float | int | bool | list[float]] = {
            name: getattr(self, name)
            for name in (
                "horizon",
                "n",
                "ici",
                "e50",
                "e90",
                "slope",
                "intercept",
                "citl",
                "observed",
                "expected",
                "glm_converged",
            )
        }
        out["curve_risk"] = self.curve_risk.tolist()
        out["curve_observed"] = self.curve_observed.tolist()
        return out


def _cloglog(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, RISK_CLIP, 1.0 - RISK_CLIP)
    return np.log(-np.log1p(-p))


def _fit_cloglog_glm(
    pseudo: np.ndarray, lp: np.ndarray, *, free_slope: bool
) -> tuple[np.ndarray, bool]:
    """Quasi-likelihood GLM of pseudo-observations with a cloglog link.

    Pseudo-values leave [0, 1], so a binomial likelihood is not defined; as in pseudo-value
    regression (Andersen & Perme 2010; ``geese(..., mean.link = "cloglog")`` in R) we use the
    Gaussian family with a cloglog link (estimating equations, no likelihood claim) and start
    at perfect calibration (intercept 0, slope 1), where IRLS is well inside the link's domain.
    Degenerate fits come back as NaN with ``converged=False`` rather than as huge numbers: no
    event of the cause by the horizon (all pseudo-values 0), one distinct prediction (no slope),
    IRLS not converged, or a coefficient beyond ``GLM_MAX_ABS_COEF`` (a diverging fit).
    """
    nan = np.full(2 if free_slope else 1, np.nan)
    if pseudo.max() <= 0.0 or pseudo.min() >= 1.0:
        return nan, False
    if free_slope and np.ptp(lp) == 0.0:
        return nan, False
    family = sm.families.Gaussian(link=sm.families.links.CLogLog(), check_link=False)
    if free_slope:
        exog, start, offset = np.column_stack([np.ones_like(lp), lp]), np.array([0.0, 1.0]), None
    else:
        exog, start, offset = np.ones((lp.shape[0], 1)), np.array([0.0]), lp
    # statsmodels warns (non-canonical link, separation, ...) where we check convergence anyway
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            result = sm.GLM(pseudo, exog, family=family, offset=offset).fit(
                start_params=start, maxiter=GLM_MAX_ITER
            )
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            return nan, False
    params = np.asarray(result.params, dtype=float)
    ok = bool(result.converged) and bool(np.all(np.abs(params) < GLM_MAX_ABS_COEF))
    return (params, True) if ok else (nan, False)


def _smoothed_observed(pseudo: np.ndarray, risk: np.ndarray) -> np.ndarray:
    """The calibration curve at each patient's predicted risk: lowess of the pseudo-observations
    on the risk (span ``LOWESS_FRAC``, local linear, ``it=0``: pseudo-values are not outliers to
    down-weight, they are the data)."""
    span = float(risk.max() - risk.min())
    if not span > 0:  # one predicted value: the curve is a single point at the mean pseudo-value
        return np.full_like(risk, pseudo.mean())
    return lowess(
        pseudo,
        risk,
        frac=LOWESS_FRAC,
        it=0,
        delta=LOWESS_DELTA_FRACTION * span,
        return_sorted=False,
    )


def calibration_cr(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, cause: int, horizon: float
) -> CalibrationResult:
    """Calibration at ``horizon`` from pseudo-observations of the Aalen-Johansen CIF.

    Smoother: statsmodels ``lowess`` of the pseudo-observations on the predicted risk, span
    ``LOWESS_FRAC`` = 0.75, local linear, no robustness iterations (``it=0``: pseudo-values are
    not outliers to down-weight, they are the data). Slope and intercept: see
    ``_fit_cloglog_glm``.
    """
    time, event = _check_outcome(time, event)
    cause = _check_cause(cause)
    risk = _check_risk(risk, time.shape[0], probability=True)
    horizon = _check_horizon(horizon)
    pseudo = pseudo_observations(time, event, cause, horizon)

    smoothed = _smoothed_observed(pseudo, risk)
    abs_err = np.abs(smoothed - risk)

    order = np.argsort(risk, kind="mergesort")
    curve_risk = np.linspace(risk.min(), risk.max(), CURVE_POINTS)
    curve_observed = np.interp(curve_risk, risk[order], smoothed[order])

    lp = _cloglog(risk)
    params, conv_joint = _fit_cloglog_glm(pseudo, lp, free_slope=True)
    citl, conv_citl = _fit_cloglog_glm(pseudo, lp, free_slope=False)
    return CalibrationResult(
        horizon=horizon,
        n=int(time.shape[0]),
        ici=float(abs_err.mean()),
        e50=float(np.quantile(abs_err, E50_QUANTILE)),
        e90=float(np.quantile(abs_err, E90_QUANTILE)),
        slope=float(params[1]),
        intercept=float(params[0]),
        citl=float(citl[0]),
        observed=float(pseudo.mean()),
        expected=float(risk.mean()),
        glm_converged=conv_joint and conv_citl,
        curve_risk=curve_risk,
        curve_observed=curve_observed,
    )


def ici_cr(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, cause: int, horizon: float
) -> float:
    """ICI exactly as :func:`calibration_cr` computes it, without the GLM fits (a third of the
    cost of :func:`ici_and_slope_cr`: for bootstraps that need the ICI alone)."""
    time, event = _check_outcome(time, event)
    cause = _check_cause(cause)
    risk = _check_risk(risk, time.shape[0], probability=True)
    horizon = _check_horizon(horizon)
    pseudo = pseudo_observations(time, event, cause, horizon)
    return float(np.mean(np.abs(_smoothed_observed(pseudo, risk) - risk)))


def ici_and_slope_cr(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, cause: int, horizon: float
) -> tuple[float, float]:
    """ICI and calibration slope exactly as :func:`calibration_cr` computes them, without the
    calibration-in-the-large fit and the curve (a third of the cost: for bootstraps)."""
    time, event = _check_outcome(time, event)
    cause = _check_cause(cause)
    risk = _check_risk(risk, time.shape[0], probability=True)
    horizon = _check_horizon(horizon)
    pseudo = pseudo_observations(time, event, cause, horizon)
    smoothed = _smoothed_observed(pseudo, risk)
    params, _ = _fit_cloglog_glm(pseudo, _cloglog(risk), free_slope=True)
    return float(np.mean(np.abs(smoothed - risk))), float(params[1])


# --------------------------------------------------------------------------------------------
# clinical usefulness
# --------------------------------------------------------------------------------------------


def _check_thresholds(thresholds: np.ndarray) -> np.ndarray:
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if np.any(~np.isfinite(thresholds)) or np.any(thresholds < 0) or np.any(thresholds >= 1):
        raise ValueError("thresholds must be finite probabilities in [0, 1)")
    return thresholds


def net_benefit_cr(
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    cause: int,
    horizon: float,
    thresholds: np.ndarray,
) -> np.ndarray:
    """Net benefit of treating patients with ``risk >= pt`` (Vickers et al. 2008).

    ``NB(pt) = P(risk >= pt) F(h | risk >= pt) - P(risk >= pt) (1 - F(h | risk >= pt)) pt/(1-pt)``
    with F the Aalen-Johansen cumulative incidence of ``cause`` among those treated, so competing
    deaths are not counted as harms avoided. Zero when nobody is above the threshold.
    """
    time, event = _check_outcome(time, event)
    cause = _check_cause(cause)
    risk = _check_risk(risk, time.shape[0], probability=True)
    horizon = _check_horizon(horizon)
    thresholds = _check_thresholds(thresholds)
    out = np.zeros(thresholds.shape[0])
    n = time.shape[0]
    for j, pt in enumerate(thresholds):
        treated = risk >= pt
        share = treated.sum() / n
        if share == 0:
            continue
        cif = _cif_at(time[treated], event[treated], cause, horizon)
        out[j] = share * cif - share * (1.0 - cif) * pt / (1.0 - pt)
    return out


def net_benefit_treat_all_cr(
    time: np.ndarray, event: np.ndarray, cause: int, horizon: float, thresholds: np.ndarray
) -> np.ndarray:
    """Net benefit of treating everyone: ``F(h) - (1 - F(h)) pt / (1 - pt)``, F Aalen-Johansen."""
    time, event = _check_outcome(time, event)
    cause = _check_cause(cause)
    horizon = _check_horizon(horizon)
    thresholds = _check_thresholds(thresholds)
    cif = _cif_at(time, event, cause, horizon)
    return cif - (1.0 - cif) * thresholds / (1.0 - thresholds)
