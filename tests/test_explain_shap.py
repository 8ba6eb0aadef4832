"""Exact TreeSHAP of the forest's CIF: additivity, and agreement with brute-force Shapley values."""

from __future__ import annotations

from itertools import combinations
from math import factorial

import numpy as np
import pandas as pd
import pytest
import shap

from features.config import ENDPOINTS, HORIZONS_MONTHS
from features.pipeline import FEATURE_COLUMNS
from models.explain import (
    ADDITIVITY_TOL,
    TECHNIQUE_GROUP,
    BundleExplainer,
    ForestExplainer,
    describe_value,
    importance,
    top_factors,
)
from models.forest import CompetingRiskForest
from tests.bundle_factory import small_bundle

N_SMALL_FEATURES = 4
SMALL_TREES = 4
AGREE_TOL = 1e-9


@pytest.fixture(scope="module")
def bundle():
    return small_bundle()


@pytest.fixture(scope="module")
def patients(bundle):
    from features.synthetic import simulate_cohort

    records = simulate_cohort(25, seed=123)
    return bundle.features(records)


@pytest.fixture(scope="module")
def small_forest():
    """A few shallow trees on four features: small enough to enumerate every coalition."""
    rng = np.random.default_rng(7)
    n = 240
    X = pd.DataFrame(rng.normal(size=(n, N_SMALL_FEATURES)), columns=list("abcd"))
    hazard = np.exp(0.9 * X["a"] - 0.6 * X["b"] + 0.4 * X["a"] * X["c"])
    t_event = rng.exponential(20 / hazard)
    t_comp = rng.exponential(40, size=n)
    t_cens = rng.uniform(5, 70, size=n)
    time = np.minimum.reduce([t_event, t_comp, t_cens])
    event = np.select([time == t_event, time == t_comp], [1, 2], 0)
    y = np.array(list(zip(event, time, strict=True)), dtype=[("event", int), ("time", float)])
    forest = CompetingRiskForest(
        n_estimators=SMALL_TREES,
        n_causes=2,
        min_samples_leaf=12,
        min_samples_split=24,
        max_features=None,
        max_depth=4,
        random_state=3,
    ).fit(X, y)
    return forest, X


def _tree_path_value(tree: dict, x: np.ndarray, subset: set[int]) -> np.ndarray:
    """E[f(x) | x_S] under the tree-path distribution (Lundberg et al. 2020, Algorithm 1)."""

    def g(node: int) -> np.ndarray:
        left, right = tree["children_left"][node], tree["children_right"][node]
        if left < 0:
            return tree["values"][node]
        f = tree["features"][node]
        if f in subset:
            go_left = np.float32(x[f]) <= tree["thresholds"][node]
            return g(left if go_left else right)
        w = tree["node_sample_weight"]
        return (w[left] * g(left) + w[right] * g(right)) / w[node]

    return g(0)


def _shapley(value_of, n_features: int) -> np.ndarray:
    """Shapley values by enumerating all coalitions of the value function value_of(set)."""
    values = {
        s: value_of(set(s))
        for k in range(n_features + 1)
        for s in combinations(range(n_features), k)
    }
    phi = []
    for i in range(n_features):
        others = [f for f in range(n_features) if f != i]
        total = 0.0
        for k in range(n_features):
            w = factorial(k) * factorial(n_features - k - 1) / factorial(n_features)
            for s in combinations(others, k):
                total = total + w * (values[tuple(sorted(s + (i,)))] - values[s])
        phi.append(total)
    return np.array(phi)


def test_path_dependent_matches_brute_force(small_forest):
    forest, X = small_forest
    trees = forest.tree_structures(None, np.arange(forest.event_times_.size))
    explainer = ForestExplainer(forest)
    for row in (0, 5, 17):
        x = X.to_numpy()[row]
        brute = _shapley(
            lambda s, x=x: sum(_tree_path_value(t, x, s) for t in trees), N_SMALL_FEATURES
        )
        got = explainer.explain(X.iloc[[row]]).values[0]
        assert np.abs(brute).max() > 1e-3  # the check is not vacuous
        np.testing.assert_allclose(got, brute, rtol=0, atol=AGREE_TOL)


def test_interventional_matches_brute_force(small_forest):
    """v(S) = mean over the background of f(x_S, b_rest), every coalition enumerated."""
    forest, X = small_forest
    background = X.iloc[:8]
    explainer = ForestExplainer(forest, background=background)
    x = X.to_numpy()[40]

    def value(s: set[int]) -> np.ndarray:
        hybrid = background.to_numpy().copy()
        hybrid[:, sorted(s)] = x[sorted(s)]
        return forest.predict_cif(pd.DataFrame(hybrid, columns=X.columns))[:, 0, :].mean(0)

    brute = _shapley(value, N_SMALL_FEATURES)
    got = explainer.explain(X.iloc[[40]])
    assert np.abs(brute).max() > 1e-3
    np.testing.assert_allclose(got.values[0], brute, rtol=0, atol=AGREE_TOL)
    np.testing.assert_allclose(got.base_values, value(set()), atol=AGREE_TOL)


@pytest.mark.slow  # shap's Exact explainer compiles its numba kernels on first use (~30 s)
def test_interventional_matches_shap_exact(small_forest):
    forest, X = small_forest
    background = X.iloc[:12]
    explainer = ForestExplainer(forest, background=background)
    j = 23  # 24 months
    masker = shap.maskers.Independent(background.to_numpy(), max_samples=len(background))

    def f(data: np.ndarray) -> np.ndarray:
        return forest.predict_cif(pd.DataFrame(data, columns=X.columns))[:, 0, j]

    exact = shap.explainers.Exact(f, masker)(X.iloc[30:33].to_numpy())
    got = explainer.explain(X.iloc[30:33])
    np.testing.assert_allclose(got.values[:, :, j], exact.values, rtol=0, atol=AGREE_TOL)
    np.testing.assert_allclose(got.base_values[j], exact.base_values[0], atol=AGREE_TOL)
    assert np.abs(exact.values).max() > 1e-3


@pytest.mark.parametrize("method", ["path_dependent", "interventional"])
def test_additivity_both_endpoints_all_times(bundle, patients, method):
    background = patients.iloc[:10] if method == "interventional" else None
    explanations = BundleExplainer(bundle, background=background).explain(patients)
    assert set(explanations) == set(ENDPOINTS)
    for endpoint, exp in explanations.items():
        assert exp.method == method
        assert exp.values.shape == (len(patients), len(FEATURE_COLUMNS), 60)
        cif = bundle.models[endpoint].predict_cif(patients)[:, 0, :]
        np.testing.assert_allclose(exp.prediction, cif, atol=1e-12)
        for h in HORIZONS_MONTHS:
            base, phi, pred = exp.at(h)
            assert np.max(np.abs(base + phi.sum(axis=1) - pred)) <= ADDITIVITY_TOL
        grouped = exp.grouped()
        assert TECHNIQUE_GROUP in grouped.feature_names
        assert grouped.additivity_error() <= ADDITIVITY_TOL


def test_path_dependent_base_is_mean_in_bag_prediction(bundle):
    """The path-dependent base value is the trees' cover-weighted mean of their leaves."""
    forest = bundle.models["mucosal_necrosis"]
    exp = ForestExplainer(forest)
    by_tree = [v[0, 0, :] for v in forest.leaf_values_]  # root rows: cover-weighted means
    np.testing.assert_allclose(exp.base_values_, np.mean(by_tree, axis=0), atol=1e-12)


def test_clinician_wording_and_factors(bundle, patients):
    assert describe_value("reirr_eqd2_gy", 72.04) == "re-irradiation EQD2 72 Gy"
    assert describe_value("rt_stage", 3.0) == "rT stage rT3"
    assert describe_value("chemotherapy", 0.0) == "no chemotherapy with re-irradiation"
    assert describe_value(TECHNIQUE_GROUP, "primary_technique_imrt") == (
        "first-course technique IMRT"
    )
    exp = BundleExplainer(bundle).explain(patients.iloc[[3]])["mucosal_necrosis"]
    factors = top_factors(exp, row=0, horizon=24, k=5)
    assert len(factors) == 5
    sizes = [abs(f.shap) for f in factors]
    assert sizes == sorted(sizes, reverse=True)
    _, phi, _ = exp.grouped().at(24)
    assert sizes[0] == pytest.approx(np.abs(phi[0]).max())
    assert all(("raises" in f.sentence) != ("lowers" in f.sentence) for f in factors)


def test_importance_table(bundle, patients):
    exp = BundleExplainer(bundle).explain(patients)["fatal_haemorrhage"]
    table = importance(exp)
    assert list(table.columns) == [f"{h} months" for h in HORIZONS_MONTHS]
    assert table["24 months"].is_monotonic_decreasing
    assert (table.to_numpy() >= 0).all()
    assert "re-irradiation EQD2 (Gy)" in table.index


def test_path_dependent_matches_shap_tree_explainer_one_output(small_forest):
    """shap's own C++ TreeSHAP on the forest's custom trees, one output at a time."""
    forest, X = small_forest
    j = 11  # 12 months
    model = {"trees": forest.tree_structures(None, [j]), "base_offset": 0.0}
    ref = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
    theirs = np.asarray(ref.shap_values(X.iloc[:20].to_numpy()))
    ours = ForestExplainer(forest).explain(X.iloc[:20]).values[:, :, j]
    np.testing.assert_allclose(ours, theirs.reshape(ours.shape), rtol=0, atol=AGREE_TOL)
