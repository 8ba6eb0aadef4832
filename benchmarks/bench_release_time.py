"""Wall and CPU time of the whole training job (`reirrad train --synthetic N`) with a preset.

Runs :func:`training.train.train` against a throw-away sqlite MLflow store and records the
wall time, the CPU time of the process tree (this process and its joblib workers, sampled
every 0.5 s) and the load average, so a run on a busy machine can still be read: CPU seconds
/ 2 is what the job would need on an idle 2-core machine with perfect parallelism (a lower
bound). Appends one JSON line per run to benchmarks/results/release_time.jsonl.

    nice -n 10 python benchmarks/bench_release_time.py --n 184 600 2000 --preset release
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from training.config import load_config
from training.train import train

OUT = Path(__file__).resolve().parent / "results" / "release_time.jsonl"
SAMPLE_SECONDS = 0.5


class TreeCpu:
    """CPU seconds of this process and every descendant seen while it runs."""

    def __init__(self) -> None:
        self.root = psutil.Process()
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                self.seen[p.pid] = max(self.seen.get(p.pid, 0.0), t.user + t.system)
            except psutil.Error:
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> TreeCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return float(sum(self.seen.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[184, 600, 2000])
    ap.add_argument("--preset", default="release")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    cfg = load_config(args.preset)
    for n in args.n:
        with tempfile.TemporaryDirectory() as tmp:
            load_before = os.getloadavg()
            started = time.perf_counter()
            with TreeCpu() as cpu:
                result = train(
                    synthetic_n=n,
                    config=cfg,
                    tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                    progress=False,
                    echo=lambda s: None,
                )
            wall = time.perf_counter() - started
        row = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "preset": cfg.name,
            "model_kind": cfg.model.kind,
            "n": n,
            "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu.seconds, 1),
            "idle_2core_estimate_seconds": round(cpu.seconds / 2, 1),
            "nproc": os.cpu_count(),
            "load_before": [round(x, 1) for x in load_before],
            "load_after": [round(x, 1) for x in os.getloadavg()],
            "cv": f"{cfg.evaluation.cv_repeats}x{cfg.evaluation.cv_folds}",
            "trees": cfg.forest.n_estimators,
            "auc_24m": {
                k: round(v, 3) for k, v in result.headline.items() if k.endswith("auc_24m")
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
