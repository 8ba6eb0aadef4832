"""training.metrics on tiny hand-worked examples, simulated truths and invalid inputs."""

from __future__ import annotations

import time as clock

import numpy as np
import pytest

from training import metrics as M

HORIZON = 12.0
CAL_N = 5000
CAL_SECONDS = 2.0


# ---------------------------------------------------------------------------- helpers


def _tied_competing(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    time = np.ceil(np.minimum(rng.exponential(20.0, n), rng.uniform(1.0, 40.0, n)))
    event = rng.choice([0, 1, 2], size=n, p=[0.3, 0.4, 0.3])
    return time, event


def _calibrated_sample(seed: int, n: int = CAL_N) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patients whose true cumulative incidence of cause 1 at HORIZON is exactly ``p``."""
    rng = np.random.default_rng(seed)
    p = rng.beta(2.0, 5.0, n)
    q = 0.3 * (1.0 - p)  # competing event by the horizon
    u = rng.uniform(size=n)
    t_event = np.where(u < p + q, rng.uniform(0.0, HORIZON, n), HORIZON + rng.exponential(10.0, n))
    cause = np.where(u < p, 1, np.where(u < p + q, 2, 1))
    t_cens = rng.uniform(0.0, 3.0 * HORIZON, n)
    return np.minimum(t_event, t_cens), np.where(t_event <= t_cens, cause, 0), p


def _brute_force_pseudo(time, event, cause, horizon):
    n = time.shape[0]
    full = M.cumulative_incidence(time, event, cause, [horizon])[0]
    loo = [
        M.cumulative_incidence(np.delete(time, i), np.delete(event, i), cause, [horizon])[0]
        for i in range(n)
    ]
    return n * full - (n - 1) * np.array(loo)


# ---------------------------------------------------------------------------- cumulative incidence


def test_aalen_johansen_hand_example():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 2, 0, 1])
    cif = M.cumulative_incidence(time, event, 1, [0.5, 1, 2, 3, 4, 9])
    np.testing.assert_allclose(cif, [0, 0.25, 0.25, 0.25, 0.75, 0.75])
    np.testing.assert_allclose(M.cumulative_incidence(time, event, 2, [1.5, 2, 4]), [0, 0.25, 0.25])


def test_cifs_of_all_causes_add_up_to_one_minus_all_cause_km():
    time, event = _tied_competing(0)
    grid = np.unique(time)
    total = M.cumulative_incidence(time, event, 1, grid) + M.cumulative_incidence(
        time, event, 2, grid
    )
    any_event = (event > 0).astype(int)
    np.testing.assert_allclose(total, M.cumulative_incidence(time, any_event, 1, grid), atol=1e-12)


# ---------------------------------------------------------------------------- AUC and Brier


def test_auc_perfect_reversed_and_uninformative_rankings():
    time, event = _tied_competing(1)
    case = ((time <= HORIZON) & (event == 1)).astype(float)
    assert M.auc_cr(time, event, case, 1, HORIZON) == pytest.approx(1.0)
    assert M.auc_cr(time, event, -case, 1, HORIZON) == pytest.approx(0.0)
    assert M.auc_cr(time, event, np.zeros_like(time), 1, HORIZON) == pytest.approx(0.5)


def test_auc_hand_example_with_censoring_weights_and_tied_risk():
    # G: censoring at t=2 with 4 at risk -> G = 3/4 from t=2 on
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    event = np.array([1, 0, 2, 1, 0])
    # case: patient 0 (w 1); controls: 2 (competing, w 4/3), 3 and 4 (event-free, w 4/3)
    risk = np.array([0.8, 0.5, 0.9, 0.4, 0.1])
    assert M.auc_cr(time, event, risk, 1, 3.5) == pytest.approx(2.0 / 3.0)
    risk[2] = 0.8  # a tie counts 1/2
    assert M.auc_cr(time, event, risk, 1, 3.5) == pytest.approx(5.0 / 6.0)


def test_auc_is_nan_without_cases():
    time = np.array([5.0, 6.0, 7.0])
    assert np.isnan(M.auc_cr(time, np.array([2, 0, 0]), np.array([0.1, 0.2, 0.3]), 1, 4.0))


def test_brier_of_true_outcome_without_censoring_is_zero():
    rng = np.random.default_rng(2)
    time = rng.exponential(10.0, 100)
    event = rng.choice([1, 2], size=100)
    outcome = ((time <= HORIZON) & (event == 1)).astype(float)
    assert M.brier_cr(time, event, outcome, 1, HORIZON) == pytest.approx(0.0, abs=1e-15)
    assert M.brier_cr(time, event, np.full(100, 0.3), 1, HORIZON) == pytest.approx(
        np.mean((outcome - 0.3) ** 2)
    )


def test_brier_hand_example():
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    event = np.array([1, 0, 2, 1, 0])
    risk = np.array([0.8, 0.5, 0.3, 0.4, 0.1])
    expected = (0.2**2 + (0.3**2 + 0.4**2 + 0.1**2) / 0.75) / 5
    assert M.brier_cr(time, event, risk, 1, 3.5) == pytest.approx(expected)


def test_tie_convention_events_before_censoring():
    # event and censoring tied at t=2: the censoring risk set excludes the event, G(2) = 2/3
    # (censoring first would give 3/4 and a Brier of 0.2333)
    time = np.array([1.0, 2.0, 2.0, 3.0, 4.0])
    event = np.array([1, 1, 0, 2, 0])
    risk = np.full(5, 0.5)
    assert M.brier_cr(time, event, risk, 1, 2.5) == pytest.approx((0.5 + 0.25 * 2 * 1.5) / 5)


def test_ipcw_weights_sum_to_n_with_ties():
    # Brier(0) + Brier(1) is the mean IPCW weight, which the reverse KM makes exactly 1
    time, event = _tied_competing(3)
    for h in (3.0, 12.0, 20.0):
        zero = M.brier_cr(time, event, np.zeros_like(time), 1, h)
        one = M.brier_cr(time, event, np.ones_like(time), 1, h)
        assert zero + one == pytest.approx(1.0, abs=1e-12)


def test_integrated_brier_of_a_constant_score_is_that_constant():
    rng = np.random.default_rng(4)
    time = rng.exponential(10.0, 50)
    event = np.ones(50, dtype=int)
    times = np.array([2.0, 5.0, 9.0])
    risk_matrix = (time[:, None] <= times[None, :]).astype(float)
    assert M.integrated_brier_cr(time, event, risk_matrix, 1, times) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="increasing"):
        M.integrated_brier_cr(time, event, risk_matrix, 1, times[::-1])


# ---------------------------------------------------------------------------- concordance


def test_harrell_and_uno_on_hand_example():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 1, 0, 1])
    assert M.harrell_c(time, event, np.array([4.0, 3.0, 2.0, 1.0]), 1) == pytest.approx(1.0)
    assert M.harrell_c(time, event, np.array([1.0, 2.0, 3.0, 4.0]), 1) == pytest.approx(0.0)
    # pairs (0,1) (0,2) (0,3) (1,2) (1,3): concordant 0>1? no; the rest yes -> 4/5
    assert M.harrell_c(time, event, np.array([3.0, 4.0, 2.0, 1.0]), 1) == pytest.approx(0.8)


def test_uno_equals_harrell_without_censoring_or_competing_events():
    rng = np.random.default_rng(5)
    time = rng.exponential(10.0, 80)
    event = np.ones(80, dtype=int)
    risk = rng.uniform(size=80)
    assert M.uno_c(time, event, risk, 1, 1e6) == pytest.approx(M.harrell_c(time, event, risk, 1))


# ---------------------------------------------------------------------------- pseudo-values


@pytest.mark.parametrize("horizon", [0.5, 5.0, 12.0, 100.0])
def test_fast_pseudo_observations_equal_brute_force_jackknife(horizon):
    time, event = _tied_competing(6, n=120)
    np.testing.assert_allclose(
        M.pseudo_observations(time, event, 1, horizon),
        _brute_force_pseudo(time, event, 1, horizon),
        atol=1e-10,
    )


def test_pseudo_observations_without_censoring_are_the_indicators():
    rng = np.random.default_rng(7)
    time = np.ceil(rng.exponential(10.0, 150))
    event = rng.choice([1, 2], size=150)
    expected = ((time <= HORIZON) & (event == 1)).astype(float)
    np.testing.assert_allclose(M.pseudo_observations(time, event, 1, HORIZON), expected, atol=1e-10)


# ---------------------------------------------------------------------------- calibration


def test_calibration_of_a_perfectly_calibrated_risk():
    time, event, p = _calibrated_sample(8)
    start = clock.perf_counter()
    result = M.calibration_cr(time, event, p, 1, HORIZON)
    elapsed = clock.perf_counter() - start
    assert elapsed < CAL_SECONDS, f"calibration_cr took {elapsed:.2f} s on n={CAL_N}"
    assert result.glm_converged
    assert result.ici < 0.03
    assert result.e50 <= result.e90
    assert abs(result.slope - 1.0) < 0.15
    assert abs(result.citl) < 0.1
    assert abs(result.observed - result.expected) < 0.02
    assert result.curve_risk.shape == result.curve_observed.shape == (M.CURVE_POINTS,)
    assert np.all(np.diff(result.curve_risk) > 0)
    assert set(result.as_dict()) >= {"ici", "e50", "e90", "slope", "intercept", "curve_risk"}


def test_calibration_detects_underprediction_and_overfitting():
    time, event, p = _calibrated_sample(9)
    halved = M.calibration_cr(time, event, p / 2.0, 1, HORIZON)
    assert halved.ici > 0.1
    assert halved.citl > 0.5  # observed above predicted on the cloglog scale
    logit = np.log(p / (1.0 - p))
    overfit = 1.0 / (1.0 + np.exp(-2.0 * logit))  # predictions too extreme
    assert M.calibration_cr(time, event, overfit, 1, HORIZON).slope < 0.7


def test_degenerate_calibration_fits_are_nan_not_huge_numbers():
    time, event, p = _calibrated_sample(10, n=300)
    no_cause = np.where(event == 1, 2, event)  # nobody has the cause of interest
    result = M.calibration_cr(time, no_cause, p, 1, HORIZON)
    assert not result.glm_converged
    assert np.isnan(result.slope) and np.isnan(result.citl)
    constant = M.calibration_cr(time, event, np.full_like(p, 0.3), 1, HORIZON)
    assert np.isnan(constant.slope)
    assert np.isfinite(constant.ici)


# ---------------------------------------------------------------------------- net benefit


def test_net_benefit_hand_example_and_treat_all():
    time = np.array([1.0, 2.0, 10.0, 10.0, 3.0, 10.0])
    event = np.array([1, 1, 0, 0, 1, 0])
    risk = np.array([0.9, 0.6, 0.5, 0.2, 0.1, 0.7])
    nb = M.net_benefit_cr(time, event, risk, 1, 5.0, [0.0, 0.4, 0.95])
    np.testing.assert_allclose(nb, [0.5 - 0.0, 1 / 3 - (2 / 6) * (0.4 / 0.6), 0.0])
    treat_all = M.net_benefit_treat_all_cr(time, event, 1, 5.0, [0.0, 0.4])
    np.testing.assert_allclose(treat_all, [0.5, 0.5 - 0.5 * 0.4 / 0.6])


def test_net_benefit_counts_competing_deaths_as_non_events():
    # half die of the competing cause early: the event rate is the AJ 1/4, not 1 - KM's 1/2
    time = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 9.0, 9.0])
    event = np.array([2, 2, 2, 2, 1, 1, 0, 0])
    nb = M.net_benefit_treat_all_cr(time, event, 1, 5.0, [0.0])
    assert nb[0] == pytest.approx(0.25)


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time": [1.0, 2.0], "event": [1, 0, 1]}, "length mismatch"),
        ({"time": [1.0, -2.0, 3.0]}, "negative"),
        ({"event": [1, -1, 0]}, "unknown event codes"),
        ({"event": [1, 1.5, 0]}, "unknown event codes"),
        ({"risk": [0.1, np.nan, 0.3]}, "NaN"),
        ({"risk": [0.1, 0.2]}, "length mismatch"),
        ({"risk": [0.1, 1.2, 0.3]}, r"\[0, 1\]"),
        ({"cause": 0}, "cause"),
        ({"horizon": 0.0}, "horizon"),
        ({"time": [1.0, np.nan, 3.0]}, "NaN"),
    ],
)
def test_invalid_inputs_raise_clear_errors(kwargs, message):
    args = {
        "time": [1.0, 2.0, 3.0],
        "event": [1, 0, 2],
        "risk": [0.1, 0.2, 0.3],
        "cause": 1,
        "horizon": 2.5,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        M.brier_cr(
            np.array(args["time"]),
            np.array(args["event"]),
            np.array(args["risk"]),
            args["cause"],
            args["horizon"],
        )


def test_invalid_thresholds_and_nan_risk_in_rank_measures():
    time, event = np.array([1.0, 2.0, 3.0]), np.array([1, 0, 2])
    with pytest.raises(ValueError, match="thresholds"):
        M.net_benefit_cr(time, event, np.array([0.1, 0.2, 0.3]), 1, 2.5, [0.2, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        M.auc_cr(time, event, np.array([0.1, np.nan, 0.3]), 1, 2.5)
    with pytest.raises(ValueError, match="NaN"):
        M.harrell_c(time, event, np.array([0.1, np.nan, 0.3]), 1)
