"""`reirrad cohort ...`: commands that check and generate cohort files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    help="Check cohort files against the data contract, and generate the synthetic cohort.",
    no_args_is_help=True,
)
console = Console(stderr=False, highlight=False, soft_wrap=True)

EXIT_INVALID = 2


@app.command("check")
def check(
    path: Path = typer.Argument(..., help="Cohort file (.csv or .parquet)."),
    for_training: bool = typer.Option(
        False,
        "--for-training",
        help="Require the outcome columns (a file used to train). Without it, outcomes are "
        "checked only when the file has them.",
    ),
    max_shown: int = typer.Option(200, help="Print at most this many violations."),
) -> None:
    """Validate a cohort file and print every violation with its row and column.

    Rows are numbered from 1 over the data rows (the CSV header is not a row). Exits 0 when
    the file is valid (warnings allowed), 2 when it is not. Writes nothing.
    """
    from features.io import CohortFileError, load_table
    from features.schema import validate_table

    try:
        df = load_table(path)
    except CohortFileError as err:
        console.print(f"error: table: {err}")
        raise typer.Exit(EXIT_INVALID) from err
    report = validate_table(df, require_outcomes=for_training)
    shown = (report.errors + report.warnings)[:max_shown]
    for v in shown:
        console.print(str(v), markup=False)
    hidden = len(report.errors) + len(report.warnings) - len(shown)
    if hidden > 0:
        console.print(f"... {hidden} more not shown (raise --max-shown)")
    status = "valid" if report.ok else "INVALID"
    console.print(
        f"{path}: {status}: {report.n_rows} row(s), {len(report.errors)} error(s), "
        f"{len(report.warnings)} warning(s)",
        markup=False,
    )
    if not report.ok:
        raise typer.Exit(EXIT_INVALID)


# `cohort synth` and `cohort calibrate` live with the synthetic cohort (features/synthetic_cli.py).
from features.synthetic_cli import register as _register_synthetic  # noqa: E402

_register_synthetic(app)
