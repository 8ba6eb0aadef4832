"""The model bundle: what a training run produces, MLflow stores and BentoML serves.

One object carries both endpoints' fitted models, the time grid, the feature pipeline's
column list and a summary of the training data (for applicability checks and the cohort
baseline), so that serving needs nothing from `training/` (design.md). It is saved with
joblib (scikit-learn's own persistence) and its SHA-256 is checked whenever it is loaded.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from features.config import ENDPOINTS, HORIZONS_MONTHS
from features.io import atomic_path
from features.pipeline import FEATURE_COLUMNS, build_features
from features.schema import validated_frame
from features.timegrid import TimeGrid

BUNDLE_FORMAT_VERSION = 1


class BundleIntegrityError(RuntimeError):
    """The bundle file does not have the SHA-256 recorded when it was logged."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def summarise_training_data(features: pd.DataFrame, records: pd.DataFrame) -> dict[str, Any]:
    """Ranges of every feature and category counts: the model's domain of applicability."""
    ranges = {
        c: {"min": float(features[c].min()), "max": float(features[c].max())}
        for c in features.columns
    }
    categories = {
        c: sorted(records[c].astype(str).unique().tolist())
        for c in ("sex", "rt_stage", "primary_technique", "reirr_fractions_per_day")
        if c in records.columns
    }
    return {"n_rows": int(len(features)), "feature_ranges": ranges, "categories": categories}


@dataclass
class ModelBundle:
    """Both endpoints' fitted models plus everything needed to use them safely."""

    models: dict[str, Any]
    grid: TimeGrid
    feature_columns: tuple[str, ...] = FEATURE_COLUMNS
    training_summary: dict[str, Any] = field(default_factory=dict)
    baseline_cif: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = BUNDLE_FORMAT_VERSION

    def __post_init__(self) -> None:
        missing = [e for e in ENDPOINTS if e not in self.models]
        if missing:
            raise ValueError(f"bundle lacks a model for endpoint(s) {missing}")
        if tuple(self.feature_columns) != FEATURE_COLUMNS:
            raise ValueError(
                "bundle was trained with other features than this code builds; retrain it"
            )

    # -- prediction -------------------------------------------------------------------
    def features(self, records: pd.DataFrame) -> pd.DataFrame:
        """Validate raw records with the contract and build the model's features."""
        return build_features(validated_frame(records, require_outcomes=False))

    def predict_cif_features(self, X: pd.DataFrame, times=None) -> dict[str, np.ndarray]:
        """CIF of each endpoint's event, shape (n, len(times)), from built features."""
        t = self.grid.points if times is None else self.grid.check_horizons(times)
        return {e: m.predict_cif(X, t)[:, 0, :] for e, m in self.models.items()}

    def predict_cif(self, records: pd.DataFrame, times=None) -> dict[str, np.ndarray]:
        """CIF of each endpoint's event for raw records, shape (n, len(times))."""
        return self.predict_cif_features(self.features(records), times)

    def predict_horizons(self, records: pd.DataFrame, horizons=HORIZONS_MONTHS) -> pd.DataFrame:
        """One row per patient: `<endpoint>_<h>m` columns with the CIF at each horizon."""
        h = self.grid.check_horizons(horizons)
        cif = self.predict_cif(records, h)
        out = {"patient_id": records["patient_id"].astype(str).to_numpy()}
        for endpoint, values in cif.items():
            for j, hh in enumerate(h):
                out[f"{endpoint}_{hh:g}m"] = values[:, j]
        return pd.DataFrame(out)

    def applicability_warnings(self, X: pd.DataFrame) -> list[list[str]]:
        """Per patient, the features that lie outside the training data's range."""
        ranges = self.training_summary.get("feature_ranges", {})
        notes: list[list[str]] = []
        for _, row in X.iterrows():
            mine = []
            for c, r in ranges.items():
                v = float(row[c])
                if v < r["min"] or v > r["max"]:
                    mine.append(
                        f"{c}={v:g} is outside the training range [{r['min']:g}, {r['max']:g}]"
                    )
            notes.append(mine)
        return notes

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> str:
        """Write atomically; return the file's SHA-256."""
        p = Path(path)
        with atomic_path(p) as tmp:
            joblib.dump(self, tmp, compress=3)
        return sha256_file(p)

    @staticmethod
    def load(path: str | os.PathLike[str], expected_sha256: str | None = None) -> ModelBundle:
        """Load a bundle, refusing it when its SHA-256 differs from the expected one."""
        if expected_sha256 is not None:
            actual = sha256_file(path)
            if actual != expected_sha256:
                raise BundleIntegrityError(
                    f"{path}: SHA-256 {actual[:12]}... differs from the recorded "
                    f"{expected_sha256[:12]}...; the file was changed after it was logged"
                )
        obj = joblib.load(path)
        if not isinstance(obj, ModelBundle):
            raise BundleIntegrityError(f"{path}: not a reirrad model bundle")
        if obj.format_version != BUNDLE_FORMAT_VERSION:
            raise BundleIntegrityError(
                f"{path}: bundle format {obj.format_version}, this code reads "
                f"{BUNDLE_FORMAT_VERSION}"
            )
        return obj
