"""A competing-risks random survival forest on the shared time grid.

Trees are grown by our compiled builder (``models/_tree_builder.py``: cause-specific or composite
competing-risks log-rank splitting); their leaves are weighted Aalen-Johansen cumulative
incidences of every cause.
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

from features.config import GRID_MAX_MONTHS, GRID_STEP_MONTHS
from models._binning import fit_bin_edges, to_codes
from models._cif import (
    GridCIFMixin,
    aalen_johansen_grid,
    checked_features,
    prepare_grid_outcome,
    step_on_grid,
)
from models._flat_forest import FlatForest, apply_all, flatten_trees, oob_sums, predict_mean
from models._tree_builder import (
    GrownTree,
    apply_codes,
    cause_weights,
    grow_tree,
    to_sklearn_tree,
)

DEFAULT_N_ESTIMATORS = 300
DEFAULT_MIN_SAMPLES_LEAF = 15
DEFAULT_MIN_SAMPLES_SPLIT = 30
DEFAULT_MAX_FEATURES = "sqrt"
DEFAULT_MAX_BINS = 64
DEFAULT_SPLITRULE = "logrank_cs"
SEED_UPPER = np.iinfo(np.int32).max
"""Per-tree seeds are drawn in [0, SEED_UPPER) from the forest's random_state."""
TREE_LEAF = -1
"""scikit-learn's marker for 'no child' in ``tree_.children_left/right``."""
TREE_UNDEFINED = -2
"""scikit-learn's feature and threshold at leaves."""


class CompetingRiskForest(GridCIFMixin, BaseEstimator):
    """Random forest for competing risks: log-rank splits, Aalen-Johansen leaves.

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
        exact; continuous ones are split at quantile midpoints. It makes growing
        O(m log m + bins * G) per node and feature (see ``models/_binning.py``); the fitted
        trees hold raw thresholds either way.
    time_grid_max, time_grid_step : the time grid (months); the same for every tree.
    n_causes : number of causes K (None: the largest event code seen in ``fit``). Set it when a
        resample may lack the competing cause, so outputs keep their shape.
    n_jobs : threads for fitting (joblib; the tree builders release the GIL) and for
        predicting inputs of 64+ rows (row blocks of the compiled kernel; results do not
        depend on it).
    random_state : seed; every tree's bootstrap and split randomness derives from it.

    splitrule : "logrank_cs" (default) or "logrank_composite" (below).

    Splitting rule
    --------------
    ``"logrank_cs"``: each split maximises the cause-specific log-rank statistic of ``cause``
    (the competing cause counts as censored), as scikit-survival's ``SurvivalTree`` does on the
    cause-specific indicator (the tests check the builder's splits against it): it separates
    patients by the hazard of the event of interest. ``"logrank_composite"``: the composite
    competing-risks log-rank statistic of Ishwaran et al. (2014), randomForestSRC's default for
    competing risks: the cause-specific log-rank numerators of all causes summed and divided by
    the square root of their summed variances, so a split that separates any cause's hazard
    scores. Formulas in ``models/_tree_builder.py``. Either way the competing cause enters the
    predictions: every leaf holds the Aalen-Johansen CIFs of all K causes.

    Bootstrap: per tree, counts are drawn with a seeded generator; the split statistics and the
    leaf Aalen-Johansen estimates weight patients by them (a bootstrap sample as replicated
    patients), and out-of-bag patients (count 0) take no part in growing.

    Fitted attributes (layout for TreeSHAP and variance estimation)
    ----------------------------------------------------------------
    n_causes_ : K. ``event_times_`` : the grid points (months), length G.
    estimators_ : list of grown trees (``models._tree_builder.GrownTree``; forests saved before
        the builder hold scikit-survival ``SurvivalTree`` s, which predict alike).
        ``estimators_[b].tree_`` is a scikit-learn ``Tree`` with
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
        splitrule: str = DEFAULT_SPLITRULE,
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
        self.splitrule = splitrule
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    def fit(self, X, y) -> CompetingRiskForest:
        """Grow the trees and estimate their leaves. ``y``: structured (event, time)."""
        X32 = validate_data(self, X, dtype=np.float32, ensure_min_samples=2)
        X32 = np.ascontiguousarray(X32)
        time_idx, event, _ = prepare_grid_outcome(self, X32.shape[0], y)
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

        split_w = cause_weights(self.splitrule, self.cause, self.n_causes_)
        edges = fit_bin_edges(X32, n if self.max_bins is None else int(self.max_bins))
        codes_t = np.ascontiguousarray(to_codes(X32, edges).T.astype(np.int64))
        edge_table = _edge_table(edges)
        limits = self._limits(n, X32.shape[1])
        fitted = Parallel(n_jobs=self.n_jobs, prefer="threads")(
            delayed(self._fit_tree)(
                codes_t, edge_table, time_idx, event, split_w, limits, counts[b], int(seeds[b])
            )
            for b in range(self.n_estimators)
        )
        self.estimators_ = [f[0] for f in fitted]
        self.leaf_values_ = [f[1] for f in fitted]
        self.__dict__.pop("_flat", None)
        self.oob_cif_ = self._oob(X32.shape[0], fitted, counts)
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

    def _limits(self, n: int, n_features: int) -> tuple[int, int, int, int]:
        """(max_features, min_samples_leaf, min_samples_split, max_depth) as integers, with
        scikit-learn's meaning of floats (fractions of n, rounded up) and strings."""
        mf = self.max_features
        if mf is None:
            max_features = n_features
        elif mf == "sqrt":
            max_features = max(1, int(np.sqrt(n_features)))
        elif mf == "log2":
            max_features = max(1, int(np.log2(n_features)))
        elif isinstance(mf, Integral) and 1 <= mf <= n_features:
            max_features = int(mf)
        elif isinstance(mf, Real) and not isinstance(mf, Integral) and 0 < mf <= 1:
            max_features = max(1, int(mf * n_features))
        else:
            raise ValueError(f"max_features={mf!r} is not valid")
        leaf = _count_param(self.min_samples_leaf, n, "min_samples_leaf", minimum=1)
        split = _count_param(self.min_samples_split, n, "min_samples_split", minimum=2)
        if self.max_depth is not None and (
            not isinstance(self.max_depth, Integral) or self.max_depth < 1
        ):
            raise ValueError("max_depth must be None or a positive integer")
        depth = -1 if self.max_depth is None else int(self.max_depth)
        return max_features, leaf, max(split, 2 * leaf), depth

    def _fit_tree(self, codes_t, edge_table, time_idx, event, split_w, limits, counts, seed):
        max_features, leaf, split, depth = limits
        left, right, feature, code, n_node, w_node = grow_tree(
            codes_t,
            time_idx,
            event,
            counts.astype(np.float64),
            self.event_times_.size,
            self.n_causes_,
            split_w,
            max_features,
            leaf,
            split,
            depth,
            seed,
        )
        leaves = apply_codes(codes_t, left, right, feature, code)
        is_split = left >= 0
        threshold = np.full(left.shape[0], float(TREE_UNDEFINED))
        threshold[is_split] = edge_table[feature[is_split], code[is_split]]
        t = to_sklearn_tree(codes_t.shape[0], left, right, feature, threshold, n_node, w_node)
        inbag = counts > 0
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
        return GrownTree(t), values, leaves

    def _oob(self, n: int, fitted, counts) -> np.ndarray:
        flat = self._flat_forest()
        leaves = np.stack([f[2] for f in fitted]) + flat.roots[:, None]  # global node ids
        total, n_oob = oob_sums(leaves, counts, flat.values)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / n_oob[:, None]
        return mean.reshape(n, self.n_causes_, self.event_times_.size)

    # -------------------------------------------------------------- predict
    def _check_X(self, X) -> np.ndarray:
        """float32 C-ordered X (the trees compare in float32), checked once
        (:func:`models._cif.checked_features`)."""
        check_is_fitted(self, "estimators_")
        return np.ascontiguousarray(checked_features(self, X, np.float32))

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
        return predict_mean(self._flat_forest(), self._check_X(X), self.n_jobs)

    def _cif_on_grid_checked(self, Xv: np.ndarray, cause: int | None = None) -> np.ndarray:
        """As ``_cif_on_grid`` for a float64 array its (fitted) caller checked; with
        ``cause``, that cause's CIF only, (n, G)."""
        return predict_mean(self._flat_forest(), Xv.astype(np.float32), self.n_jobs, cause)

    def predict_cause_cif(self, X, cause: int | None = None) -> np.ndarray:
        """CIF of one cause (default ``self.cause``) on the grid, (n, G), computing that
        cause only."""
        k = self._check_cause(cause)
        return predict_mean(self._flat_forest(), self._check_X(X), self.n_jobs, k)

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


def _edge_table(edges: list[np.ndarray]) -> np.ndarray:
    """Bin edges as one (n_features, max edges) table: a split "code <= c" on feature f is
    "x <= table[f, c]" (a split never puts every code left, so c < len(edges[f]))."""
    width = max(1, max(e.size for e in edges))
    table = np.full((len(edges), width), np.inf)
    for f, e in enumerate(edges):
        table[f, : e.size] = e
    return table


def _count_param(value, n: int, name: str, minimum: int) -> int:
    """An int count, or a float fraction of n rounded up (scikit-learn's convention)."""
    if isinstance(value, Integral):
        if value < minimum:
            raise ValueError(f"{name} must be at least {minimum}")
        return int(value)
    if isinstance(value, Real) and 0 < value <= 1:
        return max(minimum, int(np.ceil(value * n)))
    raise ValueError(f"{name} must be an int >= {minimum} or a float in (0, 1]")
