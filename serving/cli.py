"""`reirrad serve | score | audit ...`: the serving package's commands.

``register(app)`` adds them to the root Typer app (the entry module composes the packages'
commands; nothing here imports it). ``score`` runs the service's own scoring code on a file,
so offline and online risks are the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from features.config import HORIZONS_MONTHS
from features.io import CohortFileError, load_table, write_table, write_text_atomic
from features.schema import CohortValidationError
from models.store import absolute_sqlite_uri
from serving.audit import AuditLog, find_patient, read_entries, resolve_salt, verify_log
from serving.loading import LoadedModel, load_model, model_ref
from serving.schemas import DISCLAIMER, PatientScore
from serving.scoring import ScoringInputError, score_records
from serving.settings import ServingSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVICE_TARGET = "serving.service:RiskService"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
EXIT_INVALID = 2
EXIT_AUDIT_BROKEN = 1
DEFAULT_SHOW_LAST = 20
JSON_SUFFIX = ".json"

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

audit_app = typer.Typer(help="Show and verify the scoring audit log.", no_args_is_help=True)

_BUNDLE_OPT = typer.Option(
    None, "--bundle", help="Model bundle file (default: the registered champion)."
)
_SHA_OPT = typer.Option(None, "--bundle-sha256", help="Refuse the bundle unless it has this hash.")
_URI_OPT = typer.Option(None, "--tracking-uri", help="MLflow tracking URI of the registry.")
_NAME_OPT = typer.Option(None, "--model-name", help="Registered model name.")
_ALIAS_OPT = typer.Option(None, "--alias", help="Registered model alias.")
_AUDIT_OPT = typer.Option(None, "--audit-log", help="Audit log path (env REIRRAD_AUDIT_LOG).")


def _settings(
    bundle: Path | None = None,
    bundle_sha256: str | None = None,
    tracking_uri: str | None = None,
    model_name: str | None = None,
    alias: str | None = None,
    audit_log: Path | None = None,
) -> ServingSettings:
    """The environment's settings with the command-line options on top."""
    base = ServingSettings.from_env()
    changes = {
        "bundle_path": bundle,
        "bundle_sha256": bundle_sha256,
        "tracking_uri": tracking_uri,
        "model_name": model_name,
        "model_alias": alias,
        "audit_log": audit_log,
    }
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def serve_command(host: str, port: int) -> list[str]:
    """The ``bentoml serve`` command line (the venv's bentoml, run from the project root)."""
    return [
        sys.executable, "-m", "bentoml", "serve", SERVICE_TARGET,
        "--host", host, "--port", str(port), "--working-dir", str(PROJECT_ROOT),
    ]


def serve_env(settings: ServingSettings) -> dict[str, str]:
    """The server's environment: the settings as variables, usage tracking off.

    Relative paths (bundle, audit log, a sqlite tracking store) are made absolute here, since
    the server runs from the project root rather than from the caller's directory.
    """
    env = dict(os.environ)
    env["BENTOML_DO_NOT_TRACK"] = "True"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    pairs = {
        "REIRRAD_BUNDLE_PATH": settings.bundle_path and str(Path(settings.bundle_path).resolve()),
        "REIRRAD_BUNDLE_SHA256": settings.bundle_sha256,
        "REIRRAD_TRACKING_URI": settings.tracking_uri
        and absolute_sqlite_uri(settings.tracking_uri, Path.cwd()),
        "REIRRAD_MODEL_NAME": settings.model_name,
        "REIRRAD_MODEL_ALIAS": settings.model_alias,
        "REIRRAD_AUDIT_LOG": str(Path(settings.audit_log).resolve()),
    }
    env.update({k: v for k, v in pairs.items() if v})
    return env


def serve(
    host: str = typer.Option(DEFAULT_HOST, help="Interface to listen on."),
    port: int = typer.Option(DEFAULT_PORT, help="Port to listen on."),
    bundle: Path | None = _BUNDLE_OPT,
    bundle_sha256: str | None = _SHA_OPT,
    tracking_uri: str | None = _URI_OPT,
    model_name: str | None = _NAME_OPT,
    alias: str | None = _ALIAS_OPT,
    audit_log: Path | None = _AUDIT_OPT,
    print_only: bool = typer.Option(False, "--print-only", help="Print the command; do not run."),
) -> None:
    """Start the risk-scoring API (BentoML) with the champion model or a bundle file."""
    settings = _settings(bundle, bundle_sha256, tracking_uri, model_name, alias, audit_log)
    cmd = serve_command(host, port)
    if print_only:
        console.print(" ".join(cmd))
        return
    source = settings.bundle_path or f"registry {settings.model_name}@{settings.model_alias}"
    err_console.print(f"serving {source} on http://{host}:{port} (audit: {settings.audit_log})")
    try:
        code = subprocess.call(cmd, env=serve_env(settings), cwd=PROJECT_ROOT)
    except KeyboardInterrupt:  # the server got the same SIGINT and stops itself
        code = 0
    raise typer.Exit(code)


# ---------------------------------------------------------------------------- score
def read_patients(path: Path) -> pd.DataFrame:
    """Patients from CSV/Parquet (the cohort reader) or JSON (a list, or {"patients": [...]})."""
    if path.suffix.lower() != JSON_SUFFIX:
        return load_table(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CohortFileError(f"{path}: not readable JSON ({err})") from err
    if isinstance(data, dict):
        data = data.get("patients")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise CohortFileError(
            f"{path}: expected a list of patient objects or {{'patients': [...]}}"
        )
    return pd.DataFrame(data)


def scores_table(scores: list[PatientScore]) -> pd.DataFrame:
    """One row per patient: ``<endpoint>_<h>m`` CIF columns, assumptions and warnings."""
    rows = []
    for s in scores:
        row: dict[str, object] = {"patient_id": s.patient_id}
        for r in s.risks:
            for h, c in zip(r.horizons_months, r.cif, strict=True):
                row[f"{r.endpoint}_{h:g}m"] = c
        row["assumed"] = "; ".join(s.assumed)
        row["warnings"] = "; ".join(s.warnings)
        rows.append(row)
    return pd.DataFrame(rows)


def _write_json_atomic(obj: object, path: Path) -> None:
    write_text_atomic(json.dumps(obj, indent=1) + "\n", path)


def write_scores(scores: list[PatientScore], model: LoadedModel, path: Path) -> None:
    """Write atomically: JSON keeps the full response objects, CSV/Parquet a flat table."""
    if path.suffix.lower() == JSON_SUFFIX:
        _write_json_atomic(
            {
                "model": model_ref(model).model_dump(),
                "results": [s.model_dump() for s in scores],
                "disclaimer": DISCLAIMER,
            },
            path,
        )
    else:
        write_table(scores_table(scores), path)


def _parse_horizons(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise typer.BadParameter(f"horizons: {err}") from err


def score(
    input_path: Path = typer.Argument(..., help="Patients: .csv, .parquet or .json."),
    output_path: Path = typer.Argument(..., help="Results: .csv, .parquet or .json."),
    horizons: str = typer.Option(
        ",".join(f"{h:g}" for h in HORIZONS_MONTHS), help="Comma-separated months."
    ),
    bundle: Path | None = _BUNDLE_OPT,
    bundle_sha256: str | None = _SHA_OPT,
    tracking_uri: str | None = _URI_OPT,
    model_name: str | None = _NAME_OPT,
    alias: str | None = _ALIAS_OPT,
    audit: bool = typer.Option(True, help="Record the scoring in the audit log."),
    audit_log: Path | None = _AUDIT_OPT,
) -> None:
    """Score a file offline with the service's code; all rows or none (exit 2 if invalid)."""
    settings = _settings(bundle, bundle_sha256, tracking_uri, model_name, alias, audit_log)
    try:
        records = read_patients(input_path)
    except CohortFileError as err:
        err_console.print(f"error: {err}")
        raise typer.Exit(EXIT_INVALID) from err
    model = load_model(settings)
    try:
        scores = score_records(model.bundle, records, _parse_horizons(horizons), where="row")
    except ScoringInputError as err:
        cause = err.__cause__
        text = str(cause) if isinstance(cause, CohortValidationError) else str(err)
        err_console.print(f"refused, nothing scored: {text}")
        raise typer.Exit(EXIT_INVALID) from err
    write_scores(scores, model, output_path)
    if audit:
        salt = resolve_salt(settings.audit_salt, settings.audit_log)
        AuditLog(settings.audit_log, salt).record_scores(
            "cli.score", uuid.uuid4().hex, model_ref(model), scores
        )
    console.print(f"scored {len(scores)} patient(s) -> {output_path}")
    console.print(DISCLAIMER)


# ---------------------------------------------------------------------------- audit
@audit_app.command("show")
def audit_show(
    audit_log: Path | None = _AUDIT_OPT,
    last: int = typer.Option(DEFAULT_SHOW_LAST, help="Show the last N entries."),
    patient_id: str | None = typer.Option(
        None, help="Only this patient's calls (hashed with the audit salt; never stored)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the entries as JSON lines."),
) -> None:
    """Show the latest audit entries."""
    settings = _settings(audit_log=audit_log)
    if not settings.audit_log.exists():
        err_console.print(f"no audit log at {settings.audit_log}")
        raise typer.Exit(EXIT_INVALID)
    if patient_id is not None:
        salt = resolve_salt(settings.audit_salt, settings.audit_log)
        entries = find_patient(settings.audit_log, patient_id, salt)
    else:
        entries = list(read_entries(settings.audit_log))
    entries = entries[-last:] if last > 0 else entries
    if as_json:
        for e in entries:
            console.print_json(json.dumps(e))
        return
    table = Table("time (UTC)", "endpoint", "request", "model", "patients", "plans")
    for e in entries:
        m = e.get("model", {})
        table.add_row(
            str(e.get("ts", "")),
            str(e.get("endpoint", "")),
            str(e.get("request_id", ""))[:12],
            f"{m.get('name')} v{m.get('version')} {m.get('bundle_sha256_prefix')}",
            str(len(e.get("patients", []))),
            str(len(e.get("plans", []))),
        )
    console.print(table)


@audit_app.command("verify")
def audit_verify(audit_log: Path | None = _AUDIT_OPT) -> None:
    """Check the hash chain, the fields and that no raw identifier is stored (exit 1 if not)."""
    settings = _settings(audit_log=audit_log)
    if not settings.audit_log.exists():
        err_console.print(f"no audit log at {settings.audit_log}")
        raise typer.Exit(EXIT_INVALID)
    check = verify_log(settings.audit_log)
    for p in check.problems:
        err_console.print(p)
    if not check.ok:
        err_console.print(f"{settings.audit_log}: {len(check.problems)} problem(s)")
        raise typer.Exit(EXIT_AUDIT_BROKEN)
    console.print(f"{settings.audit_log}: {check.n_entries} entries, chain intact")


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``score`` and ``audit`` to the root app."""
    app.command("serve")(serve)
    app.command("score")(score)
    app.add_typer(audit_app, name="audit")
