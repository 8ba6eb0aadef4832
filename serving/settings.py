"""The service's configuration, read from environment variables in one typed place.

Environment variables (all optional):

``REIRRAD_BUNDLE_PATH``
    Serve this model bundle file instead of the registered champion (tests, air-gapped use).
``REIRRAD_BUNDLE_SHA256``
    Expected SHA-256 of that file; a bundle that differs is refused at start-up.
``REIRRAD_TRACKING_URI`` (else ``MLFLOW_TRACKING_URI``)
    MLflow tracking/registry URI to load the champion from (None: the project default).
``REIRRAD_MODEL_NAME`` / ``REIRRAD_MODEL_ALIAS``
    Registered model name and alias (``reirrad-toxicity`` / ``champion``).
``REIRRAD_AUDIT_LOG``
    Path of the append-only JSON-lines audit log (``<REIRRAD_HOME>/var/audit.jsonl``; never
    resolved from the working directory, see :mod:`features.paths`).
``REIRRAD_AUDIT_SALT``
    Secret salt of the patient-key hash. Without it, a random salt is created once in
    ``<audit log>.salt`` (mode 0600) so that hashes stay comparable across restarts.
``REIRRAD_MAX_BATCH``
    Largest batch ``/score_batch`` accepts (1000).
``REIRRAD_MAX_PLANS``
    Most dose plans ``/compare_plans`` accepts (20).
``REIRRAD_WORKERS``
    Server worker processes (1: the forest is CPU-bound and the reference host has 2 cores;
    each worker holds its own copy of the model). Read when the service module is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from features.paths import var_dir

DEFAULT_MODEL_NAME: Final[str] = "reirrad-toxicity"
DEFAULT_MODEL_ALIAS: Final[str] = "champion"
AUDIT_LOG_FILENAME: Final[str] = "audit.jsonl"
DEFAULT_MAX_BATCH: Final[int] = 1000
DEFAULT_MAX_PLANS: Final[int] = 20
DEFAULT_WORKERS: Final[int] = 1

ENV_BUNDLE_PATH: Final[str] = "REIRRAD_BUNDLE_PATH"
ENV_BUNDLE_SHA256: Final[str] = "REIRRAD_BUNDLE_SHA256"
ENV_TRACKING_URI: Final[str] = "REIRRAD_TRACKING_URI"
ENV_MLFLOW_TRACKING_URI: Final[str] = "MLFLOW_TRACKING_URI"
ENV_MODEL_NAME: Final[str] = "REIRRAD_MODEL_NAME"
ENV_MODEL_ALIAS: Final[str] = "REIRRAD_MODEL_ALIAS"
ENV_AUDIT_LOG: Final[str] = "REIRRAD_AUDIT_LOG"
ENV_AUDIT_SALT: Final[str] = "REIRRAD_AUDIT_SALT"
ENV_MAX_BATCH: Final[str] = "REIRRAD_MAX_BATCH"
ENV_MAX_PLANS: Final[str] = "REIRRAD_MAX_PLANS"
ENV_WORKERS: Final[str] = "REIRRAD_WORKERS"


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise ValueError(f"{name}={raw!r}: expected a positive integer") from err
    if value < 1:
        raise ValueError(f"{name}={raw!r}: expected a positive integer")
    return value


def default_audit_log() -> Path:
    """``<REIRRAD_HOME>/var/audit.jsonl``, resolved when asked (REIRRAD_HOME may change)."""
    return var_dir() / AUDIT_LOG_FILENAME


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


@dataclass(frozen=True)
class ServingSettings:
    """Where the model comes from, where calls are audited, and the request size limits."""

    bundle_path: Path | None = None
    bundle_sha256: str | None = None
    tracking_uri: str | None = None
    model_name: str = DEFAULT_MODEL_NAME
    model_alias: str = DEFAULT_MODEL_ALIAS
    audit_log: Path = field(default_factory=default_audit_log)
    audit_salt: str | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    max_plans: int = DEFAULT_MAX_PLANS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServingSettings:
        """Read the settings from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        bundle = _text(env, ENV_BUNDLE_PATH)
        return cls(
            bundle_path=Path(bundle) if bundle else None,
            bundle_sha256=_text(env, ENV_BUNDLE_SHA256),
            tracking_uri=_text(env, ENV_TRACKING_URI) or _text(env, ENV_MLFLOW_TRACKING_URI),
            model_name=_text(env, ENV_MODEL_NAME) or DEFAULT_MODEL_NAME,
            model_alias=_text(env, ENV_MODEL_ALIAS) or DEFAULT_MODEL_ALIAS,
            audit_log=Path(audit) if (audit := _text(env, ENV_AUDIT_LOG)) else default_audit_log(),
            audit_salt=_text(env, ENV_AUDIT_SALT),
            max_batch=_positive_int(env, ENV_MAX_BATCH, DEFAULT_MAX_BATCH),
            max_plans=_positive_int(env, ENV_MAX_PLANS, DEFAULT_MAX_PLANS),
        )


def service_workers(env: Mapping[str, str] | None = None) -> int:
    """Number of server worker processes (``REIRRAD_WORKERS``, default 1)."""
    return _positive_int(os.environ if env is None else env, ENV_WORKERS, DEFAULT_WORKERS)
