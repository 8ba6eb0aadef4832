"""true_cif: the DGP's exact risks agree with what the DGP's own simulated data show."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sksurv.nonparametric import cumulative_incidence_competing_risks

from features.config import ENDPOINTS, EVENT_COMPETING, EVENT_OF_INTEREST
from features.pipeline import encode_endpoint
from features.schema import INPUT_COLUMNS, OUTCOME_COLUMNS
from features.synthetic import simulate_cohort, simulate_outcomes, true_cif

N_IDENTICAL = 20_000
TIMES = np.array([3.0, 6.0, 12.0, 24.0, 36.0, 60.0])
N_SE = 4.0  # agreement within four Monte-Carlo standard errors at every time
HALF_ROUNDING = 0.05
"""Recorded times are rounded to 0.1 month, so an event recorded at or before t truly
happened before t + 0.05: the estimate at t is compared with the truth at t + 0.05."""

LOW_RISK = {
    "patient_id": "LOW",
    "age_years": 45,
    "sex": "female",
    "rt_stage": "rT1",
    "nodal_recurrence": False,
    "ttr_months": 60.0,
    "gtv_cm3": 8.0,
    "primary_dose_gy": 66.0,
    "primary_fraction_gy": 2.0,
    "primary_technique": "IMRT",
    "reirr_dose_gy": 60.0,
    "reirr_fraction_gy": 2.0,
    "reirr_fractions_per_day": 1,
    "chemotherapy": False,
    "brachytherapy_boost": False,
    "prior_grade3_toxicity": False,
    "preexisting_necrosis": False,
}
HIGH_RISK = dict(
    LOW_RISK,
    patient_id="HIGH",
    age_years=62,
    sex="male",
    rt_stage="rT4",
    ttr_months=18.0,
    gtv_cm3=70.0,
    primary_dose_gy=72.0,
    primary_fraction_gy=None,
    primary_technique="unknown",
    reirr_dose_gy=70.0,
    reirr_fraction_gy=2.2,
    chemotherapy=True,
    prior_grade3_toxicity=True,
    preexisting_necrosis=True,
)


def _identical(profile: dict, n: int) -> pd.DataFrame:
    df = pd.DataFrame([profile] * n)
    df["patient_id"] = [f"{profile['patient_id']}-{i}" for i in range(n)]
    return df[list(INPUT_COLUMNS)]


@pytest.fixture(scope="module", params=[LOW_RISK, HIGH_RISK], ids=["low", "high"])
def identical_cohort(request) -> pd.DataFrame:
    return simulate_outcomes(_identical(request.param, N_IDENTICAL), seed=17)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("event", [EVENT_OF_INTEREST, EVENT_COMPETING])
def test_true_cif_matches_aalen_johansen(identical_cohort, endpoint, event):
    y = encode_endpoint(identical_cohort, endpoint)
    t_aj, cif_aj, ci = cumulative_incidence_competing_risks(
        y["event"], y["time"], conf_type="log-log"
    )
    idx = np.searchsorted(t_aj, TIMES, side="right") - 1
    est = np.where(idx >= 0, cif_aj[event][np.maximum(idx, 0)], 0.0)
    lo, hi = ci[event, 0, np.maximum(idx, 0)], ci[event, 1, np.maximum(idx, 0)]
    se = (hi - lo) / (2 * norm.ppf(0.975))
    truth = true_cif(identical_cohort.iloc[:1], endpoint, TIMES + HALF_ROUNDING, event=event)[0]
    tol = N_SE * se
    assert np.all(np.abs(est - truth) <= tol), (endpoint, event, est, truth, tol)


def test_high_risk_profile_is_riskier_than_low_risk():
    both = pd.DataFrame([LOW_RISK, HIGH_RISK])[list(INPUT_COLUMNS)]
    for endpoint in ENDPOINTS:
        cif = true_cif(both, endpoint, [24.0])
        assert cif[1, 0] > 2 * cif[0, 0]


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return simulate_cohort(400, seed=21)


def test_curves_are_probabilities_that_only_rise(sample):
    times = np.linspace(0, 60, 31)
    for endpoint in ENDPOINTS:
        c1 = true_cif(sample, endpoint, times)
        c2 = true_cif(sample, endpoint, times, event=EVENT_COMPETING)
        assert c1.shape == (len(sample), len(times))
        assert np.all(c1[:, 0] == 0) and np.all(c2[:, 0] == 0)
        assert np.all(np.diff(c1, axis=1) >= -1e-12)
        assert np.all(np.diff(c2, axis=1) >= -1e-12)
        assert np.all(c1 + c2 <= 1 + 1e-9)


def test_haemorrhage_never_exceeds_necrosis(sample):
    times = [6.0, 24.0, 60.0]
    assert np.all(
        true_cif(sample, "fatal_haemorrhage", times)
        <= true_cif(sample, "mucosal_necrosis", times) + 1e-12
    )


def test_outcome_columns_and_row_order_do_not_matter(sample):
    times = [12.0, 36.0]
    full = true_cif(sample, "mucosal_necrosis", times)
    inputs_only = sample.drop(columns=list(OUTCOME_COLUMNS))
    np.testing.assert_allclose(true_cif(inputs_only, "mucosal_necrosis", times), full)
    rev = inputs_only.iloc[::-1]
    np.testing.assert_allclose(true_cif(rev, "mucosal_necrosis", times), full[::-1])


def test_a_table_read_back_from_csv_gives_the_same_truth(sample, tmp_path):
    from features.io import load_table, write_table

    text = load_table(write_table(sample, tmp_path / "cohort.csv"))  # every cell is text
    for endpoint in ENDPOINTS:
        np.testing.assert_allclose(
            true_cif(text, endpoint, [12.0, 36.0]), true_cif(sample, endpoint, [12.0, 36.0])
        )


def test_unsorted_times_are_answered_in_the_order_asked(sample):
    ordered = true_cif(sample, "fatal_haemorrhage", [6.0, 12.0, 24.0])
    shuffled = true_cif(sample, "fatal_haemorrhage", [24.0, 6.0, 12.0])
    np.testing.assert_allclose(shuffled, ordered[:, [2, 0, 1]])


def test_a_higher_dose_raises_the_true_risk(sample):
    hi = sample.assign(reirr_dose_gy=70.0, reirr_fraction_gy=2.0, reirr_fractions_per_day=1)
    lo = sample.assign(reirr_dose_gy=60.0, reirr_fraction_gy=2.0, reirr_fractions_per_day=1)
    for endpoint in ENDPOINTS:
        assert np.all(true_cif(hi, endpoint, [24.0]) > true_cif(lo, endpoint, [24.0]))


def test_the_integration_step_is_fine_enough(sample):
    rows = sample.iloc[:50]
    times = [1.0, 6.0, 24.0, 60.0]
    for endpoint in ENDPOINTS:
        coarse = true_cif(rows, endpoint, times)
        fine = true_cif(rows, endpoint, times, step_months=0.005)
        np.testing.assert_allclose(coarse, fine, atol=1e-3)


def test_bad_arguments_are_refused(sample):
    with pytest.raises(ValueError, match="endpoint"):
        true_cif(sample, "tumour_control", [12.0])
    with pytest.raises(ValueError, match="times"):
        true_cif(sample, "mucosal_necrosis", [-1.0])
    with pytest.raises(ValueError, match="event"):
        true_cif(sample, "mucosal_necrosis", [12.0], event=3)
