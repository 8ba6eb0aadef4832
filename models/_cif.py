"""Cumulative incidence on the shared time grid: the one place the models do grid arithmetic.

Every model in :mod:`models` (the forest, the baselines) produces cause-specific cumulative
incidence functions (CIFs) as arrays ``(n, K, n_grid)`` over ``TimeGrid.points`` and answers
``predict_cif`` / ``predict_risk`` / ``predict`` through :class:`GridCIFMixin`, so the step-function
convention (value at the last grid point <= t, 0 before the first) exists once.

The weighted Aalen-Johansen estimator here is deliberately separate from
``training/metrics.py::cumulative_incidence`` (the evaluation one): the dependency direction is
features <- models <- training, so models cannot import training. It is also a different job:
this one works on grid indices, takes bootstrap weights and estimates many groups (tree leaves)
in one vectorised pass. scikit-survival's ``cumulative_incidence_competing_risks`` is unweighted
and one group per call, which would be thousands of calls per forest.
"""

from __future__ import annotations

import numba
import numpy as np
from sklearn.utils.validation import validate_data

from features.config import EVENT_CENSORED
from features.timegrid import TimeGrid


def check_survival_y(y) -> tuple[np.ndarray, np.ndarray]:
    """Return (event int array, time float array) from a structured ``y`` with those fields."""
    names = getattr(getattr(y, "dtype", None), "names", None)
    if not names or "event" not in names or "time" not in names:
        raise ValueError(
            "y must be a structured array with fields 'event' (int) and 'time' (float)"
        )
    event = np.asarray(y["event"])
    if event.dtype == bool:
        event = event.astype(int)
    if not np.all(np.equal(np.mod(event, 1), 0)) or np.any(event < EVENT_CENSORED):
        raise ValueError("y['event'] must hold integer codes: 0 censored, 1..K causes")
    return event.astype(np.int64), np.asarray(y["time"], dtype=float)


def grid_indices(
    grid: TimeGrid, time: np.ndarray, event: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Discretise onto ``grid``: (index into grid.points, event censored past the grid's end)."""
    t_grid, e_grid = grid.discretize(time, event)
    idx = np.rint(t_grid / grid.step_months).astype(np.int64) - 1
    return idx, e_grid.astype(np.int64)


def prepare_grid_outcome(model, n_rows: int, y) -> tuple[np.ndarray, np.ndarray, int]:
    """Check ``y`` against ``n_rows``, discretise it onto the model's grid and set the fitted
    ``event_times_`` and ``n_causes_`` (from ``model.n_causes`` or the largest event code).

    One place for what every grid estimator's ``fit`` starts with (forest, ensemble,
    baselines), so that they refuse the same outcomes with the same messages.
    Returns (time_idx, event, n_causes).
    """
    event, time = check_survival_y(y)
    if event.shape[0] != n_rows:
        raise ValueError("X and y have different numbers of rows")
    grid = TimeGrid(model.time_grid_max, model.time_grid_step)
    time_idx, event = grid_indices(grid, time, event)
    model.event_times_ = grid.points
    k = int(model.n_causes) if model.n_causes is not None else max(int(event.max()), 1)
    if event.max() > k:
        raise ValueError(f"event codes above n_causes={k}")
    if not 1 <= model.cause <= k:
        raise ValueError(f"cause={model.cause} not among the causes 1..{k}")
    model.n_causes_ = k
    return time_idx, event, k


def aalen_johansen_grid(
    time_idx: np.ndarray,
    event: np.ndarray,
    n_causes: int,
    n_grid: int,
    weights: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    n_groups: int | None = None,
) -> np.ndarray:
    """Weighted Aalen-Johansen CIFs on the grid, one per group: array (n_groups, K, n_grid).

    ``time_idx`` are grid indices (0-based), ``event`` codes 0..K, ``weights`` non-negative
    (bootstrap counts; default 1), ``groups`` integer labels in [0, n_groups) (default one group).
    Ties: events at a grid point happen before censorings there (the usual convention), so a
    patient censored at t is still at risk at t. F_k(t_j) = sum_{i<=j} S(t_{i-1}) d_k(i) / Y(i),
    S(t_j) = prod_{i<=j} (1 - d(i) / Y(i)). A group with no weight gets an all-zero CIF.
    """
    time_idx = np.asarray(time_idx, dtype=np.int64)
    event = np.asarray(event, dtype=np.int64)
    w = np.ones(time_idx.shape[0]) if weights is None else np.asarray(weights, dtype=float)
    if groups is None:
        groups = np.zeros(time_idx.shape[0], dtype=np.int64)
        n_groups = 1
    groups = np.asarray(groups, dtype=np.int64)
    if n_groups is None:
        n_groups = int(groups.max()) + 1 if groups.size else 1
    cell = groups * n_grid + time_idx
    size = n_groups * n_grid
    leaving = np.bincount(cell, weights=w, minlength=size).reshape(n_groups, n_grid)
    # at risk at t_j: weight of everyone whose (event or censoring) time is >= t_j
    at_risk = np.cumsum(leaving[:, ::-1], axis=1)[:, ::-1]
    d = np.empty((n_groups, n_causes, n_grid))
    for k in range(1, n_causes + 1):
        wk = np.where(event == k, w, 0.0)
        d[:, k - 1, :] = np.bincount(cell, weights=wk, minlength=size).reshape(n_groups, n_grid)
    with np.errstate(invalid="ignore", divide="ignore"):
        hazard = np.where(at_risk[:, None, :] > 0, d / at_risk[:, None, :], 0.0)
    return cif_from_discrete_hazards(hazard)


def cif_from_discrete_hazards(hazard: np.ndarray) -> np.ndarray:
    """CIFs (..., K, G) from discrete cause-specific hazards (..., K, G) (Aalen-Johansen form)."""
    total = hazard.sum(axis=-2)
    surv = np.cumprod(1.0 - total, axis=-1)
    surv_before = np.concatenate([np.ones_like(surv[..., :1]), surv[..., :-1]], axis=-1)
    return np.cumsum(surv_before[..., None, :] * hazard, axis=-1)


def cif_from_cumulative_hazard_increments(
    d_cumhaz: np.ndarray, cause: int | None = None
) -> np.ndarray:
    """CIFs (n, K, G) from increments dH_k of cause-specific cumulative hazards (n, K, G);
    with ``cause``, that cause's CIF only, (n, G) (the same operations on its slice: the
    same bits as the full result's, for half the work at two causes).

    F_k(t_j) = sum_{i<=j} S(t_{i-1}) P(event in (t_{i-1}, t_i] | alive) dH_k(i) / dH(i), with
    S = exp(-sum_k H_k). This is the textbook sum S(s-) dH_k(s) made exact for hazards that are
    constant within a grid step: for small steps it equals S(s-) dH_k(s), and unlike the plain
    sum it can never push sum_k F_k above 1 - S when a Cox model's increments are large.
    """
    d = np.ascontiguousarray(d_cumhaz, dtype=np.float64)
    if cause is not None:
        return _cif_kernel(d, np.array([cause - 1], dtype=np.int64))[:, 0, :]
    return _cif_kernel(d, np.arange(d.shape[1], dtype=np.int64))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _cif_kernel(d_cumhaz, causes):
    """:func:`cif_from_cumulative_hazard_increments` for the 0-based ``causes``, (n, C, G).

    Compiled, one row at a time: a served patient's Cox member was a dozen numpy calls on
    60-point arrays, as costly as walking all its forests' trees; a row's values never depend
    on the other rows of the call.
    """
    n, n_causes, n_grid = d_cumhaz.shape
    out = np.empty((n, causes.shape[0], n_grid))
    acc = np.empty(causes.shape[0])
    for i in range(n):
        cum_total = 0.0
        acc[:] = 0.0
        for j in range(n_grid):
            d_total = 0.0
            for k in range(n_causes):
                d_total += d_cumhaz[i, k, j]
            cum_total += d_total
            # S(t_{j-1}) P(event in step j | alive), S(t_{j-1}) as exp(-(H(t_j) - dH(t_j)))
            weight = np.exp(-(cum_total - d_total)) * -np.expm1(-d_total)
            for c in range(causes.shape[0]):
                share = d_cumhaz[i, causes[c], j] / d_total if d_total > 0 else 0.0
                acc[c] += weight * share
                out[i, c, j] = acc[c]
    return out


def breslow_increments(
    time_idx: np.ndarray, is_event: np.ndarray, risk: np.ndarray, n_grid: int
) -> np.ndarray:
    """Breslow baseline cumulative-hazard increments on the grid: d(t_j) / sum_{T >= t_j} r.

    Hand-written rather than sksurv's ``BreslowEstimator`` because that returns step functions on
    the unique training times (domain errors outside them) and we need grid values for two models
    (Cox and XGBoost) whose risk scores come from different places.
    """
    risk = np.asarray(risk, dtype=float)
    leaving = np.bincount(time_idx, weights=risk, minlength=n_grid)
    risk_set = np.cumsum(leaving[::-1])[::-1]
    d = np.bincount(time_idx, weights=is_event.astype(float), minlength=n_grid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(risk_set > 0, d / risk_set, 0.0)


def checked_features(model, X, dtype=np.float64) -> np.ndarray:
    """``X`` as a ``dtype`` array for a fitted ``model``, checked as scikit-learn checks it.

    A DataFrame with exactly the fitted column names (numeric or boolean) takes a short path
    with the same result: scikit-learn's ``validate_data`` costs ~0.1-0.6 ms per call, more
    than predicting one patient, and a served ensemble used to pay it eight times per request.
    Anything else goes through ``validate_data`` (its checks, messages and warnings).
    """
    names = getattr(model, "feature_names_in_", None)
    columns = getattr(X, "columns", None)
    if (
        names is not None
        and columns is not None
        and len(columns) == len(names)
        and all(str(c) == n for c, n in zip(columns, names, strict=True))
        # one array: numeric only if every column is (a text or mixed column makes it object)
        and (raw := X.to_numpy()).dtype.kind in "biuf"
    ):
        arr = raw.astype(dtype, copy=False)
        if arr.shape[0] < 1:
            raise ValueError("X has 0 samples; at least 1 is required")
        if not np.isfinite(arr).all():
            raise ValueError("Input X contains NaN or infinity.")
        return arr
    return validate_data(model, X, dtype=dtype, reset=False)


class GridCIFMixin:
    """``predict_cif`` / ``predict_risk`` / ``predict`` for a model that yields CIFs on its grid.

    The host class sets ``time_grid_max``, ``time_grid_step`` and ``cause`` in ``__init__`` and
    ``n_causes_`` and ``event_times_`` in ``fit``, and implements ``_cif_on_grid(X)`` returning
    (n, K, n_grid). A model may also implement ``_cif_on_grid_checked(Xv, cause=None)``, the
    same on a float64 array already checked by a caller (an ensemble checks its input once
    for all its members), or with ``cause`` that cause's CIF only, (n, n_grid).
    """

    @property
    def grid_(self) -> TimeGrid:
        return TimeGrid(self.time_grid_max, self.time_grid_step)

    def _cif_on_grid(self, X) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_cause(self, cause: int | None) -> int:
        k = self.cause if cause is None else int(cause)
        if not 1 <= k <= self.n_causes_:
            raise ValueError(f"cause {k} not in 1..{self.n_causes_}")
        return k

    def predict_cif(self, X, times=None) -> np.ndarray:
        """Cumulative incidence of every cause: array (n, K, len(times)).

        ``times`` default to the grid points. A CIF is a step function on the grid: its value at t
        is the value at the last grid point <= t (0 before the first point). Times beyond the
        grid raise ``HorizonOutOfGridError``.
        """
        cif = self._cif_on_grid(X)
        if times is None:
            return cif
        return step_on_grid(cif, self.grid_, times)

    def predict_cause_cif(self, X, cause: int | None = None) -> np.ndarray:
        """CIF of one cause (default ``self.cause``) on the grid: array (n, n_grid).

        ``predict_cif(X)[:, cause - 1, :]``; a model that can compute one cause for less
        (the forest, the ensemble) overrides it with the same values."""
        k = self._check_cause(cause)
        return self._cif_on_grid(X)[:, k - 1, :]

    def predict_risk(self, X, horizon: float, cause: int | None = None) -> np.ndarray:
        """Cumulative incidence of ``cause`` (default ``self.cause``) by ``horizon`` months (n,)."""
        k = self._check_cause(cause)
        return self.predict_cif(X, times=[horizon])[:, k - 1, 0]

    def predict(self, X) -> np.ndarray:
        """Risk score for scikit-learn tools: CIF of ``self.cause`` at the grid's last point."""
        k = self._check_cause(None)
        return self._cif_on_grid(X)[:, k - 1, -1]


def step_on_grid(cif: np.ndarray, grid: TimeGrid, times) -> np.ndarray:
    """Evaluate grid CIFs (..., G) at ``times``: value at the last grid point <= t, 0 before."""
    idx = grid.index_of(times)
    out = cif[..., np.maximum(idx, 0)]
    out[..., idx < 0] = 0.0
    return out
