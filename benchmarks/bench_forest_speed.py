"""Fit/predict time and peak memory: CompetingRiskForest against scikit-survival's forest.

Issue 4, part 5. Same data for both: the synthetic cohort's features (``build_features``) and
the mucosal-necrosis endpoint. scikit-survival's ``RandomSurvivalForest`` is a single-event
model; it gets the cause-specific outcome (necrosis = event, death without necrosis =
censored) on the recorded, continuous times (0.1-month resolution in the generator, about
1,200 distinct values at n = 10,000). Our forest gets the competing-risk outcome and puts
times on its 1-month grid (its defaults). Both: 100 trees, ``n_jobs=2``, seeded; scikit-survival
otherwise at its defaults (``min_samples_leaf=3``, ``min_samples_split=6``,
``max_features="sqrt"``, ``low_memory=False``), ours at its defaults (``min_samples_leaf=15``,
``max_bins=64``). A third configuration, ``sksurv_leaf15``, gives scikit-survival our leaf
sizes, to separate the effect of the leaf size from that of binning and the grid.
``forest_composite`` is our forest with ``splitrule="logrank_composite"`` (issue 10 part 1;
since then both of our rules grow trees with the numba builder of ``models/_tree_builder.py``).

Every (model, n, repeat) runs in a fresh child process, so its peak resident memory
(``ru_maxrss`` from ``os.wait4``) is its own; the child also reports its RSS after loading the
data, before fitting. Prediction is on ``--predict-n`` test patients: our CIFs on the grid, and
scikit-survival's survival functions as arrays (``predict_survival_function(return_array=True)``).

Rerun (the scikit-survival fit at n = 10,000 takes minutes and GBs; run it once)::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_forest_speed.py \
        --n 1000 2000 5000 10000 --models forest sksurv --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
N_TREES = 100
N_JOBS = 2
PREDICT_N = 1000
TRAIN_SEED = 1
TEST_SEED = 10_000
KIB_PER_MIB = 1024  # ru_maxrss is in KiB on Linux
MODELS = ("forest", "forest_composite", "sksurv", "sksurv_leaf15")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MIB


def worker(model: str, n: int, predict_n: int, seed: int) -> dict:
    """Fit and predict one configuration in this process; returns timings (seconds)."""
    from features.pipeline import build_features, encode_endpoint
    from features.synthetic import simulate_cohort

    train = simulate_cohort(n, TRAIN_SEED)
    test = simulate_cohort(predict_n, TEST_SEED)
    X = build_features(train).to_numpy(dtype=np.float32)
    X_test = build_features(test).to_numpy(dtype=np.float32)
    y = encode_endpoint(train, "mucosal_necrosis")
    if model.startswith("forest"):
        from models.forest import CompetingRiskForest

        rule = {"splitrule": "logrank_composite"} if model == "forest_composite" else {}
        est = CompetingRiskForest(n_estimators=N_TREES, n_jobs=N_JOBS, random_state=seed, **rule)
        y_fit = y

        def predict(Z):
            return est.predict_cif(Z)
    else:
        from sksurv.ensemble import RandomSurvivalForest

        extra = {"min_samples_leaf": 15, "min_samples_split": 30} if model.endswith("15") else {}
        est = RandomSurvivalForest(n_estimators=N_TREES, n_jobs=N_JOBS, random_state=seed, **extra)
        y_fit = np.empty(n, dtype=[("event", bool), ("time", float)])
        y_fit["event"] = y["event"] == 1
        y_fit["time"] = y["time"]

        def predict(Z):
            return est.predict_survival_function(Z, return_array=True)

    if model.startswith("forest"):  # compile (or load) the numba kernels outside the timing
        from sklearn.base import clone

        clone(est).set_params(n_estimators=2).fit(X[:300], y_fit[:300]).predict_cif(X[:5])
    rss_before = _rss_mib()
    t0 = time.perf_counter()
    est.fit(X, y_fit)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = predict(X_test)
    predict_s = time.perf_counter() - t0
    return {
        "fit_s": fit_s,
        "predict_s": predict_s,
        "rss_before_fit_mib": rss_before,
        "output_shape": list(np.shape(out)),
        "n_event_times": int(np.unique(y_fit["time"]).size),
    }


def run_child(model: str, n: int, predict_n: int, seed: int) -> dict:
    """Run one configuration in a child process; add its peak RSS (MiB) and wall time."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        model,
        "--n",
        str(n),
        "--predict-n",
        str(predict_n),
        "--seed",
        str(seed),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    row = {
        "model": model,
        "n": n,
        "seed": seed,
        "predict_n": predict_n,
        "wall_s": wall,
        "peak_rss_mib": usage.ru_maxrss / KIB_PER_MIB,
        "returncode": proc.returncode,
    }
    if proc.returncode == 0:
        row.update(json.loads(out.strip().splitlines()[-1]))
    return row


def summarise(path: Path) -> str:
    """Markdown table: median over repeats per (model, n) of the rows recorded in ``path``."""
    import pandas as pd

    rows = pd.read_json(path, lines=True)
    rows = rows[rows.returncode == 0]
    agg = rows.groupby(["n", "model"]).agg(
        runs=("fit_s", "size"),
        fit_s=("fit_s", "median"),
        fit_min=("fit_s", "min"),
        fit_max=("fit_s", "max"),
        predict_s=("predict_s", "median"),
        peak_rss_mib=("peak_rss_mib", "max"),
        rss_before_fit_mib=("rss_before_fit_mib", "median"),
        load=("load_avg_1m", "median"),
    )
    lines = [
        "| n | model | runs | fit s, median (min-max) | predict s | peak RSS MiB "
        "(before fit) | fit time / forest's | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (n, model), r in agg.iterrows():
        base = agg.loc[(n, "forest"), "fit_s"] if (n, "forest") in agg.index else np.nan
        lines.append(
            f"| {n} | {model} | {int(r.runs)} | {r.fit_s:.1f} ({r.fit_min:.1f}-{r.fit_max:.1f}) "
            f"| {r.predict_s:.2f} | {r.peak_rss_mib:.0f} ({r.rss_before_fit_mib:.0f}) "
            f"| {r.fit_s / base:.1f}x | {r.load:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    p.add_argument("--models", nargs="+", choices=MODELS, default=["forest", "sksurv"])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--predict-n", type=int, default=PREDICT_N)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "forest_speed.jsonl")
    p.add_argument("--summary", action="store_true", help="print the table of --out, no runs")
    args = p.parse_args()
    if args.summary:
        print(summarise(args.out))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.n[0], args.predict_n, args.seed)))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for n in args.n:
        for model in args.models:
            for r in range(args.repeats):
                row = run_child(model, n, args.predict_n, args.seed + r)
                row["load_avg_1m"] = os.getloadavg()[0]
                row["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
                with args.out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
