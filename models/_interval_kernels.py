"""Compiled kernels of the served per-patient intervals (:mod:`models.intervals`).

Why compiled: one served patient's interval was some forty numpy calls on arrays of a few
dozen numbers per endpoint (neighbour distances, partial sort, gathers, smoothing, the
correction, the envelopes), 0.4 ms of a 1 ms ``/score``, all of it call overhead. And why
row by row: the old distances came from one float32 matrix product per block of rows, whose
rounding depends on how many rows the block holds (BLAS picks another kernel), so a patient's
bounds could differ in the last bit between a batch of one and a batch of 2,000 (Ray's blocks
against local chunks). Here every row is computed alone, in float64, in a fixed order: the
same patient gets the same bits whatever its batch.
"""

from __future__ import annotations

import math

import numba
import numpy as np

VARIANT_CODES = {"spread": 0, "shrink": 1, "shrink_rms": 2, "directional": 3,
                 "shrink_rms_logit": 4}
"""The interval variants of :data:`models.intervals.VARIANTS`, as the kernel reads them."""
MIN_KERNEL_H2 = 1e-12


@numba.njit(cache=True, nogil=True, error_model="numpy")
def neighbour_lookup(xs, ref, k, kk, uniform):
    """Each row's ``kk`` nearest rows of ``ref`` (squared euclidean distance, ties to the lower
    index) and their weights; see :meth:`models.intervals.ResampleIntervals.neighbours`.

    A row's distances to every training patient are computed feature by feature across all
    candidates (``ref`` transposed): each distance still adds its features' squares one after
    the other, from the first, so its bits are those of a candidate-by-candidate loop, but
    the candidates' sums are independent and run side by side in the vector unit instead of
    waiting on each other's additions (latency-bound, that loop cost ~13 us a row).
    """
    m, p = xs.shape
    n = ref.shape[0]
    ref_t = np.empty((p, n))
    for j in range(n):
        for f in range(p):
            ref_t[f, j] = np.float64(ref[j, f])
    dist = np.empty(n)
    idx = np.empty((m, kk), dtype=np.int64)
    w = np.zeros((m, kk))
    best = np.empty(kk)
    where = np.empty(kk, dtype=np.int64)
    for r in range(m):
        dist[:] = 0.0
        for f in range(p):
            x = np.float64(xs[r, f])
            for j in range(n):
                diff = x - ref_t[f, j]
                dist[j] += diff * diff
        filled = 0
        for j in range(n):
            d = dist[j]
            if filled < kk:
                pos = filled
                filled += 1
            elif d < best[kk - 1]:
                pos = kk - 1
            else:
                continue
            while pos > 0 and best[pos - 1] > d:  # insertion: equal distances keep index order
                best[pos] = best[pos - 1]
                where[pos] = where[pos - 1]
                pos -= 1
            best[pos] = d
            where[pos] = j
        for i in range(kk):
            idx[r, i] = where[i]
        if uniform:
            for i in range(k):
                w[r, i] = 1.0 / k
            continue
        h2 = max(best[k - 1], MIN_KERNEL_H2)
        edge = math.exp(-0.5 * best[kk - 1] / h2)
        total = 0.0
        for i in range(kk):
            v = max(math.exp(-0.5 * best[i] / h2) - edge, 0.0)
            w[r, i] = v
            total += v
        for i in range(kk):
            w[r, i] = w[r, i] / total if total > 0 else 1.0 / kk
    return idx, w


@numba.njit(cache=True, nogil=True, error_model="numpy")
def weighted_average(values, idx, w):
    """Per row, the neighbour-weighted mean of ``values`` rows (n, G) -> (m, G), float64."""
    m, kk = idx.shape
    g = values.shape[1]
    out = np.zeros((m, g))
    for r in range(m):
        for i in range(kk):
            wi = w[r, i]
            if wi == 0.0:
                continue
            row = idx[r, i]
            for t in range(g):
                out[r, t] += wi * np.float64(values[row, t])
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _smooth_row(x, half_width, out):
    """Centred moving average truncated at the ends (as ``smooth_over_time``)."""
    g = x.shape[0]
    csum = np.zeros(g + 1)
    for t in range(g):
        csum[t + 1] = csum[t] + x[t]
    for t in range(g):
        lo = max(t - half_width, 0)
        hi = min(t + half_width + 1, g)
        out[t] = (csum[hi] - csum[lo]) / (hi - lo)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _expit(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def correction(b, v, s, variant):
    """(shift to subtract from the estimate, standard error below, standard error above) at one
    grid point, from the smoothed neighbour-averaged bias ``b`` and variance ``v`` and the
    shrinkage slope ``s``: the one statement of the variants' rule, for the marginal intervals
    (:func:`interval_bounds`) and the paired differences (:func:`corrections`) alike.

    ``spread`` (0): the refits' bias and spread as measured. ``shrink`` (1): both scaled by the
    shrinkage slope. ``shrink_rms`` (2) and ``shrink_rms_logit`` (4): the bias correction's own
    uncertainty (its size) added to the variance on both sides. ``directional`` (3): added only
    on the side the correction points to (the truth of a shrunk estimate lies further out, not
    back towards the mean).
    """
    if variant == 0:
        se = math.sqrt(v)
        return b, se, se
    shift = b / s
    plain = math.sqrt(v) / s
    if variant == 1:
        return shift, plain, plain
    wide = math.sqrt(v + shift * shift) / s
    if variant == 3:
        if shift < 0:  # the centre moves up: the truth may lie further up
            return shift, plain, wide
        return shift, wide, plain
    return shift, wide, wide


@numba.njit(cache=True, nogil=True, error_model="numpy")
def corrections(bias, var, slope, variant):
    """:func:`correction` at every point of (m, G) ``bias`` and ``var`` with (G,) ``slope``:
    (shift, standard error below, standard error above), each (m, G)."""
    m, g = bias.shape
    shift = np.empty((m, g))
    se_lo = np.empty((m, g))
    se_hi = np.empty((m, g))
    for r in range(m):
        for t in range(g):
            sh, lo, hi = correction(bias[r, t], var[r, t], slope[t], variant)
            shift[r, t] = sh
            se_lo[r, t] = lo
            se_hi[r, t] = hi
    return shift, se_lo, se_hi


@numba.njit(cache=True, nogil=True, error_model="numpy")
def interval_bounds(cif, bias, var, slope, variant, half_width, z, logit_floor):
    """(lower, upper), each (m, G): the interval around ``cif`` from the neighbour-averaged
    ``bias`` and ``var``; the recipe of :meth:`models.intervals.ResampleIntervals.grid_interval`
    (smoothing, :func:`correction` by ``variant``, clipping, non-decreasing envelopes)."""
    m, g = cif.shape
    lower = np.empty((m, g))
    upper = np.empty((m, g))
    b = np.empty(g)
    v = np.empty(g)
    for r in range(m):
        _smooth_row(bias[r], half_width, b)
        _smooth_row(var[r], half_width, v)
        for t in range(g):
            shift, se_lo, se_hi = correction(b[t], v[t], slope[t], variant)
            c = cif[r, t]
            centre = min(max(c - shift, 0.0), 1.0)
            if variant == 4:
                q = min(max(centre, logit_floor), 1.0 - logit_floor)
                d = q * (1.0 - q)
                lg = math.log(q / (1.0 - q))
                lo = _expit(lg - z * se_lo / d) - (q - centre)
                hi = _expit(lg + z * se_hi / d) - (q - centre)
            else:
                lo = centre - z * se_lo
                hi = centre + z * se_hi
            lower[r, t] = min(min(max(lo, 0.0), 1.0), c)
            upper[r, t] = max(min(max(hi, 0.0), 1.0), c)
        for t in range(1, g):  # upper: running maximum
            upper[r, t] = max(upper[r, t], upper[r, t - 1])
        for t in range(g - 2, -1, -1):  # lower: running minimum from the right
            lower[r, t] = min(lower[r, t], lower[r, t + 1])
        for t in range(g):
            lower[r, t] = min(max(lower[r, t], 0.0), 1.0)
            upper[r, t] = min(max(upper[r, t], 0.0), 1.0)
    return lower, upper
