"""A tiny competing-risks simulation for the model tests (no dependency on the cohort DGP).

Cause 1's hazard rises with x0 (log-HR ``beta`` per unit) and is doubled by flag x2; cause 2
and censoring do not depend on X. The remaining columns are noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BASE_HAZARD_1 = 0.01
BASE_HAZARD_2 = 0.015
FLAG_LOG_HR = np.log(2.0)
CENSOR_MAX_MONTHS = 80.0


def simulate(
    n: int, seed: int, beta: float = 0.8, n_noise: int = 3
) -> tuple[pd.DataFrame, np.ndarray]:
    """Return (X DataFrame, y structured array) with a few continuous and flag columns."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=n)
    x1 = rng.normal(size=n)
    x2 = (rng.random(n) < 0.4).astype(float)
    noise = rng.normal(size=(n, n_noise)).round(1)
    h1 = BASE_HAZARD_1 * np.exp(beta * x0 + FLAG_LOG_HR * x2)
    t1 = rng.exponential(1.0 / h1)
    t2 = rng.exponential(1.0 / BASE_HAZARD_2, size=n)
    c = rng.uniform(0.0, CENSOR_MAX_MONTHS, size=n)
    time = np.minimum.reduce([t1, t2, c])
    event = np.where(time == t1, 1, np.where(time == t2, 2, 0))
    X = pd.DataFrame({"x0": x0, "x1": x1, "x2": x2})
    for j in range(n_noise):
        X[f"noise{j}"] = noise[:, j]
    y = np.empty(n, dtype=[("event", np.int64), ("time", np.float64)])
    y["event"] = event
    y["time"] = time
    return X, y
