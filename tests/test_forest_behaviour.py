"""Model behaviour of CompetingRiskForest on a simple simulation: direction and profiles."""

from __future__ import annotations

import numpy as np

from features.config import MAIN_HORIZON_MONTHS
from models.forest import CompetingRiskForest
from tests.survival_sim import simulate

N_TREES = 100
SEED = 2024
H = MAIN_HORIZON_MONTHS


def test_direction_and_profiles_on_a_simple_simulation():
    X, y = simulate(800, seed=4)
    f = CompetingRiskForest(n_estimators=60, random_state=SEED).fit(X, y)
    base = f.predict_risk(X, H).mean()
    assert f.predict_risk(X.assign(x0=X["x0"] + 1.0), H).mean() > base
    assert f.predict_risk(X.assign(x2=1.0), H).mean() >= base
    high = X.iloc[:1].assign(x0=2.0, x2=1.0)
    low = X.iloc[:1].assign(x0=-2.0, x2=0.0)
    assert f.predict_risk(high, H)[0] > f.predict_risk(low, H)[0] + 0.1
    # the competing cause does not depend on x0 in the simulation: no strong spurious trend
    r2 = f.predict_risk(X, H, cause=2)
    assert abs(np.corrcoef(r2, X["x0"])[0, 1]) < abs(
        np.corrcoef(f.predict_risk(X, H), X["x0"])[0, 1]
    )
