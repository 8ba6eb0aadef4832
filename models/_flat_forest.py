"""A fitted forest as contiguous arrays, and the compiled kernels that predict from them.

Why: predicting tree by tree in Python (``tree_.apply`` then fancy indexing, per tree, in a
joblib pool started per call) cost the service most of a request. Here every tree is
flattened once into one set of arrays with global node ids (the layout of
``models.explain.PackedForest``: ``roots[b]`` is tree b's root, children are global ids or -1),
and one numba kernel walks all trees for all rows without the GIL and without Python in the
loop. Rows are independent, so large inputs are split over threads without changing a bit of
the result: each row always adds its trees in the same order.

Prediction walks a block of rows down one tree a level at a time (:func:`_sum_leaves`; a few
rows walk several trees side by side, so that their cache misses overlap): a
leaf points to itself, so every row takes the tree's depth in steps and the next node is
chosen without a branch. Why: the branchy walk, one row to its leaf and then the next,
mispredicted about every other step (~12 ns each: two thirds of a batch's prediction); the
level-at-a-time walk has no branch to mispredict and its rows' steps overlap in the CPU.

Comparison convention (scikit-learn's): go left when ``float64(float32(x)) <= threshold``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numba
import numpy as np

ROWS_PER_THREAD = 64
"""Below this many rows per thread, one thread is faster than starting others."""
KERNEL_ROW_BLOCK = 128
"""Rows that share a pass over the trees in the kernel (their outputs stay in cache)."""
WALK_LANES = 16
"""Walks in flight at once for small blocks: trees side by side when rows are few."""


NODE_DTYPE = np.dtype(
    [("threshold", np.float64), ("left", np.int64), ("right", np.int64), ("feature", np.int64)]
)
"""One node as the kernels read it: everything a step down the tree needs in 32 bytes, one
cache line, where four separate arrays cost four. A served call walks ~800 trees while the
server's other work has pushed them out of the caches, so the lines touched are its cost."""


@dataclass(frozen=True)
class FlatForest:
    """All trees of one forest, flattened. ``values`` holds every node's K x G CIF block."""

    left: np.ndarray  # (N,) int64, global node id or -1 at leaves
    right: np.ndarray  # (N,) int64
    feature: np.ndarray  # (N,) int64
    threshold: np.ndarray  # (N,) float64
    values: np.ndarray  # (N, K * G) float64, node CIFs (not divided by the tree count)
    roots: np.ndarray  # (T,) int64
    n_causes: int
    n_grid: int
    nodes: np.ndarray | None = None  # (N,) NODE_DTYPE: the four above, packed per node
    walk: np.ndarray | None = None  # (N,) NODE_DTYPE: as nodes, each leaf its own children
    depth: np.ndarray | None = None  # (T,) int64: each tree's depth (steps root to leaf)
    leaf_row: np.ndarray | None = None  # (N,) int64: a leaf's row in leaf_values(), else -1
    _leaf_values: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.nodes is None:
            nodes = np.empty(self.left.shape[0], dtype=NODE_DTYPE)
            nodes["threshold"], nodes["left"] = self.threshold, self.left
            nodes["right"], nodes["feature"] = self.right, self.feature
            object.__setattr__(self, "nodes", nodes)
        if self.walk is None:
            leaf = self.left < 0
            ids = np.arange(self.left.shape[0], dtype=np.int64)
            walk = np.empty(self.left.shape[0], dtype=NODE_DTYPE)
            walk["threshold"] = np.where(leaf, 0.0, self.threshold)
            walk["left"] = np.where(leaf, ids, self.left)
            walk["right"] = np.where(leaf, ids, self.right)
            walk["feature"] = np.where(leaf, 0, self.feature)
            object.__setattr__(self, "walk", walk)
            object.__setattr__(self, "depth", _tree_depths(self.left, self.right, self.roots))
            object.__setattr__(self, "leaf_row", np.where(leaf, np.cumsum(leaf) - 1, -1))

    def leaf_values(self, cause: int | None = None) -> np.ndarray:
        """The leaves' rows of ``values`` (one cause's G columns, or all K x G), contiguous.

        Built once per cause and kept: the kernel adds whole rows of it, which the compiler
        vectorises only on a contiguous array, and the leaves alone are half the nodes, so
        a block's leaf rows stay in cache.
        """
        table = self._leaf_values.get(cause)
        if table is None:
            g = self.n_grid
            cols = self.values if cause is None else self.values[:, (cause - 1) * g : cause * g]
            table = np.ascontiguousarray(cols[self.left < 0], dtype=np.float64)
            self._leaf_values[cause] = table
        return table

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])


def flatten_trees(
    left: list[np.ndarray],
    right: list[np.ndarray],
    feature: list[np.ndarray],
    threshold: list[np.ndarray],
    values: list[np.ndarray],
) -> FlatForest:
    """Concatenate per-tree arrays (local node ids, -1 at leaves; values (n_nodes, K, G))."""
    sizes = np.array([v.shape[0] for v in values], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    def glob(children):
        parts = []
        for c, off in zip(children, offsets, strict=True):
            c = np.asarray(c, dtype=np.int64)
            parts.append(np.where(c >= 0, c + off, -1))
        return np.concatenate(parts)

    n_causes, n_grid = values[0].shape[1:]
    flat_values = np.concatenate(values).reshape(-1, n_causes * n_grid)
    return FlatForest(
        left=glob(left),
        right=glob(right),
        feature=np.concatenate([np.asarray(f, dtype=np.int64) for f in feature]),
        threshold=np.concatenate([np.asarray(t, dtype=np.float64) for t in threshold]),
        values=np.ascontiguousarray(flat_values, dtype=np.float64),
        roots=offsets,
        n_causes=int(n_causes),
        n_grid=int(n_grid),
    )


def as_kernel_input(X32: np.ndarray) -> np.ndarray:
    """float32 rows (the trees' comparison precision) widened to C-contiguous float64."""
    return np.ascontiguousarray(np.asarray(X32, dtype=np.float32), dtype=np.float64)


_CPUS = os.cpu_count() or 1
"""Read once: ``os.cpu_count()`` cost ~0.1 ms per call here, a tenth of a one-patient call."""


def _thread_count(n_rows: int, n_jobs: int | None) -> int:
    cpus = _CPUS
    want = cpus if n_jobs is None or n_jobs < 0 else max(int(n_jobs), 1)
    return max(1, min(want, cpus, n_rows // ROWS_PER_THREAD))


def _by_row_blocks(fn, X64: np.ndarray, n_jobs: int | None, axis: int = 0) -> np.ndarray:
    threads = _thread_count(X64.shape[0], n_jobs)
    if threads == 1:
        return fn(X64)
    bounds = np.linspace(0, X64.shape[0], threads + 1).astype(int)
    blocks = [X64[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        parts = list(pool.map(fn, blocks))
    return np.concatenate(parts, axis=axis)


def predict_mean(
    flat: FlatForest, X32: np.ndarray, n_jobs: int | None = None, cause: int | None = None
) -> np.ndarray:
    """The forest's CIF: mean over trees of the leaf values, (n, K, G); with ``cause``, that
    cause's only, (n, G): the same sums, reading half the leaf values (a served prediction
    needs one cause, and reading the values from memory is most of its cost)."""
    X64 = as_kernel_input(X32)
    g = flat.n_grid
    values = flat.leaf_values(cause)

    def run(block):
        return _sum_leaves(block, flat.roots, flat.depth, flat.walk, flat.leaf_row, values)

    total = _by_row_blocks(run, X64, n_jobs) / flat.n_trees
    return total if cause is not None else total.reshape(X64.shape[0], flat.n_causes, g)


def apply_all(flat: FlatForest, X32: np.ndarray, n_jobs: int | None = None) -> np.ndarray:
    """Global leaf id of every row in every tree, (n_trees, n)."""
    X64 = as_kernel_input(X32)

    def run(block):
        return _leaf_ids(block, flat.roots, flat.nodes)

    return _by_row_blocks(run, X64, n_jobs, axis=1)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _leaf_of(X, r, root, nodes):
    """The leaf row ``r`` of ``X`` reaches from ``root`` (left when x <= threshold)."""
    node = root
    while nodes[node].left >= 0:
        nd = nodes[node]
        node = nd.left if X[r, nd.feature] <= nd.threshold else nd.right
    return node


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sum_leaves(X, roots, depth, walk, leaf_row, values):
    """Sum over trees of each row's leaf row of ``values`` (each row adds trees in order).

    Blocks of KERNEL_ROW_BLOCK rows take the trees one at a time, so a tree's nodes and leaf
    values stay in cache while the block's rows reuse them (rows-outer was 3x slower at 100
    rows: every row pulled ~300 scattered leaf rows from memory). Within a tree the block
    steps down one level at a time (``walk``: leaves loop to themselves), as many steps as
    its deepest tree, so the walks are independent and free of branches; each row then adds
    its leaves in tree order.

    A block of fewer than WALK_LANES rows walks several trees at once (``lanes`` walks in
    all): one served patient's walk down one tree is a chain of dependent loads that miss the
    caches, and walking 16 trees side by side keeps 16 misses in flight instead of one
    (measured 0.57 -> 0.35 ms for the ~800 trees of one /score with the caches flushed).
    """
    n = X.shape[0]
    n_trees = roots.shape[0]
    width = values.shape[1]
    out = np.zeros((n, width))
    at = np.empty(max(KERNEL_ROW_BLOCK, WALK_LANES), dtype=np.int64)
    for a in range(0, n, KERNEL_ROW_BLOCK):
        m = min(a + KERNEL_ROW_BLOCK, n) - a
        together = max(1, WALK_LANES // m)  # trees walked side by side
        for t0 in range(0, n_trees, together):
            g = min(together, n_trees - t0)
            steps = 0
            for k in range(g):
                steps = max(steps, depth[t0 + k])
                for i in range(m):
                    at[k * m + i] = roots[t0 + k]
            for _ in range(steps):
                for k in range(g):
                    for i in range(m):
                        nd = walk[at[k * m + i]]
                        at[k * m + i] = nd.left if X[a + i, nd.feature] <= nd.threshold \
                            else nd.right
            for k in range(g):
                for i in range(m):
                    leaf = leaf_row[at[k * m + i]]
                    for j in range(width):
                        out[a + i, j] += values[leaf, j]
    return out


@numba.njit(cache=True, nogil=True)
def _tree_depths(left, right, roots):
    """Each tree's depth: the most steps from its root to a leaf (a walk from each root)."""
    out = np.zeros(roots.shape[0], dtype=np.int64)
    stack = np.empty((left.shape[0] + 1, 2), dtype=np.int64)
    for t in range(roots.shape[0]):
        top = 0
        stack[0, 0], stack[0, 1] = roots[t], 0
        deepest = 0
        while top >= 0:
            node, d = stack[top, 0], stack[top, 1]
            top -= 1
            deepest = max(deepest, d)
            if left[node] >= 0:
                stack[top + 1, 0], stack[top + 1, 1] = left[node], d + 1
                stack[top + 2, 0], stack[top + 2, 1] = right[node], d + 1
                top += 2
        out[t] = deepest
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _leaf_ids(X, roots, nodes):
    n = X.shape[0]
    out = np.empty((roots.shape[0], n), dtype=np.int64)
    for r in range(n):
        for t in range(roots.shape[0]):
            out[t, r] = _leaf_of(X, r, roots[t], nodes)
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def oob_sums(leaves, counts, values):
    """Per row, the sum of its leaf rows over the trees it is out of bag for, and their number.

    ``leaves``: (n_trees, n) global node ids of every training row; ``counts``: bootstrap counts.
    """
    n_trees, n = leaves.shape
    width = values.shape[1]
    total = np.zeros((n, width))
    n_oob = np.zeros(n)
    for r in range(n):
        for b in range(n_trees):
            if counts[b, r] == 0:
                node = leaves[b, r]
                for j in range(width):
                    total[r, j] += values[node, j]
                n_oob[r] += 1.0
    return total, n_oob
