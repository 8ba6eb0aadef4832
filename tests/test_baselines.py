"""Baselines: the shared grid interface, the CIF arithmetic, and each model's behaviour."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sksurv.nonparametric import cumulative_incidence_competing_risks

from features.timegrid import DEFAULT_GRID, HorizonOutOfGridError
from models._cif import cif_from_cumulative_hazard_increments
from models.baselines import CauseSpecificCox, CauseSpecificXGB, PublishedRule
from tests.survival_sim import simulate

N_TRAIN = 500
EXACT = 1e-12
N_GRID = DEFAULT_GRID.points.size


@pytest.fixture(scope="module")
def data():
    return simulate(N_TRAIN, seed=3)


@pytest.fixture(scope="module")
def rule_data():
    """TTR/GTV columns; cause 1's hazard rises with the number of rule factors."""
    rng = np.random.default_rng(5)
    ttr = rng.lognormal(3.5, 0.8, N_TRAIN)
    gtv = rng.lognormal(3.3, 0.9, N_TRAIN)
    n_factors = (ttr <= 24).astype(int) + (gtv > 30).astype(int)
    t1 = rng.exponential(1 / (0.005 * np.exp(1.2 * n_factors)))
    t2 = rng.exponential(1 / 0.01, N_TRAIN)
    c = rng.uniform(0, 80, N_TRAIN)
    time = np.minimum.reduce([t1, t2, c])
    y = np.empty(N_TRAIN, dtype=[("event", int), ("time", float)])
    y["event"] = np.where(time == t1, 1, np.where(time == t2, 2, 0))
    y["time"] = time
    X = pd.DataFrame({"age_years": rng.normal(50, 10, N_TRAIN), "ttr_months": ttr, "gtv_cm3": gtv})
    return X, y, n_factors


def _models():
    return [CauseSpecificCox(), CauseSpecificXGB(n_estimators=60, random_state=0)]


@pytest.mark.parametrize("model", _models(), ids=["cox", "xgb"])
def test_hazard_models_interface_and_direction(model, data):
    X, y = data
    fitted = clone(model).fit(X, y)
    cif = fitted.predict_cif(X)
    assert cif.shape == (N_TRAIN, 2, N_GRID)
    assert np.all(cif >= 0) and np.all(np.diff(cif, axis=-1) >= -EXACT)
    assert np.all(cif.sum(axis=1) <= 1 + EXACT)
    with pytest.raises(HorizonOutOfGridError):
        fitted.predict_risk(X, 60.5)
    np.testing.assert_array_equal(fitted.predict_risk(X, 24), cif[:, 0, 23])
    np.testing.assert_array_equal(fitted.predict(X), cif[:, 0, -1])
    # cause 1 rises with x0 and flag x2 (simulation): shifting them never lowers mean risk
    up = X.assign(x0=X["x0"] + 1.0)
    assert fitted.predict_risk(up, 24).mean() > fitted.predict_risk(X, 24).mean()
    high = X.iloc[:1].assign(x0=2.0, x2=1.0)
    low = X.iloc[:1].assign(x0=-2.0, x2=0.0)
    assert fitted.predict_risk(high, 24)[0] > fitted.predict_risk(low, 24)[0]
    # same parameters (and seed) -> the same predictions
    again = clone(model).fit(X, y)
    np.testing.assert_array_equal(again.predict_cif(X[:20]), cif[:20])
    assert clone(fitted).get_params() == model.get_params()


def test_cox_without_covariate_effect_is_close_to_aalen_johansen(data):
    X, y = data
    flat = CauseSpecificCox(alpha=1e9).fit(X, y)  # ridge shrinks every coefficient to ~0
    cif = flat.predict_cif(X[:1])[0]
    t, e = DEFAULT_GRID.discretize(y["time"], y["event"])
    x, ref = cumulative_incidence_competing_risks(e, t)
    idx = np.searchsorted(x, DEFAULT_GRID.points, side="right") - 1
    np.testing.assert_allclose(cif, ref[1:, idx], atol=0.01)


def test_cif_from_hazards_stays_a_probability():
    rng = np.random.default_rng(0)
    big = rng.exponential(5.0, size=(4, 2, N_GRID))  # hazards far too large for sum S dH
    cif = cif_from_cumulative_hazard_increments(big)
    assert np.all(cif.sum(axis=1) <= 1 + EXACT)
    small = np.full((1, 2, N_GRID), 1e-4)
    h = np.cumsum(small.sum(axis=1), axis=-1)
    s_before = np.exp(-(h - small.sum(axis=1)))
    approx = np.cumsum(s_before[:, None, :] * small, axis=-1)
    np.testing.assert_allclose(cif_from_cumulative_hazard_increments(small), approx, rtol=1e-3)


def test_published_rule_groups_are_aalen_johansen(rule_data):
    X, y, n_factors = rule_data
    rule = PublishedRule().fit(X, y)
    np.testing.assert_array_equal(rule.risk_group(X), n_factors)
    cif = rule.predict_cif(X)
    assert cif.shape == (N_TRAIN, 2, N_GRID)
    t, e = DEFAULT_GRID.discretize(y["time"], y["event"])
    for g in range(3):
        rows = n_factors == g
        x, ref = cumulative_incidence_competing_risks(e[rows], t[rows])
        idx = np.searchsorted(x, DEFAULT_GRID.points, side="right") - 1
        expected = np.where(idx >= 0, ref[1:, np.maximum(idx, 0)], 0.0)
        np.testing.assert_allclose(rule.group_cif_[g], expected, atol=EXACT)
        np.testing.assert_allclose(cif[rows][0], expected, atol=EXACT)
    risk = rule.group_cif_[:, 0, 23]
    assert risk[0] < risk[1] < risk[2]


def test_published_rule_needs_its_columns(rule_data):
    X, y, _ = rule_data
    with pytest.raises(TypeError):
        PublishedRule().fit(X.to_numpy(), y)
    with pytest.raises(ValueError):
        PublishedRule(gtv_column="volume").fit(X, y)
    renamed = X.rename(columns={"gtv_cm3": "volume"})
    a = PublishedRule(gtv_column="volume").fit(renamed, y).predict_cif(renamed)
    np.testing.assert_array_equal(a, PublishedRule().fit(X, y).predict_cif(X))


def test_published_rule_empty_group_falls_back_to_cohort(rule_data):
    X, y, n_factors = rule_data
    keep = n_factors < 2
    rule = PublishedRule().fit(X[keep], y[keep])
    assert rule.group_sizes_[2] == 0
    everyone = PublishedRule(ttr_threshold_months=-1, gtv_threshold_cm3=1e9).fit(X[keep], y[keep])
    np.testing.assert_allclose(rule.group_cif_[2], everyone.group_cif_[0], atol=EXACT)
