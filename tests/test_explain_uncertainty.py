"""Infinitesimal-jackknife intervals of the forest's CIF."""

from __future__ import annotations

import numpy as np

from features.config import HORIZONS_MONTHS
from features.synthetic import simulate_cohort
from models.uncertainty import bundle_intervals, ij_variance, ij_variance_parts, interval
from tests.bundle_factory import small_bundle


def _brute_ij(per_tree: np.ndarray, counts: np.ndarray) -> np.ndarray:
    n_trees, n_train = counts.shape
    out = np.zeros(per_tree.shape[1:])
    for p in range(per_tree.shape[1]):
        for t in range(per_tree.shape[2]):
            tb = per_tree[:, p, t]
            cov = [
                np.mean((counts[:, i] - counts[:, i].mean()) * (tb - tb.mean()))
                for i in range(n_train)
            ]
            raw = np.sum(np.square(cov))
            out[p, t] = raw - n_train * np.sum((tb - tb.mean()) ** 2) / n_trees**2
    return out


def test_ij_matches_definition():
    rng = np.random.default_rng(0)
    n_trees, n_train = 400, 30
    counts = rng.multinomial(n_train, np.full(n_train, 1 / n_train), size=n_trees)
    signal = rng.normal(size=(n_train, 3, 2))
    per_tree = np.einsum("bi,ipt->bpt", counts, signal) / n_train + rng.normal(
        scale=0.01, size=(n_trees, 3, 2)
    )
    v_ij, bias = ij_variance_parts(per_tree, counts)
    np.testing.assert_allclose(v_ij - bias, _brute_ij(per_tree, counts), rtol=1e-10, atol=1e-14)
    floor = bias / counts.shape[1]
    np.testing.assert_allclose(
        ij_variance(per_tree, counts, smooth=0), np.maximum(v_ij - bias, floor)
    )


def test_ij_of_a_linear_bagged_mean_recovers_its_variance():
    """For t_b = mean of y over tree b's bootstrap sample, Var(mean) ~ var(y) / n."""
    rng = np.random.default_rng(1)
    n_train, n_trees = 200, 4000
    y = rng.normal(size=n_train)
    counts = rng.multinomial(n_train, np.full(n_train, 1 / n_train), size=n_trees)
    per_tree = (counts @ y / n_train)[:, None, None]
    v = ij_variance(per_tree, counts, smooth=0)[0, 0]
    target = y.var() / n_train
    assert abs(v - target) / target < 0.15


def test_ij_is_zero_for_noise_unrelated_to_the_data():
    rng = np.random.default_rng(2)
    counts = rng.multinomial(50, np.full(50, 1 / 50), size=2000)
    per_tree = rng.normal(size=(2000, 1, 1))
    raw_scale = per_tree.var()
    assert ij_variance(per_tree, counts, smooth=0)[0, 0] < 0.1 * raw_scale


def test_intervals_contain_the_estimate_and_stay_in_unit_range():
    bundle = small_bundle()
    X = bundle.features(simulate_cohort(20, seed=9))
    for scale in ("logit", "linear"):
        for endpoint, ri in bundle_intervals(bundle, X, HORIZONS_MONTHS, scale=scale).items():
            cif = bundle.models[endpoint].predict_cif(X, HORIZONS_MONTHS)[:, 0, :]
            np.testing.assert_allclose(ri.estimate, cif, atol=1e-12)
            assert np.all(ri.lower <= ri.estimate + 1e-12)
            assert np.all(ri.upper >= ri.estimate - 1e-12)
            assert np.all((ri.lower >= 0) & (ri.upper <= 1))
            assert np.any(ri.upper - ri.lower > 1e-3)


def test_wider_level_gives_wider_interval():
    est, var = np.array([0.2, 0.05]), np.array([0.001, 0.0004])
    _, lo90, hi90 = interval(est, var, level=0.9)
    _, lo99, hi99 = interval(est, var, level=0.99)
    assert np.all(lo99 < lo90) and np.all(hi99 > hi90)


def test_no_zero_width_interval_where_trees_disagree():
    """With few trees the correction can swallow the estimate; the Monte-Carlo floor remains."""
    rng = np.random.default_rng(3)
    counts = rng.multinomial(400, np.full(400, 1 / 400), size=20)
    per_tree = rng.uniform(0.05, 0.3, size=(20, 2, 3))
    assert np.all(ij_variance(per_tree, counts) > 0)


def test_smoothing_averages_neighbouring_times():
    rng = np.random.default_rng(4)
    counts = rng.multinomial(100, np.full(100, 1 / 100), size=300)
    per_tree = rng.uniform(0, 0.2, size=(300, 1, 20))
    raw = ij_variance(per_tree, counts, smooth=0)
    smooth = ij_variance(per_tree, counts, smooth=3)
    assert smooth.shape == raw.shape
    assert np.std(np.diff(smooth[0])) < np.std(np.diff(raw[0]))
