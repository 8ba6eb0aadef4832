"""`reirrad report`: the one-page clinician report for one patient, as HTML or PDF.

``register(app)`` adds the command to the root Typer app (the entry module composes it).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from serving.settings import DEFAULT_MODEL_ALIAS as CHAMPION_ALIAS
from serving.settings import DEFAULT_MODEL_NAME as MODEL_NAME

# Heavy imports (matplotlib, fpdf2, the numba kernels) happen inside the command, so that
# composing the root app stays fast.

EXIT_INVALID = 2
EXIT_NO_MODEL = 3
FORMATS = ("html", "pdf")

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


SUFFIX_FORMATS = {".html": "html", ".htm": "html", ".pdf": "pdf"}


def _format(fmt: str | None, out: Path) -> str:
    """The format: --format if given, else --out's suffix; the two must agree."""
    by_suffix = SUFFIX_FORMATS.get(out.suffix.lower())
    if by_suffix is None:
        raise typer.BadParameter(
            f"{out.name}: the report is written as .html or .pdf", param_hint="--out"
        )
    if fmt is None:
        return by_suffix
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {FORMATS}", param_hint="--format")
    if fmt != by_suffix:
        raise typer.BadParameter(
            f"--format {fmt} does not match {out.name}; use a .{fmt} file", param_hint="--format"
        )
    return fmt


def load_for_report(bundle: Path | None, tracking_uri: str | None, model_name: str, alias: str):
    """A bundle file when given, else the registered model behind ``model_name@alias``."""
    from serving.loading import load_bundle_file, load_registered

    if bundle is not None:
        return load_bundle_file(bundle)
    return load_registered(tracking_uri, model_name, alias)


def report(
    patient: Path = typer.Option(..., "--patient", help="One patient object (JSON)."),
    out: Path = typer.Option(..., "--out", help="Where to write the report."),
    fmt: str | None = typer.Option(
        None, "--format", help="html or pdf (default: from --out's suffix, which must agree)."
    ),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI (default: the project's store)."
    ),
    bundle: Path | None = typer.Option(
        None, "--bundle", help="Use this bundle file instead of the registered champion."
    ),
    model_name: str = typer.Option(MODEL_NAME, "--model-name", help="Registered model."),
    alias: str = typer.Option(CHAMPION_ALIAS, "--alias", help="Registry alias to load."),
) -> None:
    """Write the one-page explanation report of one patient (exit 2 if the patient is invalid).

    The page shows the inputs, each endpoint's risk at 6, 12, 24 and 36 months with its 95 %
    interval, the risk curve against the cohort, an icon array, the factors that move the
    risk most (exact Shapley values over the 16 inputs), and the model's identity, validated
    performance and limits of use. Written atomically.
    """
    from models.bundle import BundleIntegrityError
    from models.store import ModelNotFoundError
    from serving.loading import report_info
    from serving.report import (
        PatientFileError,
        build_report,
        read_patient_file,
        validate_patient,
    )
    from serving.report_render import write_report

    fmt = _format(fmt, out)
    try:
        record = read_patient_file(patient)
        validate_patient(record)  # refuse before the (slower) model load
    except PatientFileError as err:
        err_console.print(f"error: {err}")
        raise typer.Exit(EXIT_INVALID) from err
    try:
        model = load_for_report(bundle, tracking_uri, model_name, alias)
    except (ModelNotFoundError, BundleIntegrityError, FileNotFoundError) as err:
        err_console.print(f"error: {err}\nTrain and promote a model first, or pass --bundle.")
        raise typer.Exit(EXIT_NO_MODEL) from err
    try:
        built = build_report(model.bundle, record, report_info(model))
    except PatientFileError as err:
        err_console.print(f"refused, no report written: {err}")
        raise typer.Exit(EXIT_INVALID) from err
    path = write_report(built, out, fmt)  # type: ignore[arg-type]
    console.print(f"report for {built.patient_id} ({fmt}) -> {path}")


def register(app: typer.Typer) -> None:
    """Add ``report`` to the root app."""
    app.command("report")(report)
