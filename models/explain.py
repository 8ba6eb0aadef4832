"""Exact TreeSHAP attributions of the competing-risk forest's cumulative incidence.

The forest's CIF at every grid time is the plain mean of its trees' leaf values
(:class:`models.forest.CompetingRiskForest`), so Shapley values are exact tree sums: one
pass over the trees gives the attributions at all 60 grid times at once (the SurvSHAP(t)
view, exact rather than sampled), and the standard horizons are grid points of that view.

Two value functions, both exact:

* ``"path_dependent"`` (the default, what reports and the service use): v(S) is the
  tree-path expectation of Lundberg et al. (2020, Algorithm 2), taken over each tree's
  in-bag training patients (the node covers are bootstrap counts). It needs nothing but the
  trees, so the served bundle carries no patient-level training rows (a privacy risk we
  do not take for an explanation), and it is fast enough for per-request use.
* ``"interventional"`` against a background of training patients (Janzing et al. 2020; "true
  to the model"): v(S) = mean over the background of f(x_S, b_rest). Available whenever a
  background table is at hand (the cohort report, the tests); it costs a traversal per
  (tree, background row).

Why hand-written rather than ``shap.TreeExplainer`` on custom trees: shap's multi-output
custom-tree path did not add up in our checks, and one output per call costs 120 calls per
patient. Both value functions are linear in the leaf values, so we compute, per leaf, the
output-independent Shapley weight of each feature (numba) and multiply it by the leaf's
whole CIF curve. For path-dependent values the weights come leaf by leaf from each leaf's
root-path summary (precomputed once: its unique features, their zero fractions and the
interval of x that follows the path), a polynomial form of Lundberg et al.'s EXTEND/UNWIND
without the recursion over internal nodes (1.4x faster here; the tests check it against
brute-force Shapley values and against shap's own C++ TreeSHAP). Additivity (base + sum =
prediction) is checked on every call.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal

import numba
import numpy as np
import pandas as pd

from features.config import HORIZONS_MONTHS, MAIN_HORIZON_MONTHS
from features.pipeline import FEATURE_COLUMNS, FEATURE_SPECS, RT_STAGE_NUMBER

Method = Literal["path_dependent", "interventional"]
ADDITIVITY_TOL = 1e-9
"""Base value + attributions must equal the forest's CIF to this (probability scale)."""
MAX_FEATURES_INTERVENTIONAL = 62
"""Interventional coalitions are int64 bit masks."""
DEFAULT_BACKGROUND_SIZE = 100
N_THREADS = 2
# The kernels use numba's ``error_model="numpy"``: Python's zero-division checks on every
# division of the path recursion cost a third of the time. Covers are positive in fitted
# trees, and a NaN or inf would fail the additivity check rather than pass silently.
"""The two endpoints are explained in two threads (the kernels release the GIL)."""

TECHNIQUE_GROUP = "primary_technique"
TECHNIQUE_COLUMNS = (
    "primary_technique_2d",
    "primary_technique_3d",
    "primary_technique_imrt",
    "primary_technique_unknown",
)
TECHNIQUE_NAMES = {
    "primary_technique_2d": "2D RT",
    "primary_technique_3d": "3D-CRT",
    "primary_technique_imrt": "IMRT",
    "primary_technique_unknown": "unknown",
}
_STAGE_BY_NUMBER = {v: k for k, v in RT_STAGE_NUMBER.items()}


class AdditivityError(AssertionError):
    """Base value + attributions differ from the model's prediction: a bug, never ignored."""


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


class BundleExplainer:
    """Explainers for both endpoints of a :class:`models.bundle.ModelBundle`, built once."""

    def __init__(self, bundle, background=None) -> None:
        self.bundle = bundle
        self.explainers = {
            e: ForestExplainer(m, cause=None, background=background, endpoint=e)
            for e, m in bundle.models.items()
        }

    def explain(self, X: pd.DataFrame, check: bool = True) -> dict[str, Explanation]:
        """Both endpoints' explanations; the endpoints run in parallel threads."""
        with ThreadPoolExecutor(max_workers=N_THREADS) as pool:
            futures = {e: pool.submit(ex.explain, X, check) for e, ex in self.explainers.items()}
            return {e: f.result() for e, f in futures.items()}


def explain_bundle(bundle, X: pd.DataFrame, background=None) -> dict[str, Explanation]:
    """One-off explanation of both endpoints (build a BundleExplainer to reuse the packing)."""
    return BundleExplainer(bundle, background).explain(X)


def sample_background(
    X: pd.DataFrame, size: int = DEFAULT_BACKGROUND_SIZE, seed: int = 0
) -> pd.DataFrame:
    """A seeded random subset of training patients to serve as the interventional background."""
    if len(X) <= size:
        return X
    return X.sample(n=size, random_state=seed)


# -------------------------------------------------------------- clinician wording
def describe_value(name: str, value) -> str:
    """A feature and its value as a clinician reads it: 're-irradiation EQD2 72 Gy'."""
    if name == TECHNIQUE_GROUP:
        return f"first-course technique {TECHNIQUE_NAMES.get(str(value), str(value))}"
    spec = FEATURE_SPECS.get(name)
    if spec is None:
        return f"{name} {value}"
    if spec.kind == "flag":
        return spec.label if float(value) >= 0.5 else f"no {spec.label}"
    if spec.kind == "ordinal" and name == "rt_stage":
        return f"{spec.label} {_STAGE_BY_NUMBER.get(int(round(float(value))), value)}"
    v = float(value)
    shown = f"{v:.0f}" if abs(v) >= 10 else f"{v:.1f}"
    return f"{spec.label} {shown} {spec.unit}".strip()


@dataclass(frozen=True)
class Factor:
    """One input's effect on one patient's risk at one horizon."""

    name: str
    description: str  # "re-irradiation EQD2 72 Gy"
    shap: float  # probability scale
    horizon: float

    @property
    def points(self) -> float:
        """Size in percentage points."""
        return 100.0 * self.shap

    @property
    def sentence(self) -> str:
        verb = "raises" if self.shap > 0 else "lowers"
        return (
            f"{self.description} {verb} the {self.horizon:g}-month risk by "
            f"{abs(self.points):.1f} percentage points"
        )


def top_factors(
    exp: Explanation, row: int = 0, horizon: float = HORIZONS_MONTHS[2], k: int = 5
) -> list[Factor]:
    """The k inputs that move this patient's risk most at ``horizon`` (grouped technique)."""
    g = exp.grouped()
    _, phi, _ = g.at(horizon)
    order = np.argsort(-np.abs(phi[row]))[:k]
    return [
        Factor(
            g.feature_names[i],
            describe_value(g.feature_names[i], g.data.iloc[row, i]),
            float(phi[row, i]),
            float(horizon),
        )
        for i in order
    ]


def importance(exp: Explanation, horizons=HORIZONS_MONTHS, grouped: bool = True) -> pd.DataFrame:
    """Mean |SHAP| in percentage points per input (rows, clinician labels) and horizon.

    Sorted by the main horizon (24 months) when it is among ``horizons``, else the last one.
    """
    g = exp.grouped() if grouped else exp
    cols = {}
    for h in horizons:
        _, phi, _ = g.at(h)
        cols[f"{h:g} months"] = 100.0 * np.abs(phi).mean(axis=0)
    table = pd.DataFrame(cols, index=[feature_label(n) for n in g.feature_names])
    key = f"{MAIN_HORIZON_MONTHS:g} months"
    return table.sort_values(key if key in table else table.columns[-1], ascending=False)


def feature_label(name: str) -> str:
    """Clinician label of a model feature (or of the grouped technique factor)."""
    if name == TECHNIQUE_GROUP:
        return "first-course technique"
    spec = FEATURE_SPECS.get(name)
    if spec is None:
        return name
    return f"{spec.label} ({spec.unit})" if spec.unit else spec.label
