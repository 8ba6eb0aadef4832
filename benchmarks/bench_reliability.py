"""The API under sustained load and killed under load (issue 12 part 5; too long for CI).

Two runs against the real server (`bentoml serve`, what `reirrad serve` starts: one worker,
bearer token, gate, audit trail in SQLite/WAL with a durable commit per call), with a model
bundle file given by its SHA-256:

1. **sustained load**: wrk drives ``/score`` (a different patient key and GTV on each call)
   for ``--warmup`` seconds, then for ``--duration`` seconds (default 300) while the worker's
   resident memory is sampled every ``--sample-every`` seconds. Targets: no error (non-2xx,
   socket error, timeout) and the worker's memory at the end less than 10 % above its memory
   right after the warm-up. The audit trail is verified and must hold a record per request.
2. **killed under load**: ``--clients`` client threads call ``/score`` without pause, each
   call with its own patient key, and keep every request id answered with 200. The whole
   server (its process group: the arbiter and the worker) is killed with SIGKILL after
   ``--kill-after`` seconds of load, restarted at once on the same audit database, loaded
   again, ``--kills`` times in all. Then ``reirrad audit verify`` must pass and every request
   id a client received with 200 must be in the trail, with route ``/score`` and status 200.
   Calls made while the server is down fail to connect: they are counted, not errors of the
   service.

Model: ``--bundle FILE``, else the registered champion's bundle (``REIRRAD_HOME``'s store),
else the quick configuration's architecture fitted on its synthetic cohort (as
``bench_batch_score.py`` fits it; cached in /tmp).

Run (about 8-10 minutes; wrk from Debian: ``apt-get install -y wrk``)::

    .venv/bin/python benchmarks/bench_reliability.py [--bundle FILE] [--duration 300]

Results: a Markdown table on stdout; every figure and sample in ``--out`` (JSON). Exit 1 if a
target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from models.bundle import sha256_file  # noqa: E402
from serving.audit import AuditKey, AuditTrail  # noqa: E402
from serving.cli import serve_command  # noqa: E402

EXAMPLE = PROJECT_ROOT / "docs" / "example_patient.json"
READY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 30.0
TARGET_MEMORY_GROWTH = 0.10
WRK_TIMEOUT = "30s"
CLIENT_TIMEOUT_S = 60.0
DOWN_RETRY_S = 0.2
"""A client's pause after a refused connection (the server is down), before it tries again."""
WORKER_MARK = "_bentoml_impl.worker"
"""What a BentoML 1.4 worker's command line contains (the arbiter's does not)."""


# ------------------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Api:
    """One server process group on one port, restartable on the same audit database."""

    env: dict[str, str]
    port: int
    log: Path
    proc: subprocess.Popen | None = None
    starts: list[float] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start and wait for /readyz; return the seconds it took."""
        t0 = time.monotonic()
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                serve_command("127.0.0.1", self.port), cwd=PROJECT_ROOT, env=self.env,
                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
            )
        while time.monotonic() - t0 < READY_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    self.starts.append(time.monotonic() - t0)
                    return self.starts[-1]
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"server not ready:\n{self.log.read_text()[-3000:]}")

    def _tree(self) -> list[psutil.Process]:
        """The arbiter and its workers (BentoML starts each worker in a session of its own,
        so the arbiter's process group does not reach them)."""
        assert self.proc is not None
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL every process of the server at once, as a crash of its host or container
        would (killing the arbiter alone leaves its workers serving, orphaned)."""
        tree = self._tree()
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(tree, timeout=STOP_TIMEOUT_S)
        self.proc.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        tree = self._tree()
        self.proc.terminate()
        _, alive = psutil.wait_procs(tree, timeout=STOP_TIMEOUT_S)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self.proc.wait(timeout=STOP_TIMEOUT_S)

    def worker_rss(self) -> dict[str, int]:
        """Resident bytes of the worker(s) and of the whole server tree."""
        rss, workers = 0, 0
        for p in self._tree():
            try:
                mem = p.memory_info().rss
                rss += mem
                if WORKER_MARK in " ".join(p.cmdline()):
                    workers += mem
            except psutil.NoSuchProcess:
                continue
        return {"worker": workers, "tree": rss}


# ------------------------------------------------------------------------------- model
def model_file(bundle: Path | None) -> Path:
    """The bundle to serve (see the module docstring)."""
    if bundle is not None:
        return bundle.resolve()
    from models.store import SQLITE_PREFIX, ModelNotFoundError, load_champion, resolve_tracking_uri

    uri = resolve_tracking_uri(None)
    if not uri.startswith(SQLITE_PREFIX) or Path(uri[len(SQLITE_PREFIX):]).exists():
        try:
            dst = Path(tempfile.mkdtemp(prefix="reirrad-bench-rel-model-"))
            load_champion(dst_dir=dst)
            return next(dst.rglob("*.joblib"))
        except ModelNotFoundError:
            pass
    from benchmarks.bench_batch_score import bench_bundle

    print("no champion registered: fitting the quick architecture (cached)", flush=True)
    return bench_bundle("quick")


# -------------------------------------------------------------------- 1. sustained load
def wrk_script(tmp: Path, token: str) -> Path:
    """A wrk script whose every request scores another patient key and GTV."""
    patient = json.loads(EXAMPLE.read_text()) | {"patient_id": "__ID__", "gtv_cm3": "__GTV__"}
    body = json.dumps({"patient": patient}).replace('"__ID__"', '"L%d"')
    body = body.replace('"__GTV__"', "%.1f")
    script = tmp / "score.lua"
    script.write_text(
        "local n = 0\n"
        f"local template = [[{body}]]\n"
        'local headers = {["Content-Type"] = "application/json", '
        f'["Authorization"] = "Bearer {token}"}}\n'
        "request = function()\n"
        "  n = n + 1\n"
        '  return wrk.format("POST", "/score", headers, '
        "string.format(template, n, 5 + (n % 400)))\n"
        "end\n"
    )
    return script


def parse_wrk(out: str) -> dict[str, float]:
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": total,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(g) for g in sock.groups()) if sock else 0,
    }


def run_wrk(api: Api, script: Path, seconds: int, connections: int, sample_every: float
            ) -> tuple[dict[str, float], list[dict]]:
    """wrk for ``seconds``, sampling the server's memory meanwhile."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", WRK_TIMEOUT,
           "-s", str(script), f"{api.base}/score"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples, t0 = [], time.monotonic()
    while proc.poll() is None:
        samples.append({"t_s": round(time.monotonic() - t0, 1), **api.worker_rss()})
        deadline = time.monotonic() + sample_every
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed:\n{out}")
    return parse_wrk(out), samples


def sustained_load(api: Api, tmp: Path, token: str, key: str, args) -> dict:
    api.start()
    script = wrk_script(tmp, token)
    try:
        warm, _ = run_wrk(api, script, args.warmup, args.connections, args.sample_every)
        before = api.worker_rss()
        print(f"warm-up: {warm}; memory after it {before}", flush=True)
        load, samples = run_wrk(api, script, args.duration, args.connections, args.sample_every)
        after = api.worker_rss()
        print(f"load: {load}; memory at the end {after}", flush=True)
    finally:
        api.stop()
    check = AuditTrail(api.env["REIRRAD_AUDIT_DB"], AuditKey(key.encode())).verify()
    requests = warm["requests"] + load["requests"]
    return {
        "warmup": warm,
        "load": load,
        "memory_after_warmup": before,
        "memory_at_end": after,
        "samples": samples,
        "worker_growth": after["worker"] / before["worker"] - 1.0,
        "tree_growth": after["tree"] / before["tree"] - 1.0,
        "errors": load["non_2xx"] + load["socket_errors"] + warm["non_2xx"]
        + warm["socket_errors"],
        "audit": {"ok": check.ok, "records": check.n_records, "requests": requests,
                  "in_flight_max": 2 * args.connections, "problems": check.problems[:5]},
    }


# -------------------------------------------------------------------- 2. kill under load
@dataclass
class Tally:
    """What the clients saw, shared by their threads."""

    answered: list[str] = field(default_factory=list)  # request ids answered with 200
    other_status: dict[int, int] = field(default_factory=dict)
    down: int = 0  # connection refused or reset: the server was down or going down
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(base: str, token: str, n: int, stop: threading.Event, tally: Tally) -> None:
    """Call /score without pause until ``stop``; remember every 200's request id."""
    patient = json.loads(EXAMPLE.read_text())
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=CLIENT_TIMEOUT_S) as http:
        i = 0
        while not stop.is_set():
            i += 1
            body = {"patient": patient | {"patient_id": f"K{n}-{i}", "gtv_cm3": 5.0 + i % 400}}
            try:
                resp = http.post("/score", json=body)
            except httpx.TransportError:
                with tally.lock:
                    tally.down += 1
                time.sleep(DOWN_RETRY_S)
                continue
            with tally.lock:
                if resp.status_code == 200:
                    tally.answered.append(resp.json()["request_id"])
                else:
                    tally.other_status[resp.status_code] = (
                        tally.other_status.get(resp.status_code, 0) + 1
                    )


def audited_ids(db: Path) -> dict[str, tuple[str, int]]:
    """``request_id -> (route, status)`` of every record in the audit database (read-only)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT request_id, route, status FROM audit_record").fetchall()
    return {rid: (route, status) for rid, route, status in rows}


def audit_verify_cli(db: Path, key: str, tmp: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REIRRAD_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), REIRRAD_AUDIT_KEY=key, REIRRAD_HOME=str(tmp))
    return subprocess.run(
        [sys.executable, "-m", "reirrad_cli", "audit", "verify", "--audit-db", str(db)],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600,
    )


def kill_under_load(api: Api, tmp: Path, token: str, key: str, args) -> dict:
    api.start()
    tally, stop = Tally(), threading.Event()
    threads = [threading.Thread(target=client, args=(api.base, token, n, stop, tally))
               for n in range(args.clients)]
    restarts = []
    try:
        for t in threads:
            t.start()
        for k in range(args.kills):
            time.sleep(args.kill_after)
            with tally.lock:
                answered_before = len(tally.answered)
            api.kill()
            print(f"kill {k + 1}: server killed after {answered_before} answers", flush=True)
            restarts.append(api.start())
            print(f"kill {k + 1}: restarted in {restarts[-1]:.1f} s", flush=True)
        time.sleep(args.kill_after)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=CLIENT_TIMEOUT_S + 5)
        api.stop()
    db = Path(api.env["REIRRAD_AUDIT_DB"])
    verify = audit_verify_cli(db, key, tmp)
    records = audited_ids(db)
    missing = [rid for rid in tally.answered if records.get(rid) != ("/score", 200)]
    received = set(tally.answered)
    unreceived = sum(1 for rid, rs in records.items() if rs == ("/score", 200)
                     and rid not in received)
    return {
        "clients": args.clients,
        "kills": args.kills,
        "restart_s": restarts,
        "answered_200": len(tally.answered),
        "other_status": tally.other_status,
        "refused_while_down": tally.down,
        "records_in_trail": len(records),
        "checked": len(tally.answered),
        "missing": len(missing),
        "missing_ids": missing[:10],
        "audited_not_received": unreceived,
        "verify_exit": verify.returncode,
        "verify_output": (verify.stdout + verify.stderr).strip().splitlines()[-3:],
    }


# -------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--bundle", type=Path, help="Bundle file to serve (see below).")
    ap.add_argument("--duration", type=int, default=300, help="Seconds of sustained load.")
    ap.add_argument("--warmup", type=int, default=30, help="Seconds of load before the "
                    "first memory sample.")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections.")
    ap.add_argument("--sample-every", type=float, default=15.0, help="Seconds between "
                    "memory samples.")
    ap.add_argument("--clients", type=int, default=8, help="Client threads in the kill run.")
    ap.add_argument("--kills", type=int, default=2, help="SIGKILLs of the server under load.")
    ap.add_argument("--kill-after", type=float, default=20.0, help="Seconds of load before "
                    "each kill (and after the last restart).")
    ap.add_argument("--skip-load", action="store_true", help="Only the kill run.")
    ap.add_argument("--out", type=Path,
                    default=PROJECT_ROOT / "benchmarks" / "results" / "reliability.json")
    args = ap.parse_args()
    if not args.skip_load and shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")

    bundle = model_file(args.bundle)
    digest = sha256_file(bundle)
    tmp = Path(tempfile.mkdtemp(prefix="reirrad-bench-rel-"))
    token, key = secrets.token_urlsafe(32), secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REIRRAD_")}
    env.update(
        BENTOML_DO_NOT_TRACK="True", BENTOML_HOME=str(tmp / "bentoml"),
        PYTHONPATH=str(PROJECT_ROOT), REIRRAD_HOME=str(tmp / "home"),
        REIRRAD_API_TOKENS=token, REIRRAD_AUDIT_KEY=key,
        REIRRAD_BUNDLE_PATH=str(bundle), REIRRAD_BUNDLE_SHA256=digest,
    )
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    result: dict = {
        "started": started,
        "git_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT,
                                     capture_output=True, text=True).stdout.strip(),
        "machine": {"cpus": os.cpu_count(), "load_before": load_before},
        "bundle_sha256": digest,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    try:
        if not args.skip_load:
            api = Api(env | {"REIRRAD_AUDIT_DB": str(tmp / "load_audit.db")}, free_port(),
                      tmp / "load.log")
            result["sustained"] = sustained_load(api, tmp, token, key, args)
        api = Api(env | {"REIRRAD_AUDIT_DB": str(tmp / "kill_audit.db")}, free_port(),
                  tmp / "kill.log")
        result["killed"] = kill_under_load(api, tmp, token, key, args)
    finally:
        result["machine"]["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    met = report(result)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if met else 1


def report(r: dict) -> bool:
    """Print the Markdown table; return whether every target was met."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "**MISSED**"

    oks = []
    load = r["machine"]
    print(f"\n{r['started']}, commit {r['git_commit']}, {load['cpus']} CPUs, load "
          f"{load['load_before'][0]:.1f} -> {load['load_after'][0]:.1f}, bundle "
          f"{r['bundle_sha256'][:12]}\n")
    print("| measure | result | target | |\n| --- | --- | --- | --- |")
    if "sustained" in r:
        s = r["sustained"]
        mib = 1 << 20
        ok = s["errors"] == 0
        oks.append(ok)
        print(f"| sustained /score, {r['settings']['duration']} s after "
              f"{r['settings']['warmup']} s warm-up | {s['load']['requests']:,} requests "
              f"({s['load']['rps']:.1f}/s), {s['errors']} errors | 0 errors | {verdict(ok)} |")
        ok = s["worker_growth"] < TARGET_MEMORY_GROWTH
        oks.append(ok)
        print(f"| worker memory (RSS) | {s['memory_after_warmup']['worker'] / mib:.0f} -> "
              f"{s['memory_at_end']['worker'] / mib:.0f} MiB ({100 * s['worker_growth']:+.1f} %;"
              f" whole server {100 * s['tree_growth']:+.1f} %) | < +10 % | {verdict(ok)} |")
        extra = s["audit"]["records"] - s["audit"]["requests"]
        ok = s["audit"]["ok"] and 0 <= extra <= s["audit"]["in_flight_max"]
        oks.append(ok)
        print(f"| audit trail after the load | {s['audit']['records']:,} records for "
              f"{s['audit']['requests']:,} requests counted by wrk (+{extra}: calls in flight "
              f"when wrk stopped, which it does not count), verify "
              f"{'intact' if s['audit']['ok'] else 'BROKEN'} | one per request, intact | "
              f"{verdict(ok)} |")
    k = r["killed"]
    ok = k["verify_exit"] == 0
    oks.append(ok)
    print(f"| `reirrad audit verify` after {k['kills']} SIGKILLs under load and restarts "
          f"(restart {', '.join(f'{t:.0f}' for t in k['restart_s'])} s) | exit "
          f"{k['verify_exit']}, {k['records_in_trail']:,} records | exit 0 | {verdict(ok)} |")
    ok = k["missing"] == 0 and k["checked"] > 0
    oks.append(ok)
    print(f"| 200 responses with their audit record ({k['clients']} clients) | "
          f"{k['checked'] - k['missing']:,} of {k['checked']:,} request ids found "
          f"(other statuses {k['other_status'] or 'none'}; {k['refused_while_down']:,} calls "
          f"refused while down; {k['audited_not_received']} recorded 200s whose answer the "
          f"kill cut off) | all | {verdict(ok)} |")
    return all(oks)


if __name__ == "__main__":
    raise SystemExit(main())
