"""Fit time and peak memory of the stacked ensemble at n = 10,000 (issue 10: < 2 min, < 2 GB).

Each model is fitted in a fresh child process (so its peak resident memory is its own) on the
synthetic cohort (modern mix), one endpoint, with ``n_jobs=2``; the forest with its defaults is
fitted in the same run as the reference (the machine is shared, so the ratio is the stable
figure). One JSON line per fit is appended to ``benchmarks/results/ensemble_speed.jsonl``.

Rerun::

    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/bench_ensemble_speed.py --n 10000
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

RESULTS = Path(__file__).resolve().parent / "results" / "ensemble_speed.jsonl"
MODELS = ("forest", "ensemble")
ENDPOINT = "mucosal_necrosis"


def child(model: str, n: int, seed: int) -> dict:
    """Fit one model in this process; report fit seconds and peak RSS."""
    from features.pipeline import build_features, encode_endpoint
    from features.synthetic import simulate_cohort
    from models.ensemble import CompetingRiskEnsemble
    from models.forest import CompetingRiskForest

    df = simulate_cohort(n, seed, twice_daily_share=0.2)
    X, y = build_features(df), encode_endpoint(df, ENDPOINT)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    est = (
        CompetingRiskForest(n_jobs=2, random_state=seed)
        if model == "forest"
        else CompetingRiskEnsemble(n_jobs=2, random_state=seed)
    )
    t0 = time.perf_counter()
    est.fit(X, y)
    fit_s = time.perf_counter() - t0
    out = {
        "model": model,
        "n": n,
        "seed": seed,
        "fit_s": fit_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_fit_mib": rss_before,
    }
    if model == "ensemble":
        out["weights"] = est.weights_[0].round(3).tolist()
        out["members"] = [name for name, _ in est.members_]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.seed)))
        return
    for model in args.models:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                model,
                "--n",
                str(args.n),
                "--seed",
                str(args.seed),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            raise SystemExit(proc.returncode)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row.update(
            {
                "wall_s": time.perf_counter() - t0,
                "nproc": os.cpu_count(),
                "load_avg_1m": os.getloadavg()[0],
                "when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            }
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
