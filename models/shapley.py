"""Exact Shapley values of the registered model's cumulative incidence: kernels and types.

Two families of value functions, all exact.

**Input-level interventional values (what the product shows).** The players are the 16 inputs
of the data contract (:mod:`features.players`); against one background sample of at most
``DEFAULT_BACKGROUND_SIZE`` (K = 100) training patients, stored in the model bundle,

    v(S) = (1 / K) * sum over background patients b of f(features(x_S, b_rest)),

the hybrid record being built at the input level and pushed through the feature definitions,
so that the one-hot technique is one player and the EQD2 features (two and four parent
inputs) are exact. ``f`` is the endpoint's CIF at every grid time (60 outputs at once, the
SurvSHAP(t) view, exact rather than sampled). Shapley values are linear in the model, so an
ensemble's attributions are its members' attributions weighted like their CIFs; each member
has an exact kernel for this one value function:

* a forest (:func:`_interventional_players`): per (patient, background) pair and tree, a
  depth-first walk follows the hybrid; at a split on feature j it branches only when the
  direction depends on the state of j's still-free parent players, fixing them, so every leaf
  is reached under a conjunction "players A in S, players B out of S", whose Shapley values
  are (|A|-1)! |B|! / (|A|+|B|)! for A and -|A|! (|B|-1)! / (|A|+|B|)! for B. Per leaf the
  weights are accumulated per player and multiplied by the leaves' CIF curves at the end.
* a cause-specific Cox model (:func:`_cox_players`): its CIF depends on the inputs through its
  two linear predictors but is not linear in them, so every coalition is evaluated: per
  background patient, the players whose hybrid values cannot change (the patient and the
  background patient agree on them) are null and dropped, the linear predictors of the
  remaining 2^d coalitions are sums of per-feature terms that depend only on the state of each
  feature's parents, and the CIF of each coalition over the grid enters the Shapley sums.

**Feature-level values of a forest** (:class:`ForestExplainer`; the cohort tools and the
tests): ``"path_dependent"`` TreeSHAP (Lundberg et al. 2020, Algorithm 2) over each tree's
in-bag patients, from per-leaf root-path summaries (a polynomial form of EXTEND/UNWIND), and
``"interventional"`` against a background of feature rows (Janzing et al. 2020).

Why hand-written rather than ``shap``: shap's multi-output custom-tree path did not add up in
our checks, one output per call costs 120 calls per patient, and nothing in shap computes
exact values over input-level players of a model with derived features. Additivity (base +
attributions = the model's own prediction) is checked on every call; the tests check every
kernel against brute-force Shapley values of the same value function.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal

import numba
import numpy as np
import pandas as pd

from features.pipeline import FEATURE_COLUMNS, build_features
from features.players import (
    DEFAULT_BACKGROUND_SIZE,
    PlayerMap,
    feature_players,
    input_players,
)
from features.wording import TECHNIQUE_COLUMNS, TECHNIQUE_GROUP

Method = Literal["path_dependent", "interventional", "interventional_inputs"]
ADDITIVITY_TOL = 1e-9
"""Base value + attributions must equal the model's CIF to this (probability scale)."""
MAX_FEATURES_INTERVENTIONAL = 62
"""Interventional coalitions are int64 bit masks."""
N_THREADS = 2
"""The two endpoints are explained in two threads (the kernels release the GIL); one endpoint
alone (``/explain``) splits each member in two halves, one per thread (a forest's trees, a
Cox model's background rows)."""
# The kernels use numba's ``error_model="numpy"``: Python's zero-division checks on every
# division of the path recursion cost a third of the time. Covers are positive in fitted
# trees, and a NaN or inf would fail the additivity check rather than pass silently.
INPUT_METHOD = "interventional_inputs"
_MAX_COLUMN_SETS = 8
"""Sets of grid columns whose node values a forest member keeps side by side (per member)."""
_RANGES_PER_THREAD = 4
"""A forest's trees are cut in this many ranges per thread for one endpoint (``/explain``)."""


class AdditivityError(AssertionError):
    """Base value + attributions differ from the model's prediction: a bug, never ignored."""


_POOLS: dict[tuple[str, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(kind: str) -> ThreadPoolExecutor:
    """A process-wide pool of N_THREADS threads, one per ``kind``, made on first use.

    Reused rather than started per call (a pool's start and join cost about a millisecond of
    a 25 ms ``/explain``). Two kinds so that nothing waits on its own pool: the endpoints'
    tasks wait for their members' halves (a forest's trees, a Cox model's background rows),
    which run on the ``"halves"`` pool and never wait. Keyed by process id: a forked worker
    gets its own threads, not the parent's.
    """
    key = (kind, os.getpid())
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=N_THREADS, thread_name_prefix=f"shap-{kind}")
            _POOLS[key] = pool
        return pool


def _grid_columns(times: np.ndarray, horizons) -> np.ndarray:
    """Indices into ``times`` of the horizons asked for (all of them for None)."""
    if horizons is None:
        return np.arange(times.size, dtype=np.int64)
    cols = []
    for h in np.atleast_1d(np.asarray(horizons, dtype=float)):
        idx = np.flatnonzero(np.isclose(times, h))
        if idx.size == 0:
            raise ValueError(f"{h:g} months is not a grid time of this model")
        cols.append(int(idx[0]))
    return np.asarray(cols, dtype=np.int64)


# ----------------------------------------------------------------------------- packing
@dataclass(frozen=True)
class PackedForest:
    """All trees of one forest and cause as flat arrays (node ids offset per tree)."""

    left: np.ndarray  # (N,) int64, global node id or -1
    right: np.ndarray
    feature: np.ndarray  # (N,) int64
    threshold: np.ndarray  # (N,) float64; go left when float32(x) <= threshold
    cover: np.ndarray  # (N,) float64: bootstrap weight in the node
    values: np.ndarray  # (N, G) float64: node CIF / n_trees (trees sum to the forest)
    roots: np.ndarray  # (T,) int64
    max_depth: int
    base_value: np.ndarray  # (G,) cover-weighted expectation: the path-dependent base
    n_features: int
    leaf_ptr: np.ndarray  # (L + 1,) each leaf's slice of the arrays below
    leaf_node: np.ndarray  # (L,) global node id of each leaf
    path_feature: np.ndarray  # unique features on each leaf's root path
    path_zero: np.ndarray  # their zero fractions (product of cover ratios)
    path_lo: np.ndarray  # x follows the path on that feature iff lo < x <= hi
    path_hi: np.ndarray
    max_path_features: int


def pack_forest(model, cause: int | None = None) -> PackedForest:
    """Flatten ``model.tree_structures(cause, all grid indices)`` for the numba kernels."""
    n_grid = len(model.event_times_)
    trees = model.tree_structures(cause, np.arange(n_grid))
    sizes = np.array([len(t["children_left"]) for t in trees])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    def shift(children, off):
        c = children.astype(np.int64)
        return np.where(c >= 0, c + off, -1)

    left = np.concatenate(
        [shift(t["children_left"], o) for t, o in zip(trees, offsets, strict=True)]
    )
    right = np.concatenate(
        [shift(t["children_right"], o) for t, o in zip(trees, offsets, strict=True)]
    )
    feature = np.concatenate([t["features"].astype(np.int64) for t in trees])
    threshold = np.concatenate([t["thresholds"].astype(np.float64) for t in trees])
    cover = np.concatenate([t["node_sample_weight"].astype(np.float64) for t in trees])
    values = np.ascontiguousarray(np.concatenate([t["values"] for t in trees]), dtype=np.float64)
    roots = offsets.astype(np.int64)
    depth = int(_max_depth(left, right, roots))
    base = _leaf_expectation(left, right, cover, values, roots)
    n_features = int(model.n_features_in_)
    ptr, leaf_node, feat, zero, lo, hi = _leaf_paths(
        left, right, feature, threshold, cover, roots, n_features, depth
    )
    return PackedForest(
        left,
        right,
        feature,
        threshold,
        cover,
        values,
        roots,
        depth,
        base,
        n_features,
        ptr,
        leaf_node,
        feat,
        zero,
        lo,
        hi,
        int(np.diff(ptr).max(initial=0)),
    )


@numba.njit(cache=True, error_model="numpy")
def _max_depth(left, right, roots) -> int:
    """Deepest leaf over all trees (a Python loop over ~10^5 nodes took a second)."""
    depth = np.zeros(left.shape[0], dtype=np.int64)
    stack = np.empty(left.shape[0], dtype=np.int64)
    best = 0
    for r in roots:
        stack[0] = r
        top = 1
        while top > 0:
            top -= 1
            node = stack[top]
            if left[node] >= 0:
                for c in (left[node], right[node]):
                    depth[c] = depth[node] + 1
                    stack[top] = c
                    top += 1
            elif depth[node] > best:
                best = depth[node]
    return best


def _leaf_expectation(left, right, cover, values, roots) -> np.ndarray:
    """Sum over trees of sum over leaves of value * cover / root cover.

    This is E[f] under the tree-path distribution, computed from the leaves (not taken from
    the internal node values) so the additivity check tests the whole chain.
    """
    is_leaf = left < 0
    sizes = np.diff(np.append(roots, left.shape[0]))
    root_of = np.repeat(roots, sizes)
    w = np.where(is_leaf, cover / cover[root_of], 0.0)
    return w @ values


# ----------------------------------------------------------------- numba kernels
@numba.njit(cache=True, error_model="numpy")
def _leaf_paths(left, right, feature, threshold, cover, roots, n_features, max_depth):
    """Per leaf, the unique features on its root path: (ptr, leaf_node, feat, zero, lo, hi).

    zero = product of cover ratios along the path for that feature (the path-dependent
    'zero fraction'); x follows the leaf's path on that feature iff lo < x <= hi.
    """
    n_nodes = left.shape[0]
    n_leaves = 0
    for i in range(n_nodes):
        if left[i] < 0:
            n_leaves += 1
    cap = n_leaves * min(max_depth + 1, n_features)
    ptr = np.zeros(n_leaves + 1, dtype=np.int64)
    leaf_node = np.empty(n_leaves, dtype=np.int64)
    feat = np.empty(cap, dtype=np.int64)
    zero = np.empty(cap)
    lo = np.empty(cap)
    hi = np.empty(cap)
    slots = 2 * (max_depth + 2)
    z_s = np.ones((slots, n_features))
    lo_s = np.full((slots, n_features), -np.inf)
    hi_s = np.full((slots, n_features), np.inf)
    used_s = np.zeros((slots, n_features), dtype=np.bool_)
    node_s = np.empty(slots, dtype=np.int64)
    z_c = np.ones(n_features)
    lo_c = np.empty(n_features)
    hi_c = np.empty(n_features)
    used_c = np.zeros(n_features, dtype=np.bool_)
    li = 0
    pos = 0
    for t in range(roots.shape[0]):
        node_s[0] = roots[t]
        z_s[0, :] = 1.0
        lo_s[0, :] = -np.inf
        hi_s[0, :] = np.inf
        used_s[0, :] = False
        top = 1
        while top > 0:
            top -= 1
            node = node_s[top]
            z_c[:] = z_s[top]
            lo_c[:] = lo_s[top]
            hi_c[:] = hi_s[top]
            used_c[:] = used_s[top]
            if left[node] < 0:
                leaf_node[li] = node
                for f in range(n_features):
                    if used_c[f]:
                        feat[pos] = f
                        zero[pos] = z_c[f]
                        lo[pos] = lo_c[f]
                        hi[pos] = hi_c[f]
                        pos += 1
                li += 1
                ptr[li] = pos
                continue
            f = feature[node]
            for side in range(2):
                child = left[node] if side == 0 else right[node]
                z_s[top] = z_c
                lo_s[top] = lo_c
                hi_s[top] = hi_c
                used_s[top] = used_c
                used_s[top, f] = True
                z_s[top, f] = z_c[f] * cover[child] / cover[node]
                if side == 0:
                    hi_s[top, f] = min(hi_c[f], threshold[node])
                else:
                    lo_s[top, f] = max(lo_c[f], threshold[node])
                node_s[top] = child
                top += 1
    return ptr, leaf_node, feat[:pos].copy(), zero[:pos].copy(), lo[:pos].copy(), hi[:pos].copy()


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _path_dependent_leafwise(X, ptr, leaf_node, feat, zero, lo, hi, values, max_k):
    """Path-dependent TreeSHAP (n, F, G), leaf by leaf.

    A leaf adds v * prod_j (o_j if j in S else z_j) to v(S) over its k path features, so its
    Shapley weight for feature i is (o_i - z_i) sum_m w_k(m) [t^m] prod_{j != i}(z_j + o_j t),
    with w_k(m) = m! (k-1-m)! / k!: the polynomial of all k factors is built once and each
    factor divided out (the unwind of Lundberg et al.'s Algorithm 2, without the recursion).
    """
    n, n_feat = X.shape
    n_out = values.shape[1]
    weights = np.zeros((max_k + 1, max_k + 1))
    fact = np.ones(max_k + 2)
    for i in range(1, max_k + 2):
        fact[i] = fact[i - 1] * i
    for k in range(1, max_k + 1):
        for m in range(k):
            weights[k, m] = fact[m] * fact[k - 1 - m] / fact[k]
    out = np.zeros((n, n_feat, n_out))
    poly = np.empty(max_k + 2)
    quot = np.empty(max_k + 2)
    o = np.empty(max_k + 1)
    acc = np.zeros((n_feat, n_out))
    for r in range(n):
        x = X[r]
        acc[:, :] = 0.0
        for leaf in range(leaf_node.shape[0]):
            a, b = ptr[leaf], ptr[leaf + 1]
            k = b - a
            if k == 0:
                continue
            poly[0] = 1.0
            for m in range(1, k + 1):
                poly[m] = 0.0
            for j in range(k):
                xv = x[feat[a + j]]
                oj = 1.0 if (xv > lo[a + j] and xv <= hi[a + j]) else 0.0
                o[j] = oj
                zj = zero[a + j]
                for m in range(j + 1, 0, -1):
                    poly[m] = zj * poly[m] + oj * poly[m - 1]
                poly[0] = zj * poly[0]
            node = leaf_node[leaf]
            for i in range(k):
                zi = zero[a + i]
                if o[i] == 0.0:
                    inv = 1.0 / zi
                    for m in range(k):
                        quot[m] = poly[m] * inv
                else:
                    quot[k - 1] = poly[k]
                    for m in range(k - 1, 0, -1):
                        quot[m - 1] = poly[m] - zi * quot[m]
                s = 0.0
                for m in range(k):
                    s += weights[k, m] * quot[m]
                coef = (o[i] - zi) * s
                if coef != 0.0:
                    f = feat[a + i]
                    for g in range(n_out):
                        acc[f, g] += coef * values[node, g]
        out[r] = acc
    return out


@numba.njit(cache=True, error_model="numpy")
def _popcount(m):
    c = 0
    while m:
        m &= m - 1
        c += 1
    return c


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _interventional_many(X, B, roots, max_depth, left, right, feature, threshold, values):
    """Exact interventional Shapley values of a tree sum, averaged over background rows B.

    For one (x, b) pair, a leaf reachable by taking x's branch on the feature set Sx and
    b's branch on Sb (|Sx| = a, |Sb| = c) adds to v(S) its value times [Sx in S, Sb out of
    S]; the Shapley value of that game is (a-1)! c! / (a+c)! for i in Sx and
    -a! (c-1)! / (a+c)! for i in Sb. A depth-first walk enumerates those leaves.
    """
    n, n_feat = X.shape
    n_bg = B.shape[0]
    n_out = values.shape[1]
    fact = np.ones(2 * n_feat + 2)
    for i in range(1, fact.shape[0]):
        fact[i] = fact[i - 1] * i
    phi = np.zeros((n, n_feat, n_out))
    cap = 2 * (max_depth + 2) * (max_depth + 2)
    s_node = np.empty(cap, dtype=np.int64)
    s_mx = np.empty(cap, dtype=np.int64)
    s_mb = np.empty(cap, dtype=np.int64)
    inv_bg = 1.0 / n_bg
    for r in range(n):
        x = X[r]
        for q in range(n_bg):
            b = B[q]
            for t in range(roots.shape[0]):
                top = 0
                s_node[0] = roots[t]
                s_mx[0] = 0
                s_mb[0] = 0
                top = 1
                while top > 0:
                    top -= 1
                    node = s_node[top]
                    mx = s_mx[top]
                    mb = s_mb[top]
                    if left[node] < 0:
                        a = _popcount(mx)
                        c = _popcount(mb)
                        if a + c == 0:
                            continue
                        wx = 0.0
                        wb = 0.0
                        if a > 0:
                            wx = fact[a - 1] * fact[c] / fact[a + c] * inv_bg
                        if c > 0:
                            wb = -fact[a] * fact[c - 1] / fact[a + c] * inv_bg
                        for f in range(n_feat):
                            bit = np.int64(1) << f
                            if mx & bit:
                                for j in range(n_out):
                                    phi[r, f, j] += wx * values[node, j]
                            elif mb & bit:
                                for j in range(n_out):
                                    phi[r, f, j] += wb * values[node, j]
                        continue
                    d = feature[node]
                    bit = np.int64(1) << d
                    x_left = x[d] <= threshold[node]
                    b_left = b[d] <= threshold[node]
                    if mx & bit:
                        s_node[top] = left[node] if x_left else right[node]
                        s_mx[top] = mx
                        s_mb[top] = mb
                        top += 1
                    elif (mb & bit) or x_left == b_left:
                        s_node[top] = left[node] if b_left else right[node]
                        s_mx[top] = mx
                        s_mb[top] = mb
                        top += 1
                    else:
                        s_node[top] = left[node] if x_left else right[node]
                        s_mx[top] = mx | bit
                        s_mb[top] = mb
                        s_node[top + 1] = left[node] if b_left else right[node]
                        s_mx[top + 1] = mx
                        s_mb[top + 1] = mb | bit
                        top += 2
    return phi


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _predict_packed(X, roots, left, right, feature, threshold, values):
    n = X.shape[0]
    out = np.zeros((n, values.shape[1]))
    for r in range(n):
        for t in range(roots.shape[0]):
            node = roots[t]
            while left[node] >= 0:
                node = left[node] if X[r, feature[node]] <= threshold[node] else right[node]
            for j in range(values.shape[1]):
                out[r, j] += values[node, j]
    return out


def _as_model_input(X) -> np.ndarray:
    """float32 like the trees' own comparisons, then float64 for the kernels."""
    arr = X.to_numpy() if isinstance(X, pd.DataFrame) else np.asarray(X)
    return np.ascontiguousarray(np.atleast_2d(arr).astype(np.float32).astype(np.float64))


# ------------------------------------------------------------------------ results


# ------------------------------------------------- input-level players: forest kernel
_U1 = np.uint64(1)
_ZERO_BIT = np.array([0x5555, 0x3333, 0x0F0F, 0x00FF], dtype=np.int64)
"""Bit m of _ZERO_BIT[i] is set iff bit i of m is 0: the assignments m (of at most 4 parents,
as bits of a 16-bit set) where parent i takes the background row's value."""
_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@numba.njit(cache=True, nogil=True, inline="always")
def _truth_table(cons, n_cons, full, row_left, x_left, table, q, f, thr):
    """Background row ``q``'s truth table at a split on feature ``f``: bit m set when the
    row goes left with the parents of assignment m taken from the patient (m = 0: the row's
    own value, ``row_left``; m = full: the patient's, ``x_left``; otherwise the hybrid
    value ``table[q, f, m]``), over the ``n_cons`` consistent assignments ``cons``."""
    tt = 0
    for u in range(n_cons):
        m = cons[u]
        if m == 0:
            go = row_left != 0
        elif m == full:
            go = x_left
        else:
            go = table[q, f, m] <= thr
        if go:
            tt |= 1 << m
    return tt


@numba.njit(cache=True, inline="always")
def _popcount_u64(v):
    v = v - ((v >> _U1) & _M1)
    v = (v & _M2) + ((v >> np.uint64(2)) & _M2)
    v = (v + (v >> np.uint64(4))) & _M4
    return np.int64((v * _H01) >> np.uint64(56))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _background_left(bg, left, feature, threshold, n_words):
    """Per node, the bit set of background rows whose own features go left there."""
    n_nodes = left.shape[0]
    out = np.zeros((n_nodes, n_words), dtype=np.uint64)
    for node in range(n_nodes):
        if left[node] < 0:
            continue
        f = feature[node]
        thr = threshold[node]
        for q in range(bg.shape[0]):
            if bg[q, f] <= thr:
                out[node, q >> 6] |= _U1 << np.uint64(q & 63)
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _walk_players(
    table,
    bg_left,
    parents,
    n_parents,
    n_players,
    roots,
    t_lo,
    t_hi,
    max_depth,
    left,
    right,
    feature,
    threshold,
):
    """Per-leaf player weights of trees ``t_lo:t_hi`` of a tree sum: (leaves, weights).

    ``leaves`` are the leaves some coalition game reached, in the order the walk first
    reached them, and ``weights[u, p]`` player p's Shapley weight of leaf ``leaves[u]``,
    summed over background rows (divide by K); :func:`_leaf_sums` turns them into values.
    The trees are split in ranges so that two threads can walk one forest: a node belongs to
    one tree, so each range's weights are exactly those of a walk over all trees, and summing
    the ranges' leaves in tree order repeats the single walk's additions bit for bit.

    ``table[q, j, m]``: feature j of the hybrid of the patient and background row q when
    parent i of j takes the patient's value iff bit i of m is set (cast like the trees
    compare); ``bg_left``: per node, the bit set of background rows going left on their own
    values. A walk carries the players fixed in (mx) and out of (mb) the coalition; at a
    split on j, a row's direction is a function of the assignment of j's parents still free:
    constant, the row follows it and the state is kept; otherwise the row branches along a
    decision tree over the parents that function depends on, each branch fixing the parents
    on its path only (fixing all of them, one branch per assignment, walked 2.2 times as
    many states and took ~1.5 times the CPU on the benchmark's forest; rows are grouped by
    their function, and a decision tree is a few operations on 16-bit sets). The branches are
    disjoint and cover every coalition, so each leaf's game is a sum of conjunction games
    with closed-form Shapley values: per leaf, a weight per player, multiplied by the leaf's
    CIF curve once at the end (only the leaves reached).

    All background rows walk a tree together, as a bit set per state (node, mx, mb): a split
    costs a few word operations whatever K is (rows are looked at one by one only where a
    feature with several parents mixes the patient's and a row's inputs), and a leaf adds
    its weights once per state, times the number of rows in it.
    """
    node_lo = roots[t_lo]
    node_hi = roots[t_hi] if t_hi < roots.shape[0] else left.shape[0]
    n_words = bg_left.shape[1]
    n_bg = table.shape[0]
    max_par = parents.shape[1]
    n_assign = 1 << max_par
    # weights only for the leaves reached, one row each in the order reached (a row per node
    # of the forest was megabytes to zero per call)
    slot = np.full(node_hi - node_lo, -1, dtype=np.int64)
    cap_leaves = (node_hi - node_lo + t_hi - t_lo) // 2 + 1
    w = np.zeros((cap_leaves, n_players))
    touched = np.empty(cap_leaves, dtype=np.int64)
    n_touched = 0
    fact = np.ones(2 * n_players + 2)
    for i in range(1, fact.shape[0]):
        fact[i] = fact[i - 1] * i
    n_sub = 3**max_par  # subcubes of the parents' assignments: (in, out, free) each
    cap = (max_depth + 2) * (2 * n_sub + 2) + 1
    tts = np.empty(n_bg, dtype=np.int64)
    o_of = np.full(2 << (2 * max_par), -1, dtype=np.int64)
    tt_rows = np.empty((n_bg, n_words), dtype=np.uint64)
    c_in = np.empty(2 * n_assign + 2, dtype=np.int64)
    c_mem = np.empty(2 * n_assign + 2, dtype=np.int64)
    c_out = np.empty(2 * n_assign + 2, dtype=np.int64)
    o_node = np.empty(2 * n_sub, dtype=np.int64)
    o_key = np.empty(2 * n_sub, dtype=np.int64)
    o_mx = np.empty(2 * n_sub, dtype=np.int64)
    o_mb = np.empty(2 * n_sub, dtype=np.int64)
    o_rows = np.empty((2 * n_sub, n_words), dtype=np.uint64)
    s_node = np.empty(cap, dtype=np.int64)
    s_mx = np.empty(cap, dtype=np.int64)
    s_mb = np.empty(cap, dtype=np.int64)
    s_rows = np.empty((cap, n_words), dtype=np.uint64)
    all_rows = np.zeros(n_words, dtype=np.uint64)
    for q in range(n_bg):
        all_rows[q >> 6] |= _U1 << np.uint64(q & 63)
    cur = np.empty(n_words, dtype=np.uint64)
    both = np.empty(n_words, dtype=np.uint64)
    some = np.empty(n_words, dtype=np.uint64)
    cons = np.empty(n_assign, dtype=np.int64)
    for t in range(t_lo, t_hi):
        s_node[0] = roots[t]
        s_mx[0] = 0
        s_mb[0] = 0
        s_rows[0, :] = all_rows
        top = 1
        while top > 0:
            top -= 1
            node = s_node[top]
            mx = s_mx[top]
            mb = s_mb[top]
            for k in range(n_words):
                cur[k] = s_rows[top, k]
            if left[node] < 0:
                if mx == 0 and mb == 0:
                    continue  # reached by every coalition: part of the base value
                cnt = 0
                for k in range(n_words):
                    cnt += _popcount_u64(cur[k])
                a = _popcount(mx)
                c = _popcount(mb)
                wx = cnt * fact[a - 1] * fact[c] / fact[a + c] if a > 0 else 0.0
                wb = -cnt * fact[a] * fact[c - 1] / fact[a + c] if c > 0 else 0.0
                s = slot[node - node_lo]
                if s < 0:
                    s = n_touched
                    slot[node - node_lo] = s
                    touched[s] = node
                    n_touched += 1
                bits = mx
                while bits:
                    low = bits & -bits
                    w[s, _popcount(low - 1)] += wx
                    bits ^= low
                bits = mb
                while bits:
                    low = bits & -bits
                    w[s, _popcount(low - 1)] += wb
                    bits ^= low
                continue
            f = feature[node]
            thr = threshold[node]
            npar = n_parents[f]
            full = (1 << npar) - 1
            x_left = table[0, f, full] <= thr  # the patient's own value
            if npar == 1:  # one parent player (most features): three word operations
                bit = np.int64(1) << parents[f, 0]
                x_child = left[node] if x_left else right[node]
                b_child = right[node] if x_left else left[node]
                if mx & bit:
                    s_node[top] = x_child
                    top += 1  # same state, same rows
                    continue
                any_agree = False
                any_differ = False
                for k in range(n_words):
                    bl = bg_left[node, k] & cur[k]
                    agree = bl if x_left else cur[k] & ~bl
                    both[k] = agree
                    some[k] = cur[k] & ~agree
                    if agree:
                        any_agree = True
                    if some[k]:
                        any_differ = True
                if any_agree:  # rows going the patient's way keep the state
                    s_node[top] = x_child
                    s_mx[top] = mx
                    s_mb[top] = mb
                    for k in range(n_words):
                        s_rows[top, k] = both[k]
                    top += 1
                if any_differ:
                    if mb & bit:  # the player is out: these rows go their own way
                        s_node[top] = b_child
                        s_mx[top] = mx
                        s_mb[top] = mb
                        for k in range(n_words):
                            s_rows[top, k] = some[k]
                        top += 1
                    else:  # the player decides: in, the patient's way; out, the rows' way
                        s_node[top] = x_child
                        s_mx[top] = mx | bit
                        s_mb[top] = mb
                        for k in range(n_words):
                            s_rows[top, k] = some[k]
                        top += 1
                        s_node[top] = b_child
                        s_mx[top] = mx
                        s_mb[top] = mb | bit
                        for k in range(n_words):
                            s_rows[top, k] = some[k]
                        top += 1
                continue
            # the assignments consistent with the state: parents already in (pin) take the
            # patient's value, those already out (pout) the row's
            pin = 0
            pout = 0
            for i in range(npar):
                bit = np.int64(1) << parents[f, i]
                if mx & bit:
                    pin |= 1 << i
                elif mb & bit:
                    pout |= 1 << i
            n_cons = 0
            for m in range(1 << npar):
                if (m & pin) == pin and (m & pout) == 0:
                    cons[n_cons] = m
                    n_cons += 1
            if n_cons == 1 and cons[0] == full:
                s_node[top] = left[node] if x_left else right[node]
                top += 1  # same state, same rows
                continue
            # A row's direction is a function of the free parents' assignment: its truth
            # table over the consistent assignments (bit m set: left when the parents from
            # the patient are those of m). Rows whose table is constant keep the state; the
            # others, grouped by table, branch on a decision tree over the parents it depends
            # on: each branch fixes only the parents on its path and its assignments all send
            # the rows one way (disjoint branches covering every coalition, as required).
            consm = 0
            for u in range(n_cons):
                consm |= 1 << cons[u]
            n_tt = 0
            n_rows = 0
            for k in range(n_words):
                n_rows += _popcount_u64(cur[k])
            if n_rows == 1:  # one row (most multi-parent states): its truth table alone
                k = 0
                while not cur[k]:
                    k += 1
                low = cur[k]
                q = k * 64 + _popcount_u64(low - _U1)
                tt = _truth_table(cons, n_cons, full, bg_left[node, k] & low, x_left, table, q,
                                  f, thr)
                if tt == consm or tt == 0:  # the state goes one way, as in the loop below
                    s_node[top] = left[node] if tt else right[node]
                    top += 1  # same state, same rows
                    continue
                tts[0] = tt
                tt_rows[0, :] = cur
                n_tt = 1
            else:
                for k in range(n_words):
                    both[k] = np.uint64(0)
                    some[k] = np.uint64(0)
                    word = cur[k]
                    bl = bg_left[node, k]
                    while word:
                        low = word & (~word + _U1)
                        q = k * 64 + _popcount_u64(low - _U1)
                        tt = _truth_table(cons, n_cons, full, bl & low, x_left, table, q, f,
                                          thr)
                        word ^= low
                        if tt == consm:
                            both[k] |= low
                            continue
                        if tt == 0:
                            some[k] |= low
                            continue
                        g = n_tt
                        for v in range(n_tt):
                            if tts[v] == tt:
                                g = v
                                break
                        if g == n_tt:
                            tts[g] = tt
                            tt_rows[g, :] = 0
                            n_tt += 1
                        tt_rows[g, k] |= low
                any_l = False
                any_r = False
                for k in range(n_words):
                    if both[k]:
                        any_l = True
                    if some[k]:
                        any_r = True
                if any_l:
                    s_node[top] = left[node]
                    s_mx[top] = mx
                    s_mb[top] = mb
                    for k in range(n_words):
                        s_rows[top, k] = both[k]
                    top += 1
                if any_r:
                    s_node[top] = right[node]
                    s_mx[top] = mx
                    s_mb[top] = mb
                    for k in range(n_words):
                        s_rows[top, k] = some[k]
                    top += 1
                if n_tt == 0:
                    continue
            n_out = 0
            for g in range(n_tt):
                tt = tts[g]
                c_mem[0] = consm
                c_in[0] = 0
                c_out[0] = 0
                n_c = 1
                while n_c > 0:
                    n_c -= 1
                    mem = c_mem[n_c]  # the subcube's consistent assignments, as a bit set
                    sin = c_in[n_c]
                    sout = c_out[n_c]
                    lefts = tt & mem
                    if lefts != 0 and lefts != mem:  # not constant: split on a parent
                        split_i = 0
                        for i in range(npar):  # the first one it depends on: a pair m,
                            sh = 1 << i  # m + 2^i of assignments going different ways
                            if (tt ^ (tt >> sh)) & mem & (mem >> sh) & _ZERO_BIT[i]:
                                split_i = i
                                break
                        c_mem[n_c] = mem & ~_ZERO_BIT[split_i]
                        c_in[n_c] = sin | (1 << split_i)
                        c_out[n_c] = sout
                        c_mem[n_c + 1] = mem & _ZERO_BIT[split_i]
                        c_in[n_c + 1] = sin
                        c_out[n_c + 1] = sout | (1 << split_i)
                        n_c += 2
                        continue
                    child = left[node] if lefts != 0 else right[node]
                    nmx = mx
                    nmb = mb
                    for i in range(npar):
                        bit = np.int64(1) << parents[f, i]
                        if (sin >> i) & 1:
                            nmx |= bit
                        elif (sout >> i) & 1:
                            nmb |= bit
                    key = (sin | (sout << max_par)) * 2 + (1 if lefts != 0 else 0)
                    o = o_of[key]
                    if o < 0:
                        o = n_out
                        o_of[key] = o
                        o_key[o] = key
                        o_node[o] = child
                        o_mx[o] = nmx
                        o_mb[o] = nmb
                        o_rows[o, :] = 0
                        n_out += 1
                    for k in range(n_words):
                        o_rows[o, k] |= tt_rows[g, k]
            for o in range(n_out):
                o_of[o_key[o]] = -1
                s_node[top] = o_node[o]
                s_mx[top] = o_mx[o]
                s_mb[top] = o_mb[o]
                for k in range(n_words):
                    s_rows[top, k] = o_rows[o, k]
                top += 1
    return touched[:n_touched], w[:n_touched]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _leaf_sums(leaves, weights, values, phi):
    """phi[p, c] += sum over the leaves of weights[u, p] * values[leaves[u], c].

    ``values`` holds only the grid columns asked for (``/explain`` asks for 4 of 60:
    :meth:`ForestMember.column_values`), side by side, so that a leaf's are one cache line
    rather than four of a 60-column row. Each column is summed in the same order whatever
    the others, so a column is the same bit for bit whether it was asked for alone or with
    the whole grid.
    """
    n_cols = values.shape[1]
    for u in range(leaves.shape[0]):
        node = leaves[u]
        for p in range(weights.shape[1]):
            wp = weights[u, p]
            if wp != 0.0:
                for c in range(n_cols):
                    phi[p, c] += wp * values[node, c]


# ---------------------------------------------------- input-level players: Cox kernel
@numba.njit(cache=True, nogil=True, error_model="numpy")
def _cox_players(table, parents, n_parents, n_players, mean, scale, coef, increments, cause, cols):
    """Exact Shapley values of a cause-specific Cox CIF at grid columns ``cols``, per
    background row (K, P, C): :func:`_sum_rows` adds them up in row order (divide by K), so
    that the rows can be split between threads and the sum still be the one-thread sum.

    The linear predictor of cause c is sum_j coef[c, j] (value_j - mean[c, j]) / scale[c, j]
    and the CIF of ``cause`` (0-based) on the grid is that of
    :func:`models._cif.cif_from_cumulative_hazard_increments` with increments
    exp(lp_c) * increments[c]. Per background row, players on which no feature's hybrid value
    depends are null and dropped; the other d give 2^d coalitions. With w_in(s) = (s-1)!(d-s)!/d!
    and w_out(s) = s!(d-s-1)!/d! (0 at s = d), phi_j = sum_{S contains j} (w_in + w_out)(|S|)
    v(S) - sum_S w_out(|S|) v(S): one pass over the coalitions.
    """
    n_bg, n_feat, _ = table.shape
    n_causes, n_grid = increments.shape
    max_par = parents.shape[1]
    n_cols = cols.shape[0]
    # the CIF is a running sum over the grid: up to the last column asked for, no further
    g_end = 0
    for c in range(n_cols):
        g_end = max(g_end, cols[c] + 1)
    phi = np.zeros((n_bg, n_players, n_cols))
    fact = np.ones(n_players + 2)
    for i in range(1, fact.shape[0]):
        fact[i] = fact[i - 1] * i
    contrib = np.zeros((n_causes, n_feat, 1 << max_par))
    is_active = np.zeros(n_players, dtype=np.bool_)
    pos = np.empty(n_players, dtype=np.int64)
    active = np.empty(n_players, dtype=np.int64)
    lpos = np.empty((n_feat, max_par), dtype=np.int64)
    dyn = np.empty(n_feat, dtype=np.int64)
    const = np.empty(n_causes)
    lp = np.empty(n_causes)
    hr = np.empty(n_causes)
    w_in = np.zeros(n_players + 1)
    w_both = np.zeros(n_players + 1)
    w_out = np.zeros(n_players + 1)
    v = np.empty(n_grid)
    whole = n_cols == n_grid
    for c in range(n_cols):
        whole = whole and cols[c] == c
    vc = v if whole else np.empty(n_cols)
    acc_all = np.empty(n_cols)
    acc_in = np.empty((n_players, n_cols))
    for q in range(n_bg):
        is_active[:] = False
        for j in range(n_feat):
            k = n_parents[j]
            for m in range(1 << k):
                for c in range(n_causes):
                    contrib[c, j, m] = coef[c, j] * ((table[q, j, m] - mean[c, j]) / scale[c, j])
            for i in range(k):
                for m in range(1 << k):
                    if not (m >> i) & 1 and table[q, j, m] != table[q, j, m | (1 << i)]:
                        is_active[parents[j, i]] = True
        d = 0
        for p in range(n_players):
            pos[p] = -1
            if is_active[p]:
                pos[p] = d
                active[d] = p
                d += 1
        n_dyn = 0
        const[:] = 0.0
        for j in range(n_feat):
            k = n_parents[j]
            moving = False
            for i in range(k):
                lpos[j, i] = pos[parents[j, i]]
                if lpos[j, i] >= 0:
                    moving = True
            if moving:
                dyn[n_dyn] = j
                n_dyn += 1
            else:
                for c in range(n_causes):
                    const[c] += contrib[c, j, 0]
        for s in range(d + 1):
            w_in[s] = fact[s - 1] * fact[d - s] / fact[d] if s > 0 else 0.0
            w_out[s] = fact[s] * fact[d - s - 1] / fact[d] if s < d else 0.0
            w_both[s] = w_in[s] + w_out[s]
        acc_all[:] = 0.0
        acc_in[:d, :] = 0.0
        for coal in range(1 << d):
            for c in range(n_causes):
                lp[c] = const[c]
            for u in range(n_dyn):
                j = dyn[u]
                m = 0
                for i in range(n_parents[j]):
                    lq = lpos[j, i]
                    if lq >= 0 and (coal >> lq) & 1:
                        m |= 1 << i
                for c in range(n_causes):
                    lp[c] += contrib[c, j, m]
            for c in range(n_causes):
                hr[c] = np.exp(lp[c])
            total = 0.0
            surv = 1.0
            for g in range(g_end):
                d_tot = 0.0
                d_k = 0.0
                for c in range(n_causes):
                    inc = hr[c] * increments[c, g]
                    d_tot += inc
                    if c == cause:
                        d_k = inc
                if d_tot > 0.0:
                    em = np.expm1(-d_tot)
                    total += surv * (-em) * (d_k / d_tot)
                    surv *= 1.0 + em
                v[g] = total
            if not whole:  # the columns side by side: the sums below vectorise
                for g in range(n_cols):
                    vc[g] = v[cols[g]]
            s = _popcount(coal)
            wo = w_out[s]
            wb = w_both[s]
            for g in range(n_cols):
                acc_all[g] += wo * vc[g]
            bits = coal
            while bits:
                low = bits & -bits
                jj = _popcount(low - 1)
                for g in range(n_cols):
                    acc_in[jj, g] += wb * vc[g]
                bits ^= low
        for jj in range(d):
            p = active[jj]
            for g in range(n_cols):
                phi[q, p, g] = acc_in[jj, g] - acc_all[g]
    return phi


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sum_rows(per_row):
    """sum over rows of per_row (K, P, C), added in row order (numpy's sum is pairwise)."""
    out = np.zeros(per_row.shape[1:])
    for q in range(per_row.shape[0]):
        for p in range(per_row.shape[1]):
            for c in range(per_row.shape[2]):
                out[p, c] += per_row[q, p, c]
    return out


@dataclass(frozen=True)
class Explanation:
    """Attributions of one endpoint's CIF over the time grid, for n patients.

    ``values[i, f, j]`` is feature f's contribution to patient i's CIF at ``times[j]``;
    ``base_values[j] + values[i, :, j].sum() == prediction[i, j]`` to ADDITIVITY_TOL.
    """

    endpoint: str
    method: str
    times: np.ndarray  # (G,) months
    base_values: np.ndarray  # (G,)
    values: np.ndarray  # (n, F, G)
    prediction: np.ndarray  # (n, G)
    feature_names: tuple[str, ...]
    data: pd.DataFrame  # (n, F) the model's feature values, columns = feature_names

    def time_index(self, horizon: float) -> int:
        idx = np.flatnonzero(np.isclose(self.times, float(horizon)))
        if idx.size == 0:
            raise ValueError(f"{horizon} months is not a grid time of this explanation")
        return int(idx[0])

    def at(self, horizon: float) -> tuple[float, np.ndarray, np.ndarray]:
        """(base value, attributions (n, F), prediction (n,)) at one horizon (grid time)."""
        j = self.time_index(horizon)
        return float(self.base_values[j]), self.values[:, :, j], self.prediction[:, j]

    def at_times(self, horizons) -> Explanation:
        """The same explanation at these grid times only (columns, in the order asked)."""
        idx = _grid_columns(self.times, horizons)
        return replace(
            self,
            times=self.times[idx],
            base_values=self.base_values[idx],
            values=self.values[:, :, idx],
            prediction=self.prediction[:, idx],
        )

    def additivity_error(self) -> float:
        recon = self.base_values[None, :] + self.values.sum(axis=1)
        return float(np.max(np.abs(recon - self.prediction))) if recon.size else 0.0

    def grouped(self) -> Explanation:
        """Sum the four one-hot technique columns into one 'first-course technique' factor.

        Shapley values are additive over features, so the group's value is the sum and
        base + sum of the grouped attributions still equals the prediction.
        """
        names = list(self.feature_names)
        if not all(c in names for c in TECHNIQUE_COLUMNS):
            return self
        idx = [names.index(c) for c in TECHNIQUE_COLUMNS]
        keep = [i for i in range(len(names)) if i not in idx]
        pos = min(idx)
        new_names, cols = [], []
        for i in range(len(names)):
            if i == pos:
                new_names.append(TECHNIQUE_GROUP)
                cols.append(self.values[:, idx, :].sum(axis=1))
            if i in keep:
                new_names.append(names[i])
                cols.append(self.values[:, i, :])
        data = self.data.copy()
        tech = np.array(TECHNIQUE_COLUMNS)[self.data[list(TECHNIQUE_COLUMNS)].to_numpy().argmax(1)]
        data.insert(pos, TECHNIQUE_GROUP, tech)
        data = data.drop(columns=list(TECHNIQUE_COLUMNS))[new_names]
        return replace(
            self, values=np.stack(cols, axis=1), feature_names=tuple(new_names), data=data
        )


class ForestExplainer:
    """Exact Shapley values of one forest's CIF (one cause) at every grid time.

    ``background`` (features of training patients) switches to interventional values;
    without it the values are path-dependent over the trees' in-bag training patients.
    """

    def __init__(
        self, model, cause: int | None = None, background=None, endpoint: str = ""
    ) -> None:
        self.model = model
        self.endpoint = endpoint
        self.packed = pack_forest(model, cause)
        self.times = np.asarray(model.event_times_, dtype=float)
        self.feature_names = tuple(
            getattr(model, "feature_names_in_", FEATURE_COLUMNS[: self.packed.n_features])
        )
        if background is None:
            self.method: Method = "path_dependent"
            self.background_ = None
            self.base_values_ = self.packed.base_value
        else:
            if self.packed.n_features > MAX_FEATURES_INTERVENTIONAL:
                raise ValueError("interventional values support at most 62 features")
            self.method = "interventional"
            self.background_ = _as_model_input(background)
            self.base_values_ = self._predict(self.background_).mean(axis=0)

    def _predict(self, X64: np.ndarray) -> np.ndarray:
        p = self.packed
        return _predict_packed(X64, p.roots, p.left, p.right, p.feature, p.threshold, p.values)

    def explain(self, X, check: bool = True) -> Explanation:
        """Attributions for every row of X (DataFrame with the model's features)."""
        if isinstance(X, pd.DataFrame):
            missing = [c for c in self.feature_names if c not in X.columns]
            if missing:
                raise ValueError(f"X lacks the model's feature column(s) {missing}")
            X = X[list(self.feature_names)]
        X64 = _as_model_input(X)
        p = self.packed
        if self.method == "path_dependent":
            phi = _path_dependent_leafwise(
                X64,
                p.leaf_ptr,
                p.leaf_node,
                p.path_feature,
                p.path_zero,
                p.path_lo,
                p.path_hi,
                p.values,
                p.max_path_features,
            )
        else:
            phi = _interventional_many(
                X64,
                self.background_,
                p.roots,
                p.max_depth,
                p.left,
                p.right,
                p.feature,
                p.threshold,
                p.values,
            )
        pred = self._predict(X64)
        data = (
            X.reset_index(drop=True)
            if isinstance(X, pd.DataFrame)
            else pd.DataFrame(np.atleast_2d(X), columns=list(self.feature_names))
        )
        exp = Explanation(
            endpoint=self.endpoint,
            method=self.method,
            times=self.times,
            base_values=np.asarray(self.base_values_, dtype=float),
            values=phi,
            prediction=pred,
            feature_names=self.feature_names,
            data=data,
        )
        if check:
            err = exp.additivity_error()
            if not err <= ADDITIVITY_TOL:
                raise AdditivityError(f"base + SHAP differs from the CIF by {err:.3g}")
        return exp


# ------------------------------------------------------------- the models' members
def _cause_index(model, cause: int | None) -> int:
    k = getattr(model, "cause", 1) if cause is None else int(cause)
    return k


class ForestMember:
    """A forest's exact input-level attributions (one cause, every grid time)."""

    def __init__(self, model, cause: int, players: PlayerMap, background_features: np.ndarray):
        self.packed = pack_forest(model, cause)
        self.players = players
        if self.packed.n_features != len(players.feature_names):
            raise ValueError("the forest's features are not the player map's features")
        if players.parents.shape[1] > _ZERO_BIT.shape[0]:
            raise ValueError("the forest kernel handles features of at most 4 parent players")
        bg = _as_model_input(background_features)
        self.n_background = bg.shape[0]
        self.base_values = self._predict(bg).mean(axis=0)
        p = self.packed
        self.background_left = _background_left(
            bg, p.left, p.feature, p.threshold, (bg.shape[0] + 63) // 64
        )
        self._column_values: dict[tuple[int, ...], np.ndarray] = {}

    def column_values(self, cols: np.ndarray) -> np.ndarray:
        """The nodes' values at grid columns ``cols`` only, contiguous: (N, len(cols)).

        ``/explain`` reads 4 of the 60 columns of ~18,000 leaves per call: from the whole
        (N, 60) array (18 MB for the benchmark forest) that is four cache misses per leaf,
        from this copy (1.2 MB, made on first use of a set of columns and kept) one. The
        whole grid is the array itself. At most ``_MAX_COLUMN_SETS`` sets are kept (a client
        could ask for many); each is the same numbers, so results do not depend on the cache.
        """
        values = self.packed.values
        if cols.shape[0] == values.shape[1] and np.array_equal(cols, np.arange(cols.shape[0])):
            return values
        key = tuple(int(c) for c in cols)
        out = self._column_values.get(key)
        if out is None:
            out = np.ascontiguousarray(values[:, cols])
            if len(self._column_values) >= _MAX_COLUMN_SETS:
                self._column_values.clear()
            self._column_values[key] = out
        return out

    def _predict(self, X64: np.ndarray) -> np.ndarray:
        p = self.packed
        return _predict_packed(X64, p.roots, p.left, p.right, p.feature, p.threshold, p.values)

    def _walk(self, t32: np.ndarray, t_lo: int, t_hi: int) -> tuple[np.ndarray, np.ndarray]:
        p = self.packed
        return _walk_players(
            t32,
            self.background_left,
            self.players.parents,
            self.players.n_parents,
            self.players.n_players,
            p.roots,
            t_lo,
            t_hi,
            p.max_depth,
            p.left,
            p.right,
            p.feature,
            p.threshold,
        )

    def attributions(self, table: np.ndarray, cols: np.ndarray, split: int = 1) -> np.ndarray:
        """(P, len(cols)) from one patient's hybrid table (K, F, slots), at grid ``cols``.

        ``split`` > 1 walks the trees in ``split`` threads (this one and ``split - 1`` of
        the ``"halves"`` pool), which take ranges of trees from a shared queue,
        ``_RANGES_PER_THREAD`` per thread: a thread that the machine's other work slows down
        (two cores, shared) leaves its ranges to the other instead of being waited for, as
        fixed halves were. The ranges' weights are summed in tree order, so the result is
        the single walk's bit for bit (see :func:`_walk_players`).
        """
        p = self.packed
        t32 = np.ascontiguousarray(table.astype(np.float32).astype(np.float64))
        n_trees = p.roots.shape[0]
        n_ranges = 1 if split <= 1 else min(split * _RANGES_PER_THREAD, n_trees)
        bounds = np.linspace(0, n_trees, max(1, n_ranges) + 1).astype(int)
        ranges = list(zip(bounds[:-1], bounds[1:], strict=True))
        parts: list = [None] * len(ranges)
        queue = itertools.count()  # next() is atomic under the GIL: each range taken once

        def take() -> None:
            while (i := next(queue)) < len(ranges):
                parts[i] = self._walk(t32, *ranges[i])

        helpers = [_pool("halves").submit(take) for _ in range(min(split, len(ranges)) - 1)]
        take()
        for f in helpers:
            f.result()
        phi = np.zeros((self.players.n_players, cols.shape[0]))
        values = self.column_values(cols)
        for leaves, weights in parts:  # in tree order: the single walk's sums
            _leaf_sums(leaves, weights, values, phi)
        return phi / table.shape[0]


def cox_linear_form(model) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, coef, increments) of a cause-specific Cox model, each cause a row.

    The linear predictor of cause c is sum_j coef[c, j] (x_j - mean[c, j]) / scale[c, j];
    ``increments`` (C, G) are the Breslow baseline cumulative-hazard increments on the grid.
    Reads a StandardScaler + linear Cox pipeline (:class:`models.baselines.CauseSpecificCox`)
    or any per-cause model with ``coef_``; a cause without events has zero hazard.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    inc = np.asarray(model.baseline_increments_, dtype=np.float64)
    n_causes = inc.shape[0]
    n_feat = int(model.n_features_in_)
    mean = np.zeros((n_causes, n_feat))
    scale = np.ones((n_causes, n_feat))
    coef = np.zeros((n_causes, n_feat))
    for c, m in enumerate(model.models_):
        if m is None:
            continue
        est = m
        if isinstance(m, Pipeline):
            steps = [s for _, s in m.steps]
            if len(steps) != 2 or not isinstance(steps[0], StandardScaler):
                raise TypeError("Cox member: expected StandardScaler + a linear Cox model")
            sc, est = steps
            mean[c] = sc.mean_ if sc.with_mean else 0.0
            scale[c] = sc.scale_ if sc.with_std else 1.0
        if not hasattr(est, "coef_"):
            raise TypeError(f"Cox member: {type(est).__name__} has no linear coefficients")
        coef[c] = np.asarray(est.coef_, dtype=np.float64).ravel()
    return mean, scale, coef, inc


class CoxMember:
    """A cause-specific Cox model's exact input-level attributions: every coalition."""

    def __init__(self, model, cause: int, players: PlayerMap, background_features: np.ndarray):
        self.players = players
        self.cause = int(cause)
        self.mean, self.scale, self.coef, self.increments = cox_linear_form(model)
        bg = np.asarray(background_features, dtype=np.float64)
        lp = ((bg[:, None, :] - self.mean[None]) / self.scale[None] * self.coef[None]).sum(-1)
        for c, m in enumerate(model.models_):  # the form must be the model's own predictor
            if m is not None and not np.allclose(
                lp[:, c], model._log_risk(m, bg), rtol=0, atol=1e-9
            ):
                raise TypeError("Cox member: its linear predictor is not the one read")
        self.n_background = bg.shape[0]
        frame = (
            pd.DataFrame(bg, columns=list(players.feature_names))
            if hasattr(model, "feature_names_in_")
            else bg
        )
        self.base_values = model.predict_cif(frame)[:, self.cause - 1, :].mean(axis=0)

    def _rows(self, table: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return _cox_players(
            table,
            self.players.parents,
            self.players.n_parents,
            self.players.n_players,
            self.mean,
            self.scale,
            self.coef,
            self.increments,
            self.cause - 1,
            cols,
        )

    def attributions(self, table: np.ndarray, cols: np.ndarray, split: int = 1) -> np.ndarray:
        """(P, len(cols)); ``split`` > 1 shares the background rows between that many threads
        (each row's values are its own; :func:`_sum_rows` adds them in row order)."""
        t = np.ascontiguousarray(table, dtype=np.float64)
        n_bg = t.shape[0]
        bounds = np.linspace(0, n_bg, max(1, min(split, n_bg)) + 1).astype(int)
        ranges = list(zip(bounds[:-1], bounds[1:], strict=True))
        futures = [_pool("halves").submit(self._rows, t[lo:hi], cols) for lo, hi in ranges[1:]]
        lo, hi = ranges[0]
        parts = [self._rows(t[lo:hi], cols)] + [f.result() for f in futures]
        return _sum_rows(np.concatenate(parts)) / n_bg


class EnsembleMember:
    """A stacked ensemble: its members' attributions weighted like their CIFs (per cause)."""

    def __init__(self, model, cause: int, players: PlayerMap, background_features: np.ndarray):
        weights = np.asarray(model.weights_, dtype=np.float64)[cause - 1]
        self.parts = [
            (float(w), member_explainer(m, cause, players, background_features))
            for (_, m), w in zip(model.members_, weights, strict=True)
            if w != 0.0
        ]
        self.base_values = sum(w * part.base_values for w, part in self.parts)

    def attributions(self, table: np.ndarray, cols: np.ndarray, split: int = 1) -> np.ndarray:
        return sum(w * part.attributions(table, cols, split) for w, part in self.parts)


def member_explainer(model, cause: int, players: PlayerMap, background_features: np.ndarray):
    """The exact kernel for ``model``: forest, cause-specific Cox, or an ensemble of them."""
    if hasattr(model, "members_") and hasattr(model, "weights_"):
        return EnsembleMember(model, cause, players, background_features)
    if hasattr(model, "tree_structures"):
        return ForestMember(model, cause, players, background_features)
    if hasattr(model, "baseline_increments_") and hasattr(model, "models_"):
        return CoxMember(model, cause, players, background_features)
    raise TypeError(f"no exact Shapley kernel for {type(model).__name__}")


class InputExplainer:
    """Exact input-level interventional Shapley values of one model's CIF (one cause).

    ``background``: at most K training patients' inputs (the player columns); the same for
    every member, which is what makes an ensemble's attributions the weighted sum of its
    members'. ``players`` defaults to the contract's 16 inputs.
    """

    def __init__(
        self,
        model,
        background,
        cause: int | None = None,
        players: PlayerMap | None = None,
        endpoint: str = "",
    ) -> None:
        self.model = model
        self.players = players or input_players()
        self.cause = _cause_index(model, cause)
        self.endpoint = endpoint
        self.background = self.players.columns(background)
        n_bg = len(self.background[self.players.players[0]])
        if n_bg == 0:
            raise ValueError("the background sample is empty")
        self.background_features = self.players.features(self.background)
        self.member = member_explainer(model, self.cause, self.players, self.background_features)
        self.base_values_ = np.asarray(self.member.base_values, dtype=np.float64)
        self.times = np.asarray(model.event_times_, dtype=float)
        self.method = INPUT_METHOD

    def explain(self, rows, check: bool = True, times=None, split: int = 1) -> Explanation:
        """Attributions for every patient (a DataFrame of inputs or validated patient objects).

        ``times``: only these grid times (``/explain`` asks for 4 of 60); each is the same,
        bit for bit, as the corresponding column of the whole grid's explanation. ``split``:
        threads per forest (:meth:`ForestMember.attributions`).
        """
        grid_cols = _grid_columns(self.times, times)
        cols = self.players.columns(rows)
        X = pd.DataFrame(self.players.features(cols), columns=list(self.players.feature_names))
        n = len(X)
        phi = np.empty((n, self.players.n_players, grid_cols.size))
        for r in range(n):
            table = self.players.hybrid_table(cols, self.background, r)
            phi[r] = self.member.attributions(table, grid_cols, split)
        pred = self.model.predict_cif(
            X if hasattr(self.model, "feature_names_in_") else X.to_numpy()
        )[:, self.cause - 1, :][:, grid_cols]
        exp = Explanation(
            endpoint=self.endpoint,
            method=self.method,
            times=self.times[grid_cols],
            base_values=self.base_values_[grid_cols],
            values=phi,
            prediction=pred,
            feature_names=self.players.players,
            data=pd.DataFrame(cols),
        )
        if check:
            err = exp.additivity_error()
            if not err <= ADDITIVITY_TOL:
                raise AdditivityError(f"base + attributions differ from the CIF by {err:.3g}")
        return exp


def numeric_players(names) -> PlayerMap:
    """Players of a plain numeric feature matrix: each column its own player."""
    return feature_players(names)


class BundleExplainer:
    """Explainers for both endpoints of a :class:`models.bundle.ModelBundle`, built once.

    With the bundle's background sample (``bundle.explanation_background()``, or
    ``background``: inputs of training patients) the players are the contract's inputs and the
    values interventional; this works for whatever the bundle holds (forest, Cox, ensemble).
    Given a table of model *features* (no input columns), or when no background is
    available, a forest bundle falls back to feature-level values (path-dependent, or
    interventional against a background of feature rows).
    """

    def __init__(self, bundle, background=None) -> None:
        self.bundle = bundle
        if background is None and hasattr(bundle, "explanation_background"):
            background = bundle.explanation_background()
        self.background = background
        self.players = input_players()
        inputs_bg = background is not None and _has_inputs(background, self.players)
        self.input_explainers = (
            {
                e: InputExplainer(m, background, cause=None, players=self.players, endpoint=e)
                for e, m in bundle.models.items()
            }
            if inputs_bg
            else None
        )
        self._feature_background = None if inputs_bg else background
        self._feature_explainers: dict[str, ForestExplainer] | None = None

    @property
    def method(self) -> str:
        return INPUT_METHOD if self.input_explainers else "path_dependent"

    def _features_level(self) -> dict[str, ForestExplainer]:
        if self._feature_explainers is None:
            self._feature_explainers = {
                e: ForestExplainer(m, cause=None, background=self._feature_background, endpoint=e)
                for e, m in self.bundle.models.items()
            }
        return self._feature_explainers

    def explain(
        self, patients, check: bool = True, endpoints=None, times=None
    ) -> dict[str, Explanation]:
        """Each endpoint's explanation (all by default); endpoints run in parallel threads.

        ``patients``: validated inputs (a DataFrame with the input columns, or a list of
        :class:`features.schema.PatientInput`), or a DataFrame of model features.
        ``endpoints``: only these (``/explain`` asks for one; its forests' trees are then
        walked in two threads). ``times``: only these grid times (input-level values; the
        feature-level fallback explains the whole grid and selects them).
        """
        input_level = self.input_explainers is not None and _has_inputs(patients, self.players)
        if input_level:
            explainers = self.input_explainers
            rows = patients
        else:
            if not all(hasattr(m, "tree_structures") for m in self.bundle.models.values()):
                raise ValueError(
                    "this bundle holds no explanation background (bundle.background): only "
                    "a forest can then be explained (path-dependent); retrain the bundle"
                )
            if isinstance(patients, pd.DataFrame):
                rows = (
                    patients
                    if set(FEATURE_COLUMNS) <= set(patients.columns)
                    else build_features(patients)
                )
            else:
                rows = self.bundle.features_from_inputs(list(patients))
            explainers = self._features_level()
        if endpoints is not None:
            unknown = [e for e in endpoints if e not in explainers]
            if unknown:
                raise ValueError(f"unknown endpoint(s) {unknown}")
            explainers = {e: explainers[e] for e in endpoints}
        split = N_THREADS if len(explainers) == 1 else 1

        def run(ex) -> Explanation:
            if input_level:
                return ex.explain(rows, check, times, split)
            exp = ex.explain(rows, check)
            return exp if times is None else exp.at_times(times)

        if len(explainers) == 1:
            return {e: run(ex) for e, ex in explainers.items()}
        futures = {e: _pool("endpoints").submit(run, ex) for e, ex in explainers.items()}
        return {e: f.result() for e, f in futures.items()}


def _has_inputs(rows, players: PlayerMap) -> bool:
    if isinstance(rows, pd.DataFrame):
        return all(p in rows.columns for p in players.players)
    if isinstance(rows, list | tuple) and rows:
        return all(hasattr(rows[0], p) for p in players.players)
    return False


def explain_bundle(bundle, X, background=None) -> dict[str, Explanation]:
    """One-off explanation of both endpoints (build a BundleExplainer to reuse the packing)."""
    return BundleExplainer(bundle, background).explain(X)


def sample_background(
    X: pd.DataFrame, size: int = DEFAULT_BACKGROUND_SIZE, seed: int = 0
) -> pd.DataFrame:
    """A seeded random subset of training patients to serve as the interventional background."""
    if len(X) <= size:
        return X
    return X.sample(n=size, random_state=seed)
