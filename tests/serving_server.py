"""Start the real API (`bentoml serve`, the command line `reirrad serve` runs) for HTTP tests.

One server per test module: start-up takes ~15 s on an idle 2-core host (the forest bundle is
loaded and every compiled path warmed in each worker), 40-60 s under shared load.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from serving.cli import serve_command

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 20.0
POLL_S = 0.5
LOG_TAIL_CHARS = 4000
AUDIT_KEY = "test-audit-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if path.exists() else ""


@dataclass
class Server:
    base: str
    tmp: Path
    stdout: Path
    stderr: Path
    audit_db: Path
    proc: subprocess.Popen

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.stdout, self.stderr))


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server's process group (it was started in its own session).

    BentoML starts each worker in a session of its own: SIGTERM reaches the arbiter, which
    stops them; if it must be killed instead, its workers are killed one by one too (killing
    the arbiter alone leaves them serving, orphaned).
    """
    if proc.poll() is not None:
        return
    try:
        workers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    pgid = os.getpgid(proc.pid)
    os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)
    _, alive = psutil.wait_procs(workers, timeout=STOP_TIMEOUT_S)
    for worker in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.kill()


def server_env(tmp: Path, bundle_file: Path, digest: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REIRRAD_")}
    env.update(
        BENTOML_HOME=str(tmp / "bentoml_home"),
        BENTOML_DO_NOT_TRACK="True",
        REIRRAD_HOME=str(tmp / "home"),
        REIRRAD_BUNDLE_PATH=str(bundle_file),
        REIRRAD_BUNDLE_SHA256=digest,
        REIRRAD_AUDIT_DB=str(tmp / "audit.db"),
        REIRRAD_AUDIT_KEY=AUDIT_KEY,
        PYTHONPATH=str(PROJECT_ROOT),
    )
    env.update(extra)
    return env


@contextmanager
def started_server(
    tmp: Path, env: dict[str, str], command: list[str] | None = None, name: str = "server",
    cwd: Path = PROJECT_ROOT,
) -> Iterator[Server]:
    """Start a server without waiting for it (so that several can start at once); stopped on
    exit. ``command`` (with ``{port}`` in it) defaults to ``reirrad serve``'s own."""
    port = free_port()
    if command is None:
        cmd = serve_command("127.0.0.1", port)
    else:
        cmd = [part.format(port=port) for part in command]
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=fo, stderr=fe, start_new_session=True,
        )
    try:
        yield Server(f"http://127.0.0.1:{port}", tmp, out, err, Path(env["REIRRAD_AUDIT_DB"]),
                     proc)
    finally:
        _stop(proc)


def wait_ready(server: Server, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Poll ``/readyz`` until it answers 200; fail with the server's log if it exits or
    does not answer in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.proc.poll() is not None:
            pytest.fail(f"server exited with {server.proc.returncode}:\n{tail(server.stderr)}\n"
                        f"{tail(server.stdout)}")
        try:
            if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"server not ready in {timeout_s:g} s:\n{tail(server.stderr)}")
        time.sleep(POLL_S)


@contextmanager
def running_server(tmp: Path, env: dict[str, str]) -> Iterator[Server]:
    """``reirrad serve``'s server, ready."""
    with started_server(tmp, env) as server:
        wait_ready(server)
        yield server
