"""The promotion gate (training/gate.py): paired evidence, event floor, hold-out definitions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from features.config import ENDPOINTS
from features.pipeline import ENDPOINT_DTYPE
from training.config import GateConfig, load_config
from training.gate import (
    INSUFFICIENT_EVIDENCE,
    HoldoutDefinition,
    HoldoutMismatchError,
    check_same_holdout,
    count_events,
    decide,
    paired_bootstrap,
    version_holdout,
)
from training.metrics import auc_cr, brier_cr

H = 24.0
RULE = GateConfig(
    min_auc=0.6,
    max_ici=0.08,
    auc_margin=0.05,
    brier_margin=0.02,
    min_holdout_events=20,
    n_bootstrap=200,
)
GOOD = {e: {"auc": 0.75, "ici": 0.03} for e in ENDPOINTS}
HOLD = HoldoutDefinition("reirrad-holdout-v1", 0.2)


def _cohort(n: int, seed: int, base_rate: float = 0.02):
    """Outcomes from a known risk score, and the true 24-month risk of each patient."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    out, truth = {}, {}
    for k, e in enumerate(ENDPOINTS):
        h1 = base_rate * np.exp(x * (1.0 - 0.3 * k))  # cause of interest, per month
        h2 = 0.01  # competing cause
        t_event = rng.exponential(1.0 / (h1 + h2))
        cause = np.where(rng.random(n) < h1 / (h1 + h2), 1, 2)
        censor = rng.uniform(6.0, 60.0, size=n)
        y = np.empty(n, dtype=ENDPOINT_DTYPE)
        y["time"] = np.minimum(t_event, censor)
        y["event"] = np.where(t_event <= censor, cause, 0)
        out[e] = y
        truth[e] = h1 / (h1 + h2) * (1.0 - np.exp(-(h1 + h2) * H))
    return out, truth


@pytest.fixture(scope="module")
def cohort():
    return _cohort(400, seed=3)


def test_identical_models_are_promoted(cohort):
    y, truth = cohort
    d = decide(RULE, GOOD, HOLD, y, truth, truth, champion_version=3, champion_holdout=HOLD)
    assert d.promote and d.passed and d.status == "promote", d.summary()
    for ev in d.evidence.values():
        assert ev.auc_diff.lo == ev.auc_diff.hi == 0.0
        assert ev.brier_diff.lo == ev.brier_diff.hi == 0.0
    assert set(d.as_dict()["intervals"]) == set(RULE.endpoints)
    assert "gate/mucosal_necrosis/auc_diff_lo" in d.metrics()


def test_a_clearly_worse_model_is_refused(cohort):
    y, truth = cohort
    noise = {e: np.random.default_rng(9).permutation(r) for e, r in truth.items()}
    d = decide(RULE, GOOD, HOLD, y, noise, truth, champion_version=3, champion_holdout=HOLD)
    assert not d.promote and d.status == "refuse"
    assert any("AUC" in r and "lower bound" in r for r in d.reasons)
    for ev in d.evidence.values():
        assert ev.auc_diff.hi < 0  # the interval excludes "no worse" altogether


def test_a_slightly_noisier_model_within_the_margin_is_promoted(cohort):
    """Equal quality up to noise: the interval straddles zero and the margin lets it pass."""
    y, truth = cohort
    rng = np.random.default_rng(5)
    jitter = {e: np.clip(r * np.exp(rng.normal(0, 0.05, r.size)), 0, 1) for e, r in truth.items()}
    d = decide(RULE, GOOD, HOLD, y, jitter, truth, champion_version=3, champion_holdout=HOLD)
    assert d.promote, d.summary()
    assert any(ev.auc_diff.lo < 0 < ev.auc_diff.hi for ev in d.evidence.values())


def test_too_few_events_is_insufficient_evidence(cohort):
    y, truth = _cohort(60, seed=4, base_rate=0.004)
    assert min(count_events(y[e], H) for e in ENDPOINTS) < RULE.min_holdout_events
    d = decide(RULE, GOOD, HOLD, y, truth, truth, champion_version=3, champion_holdout=HOLD)
    assert not d.promote and d.status == "insufficient_evidence"
    assert d.reason == INSUFFICIENT_EVIDENCE and "reirrad promote" in d.summary()
    assert not d.evidence  # no intervals computed on noise


def test_mismatched_holdout_definitions_are_refused(cohort):
    y, truth = cohort
    other = HoldoutDefinition("another-salt", 0.2)
    d = decide(RULE, GOOD, HOLD, y, truth, truth, champion_version=2, champion_holdout=other)
    assert not d.promote and d.status == "holdout_mismatch"
    assert "another-salt" in d.reason and "differ" in d.reason
    with pytest.raises(HoldoutMismatchError, match="fraction 0.3"):
        check_same_holdout(HOLD, HoldoutDefinition(HOLD.salt, 0.3), 2)
    with pytest.raises(HoldoutMismatchError, match="no recorded hold-out"):
        check_same_holdout(HOLD, None, 2)
    check_same_holdout(HOLD, HoldoutDefinition(HOLD.salt, 0.2), 2)  # the same: no error


def test_first_model_is_judged_on_the_absolute_limits_only():
    d = decide(RULE, GOOD, HOLD)
    assert d.promote and d.first_model and d.status == "first_model"
    bad = {**GOOD, "fatal_haemorrhage": {"auc": 0.55, "ici": 0.03}}
    d = decide(RULE, bad, HOLD)
    assert not d.promote and any("fatal_haemorrhage" in r and "AUC" in r for r in d.reasons)


def test_absolute_limits_still_bind_against_a_champion(cohort):
    y, truth = cohort
    miscalibrated = {e: {"auc": 0.8, "ici": 0.2} for e in ENDPOINTS}
    d = decide(
        RULE, miscalibrated, HOLD, y, truth, truth, champion_version=3, champion_holdout=HOLD
    )
    assert not d.promote and any("ICI" in r for r in d.reasons)


def test_unscorable_champion_is_refused():
    d = decide(RULE, GOOD, HOLD, champion_version=4, champion_error="OSError: gone")
    assert not d.promote and d.status == "champion_unscorable" and "OSError" in d.reason


def test_paired_bootstrap_estimates_and_intervals(cohort):
    y, truth = cohort
    worse = {e: np.sqrt(r) for e, r in truth.items()}  # same ranking, miscalibrated
    ev = paired_bootstrap(y, worse, truth, H, n_bootstrap=200, seed=1)
    again = paired_bootstrap(y, worse, truth, H, n_bootstrap=200, seed=1)
    for e in ENDPOINTS:
        t, k = y[e]["time"], y[e]["event"]
        assert math.isclose(
            ev[e].brier_diff.estimate,
            brier_cr(t, k, worse[e], 1, H) - brier_cr(t, k, truth[e], 1, H),
        )
        assert math.isclose(ev[e].champion_auc, auc_cr(t, k, truth[e], 1, H))
        assert abs(ev[e].auc_diff.estimate) < 1e-12  # a monotone transform keeps the AUC
        assert ev[e].brier_diff.lo > 0  # the miscalibration is detected
        assert ev[e].brier_diff.lo <= ev[e].brier_diff.estimate <= ev[e].brier_diff.hi
        assert ev[e] == again[e]  # seeded


def test_holdout_definition_round_trips_through_tags_and_run_params():
    tags = HOLD.tags()
    assert HoldoutDefinition.from_mapping(tags, "holdout_salt", "holdout_fraction") == HOLD
    params = {"config.holdout.salt": HOLD.salt, "config.holdout.fraction": "0.2"}

    class Client:
        def __init__(self, version_tags):
            self.version_tags = version_tags

        def get_model_version(self, name, version):
            return SimpleNamespace(tags=self.version_tags, run_id="r1")

        def get_run(self, run_id):
            return SimpleNamespace(data=SimpleNamespace(params=params))

    assert version_holdout(Client(tags), "m", 1) == HOLD
    assert version_holdout(Client({}), "m", 1) == HOLD  # older versions: the run's config
    params.clear()
    assert version_holdout(Client({}), "m", 1) is None


def test_presets_state_the_margins():
    from training.config import CONFIG_DIR

    for preset in ("quick", "release"):
        gate = load_config(preset).gate
        assert 0 < gate.auc_margin < 0.2 and 0 < gate.brier_margin < 0.05
        assert gate.min_holdout_events == 20
        text = (CONFIG_DIR / f"{preset}.toml").read_text()
        assert "auc_margin" in text and "brier_margin" in text  # stated, not defaulted


def test_fast_replicate_scores_equal_the_reference_metrics(cohort):
    """The bootstrap's inner loop shares the IPCW weights; it must equal auc_cr/brier_cr."""
    from training.gate import _paired_scores

    y, truth = cohort
    rng = np.random.default_rng(2)
    for e in ENDPOINTS:
        idx = rng.integers(0, y[e].size, y[e].size)
        t, k = y[e]["time"][idx], y[e]["event"][idx]
        new, old = np.sqrt(truth[e][idx]), truth[e][idx]
        got = _paired_scores(t, k, new, old, H)
        want = (
            auc_cr(t, k, new, 1, H),
            auc_cr(t, k, old, 1, H),
            brier_cr(t, k, new, 1, H),
            brier_cr(t, k, old, 1, H),
        )
        np.testing.assert_allclose(got, want, rtol=1e-12)
