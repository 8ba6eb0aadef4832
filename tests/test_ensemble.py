"""CompetingRiskEnsemble: estimator contract, the weights, the criterion and its quality."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from features.timegrid import DEFAULT_GRID, TimeGrid
from models._cif import grid_indices
from models.baselines import CauseSpecificCox
from models.ensemble import CompetingRiskEnsemble, ibs_design, simplex_least_squares
from models.forest import CompetingRiskForest
from tests.survival_sim import simulate
from training.metrics import brier_cr, integrated_brier_cr

N_TRAIN = 500
N_TEST = 2000
N_TREES = 40
SEED = 3


@pytest.fixture(scope="module")
def data():
    return simulate(N_TRAIN, seed=11)


@pytest.fixture(scope="module")
def ensemble(data):
    X, y = data
    return CompetingRiskEnsemble(n_estimators=N_TREES, random_state=SEED, n_jobs=1).fit(X, y)


def test_estimator_contract(ensemble, data):
    X, y = data
    fresh = CompetingRiskEnsemble(n_estimators=N_TREES, random_state=SEED)
    with pytest.raises(NotFittedError):
        fresh.predict_cif(X)
    twin = clone(fresh)
    assert twin.get_params() == fresh.get_params()
    assert twin.set_params(cv=3).cv == 3
    check_is_fitted(ensemble)
    assert ensemble.n_features_in_ == X.shape[1]
    assert list(ensemble.feature_names_in_) == list(X.columns)
    small = CompetingRiskEnsemble(n_estimators=10, cv=2, random_state=0)
    assert small.fit(X.iloc[:150], y[:150]) is small


def test_weights_on_the_simplex(ensemble):
    names = [n for n, _ in ensemble.members_]
    assert names == ["forest_leaf5", "forest_leaf30", "cox"]
    w = ensemble.weights_
    assert w.shape == (2, 3)
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert ensemble.cv_scores_.shape == (2, 3)
    # the chosen combination's CV score cannot exceed a vertex's (any single member)
    assert np.all(ensemble.cv_score_.sum() <= ensemble.cv_scores_.sum(axis=0).min() + 1e-12)


def test_cif_is_a_proper_competing_risks_prediction(ensemble, data):
    X, _ = data
    cif = ensemble.predict_cif(X)
    assert cif.shape == (N_TRAIN, 2, DEFAULT_GRID.points.size)
    assert np.all(cif >= 0)
    assert np.all(np.diff(cif, axis=-1) >= -1e-12)
    assert np.all(cif.sum(axis=1) <= 1 + 1e-12)


def test_prediction_is_the_weighted_sum_of_the_members(ensemble, data):
    X, _ = data
    members = ensemble.predict_member_cifs(X.iloc[:50], times=[12, 24])
    expected = sum(
        ensemble.weights_[:, m][None, :, None] * members[name]
        for m, (name, _) in enumerate(ensemble.members_)
    )
    np.testing.assert_allclose(ensemble.predict_cif(X.iloc[:50], [12, 24]), expected, atol=1e-14)
    np.testing.assert_allclose(
        ensemble.predict_risk(X.iloc[:50], 24, cause=1), expected[:, 0, 1], atol=1e-14
    )


def test_not_worse_than_its_best_member_out_of_sample(ensemble):
    """Integrated Brier on fresh patients: within 0.002 of the best member's."""
    X_test, y_test = simulate(N_TEST, seed=99)
    months = np.arange(1.0, 37.0)
    t, e = y_test["time"], y_test["event"]

    def ibs(cif):
        return integrated_brier_cr(t, e, np.clip(cif[:, 0], 0, 1), 1, months)

    members = {k: ibs(v) for k, v in ensemble.predict_member_cifs(X_test, months).items()}
    assert ibs(ensemble.predict_cif(X_test, months)) <= min(members.values()) + 0.002


def test_ibs_design_reproduces_the_ipcw_brier_score():
    """On grid-valued times, the criterion's Brier at a grid time equals training.metrics'."""
    rng = np.random.default_rng(0)
    n = 300
    grid = TimeGrid(60, 1)
    time = rng.integers(1, 61, size=n).astype(float)
    event = rng.choice([0, 1, 2], size=n, p=[0.4, 0.35, 0.25])
    time_idx, ev = grid_indices(grid, time, event)
    times, W, Y, _ = ibs_design(time_idx, ev, 2, grid.points)
    for j in (0, 5, 23, times.size - 1):
        pred = rng.random(n) * 0.6
        for c in (1, 2):
            ours = float(np.sum(W[:, j] * (Y[c - 1, :, j] - pred) ** 2))
            ref = brier_cr(time, event, pred, c, times[j])
            assert ours == pytest.approx(ref, rel=1e-12, abs=1e-14)


def test_simplex_least_squares_is_the_exact_minimum():
    rng = np.random.default_rng(1)
    for _ in range(20):
        m = 3
        F = rng.random((m, 40))
        y = rng.random(40)
        A = F @ F.T
        b = F @ y
        w = simplex_least_squares(A, b)
        assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-12)
        best = w @ A @ w - 2 * b @ w
        # brute force over a fine grid of the simplex
        steps = np.linspace(0, 1, 101)
        for a, c in itertools.product(steps, steps):
            if a + c <= 1:
                v = np.array([a, c, 1 - a - c])
                assert best <= v @ A @ v - 2 * b @ v + 1e-12
    # a member equal to the truth gets all the weight
    F = rng.random((3, 50))
    w = simplex_least_squares(F @ F.T, F @ F[1])
    np.testing.assert_allclose(w, [0, 1, 0], atol=1e-9)


def test_any_numeric_matrix_and_custom_members():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(240, 7))
    h1 = 0.02 * np.exp(np.sin(2 * X[:, 0]) + 0.5 * X[:, 3] * X[:, 4])
    t1 = rng.exponential(1 / h1)
    t2 = rng.exponential(1 / 0.01, size=240)
    c = rng.uniform(0, 70, size=240)
    y = np.empty(240, dtype=[("event", int), ("time", float)])
    y["time"] = np.minimum.reduce([t1, t2, c])
    y["event"] = np.where(y["time"] == t1, 1, np.where(y["time"] == t2, 2, 0))
    model = CompetingRiskEnsemble(
        estimators=[
            ("rf", CompetingRiskForest(n_estimators=20)),
            ("cox", CauseSpecificCox(alpha=1.0)),
        ],
        oob=False,
        cv=3,
        weighting="per_cause",
        time_grid_max=48,
        time_grid_step=2,
        random_state=0,
    ).fit(X, y)
    assert [n for n, _ in model.members_] == ["rf", "cox"]
    assert model.members_[1][1].alpha == 1.0
    assert model.event_times_[-1] == 48
    assert np.all(model.weights_ >= 0)
    np.testing.assert_allclose(model.weights_.sum(axis=1), 1.0)
    risk = model.predict_risk(X[:5], 24, cause=2)
    assert risk.shape == (5,) and np.all((risk >= 0) & (risk <= 1))
    # deterministic given the seed
    again = clone(model).fit(X, y)
    np.testing.assert_array_equal(again.weights_, model.weights_)
    np.testing.assert_array_equal(again.predict_cif(X[:5]), model.predict_cif(X[:5]))


def test_bad_parameters_are_refused(data):
    X, y = data
    with pytest.raises(ValueError, match="weighting"):
        CompetingRiskEnsemble(weighting="best").fit(X, y)
    with pytest.raises(ValueError, match="cv"):
        CompetingRiskEnsemble(cv=1).fit(X, y)
    with pytest.raises(ValueError, match="distinct"):
        CompetingRiskEnsemble(
            estimators=[("a", CauseSpecificCox()), ("a", CauseSpecificCox())]
        ).fit(X, y)
