"""`reirrad serve | score | audit ...`: the serving package's commands.

``register(app)`` adds them to the root Typer app (the entry module composes the packages'
commands; nothing here imports it). ``score`` runs the service's own scoring code on a file,
so offline and online risks are the same numbers. Heavy imports (pandas, the models, MLflow,
SQLAlchemy) happen inside the commands, so that ``reirrad --help`` starts at once.
"""

from __future__ import annotations

import dataclasses
import gc
import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from features.config import HORIZONS_MONTHS

if TYPE_CHECKING:
    from serving.audit import AuditTrail
    from serving.settings import ServingSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVICE_TARGET = "serving.service:RiskService"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
EXIT_INVALID = 2
EXIT_REJECTED = 3  # serving.batch.EXIT_REJECTED: some rows rejected, output and rejects written
DEFAULT_CHUNK_ROWS = 2000  # serving.batch.DEFAULT_CHUNK_ROWS (kept here: --help imports little)
EXIT_AUDIT_BROKEN = 1
DEFAULT_SHOW_LAST = 20
JSON_SUFFIX = ".json"
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
SCORE_SUFFIXES = (*TABLE_SUFFIXES, JSON_SUFFIX)
READY_TIMEOUT_S = 600.0
READY_POLL_S = 0.5
STOP_GRACE_S = 20.0
CLI_ROUTE = "cli.score"
EXAMPLE_PATIENT = PROJECT_ROOT / "docs" / "example_patient.json"

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

audit_app = typer.Typer(help="Verify and read the audit trail.", no_args_is_help=True)

_BUNDLE_OPT = typer.Option(
    None, "--bundle", help="Model bundle file (default: the registered champion)."
)
_SHA_OPT = typer.Option(None, "--bundle-sha256", help="Refuse the bundle unless it has this hash.")
_URI_OPT = typer.Option(None, "--tracking-uri", help="MLflow tracking URI of the registry.")
_NAME_OPT = typer.Option(None, "--model-name", help="Registered model name.")
_ALIAS_OPT = typer.Option(None, "--alias", help="Registered model alias.")
_AUDIT_DB_OPT = typer.Option(
    None, "--audit-db",
    help="Audit database: a SQLite path or URL, or a PostgreSQL URL (env REIRRAD_AUDIT_DB; "
    "default <REIRRAD_HOME>/var/audit.db).",
)


def fail(message: str, code: int = EXIT_INVALID) -> typer.Exit:
    """Print one line on stderr and return the exit to raise."""
    err_console.print(f"error: {message}")
    return typer.Exit(code)


def cli_settings(
    bundle: Path | None = None,
    bundle_sha256: str | None = None,
    tracking_uri: str | None = None,
    model_name: str | None = None,
    alias: str | None = None,
    audit_db: str | None = None,
) -> ServingSettings:
    """The environment's settings with the command-line options on top (exit 2 if bad)."""
    from serving.settings import ServingSettings, SettingsError

    try:
        base = ServingSettings.from_env()
    except SettingsError as err:
        raise fail(str(err)) from err
    changes = {
        "bundle_path": bundle,
        "bundle_sha256": bundle_sha256,
        "tracking_uri": tracking_uri,
        "model_name": model_name,
        "model_alias": alias,
        "audit_db": audit_db,
    }
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def open_audit(settings: ServingSettings) -> AuditTrail:
    """The audit trail of the settings (exit 2 with one line if it cannot be opened)."""
    from serving.audit import AuditError, AuditTrail, load_audit_key

    try:
        key = load_audit_key(settings.audit_key, settings.audit_key_file_resolved)
        return AuditTrail(settings.audit_db_resolved, key)
    except AuditError as err:
        raise fail(str(err)) from err


# ---------------------------------------------------------------------------- serve
def serve_command(host: str, port: int) -> list[str]:
    """The ``bentoml serve`` command line (the venv's bentoml, run from the project root)."""
    return [
        sys.executable, "-m", "bentoml", "serve", SERVICE_TARGET,
        "--host", host, "--port", str(port), "--working-dir", str(PROJECT_ROOT),
    ]


def serve_env(settings: ServingSettings) -> dict[str, str]:
    """The server's environment: the settings as variables, usage tracking off.

    Paths and the state folder are made absolute here, since the server runs from the project
    root rather than from the caller's directory.
    """
    from features.paths import ENV_HOME, reirrad_home
    from models.store import absolute_sqlite_uri
    from serving.audit import database_url

    env = dict(os.environ)
    env["BENTOML_DO_NOT_TRACK"] = "True"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    pairs = {
        ENV_HOME: str(reirrad_home()),
        "REIRRAD_BUNDLE_PATH": settings.bundle_path and str(Path(settings.bundle_path).resolve()),
        "REIRRAD_BUNDLE_SHA256": settings.bundle_sha256,
        "REIRRAD_TRACKING_URI": settings.tracking_uri
        and absolute_sqlite_uri(settings.tracking_uri, Path.cwd()),
        "REIRRAD_MODEL_NAME": settings.model_name,
        "REIRRAD_MODEL_ALIAS": settings.model_alias,
        "REIRRAD_AUDIT_DB": database_url(settings.audit_db_resolved),
        "REIRRAD_AUDIT_KEY_FILE": str(Path(settings.audit_key_file_resolved).resolve()),
    }
    env.update({k: v for k, v in pairs.items() if v})
    return env


def port_in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be listened on (the server would fail to bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def check_model(settings: ServingSettings) -> str:
    """Where the model will come from, checked (:func:`serving.loading.verify_model`); exit 2
    with one line, saying how to get a model, if there is none or it is damaged."""
    from models.bundle import BundleIntegrityError
    from models.store import ModelNotFoundError
    from serving.loading import verify_model

    try:
        return verify_model(settings)
    except FileNotFoundError as err:
        raise fail(str(err)) from err
    except ModelNotFoundError as err:
        raise fail(
            f"no model is registered as {settings.model_name}@{settings.model_alias}: train "
            "one with `reirrad train --synthetic 600 --config quick` (or run `make up`), or "
            "serve a bundle file with --bundle FILE"
        ) from err
    except BundleIntegrityError as err:
        raise fail(f"refusing to serve a damaged model: {err}") from err


def example_curl(url: str, token: str | None) -> str:
    """A ``curl`` that scores the example patient (the token, or $REIRRAD_TOKEN)."""
    bearer = token if token else "$REIRRAD_TOKEN"
    return (
        f"curl -s -X POST {url}/score -H \"Authorization: Bearer {bearer}\" "
        f"-H 'Content-Type: application/json' "
        f"-d \"{{\\\"patient\\\": $(cat {EXAMPLE_PATIENT})}}\""
    )


def _announce_when_ready(proc: subprocess.Popen, url: str, token: str | None) -> None:
    """Poll /readyz; once it answers, print the URL and a working curl (a daemon thread)."""
    import httpx

    deadline = time.monotonic() + READY_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                err_console.print(f"ready: {url}\ntry:   {example_curl(url, token)}")
                return
        except httpx.HTTPError:
            pass
        time.sleep(READY_POLL_S)


def run_server(settings: ServingSettings, host: str, port: int, token: str | None = None) -> int:
    """Check everything that would stop the server, then run it in the foreground."""
    from serving.auth import AuthConfigError, TokenSet

    try:
        TokenSet.from_config(settings.api_tokens, settings.api_token_hashes)
    except AuthConfigError as err:
        raise fail(str(err)) from err
    source = check_model(settings)
    if port_in_use(host, port):
        raise fail(f"port {port} on {host} is in use: choose another with --port")
    trail = open_audit(settings)  # creates the database and the key before workers start
    trail.dispose()
    url = f"http://{host}:{port}"
    err_console.print(f"serving {source} on {url} (audit: {_audit_label(settings)})")
    proc = subprocess.Popen(serve_command(host, port), env=serve_env(settings), cwd=PROJECT_ROOT)
    threading.Thread(target=_announce_when_ready, args=(proc, url, token), daemon=True).start()
    # a service manager stops us with SIGTERM: pass it on, so no server is left behind
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return stop_server(proc)


def stop_server(proc: subprocess.Popen) -> int:
    """Stop the server: SIGINT (as a terminal's Ctrl-C), then SIGTERM, then kill."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    return proc.wait()


def _audit_label(settings: ServingSettings) -> str:
    from serving.audit import database_url, redacted_url

    return redacted_url(database_url(settings.audit_db_resolved))


def serve(
    host: str = typer.Option(DEFAULT_HOST, help="Interface to listen on."),
    port: int = typer.Option(DEFAULT_PORT, help="Port to listen on."),
    bundle: Path | None = _BUNDLE_OPT,
    bundle_sha256: str | None = _SHA_OPT,
    tracking_uri: str | None = _URI_OPT,
    model_name: str | None = _NAME_OPT,
    alias: str | None = _ALIAS_OPT,
    audit_db: str | None = _AUDIT_DB_OPT,
    print_only: bool = typer.Option(False, "--print-only", help="Print the command; do not run."),
) -> None:
    """Start the risk-scoring API (BentoML) with the champion model or a bundle file.

    Needs an API token (REIRRAD_API_TOKENS or REIRRAD_API_TOKEN_HASHES) and a model; exits 2
    before starting, saying what is missing, when either is not there or the port is taken.
    """
    settings = cli_settings(bundle, bundle_sha256, tracking_uri, model_name, alias, audit_db)
    if print_only:
        console.print(" ".join(serve_command(host, port)))
        return
    raise typer.Exit(run_server(settings, host, port))


# ---------------------------------------------------------------------------- score
def read_patients(path: Path):
    """Patients from CSV/Parquet (the cohort reader) or JSON (a list, or {"patients": [...]})."""
    import pandas as pd

    from features.io import CohortFileError, load_table

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


def scores_table(scores):
    """One row per patient: ``<endpoint>_<h>m`` CIF columns with ``_lower``/``_upper`` beside
    them, then the assumptions and warnings."""
    import pandas as pd

    rows = []
    for s in scores:
        row: dict[str, object] = {"patient_id": s.patient_id}
        for r in s.risks:
            for h, c, lo, hi in zip(r.horizons_months, r.cif, r.lower, r.upper, strict=True):
                row[f"{r.endpoint}_{h:g}m"] = c
                row[f"{r.endpoint}_{h:g}m_lower"] = lo
                row[f"{r.endpoint}_{h:g}m_upper"] = hi
        row["assumed"] = "; ".join(s.assumed)
        row["warnings"] = "; ".join(s.warnings)
        rows.append(row)
    return pd.DataFrame(rows)


def write_scores(scores, model, path: Path) -> None:
    """Write atomically: JSON keeps the full response objects, CSV/Parquet a flat table."""
    from features.io import write_table, write_text_atomic
    from serving.loading import model_ref
    from serving.schemas import DISCLAIMER

    if path.suffix.lower() == JSON_SUFFIX:
        body = {
            "model": model_ref(model).model_dump(),
            "results": [s.model_dump() for s in scores],
            "disclaimer": DISCLAIMER,
        }
        write_text_atomic(json.dumps(body, indent=1) + "\n", path)
    else:
        write_table(scores_table(scores), path)


def _parse_horizons(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise typer.BadParameter("horizons: comma-separated numbers of months") from err


def check_suffix(path: Path, allowed: tuple[str, ...], what: str) -> None:
    """Refuse a file whose suffix does not name one of the formats (before any work)."""
    if path.suffix.lower() not in allowed:
        raise fail(
            f"{path}: {what} must end in {', '.join(allowed)} (the suffix chooses the format)"
        )


def score(
    input_path: Path = typer.Argument(..., help="Patients: .csv, .parquet or .json."),
    output_path: Path = typer.Argument(..., help="Results: .csv, .parquet or .json."),
    horizons: str = typer.Option(
        ",".join(f"{h:g}" for h in HORIZONS_MONTHS), help="Comma-separated whole months."
    ),
    bundle: Path | None = _BUNDLE_OPT,
    bundle_sha256: str | None = _SHA_OPT,
    tracking_uri: str | None = _URI_OPT,
    model_name: str | None = _NAME_OPT,
    alias: str | None = _ALIAS_OPT,
    audit: bool = typer.Option(True, help="Record the scoring in the audit trail."),
    audit_db: str | None = _AUDIT_DB_OPT,
    strict: bool = typer.Option(
        False, "--strict", help="All rows or none: any invalid row refuses the file (exit 2)."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address",
        help="Score on Ray Data: a cluster's address, or 'local' to start one here.",
    ),
    chunk_rows: int = typer.Option(
        DEFAULT_CHUNK_ROWS, min=1, help="Rows read and scored at a time (bounds memory)."
    ),
    ray_memory_gb: float = typer.Option(
        2.0, "--ray-memory-gb", min=0.1,
        help="With --ray-address: memory for this command and Ray's processes together; "
             "sets how many scoring actors run (at least one, at most one per CPU).",
    ),
) -> None:
    """Score a file offline with the service's code, streaming it in chunks.

    Valid rows are scored (each risk with its 95 % interval, ``<endpoint>_<H>m_lower`` /
    ``_upper``); invalid ones go to ``<OUT stem>.rejects.csv`` beside the output (row,
    patient_id where readable, column, reason; never the value). Exit 0: every row scored;
    3: some rows rejected (output and rejects written); 2: nothing written (unreadable file,
    bad options, or with --strict any invalid row). The audit records are committed before
    the output appears; a .json output is read and written whole, all rows or none.
    """
    check_suffix(input_path, SCORE_SUFFIXES, "the input")
    check_suffix(output_path, SCORE_SUFFIXES, "the output")
    if output_path.suffix.lower() == JSON_SUFFIX:
        if ray_address:
            raise fail("--ray-address writes a .csv or .parquet output, not .json")
        score_whole(input_path, output_path, horizons, bundle, bundle_sha256, tracking_uri,
                    model_name, alias, audit, audit_db)
        return
    from serving.loading import load_model

    settings = cli_settings(bundle, bundle_sha256, tracking_uri, model_name, alias, audit_db)
    trail = open_audit(settings) if audit else None
    wanted = _parse_horizons(horizons)
    # the model is passed, not kept here, so that a Ray run can drop it (see score_streaming)
    raise typer.Exit(score_streaming(input_path, output_path, load_model(settings), wanted,
                                     trail, strict, ray_address, chunk_rows,
                                     ray_memory_gb * 1e9))


def _chunk_auditor(trail: AuditTrail, model, input_path: Path):
    """The callback that commits one audit record per chunk (see serving.batch.BatchRun)."""
    from serving.audit import AuditRecord
    from serving.loading import model_ref

    run_id = uuid.uuid4().hex
    caller = f"cli:{getpass.getuser()}"
    ref = model_ref(model).model_dump()
    input_mac = trail.input_mac_file(input_path)

    def audit_chunk(index: int, keys: list[str], outputs: dict,
                    summary: dict | None) -> None:
        body: dict[str, object] = {**outputs, "chunk": index}
        if summary is not None:
            body["summary"] = summary
        record = AuditRecord(
            request_id=f"{run_id}-{index}",
            route=CLI_ROUTE,
            status=200,
            caller=caller,
            model=ref,
            patient_keys=trail.patient_keys(keys),
            input_mac=input_mac,
            outputs=body,
        )
        try:
            trail.append(record)
        except Exception as err:  # any database failure: the output must not appear
            raise AuditCommitError(type(err).__name__) from err

    return audit_chunk


class AuditCommitError(RuntimeError):
    """An audit record could not be committed; nothing is published."""


def score_streaming(input_path: Path, output_path: Path, model, horizons: list[float],
                    trail: AuditTrail | None, strict: bool, ray_address: str | None,
                    chunk_rows: int, ray_memory_bytes: float = 2e9) -> int:
    """Run :func:`serving.batch.run_batch` (locally or on Ray) and report; the exit code."""
    from features.io import CohortFileError
    from serving.batch import BatchInputError, run_batch
    from serving.schemas import DISCLAIMER
    from serving.scoring import ScoringInputError, check_horizons

    try:
        grid_horizons = check_horizons(model.bundle, horizons).tolist()
    except ScoringInputError as err:
        raise fail(str(err)) from err
    auditor = _chunk_auditor(trail, model, input_path) if trail is not None else None
    from serving.loading import limit_numeric_threads

    limit_numeric_threads()  # chunks are scored one at a time here, as in each Ray actor
    results, owns_ray, bundle = None, False, model.bundle
    if ray_address:
        from serving.batch_ray import init_ray, ray_results, release_memory

        owns_ray = init_ray(ray_address)
        results = ray_results(bundle, grid_horizons, chunk_rows,
                              memory_budget=ray_memory_bytes)
        # the actors score from the object store's copy: the driver's goes (about 60 MB)
        model = bundle = None
        release_memory()
    else:
        gc.freeze()  # the bundle's many objects out of the collector's way: chunks allocate
    try:
        summary = run_batch(input_path, output_path, bundle, grid_horizons, auditor,
                            strict=strict, chunk_rows=chunk_rows, results=results)
    except (CohortFileError, BatchInputError) as err:
        raise fail(f"refused, nothing scored: {err}") from err
    except AuditCommitError as err:
        raise fail(f"an audit record could not be committed ({err}); nothing written") from err
    except Exception as err:
        if ray_address is None:
            raise
        cause = getattr(err, "cause", None) or err  # a worker's error, without a traceback
        raise fail(f"the Ray run failed, nothing written: {type(cause).__name__}: "
                   f"{str(cause).splitlines()[-1] if str(cause) else ''}") from err
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
    if strict and summary.n_rejected:
        for line in summary.problems:
            err_console.print(line)
        err_console.print(f"refused (--strict), nothing scored: {summary.n_rejected} invalid "
                          "row(s)")
        return EXIT_INVALID
    console.print(f"scored {summary.n_scored} patient(s) -> {output_path}")
    if summary.n_rejected:
        err_console.print(f"rejected {summary.n_rejected} row(s) -> {summary.rejects} "
                          f"(exit {summary.exit_code})")
    console.print(DISCLAIMER)
    return summary.exit_code


def score_whole(input_path: Path, output_path: Path, horizons: str, bundle, bundle_sha256,
                tracking_uri, model_name, alias, audit: bool, audit_db) -> None:
    """A .json output: the file read and scored whole, all rows or none (exit 2 if invalid)."""
    from features.io import CohortFileError
    from features.schema import CohortValidationError
    from serving.audit import AuditRecord, score_outputs
    from serving.loading import load_model, model_ref
    from serving.scoring import ScoringInputError, score_records

    settings = cli_settings(bundle, bundle_sha256, tracking_uri, model_name, alias, audit_db)
    trail = open_audit(settings) if audit else None
    try:
        records = read_patients(input_path)
    except CohortFileError as err:
        raise fail(str(err)) from err
    model = load_model(settings)
    try:
        scores = score_records(model.bundle, records, _parse_horizons(horizons), where="row")
    except ScoringInputError as err:
        cause = err.__cause__  # a file's violations read best in the contract's own words
        text = str(cause) if isinstance(cause, CohortValidationError) else str(err)
        err_console.print(f"refused, nothing scored: {text}")
        raise typer.Exit(EXIT_INVALID) from err
    if trail is not None:
        record = AuditRecord(
            request_id=uuid.uuid4().hex,
            route=CLI_ROUTE,
            status=200,
            caller=f"cli:{getpass.getuser()}",
            model=model_ref(model).model_dump(),
            patient_keys=trail.patient_keys([s.patient_id for s in scores]),
            input_mac=trail.input_mac(input_path.read_bytes()),
            outputs=score_outputs(scores),
        )
        try:
            trail.append(record)
        except Exception as err:  # any database failure: the output must not appear
            raise fail(f"the audit record could not be committed ({type(err).__name__}); "
                       "nothing written") from err
    write_scores(scores, model, output_path)
    console.print(f"scored {len(scores)} patient(s) -> {output_path}")
    from serving.schemas import DISCLAIMER

    console.print(DISCLAIMER)


# ---------------------------------------------------------------------------- audit
@audit_app.command("verify")
def audit_verify(
    audit_db: str | None = _AUDIT_DB_OPT,
    anchor: str | None = typer.Option(
        None, "--anchor",
        help="SEQ:MAC printed earlier by `reirrad audit head`: also prove that the trail still "
        "holds that state (detects a rollback of the whole database).",
    ),
) -> None:
    """Check every record's keyed hash and link and the sealed head (exit 1 if broken)."""
    settings = cli_settings(audit_db=audit_db)
    trail = open_audit(settings)
    try:
        check = trail.verify(anchor)
    except ValueError as err:
        raise fail(str(err)) from err
    label = _audit_label(settings)
    for p in check.problems:
        err_console.print(p)
    if not check.ok:
        err_console.print(f"{label}: {len(check.problems)} problem(s) in {check.n_records} records")
        raise typer.Exit(EXIT_AUDIT_BROKEN)
    console.print(f"{label}: {check.n_records} records, chain and seal intact")


@audit_app.command("head")
def audit_head(audit_db: str | None = _AUDIT_DB_OPT) -> None:
    """Print the sealed head (SEQ:MAC) to keep elsewhere, e.g. daily in a ticket or a log
    the database's administrators cannot edit; `audit verify --anchor` checks it later."""
    head = open_audit(cli_settings(audit_db=audit_db)).head()
    console.print(head.anchor)


@audit_app.command("show")
def audit_show(
    audit_db: str | None = _AUDIT_DB_OPT,
    last: int = typer.Option(DEFAULT_SHOW_LAST, help="Show the last N records."),
    patient_id: str | None = typer.Option(
        None, help="Only this patient's calls (hashed with the audit key; never stored)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON lines."),
) -> None:
    """Show the latest audit records."""
    from rich.table import Table

    trail = open_audit(cli_settings(audit_db=audit_db))
    records = trail.records(last=last if last > 0 else None, patient_id=patient_id)
    if as_json:
        for r in records:
            console.print(json.dumps(r, sort_keys=True), soft_wrap=True)
        return
    table = Table("#", "time (UTC)", "route", "status", "caller", "model", "patients")
    for r in records:
        m = r.get("model") or {}
        table.add_row(
            str(r.get("seq")), str(r.get("ts", "")), str(r.get("route", "")),
            str(r.get("status", "")), str(r.get("caller", "")),
            f"{m.get('name')} v{m.get('version')} {m.get('bundle_sha256_prefix')}" if m else "",
            str(len(r.get("patient_keys", []))),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``score`` and ``audit`` to the root app."""
    app.command("serve")(serve)
    app.command("score")(score)
    app.add_typer(audit_app, name="audit")
