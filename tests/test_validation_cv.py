"""Repeated K-fold validation: every model is scored only on patients it never saw, every
candidate on the same folds, and the intervals behave (tiny forests, n = 120: seconds)."""

from __future__ import annotations

import numpy as np
import pytest

import training.evaluate as evaluate_module
from features.config import ENDPOINTS
from training.config import TrainConfig
from training.data import synthetic_training_data
from training.evaluate import bootstrap_intervals, cv_folds, evaluate

TINY = {
    "name": "tiny",
    "n_workers": 1,
    "fit_n_jobs": 1,
    "forest": {"n_estimators": 8, "grid": {"min_samples_leaf": [10, 20]}},
    "tuning": {"cv_folds": 2, "n_estimators": 4},
    "evaluation": {"cv_folds": 3, "cv_repeats": 2, "n_interval_bootstrap": 20},
    "baselines": {"models": ["published_rule"]},
}


@pytest.fixture(scope="module")
def dev():
    cfg = TrainConfig.model_validate(TINY)
    return synthetic_training_data(120, 3, cfg.holdout.salt, cfg.holdout.fraction, 50).development


@pytest.fixture(scope="module")
def recorded(dev):
    """One evaluation with every fit's training rows recorded."""
    calls: list[np.ndarray] = []
    real = evaluate_module.fit_all

    def spy(X, y, groups, *args, **kwargs):
        calls.append(np.asarray(groups).copy())
        return real(X, y, groups, *args, **kwargs)

    evaluate_module.fit_all = spy
    try:
        ev = evaluate(dev, TrainConfig.model_validate(TINY))
    finally:
        evaluate_module.fit_all = real
    return ev, calls


def test_each_fold_fits_without_its_patients_and_predicts_them(dev, recorded):
    ev, calls = recorded
    cfg = TrainConfig.model_validate(TINY)
    n = len(dev)
    folds = cv_folds(dev.y, cfg)
    assert folds.shape == (2, n)
    assert not np.array_equal(folds[0], folds[1])  # repeats differ
    assert np.array_equal(calls[0], np.arange(n))  # the final fit sees everyone
    fold_calls = calls[1:]
    assert len(fold_calls) == 2 * 3
    i = 0
    for r in range(2):
        for k in range(3):
            trained_on = set(fold_calls[i].tolist())
            held_out = set(np.flatnonzero(folds[r] == k).tolist())
            assert trained_on.isdisjoint(held_out)
            assert trained_on | held_out == set(range(n))
            i += 1
    for name in ev.models:  # every candidate, every patient, every repeat: out-of-fold risks
        for e in ENDPOINTS:
            assert ev.oof_risks[name][e].shape == (2, n, len(ev.horizons))
            assert np.all(np.isfinite(ev.oof_risks[name][e]))


def test_validated_figures_are_below_apparent_and_carry_intervals(recorded):
    ev, _ = recorded
    for e in ENDPOINTS:
        est, lo, hi = ev.registered(e, "auc_24m")
        assert lo <= hi and np.isfinite(est)
        assert est < ev.apparent[f"registered/{e}/auc_24m"]  # a forest memorises its patients
        for m in ("brier", "ici", "slope"):
            _, lo, hi = ev.registered(e, f"{m}_24m")
            assert lo <= hi
        assert ev.counts[f"{e}/events_24m"] > 0
        assert ev.counts[f"{e}/n"] == ev.oof_risks["registered"][e].shape[1]
    assert set(ev.instability()) == set(ENDPOINTS)


def test_same_seed_same_figures(dev, recorded):
    ev, _ = recorded
    again = evaluate(dev, TrainConfig.model_validate(TINY))
    np.testing.assert_equal(again.validated, ev.validated)  # NaN == NaN here
    np.testing.assert_equal(again.intervals, ev.intervals)


def test_bootstrap_interval_of_a_perfect_and_a_useless_ranking():
    rng = np.random.default_rng(0)
    n = 200
    time = rng.uniform(1, 40, n)
    event = rng.integers(0, 3, n)
    outcome = np.empty(n, dtype=[("event", int), ("time", float)])
    outcome["event"], outcome["time"] = event, time
    y = {e: outcome for e in ENDPOINTS}
    by24 = ((time <= 24) & (event == 1)).astype(float)
    perfect = np.broadcast_to(by24[None, :, None], (1, n, 1)).copy()
    noise = rng.uniform(0, 1, (1, n, 1))
    out = bootstrap_intervals(
        y, {ENDPOINTS[0]: perfect, ENDPOINTS[1]: noise}, np.array([24.0]), 50, 1
    )
    assert out[f"{ENDPOINTS[0]}/auc_24m"] == pytest.approx((1.0, 1.0))
    lo, hi = out[f"{ENDPOINTS[1]}/auc_24m"]
    assert lo < 0.5 < hi and hi - lo < 0.3


def test_validation_folds_hold_equal_shares_of_each_outcome(dev):
    """Stratified folds: every outcome stratum is spread over the folds within one patient,
    so no fold model is trained on a set short of events (the pooled AUC's bias)."""
    from training.evaluate import outcome_strata

    cfg = TrainConfig.model_validate(TINY)
    folds = cv_folds(dev.y, cfg)
    strata = outcome_strata(dev.y)
    assert len(np.unique(strata)) >= 3  # the check below is not vacuous
    for r in range(folds.shape[0]):
        assert sorted(np.unique(folds[r])) == list(range(cfg.evaluation.cv_folds))
        for s in np.unique(strata):
            counts = np.bincount(folds[r][strata == s], minlength=cfg.evaluation.cv_folds)
            assert counts.max() - counts.min() <= 1
    plain = TrainConfig.model_validate(
        {**TINY, "evaluation": {**TINY["evaluation"], "stratify": False}}
    )
    unstratified = cv_folds(dev.y, plain)
    assert unstratified.shape == folds.shape and not np.array_equal(unstratified, folds)


def test_too_few_patients_per_stratum_fall_back_to_plain_folds(dev):
    """StratifiedKFold refuses when every stratum is smaller than K; the folds still cover
    every patient once per repeat."""
    cfg = TrainConfig.model_validate({**TINY, "evaluation": {**TINY["evaluation"], "cv_folds": 40}})
    small = {e: dev.y[e][:60] for e in ENDPOINTS}
    folds = cv_folds(small, cfg)
    assert folds.shape == (2, 60)
    assert all(np.bincount(folds[r]).max() <= 2 for r in range(2))
