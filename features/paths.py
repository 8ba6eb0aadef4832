"""Where reirrad keeps its state: one resolver for every package (``REIRRAD_HOME``).

The state is the default MLflow tracking store (``<home>/mlflow``), and ``<home>/var`` with the
audit database and its key. Nothing is resolved from the working directory, so running a
command from another folder never starts a second store or a second audit trail.

``REIRRAD_HOME`` when set; otherwise the checkout this code runs from (the folder holding
``pyproject.toml`` and ``mlflow/README.md`` above the package), so that ``make up`` in a clone
keeps everything inside the clone; otherwise (an installed wheel) the user's data directory,
``$XDG_DATA_HOME/reirrad`` or ``~/.local/share/reirrad``.

It lives in ``features`` because that is the package every other one may import
(features <- models <- training, serving); it holds no feature logic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

ENV_HOME: Final[str] = "REIRRAD_HOME"
ENV_XDG_DATA_HOME: Final[str] = "XDG_DATA_HOME"
APP_DIRNAME: Final[str] = "reirrad"
MLFLOW_DIRNAME: Final[str] = "mlflow"
MLFLOW_DB_FILENAME: Final[str] = "mlflow.db"
VAR_DIRNAME: Final[str] = "var"
CHECKOUT_MARKERS: Final[tuple[str, ...]] = ("pyproject.toml", "mlflow/README.md")


def checkout_root() -> Path | None:
    """The source checkout this code runs from, or None when it runs from an installed wheel."""
    here = Path(__file__).resolve().parents[1]
    return here if all((here / m).is_file() for m in CHECKOUT_MARKERS) else None


def reirrad_home() -> Path:
    """The folder that holds reirrad's state (see the module docstring for the order)."""
    env = os.environ.get(ENV_HOME, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    root = checkout_root()
    if root is not None:
        return root
    data = os.environ.get(ENV_XDG_DATA_HOME, "").strip()
    base = Path(data).expanduser() if data else Path.home() / ".local" / "share"
    return (base / APP_DIRNAME).resolve()


def mlflow_dir() -> Path:
    """The default local tracking store's folder (database and artifacts)."""
    return reirrad_home() / MLFLOW_DIRNAME


def default_tracking_uri() -> str:
    """``sqlite:///<home>/mlflow/mlflow.db``: the store used when no URI is configured."""
    return f"sqlite:///{mlflow_dir() / MLFLOW_DB_FILENAME}"


def var_dir() -> Path:
    """``<home>/var``: runtime state (the audit database and its key)."""
    return reirrad_home() / VAR_DIRNAME
