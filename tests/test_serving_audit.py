"""The audit trail: keyed hashes only, a sealed chain, tamper detection, concurrent writers,
SQLite by default and PostgreSQL when its server binaries are installed."""

from __future__ import annotations

import hashlib
import hmac
import json
import multiprocessing
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from serving.audit import (
    _SUBJECT_LABEL,
    GENESIS_MAC,
    AuditError,
    AuditKey,
    AuditRecord,
    AuditTrail,
    database_url,
    load_audit_key,
)
from tests.serving_server import free_port

RAW_ID = "NPC-2019-0042"
KEY = AuditKey(b"unit-test-audit-key-0123456789")
PG_BIN = Path("/usr/local/bin")
PG_START_TIMEOUT_S = 60


def _record(i: int = 0, pid: str = RAW_ID, trail: AuditTrail | None = None) -> AuditRecord:
    keys = [trail.patient_key(pid)] if trail else []
    return AuditRecord(
        request_id=f"req{i}", route="/score", status=200, caller="tok-abc",
        model={"name": "m", "version": "3"}, patient_keys=keys,
        input_mac=KEY.input_mac(b"input"), outputs={"results": [{"risks": {"x": {"24": [i]}}}]},
    )


@pytest.fixture
def trail(tmp_path) -> AuditTrail:
    t = AuditTrail(str(tmp_path / "audit.db"), KEY)
    for i in range(5):
        t.append(_record(i, f"P{i}", t))
    return t


def _sql(trail: AuditTrail, statement: str, *args) -> None:
    con = sqlite3.connect(trail.url.removeprefix("sqlite:///"))
    with con:
        con.execute(statement, args)
    con.close()


def test_records_hold_keyed_hashes_never_raw_keys(tmp_path):
    t = AuditTrail(str(tmp_path / "audit.db"), KEY)
    t.append(_record(0, RAW_ID, t))
    t.engine.dispose()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert RAW_ID.encode() not in data and b"patient_id" not in data
    (rec,) = t.records()
    assert rec["patient_keys"] == [KEY.patient_key(RAW_ID)]
    assert KEY.patient_key(RAW_ID) != AuditKey(b"another-key-0123456789").patient_key(RAW_ID)
    assert rec["prev_mac"] == GENESIS_MAC and rec["seq"] == 1
    assert [r["request_id"] for r in t.records(patient_id=RAW_ID)] == ["req0"]
    with pytest.raises(ValueError, match="identifier"):
        t.append(AuditRecord("r", "/score", 200, "c", outputs={"patient_id": RAW_ID}))


def test_an_intact_trail_verifies_and_its_head_is_sealed(trail):
    check = trail.verify()
    assert check.ok, check.problems
    assert check.n_records == 5 and check.head.seq == 5
    assert trail.verify(anchor=trail.head().anchor).ok


def test_an_edited_record_is_detected(trail):
    _sql(trail, "UPDATE audit_record SET body = replace(body, '[2]', '[0]') WHERE seq = 3")
    problems = trail.verify().problems
    assert any("record 3" in p and "edited" in p for p in problems)


def test_an_edited_column_is_detected(trail):
    _sql(trail, "UPDATE audit_record SET status = 500 WHERE seq = 2")
    assert any("record 2" in p for p in trail.verify().problems)


def test_an_inserted_record_is_detected(trail):
    _sql(trail, "UPDATE audit_record SET seq = seq + 100 WHERE seq >= 3")  # make room at 3
    _sql(trail, "UPDATE audit_record SET seq = seq - 99 WHERE seq >= 100")
    _sql(trail, "INSERT INTO audit_record SELECT 3, ts, request_id, route, status, caller, body, "
                "prev_mac, mac FROM audit_record WHERE seq = 2")
    assert not trail.verify().ok


def test_reordered_records_are_detected(trail):
    _sql(trail, "UPDATE audit_record SET seq = -1 WHERE seq = 2")
    _sql(trail, "UPDATE audit_record SET seq = 2 WHERE seq = 3")
    _sql(trail, "UPDATE audit_record SET seq = 3 WHERE seq = -1")
    assert any("does not follow" in p for p in trail.verify().problems)


def test_removing_a_middle_or_the_last_record_is_detected(trail):
    _sql(trail, "DELETE FROM audit_record WHERE seq = 5")
    problems = trail.verify().problems
    assert any("names record 5" in p and "ends at record 4" in p for p in problems)
    _sql(trail, "DELETE FROM audit_record WHERE seq = 2")
    assert any("removed" in p for p in trail.verify().problems)


def test_moving_the_head_back_without_the_key_breaks_the_seal(trail):
    _sql(trail, "DELETE FROM audit_record WHERE seq = 5")
    _sql(trail, "UPDATE audit_head SET seq = 4, mac = (SELECT mac FROM audit_record WHERE seq=4)")
    assert any("seal" in p for p in trail.verify().problems)


def _copy_sqlite(src: str, dst: str) -> None:
    """A consistent copy of a WAL-mode database (SQLite's online backup)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def test_a_rollback_is_caught_only_against_an_anchor(tmp_path, trail):
    path = trail.url.removeprefix("sqlite:///")
    earlier = str(tmp_path / "earlier.db")
    _copy_sqlite(path, earlier)
    trail.append(_record(9, "P9", trail))
    anchor = trail.head().anchor
    _copy_sqlite(earlier, path)  # the whole database rolled back to its earlier state
    assert trail.verify().ok  # consistent with itself...
    assert any("anchor" in p for p in trail.verify(anchor=anchor).problems)  # ...not with it


def test_another_key_is_refused_and_key_files_are_private(tmp_path, trail):
    with pytest.raises(AuditError, match="does not match"):
        AuditTrail(trail.url, AuditKey(b"the-wrong-key-0123456789"))
    key_file = tmp_path / "keys" / "audit.key"
    first = load_audit_key(None, key_file)
    assert load_audit_key(None, key_file) == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    explicit = "an-explicit-key-from-env"
    assert load_audit_key(explicit, key_file).master == explicit.encode()
    with pytest.raises(AuditError, match="too short"):
        load_audit_key("short", key_file)
    assert database_url("var/a.db") == f"sqlite:///{Path('var/a.db').resolve()}"
    assert database_url("postgresql://u:p@h/d") == "postgresql+psycopg://u:p@h/d"


def _append_many(url: str, n: int, tag: str) -> None:
    t = AuditTrail(url, KEY)
    for i in range(n):
        t.append(AuditRecord(f"{tag}-{i}", "/score", 200, tag))


def _concurrent_appends_keep_one_chain(url: str) -> None:
    AuditTrail(url, KEY).dispose()  # created once, as `reirrad serve` does before its workers
    n_procs, per_proc = 2, 25
    ctx = multiprocessing.get_context("fork")  # each child opens its own engine
    procs = [ctx.Process(target=_append_many, args=(url, per_proc, f"w{k}"))
             for k in range(n_procs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    check = AuditTrail(url, KEY).verify()
    assert check.ok, check.problems
    assert check.n_records == n_procs * per_proc


def test_two_processes_append_to_one_sqlite_chain(tmp_path):
    url = str(tmp_path / "audit.db")
    _concurrent_appends_keep_one_chain(url)
    mode = sqlite3.connect(url).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


# --------------------------------------------------------------------------- PostgreSQL
def _as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its binaries as `nobody` when we are root."""
    return ["runuser", "-u", "nobody", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres_url():
    if not all((PG_BIN / b).exists() for b in ("postgres", "initdb", "pg_ctl")):
        pytest.skip("PostgreSQL server binaries are not installed")
    base = Path(tempfile.mkdtemp(prefix="reirrad-audit-pg-"))  # reachable by `nobody`
    os.chmod(base, 0o777)
    data, port = base / "data", free_port()
    subprocess.run(
        _as_postgres_user([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "audit"]),
        check=True, capture_output=True, timeout=PG_START_TIMEOUT_S,
    )
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"),
                           "-w", "-o", opts, "start"]),
        check=True, capture_output=True, timeout=PG_START_TIMEOUT_S,
    )
    try:
        yield f"postgresql://audit@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-m", "fast",
                               "stop"]),
            capture_output=True, timeout=PG_START_TIMEOUT_S,
        )
        shutil.rmtree(base, ignore_errors=True)


def test_postgresql_trail_takes_two_writers_and_detects_tampering(postgres_url):
    _concurrent_appends_keep_one_chain(postgres_url)
    t = AuditTrail(postgres_url, KEY)
    with t.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_record WHERE seq = (SELECT max(seq) FROM "
                             "audit_record)")
    problems = t.verify().problems
    assert any("ends at record" in p for p in problems)
    assert json.loads(json.dumps(problems))  # plain strings, printable by the CLI


def test_group_commit_shares_transactions_and_keeps_one_chain(tmp_path):
    import threading
    import time

    from serving.audit import GroupCommitWriter

    trail = AuditTrail(str(tmp_path / "audit.db"), KEY)
    calls = []
    real = trail.append_many

    def slow_append_many(records):  # a slow disk: others arrive while a commit is running
        calls.append(len(records))
        time.sleep(0.02)
        return real(records)

    trail.append_many = slow_append_many
    writer = GroupCommitWriter(trail)
    seqs: list[int] = []
    n_threads, per_thread = 8, 10

    def work(t: int) -> None:
        for i in range(per_thread):
            seqs.append(writer.append(AuditRecord(f"t{t}-{i}", "/score", 200, "c")))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    total = n_threads * per_thread
    assert sorted(seqs) == list(range(1, total + 1))
    assert sum(calls) == total and len(calls) < total  # records shared commits
    check = trail.verify()
    assert check.ok and check.n_records == total

    def failing(records):
        raise RuntimeError("database is locked")

    trail.append_many = failing
    with pytest.raises(RuntimeError, match="locked"):
        writer.append(AuditRecord("x", "/score", 200, "c"))


def test_event_loop_commits_share_transactions_and_failures_reach_each_caller(tmp_path):
    import asyncio
    import time

    from serving.audit import GroupCommitWriter

    trail = AuditTrail(str(tmp_path / "audit.db"), KEY)
    calls = []
    real = trail.append_many
    broken = {"now": False}

    def slow_append_many(records):
        calls.append(len(records))
        time.sleep(0.02)
        if broken["now"]:
            raise OSError("disk full")
        return real(records)

    trail.append_many = slow_append_many
    writer = GroupCommitWriter(trail)

    async def many(n):
        return await asyncio.gather(
            *(writer.commit(AuditRecord(f"r{i}", "/score", 200, "c")) for i in range(n))
        )

    seqs = asyncio.run(many(30))
    assert sorted(seqs) == list(range(1, 31))
    assert sum(calls) == 30 and len(calls) < 30  # records shared commits
    broken["now"] = True

    async def failing():
        return await asyncio.wait_for(asyncio.gather(
            *(writer.commit(AuditRecord(f"x{i}", "/score", 200, "c")) for i in range(3)),
            return_exceptions=True), timeout=10)

    results = asyncio.run(failing())
    assert all(isinstance(r, OSError) for r in results)
    broken["now"] = False
    assert writer.append(AuditRecord("after", "/score", 200, "c")) == 31  # the writer lives on
    writer.close()
    check = trail.verify()
    assert check.ok and check.n_records == 31


def test_patient_keys_of_a_batch_equal_each_keys_own_hash():
    """Against the construction spelt out (HMAC-SHA256 under the key derived for patients, of
    the stripped UTF-8 key): the trail's stored hashes, and the search by patient, depend on
    it staying the same."""
    ids = [RAW_ID, " padded ", "ü-é", "B0000001", RAW_ID]
    derived = hmac.new(KEY.master, _SUBJECT_LABEL, hashlib.sha256).digest()
    expected = [hmac.new(derived, i.strip().encode("utf-8"), hashlib.sha256).hexdigest()
                for i in ids]
    assert KEY.patient_keys(ids) == expected
    assert [KEY.patient_key(i) for i in ids] == expected
    assert KEY.patient_keys([]) == []
    other = AuditKey(b"another-key-0123456789")
    assert other.patient_keys(ids) != KEY.patient_keys(ids)
