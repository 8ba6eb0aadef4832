"""Confidence intervals for the forest's CIF: the infinitesimal jackknife on in-bag counts.

The spread of single trees is not a confidence interval for their mean (it does not shrink
with more trees or more data). The infinitesimal jackknife (IJ) of Wager, Hastie & Efron
(2014, JMLR 15:1625) estimates the sampling variance of the bagged prediction from the same
trees: with N_bi the number of times training patient i is in tree b's bootstrap sample and
t_b(x) tree b's prediction,

    V_IJ(x)   = sum_i Cov_b(N_bi, t_b(x))^2
    V_IJ-U(x) = V_IJ(x) - (n / B^2) sum_b (t_b(x) - mean_b t(x))^2   (Monte-Carlo bias removed)

The corrected estimate is noisy and can dip to or below zero where the Monte-Carlo noise
of a finite forest swamps the signal; :func:`ij_variance` smooths it over neighbouring grid
times and floors it at the forest's own Monte-Carlo variance. The interval is a normal
interval on the probability scale clipped to [0, 1] by default.
A logit-scale interval (``scale="logit"``, delta method) was tried: its coverage on the
synthetic cohort was no better, and for risks near 0 with a noisy variance its upper bound
explodes towards 1.

What the interval covers: the forest's own sampling variability (what another cohort of the
same size would give), not its bias. Coverage of the *true* risk on the synthetic cohort is
measured in ``benchmarks/bench_explain.py`` and reported; it is below nominal where the
forest's smoothing bias is large (few events, extreme profiles).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import expit, logit
from scipy.stats import norm

Scale = Literal["logit", "linear"]
DEFAULT_LEVEL = 0.95
LOGIT_EPS = 1e-4
"""Risks are kept in [eps, 1 - eps] before the logit transform (a 0 CIF has no logit)."""
SMOOTH_HALF_WIDTH = 3
"""Grid steps on each side averaged by :func:`smooth_over_time` (a 7-month window)."""
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


def ij_variance_parts(
    per_tree: np.ndarray, inbag_counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(V_IJ, Monte-Carlo bias term), each (n, T); V_IJ-U is their difference.

    ``per_tree``: (B, n, T) tree predictions; ``inbag_counts``: (B, n_train) bootstrap counts.
    """
    per_tree = np.asarray(per_tree, dtype=float)
    counts = np.asarray(inbag_counts, dtype=float)
    n_trees, n, n_t = per_tree.shape
    if counts.shape[0] != n_trees:
        raise ValueError("per_tree and inbag_counts disagree on the number of trees")
    n_train = counts.shape[1]
    centred_counts = counts - counts.mean(axis=0, keepdims=True)
    v_ij = np.empty((n, n_t))
    bias = np.empty((n, n_t))
    for a in range(0, n, CHUNK_PATIENTS):
        block = per_tree[:, a : a + CHUNK_PATIENTS, :]
        centred = (block - block.mean(axis=0, keepdims=True)).reshape(n_trees, -1)
        cov = centred_counts.T @ centred / n_trees  # (n_train, chunk * T)
        v_ij[a : a + CHUNK_PATIENTS] = np.einsum("ij,ij->j", cov, cov).reshape(-1, n_t)
        bias[a : a + CHUNK_PATIENTS] = (
            n_train * np.einsum("bj,bj->j", centred, centred) / n_trees**2
        ).reshape(-1, n_t)
    return v_ij, bias


def ij_variance(
    per_tree: np.ndarray, inbag_counts: np.ndarray, smooth: int = SMOOTH_HALF_WIDTH
) -> np.ndarray:
    """Bias-corrected infinitesimal-jackknife variance of the mean over trees, (n, T).

    V_IJ-U is unbiased but noisy: with a few hundred trees it is <= 0 at a third of the
    points of the synthetic cohort. Two steps make it usable pointwise. (1) When the last
    axis is a time grid (``smooth`` > 0), V_IJ-U is averaged over the +-``smooth``
    neighbouring grid times, signed (clipping first would bias it upwards): a CIF's variance
    changes smoothly with time. (2) It is floored at the Monte-Carlo variance of the forest's
    own mean, var_b(t_b) / B, the uncertainty that a finite forest has for certain, so no
    interval has zero width. The uncorrected V_IJ is not used as a fallback: it is
    dominated by Monte-Carlo noise (intervals of 30-37 points for errors of 4-5).
    """
    v_ij, bias = ij_variance_parts(per_tree, inbag_counts)
    corrected = smooth_over_time(v_ij - bias, smooth)
    n_train = np.asarray(inbag_counts).shape[1]
    monte_carlo = bias / n_train
    return np.maximum(corrected, monte_carlo)


@functools.lru_cache(maxsize=16)
def normal_quantile(level: float = DEFAULT_LEVEL) -> float:
    """z of a two-sided normal interval of ``level`` (1.96 for 95 %); cached, since scipy's
    ``ppf`` cost ~0.1 ms and every served interval asks for the same level."""
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    return float(norm.ppf(0.5 + level / 2))


def interval(
    estimate: np.ndarray,
    variance: np.ndarray,
    level: float = DEFAULT_LEVEL,
    scale: Scale = "linear",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(se, lower, upper) of a normal interval on ``scale``, mapped back to [0, 1]."""
    z = normal_quantile(level)
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


def smooth_over_time(se: np.ndarray, half_width: int = SMOOTH_HALF_WIDTH) -> np.ndarray:
    """Centred moving average over the last axis (grid times), truncated at the ends."""
    if half_width <= 0:
        return se
    n_t = se.shape[-1]
    csum = np.zeros(se.shape[:-1] + (n_t + 1,))
    np.cumsum(se, axis=-1, out=csum[..., 1:])
    lo, hi, width = _window(n_t, half_width)
    return (csum[..., hi] - csum[..., lo]) / width


@functools.lru_cache(maxsize=32)
def _window(n_t: int, half_width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start, end and width of each time's window; cached (every served interval asks for
    the same two), read-only so that no caller can change the cached arrays."""
    lo = np.clip(np.arange(n_t) - half_width, 0, n_t)
    hi = np.clip(np.arange(n_t) + half_width + 1, 0, n_t)
    out = (lo, hi, hi - lo)
    for a in out:
        a.setflags(write=False)
    return out


def forest_interval(
    model,
    X,
    times,
    cause: int | None = None,
    level: float = DEFAULT_LEVEL,
    scale: Scale = "linear",
    smooth: int = SMOOTH_HALF_WIDTH,
) -> RiskInterval:
    """IJ confidence interval of a fitted ``CompetingRiskForest``'s CIF of ``cause`` at times.

    The variance is estimated at every grid time (:func:`ij_variance`, smoothed over
    neighbouring times), then read at ``times``. Where every tree
    predicts 0 (no event yet in any leaf) the standard error is 0.
    """
    times = np.asarray(times, dtype=float)
    per_tree = model.predict_cif_per_tree(X, cause=cause)  # (B, n, G) on the grid
    grid_est = per_tree.mean(axis=0)
    grid_se = np.sqrt(ij_variance(per_tree, model.inbag_counts_, smooth))
    grid_se = np.where(per_tree.max(axis=0) > 0, grid_se, 0.0)
    idx = model.grid_.index_of(times)
    estimate = np.where(idx >= 0, grid_est[:, np.maximum(idx, 0)], 0.0)
    se_at = np.where(idx >= 0, grid_se[:, np.maximum(idx, 0)], 0.0)
    se, lo, hi = interval(estimate, se_at**2, level, scale)
    return RiskInterval(times, estimate, se, lo, hi, level, scale)


def bundle_intervals(
    bundle, X, times, level: float = DEFAULT_LEVEL, scale: Scale = "linear"
) -> dict[str, RiskInterval]:
    """Both endpoints' intervals from a :class:`models.bundle.ModelBundle`'s forests."""
    return {
        e: forest_interval(m, X, times, level=level, scale=scale) for e, m in bundle.models.items()
    }
