"""The audit log: hashed keys only, an unbroken chain, tamper detection, safe appends."""

from __future__ import annotations

import json
import stat
import threading

import pytest

from serving.audit import (
    GENESIS_HASH,
    AuditLog,
    find_patient,
    hash_patient_key,
    read_entries,
    resolve_salt,
    verify_log,
)
from serving.schemas import EndpointRisk, ModelRef, PatientScore

RAW_ID = "NPC-2019-0042"
SALT = b"test-salt"


def _ref() -> ModelRef:
    return ModelRef(
        name="m", version="3", alias="champion", bundle_sha256_prefix="ab12", source="file"
    )


def _score(pid: str, value: float = 0.25) -> PatientScore:
    risks = [
        EndpointRisk(endpoint=e, label=e, horizons_months=[6.0, 24.0], cif=[value / 2, value])
        for e in ("mucosal_necrosis", "fatal_haemorrhage")
    ]
    return PatientScore(patient_id=pid, risks=risks, assumed=[], warnings=["x"])


def test_keys_are_hashed_with_the_salt_and_raw_ids_never_stored(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", SALT)
    log.record_scores("score", "req1", _ref(), [_score(RAW_ID)])
    text = (tmp_path / "audit.jsonl").read_text()
    assert RAW_ID not in text and "patient_id" not in text
    (entry,) = list(read_entries(tmp_path / "audit.jsonl"))
    key = entry["patients"][0]["key_sha256"]
    assert key == hash_patient_key(RAW_ID, SALT)
    assert key != hash_patient_key(RAW_ID, b"another salt")
    assert entry["model"]["version"] == "3" and entry["request_id"] == "req1"
    assert entry["patients"][0]["cif"]["mucosal_necrosis"] == {"6": 0.125, "24": 0.25}
    assert entry["prev_sha256"] == GENESIS_HASH


def test_entries_with_identifier_fields_are_refused(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl", SALT)
    with pytest.raises(ValueError, match="identifier"):
        log.append({"request_id": "r", "patients": [{"patient_id": RAW_ID}]})
    assert not (tmp_path / "a.jsonl").exists() or (tmp_path / "a.jsonl").read_text() == ""


def test_chain_verifies_and_detects_tampering(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, SALT)
    for i in range(4):
        log.record_scores("score", f"r{i}", _ref(), [_score(f"P{i}", 0.1 * (i + 1))])
    check = verify_log(path)
    assert check.ok and check.n_entries == 4
    lines = path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["patients"][0]["cif"]["mucosal_necrosis"]["24"] = 0.0
    lines[1] = json.dumps(edited, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    bad = verify_log(path)
    assert not bad.ok and any("line 3" in p and "chain" in p for p in bad.problems)
    path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # a line removed
    assert not verify_log(path).ok


def test_find_patient_needs_the_salt(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, SALT)
    log.record_scores("score", "r1", _ref(), [_score("A")])
    log.record_scores("score_batch", "r2", _ref(), [_score("B"), _score("A")])
    assert [e["request_id"] for e in find_patient(path, "A", SALT)] == ["r1", "r2"]
    assert find_patient(path, "A", b"wrong") == []


def test_salt_file_is_created_once_and_private(tmp_path):
    log_path = tmp_path / "var" / "audit.jsonl"
    first = resolve_salt(None, log_path)
    assert resolve_salt(None, log_path) == first and len(first) >= 32
    mode = stat.S_IMODE((tmp_path / "var" / "audit.jsonl.salt").stat().st_mode)
    assert mode == 0o600
    assert resolve_salt("from-env", log_path) == b"from-env"


def test_concurrent_appends_keep_every_line_and_the_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    logs = [AuditLog(path, SALT) for _ in range(2)]  # two writers, as two workers would be
    n_threads, per_thread = 4, 15

    def work(t: int) -> None:
        for i in range(per_thread):
            logs[t % 2].record_scores("score", f"t{t}-{i}", _ref(), [_score(f"P{t}-{i}")])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    check = verify_log(path)
    assert check.ok, check.problems
    assert check.n_entries == n_threads * per_thread
