"""Explanations of the registered model: today's public names, kept importable from here.

The kernels and the :class:`Explanation` type live in :mod:`models.shapley`; the clinician
wording (factors, labels, importance tables) beside the feature specifications, in
:mod:`features.wording`. See :mod:`models.shapley` for the value functions.
"""

from __future__ import annotations

from features.players import (
    PLAYERS,
    PlayerMap,
    background_inputs,
    feature_players,
    input_players,
)
from features.wording import (
    TECHNIQUE_COLUMNS,
    TECHNIQUE_GROUP,
    TECHNIQUE_NAMES,
    Factor,
    describe_value,
    feature_label,
    importance,
    top_factors,
)
from models.shapley import (
    ADDITIVITY_TOL,
    DEFAULT_BACKGROUND_SIZE,
    INPUT_METHOD,
    MAX_FEATURES_INTERVENTIONAL,
    N_THREADS,
    AdditivityError,
    BundleExplainer,
    Explanation,
    ForestExplainer,
    InputExplainer,
    Method,
    PackedForest,
    explain_bundle,
    pack_forest,
    sample_background,
)

__all__ = [
    "ADDITIVITY_TOL",
    "DEFAULT_BACKGROUND_SIZE",
    "INPUT_METHOD",
    "MAX_FEATURES_INTERVENTIONAL",
    "N_THREADS",
    "PLAYERS",
    "TECHNIQUE_COLUMNS",
    "TECHNIQUE_GROUP",
    "TECHNIQUE_NAMES",
    "AdditivityError",
    "BundleExplainer",
    "Explanation",
    "Factor",
    "ForestExplainer",
    "InputExplainer",
    "Method",
    "background_inputs",
    "PackedForest",
    "PlayerMap",
    "describe_value",
    "explain_bundle",
    "feature_label",
    "feature_players",
    "importance",
    "input_players",
    "pack_forest",
    "sample_background",
    "top_factors",
]
