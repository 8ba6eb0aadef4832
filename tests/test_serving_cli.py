"""The serving commands: offline scoring of a file, audit show/verify, the serve command line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from features.config import ENDPOINTS
from serving.cli import register, serve_command, serve_env
from serving.scoring import score_records
from serving.settings import ServingSettings
from tests.bundle_factory import small_bundle
from tests.cohort_rows import good_cohort

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    root = typer.Typer()
    register(root)
    return root


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "bundle.joblib"
    small_bundle().save(path)
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("REIRRAD_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("REIRRAD_AUDIT_SALT", "cli-salt")
    return tmp_path


def test_score_csv_matches_the_service_code_and_is_audited(app, bundle_path, env):
    src = env / "in.csv"
    cohort = good_cohort(with_outcomes=False)
    cohort.loc[2, "primary_fraction_gy"] = None
    cohort.to_csv(src, index=False)
    out = env / "out.csv"
    res = runner.invoke(app, ["score", str(src), str(out), "--bundle", str(bundle_path)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert table["patient_id"].tolist() == cohort["patient_id"].tolist()
    expected = score_records(small_bundle(), cohort)
    for e in ENDPOINTS:
        assert table[f"{e}_24m"].tolist() == pytest.approx(
            [s.cif_at(e, 24) for s in expected], abs=1e-12
        )
    assert isinstance(table.loc[2, "assumed"], str) and "2 Gy" in table.loc[2, "assumed"]
    audit = (env / "audit.jsonl").read_text()
    assert "P001" not in audit and '"endpoint":"cli.score"' in audit
    res = runner.invoke(app, ["audit", "verify"])
    assert res.exit_code == 0 and "chain intact" in res.output
    res = runner.invoke(app, ["audit", "show", "--patient-id", "P003"])
    assert res.exit_code == 0 and "cli.score" in res.output


def test_score_json_in_and_out(app, bundle_path, env):
    src = env / "in.json"
    src.write_text(json.dumps({"patients": good_cohort(False).to_dict("records")[:2]}))
    out = env / "out.json"
    args = ["score", str(src), str(out), "--bundle", str(bundle_path), "--horizons", "12,24"]
    res = runner.invoke(app, [*args, "--no-audit"])
    assert res.exit_code == 0, res.output
    body = json.loads(out.read_text())
    assert len(body["results"]) == 2
    assert body["results"][0]["risks"][0]["horizons_months"] == [12.0, 24.0]
    assert "tumour control" in body["disclaimer"]
    assert not (env / "audit.jsonl").exists()


def test_an_invalid_file_is_refused_and_nothing_written(app, bundle_path, env):
    src = env / "bad.csv"
    cohort = good_cohort(with_outcomes=False)
    cohort["gtv_cm3"] = cohort["gtv_cm3"].astype(object)
    cohort.loc[3, "gtv_cm3"] = "big"
    cohort.to_csv(src, index=False)
    out = env / "out.csv"
    res = runner.invoke(app, ["score", str(src), str(out), "--bundle", str(bundle_path)])
    assert res.exit_code == 2
    assert "row 4" in res.output and "gtv_cm3" in res.output
    assert not out.exists()


def test_audit_verify_fails_on_a_broken_log(app, env):
    (env / "audit.jsonl").write_text('{"not": "an entry"}\n')
    res = runner.invoke(app, ["audit", "verify"])
    assert res.exit_code == 1


def test_serve_command_line_and_environment(tmp_path):
    cmd = serve_command("127.0.0.1", 3123)
    assert cmd[1:5] == ["-m", "bentoml", "serve", "serving.service:RiskService"]
    assert "3123" in cmd
    settings = ServingSettings(
        bundle_path=tmp_path / "b.joblib",
        audit_log=tmp_path / "a.jsonl",
        tracking_uri="sqlite:///rel/store.db",
    )
    env = serve_env(settings)
    assert env["REIRRAD_BUNDLE_PATH"] == str((tmp_path / "b.joblib").resolve())
    assert env["REIRRAD_TRACKING_URI"] == f"sqlite:///{(Path.cwd() / 'rel' / 'store.db').resolve()}"
    assert env["BENTOML_DO_NOT_TRACK"] == "True"


def test_settings_from_env():
    s = ServingSettings.from_env(
        {"MLFLOW_TRACKING_URI": "sqlite:///x.db", "REIRRAD_MAX_BATCH": "5"}
    )
    assert s.tracking_uri == "sqlite:///x.db" and s.max_batch == 5 and s.bundle_path is None
    s2 = ServingSettings.from_env(
        {"MLFLOW_TRACKING_URI": "a", "REIRRAD_TRACKING_URI": "b"}
    )
    assert s2.tracking_uri == "b"
    with pytest.raises(ValueError, match="REIRRAD_MAX_BATCH"):
        ServingSettings.from_env({"REIRRAD_MAX_BATCH": "0"})
