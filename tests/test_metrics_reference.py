"""training.metrics agrees with scikit-survival (one cause, untied) and with R (ties, 2 causes).

The R references (riskRegression::Score, cmprsk::cuminc, prodlim::jackknife) are frozen in
tests/fixtures/metrics/ by make_reference.R; R is not needed to run these tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import cumulative_incidence_competing_risks, kaplan_meier_estimator
from sksurv.util import Surv

from training import metrics as M

SKSURV_TOL = 1e-6
R_TOL = 1e-3
FIXTURES = Path(__file__).parent / "fixtures" / "metrics"
DATASETS = ("grid", "halfmonth", "admin")
HORIZONS = (6.0, 12.0, 24.0)


def _one_cause(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Continuous (untied) times, one cause, ~30 % censored, an informative risk score."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = rng.exponential(20.0 * np.exp(-0.7 * x))
    t_cens = rng.uniform(2.0, 60.0, size=n)
    time = np.minimum(t_event, t_cens)
    event = (t_event <= t_cens).astype(int)
    risk = 1.0 / (1.0 + np.exp(-(x + rng.normal(scale=0.8, size=n))))
    assert np.unique(time).shape[0] == n
    return time, event, risk


def _two_causes(seed: int, n: int = 300, *, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t_event = rng.exponential(25.0, size=n)
    t_cens = rng.uniform(2.0, 60.0, size=n)
    time = np.minimum(t_event, t_cens)
    event = np.where(t_event <= t_cens, rng.choice([1, 2], size=n), 0)
    if tied:
        time = np.ceil(time)
    return time, event


@pytest.mark.parametrize("seed", [1, 2])
def test_auc_matches_sksurv_cumulative_dynamic_auc(seed):
    time, event, risk = _one_cause(seed)
    y = Surv.from_arrays(event.astype(bool), time)
    for h in HORIZONS:
        ref = cumulative_dynamic_auc(y, y, risk, [h])[0][0]
        assert abs(M.auc_cr(time, event, risk, 1, h) - ref) < SKSURV_TOL


@pytest.mark.parametrize("seed", [1, 2])
def test_brier_and_integrated_brier_match_sksurv(seed):
    time, event, risk = _one_cause(seed)
    y = Surv.from_arrays(event.astype(bool), time)
    times = np.array([3.0, 6.0, 12.0, 18.0, 24.0, 36.0])
    # a time-dependent predicted cumulative incidence, rising with time
    risk_matrix = 1.0 - (1.0 - risk[:, None]) ** (times[None, :] / 12.0)
    _, ref = brier_score(y, y, 1.0 - risk_matrix, times)
    ours = [M.brier_cr(time, event, risk_matrix[:, j], 1, t) for j, t in enumerate(times)]
    np.testing.assert_allclose(ours, ref, atol=SKSURV_TOL, rtol=0)
    ref_ibs = integrated_brier_score(y, y, 1.0 - risk_matrix, times)
    assert abs(M.integrated_brier_cr(time, event, risk_matrix, 1, times) - ref_ibs) < SKSURV_TOL


@pytest.mark.parametrize("seed", [1, 2])
def test_uno_c_matches_sksurv_concordance_index_ipcw(seed):
    time, event, risk = _one_cause(seed)
    y = Surv.from_arrays(event.astype(bool), time)
    for tau in (12.0, 36.0):
        ref = concordance_index_ipcw(y, y, risk, tau=tau)[0]
        assert abs(M.uno_c(time, event, risk, 1, tau) - ref) < SKSURV_TOL


def test_cause_specific_concordance_matches_sksurv_on_binarised_competing_data():
    time, event = _two_causes(3, tied=False)
    risk = np.random.default_rng(4).uniform(size=time.shape[0]) + 0.1 * (event == 1)
    is_1 = event == 1
    y = Surv.from_arrays(is_1, time)
    ref = concordance_index_ipcw(y, y, risk, tau=30.0)[0]
    assert abs(M.uno_c(time, event, risk, 1, 30.0) - ref) < SKSURV_TOL
    # Harrell's C also with tied times and tied risks
    time_t, event_t = _two_causes(5, tied=True)
    risk_t = np.round(np.random.default_rng(6).uniform(size=time_t.shape[0]), 1)
    ref = concordance_index_censored(event_t == 1, time_t, risk_t)[0]
    assert abs(M.harrell_c(time_t, event_t, risk_t, 1) - ref) < SKSURV_TOL


def test_cumulative_incidence_matches_sksurv_aalen_johansen_and_kaplan_meier():
    for tied in (False, True):
        time, event = _two_causes(7, tied=tied)
        grid, cif = cumulative_incidence_competing_risks(event, time)
        for cause in (1, 2):
            ours = M.cumulative_incidence(time, event, cause, grid)
            np.testing.assert_allclose(ours, cif[cause], atol=SKSURV_TOL, rtol=0)
    time, event, _ = _one_cause(8)
    km_times, km = kaplan_meier_estimator(event.astype(bool), time)
    ours = M.cumulative_incidence(time, event, 1, km_times)
    np.testing.assert_allclose(ours, 1.0 - km, atol=SKSURV_TOL, rtol=0)


def _fixture(name: str) -> tuple[pd.DataFrame, dict]:
    data = pd.read_csv(FIXTURES / f"input_{name}.csv")
    with open(FIXTURES / f"reference_{name}.json") as fh:
        return data, json.load(fh)


@pytest.mark.parametrize("name", DATASETS)
def test_fixture_inputs_exercise_ties_and_two_causes(name):
    data, _ = _fixture(name)
    assert set(np.unique(data["event"])) == {0, 1, 2}
    assert data["time"].duplicated().any()
    assert len(data) >= 150


@pytest.mark.parametrize("name", DATASETS)
def test_auc_and_brier_match_riskregression_score(name):
    data, ref = _fixture(name)
    time, event = data["time"].to_numpy(), data["event"].to_numpy()
    for h in ref["horizons"]:
        risk = data[f"risk_{h}"].to_numpy()
        assert abs(M.auc_cr(time, event, risk, 1, h) - ref["auc"][str(h)]) < R_TOL
        assert abs(M.brier_cr(time, event, risk, 1, h) - ref["brier"][str(h)]) < R_TOL


@pytest.mark.parametrize("name", DATASETS)
def test_cumulative_incidence_matches_cmprsk_cuminc(name):
    data, ref = _fixture(name)
    time, event = data["time"].to_numpy(), data["event"].to_numpy()
    cuminc = ref["cuminc"]
    for cause in (1, 2):
        ours = M.cumulative_incidence(time, event, cause, cuminc["times"])
        np.testing.assert_allclose(ours, cuminc[f"cause{cause}"], atol=R_TOL, rtol=0)


@pytest.mark.parametrize("name", DATASETS)
def test_pseudo_observations_match_prodlim_jackknife(name):
    data, ref = _fixture(name)
    time, event = data["time"].to_numpy(), data["event"].to_numpy()
    for h in ref["horizons"]:
        ours = M.pseudo_observations(time, event, 1, h)
        np.testing.assert_allclose(ours, ref["pseudo"][str(h)], atol=R_TOL, rtol=0)
