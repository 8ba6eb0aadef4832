"""CompetingRiskForest: interface, estimator conventions and the exactness of its leaves."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sksurv.nonparametric import cumulative_incidence_competing_risks, kaplan_meier_estimator

from features.timegrid import DEFAULT_GRID, HorizonOutOfGridError
from models.forest import DEFAULT_MAX_BINS, CompetingRiskForest
from tests.survival_sim import simulate

N_TRAIN = 400
N_TREES = 30
SEED = 7
EXACT = 1e-12


@pytest.fixture(scope="module")
def data():
    return simulate(N_TRAIN, seed=1)


@pytest.fixture(scope="module")
def forest(data):
    X, y = data
    return CompetingRiskForest(n_estimators=N_TREES, random_state=SEED, n_jobs=1).fit(X, y)


def _on_grid(x, values):
    """A step function given at times x evaluated at the grid points (0 before x[0])."""
    idx = np.searchsorted(x, DEFAULT_GRID.points, side="right") - 1
    return np.where(idx >= 0, values[..., np.maximum(idx, 0)], 0.0)


def test_shapes_and_probability_constraints(forest, data):
    X, _ = data
    cif = forest.predict_cif(X)
    assert cif.shape == (N_TRAIN, 2, DEFAULT_GRID.points.size)
    assert forest.n_causes_ == 2
    np.testing.assert_array_equal(forest.event_times_, DEFAULT_GRID.points)
    assert np.all(cif >= 0) and np.all(cif <= 1)
    assert np.all(np.diff(cif, axis=-1) >= -EXACT)
    assert np.all(cif.sum(axis=1) <= 1 + EXACT)
    assert list(forest.feature_names_in_) == list(X.columns)


def test_step_function_and_horizons(forest, data):
    X, _ = data
    grid_cif = forest.predict_cif(X[:5])
    at = forest.predict_cif(X[:5], times=[0.0, 0.5, 12.0, 12.7, 60.0])
    assert np.all(at[..., :2] == 0.0)
    np.testing.assert_array_equal(at[..., 2], grid_cif[..., 11])
    np.testing.assert_array_equal(at[..., 3], grid_cif[..., 11])
    np.testing.assert_array_equal(at[..., 4], grid_cif[..., -1])
    np.testing.assert_array_equal(forest.predict_risk(X[:5], 24), grid_cif[:, 0, 23])
    np.testing.assert_array_equal(forest.predict_risk(X[:5], 24, cause=2), grid_cif[:, 1, 23])
    np.testing.assert_array_equal(forest.predict(X[:5]), grid_cif[:, 0, -1])
    with pytest.raises(HorizonOutOfGridError):
        forest.predict_risk(X[:5], 61)
    with pytest.raises(HorizonOutOfGridError):
        forest.predict_cif(X[:5], times=[12, 72])
    with pytest.raises(ValueError):
        forest.predict_risk(X[:5], 12, cause=3)


def test_clone_params_and_seed(forest, data):
    X, y = data
    twin = clone(forest)
    assert twin.get_params() == forest.get_params()
    assert not hasattr(twin, "estimators_")
    again = twin.set_params(n_jobs=2).fit(X, y)  # same seed, other thread count
    np.testing.assert_array_equal(again.predict_cif(X[:50]), forest.predict_cif(X[:50]))
    np.testing.assert_array_equal(again.inbag_counts_, forest.inbag_counts_)
    other = clone(forest).set_params(random_state=SEED + 1).fit(X, y)
    assert not np.array_equal(other.predict_cif(X[:50]), forest.predict_cif(X[:50]))


def test_forest_is_mean_of_tree_leaves(forest, data):
    X, _ = data
    X32 = X.to_numpy(dtype=np.float32)
    per_tree = [
        v[t.tree_.apply(X32)] for t, v in zip(forest.estimators_, forest.leaf_values_, strict=True)
    ]
    np.testing.assert_allclose(forest.predict_cif(X), np.mean(per_tree, axis=0), atol=EXACT)
    np.testing.assert_allclose(
        forest.predict_cif_per_tree(X, cause=2), np.stack(per_tree)[:, :, 1, :], atol=EXACT
    )
    at = forest.predict_cif_per_tree(X[:10], times=[0.5, 24])
    assert at.shape == (N_TREES, 10, 2) and np.all(at[..., 0] == 0)
    np.testing.assert_allclose(at[..., 1].mean(axis=0), forest.predict_risk(X[:10], 24), atol=EXACT)


def test_leaf_is_weighted_aalen_johansen_of_inbag_patients(forest, data):
    X, y = data
    tree, values, counts = forest.estimators_[0], forest.leaf_values_[0], forest.inbag_counts_[0]
    t = tree.tree_
    leaves = t.apply(X.to_numpy(dtype=np.float32))
    is_leaf = t.children_left == -1
    # cover = bootstrap counts of the in-bag patients that the raw-valued tree sends there
    cover = np.bincount(leaves, weights=counts, minlength=t.node_count)
    np.testing.assert_allclose(t.weighted_n_node_samples[is_leaf], cover[is_leaf])
    time_grid, event_grid = DEFAULT_GRID.discretize(y["time"], y["event"])
    for leaf in np.flatnonzero(is_leaf)[:3]:
        rows = np.repeat(np.flatnonzero(leaves == leaf), counts[leaves == leaf].astype(int))
        x, cif = cumulative_incidence_competing_risks(event_grid[rows], time_grid[rows])
        np.testing.assert_allclose(values[leaf], _on_grid(x, cif[1:]), atol=EXACT)
    # internal nodes hold the cover-weighted mean of the leaves below (TreeSHAP's node value)
    root = (cover[is_leaf, None, None] * values[is_leaf]).sum(0) / cover[is_leaf].sum()
    np.testing.assert_allclose(values[0], root, atol=EXACT)


def test_single_leaf_single_cause_is_one_minus_kaplan_meier(data):
    X, y = data
    y1 = y.copy()
    y1["event"] = np.where(y["event"] == 1, 1, 0)
    f = CompetingRiskForest(n_estimators=1, bootstrap=False, min_samples_leaf=N_TRAIN, cause=1)
    cif = f.fit(X, y1).predict_cif(X[:3])
    assert cif.shape == (3, 1, DEFAULT_GRID.points.size)
    time_grid, event_grid = DEFAULT_GRID.discretize(y1["time"], y1["event"])
    x, surv = kaplan_meier_estimator(event_grid.astype(bool), time_grid)
    np.testing.assert_allclose(cif[0, 0], 1.0 - _on_grid(x, surv), atol=EXACT)


def test_single_leaf_is_aalen_johansen_of_all_data(data):
    X, y = data
    f = CompetingRiskForest(n_estimators=1, bootstrap=False, min_samples_leaf=N_TRAIN)
    cif = f.fit(X, y).predict_cif(X[:2])
    time_grid, event_grid = DEFAULT_GRID.discretize(y["time"], y["event"])
    x, ref = cumulative_incidence_competing_risks(event_grid, time_grid)
    np.testing.assert_allclose(cif[1], _on_grid(x, ref[1:]), atol=EXACT)


def test_binning_is_exact_for_few_distinct_values(data):
    X, y = data
    Xr = X.round(1)  # every column has fewer than 64 distinct values
    Xr["x0"] = np.clip(Xr["x0"], -2.5, 2.5)
    assert Xr.nunique().max() <= DEFAULT_MAX_BINS
    params = dict(n_estimators=5, random_state=SEED, n_jobs=1)
    binned = CompetingRiskForest(**params).fit(Xr, y)
    exact = CompetingRiskForest(max_bins=None, **params).fit(Xr, y)
    np.testing.assert_allclose(binned.predict_cif(X), exact.predict_cif(X), atol=EXACT)


def test_out_of_bag_predictions(forest, data):
    X, _ = data
    X32 = X.to_numpy(dtype=np.float32)
    i = 3
    oob_trees = np.flatnonzero(forest.inbag_counts_[:, i] == 0)
    assert oob_trees.size > 0
    manual = np.mean(
        [
            forest.leaf_values_[b][forest.estimators_[b].tree_.apply(X32[i : i + 1])][0]
            for b in oob_trees
        ],
        axis=0,
    )
    np.testing.assert_allclose(forest.oob_cif_[i], manual, atol=EXACT)
    np.testing.assert_allclose(forest.oob_predict_cif(times=[24])[i, :, 0], manual[:, 23])
    assert forest.inbag_counts_.shape == (N_TREES, N_TRAIN)
    assert forest.inbag_counts_.dtype.itemsize == 1


def test_tree_structures_reproduce_the_forest(forest, data):
    X, _ = data
    x = X.to_numpy(dtype=np.float32)[:20]
    j = DEFAULT_GRID.index_of([6, 24])
    trees = forest.tree_structures(cause=1, horizon_index=j)
    total = np.zeros((x.shape[0], j.size))
    for tr in trees:
        assert np.all(tr["node_sample_weight"] > 0)
        for r in range(x.shape[0]):
            node = 0
            while tr["children_left"][node] != -1:
                go_left = x[r, tr["features"][node]] <= tr["thresholds"][node]
                node = tr["children_left"][node] if go_left else tr["children_right"][node]
            total[r] += tr["values"][node]
    np.testing.assert_allclose(
        total, forest.predict_cif(X[:20], times=[6, 24])[:, 0, :], atol=EXACT
    )


def test_test_rows_permute_and_training_row_order_without_randomness(data):
    X, y = data
    params = dict(n_estimators=1, bootstrap=False, max_features=None, random_state=0)
    f = CompetingRiskForest(**params).fit(X, y)
    perm = np.random.default_rng(0).permutation(N_TRAIN)
    np.testing.assert_array_equal(f.predict_cif(X.iloc[perm]), f.predict_cif(X)[perm])
    g = CompetingRiskForest(**params).fit(X.iloc[perm], y[perm])
    np.testing.assert_allclose(g.predict_cif(X), f.predict_cif(X), atol=EXACT)


def test_input_checks(data):
    X, y = data
    with pytest.raises(ValueError):
        CompetingRiskForest(n_estimators=2).fit(X, y["time"])
    with pytest.raises(ValueError):
        CompetingRiskForest(n_estimators=2, cause=3).fit(X, y)
    f = CompetingRiskForest(n_estimators=2, n_causes=3).fit(X, y)
    assert f.predict_cif(X[:2]).shape[1] == 3


def test_flat_prediction_survives_pickling_and_matches_tree_by_tree(forest, data):
    """A forest from disk has no flat arrays until its first prediction, then predicts the same."""
    X, _ = data
    X32 = X.to_numpy(dtype=np.float32)
    loaded = pickle.loads(pickle.dumps(forest))
    assert "_flat" not in loaded.__dict__
    np.testing.assert_array_equal(loaded.predict_cif(X), forest.predict_cif(X))
    assert "_flat" in loaded.__dict__
    per_tree = [
        v[t.tree_.apply(X32)] for t, v in zip(loaded.estimators_, loaded.leaf_values_, strict=True)
    ]
    np.testing.assert_allclose(loaded.predict_cif(X), np.mean(per_tree, axis=0), atol=EXACT)
    # the leaf values are views into the flat arrays (held once)
    assert all(np.shares_memory(v, loaded._flat.values) for v in loaded.leaf_values_)
    np.testing.assert_array_equal(
        loaded.predict_cif_per_tree(X[:5]), forest.predict_cif_per_tree(X[:5])
    )


def test_dataframe_short_path_checks_like_scikit_learn(forest, data):
    X, _ = data
    Xs = X.iloc[:7]
    with warnings.catch_warnings():  # an array has no feature names: scikit-learn's path
        warnings.simplefilter("ignore", UserWarning)
        full_check = forest.predict_cif(Xs.to_numpy(dtype=np.float32))
    np.testing.assert_array_equal(forest.predict_cif(Xs), full_check)
    bad = Xs.copy()
    bad.iloc[2, 1] = np.nan
    with pytest.raises(ValueError):
        forest.predict_cif(bad)
    with pytest.raises(ValueError):  # columns in another order: scikit-learn's name check
        forest.predict_cif(Xs[list(X.columns[::-1])])
    with pytest.raises(ValueError):
        forest.predict_cif(Xs.iloc[:0])
