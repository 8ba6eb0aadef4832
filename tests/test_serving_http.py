"""End to end: a real `bentoml serve` process with a real small forest bundle.

One server per module (start-up: ~15 s on an idle 2-core host, 40-60 s under shared load). Also
checks that the served model reproduces golden vectors frozen from the same bundle to 1e-9.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from features.config import ENDPOINTS, HORIZONS_MONTHS
from features.pipeline import eqd2
from models.bundle import sha256_file
from serving.audit import hash_patient_key, verify_log
from serving.cli import serve_command
from serving.golden import check_golden, compare_golden, freeze_golden, load_golden
from serving.schemas import PatientScore
from tests.bundle_factory import small_bundle
from tests.cohort_rows import BASE_PATIENT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 180.0  # ~15 s on an idle 2-core host; 40-60 s measured under shared load
STOP_TIMEOUT_S = 20.0
POLL_S = 0.5
SALT = "e2e-salt"
LOG_TAIL_CHARS = 4000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if path.exists() else ""


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server's whole process group; kill it if it does not stop in time."""
    if proc.poll() is not None:
        return
    pgid = os.getpgid(proc.pid)
    os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    bundle_file = tmp / "bundle.joblib"
    digest = small_bundle().save(bundle_file)
    port = _free_port()
    env = dict(os.environ)
    env.update(
        BENTOML_HOME=str(tmp / "bentoml_home"),
        BENTOML_DO_NOT_TRACK="True",
        REIRRAD_BUNDLE_PATH=str(bundle_file),
        REIRRAD_BUNDLE_SHA256=digest,
        REIRRAD_AUDIT_LOG=str(tmp / "audit.jsonl"),
        REIRRAD_AUDIT_SALT=SALT,
        REIRRAD_MAX_BATCH="50",
        PYTHONPATH=str(PROJECT_ROOT),
    )
    out, err = tmp / "server.out", tmp / "server.err"
    cmd = serve_command("127.0.0.1", port)  # the command line `reirrad serve` runs
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(
            cmd, cwd=PROJECT_ROOT, env=env, stdout=fo, stderr=fe, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{_tail(err)}\n{_tail(out)}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in {STARTUP_TIMEOUT_S:g} s:\n{_tail(err)}")
            time.sleep(POLL_S)
        with httpx.Client(base_url=base, timeout=60) as client:
            yield {
                "client": client, "tmp": tmp, "digest": digest, "bundle_file": bundle_file,
                "stderr": err, "stdout": out,
            }
    finally:
        _stop(proc)


def _post(server, route: str, body: dict) -> httpx.Response:
    resp = server["client"].post(route, json=body)
    if resp.status_code >= 500:
        pytest.fail(f"{route}: {resp.status_code} {resp.text}\n{_tail(server['stderr'])}")
    return resp


def test_health_and_model_info(server):
    assert server["client"].get("/livez").status_code == 200
    info = _post(server, "/model_info", {}).json()
    assert info["bundle_sha256"] == server["digest"]
    assert info["model"]["bundle_sha256_prefix"] == server["digest"][:12]
    assert info["metrics"] == small_bundle().metrics
    assert info["training_data_sha256"] == small_bundle().provenance["training_data_sha256"]
    assert info["max_batch"] == 50 and info["grid_max_months"] == 60


def test_score_one_patient(server):
    patient = BASE_PATIENT | {"patient_id": "E2E-1", "primary_fraction_gy": None}
    resp = _post(server, "/score", {"patient": patient, "include_curve": True})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert resp.headers["x-request-id"] == body["request_id"]
    result = PatientScore.model_validate(body["result"])
    assert [r.endpoint for r in result.risks] == list(ENDPOINTS)
    assert result.risks[0].horizons_months == [float(h) for h in HORIZONS_MONTHS]
    assert len(result.risks[0].curve.cif) == 60
    assert result.assumed and "2 Gy" in result.assumed[0]
    assert "tumour control" in body["disclaimer"] and "synthetic" in body["disclaimer"]
    assert body["model"]["bundle_sha256_prefix"] == server["digest"][:12]


def test_score_batch_and_compare_plans(server):
    patients = [BASE_PATIENT | {"patient_id": f"E2E-B{i}", "gtv_cm3": 10.0 * (i + 1)}
                for i in range(3)]
    resp = _post(server, "/score_batch", {"patients": patients, "horizons": [12, 24]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["n_patients"] == 3
    assert [r["patient_id"] for r in body["results"]] == ["E2E-B0", "E2E-B1", "E2E-B2"]
    plans = [
        {"reirr_dose_gy": 54, "reirr_fraction_gy": 1.8, "reirr_fractions_per_day": 1},
        {"reirr_dose_gy": 70, "reirr_fraction_gy": 2.5, "reirr_fractions_per_day": 1,
         "label": "escalated"},
    ]
    resp = _post(server, "/compare_plans", {"patient": patients[0], "plans": plans})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert "tumour control" in body["note"]
    got = body["plans"]
    assert [p["plan_index"] for p in got] == [0, 1] and got[1]["label"] == "escalated"
    for p, plan in zip(got, plans, strict=True):
        assert p["reirr_eqd2_gy"] == pytest.approx(
            float(eqd2(plan["reirr_dose_gy"], plan["reirr_fraction_gy"]))
        )
    assert got[1]["reirr_eqd2_gy"] > got[0]["reirr_eqd2_gy"]


def test_bad_requests_are_4xx_naming_the_field(server):
    bad = BASE_PATIENT | {"patient_id": "E2E-X", "gtv_cm3": -1}
    resp = _post(server, "/score", {"patient": bad})
    assert 400 <= resp.status_code < 500
    detail = resp.json()["detail"]
    assert detail[0]["loc"] == ["patient", "gtv_cm3"]
    assert "-1" not in json.dumps(detail), "input values are not echoed"
    # one bad record refuses the whole batch
    batch = [BASE_PATIENT | {"patient_id": "OK-1"}, bad]
    resp = _post(server, "/score_batch", {"patients": batch})
    assert 400 <= resp.status_code < 500
    assert resp.json()["detail"][0]["loc"] == ["patients", 1, "gtv_cm3"]
    # horizons beyond the grid, batch too large, unknown field
    resp = _post(server, "/score", {"patient": BASE_PATIENT, "horizons": [12, 61]})
    assert resp.status_code == 400 and resp.json()["detail"][0]["loc"] == ["horizons"]
    many = [BASE_PATIENT | {"patient_id": f"M{i}"} for i in range(51)]
    resp = _post(server, "/score_batch", {"patients": many})
    assert resp.status_code == 400 and resp.json()["detail"][0]["loc"] == ["patients"]
    resp = _post(server, "/score", {"patient": BASE_PATIENT | {"hospital_number": "123"}})
    assert resp.status_code == 400
    assert resp.json()["detail"][0]["loc"] == ["patient", "hospital_number"]


def test_served_model_reproduces_golden_vectors(server, tmp_path):
    golden_dir = freeze_golden(small_bundle(), tmp_path / "golden", server["digest"])
    assert check_golden(small_bundle(), golden_dir) == []
    patients, expected = load_golden(golden_dir)
    body = {
        "patients": [p.model_dump() for p in patients],
        "horizons": expected["horizons_months"],
    }
    resp = _post(server, "/score_batch", body)
    assert resp.status_code == 200, resp.text
    scores = [PatientScore.model_validate(r) for r in resp.json()["results"]]
    assert compare_golden(expected, scores, tol=1e-9) == []
    # the check can fail: a perturbed expectation is reported
    pid = patients[0].patient_id
    expected["cif"][pid]["mucosal_necrosis"]["24"] += 1e-6
    assert len(compare_golden(expected, scores, tol=1e-9)) == 1


def test_every_answered_call_is_audited_without_raw_keys(server):
    log = server["tmp"] / "audit.jsonl"
    _post(server, "/score", {"patient": BASE_PATIENT | {"patient_id": "AUDIT-ME"}})
    text = log.read_text()
    assert "AUDIT-ME" not in text and "E2E-B0" not in text
    assert hash_patient_key("AUDIT-ME", SALT.encode()) in text
    check = verify_log(log)
    assert check.ok, check.problems
    assert sha256_file(server["bundle_file"]) == server["digest"]


def test_server_logs_carry_no_patient_keys(server):
    """Refused and answered requests alike: the logs never show a patient key or value."""
    too_long = "LOG-SECRET-" + "x" * 64
    for changes in (
        {"patient_id": "LOG-SECRET", "age_years": 7},
        {"patient_id": too_long},
        {"patient_id": "LOG-SECRET-2"},
    ):
        _post(server, "/score", {"patient": BASE_PATIENT | changes})
    logs = "".join(server[k].read_text(errors="replace") for k in ("stderr", "stdout"))
    assert "LOG-SECRET" not in logs
