"""How a clinician reads an explanation: features and inputs in words, factors, importance.

Beside the feature specifications (:mod:`features.pipeline`) because the words belong to the
definitions, not to the Shapley kernels (:mod:`models.shapley`). An explanation's players are
either the contract's inputs (what the product shows) or the model's features (the forest's
own path-dependent values); :func:`describe_value` and :func:`feature_label` read both. The
functions here take any object with ``grouped()``, ``at(h)``, ``feature_names`` and ``data``
(:class:`models.shapley.Explanation`), so this module imports nothing from ``models``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.config import ASSUMED_PRIMARY_FRACTION_GY, HORIZONS_MONTHS, MAIN_HORIZON_MONTHS
from features.pipeline import FEATURE_SPECS, RT_STAGE_NUMBER, FeatureSpec

TECHNIQUE_GROUP = "primary_technique"
"""The input the four one-hot technique features come from (and their grouped name)."""
TECHNIQUE_COLUMNS = (
    "primary_technique_2d",
    "primary_technique_3d",
    "primary_technique_imrt",
    "primary_technique_unknown",
)
TECHNIQUE_NAMES = {
    "primary_technique_2d": "2D RT",
    "primary_technique_3d": "3D-CRT",
    "primary_technique_imrt": "IMRT",
    "primary_technique_unknown": "unknown",
    "2D": "2D RT",
    "3D": "3D-CRT",
    "IMRT": "IMRT",
    "unknown": "unknown",
}
_STAGE_BY_NUMBER = {v: k for k, v in RT_STAGE_NUMBER.items()}

INPUT_SPECS: dict[str, FeatureSpec] = {
    "sex": FeatureSpec("sex", "sex", kind="category"),
    "primary_dose_gy": FeatureSpec("primary_dose_gy", "first-course dose", "Gy"),
    "primary_fraction_gy": FeatureSpec(
        "primary_fraction_gy", "first-course dose per fraction", "Gy"
    ),
    "primary_technique": FeatureSpec(
        "primary_technique", "first-course technique", kind="category"
    ),
    "reirr_dose_gy": FeatureSpec("reirr_dose_gy", "re-irradiation dose", "Gy"),
    "reirr_fractions_per_day": FeatureSpec(
        "reirr_fractions_per_day", "fractions per day", kind="category"
    ),
}
"""Inputs that are not themselves features (the others share a feature's name and meaning)."""


def _spec(name: str) -> FeatureSpec | None:
    return INPUT_SPECS.get(name) or FEATURE_SPECS.get(name)


def _is_empty(value) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def describe_value(name: str, value) -> str:
    """An input or feature and its value as a clinician reads it: 're-irradiation EQD2 72 Gy'."""
    if name == TECHNIQUE_GROUP:
        return f"first-course technique {TECHNIQUE_NAMES.get(str(value), str(value))}"
    if name == "sex":
        return f"{value} sex"
    if name == "reirr_fractions_per_day":
        return "twice-daily re-irradiation" if int(value) == 2 else "once-daily re-irradiation"
    if name == "primary_fraction_gy" and _is_empty(value):
        return (
            f"first-course dose per fraction not recorded ({ASSUMED_PRIMARY_FRACTION_GY:g} Gy "
            "assumed)"
        )
    spec = _spec(name)
    if spec is None:
        return f"{name} {value}"
    if spec.kind == "flag":
        return spec.label if float(value) >= 0.5 else f"no {spec.label}"
    if name == "rt_stage":
        stage = value if isinstance(value, str) else _STAGE_BY_NUMBER.get(int(round(value)), value)
        return f"{spec.label} {stage}"
    v = float(value)
    shown = f"{v:.0f}" if abs(v) >= 10 else f"{v:.1f}"
    return f"{spec.label} {shown} {spec.unit}".strip()


def feature_label(name: str) -> str:
    """Clinician label of an input, a model feature or the grouped technique factor."""
    if name == TECHNIQUE_GROUP:
        return "first-course technique"
    spec = _spec(name)
    if spec is None:
        return name
    return f"{spec.label} ({spec.unit})" if spec.unit else spec.label


@dataclass(frozen=True)
class Factor:
    """One input's effect on one patient's risk at one horizon."""

    name: str
    description: str  # "re-irradiation EQD2 72 Gy"
    shap: float  # probability scale
    horizon: float

    @property
    def points(self) -> float:
        """Size in percentage points."""
        return 100.0 * self.shap

    @property
    def sentence(self) -> str:
        verb = "raises" if self.shap > 0 else "lowers"
        return (
            f"{self.description} {verb} the {self.horizon:g}-month risk by "
            f"{abs(self.points):.1f} percentage points"
        )


def top_factors(exp, row: int = 0, horizon: float = HORIZONS_MONTHS[2], k: int = 5) -> list[Factor]:
    """The k inputs that move this patient's risk most at ``horizon`` (grouped technique)."""
    g = exp.grouped()
    _, phi, _ = g.at(horizon)
    order = np.argsort(-np.abs(phi[row]), kind="stable")[:k]
    return [
        Factor(
            g.feature_names[i],
            describe_value(g.feature_names[i], g.data.iloc[row, i]),
            float(phi[row, i]),
            float(horizon),
        )
        for i in order
    ]


def importance(exp, horizons=HORIZONS_MONTHS, grouped: bool = True) -> pd.DataFrame:
    """Mean |SHAP| in percentage points per input (rows, clinician labels) and horizon.

    Sorted by the main horizon (24 months) when it is among ``horizons``, else the last one.
    """
    g = exp.grouped() if grouped else exp
    cols = {}
    for h in horizons:
        _, phi, _ = g.at(h)
        cols[f"{h:g} months"] = 100.0 * np.abs(phi).mean(axis=0)
    table = pd.DataFrame(cols, index=[feature_label(n) for n in g.feature_names])
    key = f"{MAIN_HORIZON_MONTHS:g} months"
    return table.sort_values(key if key in table else table.columns[-1], ascending=False)


def value_function_text(background_size: int | None) -> str:
    """One sentence naming the explanations' value function (model card, cohort report)."""
    if background_size:
        return (
            "exact interventional Shapley values of the cumulative incidence at every grid "
            f"time, the 16 inputs of the data contract as players, against {background_size} "
            "training patients kept in the model bundle (the same value function for every "
            "member of an ensemble, whose attributions are its members' weighted like their "
            "risks)"
        )
    return (
        "exact path-dependent TreeSHAP of the cumulative incidence at every grid time (the "
        "model's features as players, the four first-course technique indicators grouped)"
    )
