"""Bearer tokens (plaintext or hashed, compared in constant time) and the per-token rate limit."""

from __future__ import annotations

import hashlib
import stat

import pytest

from serving.auth import (
    MIN_TOKEN_CHARS,
    AuthConfigError,
    RateLimiter,
    TokenSet,
    dev_token,
    token_id,
)
from serving.gate import _is_json, _reason

TOKEN = "a-long-enough-token-0123456789"
OTHER = "another-long-token-9876543210"


def test_tokens_and_their_hashes_identify_callers_by_token_id_only():
    tokens = TokenSet.from_config([TOKEN], [hashlib.sha256(OTHER.encode()).hexdigest().upper()])
    caller = tokens.identify(f"Bearer {TOKEN}")
    assert caller == token_id(hashlib.sha256(TOKEN.encode()).hexdigest())
    assert TOKEN not in caller and caller.startswith("tok-")
    assert tokens.identify(f"bearer {OTHER}") is not None  # the scheme is case-insensitive
    for header in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}", "Bearer",
                   f"Bearer {TOKEN} extra", "Bearer \udcff"):
        assert tokens.identify(header) is None, header


def test_unusable_token_configurations_are_refused():
    with pytest.raises(AuthConfigError, match="no API token"):
        TokenSet.from_config([], [])
    with pytest.raises(AuthConfigError, match="shorter"):
        TokenSet.from_config(["x" * (MIN_TOKEN_CHARS - 1)], [])
    with pytest.raises(AuthConfigError, match="SHA-256"):
        TokenSet.from_config([], ["not-a-hash"])


def test_the_rate_limit_refills_over_time_per_caller():
    limiter = RateLimiter(per_minute=6, workers=2)  # 3 per minute in each of two workers
    assert [limiter.allow("a", now=0.0)[0] for _ in range(4)] == [True, True, True, False]
    allowed, wait = limiter.allow("a", now=0.0)
    assert not allowed and wait == pytest.approx(20.0)
    assert limiter.allow("b", now=0.0)[0]  # another caller has its own bucket
    assert limiter.allow("a", now=21.0)[0] and not limiter.allow("a", now=21.0)[0]
    assert all(RateLimiter(per_minute=0).allow("a")[0] for _ in range(100))


def test_the_development_token_is_made_once_and_private(tmp_path):
    path = tmp_path / "var" / "dev_api_token"
    token = dev_token(path)
    assert dev_token(path) == token and len(token) >= MIN_TOKEN_CHARS
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_content_types_and_log_reasons():
    assert _is_json("application/json") and _is_json("Application/JSON; charset=UTF-8")
    for bad in ("text/plain", "application/json; charset=latin-1", "", "application/jsonx"):
        assert not _is_json(bad), bad
    body = (b'{"error": "x", "detail": [{"type": "extra_forbidden", "loc": ["patient", '
            b'"SECRET"]}, {"type": "missing", "loc": ["patient", "sex"]}]}')
    reason = _reason(body)
    assert reason == "extra_forbidden@patient,missing@patient.sex" and "SECRET" not in reason
    assert _reason(b"not json") == "unreadable"
