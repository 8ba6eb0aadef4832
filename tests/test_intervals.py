"""Per-patient intervals from resampled refits (models/intervals.py) and the bundle's use."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from features.config import ENDPOINTS
from features.timegrid import DEFAULT_GRID
from models._cif import aalen_johansen_grid, grid_indices
from models.forest import CompetingRiskForest
from models.intervals import (
    VARIANTS,
    censoring_distribution,
    fit_bundle_intervals,
    fit_resample_intervals,
    simulate_from_cif,
)
from tests.bundle_factory import small_bundle
from training.data import Cohort

LIGHT = {"n_estimators": 8}


@lru_cache(maxsize=2)
def cohort(n: int = 240) -> Cohort:
    from features.synthetic import simulate_cohort

    return Cohort.from_records(simulate_cohort(n, seed=3))


@lru_cache(maxsize=2)
def fitted(seed: int = 0):
    c = cohort()
    y = c.y["mucosal_necrosis"]
    model = CompetingRiskForest(n_estimators=20, n_causes=2, n_jobs=1, random_state=1).fit(c.X, y)
    iv = fit_resample_intervals(
        model, c.X, y, n_resamples=4, random_state=seed, resample_params=LIGHT
    )
    return model, iv


def test_simulated_cohort_follows_the_cif():
    """Draws from a known CIF, uncensored, give back that CIF (Aalen-Johansen) within noise."""
    g = DEFAULT_GRID.points.size
    t = DEFAULT_GRID.points
    cif = np.stack([0.4 * (1 - np.exp(-t / 20)), 0.2 * (1 - np.exp(-t / 10))])[None]
    cif = np.repeat(cif, 20_000, axis=0)
    no_censoring = np.zeros(g + 1)
    no_censoring[-1] = 1.0
    y = simulate_from_cif(cif, no_censoring, t, np.random.default_rng(0))
    idx, ev = grid_indices(DEFAULT_GRID, y["time"], y["event"])
    est = aalen_johansen_grid(idx, ev, 2, g)[0]
    assert np.max(np.abs(est - cif[0])) < 0.015


def test_censoring_distribution_is_a_distribution():
    c = cohort()
    idx, ev = grid_indices(
        DEFAULT_GRID, c.y["mucosal_necrosis"]["time"], c.y["mucosal_necrosis"]["event"]
    )
    p = censoring_distribution(idx, ev, DEFAULT_GRID.points.size)
    assert np.all(p >= 0) and abs(p.sum() - 1) < 1e-9
    assert p[:-1].sum() > 0  # the cohort has censored patients


@pytest.mark.parametrize("variant", VARIANTS)
def test_bounds_are_ordered_monotone_and_in_range(variant):
    model, iv = fitted()
    X = cohort().X.iloc[:60]
    cif = model.predict_cif(X)[:, 0, :]
    lower, upper = replace(iv, variant=variant).grid_interval(X, cif)
    assert np.all((lower >= 0) & (lower <= cif + 1e-12) & (cif <= upper + 1e-12) & (upper <= 1))
    assert np.all(np.diff(lower, axis=1) >= 0) and np.all(np.diff(upper, axis=1) >= 0)
    assert np.mean(upper - lower) > 0.01  # not a zero-width band


def test_shrinking_estimator_is_corrected_outwards():
    """A forest shrinks towards the mean: slopes below 1; refits pull high risks down and low
    risks up, so the correction moves high risks' intervals up and low risks' down."""
    model, iv = fitted()
    assert np.all(iv.slope <= 1) and np.median(iv.slope[6:]) < 0.9
    cif = model.predict_cif(cohort().X)[:, 0, 23]
    top, bottom = cif >= np.quantile(cif, 0.8), cif <= np.quantile(cif, 0.2)
    assert iv.bias[top, 23].mean() < 0 < iv.bias[bottom, 23].mean()


def test_deterministic_with_a_seed():
    _, a = fitted(0)
    _, b = fitted(1)
    c = cohort()
    model = fitted(0)[0]
    again = fit_resample_intervals(
        model, c.X, c.y["mucosal_necrosis"], n_resamples=4, random_state=0, resample_params=LIGHT
    )
    np.testing.assert_array_equal(a.deviations, again.deviations)
    np.testing.assert_array_equal(a.slope, again.slope)
    assert not np.array_equal(a.deviations, b.deviations)


def test_paired_differences_are_consistent():
    model, iv = fitted()
    X = cohort().X.iloc[:30]
    times = np.array([0.0, 6, 12, 24, 36])
    cols = DEFAULT_GRID.index_of(times)
    cif = model.predict_cif(X, times)[:, 0, :]
    est, lo, hi = iv.grid_difference(X, cif, cols, reference=4)
    np.testing.assert_allclose(est, cif - cif[[4]])
    assert np.all(lo <= est) and np.all(est <= hi) and np.all(lo >= -1) and np.all(hi <= 1)
    assert np.all(est[4] == 0) and np.all(lo[4] == 0) and np.all(hi[4] == 0)
    assert np.all(lo[:, 0] == 0) and np.all(hi[:, 0] == 0)  # before the grid: no difference
    # swapping the two rows negates the difference and mirrors its interval
    est2, lo2, hi2 = iv.grid_difference(X, cif, cols, reference=7)
    np.testing.assert_allclose(est2[4], -est[7], atol=1e-12)
    np.testing.assert_allclose(lo2[4], -hi[7], atol=1e-9)
    np.testing.assert_allclose(hi2[4], -lo[7], atol=1e-9)
    assert np.any(hi[7] > lo[7])


RECORD = {
    "model": "ensemble",
    "measured": "2026-12-02",
    "by_n": {
        "600": {"coverage": 0.931, "min_quintile_coverage": 0.842, "training_cohorts": 10},
        "2000": {"coverage": 0.912, "min_quintile_coverage": 0.801, "training_cohorts": 10},
    },
}


@lru_cache(maxsize=1)
def interval_bundle():
    base = small_bundle()
    c = cohort()
    intervals = fit_bundle_intervals(
        base.models, c.X, c.y, n_resamples=3, random_state=0, resample_params=LIGHT
    )
    return replace(base, intervals=intervals, interval_record=RECORD)


def test_report_quotes_the_coverage_record_and_the_missing_truth():
    from serving.report import build_report, interval_note
    from serving.report_render import render_pdf

    bundle = interval_bundle()
    note = interval_note(bundle)
    assert "93% at n = 600" in note and "80%" in note and "n = 2000" in note
    assert "cannot be measured" in note and "real data" in note
    assert "infinitesimal" not in note
    assert "infinitesimal" in interval_note(small_bundle())  # older bundles: the jackknife
    real = replace(bundle, provenance={**bundle.provenance, "data_source": "file:cohort.csv"})
    assert "for a model trained on real data the true risks are unknown" in interval_note(real)
    patient = json.loads((Path(__file__).parents[1] / "docs/example_patient.json").read_text())
    report = build_report(bundle, patient)
    assert report.notes["ci"] == note
    pages = re.findall(rb"/Type\s*/Page\b(?!s)", render_pdf(report))
    assert len(pages) == 1  # the longer note still fits the one-page report


def test_bundle_uses_the_interval_model():
    base = small_bundle()
    c = cohort()
    bundle = interval_bundle()
    X = c.X.iloc[:8]
    times = [3, 6, 12, 24, 36, 60]
    cif = bundle.predict_cif_features(X, times)
    bands = bundle.risk_intervals(X, times, cif=cif)
    grid_cif = bundle.predict_cif_features(X)
    grid_bands = bundle.risk_intervals(X, DEFAULT_GRID.points, cif=grid_cif)
    cols = DEFAULT_GRID.index_of(times)
    for e in ENDPOINTS:
        lo, hi = bands[e]
        assert np.all((lo >= 0) & (lo <= cif[e]) & (cif[e] <= hi) & (hi <= 1))
        np.testing.assert_allclose(lo, grid_bands[e][0][:, cols])  # same band, read at times
        np.testing.assert_allclose(hi, grid_bands[e][1][:, cols])
        ij = base.risk_intervals(X, times, cif=cif)[e]
        assert not np.allclose(ij[1], hi)  # not the forest's jackknife any more
    diffs = bundle.paired_difference_intervals(X, times, reference=0, cif=cif)
    for e in ENDPOINTS:
        d = diffs[e]
        np.testing.assert_allclose(d.estimate, cif[e] - cif[e][[0]])
        assert np.all(d.lower <= d.estimate) and np.all(d.estimate <= d.upper)


def test_close_plans_get_a_difference_interval_that_shrinks_with_the_difference():
    """Kernel-weighted neighbours: a small dose change moves the paired difference's interval
    continuously away from [0, 0] (it does not collapse to the point estimate)."""
    model, iv = fitted()
    row = cohort().X.iloc[[5]]
    plans = row.loc[row.index.repeat(3)].reset_index(drop=True)
    for i, extra in enumerate((0.0, 1.0, 4.0)):
        plans.loc[i, "reirr_eqd2_gy"] += extra
        plans.loc[i, "cumulative_eqd2_gy"] += extra
    cols = DEFAULT_GRID.index_of([24.0])
    cif = model.predict_cif(plans, [24.0])[:, 0, :]
    _, lo, hi = iv.grid_difference(plans, cif, cols, reference=0)
    width = (hi - lo)[:, 0]
    assert width[0] == 0 and 0 < width[1] < width[2]


def test_coverage_record_is_the_one_of_the_model_kind(tmp_path, monkeypatch):
    import models.intervals as mi

    path = tmp_path / "record.json"
    by_n = {"600": {"coverage": 0.95, "min_quintile_coverage": 0.86, "training_cohorts": 10}}
    path.write_text(json.dumps({"mix": "modern", "by_model": {"forest": {"by_n": by_n}}}))
    monkeypatch.setattr(mi, "COVERAGE_RECORD_FILE", path)
    record = mi.coverage_record(fitted()[0])
    assert record == {"mix": "modern", "model": "forest", "by_n": by_n}
    assert mi.coverage_record(object()) is None  # not measured for that kind
    monkeypatch.setattr(mi, "COVERAGE_RECORD_FILE", tmp_path / "missing.json")
    assert mi.coverage_record(fitted()[0]) is None
