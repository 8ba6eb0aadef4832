"""The MLflow pyfunc flavour of a :class:`~models.bundle.ModelBundle`.

``predict`` takes patients in the cohort contract (the API's patient fields) and returns one
row per patient with the cumulative incidence of each endpoint at the standard horizons
(``<endpoint>_<h>m``). The bundle is an artifact of the MLflow model; its SHA-256 travels
in the model config and is checked when the model is loaded.

The model is logged *from code* (MLflow's "models from code"): MLflow stores the file
:data:`MODEL_CODE_FILENAME` (``models/pyfunc_model.py``, which calls
``mlflow.models.set_model``) instead of a CloudPickle of a :class:`BundlePyfunc` object, so
loading the model runs our reviewed source, never unpickled bytecode, and does not depend on
the CloudPickle version of the training machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from features.config import HORIZONS_MONTHS
from models.bundle import ModelBundle

BUNDLE_ARTIFACT_KEY = "bundle"
SHA_CONFIG_KEY = "bundle_sha256"
MODEL_CODE_FILENAME = "pyfunc_model.py"
"""The models-from-code file, a module of this package (shipped in the wheel like any other)."""


class BundlePyfunc(mlflow.pyfunc.PythonModel):
    """Wraps the bundle file; stateless until :meth:`load_context`."""

    def load_context(self, context) -> None:
        expected = (context.model_config or {}).get(SHA_CONFIG_KEY)
        if not expected:
            raise ValueError("the model config lacks the bundle's SHA-256; refusing to load")
        self.bundle = ModelBundle.load(
            context.artifacts[BUNDLE_ARTIFACT_KEY], expected_sha256=expected
        )

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        return self.bundle.predict_horizons(frame, HORIZONS_MONTHS)


@contextmanager
def model_code_file() -> Iterator[Path]:
    """The path of :data:`MODEL_CODE_FILENAME` for ``log_model(python_model=...)``.

    Resolved through the installed ``models`` package (a checkout or site-packages), never
    the working directory, so that an installed wheel logs the file it ships; a zipped
    install gets a temporary copy for the duration of the block.
    """
    with resources.as_file(resources.files(__package__) / MODEL_CODE_FILENAME) as path:
        if not path.is_file():
            raise FileNotFoundError(f"the pyfunc model file {path} is not installed")
        yield path
