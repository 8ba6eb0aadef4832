"""The audit trail: one record per call, in a database, chained with a keyed hash and sealed.

Every API call (answered or refused, ``/model_info`` included; health probes excepted) and
every offline ``reirrad score`` adds one record: time, request id, route, HTTP status, caller
(a token id, never the token), the model (name, version, bundle hash prefix), each patient's
key as a keyed hash, a keyed hash of the input, and the outputs without identifiers. Refused
calls carry no patient keys, input hash or outputs: a refusal records that it happened, never
what was sent.

Storage: SQLAlchemy Core on ``REIRRAD_AUDIT_DB``, a SQLite file in WAL mode by default
(``<REIRRAD_HOME>/var/audit.db``) or a PostgreSQL URL when several replicas share one trail.
Appends are serialised across processes by the database itself (SQLite: ``BEGIN IMMEDIATE``;
PostgreSQL: a row lock on the head), so any number of workers extend one chain.

Integrity: record n carries ``mac_n = HMAC(chain_key, canonical JSON of the record, its
sequence number and mac_{n-1})``. A head row holds the last sequence number and mac, sealed
by ``HMAC(chain_key, "head:<seq>:<mac>")``; the record and the new seal are committed in one
transaction, before the API answers. :meth:`AuditTrail.verify` therefore detects a record
edited, inserted, reordered or removed, the last one included (the seal names it). What a
keyed chain cannot see on its own is the whole database rolled back to an earlier sealed
state: ``reirrad audit head`` prints the head for an operator to anchor elsewhere, and
``reirrad audit verify --anchor SEQ:MAC`` proves the trail still contains that state.

Keys: one master key, from ``REIRRAD_AUDIT_KEY`` or a key file kept outside the database
(default ``<REIRRAD_HOME>/var/audit.key``, created once, mode 0600). Separate keys are
derived from it for the chain, for patient keys and for input hashes. The database remembers
the key's fingerprint and refuses another key, so that a misconfigured host never silently
starts a second chain. This replaces the JSON-lines log (``REIRRAD_AUDIT_LOG``,
``--audit-log``) and its ``.salt`` file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

GENESIS_MAC = "0" * 64
"""``prev_mac`` of the first record (and the head's mac before any record)."""
KEY_BYTES = 32
MIN_KEY_CHARS = 16
KEY_FILE_MODE = 0o600
FORMAT_VERSION = "1"
SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for another process's transaction before giving up."""
FORBIDDEN_KEYS = frozenset({"patient_id", "patient_ids", "patient_name", "mrn", "hospital_number"})
"""Field names that must never appear in a record (identifiers)."""
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHAIN_LABEL = b"reirrad-audit-chain"
_SUBJECT_LABEL = b"reirrad-audit-patient-key"
_INPUT_LABEL = b"reirrad-audit-input"
_KEY_ID_LABEL = b"reirrad-audit-key-id"
KEY_ID_CHARS = 16

metadata = MetaData()
meta_table = Table(
    "audit_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)
record_table = Table(
    "audit_record",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", String(40), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("route", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("caller", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("prev_mac", String(64), nullable=False),
    Column("mac", String(64), nullable=False),
)
head_table = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("mac", String(64), nullable=False),
    Column("seal", String(64), nullable=False),
)
HEAD_ID = 1
DENORMALISED = ("ts", "request_id", "route", "status", "caller")
"""Record fields copied into their own columns for queries; verify checks them too."""

# The append's three statements, built once: building them per call (and SQLAlchemy's cache
# key of each new object) cost a tenth of a served /score. Same SQL, same transaction.
_READ_HEAD_FOR_UPDATE = (
    select(head_table.c.seq, head_table.c.mac)
    .where(head_table.c.id == bindparam("head_id"))
    .with_for_update()
)
_INSERT_RECORDS = insert(record_table).values({c.name: bindparam(c.name) for c in record_table.c})
_MOVE_HEAD = (
    update(head_table)
    .where(head_table.c.id == bindparam("head_id"))
    .values(seq=bindparam("new_seq"), mac=bindparam("new_mac"), seal=bindparam("new_seal"))
)


@dataclass(frozen=True)
class _DriverStatement:
    """A statement compiled once for the database's driver, run on its own cursor.

    Why not ``Connection.execute``: in a serving worker the append runs for every call, and
    SQLAlchemy's per-execution work (execution context, parameter processing, result
    wrapping) was about as much CPU as the rest of the commit. The SQL is SQLAlchemy's own,
    compiled for the dialect (``?`` for SQLite, ``%(name)s`` for psycopg), inside the
    transaction SQLAlchemy opened.
    """

    sql: str
    positional: tuple[str, ...] | None

    @classmethod
    def compile(cls, statement, dialect) -> _DriverStatement:
        compiled = statement.compile(dialect=dialect)
        order = getattr(compiled, "positiontup", None)
        return cls(str(compiled), tuple(order) if order is not None else None)

    def params(self, values: Mapping[str, Any]) -> Any:
        if self.positional is None:
            return dict(values)
        return tuple(values[name] for name in self.positional)


class AuditError(RuntimeError):
    """The audit trail cannot be used (key, database); the service fails closed."""


# ------------------------------------------------------------------------------- keys
@dataclass(frozen=True)
class AuditKey:
    """The master key and the keys derived from it (one per purpose)."""

    master: bytes

    def _derive(self, label: bytes) -> bytes:
        return hmac.new(self.master, label, hashlib.sha256).digest()

    @property
    def chain(self) -> bytes:
        return self._derive(_CHAIN_LABEL)

    @property
    def key_id(self) -> str:
        """A fingerprint of the key (safe to store and show)."""
        return hmac.new(self.master, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:KEY_ID_CHARS]

    def patient_key(self, patient_id: str) -> str:
        """Keyed hash of a patient key: stable for one audit key, useless without it."""
        return self.patient_keys([patient_id])[0]

    def patient_keys(self, patient_ids: Sequence[str]) -> list[str]:
        """:meth:`patient_key` of each key (the one implementation): the derived key is set up
        once and copied per patient (a batch of a million rows hashes a million keys)."""
        base = hmac.new(self._derive(_SUBJECT_LABEL), digestmod=hashlib.sha256)
        out = []
        for pid in patient_ids:
            mac = base.copy()
            mac.update(pid.strip().encode("utf-8"))
            out.append(mac.hexdigest())
        return out

    def input_mac(self, data: bytes) -> str:
        """Keyed hash of a request's input (inputs have little entropy: a plain hash of them
        could be reversed by trying every plausible patient)."""
        return hmac.new(self._derive(_INPUT_LABEL), data, hashlib.sha256).hexdigest()

    def input_mac_file(self, path: str | os.PathLike[str], block: int = 1 << 20) -> str:
        """:meth:`input_mac` of a file's bytes, read in blocks (a registry need not fit in
        memory)."""
        mac = hmac.new(self._derive(_INPUT_LABEL), digestmod=hashlib.sha256)
        with open(path, "rb") as fh:
            while data := fh.read(block):
                mac.update(data)
        return mac.hexdigest()


def _create_key_file(path: Path) -> None:
    """Write a new random key at ``path`` atomically, unless one is there already."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, KEY_FILE_MODE)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(KEY_BYTES) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic, and fails if another process made one first
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_audit_key(secret: str | None, key_file: str | os.PathLike[str]) -> AuditKey:
    """The key from ``secret`` (``REIRRAD_AUDIT_KEY``) or from ``key_file`` (created once)."""
    if secret:
        if len(secret) < MIN_KEY_CHARS:
            raise AuditError(f"REIRRAD_AUDIT_KEY is too short (at least {MIN_KEY_CHARS} chars)")
        return AuditKey(secret.encode("utf-8"))
    path = Path(key_file)
    if not path.exists():
        _create_key_file(path)
    try:
        value = path.read_text().strip()
    except OSError as err:
        raise AuditError(f"audit key file {path} cannot be read: {err.strerror}") from err
    if len(value) < MIN_KEY_CHARS:
        raise AuditError(f"audit key file {path} holds no usable key")
    return AuditKey(value.encode("utf-8"))


# --------------------------------------------------------------------------- database
def database_url(value: str) -> str:
    """``REIRRAD_AUDIT_DB`` as a SQLAlchemy URL: a URL as given (``postgresql://`` uses
    psycopg 3), anything else a path to a SQLite file."""
    if "://" not in value:
        return f"sqlite:///{Path(value).expanduser().resolve()}"
    for prefix in ("postgresql://", "postgres://"):
        if value.startswith(prefix):
            return "postgresql+psycopg://" + value[len(prefix):]
    return value


def redacted_url(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

        # SQLAlchemy's recipe for real transactions on pysqlite: the driver's own BEGIN is
        # switched off and ours takes the write lock up front (BEGIN IMMEDIATE), so that two
        # processes cannot both read the same head and append after it.
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # a committed record survives power loss
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def canonical_json(obj: Any) -> str:
    """The one serialisation the macs are computed over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def _walk_keys(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _walk_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_keys(v)


def identifier_fields(entry: Mapping[str, Any]) -> list[str]:
    """Forbidden identifier field names found anywhere in ``entry``."""
    return sorted(set(_walk_keys(dict(entry))) & FORBIDDEN_KEYS)


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class AuditRecord:
    """What one call leaves in the trail (before sequence number and macs)."""

    request_id: str
    route: str
    status: int
    caller: str
    model: dict[str, Any] | None = None
    patient_keys: list[str] = field(default_factory=list)
    input_mac: str | None = None
    outputs: dict[str, Any] | None = None
    ts: str = field(default_factory=now_utc)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "request_id": self.request_id,
            "route": self.route,
            "status": int(self.status),
            "caller": self.caller,
            "model": self.model,
            "patient_keys": list(self.patient_keys),
            "input_mac": self.input_mac,
            "outputs": self.outputs,
        }


@dataclass(frozen=True)
class Head:
    """The sealed head of the chain: what an operator anchors elsewhere."""

    seq: int
    mac: str
    seal: str

    @property
    def anchor(self) -> str:
        return f"{self.seq}:{self.mac}"


@dataclass
class AuditCheck:
    """The result of :meth:`AuditTrail.verify`."""

    n_records: int = 0
    head: Head | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditTrail:
    """Appends sealed, chained records to the audit database; verifies and reads them."""

    def __init__(self, url: str, key: AuditKey) -> None:
        self.url = database_url(url)
        self.key = key
        self._chain_key = key.chain
        try:
            self.engine = _make_engine(self.url)
            dialect = self.engine.dialect
            self._read_head = _DriverStatement.compile(_READ_HEAD_FOR_UPDATE, dialect)
            self._insert = _DriverStatement.compile(_INSERT_RECORDS, dialect)
            self._move_head = _DriverStatement.compile(_MOVE_HEAD, dialect)
            metadata.create_all(self.engine)
            self._initialise()
        except AuditError:
            raise
        except Exception as err:  # any driver error: say where, not a driver traceback
            raise AuditError(
                f"audit database {redacted_url(self.url)} unavailable: "
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            ) from err

    def _seal(self, seq: int, mac: str) -> str:
        return hmac.new(self._chain_key, f"head:{seq}:{mac}".encode(), hashlib.sha256).hexdigest()

    def _mac(self, body: str) -> str:
        return hmac.new(self._chain_key, body.encode("utf-8"), hashlib.sha256).hexdigest()

    def _initialise(self) -> None:
        """Record the key's fingerprint and create the head (once, whoever comes first)."""
        with self.engine.begin() as conn:
            rows = dict(conn.execute(select(meta_table.c.name, meta_table.c.value)).all())
            if "key_id" in rows and rows["key_id"] != self.key.key_id:
                raise AuditError(
                    f"the audit key does not match {redacted_url(self.url)} (key "
                    f"{self.key.key_id} here, {rows['key_id']} there): refusing to start "
                    "a second chain; set REIRRAD_AUDIT_KEY or REIRRAD_AUDIT_KEY_FILE"
                )
            try:
                with conn.begin_nested():
                    if "key_id" not in rows:
                        conn.execute(
                            insert(meta_table),
                            [{"name": "key_id", "value": self.key.key_id},
                             {"name": "format", "value": FORMAT_VERSION}],
                        )
                    if conn.execute(select(head_table.c.id)).first() is None:
                        conn.execute(
                            insert(head_table).values(
                                id=HEAD_ID, seq=0, mac=GENESIS_MAC,
                                seal=self._seal(0, GENESIS_MAC),
                            )
                        )
            except IntegrityError:
                pass  # another process initialised it at the same moment

    # ----------------------------------------------------------------------- writing
    def patient_key(self, patient_id: str) -> str:
        return self.key.patient_key(patient_id)

    def patient_keys(self, patient_ids: Sequence[str]) -> list[str]:
        return self.key.patient_keys(patient_ids)

    def input_mac(self, data: bytes) -> str:
        return self.key.input_mac(data)

    def input_mac_file(self, path: str | os.PathLike[str]) -> str:
        return self.key.input_mac_file(path)

    def append(self, record: AuditRecord) -> int:
        """Add ``record`` and move the sealed head, in one transaction; return its number."""
        return self.append_many([record])[-1]

    def append_many(self, records: Sequence[AuditRecord]) -> list[int]:
        """Add ``records`` in order and move the sealed head once, in one transaction."""
        entries = [r.as_dict() for r in records]
        for entry in entries:
            bad = identifier_fields(entry)
            if bad:
                raise ValueError(f"audit record carries identifier field(s) {bad}; hash them")
        with self.engine.begin() as conn:
            cur = conn.connection.cursor()
            try:
                cur.execute(self._read_head.sql, self._read_head.params({"head_id": HEAD_ID}))
                head = cur.fetchone()
                if head is None:
                    raise AuditError("the audit database has no head row")
                seq, prev, rows = int(head[0]), head[1], []
                for entry in entries:
                    seq += 1
                    body = canonical_json(entry | {"seq": seq, "prev_mac": prev})
                    mac = self._mac(body)
                    rows.append({"seq": seq, "body": body, "prev_mac": prev, "mac": mac,
                                 **{k: entry[k] for k in DENORMALISED}})
                    prev = mac
                cur.executemany(self._insert.sql, [self._insert.params(r) for r in rows])
                cur.execute(
                    self._move_head.sql,
                    self._move_head.params({"new_seq": seq, "new_mac": prev,
                                            "new_seal": self._seal(seq, prev),
                                            "head_id": HEAD_ID}),
                )
            finally:
                cur.close()
        return [r["seq"] for r in rows]

    # ----------------------------------------------------------------------- reading
    def head(self) -> Head:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(head_table.c.seq, head_table.c.mac, head_table.c.seal)
                .where(head_table.c.id == HEAD_ID)
            ).one()
        return Head(int(row.seq), row.mac, row.seal)

    def records(self, last: int | None = None, patient_id: str | None = None) -> list[dict]:
        """Records in order (the last ``last``; only one patient's when ``patient_id``)."""
        query = select(record_table.c.body).order_by(record_table.c.seq.desc())
        if patient_id is not None:
            query = query.where(record_table.c.body.contains(self.patient_key(patient_id)))
        if last:
            query = query.limit(last)
        with self.engine.connect() as conn:
            bodies = [r.body for r in conn.execute(query)]
        return [json.loads(b) for b in reversed(bodies)]

    def verify(self, anchor: str | None = None) -> AuditCheck:
        """Check every record's mac and link, the seal of the head, and an optional anchor.

        ``anchor``: ``"SEQ:MAC"`` as printed by ``reirrad audit head`` at some earlier time; the
        trail must still hold that record with that mac (no rollback past it).
        """
        check = AuditCheck()
        prev_mac, expect_seq = GENESIS_MAC, 1
        anchor_seq, anchor_mac = _parse_anchor(anchor) if anchor else (None, None)
        anchor_seen = False
        with self.engine.connect() as conn:
            head_row = conn.execute(
                select(head_table.c.seq, head_table.c.mac, head_table.c.seal)
                .where(head_table.c.id == HEAD_ID)
            ).first()
            rows = conn.execute(select(record_table).order_by(record_table.c.seq))
            for row in rows:
                check.n_records += 1
                check.problems.extend(self._check_row(row, expect_seq, prev_mac))
                if anchor_seq is not None and int(row.seq) == anchor_seq:
                    anchor_seen = True
                    if row.mac != anchor_mac:
                        check.problems.append(
                            f"record {row.seq}: differs from the anchor: the trail was "
                            "rewritten after the anchor was taken"
                        )
                prev_mac, expect_seq = row.mac, int(row.seq) + 1
        last_seq = expect_seq - 1
        if head_row is None:
            check.problems.append("the sealed head is missing")
        else:
            check.head = Head(int(head_row.seq), head_row.mac, head_row.seal)
            if not hmac.compare_digest(head_row.seal, self._seal(int(head_row.seq), head_row.mac)):
                check.problems.append("the head's seal is invalid: the head was altered")
            if int(head_row.seq) != last_seq or head_row.mac != prev_mac:
                check.problems.append(
                    f"the sealed head names record {head_row.seq} but the trail ends at record "
                    f"{last_seq}: records were removed from (or added to) the end"
                )
        if anchor_seq is not None and not anchor_seen:
            check.problems.append(
                f"anchor record {anchor_seq} is not in the trail: it was rolled back or truncated"
            )
        return check

    def _check_row(self, row, expect_seq: int, prev_mac: str) -> list[str]:
        n = int(row.seq)
        problems = []
        if n != expect_seq:
            problems.append(
                f"record {n}: expected record {expect_seq} here: records were removed or inserted"
            )
        if row.prev_mac != prev_mac:
            problems.append(
                f"record {n}: does not follow the record before it: a record was removed, "
                "inserted or reordered"
            )
        if not hmac.compare_digest(row.mac, self._mac(row.body)):
            problems.append(f"record {n}: its content does not match its mac: it was edited")
        try:
            body = json.loads(row.body)
        except json.JSONDecodeError:
            return [*problems, f"record {n}: its content is not JSON"]
        if body.get("seq") != n or body.get("prev_mac") != row.prev_mac:
            problems.append(f"record {n}: its number or link was changed")
        changed = [k for k in DENORMALISED if body.get(k) != getattr(row, k)]
        if changed:
            problems.append(f"record {n}: column(s) {changed} were edited")
        bad = identifier_fields(body)
        if bad:
            problems.append(f"record {n}: identifier field(s) {bad}")
        if any(not _HEX64.match(str(k)) for k in body.get("patient_keys", [])):
            problems.append(f"record {n}: a patient key is not a keyed hash")
        return problems

    def dispose(self) -> None:
        self.engine.dispose()


Done = Callable[[int | None, BaseException | None], None]
"""How the writer thread reports one record: its number, or the error that kept it out."""


def _settle(future: asyncio.Future, seq: int | None, err: BaseException | None) -> None:
    if future.cancelled():  # the caller went away; its record is committed all the same
        return
    if err is not None:
        future.set_exception(err)
    else:
        future.set_result(seq)


class GroupCommitWriter:
    """One writer thread commits every record queued since its last commit in one transaction
    (group commit, as databases do for their own logs); callers wait for their own record.

    A durable commit costs an fsync (milliseconds on a busy disk) and appends are serialised
    by the chain, so committing one record per transaction would cap a worker at one call per
    fsync. The service's event loop awaits :meth:`commit` (a future settled by the writer
    thread: no worker thread borrowed per call, no lock handed around); threads use
    :meth:`append`. Either returns only once the record is committed, and raises what kept it
    out (the gate then answers 503: fail closed).
    """

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail
        self._cond = threading.Condition()
        self._queue: list[tuple[AuditRecord, Done]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="reirrad-audit-writer",
                                        daemon=True)
        self._thread.start()

    def _submit(self, record: AuditRecord, done: Done) -> None:
        with self._cond:
            if self._closed:
                raise AuditError("the audit writer is closed")
            self._queue.append((record, done))
            self._cond.notify()

    async def commit(self, record: AuditRecord) -> int:
        """Commit ``record`` (possibly with others); its number once it is durable."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._submit(record, lambda seq, err: loop.call_soon_threadsafe(_settle, future, seq,
                                                                        err))
        return await future

    def append(self, record: AuditRecord) -> int:
        """:meth:`commit` for a thread: blocks until ``record`` is committed."""
        finished = threading.Event()
        box: dict[str, Any] = {}

        def done(seq: int | None, err: BaseException | None) -> None:
            box.update(seq=seq, err=err)
            finished.set()

        self._submit(record, done)
        finished.wait()
        if box["err"] is not None:
            raise box["err"]
        return int(box["seq"])

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            try:
                seqs = self.trail.append_many([record for record, _ in batch])
            except BaseException as err:  # every caller of this batch learns it failed
                for _, done in batch:
                    _report(done, None, err)
            else:
                for (_, done), seq in zip(batch, seqs, strict=True):
                    _report(done, seq, None)


def _report(done: Done, seq: int | None, err: BaseException | None) -> None:
    """Tell one caller; a caller that cannot hear any more (its event loop closed at shutdown)
    must not stop the writer for the others."""
    with contextlib.suppress(RuntimeError):
        done(seq, err)


def _parse_anchor(anchor: str) -> tuple[int, str]:
    seq, _, mac = anchor.partition(":")
    if not seq.isdigit() or not _HEX64.match(mac):
        raise ValueError("an anchor is SEQ:MAC as printed by `reirrad audit head`")
    return int(seq), mac


# ------------------------------------------------------------------ what is recorded
def risk_summary(risks: Sequence[Any]) -> dict[str, dict[str, list[float]]]:
    """``{endpoint: {"<h>": [cif, lower, upper]}}`` at the requested horizons (no curves)."""
    return {
        r.endpoint: {
            f"{h:g}": [c, lo, hi]
            for h, c, lo, hi in zip(r.horizons_months, r.cif, r.lower, r.upper, strict=True)
        }
        for r in risks
    }


def score_outputs(scores: Sequence[Any]) -> dict[str, Any]:
    """What a scoring call returned, per patient in request order, without identifiers."""
    return {
        "results": [
            {"risks": risk_summary(s.risks), "n_assumed": len(s.assumed),
             "n_warnings": len(s.warnings)}
            for s in scores
        ]
    }
