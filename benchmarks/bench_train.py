"""Wall-clock time of `reirrad train` (the whole job, CLI to registered model).

Runs the real command in a subprocess against a fresh temporary MLflow store, on the
synthetic cohort at each size, with the release configuration (B = 200 unless --bootstrap
says otherwise), once with local worker processes and once on a local Ray cluster that this
script starts (`ray start --head --block`, stopped by its process group afterwards).
Appends one JSON line per run to --out.

    .venv/bin/python benchmarks/bench_train.py --n 184 2000 --engines local ray
    .venv/bin/python benchmarks/bench_train.py --n 2000 --bootstrap 10   # extrapolate to 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.config import load_config  # noqa: E402

RAY_START_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(num_cpus: int, temp_dir: str) -> tuple[subprocess.Popen, str]:
    """A local Ray head node in its own process group; returns (process, address)."""
    port = _free_port()
    ray_bin = str(Path(sys.executable).with_name("ray"))
    proc = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--num-cpus={num_cpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    import ray

    deadline = time.monotonic() + RAY_START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError("ray start exited; see the Ray logs in " + temp_dir)
        try:
            ray.init(address=address, log_to_driver=False)
            ray.shutdown()
            return proc, address
        except Exception:
            if time.monotonic() > deadline:
                stop_ray(proc)
                raise
            time.sleep(3)


def stop_ray(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def run_once(n: int, config_path: Path, ray_address: str | None, workdir: Path, log: Path) -> dict:
    """Time one `reirrad train`; its output (progress bars included) goes to ``log``."""
    uri = f"sqlite:///{workdir}/mlflow.db"
    cmd = [
        sys.executable,
        "-m",
        "reirrad_cli",
        "train",
        "--synthetic",
        str(n),
        "--config",
        str(config_path),
        "--tracking-uri",
        uri,
    ]
    if ray_address:
        cmd += ["--ray-address", ray_address]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    return {"returncode": proc.returncode, "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[184, 2000])
    ap.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    ap.add_argument("--config", default="release")
    ap.add_argument("--bootstrap", type=int, default=None, help="override B of the config")
    ap.add_argument("--cpus", type=int, default=2, help="Ray cluster CPUs / local workers")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/train_timing.jsonl"))
    ap.add_argument("--log", default=str(REPO / "benchmarks/logs/bench_train_runs.log"))
    args = ap.parse_args()

    cfg = load_config(args.config)
    if args.bootstrap is not None:
        cfg = cfg.model_copy(
            update={"evaluation": cfg.evaluation.model_copy(update={"n_bootstrap": args.bootstrap})}
        )
    cfg = cfg.model_copy(update={"n_workers": args.cpus})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(cfg.model_dump_json())
        for engine in args.engines:
            ray_proc, address = (None, None)
            if engine == "ray":
                ray_proc, address = start_ray(args.cpus, tempfile.mkdtemp(prefix="ray_", dir=tmp))
            try:
                for n in args.n:
                    workdir = Path(tempfile.mkdtemp(prefix=f"n{n}_{engine}_", dir=tmp))
                    res = run_once(n, config_path, address, workdir, Path(args.log))
                    rec = {
                        "when": datetime.now(UTC).isoformat(timespec="seconds"),
                        "n": n,
                        "engine": engine,
                        "config": cfg.name,
                        "n_bootstrap": cfg.evaluation.n_bootstrap,
                        "workers_or_cpus": args.cpus,
                        "machine": f"{platform.node()} {os.cpu_count()} cores, shared",
                        "load_avg_after": os.getloadavg()[0],
                        **res,
                    }
                    print(json.dumps(rec), flush=True)
                    with out.open("a") as fh:
                        fh.write(json.dumps(rec) + "\n")
            finally:
                if ray_proc is not None:
                    stop_ray(ray_proc)


if __name__ == "__main__":
    main()
