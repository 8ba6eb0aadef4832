"""Two server workers extend one audit chain; the per-token rate limit answers 429."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serving.audit import AuditKey, AuditTrail
from tests.bundle_factory import small_bundle
from tests.cohort_rows import BASE_PATIENT
from tests.serving_server import AUDIT_KEY, running_server, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUSY_TOKEN = "workers-busy-token-0123456789abcdef"
LIMITED_TOKEN = "workers-limited-token-0123456789ab"
RATE_PER_MINUTE = 60
N_CALLS = 24
N_THREADS = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    bundle_file = tmp / "bundle.joblib"
    digest = small_bundle().save(bundle_file)
    env = server_env(
        tmp, bundle_file, digest,
        REIRRAD_API_TOKENS=f"{BUSY_TOKEN},{LIMITED_TOKEN}",
        REIRRAD_WORKERS="2",
        REIRRAD_RATE_LIMIT=str(RATE_PER_MINUTE),
    )
    with running_server(tmp, env) as srv:
        yield srv


def test_two_workers_append_to_one_sealed_chain(server):
    def call(i: int) -> int:
        body = {"patient": BASE_PATIENT | {"patient_id": f"W{i}"}, "horizons": [24]}
        return httpx.post(f"{server.base}/score", json=body, timeout=120,
                          headers={"Authorization": f"Bearer {BUSY_TOKEN}"}).status_code

    with ThreadPoolExecutor(N_THREADS) as pool:
        statuses = list(pool.map(call, range(N_CALLS)))
    assert statuses == [200] * N_CALLS
    check = AuditTrail(str(server.audit_db), AuditKey(AUDIT_KEY.encode())).verify()
    assert check.ok, check.problems
    assert check.n_records >= N_CALLS
    workers = set(re.findall(r"\[entry_service:reirrad-risk:(\d+)\].*path=/score", server.logs()))
    assert workers == {"1", "2"}, "both workers answered"


def test_the_rate_limit_answers_429_per_token(server):
    headers = {"Authorization": f"Bearer {LIMITED_TOKEN}"}
    with httpx.Client(base_url=server.base, timeout=60, headers=headers) as client:
        statuses = [client.post("/model_info", json={}) for _ in range(RATE_PER_MINUTE + 10)]
    codes = [r.status_code for r in statuses]
    assert set(codes) == {200, 429}, codes
    limited = next(r for r in statuses if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    # another token is not held back by this one's limit
    ok = httpx.post(f"{server.base}/model_info", json={}, timeout=60,
                    headers={"Authorization": f"Bearer {BUSY_TOKEN}"})
    assert ok.status_code == 200
