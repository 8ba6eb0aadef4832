"""`reirrad cohort-report` and `reirrad model-card`: what to read before trusting the model.

``register(app)`` adds both commands to the root Typer app. Both load the registered champion
by default (``models.store.load_champion``) and the run's ``metrics.json`` from MLflow, or a
bundle file (``--bundle``) with an optional ``--metrics-json``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from features.io import write_text_atomic
from models.store import CHAMPION_ALIAS, MODEL_NAME

# Heavy imports (matplotlib, numba kernels, MLflow) happen inside the commands, so that
# composing the root app stays fast.

EXIT_INVALID = 2
EXIT_NO_MODEL = 3
DEFAULT_BOOTSTRAP = 200
DEFAULT_MAX_EXPLAIN = 300
"""Defaults of the cohort report (mirrors ``training.cohort_report``; a test checks they agree)."""
DEFAULT_EVAL_N = 1000
DEFAULT_EVAL_SEED = 777
"""The default evaluation cohort: fresh synthetic patients, a seed no training preset uses."""
METRICS_ARTIFACT = "metrics.json"
HTML_SUFFIXES = (".html", ".htm")
MARKDOWN_SUFFIXES = (".md",)


console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def run_metrics_json(run_id: str | None, tracking_uri: str | None) -> dict[str, Any]:
    """The training run's ``metrics.json`` artifact ({} when there is none)."""
    if not run_id:
        return {}
    from mlflow import MlflowClient
    from models.store import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = MlflowClient(tracking_uri=uri).download_artifacts(run_id, METRICS_ARTIFACT, tmp)
            return json.loads(Path(local).read_text())
    except Exception:  # noqa: BLE001 - a missing artifact must not stop the report
        return {}


def load_model_and_metrics(
    bundle: Path | None,
    metrics_json: Path | None,
    tracking_uri: str | None,
    model_name: str,
    alias: str,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(bundle, info, run metrics) from a bundle file or the registry; exits 3 if none."""
    from models.bundle import BundleIntegrityError, ModelBundle, sha256_file
    from models.store import ModelNotFoundError, load_champion

    try:
        if bundle is not None:
            b = ModelBundle.load(bundle)
            info = {"sha256": sha256_file(bundle), "run_id": b.provenance.get("mlflow_run_id")}
            metrics = json.loads(metrics_json.read_text()) if metrics_json else {}
        else:
            b, info = load_champion(tracking_uri=tracking_uri, model_name=model_name, alias=alias)
            metrics = (
                json.loads(metrics_json.read_text())
                if metrics_json
                else run_metrics_json(info.get("run_id"), tracking_uri)
            )
    except (ModelNotFoundError, BundleIntegrityError, FileNotFoundError) as err:
        err_console.print(f"error: {err}\nTrain and promote a model first, or pass --bundle.")
        raise typer.Exit(EXIT_NO_MODEL) from err
    return b, dict(info), metrics


_BUNDLE = typer.Option(None, "--bundle", help="A bundle file instead of the registered champion.")
_METRICS = typer.Option(None, "--metrics-json", help="The training run's metrics.json.")
_URI = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: the project's).")
_NAME = typer.Option(MODEL_NAME, "--model-name", help="Registered model name.")
_ALIAS = typer.Option(CHAMPION_ALIAS, "--alias", help="Registry alias.")


def _require_suffix(out: Path, allowed: tuple[str, ...], what: str) -> None:
    """Refuse an output whose suffix does not match what is written (before any work)."""
    if out.suffix.lower() not in allowed:
        err_console.print(f"error: {out.name}: the {what} is written as {' or '.join(allowed)}")
        raise typer.Exit(EXIT_INVALID)


def cohort_report(
    out: Path = typer.Option(..., "--out", help="Where to write the HTML report."),
    data: Path | None = typer.Option(
        None, "--data", help="Cohort with outcomes (.csv/.parquet); default: fresh synthetic."
    ),
    synthetic_n: int = typer.Option(DEFAULT_EVAL_N, help="Synthetic cohort size (no --data)."),
    synthetic_seed: int = typer.Option(DEFAULT_EVAL_SEED, help="Synthetic cohort seed."),
    n_bootstrap: int = typer.Option(DEFAULT_BOOTSTRAP, help="Bootstrap resamples for CIs."),
    max_explain: int = typer.Option(DEFAULT_MAX_EXPLAIN, help="Patients explained (sampled)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap and of the explained sample."),
    bundle: Path | None = _BUNDLE,
    metrics_json: Path | None = _METRICS,
    tracking_uri: str | None = _URI,
    model_name: str = _NAME,
    alias: str = _ALIAS,
) -> None:
    """Performance with intervals, calibration, decision curves, global explanations, data."""
    _require_suffix(out, HTML_SUFFIXES, "cohort report (HTML)")
    from features.io import CohortFileError, load_table
    from features.schema import CohortValidationError, validated_frame
    from features.synthetic import simulate_cohort
    from training.cohort_report import build_cohort_report, render_cohort_report
    from training.data import Cohort

    try:
        if data is not None:
            records, name = load_table(data), f"{data.name}"
        else:
            records = simulate_cohort(synthetic_n, seed=synthetic_seed)
            name = f"a fresh synthetic cohort (n={synthetic_n}, seed={synthetic_seed})"
        cohort = Cohort.from_records(validated_frame(records, require_outcomes=True))
    except (CohortFileError, CohortValidationError) as err:
        err_console.print(f"error: {err}")
        raise typer.Exit(EXIT_INVALID) from err
    b, info, metrics = load_model_and_metrics(bundle, metrics_json, tracking_uri, model_name, alias)
    report = build_cohort_report(
        b, cohort, name, info, metrics, n_boot=n_bootstrap, max_explain=max_explain, seed=seed
    )
    path = write_text_atomic(render_cohort_report(report), out)
    console.print(f"cohort report on {len(cohort)} patients -> {path}")


def model_card(
    out: Path = typer.Option(..., "--out", help="Where to write the model card (Markdown)."),
    bundle: Path | None = _BUNDLE,
    metrics_json: Path | None = _METRICS,
    tracking_uri: str | None = _URI,
    model_name: str = _NAME,
    alias: str = _ALIAS,
) -> None:
    """Write the model card (Markdown): details, intended use, data, performance, TRIPOD+AI."""
    _require_suffix(out, MARKDOWN_SUFFIXES, "model card (Markdown)")
    from training.model_card import build_model_card

    b, info, metrics = load_model_and_metrics(bundle, metrics_json, tracking_uri, model_name, alias)
    path = write_text_atomic(build_model_card(b, info, metrics), out)
    console.print(f"model card -> {path}")


def register(app: typer.Typer) -> None:
    """Add ``cohort-report`` and ``model-card`` to the root app."""
    app.command("cohort-report")(cohort_report)
    app.command("model-card")(model_card)
