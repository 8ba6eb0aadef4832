"""Who may call: bearer tokens checked in constant time, and an optional per-token rate limit.

Tokens are configured as plaintext (``REIRRAD_API_TOKENS``) or as their SHA-256
(``REIRRAD_API_TOKEN_HASHES``), so that a deployment need not store any token in clear. The
service keeps only the hashes: a presented token is hashed once and compared with every
configured hash by ``hmac.compare_digest``, without stopping at a match, so the time taken says
nothing about which token (or how much of one) matched. A caller is named in logs and in the
audit trail by a token id, the first characters of the token's SHA-256, never by the token.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MIN_TOKEN_CHARS = 16
"""Shorter tokens are refused at start-up: they could be guessed."""
TOKEN_ID_CHARS = 12
DEV_TOKEN_BYTES = 32
DEV_TOKEN_FILENAME = "dev_api_token"
DEV_TOKEN_FILE_MODE = 0o600
BEARER = "bearer"
SECONDS_PER_MINUTE = 60.0
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class AuthConfigError(ValueError):
    """The token configuration is unusable (none, too short, malformed hash)."""


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_id(sha256_hex: str) -> str:
    """How a caller is named: ``tok-`` and the first characters of its token's SHA-256."""
    return f"tok-{sha256_hex[:TOKEN_ID_CHARS].lower()}"


def new_token() -> str:
    """A fresh random token (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(DEV_TOKEN_BYTES)


def dev_token(path: str | os.PathLike[str]) -> str:
    """The development token kept at ``path`` (created once, mode 0600), for ``make up``.

    For a developer's own machine: a real deployment sets ``REIRRAD_API_TOKEN_HASHES``.
    """
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DEV_TOKEN_FILE_MODE)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(new_token() + "\n")
    token = p.read_text().strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise AuthConfigError(f"{p}: not a usable token; delete it to make a new one")
    return token


@dataclass(frozen=True)
class TokenSet:
    """The SHA-256 digests of the accepted tokens."""

    digests: tuple[bytes, ...]

    @classmethod
    def from_config(cls, tokens: Iterable[str], hashes: Iterable[str]) -> TokenSet:
        digests = []
        for t in tokens:
            if len(t) < MIN_TOKEN_CHARS:
                raise AuthConfigError(
                    f"REIRRAD_API_TOKENS: a token is shorter than {MIN_TOKEN_CHARS} characters"
                )
            digests.append(hashlib.sha256(t.encode("utf-8")).digest())
        for h in hashes:
            if not _HEX64.match(h):
                raise AuthConfigError("REIRRAD_API_TOKEN_HASHES: expected hex SHA-256 values")
            digests.append(bytes.fromhex(h))
        if not digests:
            raise AuthConfigError(
                "no API token configured: set REIRRAD_API_TOKENS or REIRRAD_API_TOKEN_HASHES "
                "(`make up` creates a development token)"
            )
        return cls(tuple(dict.fromkeys(digests)))

    def identify(self, authorization: str | None) -> str | None:
        """The caller's token id for an ``Authorization`` header value, else None."""
        if not authorization:
            return None
        scheme, _, presented = authorization.partition(" ")
        presented = presented.strip()
        if scheme.lower() != BEARER or not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        matched = False
        for known in self.digests:  # no early exit: the time does not depend on the match
            matched |= hmac.compare_digest(digest, known)
        return token_id(digest.hex()) if matched else None


@dataclass
class RateLimiter:
    """A token bucket per caller: ``per_minute`` requests a minute, in bursts of as many.

    Kept in each worker's memory (no shared store to reach on every call): with W workers each
    allows ``ceil(per_minute / W)``, so that the service as a whole allows about
    ``per_minute``. ``per_minute`` 0 switches it off.
    """

    per_minute: int
    workers: int = 1
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def capacity(self) -> float:
        return float(math.ceil(self.per_minute / max(self.workers, 1)))

    def allow(self, caller: str, now: float | None = None) -> tuple[bool, float]:
        """(allowed, seconds until the next request would be) for one request of ``caller``."""
        if self.per_minute <= 0:
            return True, 0.0
        now = time.monotonic() if now is None else now
        rate = self.capacity / SECONDS_PER_MINUTE
        level, last = self._buckets.get(caller, (self.capacity, now))
        level = min(self.capacity, level + (now - last) * rate)
        if level >= 1.0:
            self._buckets[caller] = (level - 1.0, now)
            return True, 0.0
        self._buckets[caller] = (level, now)
        return False, (1.0 - level) / rate
