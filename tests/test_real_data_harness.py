"""Real-data harness (benchmarks/real_data): committed exports, model specs, scoring, summary.

Needs no R: it reads the data and R predictions committed under benchmarks/real_data/data/.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from benchmarks.real_data import harness, summary
from benchmarks.real_data.score_real_data import main, merge_rows, read_results
from models.baselines import CauseSpecificCox
from training.metrics import auc_cr

SETS = ("colon", "melanoma", "pbc", "mgus2")
RARE_SHARE = 0.10


@pytest.fixture(scope="module")
def melanoma():
    return harness.load_dataset("melanoma")


@pytest.mark.parametrize("name", SETS)
def test_committed_exports_are_consistent(name):
    """70/30 splits, horizons = each cause's quartiles on the grid, R covers every test row."""
    ds = harness.load_dataset(name)
    meta = harness.dataset_table().set_index("dataset").loc[name]
    n = ds.X.shape[0]
    assert n == meta.n and ds.n_splits == meta.n_splits == 20
    np.testing.assert_array_equal(ds.splits.sum(axis=0), round(meta.train_share * n))
    assert len({tuple(c) for c in ds.splits.T}) == ds.n_splits  # 20 different splits
    assert np.all(np.isfinite(ds.X)) and np.all(ds.y["time"] > 0)
    for cause in (1, 2):
        assert int(np.sum(ds.y["event"] == cause)) == meta[f"n_cause{cause}"]
        t = ds.y["time"][ds.y["event"] == cause]
        quartiles = np.round(np.quantile(t, [0.25, 0.5, 0.75], method="linear"))
        np.testing.assert_array_equal(ds.horizons[cause], quartiles)
        assert ds.horizons[cause].max() <= ds.grid.max_months
        pred = ds.r_predictions(cause)
        for s in (1, ds.n_splits):
            test = np.flatnonzero(~ds.splits[:, s - 1])
            for model in harness.R_MODELS:
                rows = pred[(pred.split == s) & (pred.model == model)]
                np.testing.assert_array_equal(np.sort(rows.row.to_numpy()), test)
    # at least one cause under 10 % of patients in the two new sets (issue 10: a rare cause)
    if name in ("pbc", "mgus2"):
        assert min(meta.n_cause1, meta.n_cause2) / n < RARE_SHARE


def test_parse_model_spec_grammar():
    spec = harness.parse_model_spec("forest")
    assert (spec.label, spec.target, spec.params) == (
        "forest",
        "models.forest:CompetingRiskForest",
        {},
    )
    spec = harness.parse_model_spec('leaf5=forest={"min_samples_leaf": 5}')
    assert spec.target == "models.forest:CompetingRiskForest"
    assert spec.params == {"min_samples_leaf": 5}
    spec = harness.parse_model_spec('cox={"alpha": 1.0}')
    assert spec.target == "models.baselines:CauseSpecificCox" and spec.params == {"alpha": 1.0}
    spec = harness.parse_model_spec("mine=models.baselines:CauseSpecificCox")
    assert spec.factory() is CauseSpecificCox
    with pytest.raises(ValueError, match="neither a built-in"):
        harness.parse_model_spec("nonsense")
    with pytest.raises(ValueError, match="set by the harness"):
        harness.parse_model_spec('x=cox={"time_grid_max": 12}')
    with pytest.raises(ValueError, match="reserved"):
        harness.parse_model_spec("csc=cox")
    with pytest.raises(ValueError, match="cannot import"):
        harness.parse_model_spec("x=no_such_module:Thing").factory()


def test_factory_gets_the_data_sets_grid_and_only_accepted_keywords(melanoma):
    seen = {}

    def only_grid(time_grid_max, time_grid_step):
        seen.update(time_grid_max=time_grid_max, time_grid_step=time_grid_step)
        return CauseSpecificCox(time_grid_max=time_grid_max, time_grid_step=time_grid_step)

    def everything(**kwargs):
        seen.clear()
        seen.update(kwargs)
        return CauseSpecificCox()

    harness.only_grid, harness.everything = only_grid, everything  # importable targets
    try:
        spec = harness.ModelSpec("g", "benchmarks.real_data.harness:only_grid")
        harness.build_estimator(spec, melanoma, cause=2, split=3, n_jobs=2)
        assert seen == {"time_grid_max": 67.0, "time_grid_step": 1.0}
        assert not harness.fits_per_cause(spec)
        spec = harness.ModelSpec("e", "benchmarks.real_data.harness:everything", {"alpha": 1})
        harness.build_estimator(spec, melanoma, cause=2, split=3, n_jobs=2)
        assert seen == {
            "cause": 2,
            "n_causes": 2,
            "time_grid_max": 67.0,
            "time_grid_step": 1.0,
            "random_state": harness.SEED + 3,
            "n_jobs": 2,
            "alpha": 1,
        }
        assert harness.fits_per_cause(spec)
        assert not harness.fits_per_cause(replace(spec, one_fit=True))
    finally:
        del harness.only_grid, harness.everything
    spec = harness.ModelSpec("m", "models.baselines:PublishedRule")  # takes the grid: fine
    harness.build_estimator(spec, melanoma, cause=1, split=1, n_jobs=1)
    spec = harness.ModelSpec("s", "sklearn.linear_model:LinearRegression")
    with pytest.raises(TypeError, match="must accept"):
        harness.build_estimator(spec, melanoma, cause=1, split=1, n_jobs=1)


def test_score_split_matches_a_direct_fit(melanoma):
    """The harness's numbers are the metric of the model fitted by hand on the same rows."""
    spec = harness.parse_model_spec("cox")
    rows = pd.DataFrame(harness.score_split(spec, melanoma, 4, [1, 2], n_jobs=1))
    assert len(rows) == 6 and set(rows.cause) == {1, 2}
    train = melanoma.splits[:, 3]
    test = ~train
    model = CauseSpecificCox(time_grid_max=67.0, n_causes=2)
    model.fit(melanoma.X[train], melanoma.y[train])
    t, e = melanoma.y["time"][test], melanoma.y["event"][test]
    for cause in (1, 2):
        for h in melanoma.horizons[cause]:
            risk = model.predict_risk(melanoma.X[test], h, cause=cause)
            got = rows[(rows.cause == cause) & (rows.horizon == h)].iloc[0]
            want = auc_cr(t, e, risk, cause, h)
            assert got.auc == pytest.approx(want, rel=1e-12, nan_ok=True)
            assert got.n_cases == np.sum((t <= h) & (e == cause))


def test_wrong_prediction_shape_is_refused(melanoma):
    class Broken(CauseSpecificCox):
        def predict_cif(self, X, times=None):
            return super().predict_cif(X, times)[:, :, :1]

    harness.Broken = Broken
    try:
        spec = harness.ModelSpec("b", "benchmarks.real_data.harness:Broken")
        with pytest.raises(ValueError, match="returned shape"):
            harness.score_split(spec, melanoma, 1, [1], n_jobs=1)
    finally:
        del harness.Broken


def test_marginal_model_is_the_same_for_everyone(melanoma):
    m = clone(harness.MarginalCIF(time_grid_max=67.0, n_causes=2)).fit(melanoma.X, melanoma.y)
    cif = m.predict_cif(melanoma.X[:5], times=[12, 24])
    assert cif.shape == (5, 2, 2)
    np.testing.assert_array_equal(cif, np.broadcast_to(cif[:1], cif.shape))
    assert np.all(np.diff(cif, axis=-1) >= 0) and np.all(cif.sum(axis=1) <= 1)


def test_corrected_interval_by_hand():
    d = np.array([0.01, -0.02, 0.03, 0.0, np.nan])
    mean, lo, hi = summary.corrected_interval(d, 3 / 7)
    x = d[:4]
    half = 3.182446305284263 * x.std(ddof=1) * np.sqrt(1 / 4 + 3 / 7)  # t(0.975, 3)
    assert mean == pytest.approx(x.mean())
    assert (lo, hi) == pytest.approx((x.mean() - half, x.mean() + half))


def test_summary_differences_are_paired_against_the_better_r_model():
    rows = []
    for split in (1, 2, 3):
        for model, auc, brier in [("csc", 0.70, 0.10), ("fgr", 0.72, 0.11), ("mine", 0.71, 0.105)]:
            rows.append(
                {
                    "dataset": "d",
                    "split": split,
                    "cause": 1,
                    "model": model,
                    "horizon": 12.0,
                    "n_test": 30,
                    "n_cases": 5,
                    "auc": auc + split / 100,
                    "brier": brier,
                    "n_out_of_range": 0,
                    "fit_seconds": 1.0,
                    "predict_seconds": 0.1,
                }
            )
    s = summary.summarise(pd.DataFrame(rows), {"d": 0.7}, summary.Margins(0.005, 0.001))
    mine = s[s.model == "mine"].iloc[0]
    assert mine.best_r_auc == "fgr" and mine.best_r_brier == "csc"
    assert mine.d_auc == pytest.approx(-0.01) and mine.d_brier == pytest.approx(0.005)
    assert not mine.meets_auc and not mine.meets_brier
    md = summary.render_markdown(s, summary.Margins(), {"d": {1: "a", 2: "b"}})
    assert "| mine | d | 1 | -0.010 .. -0.010 |" in md


def test_cli_runs_a_model_and_writes_tidy_results(tmp_path, capsys):
    out = tmp_path / "rd"
    args = [
        "--one-fit",
        "cox",
        "--model",
        "cox",
        "--model",
        "null=marginal",
        "--datasets",
        "melanoma",
        "--splits",
        "1",
        "2",
        "--n-jobs",
        "1",
        "--results-dir",
        str(out),
    ]
    assert main(args) == 0
    cox = read_results(out / "cox.csv")
    assert set(cox.columns) >= set(harness.RESULT_COLUMNS)
    assert sorted(cox.split.unique()) == [1, 2] and len(cox) == 2 * 2 * 3
    assert json.loads(cox.params.iloc[0]) == {}
    # --one-fit: one fit per split served both causes (the same fit time on both)
    assert (cox.groupby("split").fit_seconds.nunique() == 1).all()
    r = read_results(out / "r_models.csv")
    assert sorted(r.split.unique()) == list(range(1, 21))
    s = pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])
    assert {"csc", "fgr", "cox", "null"} <= set(s.model)
    text = (out / "summary.md").read_text()
    assert "AUC null" in text and "Incomplete" in text
    assert "cox − better R" in capsys.readouterr().out
    # a rerun of one split replaces that split's rows and keeps the others
    again = merge_rows(out / "cox.csv", cox[cox.split == 2].assign(auc=0.5))
    assert len(again) == len(cox) and (again[again.split == 2].auc == 0.5).all()
    keys = ["cause", "horizon"]
    kept = again[again.split == 1].sort_values(keys).auc.to_numpy()
    np.testing.assert_array_equal(kept, cox[cox.split == 1].sort_values(keys).auc.to_numpy())
