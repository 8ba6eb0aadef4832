"""The forest's tree builder and its two splitting rules (issue 10 part 1)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sksurv.tree import SurvivalTree

from features.timegrid import DEFAULT_GRID
from models._tree_builder import cause_weights, logrank_statistic
from models.forest import CompetingRiskForest
from tests.survival_sim import simulate

EXACT = 1e-12
RULES = ("logrank_cs", "logrank_composite")


def _brute_force(time, event, weight, is_left, causes):
    """Direct log-rank sums: every distinct time, risk sets counted patient by patient."""
    num = den = 0.0
    for t in np.unique(time):
        at_risk = time >= t
        y = weight[at_risk].sum()
        y_left = weight[at_risk & is_left].sum()
        for k in causes:
            d = weight[(time == t) & (event == k)].sum()
            d_left = weight[(time == t) & (event == k) & is_left].sum()
            num += d_left - d * y_left / y
            if y > 1:
                den += d * (y_left / y) * (1 - y_left / y) * (y - d) / (y - 1)
    return abs(num) / np.sqrt(den)


def _tables(time_idx, event, weight, n_grid, n_causes):
    leave = np.bincount(time_idx, weights=weight, minlength=n_grid)
    events = np.zeros((n_grid, n_causes))
    for k in range(1, n_causes + 1):
        events[:, k - 1] = np.bincount(time_idx[event == k], weight[event == k], n_grid)
    return leave, events


@pytest.mark.parametrize("rule", RULES)
def test_statistic_matches_brute_force_on_a_tiny_node(rule):
    rng = np.random.default_rng(3)
    n, n_grid = 14, 8
    time_idx = rng.integers(0, n_grid, n)
    event = rng.integers(0, 3, n)
    weight = rng.integers(1, 4, n).astype(float)  # bootstrap counts: replicated patients
    is_left = rng.random(n) < 0.5
    w = cause_weights(rule, cause=1, n_causes=2)
    node = _tables(time_idx, event, weight, n_grid, 2)
    left = _tables(time_idx[is_left], event[is_left], weight[is_left], n_grid, 2)
    got = logrank_statistic(left[0], left[1], node[0], node[1], w)
    causes = [1] if rule == "logrank_cs" else [1, 2]
    assert got == pytest.approx(_brute_force(time_idx, event, weight, is_left, causes), rel=EXACT)
    # replicating patients by their counts is the same node with unit weights
    rep = np.repeat(np.arange(n), weight.astype(int))
    assert got == pytest.approx(
        _brute_force(time_idx[rep], event[rep], np.ones(rep.size), is_left[rep], causes),
        rel=EXACT,
    )


def test_composite_reduces_to_cause_specific_with_one_cause():
    rng = np.random.default_rng(5)
    time_idx, event = rng.integers(0, 6, 30), rng.integers(0, 2, 30)
    weight, is_left = np.ones(30), rng.random(30) < 0.4
    node = _tables(time_idx, event, weight, 6, 1)
    left = _tables(time_idx[is_left], event[is_left], weight[is_left], 6, 1)
    a = logrank_statistic(*left, *node, cause_weights("logrank_cs", 1, 1))
    b = logrank_statistic(*left, *node, cause_weights("logrank_composite", 1, 1))
    assert a == b


def test_cause_specific_trees_agree_with_scikit_survival():
    """No bootstrap, all features per split: the builder's tree is SurvivalTree's tree."""
    X, y = simulate(300, seed=2)
    kw = dict(max_features=None, min_samples_leaf=10, min_samples_split=20, max_depth=4)
    ours = CompetingRiskForest(
        n_estimators=1, bootstrap=False, max_bins=None, random_state=0, **kw
    ).fit(X, y)
    time_grid, event_grid = DEFAULT_GRID.discretize(y["time"], y["event"])
    y_cs = np.empty(len(y), dtype=[("event", bool), ("time", float)])
    y_cs["event"], y_cs["time"] = event_grid == 1, time_grid
    ref = SurvivalTree(random_state=0, low_memory=True, **kw).fit(X.to_numpy(np.float32), y_cs)
    a, b = ours.estimators_[0].tree_, ref.tree_
    assert a.node_count == b.node_count > 7
    np.testing.assert_array_equal(a.children_left, b.children_left)
    np.testing.assert_array_equal(a.feature, b.feature)
    np.testing.assert_array_equal(a.n_node_samples, b.n_node_samples)
    # the same partitions of the training patients (thresholds may sit anywhere in the gap
    # between a node's values: ours at the global bin edge, scikit-learn's at the node's midpoint)
    X32 = X.to_numpy(np.float32)
    np.testing.assert_array_equal(a.apply(X32), b.apply(X32))


@pytest.mark.parametrize("rule", RULES)
def test_seeded_trees_are_reproducible_and_thread_independent(rule):
    X, y = simulate(250, seed=4)
    f = CompetingRiskForest(n_estimators=8, splitrule=rule, random_state=11, n_jobs=1).fit(X, y)
    g = clone(f).set_params(n_jobs=2).fit(X, y)
    h = clone(f).set_params(random_state=12).fit(X, y)
    np.testing.assert_array_equal(f.predict_cif(X[:40]), g.predict_cif(X[:40]))
    for a, b in zip(f.estimators_, g.estimators_, strict=True):
        np.testing.assert_array_equal(a.tree_.threshold, b.tree_.threshold)
    assert not np.array_equal(f.predict_cif(X[:40]), h.predict_cif(X[:40]))
    assert f.get_params()["splitrule"] == rule and clone(f).splitrule == rule


def test_splitrule_and_size_parameters_are_checked():
    X, y = simulate(60, seed=0)
    with pytest.raises(ValueError, match="splitrule"):
        CompetingRiskForest(n_estimators=2, splitrule="gray").fit(X, y)
    with pytest.raises(ValueError, match="max_features"):
        CompetingRiskForest(n_estimators=2, max_features="all").fit(X, y)
    with pytest.raises(ValueError, match="min_samples_leaf"):
        CompetingRiskForest(n_estimators=2, min_samples_leaf=0).fit(X, y)
    f = CompetingRiskForest(n_estimators=3, min_samples_leaf=0.2, min_samples_split=0.5)
    f.fit(X, y)
    for tree in f.estimators_:
        t = tree.tree_
        leaves = t.children_left == -1
        assert t.n_node_samples[leaves].min() >= 12  # ceil(0.2 * 60)
        assert np.all(t.n_node_samples[~leaves] >= 30)


def test_composite_rule_splits_on_the_competing_cause_signal():
    """Only cause 2 depends on x0: the composite rule finds it, the cause-1 rule cannot."""
    rng = np.random.default_rng(0)
    n = 600
    X = rng.normal(size=(n, 4))
    t1 = rng.exponential(40.0, n)
    t2 = rng.exponential(40.0 * np.exp(-1.5 * (X[:, 0] > 0)), n)
    c = rng.uniform(10, 60, n)
    time = np.minimum.reduce([t1, t2, c])
    y = np.empty(n, dtype=[("event", int), ("time", float)])
    y["time"] = time
    y["event"] = np.select([time == t1, time == t2], [1, 2], 0)
    kw = dict(n_estimators=20, max_features=None, random_state=0, n_jobs=1)
    roots = {
        rule: [
            e.tree_.feature[0]
            for e in CompetingRiskForest(splitrule=rule, **kw).fit(X, y).estimators_
        ]
        for rule in RULES
    }
    assert np.mean(np.equal(roots["logrank_composite"], 0)) >= 0.9
    assert np.mean(np.equal(roots["logrank_cs"], 0)) <= 0.5
