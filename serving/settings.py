"""The service's configuration, read from environment variables in one typed place.

Environment variables (all optional unless said otherwise):

``REIRRAD_BUNDLE_PATH``
    Serve this model bundle file instead of the registered champion (tests, air-gapped use).
``REIRRAD_BUNDLE_SHA256``
    Expected SHA-256 of that file; a bundle that differs is refused at start-up.
``REIRRAD_TRACKING_URI`` (else ``MLFLOW_TRACKING_URI``)
    MLflow tracking/registry URI to load the champion from (None: the store in REIRRAD_HOME).
``REIRRAD_MODEL_NAME`` / ``REIRRAD_MODEL_ALIAS``
    Registered model name and alias (``reirrad-toxicity`` / ``champion``).
``REIRRAD_API_TOKENS`` / ``REIRRAD_API_TOKEN_HASHES`` (one of them required)
    Comma-separated bearer tokens, or their hex SHA-256 (so that no plaintext token need be
    stored with the service). Every route but ``/livez``, ``/healthz`` and ``/readyz`` needs
    one. ``make up`` creates a development token when neither is set.
``REIRRAD_RATE_LIMIT``
    Requests per minute allowed per token (empty or 0: no limit). Over it: 429.
``REIRRAD_MAX_BODY_BYTES``
    Largest request body (2 MiB); a larger one is refused with 413 before it is read.
``REIRRAD_AUDIT_DB``
    The audit database: a SQLite file path or URL (default ``<REIRRAD_HOME>/var/audit.db``) or a
    PostgreSQL URL (``postgresql://user:pass@host/db``) for several replicas.
``REIRRAD_AUDIT_KEY`` / ``REIRRAD_AUDIT_KEY_FILE``
    The audit trail's secret key, or the file that holds it (default
    ``<REIRRAD_HOME>/var/audit.key``, created once with mode 0600). Keep it out of the database.
``REIRRAD_MAX_BATCH``
    Largest batch ``/score_batch`` accepts (1000).
``REIRRAD_MAX_PLANS``
    Most dose plans ``/compare_plans`` accepts (20).
``REIRRAD_WORKERS``
    Server worker processes (1: each holds its own copy of the model and the host has 2 cores).
    Read when the service module is imported.

``REIRRAD_AUDIT_LOG`` and ``REIRRAD_AUDIT_SALT`` (the old JSON-lines log and its salt) are no
longer read; setting one is refused at start-up so that nobody believes calls go there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from features.paths import var_dir

DEFAULT_MODEL_NAME: Final[str] = "reirrad-toxicity"
DEFAULT_MODEL_ALIAS: Final[str] = "champion"
AUDIT_DB_FILENAME: Final[str] = "audit.db"
AUDIT_KEY_FILENAME: Final[str] = "audit.key"
DEFAULT_MAX_BATCH: Final[int] = 1000
DEFAULT_MAX_PLANS: Final[int] = 20
DEFAULT_WORKERS: Final[int] = 1
DEFAULT_MAX_BODY_BYTES: Final[int] = 2 * 1024 * 1024
DEFAULT_RATE_LIMIT: Final[int] = 0
"""Requests per minute per token; 0 means no limit."""

ENV_BUNDLE_PATH: Final[str] = "REIRRAD_BUNDLE_PATH"
ENV_BUNDLE_SHA256: Final[str] = "REIRRAD_BUNDLE_SHA256"
ENV_TRACKING_URI: Final[str] = "REIRRAD_TRACKING_URI"
ENV_MLFLOW_TRACKING_URI: Final[str] = "MLFLOW_TRACKING_URI"
ENV_MODEL_NAME: Final[str] = "REIRRAD_MODEL_NAME"
ENV_MODEL_ALIAS: Final[str] = "REIRRAD_MODEL_ALIAS"
ENV_API_TOKENS: Final[str] = "REIRRAD_API_TOKENS"
ENV_API_TOKEN_HASHES: Final[str] = "REIRRAD_API_TOKEN_HASHES"
ENV_RATE_LIMIT: Final[str] = "REIRRAD_RATE_LIMIT"
ENV_MAX_BODY_BYTES: Final[str] = "REIRRAD_MAX_BODY_BYTES"
ENV_AUDIT_DB: Final[str] = "REIRRAD_AUDIT_DB"
ENV_AUDIT_KEY: Final[str] = "REIRRAD_AUDIT_KEY"
ENV_AUDIT_KEY_FILE: Final[str] = "REIRRAD_AUDIT_KEY_FILE"
ENV_MAX_BATCH: Final[str] = "REIRRAD_MAX_BATCH"
ENV_MAX_PLANS: Final[str] = "REIRRAD_MAX_PLANS"
ENV_WORKERS: Final[str] = "REIRRAD_WORKERS"
RETIRED_VARIABLES: Final[dict[str, str]] = {
    "REIRRAD_AUDIT_LOG": ENV_AUDIT_DB,
    "REIRRAD_AUDIT_SALT": ENV_AUDIT_KEY,
}


class SettingsError(ValueError):
    """A setting is malformed or retired; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise SettingsError(f"{name}: expected an integer >= {minimum}") from err
    if value < minimum:
        raise SettingsError(f"{name}: expected an integer >= {minimum}")
    return value


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in env.get(name, "").split(",") if v.strip())


def default_audit_db() -> str:
    return str(var_dir() / AUDIT_DB_FILENAME)


def default_audit_key_file() -> Path:
    return var_dir() / AUDIT_KEY_FILENAME


@dataclass(frozen=True)
class ServingSettings:
    """Where the model comes from, who may call, where calls are audited, the size limits."""

    bundle_path: Path | None = None
    bundle_sha256: str | None = None
    tracking_uri: str | None = None
    model_name: str = DEFAULT_MODEL_NAME
    model_alias: str = DEFAULT_MODEL_ALIAS
    api_tokens: tuple[str, ...] = ()
    api_token_hashes: tuple[str, ...] = ()
    rate_limit_per_minute: int = DEFAULT_RATE_LIMIT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    audit_db: str | None = None
    audit_key: str | None = None
    audit_key_file: Path | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    max_plans: int = DEFAULT_MAX_PLANS

    @property
    def audit_db_resolved(self) -> str:
        """The audit database (the default under REIRRAD_HOME when none is set)."""
        return self.audit_db or default_audit_db()

    @property
    def audit_key_file_resolved(self) -> Path:
        return self.audit_key_file or default_audit_key_file()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServingSettings:
        """Read the settings from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        for old, new in RETIRED_VARIABLES.items():
            if _text(env, old):
                raise SettingsError(
                    f"{old} is no longer read: the audit trail is a database now ({new}); "
                    "see docs/serving.md"
                )
        bundle = _text(env, ENV_BUNDLE_PATH)
        key_file = _text(env, ENV_AUDIT_KEY_FILE)
        return cls(
            bundle_path=Path(bundle) if bundle else None,
            bundle_sha256=_text(env, ENV_BUNDLE_SHA256),
            tracking_uri=_text(env, ENV_TRACKING_URI) or _text(env, ENV_MLFLOW_TRACKING_URI),
            model_name=_text(env, ENV_MODEL_NAME) or DEFAULT_MODEL_NAME,
            model_alias=_text(env, ENV_MODEL_ALIAS) or DEFAULT_MODEL_ALIAS,
            api_tokens=_list(env, ENV_API_TOKENS),
            api_token_hashes=_list(env, ENV_API_TOKEN_HASHES),
            rate_limit_per_minute=_int(env, ENV_RATE_LIMIT, DEFAULT_RATE_LIMIT, minimum=0),
            max_body_bytes=_int(env, ENV_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES),
            audit_db=_text(env, ENV_AUDIT_DB),
            audit_key=_text(env, ENV_AUDIT_KEY),
            audit_key_file=Path(key_file) if key_file else None,
            max_batch=_int(env, ENV_MAX_BATCH, DEFAULT_MAX_BATCH),
            max_plans=_int(env, ENV_MAX_PLANS, DEFAULT_MAX_PLANS),
        )


def service_workers(env: Mapping[str, str] | None = None) -> int:
    """Number of server worker processes (``REIRRAD_WORKERS``, default 1)."""
    return _int(os.environ if env is None else env, ENV_WORKERS, DEFAULT_WORKERS)
