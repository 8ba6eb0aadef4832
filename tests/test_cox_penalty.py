"""CauseSpecificCox with a penalty chosen per cause: the likelihood pieces and the choice."""

from __future__ import annotations

import numpy as np
import pytest
from sksurv.linear_model.coxph import CoxPHOptimizer

from features.timegrid import DEFAULT_GRID
from models._cif import grid_indices
from models.baselines import CauseSpecificCox, cox_loglik_information
from tests.survival_sim import simulate

GRID = (0.0, 0.03, 0.3, 3.0)


def _design(n: int, seed: int, n_noise: int = 3):
    X, y = simulate(n, seed=seed, n_noise=n_noise)
    time_idx, event = grid_indices(DEFAULT_GRID, y["time"], y["event"])
    Z = (X.to_numpy() - X.to_numpy().mean(0)) / X.to_numpy().std(0)
    return X, y, Z, time_idx, event == 1


def test_log_likelihood_and_information_match_scikit_survival_and_finite_differences():
    _, _, Z, time_idx, is_event = _design(300, seed=2)
    beta = np.random.default_rng(0).normal(scale=0.3, size=Z.shape[1])
    loglik, info = cox_loglik_information(Z, time_idx, is_event, beta)
    # scikit-survival's (Breslow) loss is -loglik / n at alpha = 0, on the same tied times
    order = np.argsort(-DEFAULT_GRID.points[time_idx], kind="mergesort")
    opt = CoxPHOptimizer(
        Z[order],
        is_event[order],
        DEFAULT_GRID.points[time_idx][order].astype(float),
        np.zeros(Z.shape[1]),
        "breslow",
    )
    assert -opt.nlog_likelihood(beta) * Z.shape[0] == pytest.approx(loglik, rel=1e-10)
    eps = 1e-5
    for j in range(Z.shape[1]):
        e = np.zeros_like(beta)
        e[j] = eps
        up = cox_loglik_information(Z, time_idx, is_event, beta + e)[0]
        down = cox_loglik_information(Z, time_idx, is_event, beta - e)[0]
        mid = loglik
        assert -(up - 2 * mid + down) / eps**2 == pytest.approx(info[j, j], rel=1e-4)
    assert np.allclose(info, info.T)


def test_penalty_grows_when_events_are_few_relative_to_noise_features():
    X, y, *_ = _design(120, seed=4, n_noise=25)
    small = CauseSpecificCox(penalty_grid=GRID).fit(X, y)
    Xb, yb, *_ = _design(3000, seed=4, n_noise=25)
    large = CauseSpecificCox(penalty_grid=GRID).fit(Xb, yb)
    d_small = (y["event"] == 1).sum()
    d_large = (yb["event"] == 1).sum()
    # relative to the number of events, the small cohort is shrunk at least as hard
    assert small.alphas_[0] / d_small >= large.alphas_[0] / d_large
    assert small.alphas_[0] > CauseSpecificCox().alpha
    # the default (no grid) is the fixed small ridge, unchanged
    assert np.all(CauseSpecificCox().fit(X, y).alphas_ == CauseSpecificCox().alpha)
    cif = small.predict_cif(X)
    assert np.all(np.diff(cif, axis=-1) >= -1e-12) and np.all(cif.sum(1) <= 1 + 1e-12)
