"""`reirrad bento build`: the champion (or a bundle file) and the service as one Bento.

Registered under ``reirrad bento`` by :func:`serving.cli.register`. The model comes from where
``reirrad serve`` takes it (the registry's champion unless ``--bundle``), is checked against
its recorded SHA-256, stored as the BentoML model ``reirrad-champion`` and packed with the
service code by ``bentofile.yaml`` (:mod:`serving.bento`). BentoML state goes to
``$BENTOML_HOME`` (default ``~/bentoml``). Heavy imports happen inside the command.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import typer

from serving.cli import PROJECT_ROOT, cli_settings, console, err_console, fail

BENTOFILE = PROJECT_ROOT / "bentofile.yaml"

bento_app = typer.Typer(
    help="Package the service and its model as a Bento (a deployable unit, then an image).",
    no_args_is_help=True,
)


def _bundle_source(settings, tmp: Path):
    """(path, sha256, identity) of the model to pack; exit 2 with what to do when none."""
    from models.bundle import BundleIntegrityError, ModelBundle, sha256_file
    from models.store import ModelNotFoundError, fetch_champion
    from serving.bento import file_identity, registry_identity

    if settings.bundle_path is not None:
        path = Path(settings.bundle_path)
        if not path.is_file():
            raise fail(f"no bundle file at {path}")
        try:
            bundle = ModelBundle.load(path, expected_sha256=settings.bundle_sha256)
        except BundleIntegrityError as err:
            raise fail(str(err)) from err
        return path, settings.bundle_sha256 or sha256_file(path), file_identity(bundle, path)
    try:
        path, expected, info = fetch_champion(
            settings.tracking_uri, settings.model_name, settings.model_alias, dst_dir=tmp
        )
        ModelBundle.load(path, expected_sha256=expected)  # refuse a bundle that cannot load
    except ModelNotFoundError as err:
        raise fail(
            f"{err}: train one with `reirrad train --synthetic 600 --config quick` (or run "
            "`make up`), promote one with `reirrad promote --version V`, or pack a bundle "
            "file with --bundle FILE"
        ) from err
    except BundleIntegrityError as err:
        raise fail(str(err)) from err
    return path, expected, registry_identity(info)


@bento_app.command("build")
def build(
    bundle: Path | None = typer.Option(
        None, "--bundle", help="Pack this bundle file instead of the registered champion."
    ),
    bundle_sha256: str | None = typer.Option(
        None, "--bundle-sha256", help="Refuse the bundle file unless it has this SHA-256."
    ),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri",
        help="MLflow tracking URI of the registry (default: MLFLOW_TRACKING_URI, else the "
        "store in REIRRAD_HOME).",
    ),
    model_name: str | None = typer.Option(None, "--model-name", help="Registered model name."),
    alias: str | None = typer.Option(None, "--alias", help="Registered model alias."),
    bentofile: Path = typer.Option(
        BENTOFILE, "--bentofile",
        help="The build file; its folder is the build context (a source checkout).",
    ),
) -> None:
    """Build a Bento of the risk API holding the champion model (or --bundle FILE).

    The model is checked against its recorded SHA-256 and stored in BentoML's model store
    ($BENTOML_HOME/models) as `reirrad-champion`, with the SHA-256 and the MLflow model
    version in its metadata; the Bento packs it with the service code and requirements.lock.
    Nothing is downloaded. Prints the Bento's tag and the commands to serve it and to make
    a container image. Exit 2 when there is no model or no build file.
    """
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"  # before BentoML reads it: no usage reports
    from bentoml.exceptions import BentoMLException

    from models.bundle import BundleIntegrityError
    from serving.bento import BentoError, build_bento, store_bundle

    if not bentofile.is_file():
        raise fail(
            f"no build file at {bentofile}: `reirrad bento build` runs from a source checkout "
            "(or name the file with --bentofile)"
        )
    settings = cli_settings(bundle, bundle_sha256, tracking_uri, model_name, alias)
    with tempfile.TemporaryDirectory(prefix="reirrad-bento-") as tmp:
        path, sha256, identity = _bundle_source(settings, Path(tmp))
        try:
            model = store_bundle(path, sha256, identity)
        except BundleIntegrityError as err:
            raise fail(str(err)) from err
    labels = {"model": identity.name, "model_version": identity.version or "none",
              "bundle_sha256": sha256[:12]}
    try:
        bento = build_bento(bentofile.resolve(), str(model.tag), labels)
    except (BentoError, BentoMLException) as err:
        raise fail(f"the Bento was not built: {err}") from err
    version = f" v{identity.version}" if identity.version else ""
    err_console.print(
        f"model: {identity.name}{version} (SHA-256 {sha256[:12]}...) stored as {model.tag}"
    )
    console.print(str(bento.tag))
    err_console.print(
        "next:\n"
        f"  bentoml serve {bento.tag}            # serve it here (set the REIRRAD_* "
        "variables first)\n"
        f"  bentoml containerize {bento.tag}     # a container image (docs/deploy.md)"
    )


def register(app: typer.Typer) -> None:
    """Add ``bento build`` to the root app."""
    app.add_typer(bento_app, name="bento")
