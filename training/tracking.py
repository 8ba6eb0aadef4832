"""MLflow plumbing: which store, is it there, one run per training job, what is logged.

The store is checked *before* any training, with retries off and a short timeout, so an
unreachable server fails in seconds instead of after an hour of bootstrap. A run that raises
(an error or Ctrl-C) is ended as FAILED with the reason as a tag.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlflow
from features.paths import checkout_root, mlflow_dir
from mlflow import MlflowClient
from models.store import SQLITE_PREFIX, resolve_tracking_uri

CHECK_TIMEOUT_S = 5
ARTIFACTS_DIRNAME = "artifacts"
ERROR_TAG = "reirrad.error"
MAX_TAG_CHARS = 5000
TRACKED_PACKAGES = (
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "scikit-survival",
    "xgboost",
    "statsmodels",
    "joblib",
    "pydantic",
    "mlflow",
    "ray",
)
GIT_TIMEOUT_S = 5


class TrackingUnavailableError(RuntimeError):
    """The MLflow tracking store cannot be reached or opened."""


def artifact_location(uri: str) -> str | None:
    """Artifacts next to a sqlite database (``<db dir>/artifacts``); servers decide their own."""
    if uri.startswith(SQLITE_PREFIX):
        db = Path(uri[len(SQLITE_PREFIX) :])
        return (db.parent / ARTIFACTS_DIRNAME).resolve().as_uri()
    return None


@contextlib.contextmanager
def _fast_fail_http() -> Iterator[None]:
    """No retries and a short timeout while probing (MLflow retries for minutes by default)."""
    keys = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(CHECK_TIMEOUT_S),
    }
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def connect(tracking_uri: str | None = None) -> tuple[str, MlflowClient]:
    """Resolve the URI, check the store answers, and make it MLflow's current store.

    Raises :class:`TrackingUnavailableError` with the URI and the cause.
    """
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(SQLITE_PREFIX):
        db = Path(uri[len(SQLITE_PREFIX) :])
        if db.parent == mlflow_dir().resolve():
            db.parent.mkdir(parents=True, exist_ok=True)
        if not db.parent.is_dir():
            raise TrackingUnavailableError(
                f"MLflow tracking store {uri}: the folder {db.parent} does not exist"
            )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        with _fast_fail_http():
            client.search_experiments(max_results=1)
    except Exception as err:  # MLflow raises many types (MlflowException, requests, sqlalchemy)
        raise TrackingUnavailableError(
            f"MLflow tracking store {uri} is unreachable ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:300] if str(err) else ''}); nothing was trained"
        ) from err
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri, client


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, creating it with its artifact location if needed."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri))


@contextlib.contextmanager
def tracked_run(
    client: MlflowClient, experiment_id: str, run_name: str, tags: dict[str, str]
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED, or FAILED with the reason, whatever happens."""
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
    try:
        yield run
    except BaseException as err:
        reason = f"{type(err).__name__}: {err}"[:MAX_TAG_CHARS]
        with contextlib.suppress(Exception):
            client.set_tag(run.info.run_id, ERROR_TAG, reason)
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def git_commit() -> str:
    """HEAD of the checkout (``-dirty`` if it has uncommitted changes), or ``unknown``."""
    root = checkout_root()
    if root is None:
        return "unknown"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide the numbers."""
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
