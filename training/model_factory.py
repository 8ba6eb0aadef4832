"""The one place the registered architecture is built from the configuration.

``[model] kind`` in the training configuration says which estimator is registered for each
endpoint: ``forest`` (a tuned competing-risks forest) or ``ensemble`` (the stacked super
learner of :mod:`models.ensemble`). Everything that fits the registered model (the final fit,
each bootstrap replicate, cross-validation folds) calls :func:`build_model`, so the job
validates exactly the architecture it registers. :func:`candidate_models` gives the ensemble's
members as stand-alone estimators, configured identically, so the job can report each member's
validated figures beside the ensemble's on equal terms.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from features.config import EVENT_OF_INTEREST
from training.config import TrainConfig

N_CAUSES = 2
"""Event of interest and the competing event: fixed so every resample has the same shape."""
ENSEMBLE = "ensemble"
FOREST = "forest"
TUPLE_PARAMS = ("forest_leaf_sizes", "cox_penalty_grid")
"""Ensemble parameters that TOML gives as lists and the estimator keeps as tuples."""


def model_kind(config: TrainConfig) -> str:
    """``forest`` or ``ensemble``."""
    return config.model.kind


def needs_tuning(config: TrainConfig) -> bool:
    """Whether the job's grid search over ``[forest].grid`` applies (only to a lone forest:
    the ensemble chooses between its members by its own cross-validation inside ``fit``)."""
    return model_kind(config) == FOREST


def ensemble_params(config: TrainConfig) -> dict[str, Any]:
    """Keyword arguments of the configured ensemble (without seed, jobs and causes)."""
    params: dict[str, Any] = {"n_estimators": config.forest.n_estimators}
    for k, v in config.model.params.items():
        params[k] = tuple(v) if k in TUPLE_PARAMS and isinstance(v, list) else v
    return params


def build_model(
    config: TrainConfig,
    seed: int,
    params: dict[str, Any] | None = None,
    n_jobs: int = 1,
    n_estimators: int | None = None,
) -> Any:
    """A fresh, unfitted estimator of the registered architecture, seeded.

    ``params``: the tuned forest parameters (kind ``forest``; ignored by the ensemble);
    ``n_estimators``: fewer trees per forest while tuning (None: the configured number).
    """
    kind = model_kind(config)
    if kind == FOREST:
        from training.tune import make_forest

        return make_forest(config, dict(params or {}), seed, n_jobs, n_estimators)
    if kind == ENSEMBLE:
        from models.ensemble import CompetingRiskEnsemble

        kwargs = ensemble_params(config)
        if n_estimators is not None:
            kwargs["n_estimators"] = n_estimators
        return CompetingRiskEnsemble(
            cause=EVENT_OF_INTEREST,
            n_causes=N_CAUSES,
            n_jobs=n_jobs,
            random_state=seed,
            **kwargs,
        )
    raise ValueError(f"unknown model kind {kind!r}")  # pragma: no cover - config validates


def candidate_models(config: TrainConfig, seed: int, n_jobs: int = 1) -> dict[str, Any]:
    """The registered model and, for an ensemble, each of its members alone (unfitted).

    Keys: ``ensemble`` (or ``forest``) and ``ensemble:<member>``. The members are configured
    exactly as inside the ensemble (same trees, grid, causes, seeds), so fitting and scoring
    each through the same resampling puts their figures beside the ensemble's on equal terms.
    """
    model = build_model(config, seed, n_jobs=n_jobs)
    out = {model_kind(config): model}
    if model_kind(config) == ENSEMBLE:
        for name, member in model.member_estimators(n_causes=N_CAUSES, seed=seed):
            out[f"{ENSEMBLE}:{name}"] = member
    return out


def member_candidates(registered: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fitted members of a registered ensemble as candidates: ``{"ensemble:<member>":
    {endpoint: fitted member}}`` (empty for a forest).

    A member inside the ensemble was fitted on the same rows with the same seed as it would be
    alone, so scoring these beside the ensemble in every fold of the validation gives each
    member's validated figures on equal terms, at no extra fitting cost.
    """
    out: dict[str, dict[str, Any]] = {}
    for endpoint, model in registered.items():
        for name, member in getattr(model, "members_", []):
            out.setdefault(f"{ENSEMBLE}:{name}", {})[endpoint] = member
    return out


def describe_model(model: Any) -> str:
    """One line for the model card: the architecture, and an ensemble's members and weights."""
    if hasattr(model, "members_") and hasattr(model, "weights_"):
        parts = []
        for m, (name, est) in enumerate(model.members_):
            col = model.weights_[:, m]
            w = f"{col[0]:.2f}" if np.all(col == col[0]) else ", ".join(f"{x:.2f}" for x in col)
            parts.append(f"{name} ({type(est).__name__}{_short_params(est)}; weight {w})")
        rule = (
            "shared by both causes"
            if getattr(model, "weighting", "") == "shared"
            else ("per cause")
        )
        return (
            "stacked ensemble (super learner: non-negative weights summing to 1, "
            f"{rule}, chosen by {model.cv}-fold cross-validated integrated Brier score"
            + (", out-of-bag for the forests" if getattr(model, "oob", False) else "")
            + "): "
            + "; ".join(parts)
        )
    return f"{type(model).__name__}{_short_params(model)}"


def _short_params(est: Any) -> str:
    keys = ("n_estimators", "min_samples_leaf", "max_features", "splitrule")
    got = {k: str(getattr(est, k)) for k in keys if hasattr(est, k)}
    if hasattr(est, "alphas_"):  # a Cox model: the ridge penalty of each cause as fitted
        got["ridge penalty per cause"] = "/".join(f"{a:.3g}" for a in est.alphas_)
    elif hasattr(est, "alpha"):
        got["alpha"] = str(est.alpha)
    return "" if not got else " " + ", ".join(f"{k} {v}" for k, v in got.items())
