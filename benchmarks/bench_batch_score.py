"""Batch scoring at registry scale: `reirrad score` on 1,000,000 synthetic patients.

Runs the real command (a subprocess, audit trail on) locally and on a local Ray cluster
(``--ray-address local``, object store capped), and reports rows per second, rows per
CPU-second (the per-core figure: the machine is shared, so CPU time is steadier than wall
time) and the peak memory of the command and every process it started (Ray's GCS, raylet and
workers included), as the sum of their proportional set sizes (shared pages counted once).

The cohort is generated once into /tmp (not committed), with one row in 1,000 made invalid
so that the rejects path runs too. The model is the registered architecture of the training
configuration (``training.model_factory.build_model``, with its per-patient intervals),
fitted on the configuration's synthetic cohort, unless ``--bundle`` names a bundle file
(e.g. the champion's).

    nice -n 10 .venv/bin/python benchmarks/bench_batch_score.py \
        [--n 1000000] [--engines local,ray] [--config release] [--bundle FILE]

Targets (issue 12): >= 10,000 patients per second per core locally; peak memory < 2 GB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA_DIR = Path(tempfile.gettempdir()) / "reirrad_batch_bench"
GEN_PIECE = 100_000
INVALID_EVERY = 1000
SAMPLE_S = 0.5
TARGET_PER_CORE = 10_000
TARGET_PEAK_GB = 2.0


def cohort_file(n: int, seed: int = 12) -> Path:
    """``n`` synthetic patients' inputs as CSV in /tmp (made once), one row in 1,000 invalid."""
    from features.schema import INPUT_COLUMNS
    from features.synthetic import simulate_cohort

    path = DATA_DIR / f"cohort_{n}_s{seed}.csv"
    if path.exists():
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with open(tmp, "w") as fh:
        for k, start in enumerate(range(0, n, GEN_PIECE)):
            m = min(GEN_PIECE, n - start)
            df = simulate_cohort(m, seed=seed + k)[list(INPUT_COLUMNS)]
            df["patient_id"] = [f"B{start + i:07d}" for i in range(m)]
            df["gtv_cm3"] = df["gtv_cm3"].astype(object)
            df.loc[df.index[::INVALID_EVERY], "gtv_cm3"] = "n/a"
            df.to_csv(fh, index=False, header=k == 0, lineterminator="\n")
    tmp.rename(path)
    return path


def bench_bundle(config_name: str) -> Path:
    """The configuration's registered architecture with its intervals, fitted on its
    synthetic cohort (cached in /tmp)."""
    path = DATA_DIR / f"bundle_{config_name}.joblib"
    if path.exists():
        return path
    from features.config import ENDPOINTS
    from features.pipeline import build_features, encode_endpoint
    from features.schema import validated_frame
    from features.synthetic import simulate_cohort
    from features.timegrid import DEFAULT_GRID
    from models.bundle import ModelBundle, summarise_training_data
    from training.config import load_config
    from training.model_factory import build_model
    from training.train import attach_intervals

    cfg = load_config(config_name)
    records = validated_frame(
        simulate_cohort(cfg.synthetic.n, seed=cfg.synthetic.seed), require_outcomes=True
    )
    X = build_features(records)
    y = {e: encode_endpoint(records, e) for e in ENDPOINTS}
    leaf = {"min_samples_leaf": min(cfg.forest.grid.get("min_samples_leaf", [10]))}
    models = {e: build_model(cfg, cfg.seed, params=leaf, n_jobs=1).fit(X, y[e])
              for e in ENDPOINTS}
    bundle = ModelBundle(models=models, grid=DEFAULT_GRID,
                         training_summary=summarise_training_data(X, records),
                         metrics={}, provenance={"model_name": f"bench-{config_name}",
                                                 "model_version": "bench", "seed": cfg.seed})
    bundle = attach_intervals(bundle, X, y, cfg)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    bundle.save(path)
    return path


def _tree(pid: int):
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _label(p) -> str:
    """A process's name as Ray shows it (``ray::ChunkScorer``, ``gcs_server``, ...)."""
    try:
        cmd = p.cmdline()
    except Exception:
        return "?"
    if not cmd:
        return "?"
    if cmd[0].startswith("ray::"):
        return cmd[0].split()[0]
    names = [Path(c).name for c in cmd[:3]]
    return " ".join(n for n in names if n and not n.startswith("-"))[:60]


def _pss(procs) -> tuple[int, list[tuple[str, int]]]:
    """The summed PSS of ``procs`` and each one's (label, PSS)."""
    import psutil

    each = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            each.append((_label(p), p.memory_full_info().pss))
    return sum(v for _, v in each), each


def run(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``cmd``; wall time, CPU time of it and its descendants, peak PSS of the tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    peak: dict = {"pss": 0, "procs": 0, "each": []}
    cpu_seen: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            procs = _tree(proc.pid)
            total, each = _pss(procs)
            if total > peak["pss"]:
                peak["pss"], peak["each"] = total, each
            peak["procs"] = max(peak["procs"], len(procs))
            for p in procs:
                try:
                    t = p.cpu_times()
                    cpu_seen[p.pid] = t.user + t.system
                except Exception:
                    pass
            stop.wait(SAMPLE_S)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    stop.set()
    th.join()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": max(reaped, sum(cpu_seen.values())),
            "peak_pss_gb": peak["pss"] / 1e9, "max_procs": peak["procs"],
            "at_peak_mb": sorted(((n, round(v / 1e6)) for n, v in peak["each"]),
                                 key=lambda x: -x[1]),
            "exit": proc.returncode, "tail": out.strip().splitlines()[-3:]}


def same_outputs(work: Path, a: str, b: str) -> dict[str, object]:
    """Whether engines ``a`` and ``b`` wrote the same output (same rows in the same order,
    every value the same to the last bit) and the same rejects; where they differ."""
    import pandas as pd

    def table(engine: str, suffix: str = ".csv") -> pd.DataFrame:
        return pd.read_csv(work / f"scores_{engine}{suffix}", dtype=str, keep_default_na=False)

    x, y = table(a), table(b)
    rx, ry = table(a, ".rejects.csv"), table(b, ".rejects.csv")
    same_shape = x.shape == y.shape and list(x.columns) == list(y.columns)
    diff = (x != y).to_numpy() if same_shape else None
    return {"rows": [len(x), len(y)], "identical": bool(same_shape and not diff.any()),
            "rows_differing": None if diff is None else int(diff.any(axis=1).sum()),
            "values_differing": None if diff is None else int(diff.sum()),
            "rejects_identical": rx.equals(ry)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--config", default="release")
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--chunk-rows", type=int, default=2000)
    ap.add_argument("--compare", action="store_true",
                    help="keep the outputs and check that every engine's output and rejects "
                         "equal the first engine's, value for value and in order")
    args = ap.parse_args()

    t = time.perf_counter()
    data = cohort_file(args.n)
    print(f"cohort: {data} ({data.stat().st_size / 1e6:.0f} MB, {time.perf_counter() - t:.0f} s)")
    bundle = args.bundle or bench_bundle(args.config)
    work = Path(tempfile.mkdtemp(prefix="reirrad_batch_"))
    env = dict(os.environ, REIRRAD_HOME=str(work / "home"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    results = {}
    for engine in args.engines.split(","):
        out = work / f"scores_{engine}.csv"
        cmd = [sys.executable, "-m", "reirrad_cli", "score", str(data), str(out),
               "--bundle", str(bundle), "--chunk-rows", str(args.chunk_rows)]
        if engine == "ray":
            cmd += ["--ray-address", "local"]
        r = run(cmd, env)
        r["rows_per_s"] = args.n / r["wall_s"]
        r["rows_per_cpu_s"] = args.n / r["cpu_s"]
        results[engine] = r
        print(f"{engine}: exit {r['exit']}, {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} CPU-s, "
              f"{r['rows_per_s']:,.0f} rows/s, {r['rows_per_cpu_s']:,.0f} rows/CPU-s, "
              f"peak {r['peak_pss_gb']:.2f} GB over {r['max_procs']} processes")
        print("   ", " | ".join(r["tail"]))
        print("    at the peak (MB):", ", ".join(f"{n} {v}" for n, v in r["at_peak_mb"]))
        if not args.compare:
            out.unlink(missing_ok=True)
    if args.compare:
        first, *others = results
        for engine in others:
            results[engine]["same_as_" + first] = same_outputs(work, first, engine)
            print(f"{engine} == {first}:", results[engine]["same_as_" + first])
        for engine in results:
            for f in (work / f"scores_{engine}.csv", work / f"scores_{engine}.rejects.csv"):
                f.unlink(missing_ok=True)
    if {"local", "ray"} <= results.keys():
        print("ray/local wall-time ratio:",
              f"{results['ray']['wall_s'] / results['local']['wall_s']:.2f}")
    load = os.getloadavg()
    print(json.dumps({"n": args.n, "chunk_rows": args.chunk_rows, "machine": platform.machine(),
                      "nproc": os.cpu_count(),
                      "load": [round(x, 1) for x in load], "results": results,
                      "targets": {"per_core": TARGET_PER_CORE, "peak_gb": TARGET_PEAK_GB}},
                     default=lambda o: o if not isinstance(o, np.generic) else o.item()))


if __name__ == "__main__":
    main()
