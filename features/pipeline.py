"""Validated records -> numeric feature vectors and endpoint labels.

One code path for training and serving: the training job, the MLflow model and the API all
call :func:`build_features` on records validated by :mod:`features.schema`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.config import (
    ALPHA_BETA_GY,
    ASSUMED_PRIMARY_FRACTION_GY,
    ENDPOINTS,
    EVENT_CENSORED,
    EVENT_COMPETING,
    EVENT_OF_INTEREST,
    REFERENCE_FRACTION_GY,
    TTR_SHORT_MONTHS,
    Endpoint,
)
from features.schema import INPUT_COLUMNS, OUTCOME_COLUMNS, PatientInput

RT_STAGE_NUMBER = {"rT1": 1, "rT2": 2, "rT3": 3, "rT4": 4}
TECHNIQUES = ("2D", "3D", "IMRT", "unknown")


@dataclass(frozen=True)
class FeatureSpec:
    """A model feature: its stable column name, a label a clinician reads, and its unit."""

    name: str
    label: str
    unit: str = ""
    kind: str = "number"  # number | flag | ordinal


FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("age_years", "age", "years"),
    FeatureSpec("sex_male", "male sex", kind="flag"),
    FeatureSpec("rt_stage", "rT stage", kind="ordinal"),
    FeatureSpec("nodal_recurrence", "nodal recurrence", kind="flag"),
    FeatureSpec("ttr_months", "time from first RT to recurrence", "months"),
    FeatureSpec("ttr_le_24m", "recurrence within 24 months", kind="flag"),
    FeatureSpec("gtv_cm3", "recurrent tumour volume (GTV)", "cm3"),
    FeatureSpec("primary_eqd2_gy", "first-course EQD2", "Gy"),
    FeatureSpec("primary_fraction_assumed", "first-course fraction size assumed", kind="flag"),
    FeatureSpec("primary_technique_2d", "first course by 2D RT", kind="flag"),
    FeatureSpec("primary_technique_3d", "first course by 3D-CRT", kind="flag"),
    FeatureSpec("primary_technique_imrt", "first course by IMRT", kind="flag"),
    FeatureSpec("primary_technique_unknown", "first-course technique unknown", kind="flag"),
    FeatureSpec("reirr_eqd2_gy", "re-irradiation EQD2", "Gy"),
    FeatureSpec("reirr_fraction_gy", "re-irradiation dose per fraction", "Gy"),
    FeatureSpec("reirr_twice_daily", "twice-daily re-irradiation", kind="flag"),
    FeatureSpec("cumulative_eqd2_gy", "cumulative EQD2 of both courses", "Gy"),
    FeatureSpec("chemotherapy", "chemotherapy with re-irradiation", kind="flag"),
    FeatureSpec("brachytherapy_boost", "brachytherapy boost", kind="flag"),
    FeatureSpec("prior_grade3_toxicity", "grade >=3 toxicity after first course", kind="flag"),
    FeatureSpec("preexisting_necrosis", "necrosis before re-irradiation", kind="flag"),
)
FEATURE_COLUMNS: tuple[str, ...] = tuple(f.name for f in FEATURES)
_FEATURE_INDEX = pd.Index(FEATURE_COLUMNS)
"""The feature tables' column index, built once: pandas builds one from a list per table
(~20 us, a tenth of serving one patient); an Index is immutable, so tables can share it."""
FEATURE_SPECS: dict[str, FeatureSpec] = {f.name: f for f in FEATURES}

FEATURE_INPUTS: dict[str, tuple[str, ...]] = {
    "age_years": ("age_years",),
    "sex_male": ("sex",),
    "rt_stage": ("rt_stage",),
    "nodal_recurrence": ("nodal_recurrence",),
    "ttr_months": ("ttr_months",),
    "ttr_le_24m": ("ttr_months",),
    "gtv_cm3": ("gtv_cm3",),
    "primary_eqd2_gy": ("primary_dose_gy", "primary_fraction_gy"),
    "primary_fraction_assumed": ("primary_fraction_gy",),
    "primary_technique_2d": ("primary_technique",),
    "primary_technique_3d": ("primary_technique",),
    "primary_technique_imrt": ("primary_technique",),
    "primary_technique_unknown": ("primary_technique",),
    "reirr_eqd2_gy": ("reirr_dose_gy", "reirr_fraction_gy"),
    "reirr_fraction_gy": ("reirr_fraction_gy",),
    "reirr_twice_daily": ("reirr_fractions_per_day",),
    "cumulative_eqd2_gy": (
        "primary_dose_gy",
        "primary_fraction_gy",
        "reirr_dose_gy",
        "reirr_fraction_gy",
    ),
    "chemotherapy": ("chemotherapy",),
    "brachytherapy_boost": ("brachytherapy_boost",),
    "prior_grade3_toxicity": ("prior_grade3_toxicity",),
    "preexisting_necrosis": ("preexisting_necrosis",),
}
"""The contract inputs each feature is computed from in :func:`feature_matrix` (its parents).

The explanations' players are the inputs, not the features: a hybrid patient is built at the
input level and pushed through :func:`feature_matrix`, and a feature's hybrid value depends
only on which of its parents come from the patient (tests/test_explain_players.py checks
this list against the definitions by perturbing each input)."""

ENDPOINT_DTYPE = np.dtype([("event", np.int64), ("time", np.float64)])


def eqd2(total_gy, fraction_gy, alpha_beta: float = ALPHA_BETA_GY):
    """Equivalent dose in 2 Gy fractions, linear-quadratic: D (d + a/b) / (2 + a/b).

    Fractions per day do not enter: incomplete repair between twice-daily fractions is not
    part of the clinical convention (literature.md section 3).
    """
    d_total = np.asarray(total_gy, dtype=float)
    d_frac = np.asarray(fraction_gy, dtype=float)
    return d_total * (d_frac + alpha_beta) / (REFERENCE_FRACTION_GY + alpha_beta)


def _missing_columns(columns, required) -> list[str]:
    return [c for c in required if c not in columns and c != "primary_fraction_gy"]


def feature_matrix(columns: Mapping[str, Sequence | np.ndarray]) -> np.ndarray:
    """The feature definitions themselves: input columns (one array each) -> (n, F) floats.

    The one place the features are defined; :func:`build_features` (tables) and
    :func:`features_from_inputs` (validated patient objects, the API) both call it. Plain
    numpy, because at serving time a pandas table per request costs milliseconds.
    """
    missing = _missing_columns(columns, [c for c in INPUT_COLUMNS if c != "patient_id"])
    if missing:
        raise ValueError(f"build_features: missing input column(s) {missing}")

    def num(name: str) -> np.ndarray:
        return np.asarray(columns[name], dtype=float)

    def flag(name: str) -> np.ndarray:
        return np.asarray(columns[name]).astype(bool).astype(float)

    n = len(columns["age_years"])
    primary_frac = (
        num("primary_fraction_gy") if "primary_fraction_gy" in columns else np.full(n, np.nan)
    )
    assumed = np.isnan(primary_frac)
    primary_frac = np.where(assumed, ASSUMED_PRIMARY_FRACTION_GY, primary_frac)
    primary_eqd2 = eqd2(num("primary_dose_gy"), primary_frac)
    reirr_eqd2 = eqd2(num("reirr_dose_gy"), num("reirr_fraction_gy"))
    ttr = num("ttr_months")
    technique = np.asarray(columns["primary_technique"]).astype(str)
    # one comparison per stage name, not a dict lookup per row: an explanation pushes ~1,400
    # hybrid records through here per patient and endpoint (0.8 of its 1.2 ms went to this)
    stage_in = np.asarray(columns["rt_stage"])
    stage = np.full(stage_in.shape, np.nan)
    for name, number in RT_STAGE_NUMBER.items():
        stage[stage_in == name] = number
    if np.isnan(stage).any():
        raise ValueError("build_features: unknown rt_stage; validate records first")
    values = {
        "age_years": num("age_years"),
        "sex_male": (np.asarray(columns["sex"]) == "male").astype(float),
        "rt_stage": stage,
        "nodal_recurrence": flag("nodal_recurrence"),
        "ttr_months": ttr,
        "ttr_le_24m": (ttr <= TTR_SHORT_MONTHS).astype(float),
        "gtv_cm3": num("gtv_cm3"),
        "primary_eqd2_gy": primary_eqd2,
        "primary_fraction_assumed": assumed.astype(float),
        "primary_technique_2d": (technique == "2D").astype(float),
        "primary_technique_3d": (technique == "3D").astype(float),
        "primary_technique_imrt": (technique == "IMRT").astype(float),
        "primary_technique_unknown": (technique == "unknown").astype(float),
        "reirr_eqd2_gy": reirr_eqd2,
        "reirr_fraction_gy": num("reirr_fraction_gy"),
        "reirr_twice_daily": (np.asarray(columns["reirr_fractions_per_day"]).astype(int) == 2)
        .astype(float),
        "cumulative_eqd2_gy": primary_eqd2 + reirr_eqd2,
        "chemotherapy": flag("chemotherapy"),
        "brachytherapy_boost": flag("brachytherapy_boost"),
        "prior_grade3_toxicity": flag("prior_grade3_toxicity"),
        "preexisting_necrosis": flag("preexisting_necrosis"),
    }
    out = np.empty((n, len(FEATURE_COLUMNS)))
    for j, name in enumerate(FEATURE_COLUMNS):
        out[:, j] = values[name]
    return out


def build_features(df: pd.DataFrame) -> pd.DataFrame:
    """Turn validated records into the model's numeric features (columns FEATURE_COLUMNS).

    The index is kept, ``patient_id`` is dropped: the key never reaches a model.
    """
    columns = {c: df[c].to_numpy() for c in INPUT_COLUMNS if c in df.columns}
    return pd.DataFrame(feature_matrix(columns), index=df.index, columns=_FEATURE_INDEX)


def features_from_inputs(patients: Sequence[PatientInput]) -> pd.DataFrame:
    """Features of patient objects already validated by the contract (no second validation).

    The API validates each request once, with the contract's own model; this goes straight
    to the feature definitions, without the table round trip of :func:`build_features`.
    """
    columns = {
        c: [getattr(p, c) for p in patients] for c in INPUT_COLUMNS if c != "patient_id"
    }
    return pd.DataFrame(feature_matrix(columns), columns=_FEATURE_INDEX)


def encode_endpoint(df: pd.DataFrame, endpoint: Endpoint) -> np.ndarray:
    """Encode one endpoint as a structured array (event: 0 censored, 1 event, 2 competing).

    mucosal_necrosis: 1 = necrosis at necrosis_months; 2 = death without necrosis.
    fatal_haemorrhage: 1 = death from haemorrhage; 2 = death from any other or unknown cause.
    Times are in months from the start of re-irradiation, as recorded (the models put them
    on the time grid).
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
    missing = [c for c in OUTCOME_COLUMNS if c not in df.columns and c != "necrosis_months"]
    if missing:
        raise ValueError(f"encode_endpoint: missing outcome column(s) {missing}")
    follow = df["followup_months"].astype(float).to_numpy()
    cause = df["death_cause"].astype(str).to_numpy()
    died = cause != "alive"
    y = np.empty(len(df), dtype=ENDPOINT_DTYPE)
    if endpoint == "mucosal_necrosis":
        nec = df["necrosis_event"].astype(bool).to_numpy()
        nec_t = (
            df["necrosis_months"].astype(float).fillna(df["followup_months"]).to_numpy()
            if "necrosis_months" in df.columns
            else follow
        )
        y["event"] = np.where(nec, EVENT_OF_INTEREST, np.where(died, EVENT_COMPETING, 0))
        y["time"] = np.where(nec, nec_t, follow)
    else:
        bleed = cause == "haemorrhage"
        y["event"] = np.where(
            bleed, EVENT_OF_INTEREST, np.where(died, EVENT_COMPETING, EVENT_CENSORED)
        )
        y["time"] = follow
    return y
