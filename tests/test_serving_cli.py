"""The serving commands: offline scoring of a file (intervals, audit before output), the
audit commands, and the start-up checks of `reirrad serve` (token, champion, port)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from features.config import ENDPOINTS
from serving.cli import serve_command, serve_env
from serving.scoring import score_records
from serving.settings import ServingSettings, SettingsError
from tests.bundle_factory import small_bundle
from tests.cohort_rows import good_cohort

runner = CliRunner()
TOKEN = "cli-test-token-0123456789abcdef"


def _trail_records(env: Path) -> list[dict]:
    from serving.audit import AuditTrail, load_audit_key

    key = load_audit_key(None, env / "home" / "var" / "audit.key")
    return AuditTrail(str(env / "home" / "var" / "audit.db"), key).records()


def test_score_csv_with_intervals_matches_the_service_and_is_audited(app, bundle_path, env):
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
        cols = [f"{e}_24m_lower", f"{e}_24m", f"{e}_24m_upper"]
        assert (table[cols[0]] <= table[cols[1]]).all() and (table[cols[1]] <= table[cols[2]]).all()
    assert list(table.columns[1:4]) == [f"{ENDPOINTS[0]}_6m", f"{ENDPOINTS[0]}_6m_lower",
                                        f"{ENDPOINTS[0]}_6m_upper"]
    assert isinstance(table.loc[2, "assumed"], str) and "2 Gy" in table.loc[2, "assumed"]
    (record,) = _trail_records(env)
    assert record["route"] == "cli.score" and len(record["patient_keys"]) == len(cohort)
    assert "P001" not in json.dumps(record)
    res = runner.invoke(app, ["audit", "verify"])
    assert res.exit_code == 0 and "chain and seal intact" in res.output
    res = runner.invoke(app, ["audit", "show", "--patient-id", "P003"])
    assert res.exit_code == 0 and "cli.score" in res.output
    res = runner.invoke(app, ["audit", "head"])
    assert res.exit_code == 0 and res.output.startswith("1:")


def test_score_json_in_and_out_without_audit(app, bundle_path, env):
    src = env / "in.json"
    src.write_text(json.dumps({"patients": good_cohort(False).to_dict("records")[:2]}))
    out = env / "out.json"
    args = ["score", str(src), str(out), "--bundle", str(bundle_path), "--horizons", "12,24"]
    res = runner.invoke(app, [*args, "--no-audit"])
    assert res.exit_code == 0, res.output
    body = json.loads(out.read_text())
    assert len(body["results"]) == 2
    risk = body["results"][0]["risks"][0]
    assert risk["horizons_months"] == [12.0, 24.0] and len(risk["lower"]) == 2
    assert "tumour control" in body["disclaimer"]
    assert not (env / "home" / "var" / "audit.db").exists()


def test_the_audit_record_is_committed_before_the_output_appears(app, bundle_path, env,
                                                                  monkeypatch):
    import serving.audit

    def broken(self, record):
        raise RuntimeError("disk full")

    monkeypatch.setattr(serving.audit.AuditTrail, "append", broken)
    src = env / "in.csv"
    good_cohort(with_outcomes=False).to_csv(src, index=False)
    out = env / "out.csv"
    res = runner.invoke(app, ["score", str(src), str(out), "--bundle", str(bundle_path)])
    assert res.exit_code == 2 and "nothing written" in res.output
    assert not out.exists()


def test_invalid_files_and_mismatched_suffixes_are_refused(app, bundle_path, env):
    src = env / "bad.csv"
    cohort = good_cohort(with_outcomes=False)
    cohort["gtv_cm3"] = cohort["gtv_cm3"].astype(object)
    cohort.loc[3, "gtv_cm3"] = "big"
    cohort.to_csv(src, index=False)
    out = env / "out.csv"
    res = runner.invoke(app, ["score", str(src), str(out), "--bundle", str(bundle_path),
                              "--strict"])
    assert res.exit_code == 2
    assert "row 4" in res.output and "gtv_cm3" in res.output and "big" not in res.output
    assert not out.exists() and not (env / "out.rejects.csv").exists()
    good = env / "good.csv"
    good_cohort(with_outcomes=False).to_csv(good, index=False)
    for bad_out in ("out.xlsx", "out.txt", "out"):
        res = runner.invoke(app, ["score", str(good), str(env / bad_out), "--bundle",
                                  str(bundle_path)])
        assert res.exit_code == 2 and "suffix" in res.output, bad_out
        assert not (env / bad_out).exists()


def test_audit_verify_fails_on_a_broken_trail(app, env):
    import sqlite3

    from serving.audit import AuditRecord, AuditTrail, load_audit_key

    key = load_audit_key(None, env / "home" / "var" / "audit.key")
    trail = AuditTrail(str(env / "home" / "var" / "audit.db"), key)
    for i in range(3):
        trail.append(AuditRecord(f"r{i}", "/score", 200, "tok-x"))
    with sqlite3.connect(env / "home" / "var" / "audit.db") as con:
        con.execute("DELETE FROM audit_record WHERE seq = 3")
    res = runner.invoke(app, ["audit", "verify"])
    assert res.exit_code == 1 and "record" in res.output


# ------------------------------------------------------------------------ start-up checks
def test_serve_needs_a_token_before_anything_else(app, bundle_path, env):
    res = runner.invoke(app, ["serve", "--bundle", str(bundle_path)])
    assert res.exit_code == 2 and "REIRRAD_API_TOKENS" in res.output


def test_serve_without_a_champion_exits_2_saying_how_to_get_one(app, env, monkeypatch):
    monkeypatch.setenv("REIRRAD_API_TOKENS", TOKEN)
    res = runner.invoke(app, ["serve", "--tracking-uri", f"sqlite:///{env / 'empty.db'}",
                              "--port", "1"])
    assert res.exit_code == 2
    assert "reirrad train" in res.output and "--bundle" in res.output
    assert "Traceback" not in res.output


def test_a_port_in_use_gets_one_line_naming_port(app, bundle_path, env, monkeypatch):
    monkeypatch.setenv("REIRRAD_API_TOKENS", TOKEN)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = runner.invoke(app, ["serve", "--bundle", str(bundle_path), "--port", str(port)])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--port" in lines[0] and str(port) in lines[0]


def test_retired_audit_settings_are_refused(app, env, monkeypatch):
    monkeypatch.setenv("REIRRAD_AUDIT_LOG", "var/audit.jsonl")
    with pytest.raises(SettingsError, match="REIRRAD_AUDIT_DB"):
        ServingSettings.from_env()
    res = runner.invoke(app, ["audit", "verify"])
    assert res.exit_code == 2 and "no longer read" in res.output
    res = runner.invoke(app, ["audit", "verify", "--audit-log", "x"])
    assert res.exit_code == 2  # the option is gone


def test_serve_command_line_and_environment(tmp_path, env):
    cmd = serve_command("127.0.0.1", 3123)
    assert cmd[1:5] == ["-m", "bentoml", "serve", "serving.service:RiskService"]
    assert "3123" in cmd
    settings = ServingSettings(
        bundle_path=tmp_path / "b.joblib",
        audit_db="rel/audit.db",
        tracking_uri="sqlite:///rel/store.db",
    )
    environ = serve_env(settings)
    assert environ["REIRRAD_BUNDLE_PATH"] == str((tmp_path / "b.joblib").resolve())
    assert environ["REIRRAD_TRACKING_URI"] == \
        f"sqlite:///{(Path.cwd() / 'rel' / 'store.db').resolve()}"
    assert environ["REIRRAD_AUDIT_DB"] == f"sqlite:///{(Path.cwd() / 'rel' / 'audit.db').resolve()}"
    assert environ["REIRRAD_HOME"] == str(env / "home")
    assert environ["REIRRAD_AUDIT_KEY_FILE"] == str(env / "home" / "var" / "audit.key")
    assert environ["BENTOML_DO_NOT_TRACK"] == "True"


def test_settings_from_env():
    s = ServingSettings.from_env(
        {"MLFLOW_TRACKING_URI": "sqlite:///x.db", "REIRRAD_MAX_BATCH": "5",
         "REIRRAD_API_TOKENS": "a, b ,", "REIRRAD_RATE_LIMIT": "0"}
    )
    assert s.tracking_uri == "sqlite:///x.db" and s.max_batch == 5 and s.bundle_path is None
    assert s.api_tokens == ("a", "b") and s.rate_limit_per_minute == 0
    assert s.max_body_bytes == 2 * 1024 * 1024
    s2 = ServingSettings.from_env({"MLFLOW_TRACKING_URI": "a", "REIRRAD_TRACKING_URI": "b"})
    assert s2.tracking_uri == "b"
    with pytest.raises(SettingsError, match="REIRRAD_MAX_BATCH"):
        ServingSettings.from_env({"REIRRAD_MAX_BATCH": "0"})


def test_every_report_command_refuses_a_mismatched_suffix(env, tmp_path):
    from training.report_cli import register as register_model_reports

    root = typer.Typer()
    register_model_reports(root)
    for args in (["model-card", "--out", str(tmp_path / "card.html")],
                 ["cohort-report", "--out", str(tmp_path / "cohort.pdf")]):
        res = runner.invoke(root, args)
        assert res.exit_code == 2 and "written as" in res.output, args
    assert not list(tmp_path.glob("card*")) and not list(tmp_path.glob("cohort*"))
