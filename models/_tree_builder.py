"""A compiled survival-tree builder with competing-risks log-rank splitting rules.

Why our own: scikit-survival's Cython ``SurvivalTree`` splits only on a single-event log-rank
statistic and takes no custom criterion, and the composite competing-risks rule (below) needs
every cause's events at every split. This builder grows one tree on binned features (codes of
``models/_binning.py``) with numba, without the GIL, so the forest grows trees in threads.

Splitting statistics, for a candidate split of a node into left (L) and the rest, over the
node's grid times t with at-risk weight Y(t) > 0 and cause-k event weight d_k(t) (weights are
bootstrap counts, i.e. replicated patients):

    U_k = sum_t [ d_k^L(t) - d_k(t) Y^L(t) / Y(t) ]
    V_k = sum_{t: Y(t) > 1} d_k(t) (Y^L/Y) (1 - Y^L/Y) (Y - d_k) / (Y - 1)

* ``"logrank_cs"``: |U_c| / sqrt(V_c) for the cause of interest c (competing events count as
  censored): the two-sample log-rank statistic scikit-survival's tree maximises.
* ``"logrank_composite"``: |sum_k U_k| / sqrt(sum_k V_k), every cause with weight one: the
  composite competing-risks log-rank rule of Ishwaran et al. (2014), randomForestSRC's default
  for competing risks. A split that separates any cause's hazard scores, so a rare cause and
  the competing cause both shape the tree.

A split with V = 0 (no event of the causes used) is not a candidate. Each node draws its
features in a seeded random order and tries them until ``max_features`` features that are not
constant in the node have been tried (scikit-learn's rule), keeping the first best statistic.
A split is allowed when both children keep at least ``min_samples_leaf`` distinct in-bag
patients; a node is split only with at least ``min_samples_split`` of them.

Output per tree: node arrays in scikit-learn's layout (depth-first ids, children after their
parent, -1 for no child, feature -2 at leaves), the split as "code <= c", the distinct and
weighted in-bag counts per node.
"""

from __future__ import annotations

import numba
import numpy as np

SPLITRULES = ("logrank_cs", "logrank_composite")
TREE_LEAF = -1
TREE_UNDEFINED = -2


def cause_weights(splitrule: str, cause: int, n_causes: int) -> np.ndarray:
    """Weight of each cause's log-rank terms in the statistic (length K)."""
    if splitrule == "logrank_cs":
        w = np.zeros(n_causes)
        w[cause - 1] = 1.0
        return w
    if splitrule == "logrank_composite":
        return np.ones(n_causes)
    raise ValueError(f"splitrule must be one of {SPLITRULES}, got {splitrule!r}")


@numba.njit(cache=True, nogil=True, error_model="numpy")
def logrank_statistic(left_leave, left_events, node_leave, node_events, cause_w):
    """The split statistic from per-time tables (see the module docstring).

    ``*_leave[t]``: weight leaving the risk set at grid time t (event or censoring);
    ``*_events[t, k]``: weight of cause k+1 events at t. Returns -inf when V = 0.
    """
    n_grid, n_causes = node_events.shape
    num = 0.0
    den = 0.0
    y_left = 0.0
    y_node = 0.0
    for t in range(n_grid - 1, -1, -1):
        y_left += left_leave[t]
        y_node += node_leave[t]
        if y_node <= 0.0:
            continue
        ratio = y_left / y_node
        for k in range(n_causes):
            cw = cause_w[k]
            d = node_events[t, k]
            if cw == 0.0 or d == 0.0:
                continue
            num += cw * (left_events[t, k] - d * ratio)
            if y_node > 1.0:
                den += cw * cw * d * ratio * (1.0 - ratio) * (y_node - d) / (y_node - 1.0)
    if den <= 0.0:
        return -np.inf
    return abs(num) / np.sqrt(den)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _tables(rows, time_idx, event, weight, n_grid, n_causes, leave, events):
    leave[:] = 0.0
    events[:, :] = 0.0
    for r in rows:
        w = weight[r]
        leave[time_idx[r]] += w
        if event[r] > 0:
            events[time_idx[r], event[r] - 1] += w


@numba.njit(cache=True, nogil=True, error_model="numpy")
def grow_tree(
    codes_t,
    time_idx,
    event,
    weight,
    n_grid,
    n_causes,
    cause_w,
    max_features,
    min_samples_leaf,
    min_samples_split,
    max_depth,
    seed,
):
    """Grow one tree. ``codes_t``: (n_features, n) int32 bin codes; ``weight``: bootstrap counts.

    Returns (left, right, feature, code_threshold, n_node_samples, weighted_n_node_samples),
    each of length node_count; ``max_depth`` < 0 means unlimited.
    """
    np.random.seed(seed)
    n_features = codes_t.shape[0]
    rows = np.flatnonzero(weight > 0)
    m_total = rows.shape[0]
    cap = max(2 * m_total, 1)
    left = np.full(cap, TREE_LEAF, dtype=np.int64)
    right = np.full(cap, TREE_LEAF, dtype=np.int64)
    feature = np.full(cap, TREE_UNDEFINED, dtype=np.int64)
    threshold = np.full(cap, TREE_UNDEFINED, dtype=np.int64)
    n_node = np.zeros(cap, dtype=np.int64)
    w_node = np.zeros(cap)

    node_leave = np.empty(n_grid)
    node_events = np.empty((n_grid, n_causes))
    left_leave = np.empty(n_grid)
    left_events = np.empty((n_grid, n_causes))
    vals = np.empty(m_total, dtype=np.int64)
    buf = np.empty(m_total, dtype=np.int64)
    order = np.empty(m_total, dtype=np.int64)
    cnt = np.empty(4 * m_total + 2, dtype=np.int64)

    # stack of (start, end, depth, parent, is_left)
    st_start = np.empty(cap + 1, dtype=np.int64)
    st_end = np.empty(cap + 1, dtype=np.int64)
    st_depth = np.empty(cap + 1, dtype=np.int64)
    st_parent = np.empty(cap + 1, dtype=np.int64)
    st_isleft = np.empty(cap + 1, dtype=np.bool_)
    top = 0
    st_start[0] = 0
    st_end[0] = m_total
    st_depth[0] = 0
    st_parent[0] = -1
    st_isleft[0] = False
    top = 1
    node_count = 0
    while top > 0:
        top -= 1
        start = st_start[top]
        end = st_end[top]
        depth = st_depth[top]
        parent = st_parent[top]
        node = node_count
        node_count += 1
        if parent >= 0:
            if st_isleft[top]:
                left[parent] = node
            else:
                right[parent] = node
        m = end - start
        seg = rows[start:end]
        n_node[node] = m
        wsum = 0.0
        for r in seg:
            wsum += weight[r]
        w_node[node] = wsum

        if (
            (max_depth >= 0 and depth >= max_depth)
            or m < min_samples_split
            or m < 2 * min_samples_leaf
        ):
            continue
        _tables(seg, time_idx, event, weight, n_grid, n_causes, node_leave, node_events)
        has_events = False
        for t in range(n_grid):
            for k in range(n_causes):
                if cause_w[k] != 0.0 and node_events[t, k] > 0.0:
                    has_events = True
        if not has_events:
            continue

        best_stat = -np.inf
        best_f = -1
        best_c = -1
        order_f = np.random.permutation(n_features)
        tried = 0
        for fi in range(n_features):
            if tried >= max_features:
                break
            f = order_f[fi]
            lo = codes_t[f, seg[0]]
            hi = lo
            for i in range(m):
                c = codes_t[f, seg[i]]
                vals[i] = c
                if c < lo:
                    lo = c
                if c > hi:
                    hi = c
            if lo == hi:
                continue  # constant in this node: not counted (scikit-learn's rule)
            tried += 1
            span = hi - lo + 1
            if span <= 4 * m:  # counting sort by code: O(m + span)
                cnt[: span + 1] = 0
                for i in range(m):
                    cnt[vals[i] - lo + 1] += 1
                for c in range(span):
                    cnt[c + 1] += cnt[c]
                for i in range(m):
                    p = vals[i] - lo
                    order[cnt[p]] = i
                    cnt[p] += 1
            else:
                order[:m] = np.argsort(vals[:m])
            left_leave[:] = 0.0
            left_events[:, :] = 0.0
            n_left = 0
            i = 0
            while i < m:
                c = vals[order[i]]
                while i < m and vals[order[i]] == c:
                    r = seg[order[i]]
                    w = weight[r]
                    left_leave[time_idx[r]] += w
                    if event[r] > 0:
                        left_events[time_idx[r], event[r] - 1] += w
                    n_left += 1
                    i += 1
                if i >= m or m - n_left < min_samples_leaf:
                    break
                if n_left < min_samples_leaf:
                    continue
                stat = logrank_statistic(left_leave, left_events, node_leave, node_events, cause_w)
                if stat > best_stat:
                    best_stat = stat
                    best_f = f
                    best_c = c
        if best_f < 0:
            continue

        # partition rows[start:end]: code <= best_c first
        n_l = 0
        n_r = 0
        for i in range(m):
            r = seg[i]
            if codes_t[best_f, r] <= best_c:
                rows[start + n_l] = r
                n_l += 1
            else:
                buf[n_r] = r
                n_r += 1
        for i in range(n_r):
            rows[start + n_l + i] = buf[i]
        feature[node] = best_f
        threshold[node] = best_c
        # push right first so the left child gets the next id (depth first, like scikit-learn)
        st_start[top] = start + n_l
        st_end[top] = end
        st_depth[top] = depth + 1
        st_parent[top] = node
        st_isleft[top] = False
        top += 1
        st_start[top] = start
        st_end[top] = start + n_l
        st_depth[top] = depth + 1
        st_parent[top] = node
        st_isleft[top] = True
        top += 1
    return (
        left[:node_count].copy(),
        right[:node_count].copy(),
        feature[:node_count].copy(),
        threshold[:node_count].copy(),
        n_node[:node_count].copy(),
        w_node[:node_count].copy(),
    )


@numba.njit(cache=True, nogil=True, error_model="numpy")
def apply_codes(codes_t, left, right, feature, threshold):
    """Leaf of every row (bin codes, "code <= c" goes left)."""
    n = codes_t.shape[1]
    out = np.empty(n, dtype=np.int64)
    for r in range(n):
        node = 0
        while left[node] >= 0:
            go_left = codes_t[feature[node], r] <= threshold[node]
            node = left[node] if go_left else right[node]
        out[r] = node
    return out


class GrownTree:
    """A grown tree as ``estimators_`` hold it: ``tree_`` is a scikit-learn ``Tree``.

    Keeping scikit-learn's ``Tree`` (rather than bare arrays) keeps ``tree_.apply``,
    ``children_left`` and the other accessors that TreeSHAP packing, the benchmarks and
    forests pickled before this builder existed rely on.
    """

    def __init__(self, tree_) -> None:
        self.tree_ = tree_

    def apply(self, X32: np.ndarray) -> np.ndarray:
        return self.tree_.apply(np.asarray(X32, dtype=np.float32))


def to_sklearn_tree(
    n_features: int,
    left: np.ndarray,
    right: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    n_node_samples: np.ndarray,
    weighted_n_node_samples: np.ndarray,
):
    """A scikit-learn ``Tree`` with these nodes (its pickle state is the supported way in)."""
    from sklearn.tree._tree import Tree

    tree = Tree(n_features, np.array([1], dtype=np.intp), 1)
    state = tree.__getstate__()
    nodes = np.zeros(left.shape[0], dtype=state["nodes"].dtype)
    nodes["left_child"] = left
    nodes["right_child"] = right
    nodes["feature"] = feature
    nodes["threshold"] = threshold
    nodes["n_node_samples"] = n_node_samples
    nodes["weighted_n_node_samples"] = weighted_n_node_samples
    state["nodes"] = nodes
    state["node_count"] = left.shape[0]
    state["max_depth"] = _depth(left, right)
    state["values"] = np.zeros((left.shape[0], 1, 1))
    tree.__setstate__(state)
    return tree


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    depth = np.zeros(left.shape[0], dtype=np.int64)
    for node in range(left.shape[0]):  # children come after their parent
        if left[node] >= 0:
            depth[left[node]] = depth[right[node]] = depth[node] + 1
    return int(depth.max(initial=0))
