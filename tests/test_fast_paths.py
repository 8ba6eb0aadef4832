"""The served prediction's short paths give the very values of the reference paths.

Issue 11 part 8 made a served call cheaper by skipping repeated input checks, computing one
cause only, packing the trees' nodes and converting tables once; none of that may change an
answer. Each test here computes the same quantity the plain way (scikit-learn's checks, every
cause, the pipeline's own ``predict``, the original numpy formulas) and asks for equality,
bit for bit.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from sklearn.utils.validation import validate_data

from features.timegrid import DEFAULT_GRID
from models._cif import checked_features
from models._flat_forest import apply_all
from models.ensemble import CompetingRiskEnsemble
from models.intervals import fit_resample_intervals
from models.uncertainty import smooth_over_time
from tests.bundle_factory import small_bundle
from tests.survival_sim import simulate

SEED = 5


@lru_cache(maxsize=1)
def data():
    return simulate(260, seed=SEED)


@lru_cache(maxsize=1)
def ensemble() -> CompetingRiskEnsemble:
    X, y = data()
    return CompetingRiskEnsemble(n_estimators=12, cv=2, random_state=SEED, n_jobs=1).fit(X, y)


def test_ensemble_is_the_weighted_sum_of_its_members_public_predictions():
    model = ensemble()
    X, _ = data()
    Xv = validate_data(model, X, dtype=np.float64, reset=False)  # scikit-learn's own checks
    reference = np.zeros((X.shape[0], model.n_causes_, model.event_times_.size))
    for m, (_, est) in enumerate(model.members_):
        w = model.weights_[:, m]
        if np.any(w > 0):
            reference += w[None, :, None] * est.predict_cif(Xv)
    full = model.predict_cif(X)
    assert np.array_equal(full, reference)
    for cause in (1, 2):
        assert np.array_equal(model.predict_cause_cif(X, cause), full[:, cause - 1, :])


def test_forest_one_cause_and_packed_nodes_match_the_trees():
    from tests.test_intervals import cohort

    forest = small_bundle().models["mucosal_necrosis"]
    X = cohort().X
    full = forest.predict_cif(X)
    for cause in (1, 2):
        assert np.array_equal(forest.predict_cause_cif(X, cause), full[:, cause - 1, :])
    X32 = X.to_numpy(dtype=np.float32)
    flat = forest._flat_forest()
    leaves = apply_all(flat, X32) - flat.roots[:, None]
    for b, est in enumerate(forest.estimators_):
        assert np.array_equal(leaves[b], est.tree_.apply(X32))  # scikit-learn's own walk


def test_cox_linear_predictor_is_the_pipelines_own():
    cox = dict(ensemble().members_)["cox"]
    X, _ = data()
    Xv = X.to_numpy(dtype=np.float64)
    for model in cox.models_:
        if model is not None:
            assert np.array_equal(cox._log_risk(model, Xv), model.predict(Xv))


def test_checked_features_short_path_equals_validate_data():
    model = ensemble()
    X, _ = data()
    for dtype in (np.float64, np.float32):
        fast = checked_features(model, X, dtype)
        assert fast.dtype == dtype
        assert np.array_equal(fast, validate_data(model, X, dtype=dtype, reset=False))
    bad = X.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        checked_features(model, bad)
    with pytest.raises(ValueError):  # other columns: scikit-learn's check and message
        checked_features(model, X.rename(columns={X.columns[0]: "other"}))


def _smooth_reference(se: np.ndarray, half_width: int) -> np.ndarray:
    n_t = se.shape[-1]
    csum = np.concatenate([np.zeros(se.shape[:-1] + (1,)), np.cumsum(se, axis=-1)], axis=-1)
    lo = np.clip(np.arange(n_t) - half_width, 0, n_t)
    hi = np.clip(np.arange(n_t) + half_width + 1, 0, n_t)
    return (csum[..., hi] - csum[..., lo]) / (hi - lo)


def test_smoothing_equals_the_plain_formula():
    rng = np.random.default_rng(SEED)
    for shape in ((1, 60), (7, 60), (3, 4, 12)):
        se = rng.random(shape)
        for half in (1, 3, 20):
            assert np.array_equal(smooth_over_time(se, half), _smooth_reference(se, half))


def _neighbours_reference(iv, X):
    xs = iv._standardise(X)
    ref = iv.train_features
    k = min(iv.n_neighbours, ref.shape[0])
    kk = min(2 * k, ref.shape[0])
    d2 = (np.einsum("ij,ij->i", ref, ref)[None, :] - 2.0 * xs @ ref.T
          + np.einsum("ij,ij->i", xs, xs)[:, None])
    part = np.argpartition(d2, kk - 1, axis=1)[:, :kk]
    pd2 = np.take_along_axis(d2, part, axis=1)
    order = np.argsort(pd2, axis=1)
    dist2 = np.maximum(np.take_along_axis(pd2, order, axis=1), 0.0).astype(np.float64)
    return np.take_along_axis(part, order, axis=1), dist2


def test_neighbour_lookup_equals_the_take_along_axis_formula():
    model = ensemble()
    X, y = data()
    iv = fit_resample_intervals(model, X, y, n_resamples=2, resample_params={"n_estimators": 4})
    Xa = X.to_numpy()[:40]
    idx, w = iv.neighbours(Xa)
    ref_idx, ref_d2 = _neighbours_reference(iv, Xa)
    assert np.array_equal(idx, ref_idx)
    h2 = np.maximum(ref_d2[:, [iv.n_neighbours - 1]], 1e-12)
    expect = np.clip(np.exp(-0.5 * ref_d2 / h2) - np.exp(-0.5 * ref_d2[:, [-1]] / h2), 0, None)
    assert np.array_equal(w, expect / expect.sum(axis=1, keepdims=True))


def test_bundle_grid_paths_equal_the_explicit_grid_and_the_warnings_the_per_column_loop():
    from tests.test_intervals import cohort, interval_bundle

    X = cohort().X.iloc[:12].copy()
    X.iloc[0, X.columns.get_loc("gtv_cm3")] = 10_000.0  # outside the training range
    for bundle in (small_bundle(), interval_bundle()):
        points = DEFAULT_GRID.points
        grid = bundle.predict_cif_features(X)
        explicit = bundle.predict_cif_features(X, points)
        bands = bundle.risk_intervals(X, None, cif=grid)
        explicit_bands = bundle.risk_intervals(X, points, cif=explicit)
        for e in grid:
            assert np.array_equal(grid[e], explicit[e])
            assert np.array_equal(bands[e][0], explicit_bands[e][0])
            assert np.array_equal(bands[e][1], explicit_bands[e][1])
        ranges = bundle.training_summary["feature_ranges"]
        expect = [[] for _ in range(len(X))]
        for c, r in ranges.items():
            values = X[c].to_numpy(dtype=float)
            for i in np.flatnonzero((values < r["min"]) | (values > r["max"])):
                expect[i].append(
                    f"{c}={values[i]:g} is outside the training range [{r['min']:g}, {r['max']:g}]"
                )
        assert bundle.applicability_warnings(X) == expect
        assert expect[0]
