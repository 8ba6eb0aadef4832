"""Quantile binning of features for tree growing, with thresholds mapped back to raw values.

Why: growing on at most ``max_bins`` codes per feature bounds the candidate splits of a node
by the bins rather than by its patients, and lets the builder sort a node by counting (the
idea of histogram gradient boosting; ``models/_tree_builder.py``). After growing, a split
"code <= c" is written as the raw threshold ``edges[c]``, so the fitted tree applies to raw X
and TreeSHAP sees ordinary thresholds.

Exactness: a feature with at most ``max_bins`` distinct training values keeps all of them
(binary and ordinal features are untouched, and the splits are those of the unbinned tree).
For code(x) = #{edges < x}, "code <= c" is the same as "x <= edges[c]", for training and
new data alike.
"""

from __future__ import annotations

import numpy as np


def fit_bin_edges(X32: np.ndarray, max_bins: int) -> list[np.ndarray]:
    """Per feature, the sorted split points (float64) between distinct float32 values."""
    edges = []
    for column in X32.T:
        distinct = np.unique(column).astype(np.float64)
        mids = (distinct[:-1] + distinct[1:]) / 2.0
        if distinct.size > max_bins:
            # quantiles of the data, each snapped to the midpoint just above its value
            q = np.quantile(column.astype(np.float64), np.linspace(0, 1, max_bins + 1)[1:-1])
            pos = np.searchsorted(distinct, q, side="right") - 1
            mids = mids[np.unique(np.clip(pos, 0, mids.size - 1))]
        edges.append(mids)
    return edges


def to_codes(X32: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Bin codes (float32, C order) for ``X32``: code = number of edges below the value."""
    codes = np.empty(X32.shape, dtype=np.float32)
    for j, e in enumerate(edges):
        codes[:, j] = np.searchsorted(e, X32[:, j].astype(np.float64), side="left")
    return np.ascontiguousarray(codes)
