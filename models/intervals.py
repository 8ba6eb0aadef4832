"""Per-patient intervals of the cumulative incidence that aim to cover the *true* risk.

Why not the infinitesimal jackknife (``models/uncertainty.py``): it measures the forest's
sampling variance only. A forest (and any smoother) also shrinks extreme risks towards the
cohort's mean; on the synthetic cohort at n = 600 the top fifth of true necrosis risks is
underestimated by about 0.15 at 24 months, so variance-only intervals covered the truth 61 %
of the time. Bias has to enter the interval.

How (training time, any :class:`~models._cif.GridCIFMixin` estimator):

1. *Parametric resampling from the fitted model.* The fitted CIFs F(t | x_i) of every cause
   are taken as the truth of a simulated world: each training patient gets a new event type
   and time drawn from them, censored by a time drawn from the data's own censoring
   distribution (reverse Kaplan-Meier on the grid). A clone of the model (same parameters,
   fewer trees to save time: ``resample_params``) is refitted on each of R such cohorts, and
   its error on the training patients, D_r(x_i, t) = F*_r - F, is known exactly because the
   truth of that world is F. The mean of D_r is the estimator's bias, its spread the
   estimator's variance, both where the patient sits in feature space.
2. *Shrinkage.* F is itself a shrunk version of the truth, so the bias of a refit on F
   understates the bias of F. With the estimator acting roughly as a linear shrinkage towards
   the mean with slope s(t) (measured in step 1 as the regression slope of F* on F), the
   truth is about F - bias / s and the error spread about sd / s.
3. *Compact storage.* D (n x R x grid, float16), its per-patient mean and variance and the
   standardised training features are stored. Serving looks up the k nearest training
   patients in standardised feature space and averages their bias and variance: no model is
   refitted or re-predicted, a few dozen microseconds per patient.

Interval (variant ``shrink_rms``, the default): centre c = F - b/s, half-width
z * sqrt(v + (b/s)^2) / s, i.e. the uncertainty of the bias correction (of the size of the
correction itself) is added to the variance. Then bounds are clipped to [0, 1], widened to
contain F, and turned into a non-decreasing envelope over the grid (upper: running maximum;
lower: running minimum from the right), which only widens them.

Paired differences (the same patient under two plans): per resample r the neighbour-averaged
deviations of the two rows are subtracted, so the difference's bias and spread come from the
same resamples (paired), then treated as above on [-1, 1].

Coverage of the true risk is measured in ``benchmarks/bench_intervals.py`` on the synthetic
cohort; it is an empirical property of this recipe on that data-generating process, not a
guarantee. For a model trained on real data there is no known truth.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from features.config import EVENT_CENSORED, EVENT_OF_INTEREST
from models._cif import check_survival_y, grid_indices
from models._interval_kernels import (
    VARIANT_CODES,
    corrections,
    interval_bounds,
    neighbour_lookup,
    weighted_average,
)
from models.uncertainty import DEFAULT_LEVEL, normal_quantile, smooth_over_time

DEFAULT_RESAMPLES = 8
"""Refits per endpoint: enough for a mean and a spread per patient once averaged over
neighbours; each costs one fit of the (lightened) model."""
DEFAULT_NEIGHBOURS = 10
DEFAULT_RESAMPLE_PARAMS: dict[str, Any] = {"n_estimators": 50}
"""Applied to each refit when the estimator has the parameter: 50 trees per forest keep the
refits cheap; their extra Monte-Carlo noise only widens the intervals."""
MIN_SLOPE = 0.25
"""Floor of the shrinkage slope s(t) (a near-zero slope would blow the correction up)."""
SMOOTH_HALF_WIDTH = 3
VARIANTS = tuple(VARIANT_CODES)
"""The interval variants' names (their rule: :func:`models._interval_kernels.correction`)."""
LOGIT_FLOOR = 0.02
"""Risks are kept in [floor, 1 - floor] for the logit-scale derivative (no explosion near 0)."""
DEFAULT_VARIANT = "shrink_rms"
SEED_UPPER = 2**31 - 1


def variant_code(variant: str) -> int:
    """The kernels' code of ``variant``; the one check of a variant's name."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    return VARIANT_CODES[variant]


# ----------------------------------------------------------------------- simulation
def censoring_distribution(time_idx: np.ndarray, event: np.ndarray, n_grid: int) -> np.ndarray:
    """P(censoring at grid index j), j = 0..G-1, plus P(no censoring in the grid) last.

    Reverse Kaplan-Meier on the grid: censorings at j are the 'events'; patients with an event
    at j are no longer at risk of censoring there (events precede censorings at a tie).
    Administrative censoring at the grid's end is left to the end of the simulated follow-up.
    """
    cens = np.bincount(time_idx[event == EVENT_CENSORED], minlength=n_grid).astype(float)
    leaving = np.bincount(time_idx, minlength=n_grid).astype(float)
    at_risk = np.cumsum(leaving[::-1])[::-1]
    events_at = leaving - cens
    at_risk_c = at_risk - events_at
    with np.errstate(invalid="ignore", divide="ignore"):
        hazard = np.where(at_risk_c > 0, cens / at_risk_c, 0.0)
    hazard[-1] = 0.0  # censoring at the last grid point is the grid's end, not a draw
    surv = np.cumprod(1.0 - hazard)
    before = np.concatenate([[1.0], surv[:-1]])
    return np.concatenate([before * hazard, [surv[-1]]])


def simulate_from_cif(
    cif: np.ndarray, censoring: np.ndarray, grid_points: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One cohort drawn from grid CIFs ``cif`` (n, K, G): structured (event, time) on the grid."""
    n, k, g = cif.shape
    inc = np.diff(cif, axis=2, prepend=0.0).clip(min=0.0).reshape(n, k * g)
    free = np.clip(1.0 - inc.sum(axis=1), 0.0, None)
    probs = np.concatenate([inc, free[:, None]], axis=1)
    cum = np.cumsum(probs, axis=1)
    u = rng.random(n) * cum[:, -1]
    pick = (cum < u[:, None]).sum(axis=1)
    has_event = pick < k * g
    ev = np.where(has_event, pick // g + 1, EVENT_CENSORED)
    t_idx = np.where(has_event, pick % g, g - 1)
    c_idx = rng.choice(g + 1, size=n, p=censoring / censoring.sum())
    censored = c_idx < t_idx  # an event at the censoring's grid point is seen
    out = np.empty(n, dtype=[("event", np.int64), ("time", np.float64)])
    out["event"] = np.where(censored, EVENT_CENSORED, ev)
    out["time"] = grid_points[np.where(censored, c_idx, t_idx)]
    return out


def _with_params(model, params: dict[str, Any]):
    """An unfitted clone with those of ``params`` it knows."""
    est = clone(model)
    known = est.get_params(deep=False)
    return est.set_params(**{k: v for k, v in params.items() if k in known})


# ------------------------------------------------------------------------ the model
@dataclass
class ResampleIntervals:
    """Fitted interval model of one endpoint's estimator; see the module docstring."""

    feature_mean: np.ndarray
    feature_scale: np.ndarray
    train_features: np.ndarray  # (n, p) float32, standardised
    deviations: np.ndarray  # (n, R, G) float16: F*_r - F at the training patients
    bias: np.ndarray  # (n, G) float32: mean over r
    variance: np.ndarray  # (n, G) float32: variance over r
    slope: np.ndarray  # (G,)
    n_neighbours: int = DEFAULT_NEIGHBOURS
    variant: str = DEFAULT_VARIANT
    weighting: str = "kernel"
    info: dict[str, Any] = field(default_factory=dict)

    # -- lookup ------------------------------------------------------------------------
    def _standardise(self, X) -> np.ndarray:
        x = np.asarray(X, dtype=float)
        return ((x - self.feature_mean) / self.feature_scale).astype(np.float32)

    def same_lookup(self, other: ResampleIntervals) -> bool:
        """True when ``other`` finds the same neighbours with the same weights for any input:
        the endpoints of one bundle share their training patients, so the lookup, most of
        an interval's cost, is done once for both."""
        return (
            self.n_neighbours == other.n_neighbours
            and getattr(self, "weighting", "kernel") == getattr(other, "weighting", "kernel")
            and self.train_features.dtype == other.train_features.dtype
            and np.array_equal(self.feature_mean, other.feature_mean)
            and np.array_equal(self.feature_scale, other.feature_scale)
            and np.array_equal(self.train_features, other.train_features)
        )

    def neighbours(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(indices, weights), each (m, 2k): each row's 2k nearest training patients in
        standardised feature space and their weights (summing to 1 per row).

        ``weighting`` "kernel" (default): a Gaussian kernel whose bandwidth is the distance to
        the k-th neighbour, minus its value at the 2k-th, so a weight falls continuously to 0
        where a neighbour leaves the set: the looked-up figures change smoothly with the
        inputs, and two close dose plans get close, not identical, deviations (their paired
        difference interval shrinks with the plans' difference instead of collapsing).
        "uniform": the k nearest, equally weighted.
        """
        xs = self._standardise(X)
        ref = self.train_features
        k = min(self.n_neighbours, ref.shape[0])
        kk = min(2 * k, ref.shape[0])
        uniform = getattr(self, "weighting", "kernel") == "uniform"
        return neighbour_lookup(np.ascontiguousarray(xs), ref, k, kk, uniform)

    def _average(self, values: np.ndarray, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Weighted average over each row's neighbours of per-training-patient ``values``."""
        picked = values[idx].astype(np.float32 if values.dtype == np.float16 else float)
        return np.einsum("mk,mk...->m...", w.astype(picked.dtype), picked)

    # -- intervals ---------------------------------------------------------------------
    def grid_interval(
        self,
        X,
        cif_grid: np.ndarray,
        level: float = DEFAULT_LEVEL,
        neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) on the whole grid, each (m, G), around ``cif_grid`` (m, G).

        0 <= lower <= cif <= upper <= 1, both non-decreasing along the grid. ``neighbours``:
        :meth:`neighbours` of ``X`` when the caller has them, from this model or one for
        which :meth:`same_lookup` holds (a bundle's endpoints look them up once).
        """
        code = variant_code(self.variant)
        cif_grid = np.ascontiguousarray(cif_grid, dtype=float)
        idx, w = self.neighbours(X) if neighbours is None else neighbours
        return interval_bounds(
            cif_grid,
            weighted_average(self.bias, idx, w),
            weighted_average(self.variance, idx, w),
            np.asarray(self.slope, dtype=float),
            code,
            SMOOTH_HALF_WIDTH,
            normal_quantile(level),
            LOGIT_FLOOR,
        )

    def grid_difference(
        self,
        X,
        cif: np.ndarray,
        cols: np.ndarray,
        reference: int = 0,
        level: float = DEFAULT_LEVEL,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(estimate, lower, upper) of each row's CIF minus row ``reference``'s, each (m, T).

        ``cif``: the rows' CIFs at the requested times, ``cols`` those times' grid indices (-1:
        before the grid, difference 0). Paired: per resample r, the difference of the two rows'
        neighbour-averaged deviations. Averaging over neighbours smooths the deviations, so
        their spread is scaled back up by the ratio of the local variance to the averaged
        deviations' variance (at least 1).
        """
        code = variant_code(self.variant)
        cif = np.asarray(cif, dtype=float)
        idx, w = self.neighbours(X)
        dev = self._average(self.deviations, idx, w)  # (m, R, G)
        local_var = self._average(self.variance, idx, w).astype(float)
        dev_var = dev.var(axis=1, ddof=1).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(dev_var > 0, local_var / dev_var, 1.0).clip(min=1.0)
        diff = (dev - dev[[reference]]).astype(float)
        bias = diff.mean(axis=1)
        var = diff.var(axis=1, ddof=1) * 0.5 * (ratio + ratio[[reference]])
        shift, se_lo, se_hi = corrections(
            np.ascontiguousarray(smooth_over_time(bias, SMOOTH_HALF_WIDTH), dtype=float),
            np.ascontiguousarray(smooth_over_time(var, SMOOTH_HALF_WIDTH), dtype=float),
            np.asarray(self.slope, dtype=float),
            code,
        )
        cols = np.asarray(cols)
        on = cols >= 0
        pick = np.maximum(cols, 0)
        shift = np.where(on, shift[:, pick], 0.0)
        se_lo = np.where(on, se_lo[:, pick], 0.0)
        se_hi = np.where(on, se_hi[:, pick], 0.0)
        z = normal_quantile(level)
        estimate = cif - cif[[reference]]
        centre = estimate - shift
        lower = np.minimum(np.clip(centre - z * se_lo, -1.0, 1.0), estimate)
        upper = np.maximum(np.clip(centre + z * se_hi, -1.0, 1.0), estimate)
        return estimate, lower, upper

    @property
    def nbytes(self) -> int:
        return int(
            self.train_features.nbytes
            + self.deviations.nbytes
            + self.bias.nbytes
            + self.variance.nbytes
        )


def fit_resample_intervals(
    model,
    X: pd.DataFrame | np.ndarray,
    y: np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    random_state: int = 0,
    resample_params: dict[str, Any] | None = None,
    cause: int = EVENT_OF_INTEREST,
    n_neighbours: int = DEFAULT_NEIGHBOURS,
    variant: str = DEFAULT_VARIANT,
) -> ResampleIntervals:
    """Fit the interval model of a *fitted* grid estimator ``model`` on its training data.

    Never reads a true risk: the only truth used is the fitted model's own CIFs, in the
    simulated world of step 1. Cost: ``n_resamples`` fits of the lightened clone.
    """
    if n_resamples < 2:
        raise ValueError("n_resamples must be at least 2")
    variant_code(variant)
    started = time.perf_counter()
    params = dict(DEFAULT_RESAMPLE_PARAMS if resample_params is None else resample_params)
    grid = model.grid_
    points = grid.points
    cif = np.asarray(model.predict_cif(X), dtype=float)  # (n, K, G)
    n, n_causes, n_grid = cif.shape
    params.setdefault("n_causes", n_causes)
    event, t = check_survival_y(y)
    time_idx, ev_grid = grid_indices(grid, t, event)
    censoring = censoring_distribution(time_idx, ev_grid, n_grid)
    seeds = np.random.SeedSequence([int(random_state), 0x1A7E]).generate_state(n_resamples + 1)
    rng = np.random.default_rng(int(seeds[-1]))
    base = cif[:, cause - 1, :]
    deviations = np.empty((n, n_resamples, n_grid), dtype=np.float32)
    for r in range(n_resamples):
        y_sim = simulate_from_cif(cif, censoring, points, rng)
        est = _with_params(model, {**params, "random_state": int(seeds[r]) % SEED_UPPER})
        refit = est.fit(X, y_sim)
        deviations[:, r, :] = np.asarray(refit.predict_cif(X), dtype=float)[:, cause - 1, :] - base
    # shrinkage slope of the refits on their truth F, per grid time
    centred = base - base.mean(axis=0)
    denom = (centred**2).sum(axis=0)
    refits = deviations + base[:, None, :]
    num = np.einsum("nt,nrt->t", centred, refits - refits.mean(axis=0, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(denom > 0, num / (n_resamples * denom), 1.0)
    slope = np.clip(np.nan_to_num(slope, nan=1.0), MIN_SLOPE, 1.0)
    x = np.asarray(X, dtype=float)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return ResampleIntervals(
        feature_mean=mean,
        feature_scale=scale,
        train_features=((x - mean) / scale).astype(np.float32),
        deviations=deviations.astype(np.float16),
        bias=deviations.mean(axis=1).astype(np.float32),
        variance=deviations.var(axis=1, ddof=1).astype(np.float32),
        slope=slope,
        n_neighbours=int(n_neighbours),
        variant=variant,
        info={
            "method": "parametric resampling from the fitted model, nearest-neighbour lookup",
            "n_resamples": int(n_resamples),
            "n_train": int(n),
            "resample_params": {k: v for k, v in params.items() if k != "n_causes"},
            "n_neighbours": int(n_neighbours),
            "variant": variant,
            "fit_seconds": round(time.perf_counter() - started, 2),
        },
    )


# ------------------------------------------------------------------------- the bundle
COVERAGE_RECORD_FILE = Path(__file__).with_name("interval_coverage.json")
"""Written by ``benchmarks/bench_intervals.py --record``: the coverage of the true risk that the
method reached on the synthetic cohort, with the configuration and n it was simulated at."""


MODEL_KINDS = {"CompetingRiskForest": "forest", "CompetingRiskEnsemble": "ensemble"}
"""Estimator class -> the benchmark's name for it (the coverage record is kept per kind)."""


def coverage_record(model: Any = None, path: Path | None = None) -> dict[str, Any] | None:
    """The benchmark's coverage record for ``model``'s kind (forest, ensemble): the common
    fields plus ``model`` and ``by_n``; None when it has not been measured for that kind.

    ``path``: a record file of the same layout (default: the per-patient intervals' record;
    ``training/validation_coverage.json`` is the validated figures')."""
    try:
        data = json.loads((path or COVERAGE_RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    kind = MODEL_KINDS.get(type(model).__name__, type(model).__name__)
    entry = (data.get("by_model") or {}).get(kind)
    if entry is None:
        return None
    common = {k: v for k, v in data.items() if k != "by_model"}
    return {**common, "model": kind, **entry}


def fit_bundle_intervals(
    models: dict[str, Any],
    X: pd.DataFrame,
    y: dict[str, np.ndarray],
    n_resamples: int = DEFAULT_RESAMPLES,
    random_state: int = 0,
    resample_params: dict[str, Any] | None = None,
) -> dict[str, ResampleIntervals]:
    """One interval model per endpoint, for the fitted ``models`` on their training data."""
    return {
        e: fit_resample_intervals(
            m,
            X,
            y[e],
            n_resamples=n_resamples,
            random_state=int(np.random.SeedSequence([int(random_state), i]).generate_state(1)[0]),
            resample_params=resample_params,
        )
        for i, (e, m) in enumerate(models.items())
    }


RESAMPLE_CI_NOTE = (
    "Intervals are {level:.0%} intervals built at training time from refits of the model on "
    "cohorts simulated from it, corrected for the model's pull towards the average risk (its "
    "bias), not only for its sampling variability. {measured} This model was trained on "
    "{source}; {truth}"
)
NO_TRUTH_REAL = (
    "for a model trained on real data the true risks are unknown, so the coverage of its own "
    "intervals cannot be measured: the figures above are the method's on simulated data, not "
    "a guarantee for this model."
)
NO_TRUTH_SYNTHETIC = (
    "even then, only the benchmark's simulated cohorts have a known truth; a model trained on "
    "real data has none, and its coverage cannot be measured."
)


def coverage_note(bundle, level: float = DEFAULT_LEVEL) -> str | None:
    """One paragraph for the report and the model card: the method, the coverage record the
    bundle carries (configuration and n it was simulated at), and that a model trained on real
    data has no known truth. None for a bundle without interval models."""
    if getattr(bundle, "intervals", None) is None:
        return None
    record = getattr(bundle, "interval_record", None) or {}
    by_n = record.get("by_n") or {}
    if by_n:
        parts = [
            f"{100 * r['coverage']:.0f}% at n = {n} (lowest fifth of true risk "
            f"{100 * r['min_quintile_coverage']:.0f}%; {r['training_cohorts']} training cohorts)"
            for n, r in sorted(by_n.items(), key=lambda kv: int(kv[0]))
        ]
        measured = (
            f"On synthetic cohorts ({record.get('model', 'model')}, "
            f"{record.get('mix', 'modern mix')}, measured {record.get('measured', 'n/a')}) the "
            f"same method covered the true risk in {'; '.join(parts)} of patient-horizon pairs "
            f"(nominal {level:.0%}; benchmarks/RESULTS.md)."
        )
    else:
        measured = "Their coverage of the true risk has not been measured for this build."
    prov = dict(getattr(bundle, "provenance", None) or {})
    source = str(prov.get("data_source", "an unrecorded data source"))
    n_rows = prov.get("development_rows") or (getattr(bundle, "training_summary", None) or {}).get(
        "n_rows"
    )
    trained_on = f"{n_rows} patients ({source})" if n_rows else source
    return RESAMPLE_CI_NOTE.format(
        level=level,
        measured=measured,
        source=trained_on,
        truth=NO_TRUTH_SYNTHETIC if source.startswith("synthetic") else NO_TRUTH_REAL,
    )
