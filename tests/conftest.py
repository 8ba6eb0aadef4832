"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

RAY_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ray(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real local Ray head node (`ray start --head --block`), stopped by its process group.

    One per session, shared by every Ray test: Ray keeps the first authentication token a
    process uses, so a second cluster with a token of its own would be refused by this
    process ("InvalidAuthToken"); one cluster also saves its start-up (minutes on a busy host).
    """
    port = _free_port()
    temp_dir = tmp_path_factory.mktemp("ray")
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--num-cpus=2",
        "--node-ip-address=127.0.0.1",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    # Ray >= 2.59 turns token authentication on for local clusters and keeps the token in
    # ~/.ray/auth_token; give this cluster and this process their own token instead, so the
    # test does not depend on what an earlier `ray.init()` left in the home directory.
    token_file = temp_dir / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in RAY_AUTH_ENV}
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)})
    proc = _start_ray(cmd)
    restarts_left = 1
    address = f"127.0.0.1:{port}"
    try:
        import ray

        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                # A loaded host can time out Ray's start-up once: try once more, then fail
                # (a skipped Ray test would hide a broken Ray path).
                output = proc.stdout.read()[-800:]
                if restarts_left == 0:
                    pytest.fail(f"the local Ray cluster did not start: {output}")
                restarts_left -= 1
                proc = _start_ray(cmd)
                continue
            try:
                ray.init(address=address, log_to_driver=False)
                ray.shutdown()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(3)
        yield address
    finally:
        import signal

        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


SERVING_ENV = (
    "REIRRAD_API_TOKENS", "REIRRAD_API_TOKEN_HASHES", "REIRRAD_AUDIT_DB", "REIRRAD_AUDIT_KEY",
    "REIRRAD_AUDIT_KEY_FILE", "REIRRAD_BUNDLE_PATH", "MLFLOW_TRACKING_URI", "REIRRAD_TRACKING_URI",
)
"""Variables a developer's shell may set that would change what a serving command does."""


@pytest.fixture(scope="module")
def app():
    """The `reirrad` serving commands on a bare Typer app, for CliRunner."""
    import typer

    from serving.cli import register

    root = typer.Typer()
    register(root)
    return root


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory) -> Path:
    """A small fitted bundle saved once per module."""
    from tests.bundle_factory import small_bundle

    path = tmp_path_factory.mktemp("bundle") / "bundle.joblib"
    small_bundle().save(path)
    return path


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    """A clean serving environment: none of SERVING_ENV, state under tmp_path/home."""
    for name in SERVING_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REIRRAD_HOME", str(tmp_path / "home"))
    return tmp_path
