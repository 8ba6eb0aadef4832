"""The file MLflow logs as the model's code (MLflow "models from code").

``training/train.py`` passes this file's path as ``python_model``; MLflow copies it into the
logged model and, at load, executes it under a fresh module name and takes the object given to
``mlflow.models.set_model``. It holds no state: the bundle comes from the model's artifacts
and its SHA-256 from the model config (:meth:`models.pyfunc.BundlePyfunc.load_context`).
Importing it elsewhere is pointless (it only registers the object with MLflow).
"""

from __future__ import annotations

import mlflow.models

from models.pyfunc import BundlePyfunc

mlflow.models.set_model(BundlePyfunc())
