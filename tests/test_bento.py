"""A deployable Bento (issue 12 part 3): `reirrad bento build`, then `bentoml serve TAG`.

The end-to-end test builds a Bento from a small bundle file in a temporary ``BENTOML_HOME``
with the command line a user runs, serves it with ``bentoml serve TAG`` (from another folder,
without the checkout on ``PYTHONPATH``), and checks that its answers equal those of
``reirrad serve``'s server on the same bundle, started at the same time as the build. Both
servers start together because start-up dominates (imports and the model's warm-up in each
process). The unit tests store and load the BentoML model directly: its SHA-256 is recorded
and checked, a changed file is refused, and so is a second model source.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import typer
from bentoml._internal.models import ModelStore
from typer.testing import CliRunner

from models.bundle import BundleIntegrityError, sha256_file
from serving.audit import AuditKey, AuditTrail
from serving.bento import (
    BENTO_MODEL_NAME,
    BUNDLE_FILENAME,
    BentoError,
    file_identity,
    load_bento_model,
    registry_identity,
    store_bundle,
)
from serving.bento_cli import register as register_bento
from serving.settings import ServingSettings
from tests.bundle_factory import small_bundle
from tests.cohort_rows import BASE_PATIENT
from tests.serving_server import AUDIT_KEY, server_env, started_server, wait_ready

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bento-test-token-0123456789abcdef"
BUNDLE_N, BUNDLE_TREES, BUNDLE_SEED = 150, 20, 3
"""A small bundle of its own: fitting it is cheaper than the shared default one."""
MODEL_VERSION = f"test-n{BUNDLE_N}-t{BUNDLE_TREES}-s{BUNDLE_SEED}"  # its provenance says so
BUILD_TIMEOUT_S = 300
PACKAGES = ("features", "models", "serving", "training")
IGNORED_DIRS = ("__pycache__",)
VARIABLE_KEYS = ("request_id",)
"""What differs between two servers by design: each call's id."""
HORIZONS = [3, 6, 12, 24, 36, 60]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_usage_reports(monkeypatch):
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "True")


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("bundle") / "bundle.joblib"
    digest = small_bundle(BUNDLE_N, BUNDLE_TREES, BUNDLE_SEED).save(path)
    return path, digest


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without reirrad's or the checkout's settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REIRRAD_", "MLFLOW_")) and k != "PYTHONPATH"}
    env.update(BENTOML_DO_NOT_TRACK="True", **extra)
    return env


@pytest.fixture(scope="module")
def served(tmp_path_factory, bundle_file):
    """(reirrad serve's server, the Bento's server, the Bento's tag, BENTOML_HOME)."""
    path, digest = bundle_file
    tmp = tmp_path_factory.mktemp("bento")
    plain_dir, bento_dir = tmp / "plain", tmp / "bento"
    plain_dir.mkdir()
    bento_dir.mkdir()
    bentoml_home = tmp / "bentoml_home"
    plain_env = server_env(plain_dir, path, digest, REIRRAD_API_TOKENS=TOKEN)
    with started_server(plain_dir, plain_env, name="plain") as plain:
        build = subprocess.run(
            [sys.executable, "-m", "reirrad_cli", "bento", "build", "--bundle", str(path)],
            cwd=tmp, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
            env=_clean_env(BENTOML_HOME=str(bentoml_home), REIRRAD_HOME=str(tmp / "home"),
                           PYTHONPATH=str(ROOT)),
        )
        assert build.returncode == 0, f"bento build failed:\n{build.stdout}\n{build.stderr}"
        tag = build.stdout.strip().splitlines()[-1]
        bento_env = _clean_env(
            BENTOML_HOME=str(bentoml_home),
            REIRRAD_HOME=str(bento_dir / "home"),
            REIRRAD_AUDIT_DB=str(bento_dir / "audit.db"),
            REIRRAD_AUDIT_KEY=AUDIT_KEY,
            REIRRAD_API_TOKENS=TOKEN,
        )
        command = [sys.executable, "-m", "bentoml", "serve", tag, "--host", "127.0.0.1",
                   "--port", "{port}"]
        with started_server(bento_dir, bento_env, command=command, name="bento",
                            cwd=bento_dir) as bento:
            try:
                wait_ready(plain)
                wait_ready(bento)
                yield plain, bento, tag, bentoml_home, build
            finally:  # both stop at once (each then waits for its own)
                for server in (plain, bento):
                    if server.proc.poll() is None:
                        os.killpg(os.getpgid(server.proc.pid), signal.SIGTERM)


def _post(server, route: str, body: dict) -> dict:
    resp = httpx.post(f"{server.base}{route}", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200, f"{route}: {resp.status_code} {resp.text[:500]}"
    return resp.json()


def _comparable(answer: dict) -> dict:
    """An answer without what differs by design: the call's id and where the model came from
    (``source`` is ``file`` under ``reirrad serve --bundle``, ``bento`` from the Bento)."""
    out = {k: v for k, v in answer.items() if k not in VARIABLE_KEYS}
    if isinstance(out.get("model"), dict):
        out["model"] = {k: v for k, v in out["model"].items() if k != "source"}
    return out


@pytest.mark.slow
@pytest.mark.e2e
def test_the_bento_answers_as_reirrad_serve_does(served, bundle_file):
    plain, bento, tag, _, build = served
    _, digest = bundle_file
    assert tag.startswith("reirrad-risk:")
    assert f"bentoml serve {tag}" in build.stderr and f"bentoml containerize {tag}" in build.stderr
    high_risk = {**BASE_PATIENT, "patient_id": "B-2", "gtv_cm3": 80.0, "reirr_dose_gy": 70.0,
                 "preexisting_necrosis": True}
    calls = [
        ("/score", {"patient": BASE_PATIENT, "horizons": HORIZONS, "include_curve": True}),
        ("/score_batch", {"patients": [BASE_PATIENT, high_risk]}),
        ("/explain", {"patient": high_risk, "endpoint": "fatal_haemorrhage"}),
        ("/compare_plans", {"patient": BASE_PATIENT, "plans": [
            {"reirr_dose_gy": 60.0, "reirr_fraction_gy": 2.0, "reirr_fractions_per_day": 1},
            {"reirr_dose_gy": 66.0, "reirr_fraction_gy": 1.2, "reirr_fractions_per_day": 2},
        ]}),
        ("/model_info", {}),
    ]
    for route, body in calls:
        expected, got = _post(plain, route, body), _post(bento, route, body)
        assert _comparable(got) == _comparable(expected), f"{route} differs from reirrad serve"
        if "model" in got:
            assert got["model"]["source"] == "bento"
            assert got["model"]["bundle_sha256_prefix"] == digest[:12]
    info = _post(bento, "/model_info", {})
    assert info["bundle_sha256"] == digest
    # the Bento's calls are audited in its own trail, sealed and intact
    check = AuditTrail(str(bento.audit_db), AuditKey(AUDIT_KEY.encode())).verify()
    assert check.ok and check.n_records >= len(calls), check.problems


@pytest.mark.slow
@pytest.mark.e2e
def test_the_bento_holds_the_code_and_the_model_with_its_hash(served, bundle_file):
    _, _, tag, bentoml_home, _ = served
    path, digest = bundle_file
    name, version = tag.split(":")
    src = bentoml_home / "bentos" / name / version / "src"
    missing = [
        str(f.relative_to(ROOT))
        for package in PACKAGES
        for f in (ROOT / package).rglob("*")
        if f.is_file() and not set(f.relative_to(ROOT).parts) & set(IGNORED_DIRS)
        and not (src / f.relative_to(ROOT)).is_file()
    ]
    assert not missing, f"not in the Bento: {missing}"
    (stored,) = ModelStore(bentoml_home / "models").list(BENTO_MODEL_NAME)
    assert stored.info.metadata["bundle_sha256"] == digest
    assert stored.info.metadata["model_version"] == MODEL_VERSION
    assert sha256_file(stored.path_of(BUNDLE_FILENAME)) == digest == sha256_file(path)


# ------------------------------------------------------------------ the model store, in-process
@pytest.fixture
def stored(tmp_path, bundle_file):
    path, digest = bundle_file
    store = ModelStore(tmp_path / "models")
    bundle = small_bundle(BUNDLE_N, BUNDLE_TREES, BUNDLE_SEED)
    model = store_bundle(path, digest, file_identity(bundle, path), model_store=store)
    return store, model, digest


def test_a_stored_model_loads_with_its_recorded_hash(stored):
    store, model, digest = stored
    loaded = load_bento_model(str(model.tag), ServingSettings(), model_store=store)
    assert loaded.sha256 == digest and loaded.source == "bento"
    assert loaded.version == MODEL_VERSION
    assert model.info.labels["project"] == "reirrad"


def test_a_registered_champion_keeps_its_registry_record(tmp_path, bundle_file):
    """What `reirrad serve` shows of the champion (version, alias, run, data hash) survives
    the trip through the model store's metadata."""
    path, digest = bundle_file
    info = {"model_name": "reirrad-toxicity", "alias": "champion", "version": 7,
            "run_id": "r" * 32, "git_commit": "c" * 40, "data_sha256": "d" * 64,
            "data_rows": "600", "metrics": {"auc": 0.7}, "tracking_uri": "sqlite:///x.db"}
    store = ModelStore(tmp_path / "models")
    model = store_bundle(path, digest, registry_identity(info), model_store=store)
    assert "tracking_uri" not in model.info.metadata  # it may hold a password
    loaded = load_bento_model(str(model.tag), ServingSettings(), model_store=store)
    assert (loaded.name, loaded.version, loaded.alias) == ("reirrad-toxicity", "7", "champion")
    for key in ("version", "alias", "run_id", "git_commit", "data_sha256", "data_rows"):
        assert loaded.info[key] == info[key], key
    assert loaded.info["sha256"] == digest


def test_a_changed_model_file_is_refused(stored):
    store, model, _ = stored
    target = Path(model.path_of(BUNDLE_FILENAME))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="SHA-256"):
        load_bento_model(str(model.tag), ServingSettings(), model_store=store)


def test_a_bento_refuses_a_second_model_source(stored, bundle_file):
    store, model, _ = stored
    settings = ServingSettings(bundle_path=bundle_file[0])
    with pytest.raises(BentoError, match="REIRRAD_BUNDLE_PATH"):
        load_bento_model(str(model.tag), settings, model_store=store)


def test_a_copy_that_differs_from_the_recorded_hash_is_not_stored(tmp_path, bundle_file):
    path, _ = bundle_file
    store = ModelStore(tmp_path / "models")
    bundle = small_bundle(BUNDLE_N, BUNDLE_TREES, BUNDLE_SEED)
    with pytest.raises(BundleIntegrityError, match="nothing stored"):
        store_bundle(path, hashlib.sha256(b"other").hexdigest(), file_identity(bundle, path),
                     model_store=store)
    assert not list((tmp_path / "models").rglob("model.yaml"))


# ------------------------------------------------------------------------------- the command
@pytest.fixture
def bento_cli(env, monkeypatch) -> typer.Typer:
    """`reirrad bento` on a bare Typer app, in a clean environment (conftest's ``env``)."""
    monkeypatch.setenv("BENTOML_HOME", str(env / "bentoml_home"))
    root = typer.Typer()
    register_bento(root)
    return root


def test_build_without_a_champion_exits_2_saying_how_to_get_one(bento_cli, tmp_path, monkeypatch):
    """The registry's answer is faked (an empty MLflow store takes many seconds to create;
    `reirrad serve`'s test uses a real one): the command must turn it into advice."""
    import models.store

    asked = []

    def no_champion(tracking_uri, model_name, alias, dst_dir=None):
        asked.append((tracking_uri, model_name, alias))
        raise models.store.ModelNotFoundError(
            f"no version of model {model_name!r} has the alias {alias!r} in {tracking_uri}"
        )

    monkeypatch.setattr(models.store, "fetch_champion", no_champion)
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    res = runner.invoke(bento_cli, ["bento", "build", "--tracking-uri", uri])
    assert asked == [(uri, "reirrad-toxicity", "champion")]
    assert res.exit_code == 2, res.output
    assert "reirrad train" in res.output and "--bundle" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "bentoml_home" / "bentos").exists()


def test_build_refuses_another_hash_or_no_build_file(bento_cli, tmp_path, bundle_file):
    path, _ = bundle_file
    res = runner.invoke(bento_cli, ["bento", "build", "--bundle", str(path),
                                    "--bundle-sha256", "0" * 64])
    assert res.exit_code == 2 and "SHA-256" in res.output
    res = runner.invoke(bento_cli, ["bento", "build", "--bundle", str(path),
                                    "--bentofile", str(tmp_path / "none.yaml")])
    assert res.exit_code == 2 and "source checkout" in res.output
    assert not (tmp_path / "bentoml_home" / "models").exists()


def test_help_names_the_defaults(bento_cli):
    res = runner.invoke(bento_cli, ["bento", "build", "--help"])
    assert res.exit_code == 0
    for word in ("--bundle", "--tracking-uri", "champion", "SHA-256", "BENTOML_HOME"):
        assert word in res.output
