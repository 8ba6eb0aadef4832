"""Scoring: the pure functions that the HTTP service and the offline `score` command share.

Every patient is validated once, by the contract's own model (the request schema for the API,
:func:`features.schema.validate_table` for a file), and the validated objects go straight to
the bundle's features (``ModelBundle.features_from_inputs``), predictions and intervals. A
request that breaks the contract is refused whole with the location of every problem
(:class:`ScoringInputError`); nothing is partly scored and no submitted value is repeated.
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
from features.pipeline import FEATURE_COLUMNS
from features.schema import CohortValidationError, PatientInput, validate_table
from models.bundle import ModelBundle
from serving.schemas import (
    PLAN_FIELDS,
    Curve,
    EndpointRisk,
    PatientScore,
    PlanDifference,
    PlanScore,
)

Loc = tuple[str | int, ...]

ASSUMED_FRACTION_NOTE = (
    f"primary_fraction_gy was empty: {ASSUMED_PRIMARY_FRACTION_GY:g} Gy per fraction was "
    "assumed for the first course's EQD2"
)
GRID_TOLERANCE = 1e-9
"""How far (in grid steps) a horizon may be from a whole grid step and still be that step."""


@dataclass(frozen=True)
class Problem:
    """One reason a request was refused: where (a pydantic-style location) and why."""

    loc: Loc
    msg: str
    type: str = "invalid_request"

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.loc) or "request"
        return f"{where}: {self.msg}"


class ScoringInputError(ValueError):
    """The request breaks the contract; nothing was scored."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def records_frame(patients: Sequence[PatientInput]) -> pd.DataFrame:
    """Validated patient objects as the raw-record table a file would give."""
    return pd.DataFrame([p.model_dump() for p in patients])


def check_horizons(bundle: ModelBundle, horizons: Sequence[float]) -> np.ndarray:
    """The horizons as grid months, refused unless each is a whole grid step within the grid.

    24 and 24.0 are the same horizon; 12.5 is not a grid point (the model has no value of its
    own there) and is refused rather than silently read as 12.
    """
    grid = bundle.grid
    n_steps = len(grid.points)
    problems = []
    for i, h in enumerate(horizons):
        steps = float(h) / grid.step_months
        whole = round(steps)
        if abs(steps - whole) > GRID_TOLERANCE or not 1 <= whole <= n_steps:
            problems.append(
                Problem(
                    ("horizons", i),
                    f"not a horizon of the model's grid: whole multiples of "
                    f"{grid.step_months:g} month(s) from {grid.step_months:g} to "
                    f"{grid.max_months:g}",
                    "horizon_off_grid",
                )
            )
    if problems:
        raise ScoringInputError(problems)
    return np.array([round(float(h) / grid.step_months) * grid.step_months for h in horizons])


@dataclass(frozen=True)
class Scored:
    """Predictions for a list of validated patients (one row each)."""

    features: pd.DataFrame
    horizons: np.ndarray
    cif: dict[str, np.ndarray]  # (n, H)
    lower: dict[str, np.ndarray]
    upper: dict[str, np.ndarray]
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None  # cif, lower, upper
    assumed: list[list[str]]
    warnings: list[list[str]]

    def risks(self, i: int, grid_points: np.ndarray) -> list[EndpointRisk]:
        out = []
        for e in ENDPOINTS:
            curve = None
            if self.curves is not None:
                c, lo, hi = self.curves[e]
                curve = Curve(
                    months=grid_points.tolist(),
                    cif=c[i].tolist(),
                    lower=lo[i].tolist(),
                    upper=hi[i].tolist(),
                )
            out.append(
                EndpointRisk(
                    endpoint=e,
                    label=ENDPOINT_LABELS[e],
                    horizons_months=self.horizons.tolist(),
                    cif=self.cif[e][i].tolist(),
                    lower=self.lower[e][i].tolist(),
                    upper=self.upper[e][i].tolist(),
                    curve=curve,
                )
            )
        return out


def score_inputs(
    bundle: ModelBundle,
    patients: Sequence[PatientInput],
    horizons: Sequence[float] = HORIZONS_MONTHS,
    include_curve: bool = False,
) -> Scored:
    """Risks with intervals of validated patients: one feature build, one prediction."""
    h = check_horizons(bundle, horizons)
    X = bundle.features_from_inputs(list(patients))
    # the bounds are built on the whole grid (times None): predict it once, read the horizons
    cif_t = bundle.predict_cif_features(X)
    bands = bundle.risk_intervals(X, None, cif=cif_t)
    cols = bundle.grid.index_of(h)
    on = cols >= 0
    at = np.maximum(cols, 0)

    def read(a: np.ndarray) -> np.ndarray:
        return np.where(on, a[:, at], 0.0)

    pick = {e: (read(cif_t[e]), read(bands[e][0]), read(bands[e][1])) for e in ENDPOINTS}
    curves = {e: (cif_t[e], bands[e][0], bands[e][1]) for e in ENDPOINTS} if include_curve else None
    assumed = X.to_numpy()[:, FEATURE_COLUMNS.index("primary_fraction_assumed")] > 0
    return Scored(
        features=X,
        horizons=h,
        cif={e: p[0] for e, p in pick.items()},
        lower={e: p[1] for e, p in pick.items()},
        upper={e: p[2] for e, p in pick.items()},
        curves=curves,
        assumed=[[ASSUMED_FRACTION_NOTE] if a else [] for a in assumed],
        warnings=bundle.applicability_warnings(X),
    )


def _patient_scores(
    bundle: ModelBundle, patients: Sequence[PatientInput], scored: Scored
) -> list[PatientScore]:
    points = bundle.grid.points
    return [
        PatientScore(
            patient_id=p.patient_id,
            risks=scored.risks(i, points),
            assumed=scored.assumed[i],
            warnings=scored.warnings[i],
        )
        for i, p in enumerate(patients)
    ]


def _duplicate_keys(patients: Sequence[PatientInput], where: str) -> list[Problem]:
    first: dict[str, int] = {}
    problems = []
    for i, p in enumerate(patients):
        if p.patient_id in first:
            problems.append(
                Problem((where, i, "patient_id"), f"duplicate of {where}[{first[p.patient_id]}]")
            )
        else:
            first[p.patient_id] = i
    return problems


def validated_records(
    records: pd.DataFrame, where: str = "patients", indexed: bool = True
) -> list[PatientInput]:
    """A table's rows validated by the contract (a file's path into scoring); all or none.

    ``where``/``indexed`` name the request part a violation is reported under, e.g.
    ``row.3.gtv_cm3`` (0-based, as in JSON).
    """
    report = validate_table(records, require_outcomes=False)
    if report.ok:
        return report.records
    problems = []
    for v in report.errors:
        loc: list[str | int] = [where]
        if indexed and v.row is not None:
            loc.append(v.row - 1)
        if v.column:
            loc.append(v.column)
        problems.append(Problem(tuple(loc), v.reason))
    raise ScoringInputError(problems) from CohortValidationError(report)


def score_records(
    bundle: ModelBundle,
    records: pd.DataFrame,
    horizons: Sequence[float] = HORIZONS_MONTHS,
    include_curve: bool = False,
    where: str = "patients",
    indexed: bool = True,
) -> list[PatientScore]:
    """Score a table of raw records (a file); all rows or none."""
    patients = validated_records(records, where, indexed)
    return score_patients(bundle, patients, horizons, include_curve)


def score_patient(
    bundle: ModelBundle,
    patient: PatientInput,
    horizons: Sequence[float] = HORIZONS_MONTHS,
    include_curve: bool = False,
) -> PatientScore:
    """Risks of one patient."""
    return score_patients(bundle, [patient], horizons, include_curve)[0]


def score_patients(
    bundle: ModelBundle,
    patients: Sequence[PatientInput],
    horizons: Sequence[float] = HORIZONS_MONTHS,
    include_curve: bool = False,
) -> list[PatientScore]:
    """Risks of validated patients in one prediction; keys are not checked here (a batch
    refuses repeats, separate /score calls predicted together may repeat one). Each patient's
    numbers are those it gets alone."""
    return _patient_scores(bundle, patients, score_inputs(bundle, patients, horizons,
                                                          include_curve))


def score_batch(
    bundle: ModelBundle,
    patients: Sequence[PatientInput],
    horizons: Sequence[float] = HORIZONS_MONTHS,
    include_curve: bool = False,
    max_batch: int | None = None,
) -> list[PatientScore]:
    """Risks of several patients; refused whole if too many, or any key repeats."""
    if not patients:
        raise ScoringInputError([Problem(("patients",), "the batch is empty")])
    if max_batch is not None and len(patients) > max_batch:
        raise ScoringInputError(
            [Problem(("patients",), f"more than the maximum of {max_batch} patients per batch",
                     "batch_too_large")]
        )
    problems = _duplicate_keys(patients, "patients")
    if problems:
        raise ScoringInputError(problems)
    return score_patients(bundle, patients, horizons, include_curve)


def _plan_patient(patient: PatientInput, plan) -> PatientInput:
    """The patient with a plan's fields in place of its own (each already validated)."""
    update = {f: getattr(plan, f) for f in PLAN_FIELDS}
    if plan.brachytherapy_boost is not None:
        update["brachytherapy_boost"] = plan.brachytherapy_boost
    return patient.model_copy(update=update)


def compare_plans(
    bundle: ModelBundle,
    patient: PatientInput,
    plans: Sequence,
    horizons: Sequence[float] = HORIZONS_MONTHS,
    include_curve: bool = False,
    max_plans: int | None = None,
) -> list[PlanScore]:
    """The patient's risks under each candidate plan, with each plan's EQD2 (alpha/beta 3 Gy),
    and each later plan's paired difference from the first with its 95 % interval.

    Each plan replaces the patient's re-irradiation fields (and the boost, when the plan sets
    it); the EQD2 values come from the feature pipeline. Toxicity only: see
    ``PLAN_COMPARISON_NOTE``.
    """
    if not plans:
        raise ScoringInputError([Problem(("plans",), "no plan given")])
    if max_plans is not None and len(plans) > max_plans:
        raise ScoringInputError(
            [Problem(("plans",), f"more than the maximum of {max_plans} plans", "too_many_plans")]
        )
    variants = [_plan_patient(patient, plan) for plan in plans]
    scored = score_inputs(bundle, variants, horizons, include_curve)
    X = scored.features
    diffs = bundle.paired_difference_intervals(X, scored.horizons, reference=0, cif=scored.cif)
    points = bundle.grid.points
    out = []
    for i, (plan, variant) in enumerate(zip(plans, variants, strict=True)):
        differences = None
        uncertain = None
        if i > 0:
            differences = []
            for e in ENDPOINTS:
                d = diffs[e]
                flags = [bool(lo <= 0.0 <= hi) for lo, hi in zip(d.lower[i], d.upper[i],
                                                                    strict=True)]
                differences.append(
                    PlanDifference(
                        endpoint=e,
                        horizons_months=scored.horizons.tolist(),
                        difference=d.estimate[i].tolist(),
                        lower=d.lower[i].tolist(),
                        upper=d.upper[i].tolist(),
                        uncertain=flags,
                    )
                )
            uncertain = all(all(d.uncertain) for d in differences)
        out.append(
            PlanScore(
                plan_index=i,
                label=plan.label,
                reirr_dose_gy=float(variant.reirr_dose_gy),
                reirr_fraction_gy=float(variant.reirr_fraction_gy),
                reirr_fractions_per_day=int(variant.reirr_fractions_per_day),
                brachytherapy_boost=bool(variant.brachytherapy_boost),
                reirr_eqd2_gy=float(X["reirr_eqd2_gy"].iloc[i]),
                cumulative_eqd2_gy=float(X["cumulative_eqd2_gy"].iloc[i]),
                risks=scored.risks(i, points),
                differences=differences,
                difference_uncertain=uncertain,
                assumed=scored.assumed[i],
                warnings=scored.warnings[i],
            )
        )
    return out
