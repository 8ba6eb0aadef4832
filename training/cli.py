"""`reirrad train` and `reirrad promote`: the retraining job and the registry's manual lever.

Heavy imports (MLflow, the models) happen inside the commands, so that composing this app
into the root `reirrad` command costs nothing until a training command runs.

The entry module composes these with :func:`register` (design.md: no package imports it).
Exit codes: 0 done (whatever the gate decided), 2 data refused by the contract or bad
arguments, 3 tracking store unreachable or no promotion lock for it (training/locks.py),
4 the run failed (marked FAILED in MLflow), 5 (`promote`) another promotion held the lock
too long.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

EXIT_INVALID_DATA = 2
EXIT_TRACKING = 3
EXIT_RUN_FAILED = 4
EXIT_LOCK_TIMEOUT = 5

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    help="Train, evaluate, register and promote reirrad models.", no_args_is_help=True
)


def train_command(
    data: Path | None = typer.Option(
        None, "--data", help="Cohort file with outcomes (.csv or .parquet)."
    ),
    synthetic: int | None = typer.Option(
        None, "--synthetic", min=50, help="Train on N patients of the synthetic cohort instead."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of every modelling step."),
    config: str = typer.Option(
        "release", "--config", help="Preset (quick, release) or a TOML config file."
    ),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the store in REIRRAD_HOME).",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="Run tuning and bootstrap as Ray tasks on this cluster ('auto', host:port, "
        "ray://...; 'local' starts a private instance). Default: local processes.",
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Local worker processes (default: from the config)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Validate the data, tune, fit, evaluate (bootstrap), log to MLflow, register and gate.

    The new version gets the alias 'challenger'; it becomes 'champion' only if it passes
    the gate stated in the config. The gate's verdict and reasons are printed and logged.
    """
    from features.io import CohortFileError
    from features.schema import CohortValidationError
    from training.data import TooFewRowsError
    from training.locks import PromotionLockUnavailable
    from training.tracking import TrackingUnavailableError
    from training.train import train

    if (data is None) == (synthetic is None):
        err_console.print("error: give exactly one of --data PATH or --synthetic N")
        raise typer.Exit(EXIT_INVALID_DATA)
    try:
        result = train(
            data_path=data,
            synthetic_n=synthetic,
            seed=seed,
            config=config,
            tracking_uri=tracking_uri,
            ray_address=ray_address,
            n_workers=workers,
            progress=progress,
            echo=lambda s: console.print(s, markup=False),
        )
    except (TrackingUnavailableError, PromotionLockUnavailable) as err:
        err_console.print(f"error: {err}", markup=False)
        raise typer.Exit(EXIT_TRACKING) from err
    except (CohortValidationError, CohortFileError, TooFewRowsError) as err:
        err_console.print(
            f"error: the data were refused; nothing was trained or logged.\n{err}", markup=False
        )
        raise typer.Exit(EXIT_INVALID_DATA) from err
    except FileNotFoundError as err:
        err_console.print(f"error: {err}", markup=False)
        raise typer.Exit(EXIT_INVALID_DATA) from err
    except KeyboardInterrupt:
        err_console.print("interrupted: the MLflow run is marked FAILED; nothing was registered")
        raise typer.Exit(EXIT_RUN_FAILED) from None
    except Exception as err:
        err_console.print(
            f"error: training failed ({type(err).__name__}: {err}); the MLflow run is marked "
            "FAILED and nothing was registered",
            markup=False,
        )
        raise typer.Exit(EXIT_RUN_FAILED) from err
    console.print(
        f"run {result.run_id}: {result.gate.summary().splitlines()[0]}; "
        f"version {result.version}; champion v{result.champion_version}; "
        f"{result.seconds:.0f} s on {result.engine}",
        markup=False,
    )


def promote_command(
    version: int = typer.Option(..., "--version", min=1, help="Model version to make champion."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    model_name: str = typer.Option("reirrad-toxicity", "--model-name"),
) -> None:
    """Point the 'champion' alias at VERSION (promotion by hand, or rollback).

    Takes the same promotion lock as the training job (training/locks.py), so it never
    interleaves with a job's champion re-read, gate and promotion. No gate: a person decides.
    """
    from training import locks, registry, tracking
    from training.tracking import TrackingUnavailableError

    try:
        uri, client = tracking.connect(tracking_uri)
        locks.check_promotion_lock(uri, model_name=model_name)
    except (TrackingUnavailableError, locks.PromotionLockUnavailable) as err:
        err_console.print(f"error: {err}", markup=False)
        raise typer.Exit(EXIT_TRACKING) from err
    try:
        with locks.promotion_lock(uri, model_name=model_name) as lock:
            before = registry.get_alias(client, model_name, registry.CHAMPION_ALIAS)
            lock.check()
            previous = registry.promote(client, model_name, version)
    except locks.PromotionLockTimeout as err:
        err_console.print(f"error: {err}; nothing promoted", markup=False)
        raise typer.Exit(EXIT_LOCK_TIMEOUT) from err
    except locks.PromotionLockError as err:
        err_console.print(f"error: {err}; nothing promoted", markup=False)
        raise typer.Exit(EXIT_TRACKING) from err
    except Exception as err:  # MlflowException: no such version
        err_console.print(f"error: cannot promote {model_name} v{version}: {err}", markup=False)
        raise typer.Exit(EXIT_INVALID_DATA) from err
    if before is not None and int(before.version) == version:
        console.print(f"champion is already {model_name} v{version}", markup=False)
        return
    was = f" (was v{previous}; still registered for rollback)" if previous else ""
    console.print(f"champion -> {model_name} v{version}{was}", markup=False)


def register(root: typer.Typer) -> None:
    """Add `train` and `promote` to the root `reirrad` app."""
    root.command("train")(train_command)
    root.command("promote")(promote_command)


register(app)
