"""Scoring: the pure functions that the HTTP service and the offline `score` command share.

Records are validated by the cohort contract and turned into features by the same code as at
training time (``ModelBundle.features``). A request that breaks the contract is refused whole
with the location of every problem (:class:`ScoringInputError`): nothing is partly scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.config import (
    ASSUMED_PRIMARY_FRACTION_GY,
    ENDPOINT_LABELS,
    ENDPOINTS,
    HORIZONS_MONTHS,
)
from features.schema import CohortValidationError, PatientInput
from features.timegrid import HorizonOutOfGridError
from models.bundle import ModelBundle
from serving.schemas import PLAN_FIELDS, Curve, EndpointRisk, PatientScore, PlanScore

Loc = tuple[str | int, ...]

ASSUMED_FRACTION_NOTE = (
    f"primary_fraction_gy was empty: {ASSUMED_PRIMARY_FRACTION_GY:g} Gy per fraction was "
    "assumed for the first course's EQD2"
)
PLAN_KEY_PREFIX = "plan-"
"""Internal keys of the plan variants (the contract refuses duplicate keys in one table)."""


@dataclass(frozen=True)
class Problem:
    """One reason a request was refused: where (a pydantic-style location) and why."""

    loc: Loc
    msg: str

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.loc) or "request"
        return f"{where}: {self.msg}"


class ScoringInputError(ValueError):
    """The request breaks the contract; nothing was scored."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def records_frame(patients: Sequence[PatientInput]) -> pd.DataFrame:
    """Validated patient objects as the raw-record table the bundle expects."""
    return pd.DataFrame([p.model_dump() for p in patients])


def check_horizons(bundle: ModelBundle, horizons: Sequence[float]) -> np.ndarray:
    """The horizons as an array, refused when any lies beyond the bundle's time grid."""
    try:
        return bundle.grid.check_horizons(list(horizons))
    except HorizonOutOfGridError as err:
        raise ScoringInputError([Problem(("horizons",), str(err))]) from err


def _features(bundle: ModelBundle, records: pd.DataFrame, where: str, indexed: bool):
    """Validate and build features, mapping contract violations to request locations."""
    try:
        return bundle.features(records)
    except CohortValidationError as err:
        problems = []
        for v in err.report.errors:
            loc: list[str | int] = [where]
            if indexed and v.row is not None:
                loc.append(v.row - 1)
            if v.column:
                loc.append(v.column)
            problems.append(Problem(tuple(loc), v.reason))
        raise ScoringInputError(problems) from err


def _risks(
    cif_h: dict[str, np.ndarray],
    curves: dict[str, np.ndarray] | None,
    i: int,
    h: np.ndarray,
    grid_points: np.ndarray,
) -> list[EndpointRisk]:
    out = []
    for endpoint in ENDPOINTS:
        curve = None
        if curves is not None:
            curve = Curve(months=grid_points.tolist(), cif=curves[endpoint][i].tolist())
        out.append(
            EndpointRisk(
                endpoint=endpoint,
                label=ENDPOINT_LABELS[endpoint],
                horizons_months=h.tolist(),
                cif=cif_h[endpoint][i].tolist(),
                curve=curve,
            )
        )
    return out


@dataclass(frozen=True)
class _Scored:
    features: pd.DataFrame
    risks: list[list[EndpointRisk]]
    assumed: list[list[str]]
    warnings: list[list[str]]


def _score_table(
    bundle: ModelBundle,
    records: pd.DataFrame,
    horizons: Sequence[float],
    include_curve: bool,
    where: str,
    indexed: bool,
) -> _Scored:
    h = check_horizons(bundle, horizons)
    X = _features(bundle, records, where, indexed)
    cif_h = bundle.predict_cif_features(X, h)
    curves = bundle.predict_cif_features(X) if include_curve else None
    points = bundle.grid.points
    warnings = bundle.applicability_warnings(X)
    assumed_flags = X["primary_fraction_assumed"].to_numpy() > 0
    return _Scored(
        features=X,
        risks=[_risks(cif_h, curves, i, h, points) for i in range(len(X))],
        assumed=[[ASSUMED_FRACTION_NOTE] if a else [] for a in assumed_flags],
        warnings=warnings,
    )


def score_records(
    bundle: ModelBundle,
    records: pd.DataFrame,
    horizons: Sequence[float] = HORIZONS_MONTHS,
    include_curve: bool = False,
    where: str = "patients",
    indexed: bool = True,
) -> list[PatientScore]:
    """Score a table of raw records (a file or a batch); all rows or none.

    ``where``/``indexed`` name the request part a violation is reported under, e.g.
    ``patients.3.gtv_cm3`` (row 4 of the batch, 0-based as in JSON).
    """
    scored = _score_table(bundle, records, horizons, include_curve, where, indexed)
    ids = records["patient_id"].astype(str).str.strip().tolist()
    return [
        PatientScore(patient_id=pid, risks=r, assumed=a, warnings=w)
        for pid, r, a, w in zip(ids, scored.risks, scored.assumed, scored.warnings, strict=True)
    ]


def score_patient(
    bundle: ModelBundle,
    patient: PatientInput,
    horizons: Sequence[float] = HORIZONS_MONTHS,
    include_curve: bool = False,
) -> PatientScore:
    """Risks of one patient."""
    frame = records_frame([patient])
    return score_records(bundle, frame, horizons, include_curve, where="patient", indexed=False)[0]


def score_batch(
    bundle: ModelBundle,
    patients: Sequence[PatientInput],
    horizons: Sequence[float] = HORIZONS_MONTHS,
    include_curve: bool = False,
    max_batch: int | None = None,
) -> list[PatientScore]:
    """Risks of several patients; refused whole if too many or if any record is bad."""
    if not patients:
        raise ScoringInputError([Problem(("patients",), "the batch is empty")])
    if max_batch is not None and len(patients) > max_batch:
        raise ScoringInputError(
            [Problem(("patients",), f"{len(patients)} patients exceed the maximum of {max_batch}")]
        )
    return score_records(bundle, records_frame(patients), horizons, include_curve)


def compare_plans(
    bundle: ModelBundle,
    patient: PatientInput,
    plans: Sequence,
    horizons: Sequence[float] = HORIZONS_MONTHS,
    include_curve: bool = False,
    max_plans: int | None = None,
) -> list[PlanScore]:
    """The patient's risks under each candidate plan, with each plan's EQD2 (alpha/beta 3 Gy).

    Each plan replaces the patient's three re-irradiation fields; the EQD2 values come from the
    feature pipeline (computed, never typed in). Toxicity only: see ``PLAN_COMPARISON_NOTE``.
    """
    if not plans:
        raise ScoringInputError([Problem(("plans",), "no plan given")])
    if max_plans is not None and len(plans) > max_plans:
        raise ScoringInputError(
            [Problem(("plans",), f"{len(plans)} plans exceed the maximum of {max_plans}")]
        )
    base = patient.model_dump()
    rows = [
        base | {f: getattr(plan, f) for f in PLAN_FIELDS} | {"patient_id": f"{PLAN_KEY_PREFIX}{i}"}
        for i, plan in enumerate(plans)
    ]
    scored = _score_table(
        bundle, pd.DataFrame(rows), horizons, include_curve, where="plans", indexed=True
    )
    X = scored.features
    return [
        PlanScore(
            plan_index=i,
            label=plan.label,
            reirr_dose_gy=float(plan.reirr_dose_gy),
            reirr_fraction_gy=float(plan.reirr_fraction_gy),
            reirr_fractions_per_day=int(plan.reirr_fractions_per_day),
            reirr_eqd2_gy=float(X["reirr_eqd2_gy"].iloc[i]),
            cumulative_eqd2_gy=float(X["cumulative_eqd2_gy"].iloc[i]),
            risks=scored.risks[i],
            assumed=scored.assumed[i],
            warnings=scored.warnings[i],
        )
        for i, plan in enumerate(plans)
    ]
