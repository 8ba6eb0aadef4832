"""Prediction latency of the forest: flattened arrays + one numba kernel, against the old path.

Issue 11 part 8. The old path (kept here as the reference, as it was in ``models/forest.py``):
blocks of 25 trees in a joblib thread pool started per call, each tree ``tree_.apply`` then
fancy indexing of its leaf values, blocks summed in order. The new path: ``predict_cif``
(every tree flattened once into contiguous arrays, one compiled kernel over all trees).
Both run in the same process on the same fitted forest (the defaults: 300 trees, leaf 15,
``n_jobs=2`` as the training job fits it), one patient and 100 patients, the median of
``--repeats`` calls each after a warm-up (old and new alternating, so that the
machine's load swings hit both); the two outputs are checked equal to 1e-12. The same for
``predict_cif_per_tree`` (what the intervals use): old = ``tree_.apply`` per tree.

Rerun::

    nice -n 10 env PYTHONPATH=. .venv/bin/python benchmarks/bench_forest_predict.py \
        --train-n 600 2000
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from joblib import Parallel, delayed

from features.pipeline import build_features, encode_endpoint
from features.synthetic import simulate_cohort
from models.forest import CompetingRiskForest

TEST_SEED = 10_000
OLD_BLOCK_TREES = 25


def old_predict(forest: CompetingRiskForest, X32: np.ndarray) -> np.ndarray:
    """The pre-flattening prediction (tree by tree, joblib pool per call)."""

    def block_sum(trees, values):
        acc = np.zeros((X32.shape[0],) + values[0].shape[1:])
        for tree, v in zip(trees, values, strict=True):
            acc += v[tree.tree_.apply(X32)]
        return acc

    n = len(forest.estimators_)
    blocks = [slice(a, min(a + OLD_BLOCK_TREES, n)) for a in range(0, n, OLD_BLOCK_TREES)]
    parts = Parallel(n_jobs=forest.n_jobs, prefer="threads")(
        delayed(block_sum)(forest.estimators_[s], forest.leaf_values_[s]) for s in blocks
    )
    return np.sum(parts, axis=0) / n


def old_per_tree(forest: CompetingRiskForest, X32: np.ndarray) -> np.ndarray:
    """The pre-flattening ``predict_cif_per_tree`` (cause 1, all grid times)."""
    out = np.zeros((len(forest.estimators_), X32.shape[0], forest.event_times_.size))
    for b, (t, v) in enumerate(zip(forest.estimators_, forest.leaf_values_, strict=True)):
        out[b] = v[t.tree_.apply(X32), 0]
    return out


def paired_medians(fn_old, fn_new, repeats: int) -> tuple[float, float]:
    """Median seconds of each, calls alternating old/new so that load swings hit both."""
    fn_old(), fn_new()
    t_old, t_new = [], []
    for _ in range(repeats):
        for fn, acc in ((fn_old, t_old), (fn_new, t_new)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return float(np.median(t_old)), float(np.median(t_new))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-n", type=int, nargs="+", default=[600, 2000])
    p.add_argument("--patients", type=int, nargs="+", default=[1, 100])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--n-jobs", type=int, default=2)
    args = p.parse_args()
    test = build_features(simulate_cohort(max(args.patients), TEST_SEED))
    for n in args.train_n:
        train = simulate_cohort(n, 1)
        forest = CompetingRiskForest(n_jobs=args.n_jobs, random_state=0)
        forest.fit(build_features(train), encode_endpoint(train, "mucosal_necrosis"))
        for m in args.patients:
            X = test.iloc[:m]
            X32 = X.to_numpy(dtype=np.float32)
            diff = np.max(np.abs(old_predict(forest, X32) - forest.predict_cif(X)))
            old, new = paired_medians(
                lambda X32=X32, f=forest: old_predict(f, X32),
                lambda X=X, f=forest: f.predict_cif(X),
                args.repeats,
            )
            per_old, per_new = paired_medians(
                lambda X32=X32, f=forest: old_per_tree(f, X32),
                lambda X=X, f=forest: f.predict_cif_per_tree(X),
                args.repeats,
            )
            per_diff = np.max(np.abs(old_per_tree(forest, X32) - forest.predict_cif_per_tree(X)))
            row = {
                "train_n": n,
                "patients": m,
                "old_ms": 1e3 * old,
                "new_ms": 1e3 * new,
                "speedup": old / new,
                "max_abs_diff": float(diff),
                "per_tree_old_ms": 1e3 * per_old,
                "per_tree_new_ms": 1e3 * per_new,
                "per_tree_speedup": per_old / per_new,
                "per_tree_max_abs_diff": float(per_diff),
                "nodes": int(forest._flat_forest().left.size),
                "load_avg_1m": os.getloadavg()[0],
                "nproc": os.cpu_count(),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
