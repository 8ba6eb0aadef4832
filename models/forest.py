"""A competing-risks random survival forest on the shared time grid.

Trees are grown by scikit-survival's Cython ``SurvivalTree`` (log-rank splitting); their leaves
are then re-estimated by us as weighted Aalen-Johansen cumulative incidences of every cause.
The forest's CIF is the plain mean over trees, which keeps it linear in the leaf values: exact
TreeSHAP and the infinitesimal-jackknife variance build on that.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from sksurv.tree import SurvivalTree

from features.config import GRID_MAX_MONTHS, GRID_STEP_MONTHS
from features.timegrid import TimeGrid
from models._binning import fit_bin_edges, thresholds_to_raw, to_codes
from models._cif import (
    GridCIFMixin,
    aalen_johansen_grid,
    check_survival_y,
    grid_indices,
    step_on_grid,
)
from models._flat_forest import FlatForest, apply_all, flatten_trees, predict_mean

DEFAULT_N_ESTIMATORS = 300
DEFAULT_MIN_SAMPLES_LEAF = 15
DEFAULT_MIN_SAMPLES_SPLIT = 30
DEFAULT_MAX_FEATURES = "sqrt"
DEFAULT_MAX_BINS = 64
SEED_UPPER = np.iinfo(np.int32).max
"""Per-tree seeds are drawn in [0, SEED_UPPER) from the forest's random_state."""
TREE_LEAF = -1
"""scikit-learn's marker for 'no child' in ``tree_.children_left/right``."""


class CompetingRiskForest(GridCIFMixin, BaseEstimator):
    """Random forest for competing risks: cause-specific log-rank splits, Aalen-Johansen leaves.

    Parameters
    ----------
    n_estimators : number of trees (300: the forest mean is stable to well under a percentage
        point of risk at the cohort's sizes; more only costs time).
    cause : the event code the trees split on and ``predict``/``predict_risk`` report (1).
    min_samples_leaf : minimum number of distinct in-bag patients per leaf (15). Every leaf
        carries a whole Aalen-Johansen curve, and with ~7-25 % event rates a leaf of 15 holds a
        few events: larger leaves keep the curves smooth where the true effects are few and
        smooth and events rare, the situation of small clinical cohorts. On the synthetic
        cohort (n=800, both endpoints) "sqrt" with 15 matched or beat max_features 0.5 and
        leaves of 10-40 in mean absolute error to the true CIF.
    min_samples_split : minimum distinct in-bag patients to split a node (30 = 2 leaves).
    max_features : features tried per split ("sqrt", as in random survival forests; int, float
        fraction or None for all are accepted).
    max_depth : depth limit (None: grow until the leaf-size limits stop it).
    max_samples : bootstrap draws per tree (None: n; int: that many; float in (0, 1]: that
        fraction of n). Only with ``bootstrap=True``.
    bootstrap : draw each tree's sample with replacement (True) or give every tree all data.
    max_bins : candidate split points per feature while growing (64; None: every midpoint).
        Features with at most this many distinct values (flags, stage, rounded doses) are
        exact; continuous ones are split at quantile midpoints. It makes growing O(m * bins)
        instead of O(m^2) per node (see ``models/_binning.py``); the fitted trees hold raw
        thresholds either way.
    time_grid_max, time_grid_step : the time grid (months); the same for every tree.
    n_causes : number of causes K (None: the largest event code seen in ``fit``). Set it when a
        resample may lack the competing cause, so outputs keep their shape.
    n_jobs : threads for fitting (joblib; the tree builders release the GIL) and for
        predicting inputs of 64+ rows (row blocks of the compiled kernel; results do not
        depend on it).
    random_state : seed; every tree's bootstrap and split randomness derives from it.

    Splitting rule
    --------------
    Each tree is a scikit-survival ``SurvivalTree`` fit to the cause-specific indicator
    (event == ``cause``; the competing cause counts as censored), so each split maximises the
    cause-specific log-rank statistic: it separates patients by the hazard of the event of
    interest, the quantity the clinical factors act on. It is what the Cython tree provides
    (fast, weighted); a Fine-Gray (Gray's test) splitting rule is not available there. The
    competing cause still enters the predictions: every leaf holds the Aalen-Johansen CIFs of
    all K causes.

    Bootstrap: per tree, counts are drawn with a seeded generator and passed to
    ``SurvivalTree.fit`` as ``sample_weight`` (scikit-survival 0.28 weights its log-rank
    statistic; zero-weight patients are excluded by the splitter). The same counts weight the
    leaf Aalen-Johansen estimates, so splitting and leaves see the same bootstrap sample.

    Fitted attributes (layout for TreeSHAP and variance estimation)
    ----------------------------------------------------------------
    n_causes_ : K. ``event_times_`` : the grid points (months), length G.
    estimators_ : list of fitted ``SurvivalTree`` (``low_memory=True``: their own node values
        are unused). ``estimators_[b].tree_`` is a scikit-learn ``Tree`` with
        ``children_left``, ``children_right`` (-1 at leaves), ``feature``, ``threshold``
        (go left when ``float32(x[feature]) <= threshold``, X is cast to float32 as in
        scikit-learn), ``n_node_samples`` (distinct in-bag patients) and
        ``weighted_n_node_samples`` (sum of bootstrap counts in the node: the TreeSHAP cover).
    leaf_values_ : list of float64 arrays (n_nodes, K, G), one per tree, indexed by node id.
        Leaf rows are the bootstrap-weighted Aalen-Johansen CIFs of the in-bag patients in the
        leaf; internal rows are the cover-weighted mean of the leaf rows below them (what
        TreeSHAP takes as a node's expected value). Prediction of tree b:
        ``leaf_values_[b][estimators_[b].tree_.apply(X32)]``; the forest is the mean over b.
        Prediction itself uses the same trees flattened into contiguous arrays
        (``models/_flat_forest.py``), built once at fit or at the first prediction after
        loading, and one numba kernel over all trees (``leaf_values_`` are views into them).
    inbag_counts_ : (n_estimators, n_train) unsigned ints, bootstrap count of each patient.
    oob_cif_ : (n_train, K, G) out-of-bag CIFs (NaN for a patient in every tree's bag).
    tree_structures(cause, horizon_index) : the trees as shap custom-tree dicts.
    """

    def __init__(
        self,
        n_estimators: int = DEFAULT_N_ESTIMATORS,
        cause: int = 1,
        min_samples_leaf: int | float = DEFAULT_MIN_SAMPLES_LEAF,
        max_features: int | float | str | None = DEFAULT_MAX_FEATURES,
        max_depth: int | None = None,
        min_samples_split: int | float = DEFAULT_MIN_SAMPLES_SPLIT,
        max_samples: int | float | None = None,
        bootstrap: bool = True,
        max_bins: int | None = DEFAULT_MAX_BINS,
        time_grid_max: float = GRID_MAX_MONTHS,
        time_grid_step: float = GRID_STEP_MONTHS,
        n_causes: int | None = None,
        n_jobs: int | None = None,
        random_state: int | np.random.RandomState | None = None,
    ):
        self.n_estimators = n_estimators
        self.cause = cause
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.max_depth = max_depth
        self.min_samples_split = min_samples_split
        self.max_samples = max_samples
        self.bootstrap = bootstrap
        self.max_bins = max_bins
        self.time_grid_max = time_grid_max
        self.time_grid_step = time_grid_step
        self.n_causes = n_causes
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    def fit(self, X, y) -> CompetingRiskForest:
        """Grow the trees, then re-estimate their leaves. ``y``: structured (event, time)."""
        X32 = validate_data(self, X, dtype=np.float32, ensure_min_samples=2)
        X32 = np.ascontiguousarray(X32)
        event, time = check_survival_y(y)
        if event.shape[0] != X32.shape[0]:
            raise ValueError("X and y have different numbers of rows")
        grid = TimeGrid(self.time_grid_max, self.time_grid_step)
        time_idx, event = grid_indices(grid, time, event)
        self.event_times_ = grid.points
        self.n_causes_ = (
            int(self.n_causes) if self.n_causes is not None else max(int(event.max()), 1)
        )
        if event.max() > self.n_causes_:
            raise ValueError(f"event codes above n_causes={self.n_causes_}")
        if not 1 <= self.cause <= self.n_causes_:
            raise ValueError(f"cause={self.cause} not among the causes 1..{self.n_causes_}")
        if not isinstance(self.n_estimators, Integral) or self.n_estimators < 1:
            raise ValueError("n_estimators must be a positive integer")

        n = X32.shape[0]
        rng = check_random_state(self.random_state)
        seeds = rng.randint(SEED_UPPER, size=self.n_estimators)
        n_draws = self._n_draws(n)
        counts = np.empty((self.n_estimators, n), dtype=np.int64)
        for b, seed in enumerate(seeds):
            if self.bootstrap:
                draws = np.random.default_rng(seed).integers(0, n, size=n_draws)
                counts[b] = np.bincount(draws, minlength=n)
            else:
                counts[b] = 1
        self.inbag_counts_ = counts.astype(np.min_scalar_type(int(counts.max())))

        # the tree sees the cause-specific indicator on the grid times
        y_tree = np.empty(n, dtype=[("event", bool), ("time", float)])
        y_tree["event"] = event == self.cause
        y_tree["time"] = self.event_times_[time_idx]

        if self.max_bins is None:
            edges, X_grow = None, X32
        else:
            edges = fit_bin_edges(X32, int(self.max_bins))
            X_grow = to_codes(X32, edges)
        fitted = Parallel(n_jobs=self.n_jobs, prefer="threads")(
            delayed(self._fit_tree)(
                X_grow, edges, y_tree, time_idx, event, counts[b], int(seeds[b])
            )
            for b in range(self.n_estimators)
        )
        self.estimators_ = [f[0] for f in fitted]
        self.leaf_values_ = [f[1] for f in fitted]
        self.oob_cif_ = self._oob(X32.shape[0], fitted, counts)
        self.__dict__.pop("_flat", None)
        self._flat_forest()
        return self

    def _n_draws(self, n: int) -> int:
        if self.max_samples is None:
            return n
        if not self.bootstrap:
            raise ValueError("max_samples needs bootstrap=True")
        if isinstance(self.max_samples, Integral):
            if not 1 <= self.max_samples <= n:
                raise ValueError(f"max_samples must be in [1, {n}]")
            return int(self.max_samples)
        if isinstance(self.max_samples, Real) and 0 < self.max_samples <= 1:
            return max(1, round(self.max_samples * n))
        raise ValueError("max_samples must be None, an int or a float in (0, 1]")

    def _fit_tree(self, X_grow, edges, y_tree, time_idx, event, counts, seed):
        tree = SurvivalTree(
            max_depth=self.max_depth,
            min_samples_split=self.min_samples_split,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            random_state=seed,
            low_memory=True,
        )
        tree.fit(X_grow, y_tree, sample_weight=counts.astype(np.float64))
        inbag = counts > 0
        t = tree.tree_
        leaves = t.apply(X_grow)
        if edges is not None:
            thresholds_to_raw(t, edges)
        values = aalen_johansen_grid(
            time_idx[inbag],
            event[inbag],
            self.n_causes_,
            self.event_times_.size,
            weights=counts[inbag],
            groups=leaves[inbag],
            n_groups=t.node_count,
        )
        _fill_internal_nodes(values, t.children_left, t.children_right, t.weighted_n_node_samples)
        return tree, values, leaves

    def _oob(self, n: int, fitted, counts) -> np.ndarray:
        total = np.zeros((n, self.n_causes_, self.event_times_.size))
        n_oob = np.zeros(n)
        for (_, values, leaves), c in zip(fitted, counts, strict=True):
            oob = np.flatnonzero(c == 0)
            total[oob] += values[leaves[oob]]
            n_oob[oob] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / n_oob[:, None, None]

    # -------------------------------------------------------------- predict
    def _check_X(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        return np.ascontiguousarray(validate_data(self, X, dtype=np.float32, reset=False))

    def _flat_forest(self) -> FlatForest:
        """The trees as flat arrays, built once (at fit, or at the first prediction of a
        forest loaded from disk: the pickle does not carry them). ``leaf_values_`` then
        become views into the flat values, so the node values are held once."""
        flat = self.__dict__.get("_flat")
        if flat is None:
            trees = [e.tree_ for e in self.estimators_]
            flat = flatten_trees(
                [t.children_left for t in trees],
                [t.children_right for t in trees],
                [t.feature for t in trees],
                [t.threshold for t in trees],
                self.leaf_values_,
            )
            shape = (-1, flat.n_causes, flat.n_grid)
            ends = np.append(flat.roots[1:], flat.values.shape[0])
            self.leaf_values_ = [
                flat.values[a:b].reshape(shape) for a, b in zip(flat.roots, ends, strict=True)
            ]
            self._flat = flat
        return flat

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_flat", None)  # rebuilt lazily; pickling it would store the values twice
        return state

    def _cif_on_grid(self, X) -> np.ndarray:
        X32 = self._check_X(X)
        return predict_mean(self._flat_forest(), X32, self.n_jobs)

    def predict_cif_per_tree(self, X, cause: int | None = None, times=None) -> np.ndarray:
        """Each tree's CIF of ``cause``: (n_estimators, n, len(times)), for variance estimates.

        ``times`` default to the grid points; pass the horizons only to keep memory small.
        """
        k = self._check_cause(cause)
        X32 = self._check_X(X)
        flat = self._flat_forest()
        cols = np.arange(self.event_times_.size) if times is None else self.grid_.index_of(times)
        leaves = apply_all(flat, X32, self.n_jobs)  # (B, n) global node ids
        chosen = flat.values.reshape(-1, flat.n_causes, flat.n_grid)[leaves, k - 1]  # (B, n, G)
        if times is None:
            return chosen
        out = np.zeros(leaves.shape + (cols.size,))
        on_grid = np.flatnonzero(cols >= 0)
        out[:, :, on_grid] = chosen[:, :, cols[on_grid]]
        return out

    def oob_predict_cif(self, times=None) -> np.ndarray:
        """Out-of-bag CIFs of the training patients (n_train, K, len(times)); times: grid points."""
        check_is_fitted(self, "oob_cif_")
        if times is None:
            return self.oob_cif_.copy()
        return step_on_grid(self.oob_cif_.copy(), self.grid_, times)

    # -------------------------------------------------------------- TreeSHAP
    def tree_structures(
        self, cause: int | None = None, horizon_index: int | list[int] | np.ndarray = -1
    ) -> list[dict[str, np.ndarray]]:
        """The trees in shap's custom-tree format, for the CIF of ``cause`` at grid index(es).

        Each dict has ``children_left``, ``children_right``, ``children_default`` (= left; X has
        no missing values), ``features``, ``thresholds`` (float64; compare float32 X),
        ``values`` (n_nodes, n_horizons) = node CIF / n_estimators, so that the SUM over trees
        is the forest's CIF (shap adds tree outputs), and ``node_sample_weight`` (the bootstrap
        cover). ``horizon_index`` indexes ``event_times_`` (``grid_.index_of(h)`` maps months).
        """
        check_is_fitted(self, "estimators_")
        k = self._check_cause(cause)
        j = np.atleast_1d(np.asarray(horizon_index, dtype=int))
        scale = 1.0 / len(self.estimators_)
        out = []
        for tree, values in zip(self.estimators_, self.leaf_values_, strict=True):
            t = tree.tree_
            out.append(
                {
                    "children_left": t.children_left.astype(np.int32),
                    "children_right": t.children_right.astype(np.int32),
                    "children_default": t.children_left.astype(np.int32),
                    "features": t.feature.astype(np.int32),
                    "thresholds": t.threshold.astype(np.float64),
                    "values": values[:, k - 1, :][:, j] * scale,
                    "node_sample_weight": t.weighted_n_node_samples.astype(np.float64),
                }
            )
        return out


def _fill_internal_nodes(values, left, right, cover) -> None:
    """Give each internal node the cover-weighted mean of its children (bottom-up, in place).

    scikit-learn numbers children after their parent, so a reverse pass sees children first.
    """
    for node in range(values.shape[0] - 1, -1, -1):
        lc, rc = left[node], right[node]
        if lc == TREE_LEAF:
            continue
        values[node] = (cover[lc] * values[lc] + cover[rc] * values[rc]) / (cover[lc] + cover[rc])
