"""Confidence intervals for the forest's CIF: the infinitesimal jackknife on in-bag counts.

The spread of single trees is not a confidence interval for their mean (it does not shrink
with more trees or more data). The infinitesimal jackknife (IJ) of Wager, Hastie & Efron
(2014, JMLR 15:1625) estimates the sampling variance of the bagged prediction from the same
trees: with N_bi the number of times training patient i is in tree b's bootstrap sample and
t_b(x) tree b's prediction,

    V_IJ(x)   = sum_i Cov_b(N_bi, t_b(x))^2
    V_IJ-U(x) = V_IJ(x) - (n / B^2) sum_b (t_b(x) - mean_b t(x))^2   (Monte-Carlo bias removed)

The corrected estimate can dip to or below zero where the Monte-Carlo noise of a finite
forest swamps the signal (few trees for the sample size); there the uncorrected V_IJ, an
upward-biased and so conservative estimate, is used instead of reporting a zero-width
interval. The interval is a normal interval on the logit scale by default (delta
method), which keeps it inside (0, 1) and asymmetric near 0, where most toxicity risks lie;
``scale="linear"`` gives the plain interval clipped to [0, 1].

What the interval covers: the forest's own sampling variability (what another cohort of the
same size would give), not its bias. Coverage of the *true* risk on the synthetic cohort is
measured in ``benchmarks/bench_explain.py`` and reported; it is below nominal where the
forest's smoothing bias is large (few events, extreme profiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import expit, logit
from scipy.stats import norm

Scale = Literal["logit", "linear"]
DEFAULT_LEVEL = 0.95
LOGIT_EPS = 1e-4
"""Risks are kept in [eps, 1 - eps] before the logit transform (a 0 CIF has no logit)."""
CHUNK_PATIENTS = 256
"""Patients per block of the covariance product, to bound memory at n_train x chunk x T."""


@dataclass(frozen=True)
class RiskInterval:
    """Point estimate, IJ standard error and confidence bounds, each (n, len(times))."""

    times: np.ndarray
    estimate: np.ndarray
    se: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float
    scale: str


def ij_variance(per_tree: np.ndarray, inbag_counts: np.ndarray) -> np.ndarray:
    """Bias-corrected infinitesimal-jackknife variance of the mean over trees.

    ``per_tree``: (B, n, T) tree predictions; ``inbag_counts``: (B, n_train) bootstrap counts.
    Returns (n, T) variances: V_IJ-U where positive, else the uncorrected V_IJ.
    """
    per_tree = np.asarray(per_tree, dtype=float)
    counts = np.asarray(inbag_counts, dtype=float)
    n_trees, n, n_t = per_tree.shape
    if counts.shape[0] != n_trees:
        raise ValueError("per_tree and inbag_counts disagree on the number of trees")
    n_train = counts.shape[1]
    centred_counts = counts - counts.mean(axis=0, keepdims=True)
    out = np.empty((n, n_t))
    for a in range(0, n, CHUNK_PATIENTS):
        block = per_tree[:, a : a + CHUNK_PATIENTS, :]
        centred = (block - block.mean(axis=0, keepdims=True)).reshape(n_trees, -1)
        cov = centred_counts.T @ centred / n_trees  # (n_train, chunk * T)
        v_ij = np.einsum("ij,ij->j", cov, cov)
        correction = n_train * np.einsum("bj,bj->j", centred, centred) / n_trees**2
        corrected = v_ij - correction
        # where Monte-Carlo noise swamps the signal the corrected estimate is <= 0; an
        # interval of zero width would claim certainty, so the uncorrected V_IJ (biased
        # upwards: conservative) stands in there
        out[a : a + CHUNK_PATIENTS] = np.where(corrected > 0, corrected, v_ij).reshape(-1, n_t)
    return out


def interval(
    estimate: np.ndarray,
    variance: np.ndarray,
    level: float = DEFAULT_LEVEL,
    scale: Scale = "logit",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(se, lower, upper) of a normal interval on ``scale``, mapped back to [0, 1]."""
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    z = norm.ppf(0.5 + level / 2)
    est = np.asarray(estimate, dtype=float)
    se = np.sqrt(np.asarray(variance, dtype=float))
    if scale == "linear":
        return se, np.clip(est - z * se, 0.0, 1.0), np.clip(est + z * se, 0.0, 1.0)
    if scale != "logit":
        raise ValueError(f"unknown scale {scale!r}")
    p = np.clip(est, LOGIT_EPS, 1 - LOGIT_EPS)
    se_logit = se / (p * (1 - p))  # delta method
    centre = logit(p)
    # a CIF of exactly 0 (or 1) has no logit: the clipped centre must not leave it outside
    lower = np.minimum(expit(centre - z * se_logit), est)
    upper = np.maximum(expit(centre + z * se_logit), est)
    return se, lower, upper


def forest_interval(
    model,
    X,
    times,
    cause: int | None = None,
    level: float = DEFAULT_LEVEL,
    scale: Scale = "logit",
) -> RiskInterval:
    """IJ confidence interval of a fitted ``CompetingRiskForest``'s CIF of ``cause`` at times."""
    times = np.asarray(times, dtype=float)
    per_tree = model.predict_cif_per_tree(X, cause=cause, times=times)
    estimate = per_tree.mean(axis=0)
    var = ij_variance(per_tree, model.inbag_counts_)
    se, lo, hi = interval(estimate, var, level, scale)
    return RiskInterval(times, estimate, se, lo, hi, level, scale)


def bundle_intervals(
    bundle, X, times, level: float = DEFAULT_LEVEL, scale: Scale = "logit"
) -> dict[str, RiskInterval]:
    """Both endpoints' intervals from a :class:`models.bundle.ModelBundle`'s forests."""
    return {
        e: forest_interval(m, X, times, level=level, scale=scale) for e, m in bundle.models.items()
    }
