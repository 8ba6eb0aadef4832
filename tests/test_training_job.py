"""The retraining job end to end against temporary MLflow stores.

One module-scoped store is trained once by ``ensure_champion`` (what ``make up`` does: the
quick config on the synthetic cohort) and then shared: the done-when CLI run, the gate both
ways, promotion/rollback and the fault tests all add to it. The Ray test starts a real local
cluster and checks that the same seed gives the same numbers on both engines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import mlflow
from features.schema import INPUT_COLUMNS, CohortValidationError
from features.synthetic import simulate_cohort
from mlflow import MlflowClient
from models.bundle import BundleIntegrityError
from models.store import load_champion
from training.cli import register
from training.config import TrainConfig, load_config
from training.registry import get_alias
from training.tracking import TrackingUnavailableError
from training.train import ensure_champion, train

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
MODEL = "reirrad-toxicity"
TINY = {
    "name": "tiny",
    "n_workers": 1,
    "fit_n_jobs": 1,
    "forest": {"n_estimators": 20, "grid": {"min_samples_leaf": [15]}},
    "tuning": {"cv_folds": 2, "n_estimators": 10},
    "evaluation": {"cv_folds": 3, "n_interval_bootstrap": 20},
    "baselines": {"models": ["cox", "published_rule"]},
    "synthetic": {"n": 200, "seed": 11},
}
TINY_N = 200


def tiny(**gate) -> TrainConfig:
    return TrainConfig.model_validate({**TINY, "gate": gate})


LENIENT = {
    "min_auc": 0.0,
    "max_ici": 1.0,
    "auc_margin": 1.0,
    "brier_margin": 1.0,
    "min_holdout_events": 1,
}
STRICT = {"min_auc": 0.99}


def _env(uri: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["MLFLOW_TRACKING_URI"] = uri
    return env


def _cli(args: list[str], uri: str, cwd: Path, timeout: float = 1200):
    """`reirrad ...` in a fresh process (the console entry module, as a user runs it)."""
    cmd = [sys.executable, "-m", "reirrad_cli", *args]
    return subprocess.run(
        cmd, cwd=cwd, env=_env(uri), capture_output=True, text=True, timeout=timeout
    )


def _cli_here(args: list[str], uri: str | None = None, **env: str):
    """Our commands in this process (no start-up cost), registered as the lead composes them."""
    app = typer.Typer()
    register(app)
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    return CliRunner().invoke(app, args, env=env)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store whose first model was trained the way `make up` trains it."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    info = ensure_champion(uri, progress=False, config="quick")
    return {"uri": uri, "root": root, "first": info}


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _versions(uri: str) -> list[int]:
    return sorted(int(v.version) for v in _client(uri).search_model_versions(f"name='{MODEL}'"))


def _runs(uri: str) -> list:
    client = _client(uri)
    exp = client.get_experiment_by_name("reirrad-training")
    return client.search_runs([exp.experiment_id]) if exp else []


# ---------------------------------------------------------------------------- make up
def test_make_up_model_passes_the_absolute_limits(store):
    info = store["first"]
    assert info.trained and info.version == 1
    client = _client(store["uri"])
    run = client.get_run(info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["gate.passed"] == "true"
    rule = load_config("quick").gate
    for e in rule.endpoints:
        assert run.data.metrics[f"validated/{e}/auc_24m"] >= rule.min_auc
        assert run.data.metrics[f"validated/{e}/ici_24m"] <= rule.max_ici
    assert int(get_alias(client, MODEL, "champion").version) == 1
    # a second call finds the champion and trains nothing
    again = ensure_champion(store["uri"], progress=False, config="quick")
    assert not again.trained and again.version == 1


def test_released_model_reproduces_the_golden_vectors(store):
    """The model `make up` trains reproduces the frozen golden outputs (design.md)."""
    from models.store import load_champion
    from serving.golden import check_golden

    bundle, _ = load_champion(store["uri"])
    mismatches = check_golden(bundle, REPO / "tests" / "fixtures" / "golden" / "release")
    assert mismatches == [], mismatches[:5]


# -------------------------------------------------------------------------- done-when
def test_cli_train_synthetic_300_logs_registers_and_reproduces(store, tmp_path, monkeypatch):
    uri = store["uri"]
    before = _versions(uri)
    proc = _cli(
        ["train", "--synthetic", "300", "--config", "quick", "--no-progress"], uri, tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gate" in proc.stdout
    client = _client(uri)
    version = max(_versions(uri))
    assert version == max(before) + 1
    mv = client.get_model_version(MODEL, str(version))
    assert "challenger" in mv.aliases
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    for e in ("mucosal_necrosis", "fatal_haemorrhage"):
        for h in (6, 12, 24, 36):
            for k in ("auc", "brier", "ici"):
                for model in ("registered", "cox", "xgb", "published_rule"):
                    assert np.isfinite(m[f"cv/{model}/{e}/{k}_{h}m"])
            for k in ("auc", "brier", "ici", "slope"):
                lo, est, hi = (m[f"validated/{e}/{k}_{h}m{s}"] for s in ("_lo", "", "_hi"))
                assert lo <= hi and np.isfinite(est)
            assert m[f"validated/{e}/events_{h}m"] > 0
        assert m[f"validated/{e}/n_patients"] == int(p["development_rows"])
        assert 0.5 < m[f"validated/{e}/auc_24m"] <= 1.0
        assert f"holdout/registered/{e}/auc" in m
    assert p["data_rows"] == "300" and len(p["data_sha256"]) == 64
    assert len(p["bundle_sha256"]) == 64 and mv.tags["bundle_sha256"] == p["bundle_sha256"]
    assert t["git_commit"] and p["pkg.mlflow"] == mlflow.__version__
    assert t["gate.passed"] in ("true", "false") and "gate.reason" in t
    names = {a.path for a in client.list_artifacts(mv.run_id)}
    assert {"metrics.json", "gate.json", "config.json", "plots", "bundle", "evaluation"} <= names
    plots = {a.path for a in client.list_artifacts(mv.run_id, "plots")}
    assert {
        "plots/calibration_mucosal_necrosis.png",
        "plots/decision_curve_fatal_haemorrhage.png",
        "plots/prediction_instability.png",
        "plots/subgroups.png",
    } <= plots
    metrics_json = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path="metrics.json", tracking_uri=uri
            )
        ).read_text()
    )
    assert metrics_json["cv_folds"] == load_config("quick").evaluation.cv_folds
    assert metrics_json["validation"]["n_patients"] == int(p["development_rows"])
    assert "patient_id" not in json.dumps(metrics_json)

    # the pyfunc loads in a fresh process and reproduces the bundle's predictions
    patients = simulate_cohort(25, seed=99)[list(INPUT_COLUMNS)]
    patients_csv = tmp_path / "patients.csv"
    patients.to_csv(patients_csv, index=False)
    script = (
        "import sys, mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model('models:/{MODEL}/{version}')\n"
        "df = pd.read_csv(sys.argv[1])\n"
        "m.predict(df).to_csv(sys.argv[2], index=False)\n"
    )
    out_csv = tmp_path / "pred.csv"
    env = _env(uri)
    env.pop("PYTHONPATH")  # the model carries its own code
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # logged from code: nothing to unpickle
    fresh = subprocess.run(
        [sys.executable, "-c", script, str(patients_csv), str(out_csv)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    served = pd.read_csv(out_csv)
    bundle, info = load_champion(uri, MODEL, "challenger")
    assert info["version"] == version and info["sha256"] == p["bundle_sha256"]
    expected = bundle.predict_horizons(pd.read_csv(patients_csv))
    assert list(served.columns) == list(expected.columns)
    np.testing.assert_allclose(
        served.drop(columns="patient_id").to_numpy(),
        expected.drop(columns="patient_id").to_numpy(),
        rtol=1e-9,
        atol=1e-12,
    )

    # logged from code: the MLmodel names models/pyfunc_model.py and no CloudPickle'd object
    logged = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(MODEL, str(version)),
            dst_path=str(tmp_path / "logged"),
        )
    )
    flavour = mlflow.models.Model.load(str(logged)).flavors["python_function"]
    assert flavour["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert Path(flavour["model_code_path"]).name == "pyfunc_model.py"
    assert "python_model" not in flavour  # the key that would name python_model.pkl
    assert not [p.name for p in logged.rglob("*.pkl*")]
    code = (REPO / "models" / "pyfunc_model.py").read_text()
    assert (logged / "pyfunc_model.py").read_text() == code
    assert {"features", "models"} <= {p.name for p in (logged / "code").iterdir()}
    # ... and still checks the bundle's SHA-256 when loaded: a changed bundle is refused
    bundle_file = logged / flavour["artifacts"]["bundle"]["path"]
    bundle_file.write_bytes(bundle_file.read_bytes() + b"\0")
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading prepends the model's code/
    with pytest.raises(BundleIntegrityError, match="SHA-256"):
        mlflow.pyfunc.load_model(str(logged))


# ------------------------------------------------------------------------------ gate
def test_gate_both_ways_and_rollback(store, tmp_path):
    uri = store["uri"]
    client = _client(uri)
    passed = train(
        synthetic_n=TINY_N,
        config=tiny(**LENIENT),
        tracking_uri=uri,
        progress=False,
        echo=lambda s: None,
    )
    assert passed.gate.passed and not passed.gate.first_model, passed.gate.summary()
    assert int(get_alias(client, MODEL, "champion").version) == passed.version
    version_tags = client.get_model_version(MODEL, str(passed.version)).tags
    assert version_tags["holdout_salt"] == load_config("quick").holdout.salt
    assert float(version_tags["holdout_fraction"]) == load_config("quick").holdout.fraction
    assert set(passed.gate.evidence) == set(load_config("quick").gate.endpoints)
    assert "gate/mucosal_necrosis/auc_diff_lo" in client.get_run(passed.run_id).data.metrics

    failed = train(
        synthetic_n=TINY_N,
        config=tiny(**STRICT),
        tracking_uri=uri,
        progress=False,
        echo=lambda s: None,
    )
    assert not failed.gate.passed
    # a hold-out of about 40 patients at n = 200: too few events to decide either way
    assert failed.gate.status == "insufficient_evidence"
    assert int(get_alias(client, MODEL, "champion").version) == passed.version
    assert int(get_alias(client, MODEL, "challenger").version) == failed.version
    tags = client.get_run(failed.run_id).data.tags
    assert tags["gate.passed"] == "false" and "0.990" in tags["gate.reason"]
    assert client.get_model_version(MODEL, str(failed.version)).tags["gate"] == "fail"
    assert "reirrad promote" in tags["gate.reason"]

    # another hold-out definition: the comparison is refused, whatever the figures
    other = tiny(**LENIENT).model_copy(
        update={"holdout": load_config("quick").holdout.model_copy(update={"salt": "other"})}
    )
    refused = train(
        synthetic_n=TINY_N, config=other, tracking_uri=uri, progress=False, echo=lambda s: None
    )
    assert refused.gate.status == "holdout_mismatch" and not refused.gate.passed
    assert "'other'" in refused.gate.reason
    assert int(get_alias(client, MODEL, "champion").version) == passed.version

    # promotion by hand takes the promotion lock: no usable lock, nothing promoted
    res = _cli_here(["promote", "--version", "1"], uri, REIRRAD_LOCK_DB="mysql://db/x")
    assert res.exit_code == 3 and "PostgreSQL" in res.output
    assert int(get_alias(client, MODEL, "champion").version) == passed.version

    # rollback by hand: every old version is still there
    res = _cli_here(["promote", "--version", "1"], uri)
    assert res.exit_code == 0, res.output
    assert f"was v{passed.version}" in res.output
    assert int(get_alias(client, MODEL, "champion").version) == 1
    assert client.get_registered_model(MODEL).tags["previous_champion"] == str(passed.version)
    assert _cli_here(["promote", "--version", "999"], uri).exit_code != 0


# ---------------------------------------------------------------------------- faults
def test_unreachable_tracking_store_fails_fast():
    start = time.monotonic()
    res = _cli_here(["train", "--synthetic", "100", "--tracking-uri", "http://127.0.0.1:9"])
    assert res.exit_code == 3
    assert "unreachable" in res.output and "127.0.0.1:9" in res.output
    assert "data:" not in res.output  # refused before the data were even read
    with pytest.raises(TrackingUnavailableError):
        train(synthetic_n=100, config=tiny(), tracking_uri="sqlite:////nonexistent/dir/x.db")
    assert time.monotonic() - start < 30


def test_interrupted_run_is_failed_and_nothing_is_registered(store, monkeypatch):
    uri = store["uri"]
    versions = _versions(uri)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("training.train.evaluate", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(
            synthetic_n=TINY_N,
            config=tiny(**LENIENT),
            tracking_uri=uri,
            progress=False,
            echo=lambda s: None,
        )
    latest = max(_runs(uri), key=lambda r: r.info.start_time)
    assert latest.info.status == "FAILED"
    assert "KeyboardInterrupt" in latest.data.tags["reirrad.error"]
    assert _versions(uri) == versions


def test_bad_data_file_is_refused_and_nothing_is_logged(store, tmp_path):
    uri = store["uri"]
    runs, versions = len(_runs(uri)), _versions(uri)
    df = simulate_cohort(120, seed=5)
    df.loc[3, "age_years"] = 150
    df.loc[7, "necrosis_event"] = True
    df.loc[7, "necrosis_months"] = float(df.loc[7, "followup_months"]) + 5
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    res = _cli_here(["train", "--data", str(path), "--config", "quick", "--tracking-uri", uri])
    assert res.exit_code == 2
    assert "row 4" in res.output and "age_years" in res.output
    assert "row 8" in res.output and "necrosis_months" in res.output
    with pytest.raises(CohortValidationError):
        train(data_path=path, config=tiny(), tracking_uri=uri, progress=False)
    assert len(_runs(uri)) == runs and _versions(uri) == versions


# ------------------------------------------------------------------------------- Ray
# the `ray_cluster` fixture (one real local cluster per test session) is in tests/conftest.py


@pytest.mark.e2e
def test_ray_and_local_engines_give_the_same_numbers(ray_cluster, tmp_path):
    cfg = tiny(**LENIENT).model_copy(update={"n_workers": 2})
    runs = {}
    for engine, address in (("local", None), ("ray", ray_cluster)):
        uri = f"sqlite:///{tmp_path}/{engine}.db"
        runs[engine] = train(
            synthetic_n=TINY_N,
            config=cfg,
            tracking_uri=uri,
            progress=False,
            ray_address=address,
            echo=lambda s: None,
        )
        assert runs[engine].engine == engine
    local = _client(f"sqlite:///{tmp_path}/local.db").get_run(runs["local"].run_id).data.metrics
    remote = _client(f"sqlite:///{tmp_path}/ray.db").get_run(runs["ray"].run_id).data.metrics
    assert local.keys() == remote.keys()
    for k in local:
        assert local[k] == pytest.approx(remote[k], rel=1e-12, abs=1e-12, nan_ok=True), k
    assert runs["local"].data_sha256 == runs["ray"].data_sha256
