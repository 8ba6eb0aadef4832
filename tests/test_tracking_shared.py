"""A shared tracking server (issue 12 part 4) and the promotion lock (training/locks.py).

MLflow's backend store on a throw-away PostgreSQL cluster (Debian's server binaries, started
in a temporary folder on a free port), used both directly (``postgresql://``) and through an
``mlflow server`` on top of it with a shared artifact root. Two training jobs run at once,
one of each kind, and both must log and register. The promotion lock is checked with real
processes: exclusion and hand-over, a holder killed with SIGKILL, the timeout, and a
promotion that re-reads the champion inside the lock and sees the one made while it waited.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from training.locks import (
    ENV_LOCK_DB,
    PromotionLockUnavailable,
    advisory_key,
    lock_target,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_BIN_DIRS = ("/usr/local/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))
PG_USER_CANDIDATES = ("postgres", "nobody")
PG_START_TIMEOUT_S = 60
SERVER_START_TIMEOUT_S = 300
SERVER_STOP_TIMEOUT_S = 5
CHILD_START_TIMEOUT_S = 120
HANDOVER_TIMEOUT_S = 60
NOT_ACQUIRED_GRACE_S = 1.5
SHORT_LOCK_TIMEOUT_S = 1.0
TIMEOUT_EXIT_CODE = 3
TRAIN_TIMEOUT_S = 840
MODEL_NAME = "reirrad-lock-test"
PG_PASSWORD_FREE_USER = "reirrad"

# One child process that takes the promotion lock, marks each step in files, optionally
# re-reads and moves the champion alias inside the lock, and holds until told to release.
LOCK_CHILD = r"""
import json, os, sys, time
from pathlib import Path
from training.locks import PromotionLockTimeout, promotion_lock

uri, folder, name, model, timeout = sys.argv[1:6]
promote_version = sys.argv[6] if len(sys.argv) > 6 else None
folder = Path(folder)

def mark(event, **extra):
    tmp = folder / f".{name}.{event}.tmp"
    tmp.write_text(json.dumps({"t": time.time(), **extra}))
    tmp.rename(folder / f"{name}.{event}")

mark("trying")
try:
    with promotion_lock(uri, model_name=model, timeout_s=float(timeout)) as lock:
        seen = None
        if promote_version is not None:
            from mlflow import MlflowClient
            from training import registry
            client = MlflowClient(uri, uri)
            current = registry.get_alias(client, model, "champion")  # re-read inside the lock
            seen = None if current is None else int(current.version)
            lock.check()
            registry.promote(client, model, promote_version)
        mark("acquired", seen=seen)
        while not (folder / f"{name}.release").exists():
            time.sleep(0.05)
        lock.check()
    mark("released")
except PromotionLockTimeout:
    mark("timeout")
    sys.exit(int(os.environ["LOCK_CHILD_TIMEOUT_EXIT"]))
"""


# ----------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without the developer's MLflow / reirrad settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "REIRRAD_")) and k != "PYTHONPATH"
    }
    env.update(extra)
    return env


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_for(path: Path, timeout_s: float, procs: list[subprocess.Popen] = ()) -> dict:
    """The JSON in ``path`` once it exists; fails if a watched process dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        for p in procs:
            if p.poll() is not None and not path.exists():
                out = p.stdout.read() if p.stdout else ""
                raise AssertionError(f"{path.name}: process exited {p.returncode}\n{out}")
        time.sleep(0.05)
    raise AssertionError(f"{path.name} did not appear within {timeout_s:g} s")


# --------------------------------------------------------------------------- PostgreSQL
@dataclass
class Postgres:
    port: int

    def uri(self, database: str) -> str:
        return f"postgresql://{PG_PASSWORD_FREE_USER}@127.0.0.1:{self.port}/{database}"


def _pg_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in PG_BIN_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _unprivileged_user() -> pwd.struct_passwd | None:
    for name in PG_USER_CANDIDATES:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    return None


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A throw-away cluster (trust authentication on 127.0.0.1, fsync off) for this module."""
    tools = {name: _pg_tool(name) for name in ("initdb", "pg_ctl", "postgres")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.skip(f"PostgreSQL server binaries not found ({', '.join(missing)}); "
                    "install Debian's postgresql package to run the shared-tracking tests")
    folder = Path(tempfile.mkdtemp(prefix="reirrad-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        user = _unprivileged_user()
        runuser = shutil.which("runuser")
        if user is None or runuser is None:
            pytest.skip("running as root without an unprivileged user or runuser for PostgreSQL")
        os.chown(folder, user.pw_uid, user.pw_gid)
        prefix = [runuser, "-u", user.pw_name, "--"]
    port = _free_port()
    data, log = folder / "data", folder / "postgres.log"
    try:
        init = subprocess.run(
            [*prefix, tools["initdb"], "-D", str(data), "-U", PG_PASSWORD_FREE_USER,
             "--auth=trust", "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, timeout=PG_START_TIMEOUT_S, cwd=folder,
        )
        if init.returncode != 0:
            pytest.skip(f"PostgreSQL cluster cannot be created (initdb): {init.stderr[-500:]}")
        options = (f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c max_connections=60")
        start = subprocess.run(
            [*prefix, tools["pg_ctl"], "-D", str(data), "-l", str(log), "-w",
             "-t", str(PG_START_TIMEOUT_S), "-o", options, "start"],
            capture_output=True, text=True, timeout=PG_START_TIMEOUT_S + 10, cwd=folder,
        )
        if start.returncode != 0:
            pytest.skip(f"PostgreSQL cannot be started: {start.stderr[-300:]}\n{_tail(log)}")
        import psycopg

        with psycopg.connect(Postgres(port).uri("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE mlflow")
        yield Postgres(port)
    finally:
        subprocess.run(
            [*prefix, tools["pg_ctl"], "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True, timeout=PG_START_TIMEOUT_S, cwd=folder, check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class TrackingServer:
    url: str
    backend_uri: str
    artifact_root: Path


@pytest.fixture(scope="module")
def mlflow_server(postgres: Postgres, tmp_path_factory) -> Iterator[TrackingServer]:
    """``mlflow server`` on the PostgreSQL store with a shared artifact root (a folder every
    job can reach, as NFS or object storage would be), artifacts not proxied, so that jobs
    talking to the database directly and jobs talking to the server read the same files."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    artifacts = folder / "artifacts"
    artifacts.mkdir()
    port = _free_port()
    backend = postgres.uri("mlflow")
    log = folder / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", backend,
             "--default-artifact-root", artifacts.as_uri(), "--no-serve-artifacts",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, cwd=folder, env=_clean_env(),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited {proc.returncode}:\n{_tail(log)}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/health", timeout=2) as resp,
            ):
                if resp.status == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"mlflow server not healthy after "
                                     f"{SERVER_START_TIMEOUT_S} s:\n{_tail(log)}")
            time.sleep(0.5)
        yield TrackingServer(url, backend, artifacts)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ------------------------------------------------------------------ lock target (fast)
def test_lock_target_follows_the_store(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_LOCK_DB, raising=False)
    db = tmp_path / "mlflow.db"
    local = lock_target(f"sqlite:///{db}", model_name="m")
    assert local.kind == "file" and Path(local.location).parent == tmp_path
    assert lock_target(str(tmp_path), model_name="m").kind == "file"

    pg = lock_target("postgresql+psycopg://u:secret@db.example:5432/mlflow", model_name="m")
    assert pg.kind == "postgres" and pg.key == advisory_key("m")
    assert "secret" not in pg.describe()

    with pytest.raises(PromotionLockUnavailable, match=ENV_LOCK_DB):
        lock_target("http://tracking.example:5000", model_name="m")
    monkeypatch.setenv(ENV_LOCK_DB, "postgresql://u@db.example/mlflow")
    via_server = lock_target("http://tracking.example:5000", model_name="m")
    assert via_server.kind == "postgres" and via_server.location.endswith("/mlflow")
    monkeypatch.setenv(ENV_LOCK_DB, "sqlite:////tmp/x.db")
    with pytest.raises(PromotionLockUnavailable, match="PostgreSQL"):
        lock_target("http://tracking.example:5000", model_name="m")


def test_advisory_keys_differ_per_model_and_are_stable():
    assert advisory_key("reirrad-toxicity") == advisory_key("reirrad-toxicity")
    assert advisory_key("reirrad-toxicity") != advisory_key("other-model")
    assert -(2**63) <= advisory_key("reirrad-toxicity") < 2**63


# ----------------------------------------------------------------- lock with processes
class LockChildren:
    """Starts lock-holding children and reads their marks."""

    def __init__(self, folder: Path, model: str = MODEL_NAME) -> None:
        self.folder = folder
        self.model = model
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, uri: str, timeout_s: float = HANDOVER_TIMEOUT_S,
              promote: int | None = None, **env: str) -> subprocess.Popen:
        args = [sys.executable, "-c", LOCK_CHILD, uri, str(self.folder), name, self.model,
                str(timeout_s)] + ([str(promote)] if promote is not None else [])
        env = _clean_env(LOCK_CHILD_TIMEOUT_EXIT=str(TIMEOUT_EXIT_CODE), **env)
        proc = subprocess.Popen(args, cwd=self.folder, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def wait(self, name: str, event: str, timeout_s: float = CHILD_START_TIMEOUT_S) -> dict:
        return _wait_for(self.folder / f"{name}.{event}", timeout_s, [self.procs[name]])

    def has(self, name: str, event: str) -> bool:
        return (self.folder / f"{name}.{event}").exists()

    def release(self, name: str) -> None:
        (self.folder / f"{name}.release").touch()

    def finish(self, name: str) -> int:
        proc = self.procs[name]
        out, _ = proc.communicate(timeout=HANDOVER_TIMEOUT_S)
        assert proc.returncode in (0, TIMEOUT_EXIT_CODE, -signal.SIGKILL), out
        return proc.returncode

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _exercise_lock(children: LockChildren, a: tuple[str, dict], b: tuple[str, dict],
                   c: tuple[str, dict], d: tuple[str, dict]) -> None:
    """Four processes, each ``(uri, env)``: ``a`` holds; ``b`` waits for it and ``c`` gives
    up after a short timeout meanwhile; ``a`` releases and ``b`` gets the lock; ``d`` waits
    for ``b``, which is killed with SIGKILL, and ``d`` gets the lock."""
    children.start("a", a[0], **a[1])
    children.wait("a", "acquired")
    children.start("b", b[0], **b[1])
    children.start("c", c[0], timeout_s=SHORT_LOCK_TIMEOUT_S, **c[1])
    children.wait("b", "trying")
    children.wait("c", "timeout")
    assert children.finish("c") == TIMEOUT_EXIT_CODE
    time.sleep(NOT_ACQUIRED_GRACE_S)
    assert not children.has("b", "acquired"), "two holders of the promotion lock at once"

    children.release("a")
    released_a = children.wait("a", "released")
    got_b = children.wait("b", "acquired", HANDOVER_TIMEOUT_S)
    assert got_b["t"] >= released_a["t"] - 0.01
    assert children.finish("a") == 0

    children.start("d", d[0], **d[1])
    children.wait("d", "trying")
    time.sleep(NOT_ACQUIRED_GRACE_S)
    assert not children.has("d", "acquired")
    children.procs["b"].send_signal(signal.SIGKILL)
    children.wait("d", "acquired", HANDOVER_TIMEOUT_S)  # the OS / the server released it
    children.release("d")
    assert children.finish("d") == 0


@pytest.mark.slow
def test_file_lock_serialises_processes_on_a_local_store(tmp_path):
    local = (f"sqlite:///{tmp_path / 'mlflow.db'}", {})
    children = LockChildren(tmp_path)
    try:
        _exercise_lock(children, local, local, local, local)
    finally:
        children.kill_all()


@pytest.mark.slow
@pytest.mark.e2e
def test_advisory_lock_serialises_direct_and_server_jobs(postgres, mlflow_server, tmp_path):
    """A job on the database and a job on the server exclude each other (same database,
    same key); the lock dies with a killed holder; a short wait times out."""
    direct = (mlflow_server.backend_uri, {})
    via_server = (mlflow_server.url, {ENV_LOCK_DB: mlflow_server.backend_uri})
    children = LockChildren(tmp_path)
    try:
        _exercise_lock(children, direct, via_server, via_server, direct)
    finally:
        children.kill_all()


@pytest.mark.slow
@pytest.mark.e2e
def test_promotion_rereads_the_champion_inside_the_lock(mlflow_server, tmp_path):
    """Two promotions that start together: the one that waited sees the champion the other
    one set while it waited, not the one it would have read before taking the lock."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.url, mlflow_server.url)
    model = f"{MODEL_NAME}-reread"
    client.create_registered_model(model)
    experiment = client.create_experiment(f"{model}-runs")
    versions = []
    for _ in range(2):
        run = client.create_run(experiment)
        client.log_text(run.info.run_id, "stand-in model", "model/MLmodel")
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(
            model, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
        versions.append(int(mv.version))
    children = LockChildren(tmp_path, model=model)
    try:
        children.start("first", mlflow_server.backend_uri, promote=versions[0])
        got_first = children.wait("first", "acquired")
        children.start("second", mlflow_server.url, promote=versions[1],
                       **{ENV_LOCK_DB: mlflow_server.backend_uri})
        children.wait("second", "trying")
        time.sleep(NOT_ACQUIRED_GRACE_S)
        assert not children.has("second", "acquired")
        children.release("first")
        got_second = children.wait("second", "acquired", HANDOVER_TIMEOUT_S)
        children.release("second")
        assert children.finish("first") == 0 and children.finish("second") == 0
    finally:
        children.kill_all()
    assert got_first["seen"] is None  # no champion before
    assert got_second["seen"] == versions[0]  # re-read inside the lock
    assert int(client.get_model_version_by_alias(model, "champion").version) == versions[1]
    tags = client.get_registered_model(model).tags
    assert tags.get("previous_champion") == str(versions[0])


# ------------------------------------------------------------- two training jobs at once
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.e2e
def test_two_training_jobs_at_once_on_postgres_directly_and_through_the_server(
    mlflow_server, tmp_path
):
    """``reirrad train`` twice at the same time: one with the tracking URI on PostgreSQL,
    one through ``mlflow server``; both runs finish, log, and register their own version."""
    import mlflow
    from mlflow import MlflowClient
    from training.config import load_config

    cfg = load_config("quick")
    client = MlflowClient(mlflow_server.url, mlflow_server.url)
    # The experiment is created once by the operator on the server, so its artifact
    # location is the shared root (docs/deploy.md). A job on the database that created it
    # would put artifacts under its own working directory (reported to the lead).
    experiment_id = client.create_experiment(cfg.experiment_name)

    jobs = {
        "direct": mlflow_server.backend_uri,
        "server": mlflow_server.url,
    }
    procs = {}
    for name, uri in jobs.items():
        folder = tmp_path / name
        folder.mkdir()
        env = _clean_env(REIRRAD_HOME=str(tmp_path / f"home-{name}"),
                         **{ENV_LOCK_DB: mlflow_server.backend_uri})
        log = (folder / "train.log").open("w")
        procs[name] = (
            subprocess.Popen(
                [str(BIN / "reirrad"), "train", "--synthetic", "120", "--config", "quick",
                 "--no-progress", "--tracking-uri", uri],
                cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
            ),
            folder,
            log,
        )
    for name, (proc, folder, log) in procs.items():
        try:
            proc.wait(timeout=TRAIN_TIMEOUT_S)
        finally:
            log.close()
        assert proc.returncode == 0, f"{name} job failed:\n{_tail(folder / 'train.log', 40)}"

    runs = client.search_runs([experiment_id])
    assert len(runs) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}
    versions = client.search_model_versions(f"name='{cfg.model_name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert {v.run_id for v in versions} == {r.info.run_id for r in runs}
    for run in runs:
        assert "gate_passed" in run.data.metrics and len(run.data.metrics) > 10
        sha = run.data.tags["bundle_sha256"]
        (version,) = [v for v in versions if v.run_id == run.info.run_id]
        assert version.tags["bundle_sha256"] == sha
        local = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="bundle/model_bundle.joblib",
            tracking_uri=mlflow_server.url, dst_path=str(tmp_path / run.info.run_id),
        )
        assert _sha256(Path(local)) == sha
        assert run.info.artifact_uri.startswith(mlflow_server.artifact_root.as_uri())
    for name, (_, folder, _) in procs.items():
        assert sorted(p.name for p in folder.iterdir()) == ["train.log"], (
            f"the {name} job wrote into its working directory"
        )
