"""The `reirrad` command: composes the commands that each package owns.

Thin by design (docs/design.md): no package imports this module. `up`, the main job, lives
here because it is the one command that joins training (make sure a champion exists) and
serving (serve it), which may not import each other. Every package's commands import their
heavy dependencies inside the command, so that `reirrad --help` answers at once.
"""

from __future__ import annotations

import os

import typer

from features.cli import app as cohort_app
from serving.bento_cli import register as register_bento
from serving.cli import DEFAULT_HOST, DEFAULT_PORT
from serving.cli import register as register_serving
from serving.report_cli import register as register_patient_report
from training.cli import register as register_training
from training.report_cli import register as register_model_reports

app = typer.Typer(
    help="reirrad: risk of severe late toxicity after re-irradiation of recurrent "
    "nasopharyngeal carcinoma. Research software trained on synthetic data; not a "
    "medical device.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(cohort_app, name="cohort")
register_training(app)
register_model_reports(app)
register_serving(app)
register_patient_report(app)
register_bento(app)


@app.command("up")
def up(
    host: str = typer.Option(DEFAULT_HOST, help="Interface the API listens on."),
    port: int = typer.Option(DEFAULT_PORT, help="Port the API listens on."),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the store in REIRRAD_HOME).",
    ),
) -> None:
    """The main job: train on the synthetic cohort if no champion is registered, then serve.

    Training uses the quick configuration (fixed size and seed, a modern mix of schedules)
    and must pass the promotion gate's absolute limits; the API then serves the champion.
    Without REIRRAD_API_TOKENS or REIRRAD_API_TOKEN_HASHES, a development token is created
    once (REIRRAD_HOME/var/dev_api_token) and printed with the URL and a working curl.
    """
    from features.paths import var_dir
    from serving.auth import DEV_TOKEN_FILENAME, dev_token
    from serving.cli import cli_settings, port_in_use, run_server
    from serving.settings import ENV_API_TOKEN_HASHES, ENV_API_TOKENS
    from training.train import ensure_champion

    if port_in_use(host, port):  # say it before minutes of training, not after
        typer.echo(f"error: port {port} on {host} is in use: choose another with --port", err=True)
        raise typer.Exit(2)
    token = None
    if not os.environ.get(ENV_API_TOKENS, "").strip() and not os.environ.get(
        ENV_API_TOKEN_HASHES, ""
    ).strip():
        path = var_dir() / DEV_TOKEN_FILENAME
        token = dev_token(path)
        os.environ[ENV_API_TOKENS] = token
        typer.echo(f"API token (development, kept in {path}): {token}")
    info = ensure_champion(tracking_uri)
    state = "trained and registered" if info.trained else "found"
    typer.echo(f"champion: reirrad-toxicity v{info.version} ({state})")
    raise typer.Exit(run_server(cli_settings(tracking_uri=tracking_uri), host, port, token))


if __name__ == "__main__":
    app()
