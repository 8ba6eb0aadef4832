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
from features.pipeline import FEATURE_COLUMNS, build_features, features_from_inputs
from features.schema import PatientInput, validated_frame
from features.timegrid import TimeGrid
from models.uncertainty import DEFAULT_LEVEL, forest_interval, ij_variance, normal_quantile

BUNDLE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class DifferenceInterval:
    """Each row's CIF minus the reference row's, with a confidence interval, each (n, T)."""

    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


class BundleIntegrityError(RuntimeError):
    """The bundle file does not have the SHA-256 recorded when it was logged, or cannot be
    read as a bundle."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(
    path: str | os.PathLike[str], expected_sha256: str, name: str | None = None
) -> None:
    """Refuse ``path`` (:class:`BundleIntegrityError`) unless its SHA-256 is the expected one.

    Reads the bytes only, never unpickles them: a changed file is refused before any of its
    content runs, and the check is cheap enough for a server to make before it starts.
    ``name``: how the message names the file (a downloaded copy's path says little).
    """
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise BundleIntegrityError(
            f"{name or path}: SHA-256 {actual[:12]}... differs from the recorded "
            f"{expected_sha256[:12]}...; the file was changed after it was logged"
        )


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
    validation: dict[str, Any] | None = None
    """The validated figures with their 95 % intervals, counts and method (training writes it;
    the model card, the report and /model_info show it). None in bundles saved before it."""
    format_version: int = BUNDLE_FORMAT_VERSION
    intervals: dict[str, Any] | None = None
    """Per endpoint, a fitted :class:`models.intervals.ResampleIntervals` (None: a bundle from
    before they existed; its forests' infinitesimal-jackknife intervals are used)."""
    interval_record: dict[str, Any] | None = None
    """How the interval method covered the true risk on the synthetic cohort (configuration,
    n, coverage), written by ``benchmarks/bench_intervals.py``; quoted by the report."""
    background: pd.DataFrame | None = None
    """Inputs (the contract's 16 fields, no patient key) of at most
    ``models.shapley.DEFAULT_BACKGROUND_SIZE`` training patients drawn with the run's seed:
    the background of the explanations' value function (:mod:`models.shapley`). Patient-level
    rows in the served file are the price of exact explanations of any model (a Cox member
    has no tree covers to average over); without identifiers, and at most K of them."""

    def __post_init__(self) -> None:
        missing = [e for e in ENDPOINTS if e not in self.models]
        if missing:
            raise ValueError(f"bundle lacks a model for endpoint(s) {missing}")
        if tuple(self.feature_columns) != FEATURE_COLUMNS:
            raise ValueError(
                "bundle was trained with other features than this code builds; retrain it"
            )

    def explanation_background(self) -> pd.DataFrame | None:
        """The explanations' background inputs (None for bundles written before they were kept)."""
        return getattr(self, "background", None)

    # -- prediction -------------------------------------------------------------------
    def features(self, records: pd.DataFrame) -> pd.DataFrame:
        """Validate raw records with the contract and build the model's features."""
        return build_features(validated_frame(records, require_outcomes=False))

    def features_from_inputs(self, patients: list[PatientInput]) -> pd.DataFrame:
        """Features of patient objects the contract already validated (the API's path)."""
        return features_from_inputs(patients)

    def predict_cif_features(
        self, X: pd.DataFrame, times=None, endpoints=None
    ) -> dict[str, np.ndarray]:
        """CIF of each endpoint's event, shape (n, len(times)), from built features.

        ``times`` None: the whole grid, as the models give it (no stepping onto itself).
        ``endpoints``: only these (``/explain`` needs one; each endpoint's numbers are the
        same whichever others are asked for)."""
        models = self.models if endpoints is None else {e: self.models[e] for e in endpoints}
        if times is None:  # the event of interest, the first cause (as [:, 0, :] below)
            return {e: m.predict_cause_cif(X, 1) for e, m in models.items()}
        t = self.grid.check_horizons(times)
        return {e: m.predict_cif(X, t)[:, 0, :] for e, m in models.items()}

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
        notes: list[list[str]] = [[] for _ in range(len(X))]
        if not ranges:
            return notes
        # one comparison of the whole table (a pandas column per feature cost ~0.2 ms a call)
        names = list(ranges)
        values = (X if list(X.columns) == names else X[names]).to_numpy(dtype=float)
        low = np.array([ranges[c]["min"] for c in names], dtype=float)
        high = np.array([ranges[c]["max"] for c in names], dtype=float)
        outside = (values < low) | (values > high)
        for j in np.flatnonzero(outside.any(axis=0)):  # features in the summary's order
            c, r = names[j], ranges[names[j]]
            for i in np.flatnonzero(outside[:, j]):
                notes[i].append(
                    f"{c}={values[i, j]:g} is outside the training range "
                    f"[{r['min']:g}, {r['max']:g}]"
                )
        return notes

    # -- uncertainty ------------------------------------------------------------------
    # The serving code asks the bundle, never a model, for intervals. Bundles trained since
    # models/intervals.py carry a fitted interval model per endpoint (``intervals``); older
    # ones fall back to the forests' infinitesimal-jackknife intervals.
    def risk_intervals(
        self,
        X: pd.DataFrame,
        times,
        cif: dict[str, np.ndarray] | None = None,
        level: float = DEFAULT_LEVEL,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(lower, upper) of each endpoint's CIF at ``times``, each (n, len(times)).

        Guaranteed: 0 <= lower <= cif <= upper <= 1 and both bounds non-decreasing in time.
        The bounds are built on the whole grid as a non-decreasing envelope and then read at
        ``times``. ``cif``: this bundle's ``predict_cif_features(X, times)`` when the caller
        has it already (the bounds are ordered around exactly these values); when ``times``
        is the whole grid (or None) it is used as is, otherwise the grid CIF is predicted once
        more.
        """
        points = self.grid.points
        t = points if times is None else self.grid.check_horizons(times)
        cif = self.predict_cif_features(X, times) if cif is None else cif
        on_grid = times is None or (len(t) == len(points) and np.allclose(t, points))
        cols = np.arange(len(points)) if times is None else self.grid.index_of(t)
        grid_cif = None
        if self.intervals is not None and not on_grid:
            grid_cif = self.predict_cif_features(X)
        # the interval models read plain arrays: convert the table once, not per endpoint
        Xa = X.to_numpy(dtype=float) if isinstance(X, pd.DataFrame) else X
        out = {}
        found: list[tuple[object, tuple[np.ndarray, np.ndarray]]] = []  # neighbours, once
        for e, model in self.models.items():
            if self.intervals is not None:
                g = np.asarray(cif[e] if on_grid else grid_cif[e], dtype=float)
                iv = self.intervals[e]
                near = next((nb for other, nb in found if iv.same_lookup(other)), None)
                if near is None:
                    near = iv.neighbours(Xa)
                    found.append((iv, near))
                lower, upper = iv.grid_interval(Xa, g, level=level, neighbours=near)
                if on_grid:  # read on the grid around these very CIFs: its guarantees hold
                    out[e] = (lower, upper)
                    continue
            else:
                band = forest_interval(model, X, points, level=level)
                upper = np.maximum.accumulate(band.upper, axis=1)
                lower = np.minimum.accumulate(band.lower[:, ::-1], axis=1)[:, ::-1]
            lower = np.where(cols >= 0, lower[:, np.maximum(cols, 0)], 0.0)
            upper = np.where(cols >= 0, upper[:, np.maximum(cols, 0)], 0.0)
            c = np.asarray(cif[e], dtype=float)
            lower = np.clip(np.minimum(lower, c), 0.0, 1.0)
            out[e] = (lower, np.clip(np.maximum(upper, c), 0.0, 1.0))
        return out

    def paired_difference_intervals(
        self,
        X: pd.DataFrame,
        times,
        reference: int = 0,
        cif: dict[str, np.ndarray] | None = None,
        level: float = DEFAULT_LEVEL,
    ) -> dict[str, DifferenceInterval]:
        """Each row's CIF minus row ``reference``'s (the same patient under two plans), with the
        interval of that *paired* difference, per endpoint.

        Two overlapping marginal intervals say nothing about a difference whose two terms
        share most of their error. With an interval model (``intervals``) the difference's
        bias and spread come from the same resamples for both rows
        (:meth:`models.intervals.ResampleIntervals.grid_difference`). Older forest bundles:
        the paired difference is itself a bagged estimate, the mean over trees of each tree's
        difference, so the infinitesimal jackknife applies to it unchanged (Wager, Hastie &
        Efron 2014).
        """
        t = self.grid.check_horizons(times)
        cif = self.predict_cif_features(X, t) if cif is None else cif
        cols = self.grid.index_of(t)
        out = {}
        for e, model in self.models.items():
            c = np.asarray(cif[e], dtype=float)
            if self.intervals is not None:
                out[e] = DifferenceInterval(
                    *self.intervals[e].grid_difference(X, c, cols, reference, level)
                )
                continue
            per_tree = model.predict_cif_per_tree(X)  # (B, n, G) on the grid
            diff = per_tree - per_tree[:, [reference], :]
            se = np.sqrt(ij_variance(diff, model.inbag_counts_))
            se_at = np.where(cols >= 0, se[:, np.maximum(cols, 0)], 0.0)
            estimate = c - c[[reference]]
            half = normal_quantile(level) * se_at  # a difference lies in [-1, 1]
            lower = np.clip(estimate - half, -1.0, 1.0)
            upper = np.clip(estimate + half, -1.0, 1.0)
            out[e] = DifferenceInterval(
                estimate, np.minimum(lower, estimate), np.maximum(upper, estimate)
            )
        return out

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
            check_sha256(path, expected_sha256)
        try:
            obj = joblib.load(path)
        except FileNotFoundError:
            raise
        except Exception as err:  # a truncated or damaged file fails anywhere in unpickling
            raise BundleIntegrityError(
                f"{path}: not a readable model bundle ({type(err).__name__}); the file is "
                "damaged or is not a bundle"
            ) from err
        if not isinstance(obj, ModelBundle):
            raise BundleIntegrityError(f"{path}: not a reirrad model bundle")
        if obj.format_version != BUNDLE_FORMAT_VERSION:
            raise BundleIntegrityError(
                f"{path}: bundle format {obj.format_version}, this code reads "
                f"{BUNDLE_FORMAT_VERSION}"
            )
        return obj
