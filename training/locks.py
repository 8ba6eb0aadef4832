"""The promotion lock: one promotion of a registered model at a time, whatever the store.

Two training jobs that finish together must not both read champion v3, both pass the gate
against it and both move the ``champion`` alias: the last writer would win against a champion
it never compared itself with. MLflow's registry has no compare-and-set on aliases, so the
promote step takes this lock, re-reads the champion inside it, decides, and only then writes.

Which lock (:func:`lock_target`):

- ``lock_db`` (else the environment variable ``REIRRAD_LOCK_DB``), when given: a PostgreSQL
  session advisory lock in that database. Jobs that talk to an MLflow *server*
  (``http(s)://``) must set it to the server's backend database, the same database that
  jobs talking to PostgreSQL directly use, since advisory locks are per database.
- a PostgreSQL tracking URI (``postgresql[+driver]://...``): an advisory lock in it.
- a local store (``sqlite:///path/mlflow.db``, ``file:`` or a plain folder): an exclusive
  ``flock`` on a file beside it (``<db>.promote.<model>.lock``).
- anything else (an HTTP server without ``REIRRAD_LOCK_DB``, MySQL, ...): refused with the
  fix, before any training when the job calls :func:`check_promotion_lock` first.

Both kinds are released by the operating system or the database server when the holder's
process or connection ends, so a job killed in the middle of a promotion never leaves the
lock held. What this does not cover is written in ``docs/deploy.md`` ("What race remains").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import unquote, urlparse

from models.store import MODEL_NAME, SQLITE_PREFIX, resolve_tracking_uri

ENV_LOCK_DB: Final[str] = "REIRRAD_LOCK_DB"
DEFAULT_TIMEOUT_S: Final[float] = 300.0
"""How long a promotion waits for another one; a promotion itself takes seconds."""
CONNECT_TIMEOUT_S: Final[int] = 10
FILE_POLL_S: Final[float] = 0.1
LOCK_NAMESPACE: Final[str] = "reirrad.promotion"
LOCK_FILE_SUFFIX: Final[str] = ".lock"
POSTGRES_SCHEMES: Final[tuple[str, ...]] = ("postgresql", "postgres")
LOCAL_SCHEMES: Final[tuple[str, ...]] = ("", "file")
PSYCOPG_DRIVERS: Final[tuple[str, ...]] = ("psycopg2", "psycopg")
LOCK_NOT_AVAILABLE: Final[str] = "55P03"
"""PostgreSQL's SQLSTATE when ``lock_timeout`` ends a wait."""


class PromotionLockError(RuntimeError):
    """The promotion lock cannot be used (base class)."""


class PromotionLockUnavailable(PromotionLockError):
    """No lock can be derived from the configuration, or its database cannot be reached."""


class PromotionLockTimeout(PromotionLockError, TimeoutError):
    """Another promotion held the lock for longer than the timeout."""


class PromotionLockLost(PromotionLockError):
    """The lock was held but is not any more (its database connection ended)."""


@dataclass(frozen=True)
class LockTarget:
    """Where the lock lives: ``kind`` is ``postgres`` (``location`` a database URI) or
    ``file`` (``location`` a lock file path); ``key`` identifies the model's lock."""

    kind: Literal["postgres", "file"]
    location: str
    key: int
    model_name: str

    def describe(self) -> str:
        """For messages: never the database password."""
        if self.kind == "file":
            return f"file lock {self.location}"
        return f"PostgreSQL advisory lock {self.key} in {_masked(self.location)}"


def advisory_key(model_name: str) -> int:
    """A stable signed 64-bit key per model name (``pg_advisory_lock`` takes a bigint)."""
    digest = hashlib.sha256(f"{LOCK_NAMESPACE}:{model_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _masked(uri: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a database URL: show only its scheme
        return f"{urlparse(uri).scheme}://..."


def _scheme(uri: str) -> str:
    """The URI's scheme without a driver suffix (``postgresql+psycopg2`` -> ``postgresql``)."""
    if re.match(r"^[A-Za-z]:[\\/]", uri):  # a Windows drive letter is not a scheme
        return ""
    return urlparse(uri).scheme.split("+", 1)[0].lower()


def _lock_file_name(model_name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)
    return f"promote.{safe}{LOCK_FILE_SUFFIX}"


def lock_target(
    tracking_uri: str | None = None,
    lock_db: str | None = None,
    model_name: str = MODEL_NAME,
) -> LockTarget:
    """Which lock serialises promotions of ``model_name`` for this store (see module doc).

    Raises :class:`PromotionLockUnavailable` with the fix when none can be derived.
    """
    key = advisory_key(model_name)
    lock_db = lock_db or os.environ.get(ENV_LOCK_DB, "").strip() or None
    if lock_db is not None:
        if _scheme(lock_db) not in POSTGRES_SCHEMES:
            raise PromotionLockUnavailable(
                f"{ENV_LOCK_DB} must be a PostgreSQL database URI (postgresql://user@host/db), "
                f"got a {_scheme(lock_db) or 'plain'} URI"
            )
        return LockTarget("postgres", lock_db, key, model_name)

    uri = resolve_tracking_uri(tracking_uri)
    scheme = _scheme(uri)
    if scheme in POSTGRES_SCHEMES:
        return LockTarget("postgres", uri, key, model_name)
    if uri.startswith(SQLITE_PREFIX):
        db = uri[len(SQLITE_PREFIX) :]
        if db in ("", ":memory:"):
            raise PromotionLockUnavailable("an in-memory sqlite store cannot be shared or locked")
        path = Path(db)
        lock_file = path.with_name(f"{path.name}.{_lock_file_name(model_name)}")
        return LockTarget("file", str(lock_file), key, model_name)
    if scheme in LOCAL_SCHEMES:
        folder = Path(unquote(urlparse(uri).path) if scheme == "file" else uri)
        return LockTarget("file", str(folder / f".{_lock_file_name(model_name)}"), key, model_name)
    raise PromotionLockUnavailable(
        f"no promotion lock for a {scheme}:// tracking store: set {ENV_LOCK_DB} to the "
        "PostgreSQL database behind it (the MLflow server's --backend-store-uri), so that "
        "concurrent training jobs cannot both move the champion alias"
    )


def check_promotion_lock(
    tracking_uri: str | None = None,
    lock_db: str | None = None,
    model_name: str = MODEL_NAME,
) -> LockTarget:
    """Fail fast (before training) when the lock is not configured or not reachable."""
    target = lock_target(tracking_uri, lock_db, model_name)
    if target.kind == "postgres":
        from sqlalchemy import text

        with _pg_connection(target) as conn:
            conn.execute(text("SELECT 1"))
    else:
        folder = Path(target.location).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise PromotionLockUnavailable(
                f"{target.describe()}: the folder {folder} does not exist or is not writable"
            )
    return target


class PromotionLock:
    """A held promotion lock; :meth:`check` just before the alias is written narrows the
    window in which a lock lost with its connection goes unnoticed."""

    def __init__(self, target: LockTarget, checker: Callable[[], None]) -> None:
        self.target = target
        self._checker = checker

    def check(self) -> None:
        """Raise :class:`PromotionLockLost` unless the lock is still held."""
        self._checker()


@contextlib.contextmanager
def promotion_lock(
    tracking_uri: str | None = None,
    lock_db: str | None = None,
    model_name: str = MODEL_NAME,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Iterator[PromotionLock]:
    """Hold the promotion lock of ``model_name`` for the ``with`` block.

    Waits at most ``timeout_s`` (then :class:`PromotionLockTimeout`). Inside the block,
    re-read the champion before deciding: a promotion that finished while this one waited
    has moved it.
    """
    target = lock_target(tracking_uri, lock_db, model_name)
    holder = _postgres_lock if target.kind == "postgres" else _file_lock
    with holder(target, timeout_s) as lock:
        yield lock


# ------------------------------------------------------------------------------ postgres
@contextlib.contextmanager
def _pg_connection(target: LockTarget):
    """One dedicated connection in autocommit (an open transaction would sit idle while the
    lock is held, and servers that end idle transactions would silently drop the lock)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    url = make_url(target.location)
    connect_args = (
        {"connect_timeout": CONNECT_TIMEOUT_S} if url.get_driver_name() in PSYCOPG_DRIVERS else {}
    )
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        try:
            conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except Exception as err:  # noqa: BLE001 - drivers raise many types
            raise PromotionLockUnavailable(
                f"{target.describe()}: cannot connect ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:200] if str(err) else ''})"
            ) from err
        try:
            yield conn
        finally:
            conn.close()
    finally:
        engine.dispose()


@contextlib.contextmanager
def _postgres_lock(target: LockTarget, timeout_s: float) -> Iterator[PromotionLock]:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    key = target.key
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    high, low = unsigned >> 32, unsigned & 0xFFFFFFFF
    with _pg_connection(target) as conn:
        # lock_timeout bounds the wait inside the server (no polling); 0 would mean "forever"
        conn.execute(text(f"SET lock_timeout = {max(1, int(timeout_s * 1000))}"))
        try:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        except DBAPIError as err:
            code = getattr(err.orig, "sqlstate", None) or getattr(err.orig, "pgcode", None)
            if code == LOCK_NOT_AVAILABLE:
                raise PromotionLockTimeout(
                    f"{target.describe()}: still held by another promotion after {timeout_s:g} s"
                ) from err
            raise
        conn.execute(text("SET lock_timeout = 0"))

        def still_held() -> None:
            try:
                held = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND pid = pg_backend_pid() AND objsubid = 1 "
                        "AND classid::bigint = :high AND objid::bigint = :low"
                    ),
                    {"high": high, "low": low},
                ).scalar_one()
            except DBAPIError as err:
                raise PromotionLockLost(f"{target.describe()}: connection lost ({err})") from err
            if not held:
                raise PromotionLockLost(f"{target.describe()}: no longer held")

        try:
            yield PromotionLock(target, still_held)
        finally:
            with contextlib.suppress(DBAPIError):  # a closed connection has released it anyway
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


# ---------------------------------------------------------------------------------- file
@contextlib.contextmanager
def _file_lock(target: LockTarget, timeout_s: float) -> Iterator[PromotionLock]:
    """An exclusive ``flock`` on the lock file, polled until ``timeout_s``.

    Written with ``fcntl`` rather than the ``filelock`` package: all we need is a kernel
    lock that dies with its process, and ``filelock`` may fall back to a marker-file lock
    (which outlives a killed holder and would block every later promotion).
    """
    path = Path(target.location)
    if not path.parent.is_dir():
        raise PromotionLockUnavailable(f"{target.describe()}: folder {path.parent} does not exist")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() >= deadline:
                    raise PromotionLockTimeout(
                        f"{target.describe()}: still held by another promotion after "
                        f"{timeout_s:g} s"
                    ) from err
                time.sleep(FILE_POLL_S)

        def still_held() -> None:
            # flock is tied to this open file description, which only we close
            if os.fstat(fd).st_nlink == 0:
                raise PromotionLockLost(f"{target.describe()}: the lock file was deleted")

        try:
            yield PromotionLock(target, still_held)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
