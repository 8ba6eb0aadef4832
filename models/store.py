"""Fetch a registered model's bundle from MLflow, for serving (which never imports training).

The model registry alias (``champion`` by default) names the version; the bundle file is the
run artifact ``bundle/model_bundle.joblib``, and its SHA-256 must equal the one recorded on
the model version and on the run when it was logged, or it is refused.

Tracking store resolution (shared with the training job): an explicit URI, else the standard
``MLFLOW_TRACKING_URI``, else the local store ``sqlite:///<REIRRAD_HOME>/mlflow/mlflow.db``
(:mod:`features.paths`), so the job, the service and ``make mlflow-ui`` find the same database
whatever the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.paths import default_tracking_uri

if TYPE_CHECKING:  # the bundle (numpy, pandas, joblib) is loaded only when a model is
    from models.bundle import ModelBundle

MODEL_NAME = "reirrad-toxicity"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
BUNDLE_ARTIFACT_DIR = "bundle"
BUNDLE_FILENAME = "model_bundle.joblib"
SHA_TAG = "bundle_sha256"
SQLITE_PREFIX = "sqlite:///"


class ModelNotFoundError(LookupError):
    """No model version carries the requested alias."""


def absolute_sqlite_uri(uri: str, base: Path) -> str:
    """Make a relative ``sqlite:///rel/path.db`` absolute against ``base``."""
    if not uri.startswith(SQLITE_PREFIX):
        return uri
    path = uri[len(SQLITE_PREFIX) :]
    if path.startswith("/") or path == ":memory:":
        return uri
    return SQLITE_PREFIX + str((base / path).resolve())


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Explicit URI > ``MLFLOW_TRACKING_URI`` > the local default store (see module docstring)."""
    if uri:
        return absolute_sqlite_uri(uri, Path.cwd())
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return absolute_sqlite_uri(env, Path.cwd())
    return default_tracking_uri()


def fetch_champion(
    tracking_uri: str | None = None,
    model_name: str = MODEL_NAME,
    alias: str = CHAMPION_ALIAS,
    dst_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, str, dict[str, Any]]:
    """Download the bundle file behind ``model_name@alias`` without loading it.

    Returns ``(path, expected_sha256, info)``: the local file, the SHA-256 recorded on the
    model version (checked against the run's record, not yet against the file) and what is
    known about it (as :func:`load_champion`, less the file's own ``sha256``). A Bento build
    packs this file; the service loads it. Raises :class:`ModelNotFoundError` when no version
    has the alias and :class:`BundleIntegrityError` when the records disagree.
    """
    from mlflow.exceptions import MlflowException

    import mlflow
    from mlflow import MlflowClient
    from models.bundle import BundleIntegrityError

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        mv = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as err:
        raise ModelNotFoundError(
            f"no version of model {model_name!r} has the alias {alias!r} in {uri}"
        ) from err
    run = client.get_run(mv.run_id)
    expected = mv.tags.get(SHA_TAG) or run.data.params.get(SHA_TAG)
    logged = run.data.params.get(SHA_TAG)
    if not expected or (logged and logged != expected):
        raise BundleIntegrityError(
            f"{model_name} v{mv.version}: the recorded SHA-256 is missing or inconsistent"
        )
    local = mlflow.artifacts.download_artifacts(
        run_id=mv.run_id,
        artifact_path=f"{BUNDLE_ARTIFACT_DIR}/{BUNDLE_FILENAME}",
        dst_path=None if dst_dir is None else str(dst_dir),
        tracking_uri=uri,
    )
    info = {
        "model_name": model_name,
        "alias": alias,
        "version": int(mv.version),
        "run_id": mv.run_id,
        "data_sha256": run.data.params.get("data_sha256"),
        "data_rows": run.data.params.get("data_rows"),
        "git_commit": run.data.tags.get("git_commit"),
        "metrics": dict(run.data.metrics),
        "tracking_uri": uri,
    }
    return Path(local), expected, info


def verify_champion(
    tracking_uri: str | None = None,
    model_name: str = MODEL_NAME,
    alias: str = CHAMPION_ALIAS,
) -> int:
    """Check that the bundle behind ``model_name@alias`` still has its recorded SHA-256;
    return the version.

    The file is fetched into a temporary folder, hashed and removed, never unpickled: what
    ``reirrad serve`` checks before it starts any worker, so that a damaged or replaced
    artifact stops the start with one message instead of workers that fail and respawn.
    Raises :class:`ModelNotFoundError` or :class:`BundleIntegrityError` like
    :func:`load_champion`.
    """
    import tempfile

    from models.bundle import check_sha256

    with tempfile.TemporaryDirectory(prefix="reirrad-verify-") as tmp:
        local, expected, info = fetch_champion(tracking_uri, model_name, alias, tmp)
        artifact = f"{BUNDLE_ARTIFACT_DIR}/{BUNDLE_FILENAME}"
        check_sha256(local, expected, name=f"{model_name} v{info['version']} ({artifact} of "
                                           f"run {info['run_id']})")
    return int(info["version"])


def load_champion(
    tracking_uri: str | None = None,
    model_name: str = MODEL_NAME,
    alias: str = CHAMPION_ALIAS,
    dst_dir: str | os.PathLike[str] | None = None,
) -> tuple[ModelBundle, dict[str, Any]]:
    """The bundle behind ``model_name@alias`` and what is known about it.

    Returns ``(bundle, info)``; info has version, run_id, alias, metrics (the run's),
    data_sha256, data_rows, sha256, git_commit. Raises :class:`ModelNotFoundError` when no
    version has the alias and :class:`BundleIntegrityError` when the file's SHA-256 differs.
    """
    from models.bundle import ModelBundle, sha256_file

    local, expected, info = fetch_champion(tracking_uri, model_name, alias, dst_dir)
    bundle = ModelBundle.load(local, expected_sha256=expected)
    return bundle, {**info, "sha256": sha256_file(local)}


__all__ = [
    "ModelNotFoundError",
    "fetch_champion",
    "load_champion",
    "resolve_tracking_uri",
    "verify_champion",
]
