"""`reirrad cohort synth` and `reirrad cohort calibrate`: the synthetic cohort's commands.

Kept apart from ``features/cli.py`` (which owns ``cohort check``) and attached to its Typer
app by :func:`register`, so each module keeps one job.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from features.config import DEFAULT_CALIBRATION_N, DEFAULT_CALIBRATION_SEED

if TYPE_CHECKING:  # the simulator (numpy, pandas, scipy) is imported by the commands
    from rich.table import Table

    from features.calibration import CalibrationRow

EXIT_TARGET_MISSED = 1
EXIT_BAD_ARGUMENT = 2
TABLE_MIN_WIDTH = 120  # the calibration table stays readable when piped (rich assumes 80)
console = Console(highlight=False)


def synth(
    n: int = typer.Option(..., "--n", min=1, help="Number of synthetic patients."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same file."),
    out: Path = typer.Option(..., "--out", help="Output file, .csv or .parquet (by suffix)."),
    twice_daily_share: float = typer.Option(
        0.0,
        "--twice-daily-share",
        min=0.0,
        max=1.0,
        help="Share of twice-daily (1.2 Gy b.i.d.) courses; 0 reproduces the seed cohort, "
        "0.2 is a modern mix for training.",
    ),
) -> None:
    """Write a synthetic cohort (inputs and outcomes) that passes `cohort check`.

    The file is written atomically; the same --n, --seed and options give the same bytes.
    """
    from features.io import CohortFileError, write_table
    from features.synthetic import simulate_cohort

    df = simulate_cohort(n, seed, twice_daily_share=twice_daily_share)
    try:
        path = write_table(df, out)
    except CohortFileError as err:
        console.print(f"error: {err}", markup=False)
        raise typer.Exit(EXIT_BAD_ARGUMENT) from err
    console.print(f"{path}: {len(df)} synthetic patient(s), seed {seed}", markup=False)


def _fmt(row: CalibrationRow, value: float) -> str:
    return f"{value:.2f}" if abs(row.target) < 10 else f"{value:.1f}"


def render_table(rows: list[CalibrationRow], title: str) -> Table:
    """The calibration rows as a rich table (shared by the command and the datasheet)."""
    from rich.table import Table

    table = Table(title=title)
    for col, justify in (
        ("target", "left"),
        ("published", "right"),
        ("simulated", "right"),
        ("tolerance", "right"),
        ("holds", "center"),
        ("source", "left"),
    ):
        table.add_column(col, justify=justify)
    for r in rows:
        verdict = {True: "yes", False: "NO", None: "(info)"}[r.holds]
        tol = "-" if r.tolerance is None else f"±{r.tolerance:g}"
        table.add_row(r.name, _fmt(r, r.target), _fmt(r, r.simulated), tol, verdict, r.source)
    return table


def calibrate(
    n: int = typer.Option(DEFAULT_CALIBRATION_N, "--n", min=100, help="Simulated patients."),
    seed: int = typer.Option(DEFAULT_CALIBRATION_SEED, "--seed", help="Random seed."),
) -> None:
    """Check the synthetic cohort against every target of literature.md section 4.

    Prints each target, the simulated value, the tolerance and whether it holds; exits 1 if
    any target is missed ("info" rows are context and never fail).
    """
    from features.calibration import all_targets_hold, calibration_table

    rows = calibration_table(n, seed)
    out = Console(highlight=False, width=max(console.width, TABLE_MIN_WIDTH))
    out.print(render_table(rows, f"synthetic cohort vs published targets (n={n}, seed={seed})"))
    ok = all_targets_hold(rows)
    n_targets = sum(r.kind == "target" for r in rows)
    n_held = sum(bool(r.holds) for r in rows if r.kind == "target")
    out.print(f"{n_held} of {n_targets} targets hold", markup=False)
    if not ok:
        raise typer.Exit(EXIT_TARGET_MISSED)


def register(app: typer.Typer) -> None:
    """Attach `synth` and `calibrate` to the `cohort` command group."""
    app.command("synth")(synth)
    app.command("calibrate")(calibrate)
