"""The append-only audit log: one JSON line per scoring call, chained by SHA-256.

Each line records when, which request, which model (version and bundle hash) and what was
returned, for each patient under a keyed hash of the patient key (HMAC-SHA256 with a secret
salt): never the raw ``patient_id``, nor any other identifier. An auditor who holds the salt
can find a patient's calls (:func:`find_patient`); nobody can read keys back from the log.

Every line carries the SHA-256 of the line before it (``prev_sha256``), so that
:func:`verify_log` detects a line edited, removed or inserted after the fact. Lines are written
with one ``write`` on an ``O_APPEND`` descriptor under an exclusive ``flock`` and then
``fsync``-ed, so concurrent workers neither interleave nor break the chain, and a call is not
answered before its line is on disk (the service fails closed when the log cannot be written).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.schemas import EndpointRisk, ModelRef, PatientScore, PlanScore

GENESIS_HASH = "0" * 64
"""``prev_sha256`` of the first line."""
SALT_BYTES = 32
SALT_FILE_SUFFIX = ".salt"
FILE_MODE = 0o600
TAIL_CHUNK = 1 << 16
FORBIDDEN_KEYS = frozenset({"patient_id", "patient_ids", "patient_name", "mrn", "hospital_number"})
"""Field names that must never appear in a log line (identifiers)."""
REQUIRED_KEYS = ("ts", "request_id", "endpoint", "model", "patients", "prev_sha256")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------------------- the key hash
def hash_patient_key(patient_id: str, salt: bytes) -> str:
    """Keyed SHA-256 (HMAC) of a patient key: stable for one salt, useless without it."""
    return hmac.new(salt, patient_id.strip().encode("utf-8"), hashlib.sha256).hexdigest()


def resolve_salt(salt: str | None, log_path: str | os.PathLike[str]) -> bytes:
    """The configured salt, else the one in ``<log>.salt`` (created once, mode 0600)."""
    if salt:
        return salt.encode("utf-8")
    path = Path(f"{log_path}{SALT_FILE_SUFFIX}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(SALT_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
    value = path.read_text().strip()
    if not value:
        raise RuntimeError(f"{path}: empty audit salt file")
    return value.encode("utf-8")


# ---------------------------------------------------------------------------- entries
def risk_summary(risks: Sequence[EndpointRisk]) -> dict[str, dict[str, float]]:
    """``{endpoint: {"<h>": cif}}`` at the requested horizons (curves are not logged)."""
    return {
        r.endpoint: {f"{h:g}": c for h, c in zip(r.horizons_months, r.cif, strict=True)}
        for r in risks
    }


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _last_line(path: Path) -> bytes | None:
    """The file's last non-empty line, read backwards from the end (logs grow large)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        buf = b""
        pos = end
        while pos > 0:
            step = min(TAIL_CHUNK, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf
            stripped = buf.rstrip(b"\n")
            if b"\n" in stripped:
                return stripped.rsplit(b"\n", 1)[1]
        stripped = buf.rstrip(b"\n")
        return stripped or None


class AuditLog:
    """Appends one chained JSON line per scoring call."""

    def __init__(self, path: str | os.PathLike[str], salt: bytes) -> None:
        if not salt:
            raise ValueError("audit salt must not be empty")
        self.path = Path(path)
        self._salt = salt
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def key(self, patient_id: str) -> str:
        return hash_patient_key(patient_id, self._salt)

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Write ``entry`` (plus ``ts`` if absent and ``prev_sha256``); return what was written."""
        _check_no_identifiers(entry)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                last = _last_line(self.path)
                full = {"ts": datetime.now(UTC).isoformat(timespec="microseconds")} | entry
                full["prev_sha256"] = GENESIS_HASH if last is None else _line_hash(last)
                data = (json.dumps(full, sort_keys=True, separators=(",", ":")) + "\n").encode()
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        return full

    def record_scores(
        self, endpoint: str, request_id: str, model: ModelRef, scores: Sequence[PatientScore]
    ) -> dict[str, Any]:
        """Log a /score or /score_batch call (or an offline file scoring)."""
        return self.append(
            {
                "request_id": request_id,
                "endpoint": endpoint,
                "model": model.model_dump(),
                "patients": [
                    {
                        "key_sha256": self.key(s.patient_id),
                        "cif": risk_summary(s.risks),
                        "n_assumed": len(s.assumed),
                        "n_warnings": len(s.warnings),
                    }
                    for s in scores
                ],
            }
        )

    def record_plans(
        self,
        endpoint: str,
        request_id: str,
        model: ModelRef,
        patient_id: str,
        plans: Sequence[PlanScore],
    ) -> dict[str, Any]:
        """Log a /compare_plans call: one patient key, each plan's dose and risks."""
        return self.append(
            {
                "request_id": request_id,
                "endpoint": endpoint,
                "model": model.model_dump(),
                "patients": [{"key_sha256": self.key(patient_id)}],
                "plans": [
                    {
                        "plan_index": p.plan_index,
                        "reirr_dose_gy": p.reirr_dose_gy,
                        "reirr_fraction_gy": p.reirr_fraction_gy,
                        "reirr_fractions_per_day": p.reirr_fractions_per_day,
                        "reirr_eqd2_gy": p.reirr_eqd2_gy,
                        "cumulative_eqd2_gy": p.cumulative_eqd2_gy,
                        "cif": risk_summary(p.risks),
                        "n_warnings": len(p.warnings),
                    }
                    for p in plans
                ],
            }
        )


def _walk_keys(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _walk_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_keys(v)


def _check_no_identifiers(entry: dict[str, Any]) -> None:
    bad = sorted(set(_walk_keys(entry)) & FORBIDDEN_KEYS)
    if bad:
        raise ValueError(f"audit entry carries identifier field(s) {bad}; hash them first")


# ---------------------------------------------------------------------------- reading
def read_entries(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The log's entries in order (a malformed line raises ``ValueError`` with its number)."""
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"line {n}: not JSON ({err.msg})") from err


def find_patient(
    path: str | os.PathLike[str], patient_id: str, salt: bytes
) -> list[dict[str, Any]]:
    """Entries that concern one patient (for an auditor who holds the salt)."""
    key = hash_patient_key(patient_id, salt)
    return [
        e for e in read_entries(path) if any(p.get("key_sha256") == key for p in e["patients"])
    ]


@dataclass
class AuditCheck:
    """The result of :func:`verify_log`."""

    n_entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_log(path: str | os.PathLike[str]) -> AuditCheck:
    """Check every line: JSON, required fields, hashed keys only, and the unbroken chain."""
    check = AuditCheck()
    prev = GENESIS_HASH
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                check.problems.append(f"line {n}: empty line")
                continue
            check.n_entries += 1
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                check.problems.append(f"line {n}: not JSON ({err.msg})")
                prev = _line_hash(line)
                continue
            missing = [k for k in REQUIRED_KEYS if k not in entry]
            if missing:
                check.problems.append(f"line {n}: missing field(s) {missing}")
            if entry.get("prev_sha256") != prev:
                check.problems.append(
                    f"line {n}: chain broken (prev_sha256 does not match line {n - 1}): "
                    "a line was changed, removed or inserted"
                )
            bad = sorted(set(_walk_keys(entry)) & FORBIDDEN_KEYS)
            if bad:
                check.problems.append(f"line {n}: identifier field(s) {bad}")
            for p in entry.get("patients", []):
                if not _HEX64.match(str(p.get("key_sha256", ""))):
                    check.problems.append(f"line {n}: a patient key is not a SHA-256 hash")
            prev = _line_hash(line)
    return check
