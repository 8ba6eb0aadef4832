"""Input-level interventional Shapley values: exact against brute force, for every member.

Brute force enumerates every coalition S, builds the hybrid records x_S + b_rest at the input
level, pushes them through the feature function and asks the model's own ``predict_cif``:
the value function itself, with nothing shared with the kernels but the model.
"""

from __future__ import annotations

from math import factorial

import numpy as np
import pandas as pd
import pytest

from features.pipeline import FEATURE_COLUMNS, FEATURE_INPUTS, feature_matrix
from features.players import PLAYERS, input_players, make_player_map
from features.schema import validated_frame
from features.synthetic import simulate_cohort
from models.baselines import CauseSpecificCox
from models.forest import CompetingRiskForest
from models.shapley import ADDITIVITY_TOL, InputExplainer

AGREE_TOL = 1e-9
TOY_PLAYERS = ("a", "b", "c", "d")
TOY_FEATURES = ("fa", "fab", "fbcd", "fd", "fc")
TOY_PARENTS = {
    "fa": ("a",),
    "fab": ("a", "b"),
    "fbcd": ("b", "c", "d"),
    "fd": ("d",),
    "fc": ("c",),
}


def _toy_features(cols) -> np.ndarray:
    a, b, c, d = (np.asarray(cols[p], dtype=float) for p in TOY_PLAYERS)
    return np.column_stack([a, a * b, b + np.abs(c) * d, d, (c > 0).astype(float)])


TOY_MAP = make_player_map(TOY_PLAYERS, TOY_FEATURES, TOY_PARENTS, _toy_features)


def _survival_y(rng, risk) -> np.ndarray:
    n = risk.shape[0]
    t_event = rng.exponential(20 / np.exp(risk))
    t_comp = rng.exponential(40 * np.exp(-0.3 * risk))
    t_cens = rng.uniform(5, 70, size=n)
    time = np.minimum.reduce([t_event, t_comp, t_cens])
    event = np.select([time == t_event, time == t_comp], [1, 2], 0)
    y = np.empty(n, dtype=[("event", int), ("time", float)])
    y["event"], y["time"] = event, time
    return y


@pytest.fixture(scope="module")
def toy():
    """Four players, five features (one with two parents, one with three), fitted models."""
    rng = np.random.default_rng(11)
    n = 300
    inputs = pd.DataFrame(rng.normal(size=(n, 4)), columns=list(TOY_PLAYERS))
    inputs["b"] = rng.integers(0, 3, size=n).astype(float)  # ties between patients
    X = pd.DataFrame(_toy_features(inputs), columns=list(TOY_FEATURES))
    y = _survival_y(rng, 0.8 * X["fab"] - 0.5 * X["fbcd"] + 0.4 * X["fc"])
    forest = CompetingRiskForest(
        n_estimators=5,
        n_causes=2,
        min_samples_leaf=10,
        min_samples_split=20,
        max_features=None,
        max_depth=5,
        random_state=2,
    ).fit(X, y)
    cox = CauseSpecificCox(n_causes=2).fit(X, y)
    return inputs, forest, cox


class StandInEnsemble:
    """The ensemble's interface (members_, weights_ (n_causes, n_members)), nothing else."""

    def __init__(self, members, weights):
        self.members_ = members
        self.weights_ = np.asarray(weights, dtype=float)
        self.event_times_ = members[0][1].event_times_
        self.feature_names_in_ = members[0][1].feature_names_in_
        self.cause = 1

    def predict_cif(self, X, times=None):
        cifs = np.stack([m.predict_cif(X, times) for _, m in self.members_], axis=-1)
        return np.einsum("nktm,km->nkt", cifs, self.weights_)


def _brute_force(model, players, x_cols, background_cols, cause=1):
    """Shapley values (P, G) and v(empty) by enumerating every coalition (vectorised)."""
    n_p = players.n_players
    k = len(background_cols[players.players[0]])
    masks = np.arange(1 << n_p)
    inside = (masks[:, None] >> np.arange(n_p)[None, :]) & 1  # (2^P, P)
    cols = {}
    for i, p in enumerate(players.players):
        b = np.asarray(background_cols[p])
        xv = np.asarray(x_cols[p])[0]
        cols[p] = np.where(inside[:, i][:, None].astype(bool), xv, b[None, :]).reshape(-1)
    X = pd.DataFrame(players.features(cols), columns=list(players.feature_names))
    cif = model.predict_cif(X)[:, cause - 1, :]
    v = cif.reshape(1 << n_p, k, -1).mean(axis=1)  # (2^P, G)
    size = inside.sum(axis=1)
    by_size = np.array([factorial(z) * factorial(n_p - z - 1) / factorial(n_p) for z in range(n_p)])
    phi = np.zeros((n_p, v.shape[1]))
    for i in range(n_p):
        without = masks[inside[:, i] == 0]
        w = by_size[size[without]]
        phi[i] = w @ (v[without | (1 << i)] - v[without])
    return phi, v[0]


def _check_against_brute_force(model, players, inputs, rows, background):
    explainer = InputExplainer(model, background, players=players)
    exp = explainer.explain(inputs.iloc[rows])
    bg_cols = players.columns(background)
    for r, row in enumerate(rows):
        brute, v0 = _brute_force(model, players, players.columns(inputs.iloc[[row]]), bg_cols)
        assert np.abs(brute).max() > 1e-3  # not vacuous
        np.testing.assert_allclose(exp.values[r], brute, rtol=0, atol=AGREE_TOL)
        np.testing.assert_allclose(exp.base_values, v0, rtol=0, atol=AGREE_TOL)
    assert exp.additivity_error() <= ADDITIVITY_TOL
    return exp


def test_feature_inputs_declare_every_dependence():
    """Changing an input changes only the features that declare it as a parent."""
    records = validated_frame(simulate_cohort(60, seed=5), require_outcomes=True)
    cols = {p: records[p].to_numpy() for p in PLAYERS}
    n = len(records)  # every level of every category, and empty fractions, occur
    cols["primary_technique"] = np.resize(np.array(["2D", "3D", "IMRT", "unknown"]), n)
    cols["reirr_fractions_per_day"] = np.resize(np.array([1, 2, 2]), n)
    cols["sex"] = np.resize(np.array(["male", "female", "female"]), n)
    cols["rt_stage"] = np.resize(np.array(["rT1", "rT2", "rT3", "rT4", "rT4"]), n)
    cols["primary_fraction_gy"] = np.resize(np.array([np.nan, 1.8, 2.0, 2.2, 3.0]), n)
    base = feature_matrix(cols)
    shifted = {p: np.roll(v, 1) for p, v in cols.items()}
    seen: dict[str, set[str]] = {f: set() for f in FEATURE_COLUMNS}
    for p in PLAYERS:
        changed = feature_matrix({**cols, p: shifted[p]}) != base
        for j, f in enumerate(FEATURE_COLUMNS):
            if changed[:, j].any():
                assert p in FEATURE_INPUTS[f], f"{f} depends on {p}, undeclared"
                seen[f].add(p)
    for f, parents in FEATURE_INPUTS.items():
        assert set(parents) == seen[f], f"{f}: declared {parents}, observed {seen[f]}"


def test_hybrid_table_is_the_pipeline_on_hybrid_records():
    players = input_players()
    records = validated_frame(simulate_cohort(12, seed=8), require_outcomes=True)
    cols = players.columns(records)
    bg = players.columns(records.iloc[4:9])
    table = players.hybrid_table(cols, bg, row=1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        inside = rng.random(players.n_players) < 0.5
        hyb = {p: np.where(inside[i], cols[p][1], bg[p]) for i, p in enumerate(players.players)}
        feats = feature_matrix(hyb)
        for j in range(len(FEATURE_COLUMNS)):
            m = sum(1 << i for i in range(players.n_parents[j]) if inside[players.parents[j, i]])
            np.testing.assert_array_equal(table[:, j, m], feats[:, j])


def test_forest_matches_brute_force_with_multi_parent_features(toy):
    inputs, forest, _ = toy
    _check_against_brute_force(forest, TOY_MAP, inputs, [3, 17, 40], inputs.iloc[100:106])


def test_cox_matches_brute_force_with_multi_parent_features(toy):
    inputs, _, cox = toy
    exp = _check_against_brute_force(cox, TOY_MAP, inputs, [3, 17], inputs.iloc[100:106])
    np.testing.assert_allclose(
        exp.prediction, cox.predict_cif(_toy_frame(inputs.iloc[[3, 17]]))[:, 0, :], atol=1e-15
    )


def _toy_frame(inputs):
    return pd.DataFrame(_toy_features(inputs), columns=list(TOY_FEATURES))


def test_ensemble_is_weighted_sum_and_exact(toy):
    inputs, forest, cox = toy
    ens = StandInEnsemble([("forest", forest), ("cox", cox)], [[0.3, 0.7], [0.6, 0.4]])
    bg = inputs.iloc[100:105]
    exp = _check_against_brute_force(ens, TOY_MAP, inputs, [8], bg)
    parts = [
        InputExplainer(m, bg, players=TOY_MAP).explain(inputs.iloc[[8]]) for m in (forest, cox)
    ]
    np.testing.assert_allclose(
        exp.values, 0.3 * parts[0].values + 0.7 * parts[1].values, rtol=0, atol=1e-12
    )


def test_second_cause_and_identical_background_rows(toy):
    """Cause 2 through the same kernels; a background equal to the patient adds nothing."""
    inputs, forest, cox = toy
    bg = pd.concat([inputs.iloc[[7]], inputs.iloc[200:203]])
    for model in (forest, cox):
        explainer = InputExplainer(model, bg, cause=2, players=TOY_MAP)
        exp = explainer.explain(inputs.iloc[[7]])
        brute, _ = _brute_force(
            model, TOY_MAP, TOY_MAP.columns(inputs.iloc[[7]]), TOY_MAP.columns(bg), cause=2
        )
        np.testing.assert_allclose(exp.values[0], brute, rtol=0, atol=AGREE_TOL)


@pytest.fixture(scope="module")
def contract_models():
    """Tiny models on the contract's features; inputs of real (synthetic) records."""
    records = validated_frame(simulate_cohort(250, seed=3), require_outcomes=True)
    from features.pipeline import build_features, encode_endpoint

    X = build_features(records)
    y = encode_endpoint(records, "mucosal_necrosis")
    forest = CompetingRiskForest(
        n_estimators=4, n_causes=2, min_samples_leaf=10, max_features=None, random_state=1
    ).fit(X, y)
    cox = CauseSpecificCox(n_causes=2).fit(X, y)
    return records, forest, cox


@pytest.mark.parametrize("member", ["forest", "cox"])
def test_sixteen_input_players_match_brute_force(contract_models, member):
    """All 2^16 coalitions of the contract's inputs (one or two background patients)."""
    records, forest, cox = contract_models
    model = forest if member == "forest" else cox
    players = input_players()
    bg = records.iloc[[10, 11]] if member == "forest" else records.iloc[[10]]
    x = records.iloc[[42]]
    exp = InputExplainer(model, bg, players=players).explain(x)
    brute, v0 = _brute_force(model, players, players.columns(x), players.columns(bg))
    assert exp.feature_names == PLAYERS
    np.testing.assert_allclose(exp.values[0], brute, rtol=0, atol=AGREE_TOL)
    np.testing.assert_allclose(exp.base_values, v0, rtol=0, atol=AGREE_TOL)
    np.testing.assert_allclose(
        exp.prediction, model.predict_cif(feature_frame(x))[:, 0, :], rtol=0, atol=1e-15
    )


def feature_frame(records):
    from features.pipeline import build_features

    return build_features(records)


def test_the_real_ensemble_is_exact(toy):
    """models.ensemble.CompetingRiskEnsemble (two forests and a Cox member), brute force."""
    from models.ensemble import CompetingRiskEnsemble

    inputs, _, _ = toy
    X = _toy_frame(inputs)
    rng = np.random.default_rng(4)
    y = _survival_y(rng, 0.8 * X["fab"] - 0.5 * X["fbcd"])
    ens = CompetingRiskEnsemble(n_estimators=4, cv=2, n_causes=2, random_state=0).fit(X, y)
    assert len(ens.members_) == 3
    ens.weights_ = np.array([[0.2, 0.3, 0.5], [0.5, 0.25, 0.25]])  # every member counts
    _check_against_brute_force(ens, TOY_MAP, inputs, [5, 66], inputs.iloc[120:125])


def test_exact_against_a_background_of_two_words(toy):
    """K = 100 background rows: row sets of two 64-bit words, and at the multi-parent splits
    many rows' directions as different functions of the free parents (grouped, then branched
    on the parents each depends on), still the brute-force values."""
    inputs, forest, cox = toy
    for model in (forest, cox):
        _check_against_brute_force(model, TOY_MAP, inputs, [3, 250], inputs.iloc[120:220])


@pytest.mark.parametrize("member", ["forest", "cox", "ensemble"])
def test_horizons_asked_for_are_the_whole_grids_columns(toy, member):
    """``times`` (what /explain asks: 4 of the grid) gives the whole grid's columns, and the
    forest's trees walked in two threads (``split``) give the one-thread numbers."""
    inputs, forest, cox = toy
    model = {
        "forest": forest,
        "cox": cox,
        "ensemble": StandInEnsemble([("forest", forest), ("cox", cox)], [[0.3, 0.7], [0.6, 0.4]]),
    }[member]
    explainer = InputExplainer(model, inputs.iloc[120:220], players=TOY_MAP)
    rows = inputs.iloc[[3, 17, 250]]
    full = explainer.explain(rows)
    n_t = full.times.size
    cols = [n_t - 1, 0, n_t // 3, n_t // 2]  # not in grid order
    part = explainer.explain(rows, times=full.times[cols], split=2)
    np.testing.assert_array_equal(part.times, full.times[cols])
    assert np.abs(full.values[:, :, cols]).max() > 1e-3  # not vacuous
    np.testing.assert_allclose(part.values, full.values[:, :, cols], rtol=0, atol=1e-12)
    np.testing.assert_allclose(part.base_values, full.base_values[cols], rtol=0, atol=1e-12)
    np.testing.assert_allclose(part.prediction, full.prediction[:, cols], rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        explainer.explain(rows, split=2).values, full.values, rtol=0, atol=1e-12
    )
    with pytest.raises(ValueError, match="not a grid time"):
        explainer.explain(rows, times=[full.times[0] + 1e-3])


def test_forest_tree_ranges_shared_by_threads_give_the_one_thread_walk(toy, monkeypatch):
    """One endpoint's forest is walked by two (or three) threads taking ranges of trees from a
    queue, whichever thread is free; one thread slowed down (as by other work on a shared
    machine) only changes who walks what. The result is the one-thread walk's bit for bit,
    and so are the horizons asked for (from the contiguous copy of their node values)."""
    import threading
    import time

    from models.shapley import ForestMember

    inputs, forest, _ = toy
    explainer = InputExplainer(forest, inputs.iloc[120:220], players=TOY_MAP)
    rows = inputs.iloc[[3, 17, 250]]
    one = explainer.explain(rows, split=1)
    cols = [0, one.times.size // 2, one.times.size - 1]
    walk = ForestMember._walk
    walked: list[tuple[str, int]] = []

    def slow_helper(self, t32, t_lo, t_hi):
        walked.append((threading.current_thread().name, int(t_lo)))
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.01)
        return walk(self, t32, t_lo, t_hi)

    monkeypatch.setattr(ForestMember, "_walk", slow_helper)
    for split in (2, 3):
        walked.clear()
        many = explainer.explain(rows, split=split)
        np.testing.assert_array_equal(many.values, one.values)
        starts = [lo for _, lo in walked]
        assert len(set(starts)) > split  # more ranges than threads
        assert all(starts.count(lo) == len(rows) for lo in starts)  # each once per patient
        part = explainer.explain(rows, times=one.times[cols], split=split)
        np.testing.assert_array_equal(part.values, one.values[:, :, cols])
    assert {name for name, _ in walked} > {threading.main_thread().name}  # helpers took some
