"""Reliability under bad input and faults (issue 12, part 5): the parts that fit CI's budget.

- the running service's OpenAPI document fuzzed with schemathesis, authenticated: no 5xx, every
  error a 4xx with a message, and every call still in an intact audit chain;
- a damaged model artifact (a bundle file with its expected hash, a bundle file without one,
  the registry champion's artifact) stops ``reirrad serve`` before any worker starts: exit 2,
  one ``error:`` line, no traceback, nothing listening;
- a training job killed with SIGKILL, once while its MLflow run is being logged and once while
  it holds the promotion lock, leaves the registry and the champion as they were and the lock
  free, and the next job runs cleanly.

The five-minute load and the server killed under load are too long for CI: they run from
``benchmarks/bench_reliability.py`` (results in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from features.config import ENDPOINTS
from features.timegrid import DEFAULT_GRID
from mlflow import MlflowClient
from serving.audit import AuditKey, AuditTrail
from serving.gate import PUBLIC_PATHS
from tests.bundle_factory import small_bundle
from tests.serving_server import AUDIT_KEY, PROJECT_ROOT, free_port, running_server, server_env
from training import locks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOKEN = "reliability-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FUZZ_EXAMPLES = 20
"""Examples per operation and generation mode: the whole fuzz takes well under a minute."""
FUZZ_MAX_BATCH = 3
FUZZ_MAX_PLANS = 3
"""Small limits, so that generated batches are cheap to score (or refused when too large)."""
CALL_TIMEOUT_S = 60
OPENAPI_DIALECT = "3.1.0"
GRID_MONTHS = int(DEFAULT_GRID.max_months)
"""The served grid's last month (the test bundle's grid)."""
CLI_TIMEOUT_S = 300
MODEL = "reirrad-toxicity"
TRAIN_N = 120
TRAIN_CONFIG = """\
name = "reliability"
n_workers = 1
fit_n_jobs = 1

[forest]
n_estimators = 20
grid = { min_samples_leaf = [15] }

[tuning]
cv_folds = 2
n_estimators = 10

[evaluation]
cv_folds = 3
n_interval_bootstrap = 20

[baselines]
models = ["cox", "published_rule"]

[intervals]
n_resamples = 2
n_estimators = 10

[gate]
min_auc = 0.0
max_ici = 1.0
auc_margin = 1.0
brier_margin = 1.0
min_holdout_events = 1
"""
"""A small job whose gate always passes: the faults, not the model, are under test."""
POLL_S = 0.02
KILL_WAIT_S = 240.0


# ------------------------------------------------------------------------------ fuzzing
@pytest.fixture
def server(tmp_path_factory):
    """A real server for the fuzz test only (stopped before the slower tests start)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    bundle_file = tmp / "bundle.joblib"
    digest = small_bundle().save(bundle_file)
    env = server_env(
        tmp, bundle_file, digest, REIRRAD_API_TOKENS=TOKEN,
        REIRRAD_MAX_BATCH=str(FUZZ_MAX_BATCH), REIRRAD_MAX_PLANS=str(FUZZ_MAX_PLANS),
    )
    with running_server(tmp, env) as srv:
        srv.audited_calls = 0  # type: ignore[attr-defined]
        yield srv


@pytest.fixture
def api_schema(server):
    """The OpenAPI document the running service publishes (it needs a token too).

    BentoML labels it OpenAPI 3.0.2 but writes pydantic's JSON Schema 2020-12 into it (a
    numeric ``exclusiveMinimum``, ``{"type": "null"}``), which is OpenAPI 3.1's dialect; read
    as 3.0, schemathesis cannot generate valid patients. So it is read as what it is, 3.1.
    """
    response = httpx.get(f"{server.base}/docs.json", headers=AUTH, timeout=30)
    server.audited_calls += 1  # fetching the document is a call like any other
    response.raise_for_status()
    document = response.json()
    assert document["openapi"].startswith("3.")
    schema = schemathesis.openapi.from_dict(document | {"openapi": OPENAPI_DIALECT})
    schema.config.update(base_url=server.base)
    return schema


def _check_answer(case, server) -> int:
    """One generated call: answered, or refused with a 4xx that says why; never a 5xx."""
    response = case.call(headers=AUTH, timeout=CALL_TIMEOUT_S)
    if case.path not in PUBLIC_PATHS:  # the health probes are not audited
        server.audited_calls += 1
    status = response.status_code
    assert status < 500, f"{case.method} {case.path}: {status} {response.text[:500]}"
    if status >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"].strip(), response.text[:500]
    return status


def _has_input(operation) -> bool:
    """Whether the operation takes anything a negative example could break."""
    return bool(operation.body) or any(True for _ in operation.iter_parameters())


def _on_contract(drawn: tuple) -> Any:
    """A positive case made to keep the contract's rules that the document does not state
    (once or twice daily, whole-month horizons on the grid, a known endpoint), so that the
    scoring, explanation and report paths are fuzzed too, not only the refusals."""
    case, per_day, horizons, endpoint = drawn
    body = case.body
    if isinstance(body, dict):
        patients = [body.get("patient"), *(body.get("patients") or [])]
        for item in [*patients, *(body.get("plans") or [])]:
            if isinstance(item, dict) and "reirr_fractions_per_day" in item:
                item["reirr_fractions_per_day"] = per_day
        if "horizons" in body:
            body["horizons"] = horizons
        if "endpoint" in body:
            body["endpoint"] = endpoint
    return case


def _strategies(operation) -> list:
    """Positive cases as drawn, positive cases on the contract, and negative cases."""
    positive = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
    if not _has_input(operation):
        return [positive]
    on_contract = st.tuples(
        positive, st.sampled_from((1, 2)),
        st.lists(st.integers(1, GRID_MONTHS), min_size=1, max_size=4),
        st.sampled_from(ENDPOINTS),
    ).map(_on_contract)
    return [positive, on_contract, operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)]


def test_fuzzed_calls_are_answered_or_refused_with_a_message_and_audited(api_schema, server):
    """Every operation of the document, with valid and with invalid inputs (schemathesis's
    positive and negative modes, examples fixed by ``derandomize`` so CI is repeatable)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/score", "/score_batch", "/explain"}
    statuses: Counter[int] = Counter()
    for operation in operations:
        for strategy in _strategies(operation):

            @settings(
                max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def fuzz(case) -> None:
                statuses[_check_answer(case, server)] += 1

            fuzz()
    print(f"fuzz: {sum(statuses.values())} calls, by status {dict(sorted(statuses.items()))}")
    # both sides were reached: answers (scoring, explanations, reports) and refusals
    assert statuses[200] > len(operations) and statuses[400] > len(operations), statuses
    # and every call is in the audit trail, whose chain is intact
    check = AuditTrail(str(server.audit_db), AuditKey(AUDIT_KEY.encode())).verify()
    assert check.ok, check.problems[:5]
    assert check.n_records == server.audited_calls
    assert "Traceback" not in server.logs()


# ------------------------------------------------------------------- damaged model files
def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """`reirrad ...` as a user runs it, in its own process group (killed if it hangs)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reirrad_cli", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        _kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _serve_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REIRRAD_", "MLFLOW_"))}
    env.update(
        PYTHONPATH=str(PROJECT_ROOT), REIRRAD_HOME=str(tmp / "home"),
        REIRRAD_API_TOKENS=TOKEN, REIRRAD_AUDIT_KEY=AUDIT_KEY,
        BENTOML_HOME=str(tmp / "bentoml_home"), BENTOML_DO_NOT_TRACK="True",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )
    env.update(extra)
    return env


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _assert_refused_to_start(res: subprocess.CompletedProcess, port: int, *phrases: str) -> None:
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert len(errors) == 1, res.stderr[-2000:]
    assert all(p in errors[0] for p in phrases), errors[0]
    assert "Traceback" not in res.stderr + res.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)


def test_a_damaged_bundle_file_stops_the_start(tmp_path):
    good = tmp_path / "bundle.joblib"
    digest = small_bundle().save(good)
    changed = tmp_path / "changed.joblib"
    changed.write_bytes(good.read_bytes())
    _flip_a_byte(changed)
    truncated = tmp_path / "truncated.joblib"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    env = _serve_env(tmp_path)
    port = free_port()
    res = _cli(["serve", "--port", str(port), "--bundle", str(changed), "--bundle-sha256", digest],
               env, tmp_path)
    _assert_refused_to_start(res, port, "damaged", "SHA-256", digest[:12])
    res = _cli(["serve", "--port", str(port), "--bundle", str(truncated)], env, tmp_path)
    _assert_refused_to_start(res, port, "damaged", "not a readable model bundle")


# ----------------------------------------------------------------- training killed -9
def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _registry(uri: str) -> tuple[list[int], int | None]:
    """(every registered version, the champion's version or None)."""
    client = _client(uri)
    if not client.search_registered_models(f"name='{MODEL}'"):
        return [], None
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
    aliases = client.get_registered_model(MODEL).aliases
    return versions, (int(aliases["champion"]) if "champion" in aliases else None)


def _runs(uri: str) -> list:
    client = _client(uri)
    exp = client.get_experiment_by_name("reirrad-training")
    return client.search_runs([exp.experiment_id]) if exp else []


def _running_runs(db: Path) -> int:
    """RUNNING runs in the job's store, read straight from SQLite, read-only: an MLflow client
    would create and migrate the schema itself, racing the job that is creating it."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]
    except sqlite3.OperationalError:  # no runs table yet, or locked for a moment
        return 0


def _lock_is_free(uri: str) -> bool:
    try:
        with locks.promotion_lock(uri, model_name=MODEL, timeout_s=0):
            return True
    except locks.PromotionLockTimeout:
        return False


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    config = tmp / "reliability.toml"
    config.write_text(TRAIN_CONFIG)
    uri = f"sqlite:///{tmp}/mlflow.db"
    env = _serve_env(tmp, MLFLOW_TRACKING_URI=uri)
    return {"tmp": tmp, "uri": uri, "env": env, "config": config}


def _start_training(store) -> subprocess.Popen:
    args = ["train", "--synthetic", str(TRAIN_N), "--config", str(store["config"]),
            "--no-progress"]
    return subprocess.Popen(
        [sys.executable, "-m", "reirrad_cli", *args], cwd=store["tmp"], env=store["env"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def _kill_when(proc: subprocess.Popen, ready, what: str) -> None:
    """SIGKILL the job (its main process, as the kernel's OOM killer would) once ``ready()``."""
    deadline = time.monotonic() + KILL_WAIT_S
    try:
        while not ready():
            assert proc.poll() is None, f"the job ended ({proc.returncode}) before {what}"
            assert time.monotonic() < deadline, f"no {what} after {KILL_WAIT_S:g} s"
            time.sleep(POLL_S)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        _kill_group(proc)  # whatever it had started


def test_a_training_job_killed_mid_run_changes_nothing(store):
    uri = store["uri"]
    # 1. killed while its run is being logged (cross-validation under way), no model yet
    job = _start_training(store)
    _kill_when(job, lambda: _running_runs(store["tmp"] / "mlflow.db") > 0, "running MLflow run")
    assert _registry(uri) == ([], None)
    assert _lock_is_free(uri)
    [orphan] = _runs(uri)
    assert orphan.info.status == "RUNNING"  # never ended: MLflow has no heartbeat

    # 2. the next job starts cleanly, registers and promotes
    proc = subprocess.run(
        [sys.executable, "-m", "reirrad_cli", "train", "--synthetic", str(TRAIN_N),
         "--config", str(store["config"]), "--no-progress"],
        cwd=store["tmp"], env=store["env"], capture_output=True, text=True,
        timeout=CLI_TIMEOUT_S * 2,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "champion -> v1" in proc.stdout
    assert _registry(uri) == ([1], 1)
    finished = [r for r in _runs(uri) if r.info.status == "FINISHED"]
    assert len(finished) == 1 and finished[0].info.run_id != orphan.info.run_id

    # 3. killed while it holds the promotion lock: champion re-read, gate under way, the
    #    registry not yet written; the kernel releases the lock with the process
    before = {r.info.run_id for r in _runs(uri)}
    job = _start_training(store)
    _kill_when(job, lambda: not _lock_is_free(uri), "promotion lock held")
    assert _registry(uri) == ([1], 1)
    assert _lock_is_free(uri)
    [killed] = [r for r in _runs(uri) if r.info.run_id not in before]
    assert killed.info.status == "RUNNING"
    store["champion_run"] = finished[0].info.run_id


def test_a_damaged_champion_artifact_stops_the_start(store):
    if "champion_run" not in store:
        pytest.skip("needs the champion the training fault test registers")
    artifact = next(store["tmp"].rglob(f"{store['champion_run']}/artifacts/bundle/*.joblib"))
    original = artifact.read_bytes()
    port = free_port()
    try:
        _flip_a_byte(artifact)
        res = _cli(["serve", "--port", str(port), "--tracking-uri", store["uri"]],
                   store["env"], store["tmp"])
    finally:
        artifact.write_bytes(original)
    _assert_refused_to_start(res, port, "damaged", f"{MODEL} v1", "SHA-256")
