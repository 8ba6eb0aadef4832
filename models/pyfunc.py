"""The MLflow pyfunc flavour of a :class:`~models.bundle.ModelBundle`.

``predict`` takes patients in the cohort contract (the API's patient fields) and returns one
row per patient with the cumulative incidence of each endpoint at the standard horizons
(``<endpoint>_<h>m``). The bundle is an artifact of the MLflow model; its SHA-256 travels
in the model config and is checked when the model is loaded.
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd

from features.config import HORIZONS_MONTHS
from models.bundle import ModelBundle

BUNDLE_ARTIFACT_KEY = "bundle"
SHA_CONFIG_KEY = "bundle_sha256"


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
