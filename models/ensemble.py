"""A stacked competing-risks ensemble: a super learner over the forest and a Cox model.

Why: with a few hundred patients and a handful of smooth effects, a cause-specific Cox model
predicts the cumulative incidence better than a forest; with interactions or many patients the
forest can be better. Rather than choose by hand, the ensemble fits every member, predicts each
patient's CIFs out of fold (K-fold cross-validation inside ``fit``), and picks, per cause, the
convex combination of the members' CIFs with the lowest cross-validated integrated Brier score
(IPCW, competing risks). The best single member is one of the candidates (a vertex of the
simplex), so the ensemble's CV score is never above its best member's; out of sample it can be
worse only by the noise of choosing M - 1 weights.

The served CIF is linear in the members' CIFs: ``F_k(t | x) = sum_m weights_[k-1, m] F_mk(t | x)``,
so any attribution that is linear in the model (Shapley values) is the same weighted sum of the
members' attributions.
"""

from __future__ import annotations

import itertools
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import StratifiedKFold
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from features.config import GRID_MAX_MONTHS, GRID_STEP_MONTHS
from models._cif import GridCIFMixin, checked_features, prepare_grid_outcome
from models.baselines import COX_RIDGE_ALPHA, CauseSpecificCox, CauseSpecificXGB
from models.forest import DEFAULT_N_ESTIMATORS, CompetingRiskForest

DEFAULT_LEAF_SIZES: tuple[int, ...] = (5, 30)
"""Two forests, one rough (leaves of 5) and one smooth (leaves of 30): the super learner picks
the smoothness (and so the leaf size) by cross-validation instead of a grid search."""
DEFAULT_CV = 5
DEFAULT_COX_PENALTY_GRID: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
"""Ridge penalties of the Cox member as multiples of each cause's event count (0: the fixed
small ridge), chosen per cause by penalised AIC (``CauseSpecificCox.penalty_grid``)."""
SEED_UPPER = np.iinfo(np.int32).max
WEIGHTINGS = ("per_cause", "shared")
IBS_QUANTILE = 0.9
"""The integrated Brier score runs over the grid points up to this quantile of the observed
follow-up times (event or censoring): beyond it the censoring weights 1/G explode."""
FOREST_PREFIX = "forest"
COX_NAME = "cox"
XGB_NAME = "xgb"


class CompetingRiskEnsemble(GridCIFMixin, BaseEstimator):
    """Super learner over competing-risks models on the shared time grid.

    Parameters
    ----------
    estimators : list of (name, unfitted estimator) or None. None: the default members, a
        :class:`~models.forest.CompetingRiskForest` per leaf size in ``forest_leaf_sizes`` and
        a ridge-penalised :class:`~models.baselines.CauseSpecificCox` (and
        :class:`~models.baselines.CauseSpecificXGB` if ``include_xgb``). Given members are
        cloned and must follow the grid interface (``fit(X, y)``, ``predict_cif(X)`` on the
        grid); their grid, ``cause``, ``n_causes`` and seeds are set by the ensemble when they
        have those parameters.
    forest_leaf_sizes : ``min_samples_leaf`` of each default forest member.
    n_estimators : trees per default forest member.
    cox_alpha : smallest ridge penalty of the default Cox member (on standardised features).
    cox_penalty_grid : the Cox member's candidate penalties as multiples of each cause's
        number of events, chosen per cause by penalised AIC (None: ``cox_alpha`` only).
    include_xgb : add the gradient-boosted Cox member (off by default: exact per-coalition
        explanations of boosted trees are too slow for the serving budget).
    cv : number of folds (stratified by event code) for the out-of-fold CIFs.
    oob : use a bagged member's out-of-bag CIFs (``oob_predict_cif``) as its out-of-fold
        CIFs (True, the default): each forest is then fitted once instead of ``cv + 1``
        times, which keeps n = 10,000 within minutes. Out-of-bag predictions are honest
        (no patient is predicted by a tree that saw it) but average ~37 % of the trees and
        learn from ~63 % of the patients, so they slightly understate a forest against a
        ``cv``-fold Cox model; False refits every member per fold.
    weighting : "shared" (the default: one weight vector minimising the sum over causes of
        the CV integrated Brier scores) or "per_cause" (each cause its own weights). A shared
        combination is a mixture of the members' distributions, so it is a proper
        competing-risks model: CIFs non-decreasing and summing over causes to at most 1.
        Per-cause weights can break the sum (on the synthetic cohort at n = 600 they did, for
        1 % of patient-times), so they are an option only.
    cause : the cause ``predict``/``predict_risk`` report by default.
    time_grid_max, time_grid_step : the time grid (months), passed to every member.
    n_causes : K (None: the largest event code seen in ``fit``); passed to every member.
    n_jobs : threads for the forest members.
    random_state : seed for the folds and every member.

    Fitted attributes
    -----------------
    members_ : list of (name, estimator fitted on all the data).
    weights_ : array (n_causes, n_members); row k-1 are the weights of cause k, non-negative,
        summing to 1.
    cv_scores_ : array (n_causes, n_members): each member's cross-validated integrated Brier
        score per cause (lower is better).
    cv_score_ : array (n_causes,): the CV integrated Brier score of the chosen combination.
    ibs_times_ : the grid points the integrated Brier score runs over.
    n_causes_, event_times_ : as for every grid model.
    """

    def __init__(
        self,
        estimators: list[tuple[str, Any]] | None = None,
        forest_leaf_sizes: tuple[int, ...] = DEFAULT_LEAF_SIZES,
        n_estimators: int = DEFAULT_N_ESTIMATORS,
        cox_alpha: float = COX_RIDGE_ALPHA,
        cox_penalty_grid: tuple[float, ...] | None = DEFAULT_COX_PENALTY_GRID,
        include_xgb: bool = False,
        cv: int = DEFAULT_CV,
        oob: bool = True,
        weighting: str = "shared",
        cause: int = 1,
        time_grid_max: float = GRID_MAX_MONTHS,
        time_grid_step: float = GRID_STEP_MONTHS,
        n_causes: int | None = None,
        n_jobs: int | None = None,
        random_state: int | np.random.RandomState | None = None,
    ):
        self.estimators = estimators
        self.forest_leaf_sizes = forest_leaf_sizes
        self.n_estimators = n_estimators
        self.cox_alpha = cox_alpha
        self.cox_penalty_grid = cox_penalty_grid
        self.include_xgb = include_xgb
        self.cv = cv
        self.oob = oob
        self.weighting = weighting
        self.cause = cause
        self.time_grid_max = time_grid_max
        self.time_grid_step = time_grid_step
        self.n_causes = n_causes
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------------ members
    def member_estimators(
        self, n_causes: int | None = None, seed: int = 0
    ) -> list[tuple[str, Any]]:
        """The unfitted members, configured as the ensemble will fit them.

        Also what a training job evaluates as stand-alone candidates, so that each member's
        validated figures sit beside the ensemble's on equal terms.
        """
        if self.estimators is not None:
            members = [(str(name), clone(est)) for name, est in self.estimators]
        else:
            members = [
                (
                    f"{FOREST_PREFIX}_leaf{int(leaf)}",
                    CompetingRiskForest(
                        n_estimators=self.n_estimators,
                        min_samples_leaf=int(leaf),
                        min_samples_split=2 * int(leaf),
                    ),
                )
                for leaf in self.forest_leaf_sizes
            ]
            members.append(
                (
                    COX_NAME,
                    CauseSpecificCox(alpha=self.cox_alpha, penalty_grid=self.cox_penalty_grid),
                )
            )
            if self.include_xgb:
                members.append((XGB_NAME, CauseSpecificXGB()))
        names = [n for n, _ in members]
        if not members or len(set(names)) != len(names):
            raise ValueError(f"members need distinct names and at least one member: {names}")
        shared = {
            "cause": self.cause,
            "time_grid_max": self.time_grid_max,
            "time_grid_step": self.time_grid_step,
            "n_causes": self.n_causes if n_causes is None else n_causes,
            "n_jobs": self.n_jobs,
        }
        out = []
        for m, (name, est) in enumerate(members):
            known = est.get_params(deep=False)
            params = {k: v for k, v in shared.items() if k in known}
            if "n_jobs" in params and params["n_jobs"] is None:
                del params["n_jobs"]
            if "random_state" in known:
                params["random_state"] = int(seed + m) % SEED_UPPER
            out.append((name, est.set_params(**params)))
        return out

    # ---------------------------------------------------------------------- fit
    def fit(self, X, y) -> CompetingRiskEnsemble:
        """Out-of-fold CIFs of every member, weights per cause, then every member on all data."""
        Xv = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}")
        if not isinstance(self.cv, Integral) or self.cv < 2:
            raise ValueError("cv must be an integer >= 2")
        time_idx, event, k = prepare_grid_outcome(self, Xv.shape[0], y)
        grid = self.grid_

        rng = check_random_state(self.random_state)
        fold_seed, member_seed = (int(s) for s in rng.randint(SEED_UPPER, size=2))
        members = self.member_estimators(n_causes=k, seed=member_seed)
        oof, fitted = self._out_of_fold(Xv, y, event, members, fold_seed)

        self.ibs_times_, ipcw, outcome, dt = ibs_design(time_idx, event, k, grid.points)
        n_members = len(members)
        self.cv_scores_ = np.empty((k, n_members))
        self.weights_ = np.empty((k, n_members))
        self.cv_score_ = np.empty(k)
        gram = np.empty((k, n_members, n_members))
        lin = np.empty((k, n_members))
        const = np.empty(k)
        cols = np.arange(self.ibs_times_.size)
        for c in range(k):
            F = oof[:, :, c, : cols.size]  # (M, n, T)
            gram[c], lin[c], const[c] = _quadratic(F, outcome[c], ipcw, dt)
            self.cv_scores_[c] = np.diag(gram[c]) - 2 * lin[c] + const[c]
        if self.weighting == "shared":
            w = simplex_least_squares(gram.sum(0), lin.sum(0))
            self.weights_[:] = w
        else:
            for c in range(k):
                self.weights_[c] = simplex_least_squares(gram[c], lin[c])
        for c in range(k):
            w = self.weights_[c]
            self.cv_score_[c] = w @ gram[c] @ w - 2 * w @ lin[c] + const[c]

        self.members_ = [
            (name, fitted[m] if fitted[m] is not None else est.fit(Xv, y))
            for m, (name, est) in enumerate(members)
        ]
        return self

    def _uses_oob(self, est) -> bool:
        return (
            bool(self.oob)
            and hasattr(est, "oob_predict_cif")
            and est.get_params().get("bootstrap", False)
        )

    def _out_of_fold(self, Xv, y, event, members, seed: int) -> tuple[np.ndarray, list]:
        """(n_members, n, K, G) CIFs, each patient's from models that did not see it.

        Also returns, per member, the model fitted on all data when the out-of-bag route
        produced it (else None).
        """
        n = Xv.shape[0]
        oof = np.zeros((len(members), n, self.n_causes_, self.event_times_.size))
        fitted: list = [None] * len(members)
        for m, (_, est) in enumerate(members):
            if self._uses_oob(est):
                fitted[m] = est.fit(Xv, y)
                cif = fitted[m].oob_predict_cif()
                missing = np.isnan(cif).any(axis=(1, 2))  # in every tree's bag (few trees)
                if missing.all():
                    raise ValueError("no out-of-bag predictions: use more trees or oob=False")
                cif[missing] = cif[~missing].mean(axis=0)
                oof[m] = cif
        cv_members = [m for m in range(len(members)) if fitted[m] is None]
        n_splits = min(int(self.cv), n)
        # stratify on the event code when every code is frequent enough, else on nothing
        counts = np.bincount(event)
        strata = event if counts[counts > 0].min() >= n_splits else np.zeros(n, dtype=int)
        folds = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
        if cv_members:
            for train, test in folds.split(Xv, strata):
                for m in cv_members:
                    model = clone(members[m][1]).fit(Xv[train], y[train])
                    oof[m, test] = model.predict_cif(Xv[test])
        return np.nan_to_num(np.clip(oof, 0.0, 1.0)), fitted

    # ------------------------------------------------------------------ predict
    def _cif_on_grid(self, X) -> np.ndarray:
        """The weighted sum of the members' CIFs. The input is checked here once; members
        with ``_cif_on_grid_checked`` take it as is (each member's own check of the same
        array cost more than its prediction of one patient)."""
        check_is_fitted(self, "members_")
        Xv = checked_features(self, X)
        out = np.zeros((Xv.shape[0], self.n_causes_, self.event_times_.size))
        for m, (_, est) in enumerate(self.members_):
            w = self.weights_[:, m]
            if np.any(w > 0):
                checked = getattr(est, "_cif_on_grid_checked", None)
                cif = checked(Xv) if checked is not None else est.predict_cif(Xv)
                out += w[None, :, None] * cif
        return out

    def predict_cause_cif(self, X, cause: int | None = None) -> np.ndarray:
        """CIF of one cause on the grid, (n, G): the weighted sum of the members' CIFs of that
        cause, each member computing only that cause when it can (the same sums in the same
        order as ``predict_cif``, so the same values)."""
        check_is_fitted(self, "members_")
        k = self._check_cause(cause)
        Xv = checked_features(self, X)
        out = np.zeros((Xv.shape[0], self.event_times_.size))
        for m, (_, est) in enumerate(self.members_):
            w = self.weights_[k - 1, m]
            if w > 0:
                out += w * _member_cause_cif(est, Xv, k)
        return out

    def predict_member_cifs(self, X, times=None) -> dict[str, np.ndarray]:
        """Each fitted member's CIFs (n, K, len(times)) by name: what the weights combine."""
        check_is_fitted(self, "members_")
        Xv = validate_data(self, X, dtype=np.float64, reset=False)
        return {name: est.predict_cif(Xv, times) for name, est in self.members_}

    def weights_table(self) -> list[dict[str, Any]]:
        """Members, their weight and CV integrated Brier score per cause (for model cards)."""
        check_is_fitted(self, "members_")
        rows = []
        for m, (name, est) in enumerate(self.members_):
            rows.append(
                {
                    "member": name,
                    "estimator": type(est).__name__,
                    "weights": [float(w) for w in self.weights_[:, m]],
                    "cv_ibs": [float(s) for s in self.cv_scores_[:, m]],
                }
            )
        return rows


def _member_cause_cif(est, Xv: np.ndarray, cause: int) -> np.ndarray:
    """A fitted member's CIF of ``cause`` on the grid (n, G) for an already checked array."""
    checked = getattr(est, "_cif_on_grid_checked", None)
    if checked is None:
        return est.predict_cif(Xv)[:, cause - 1, :]
    return checked(Xv, cause)


# -------------------------------------------------------------------- the criterion
def ibs_design(
    time_idx: np.ndarray, event: np.ndarray, n_causes: int, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grid-point IPCW Brier ingredients: (times, weights (n, T), outcome (K, n, T), dt (T,)).

    The Brier score of cause k at grid time t_j is ``mean_i W_ij (Y_ijk - F_ik(t_j))^2`` with
    Y_ijk = 1 if patient i had cause k by t_j, W_ij = 1/G(T_i-) for an event by t_j, 1/G(t_j) for
    a patient still at risk after t_j and 0 for one censored by t_j (the weights of
    ``training.metrics.brier_cr``; G is the reverse Kaplan-Meier with events first at ties,
    here on the grid). ``dt`` are trapezoid weights over the times divided by their span, so
    ``sum_j dt_j Brier_j`` is the integrated Brier score (one time: its Brier score).
    """
    n_grid = points.size
    n = time_idx.size
    leaving = np.bincount(time_idx, minlength=n_grid).astype(float)
    at_risk = np.cumsum(leaving[::-1])[::-1]
    d_any = np.bincount(time_idx, weights=(event > 0).astype(float), minlength=n_grid)
    cens = leaving - d_any
    risk_set = at_risk - d_any
    with np.errstate(invalid="ignore", divide="ignore"):
        haz = np.where(risk_set > 0, cens / risk_set, 0.0)
    G = np.cumprod(1.0 - haz)  # G(t_j), right-continuous
    G_before = np.concatenate(([1.0], G[:-1]))  # G(t_j-)
    last = int(np.clip(np.ceil(np.quantile(time_idx, IBS_QUANTILE)), 0, n_grid - 1))
    last = max(last, 0)
    T = last + 1
    j = np.arange(T)
    ti = time_idx[:, None]
    observed = (event > 0)[:, None] & (ti <= j[None, :])
    beyond = ti > j[None, :]
    with np.errstate(divide="ignore"):
        w_event = np.where(G_before[time_idx] > 0, 1.0 / G_before[time_idx], 0.0)
        w_beyond = np.where(G[:T] > 0, 1.0 / G[:T], 0.0)
    W = np.where(observed, w_event[:, None], 0.0) + np.where(beyond, w_beyond[None, :], 0.0)
    outcome = np.stack(
        [((event == c)[:, None] & (ti <= j[None, :])).astype(float) for c in range(1, n_causes + 1)]
    )
    times = points[:T]
    if T == 1:
        dt = np.ones(1)
    else:
        gaps = np.diff(times)
        dt = np.zeros(T)
        dt[:-1] += gaps / 2
        dt[1:] += gaps / 2
        dt /= times[-1] - times[0]
    return times, W / n, outcome, dt


def _quadratic(F: np.ndarray, Y: np.ndarray, W: np.ndarray, dt: np.ndarray):
    """IBS(w) = w'Aw - 2 b'w + c for the combination sum_m w_m F_m: returns (A, b, c).

    F: (M, n, T) member CIFs of one cause; Y: (n, T) outcome; W: (n, T) weights (already / n).
    """
    C = W * dt[None, :]
    M = F.shape[0]
    Fw = F * C[None]
    A = np.einsum("mit,lit->ml", Fw, F).reshape(M, M)
    b = np.einsum("mit,it->m", Fw, Y)
    c = float(np.sum(C * Y * Y))
    return A, b, c


def simplex_least_squares(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin w'Aw - 2b'w over the simplex (w >= 0, sum w = 1), exactly, for a few members.

    Enumerates the supports: on each, the equality-constrained minimiser solves the KKT system;
    the best feasible one is the global minimum (the problem is convex). Ties go to the smaller
    support, then to the earlier members, so the choice is deterministic.
    """
    A = np.asarray(A, dtype=float)
    b = np.asarray(b, dtype=float)
    M = b.size
    best_w, best_val = None, np.inf
    scale = max(float(np.abs(A).max()), 1e-300)
    for size in range(1, M + 1):
        for support in itertools.combinations(range(M), size):
            s = list(support)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = 2 * A[np.ix_(s, s)]
            kkt[:size, size] = 1.0
            kkt[size, :size] = 1.0
            rhs = np.concatenate((2 * b[s], [1.0]))
            sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
            ws = sol[:size]
            if np.any(ws < -1e-12) or abs(ws.sum() - 1.0) > 1e-9:
                continue
            w = np.zeros(M)
            w[s] = np.clip(ws, 0.0, None)
            w /= w.sum()
            val = float(w @ A @ w - 2 * b @ w)
            if val < best_val - 1e-12 * scale:
                best_w, best_val = w, val
    assert best_w is not None  # every vertex is feasible
    return best_w
