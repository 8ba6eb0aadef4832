"""Where a Ray batch run's memory goes as the file grows: the driver and every Ray process.

Why: ``bench_batch_score.py`` gives one peak for the whole run; telling a process that grows
with the rows from a transient or a cache that fills once needs samples through the run.
This runs ``reirrad score IN OUT --ray-address local`` inside this process (so the driver is
this process) and, every ``--every`` chunks, prints one JSON line: the driver's PSS split by
kind (anonymous, object-store pages mapped) and by mapping (``[heap]``, other anonymous,
``/dev/shm/plasma*``), glibc's ``mallinfo2`` (what malloc holds, in use and free), Python's
traced memory with ``--trace``, Ray's live references, and the PSS of every Ray process.

    PYTHONPATH=. .venv/bin/python benchmarks/probe_ray_memory.py IN.csv OUT.csv \\
        --every 100 [--trace] --bundle FILE [other reirrad score options]

How it found the driver's 524 MB at 3,000,000 rows (benchmarks/RESULTS.md): steady at
~390-405 MB from 600,000 to 2,800,000 rows, so the peak was a transient (the key ledger's
move to SQLite).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
import tracemalloc
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MB = 1 << 20


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc >= 2.33)."""

    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def malloc_mb() -> dict[str, int] | None:
    """Bytes glibc's malloc has from the system (``arena``), in use, free, and in mmaps."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return None
    return {"arena": m.arena // MB, "in_use": m.uordblks // MB, "free": m.fordblks // MB,
            "mmap": m.hblkhd // MB}


def rollup(pid: int | str = "self") -> dict[str, int]:
    """``Pss``, ``Pss_Anon`` and ``Pss_Shmem`` of a process, in MB."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("Pss", "Pss_Anon", "Pss_Shmem"):
                out[key] = int(value.split()[0]) // 1024
    return out


def resident_by_mapping() -> dict[str, int]:
    """This process's resident MB in ``[heap]``, other anonymous maps, and object-store
    (``/dev/shm/plasma*``) pages."""
    sums = {"heap": 0, "anon": 0, "plasma": 0}
    name = None
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split()
            if "-" in head[0] and ":" not in head[0]:
                name = head[5] if len(head) > 5 else "[anon]"
            elif head[0] == "Rss:":
                kind = ("heap" if name == "[heap]" else "anon" if name == "[anon]"
                        else "plasma" if name and name.startswith("/dev/shm/plasma") else None)
                if kind:
                    sums[kind] += int(head[1])
    return {k: v // 1024 for k, v in sums.items()}


def ray_processes() -> dict[str, int]:
    """PSS (MB) of each process this one started (Ray's daemons, actors, tasks)."""
    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = p.cmdline()
            label = (cmd[0].split()[0] if cmd and cmd[0].startswith("ray::")
                     else " ".join(Path(c).name for c in cmd[:2]))
            out[f"{label[:50]}:{p.pid}"] = rollup(p.pid)["Pss"]
        except (psutil.Error, OSError, IndexError):
            continue
    return out


def live_refs() -> int | None:
    try:
        import ray

        return len(ray._private.worker.global_worker.core_worker.get_all_reference_counts())
    except Exception:  # noqa: BLE001 - a diagnostic: Ray's internals may move
        return None


def sample(chunk: int, start: float, rows_per_chunk: int) -> dict:
    driver = rollup()
    others = ray_processes()
    return {"rows": chunk * rows_per_chunk, "s": round(time.time() - start, 1),
            "driver": driver, "driver_maps": resident_by_mapping(), "malloc": malloc_mb(),
            "traced_mb": (tracemalloc.get_traced_memory()[0] // MB
                          if tracemalloc.is_tracing() else None),
            "ray_refs": live_refs(), "total_pss": driver["Pss"] + sum(others.values()),
            "processes": others}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--every", type=int, default=100, help="chunks between samples")
    ap.add_argument("--chunk-rows", type=int, default=2000)
    ap.add_argument("--trace", action="store_true", help="tracemalloc (slows the driver)")
    args, score_options = ap.parse_known_args()  # the rest: `reirrad score` options
    if args.trace:
        tracemalloc.start()
    import serving.batch as batch

    consume = batch.BatchRun.consume
    start = time.time()

    def consume_and_sample(self, result, rows) -> None:
        consume(self, result, rows)
        if self.n_chunks % args.every == 0:
            print(json.dumps(sample(self.n_chunks, start, args.chunk_rows)), flush=True)

    batch.BatchRun.consume = consume_and_sample
    from reirrad_cli import app

    sys.argv = ["reirrad", "score", args.input, args.output, "--ray-address", "local",
                "--chunk-rows", str(args.chunk_rows), *score_options]
    try:
        app()
    except SystemExit as done:
        print(json.dumps({"exit": done.code, "s": round(time.time() - start, 1)}))


if __name__ == "__main__":
    main()
