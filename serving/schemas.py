"""Request and response bodies of the risk-scoring API.

The patient object is :class:`features.schema.PatientInput` itself, so a request and a cohort
file obey one contract; a dose plan reuses that model's three re-irradiation fields (same
bounds and validators), never a copy of them. Input values are hidden from validation
messages (``hide_input_in_errors``) so that patient data never reaches the server's logs.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from features.config import ENDPOINTS, HORIZONS_MONTHS
from features.schema import PatientInput

DISCLAIMER = (
    "Toxicity only: these are risks of severe late toxicity; the model does not weigh tumour "
    "control. Trained on synthetic data; research software, not a medical device. The "
    "associations it learned are not causal effects."
)
PLAN_COMPARISON_NOTE = (
    "Plan comparison is toxicity only: it does not weigh tumour control, which a lower dose may "
    "compromise. Differences between plans are the model's associations, not causal effects."
)
MAX_HORIZONS = 24
"""Most horizons one request may ask for (the grid has 60 points; curves are the way to more)."""

PLAN_FIELDS: tuple[str, ...] = ("reirr_dose_gy", "reirr_fraction_gy", "reirr_fractions_per_day")
PLAN_LABEL_MAX_LEN = 64

_REQUEST_CONFIG = ConfigDict(extra="forbid", hide_input_in_errors=True)


def _finite_months(values: list[float]) -> list[float]:
    for v in values:
        if not math.isfinite(v) or v <= 0:
            raise ValueError("horizons must be positive finite numbers of months")
    return values


Horizons = Annotated[
    list[float],
    Field(
        min_length=1,
        max_length=MAX_HORIZONS,
        description="Months from the start of re-irradiation; beyond the model's grid is refused.",
    ),
    AfterValidator(_finite_months),
]


class _PlanBase(BaseModel):
    model_config = _REQUEST_CONFIG

    label: Annotated[
        str | None, Field(default=None, max_length=PLAN_LABEL_MAX_LEN, description="Free label.")
    ] = None


DosePlan = create_model(
    "DosePlan",
    __base__=_PlanBase,
    __doc__="A candidate re-irradiation plan: the three plan fields of the patient contract.",
    **{name: (PatientInput.model_fields[name].annotation, PatientInput.model_fields[name])
       for name in PLAN_FIELDS},
)


class ScoreRequest(BaseModel):
    """One patient."""

    model_config = _REQUEST_CONFIG

    patient: PatientInput
    horizons: Horizons = list(HORIZONS_MONTHS)
    include_curve: bool = Field(False, description="Also return the CIF at every grid point.")


class BatchScoreRequest(BaseModel):
    """Several patients, scored all or none: one bad record refuses the batch."""

    model_config = _REQUEST_CONFIG

    patients: Annotated[list[PatientInput], Field(min_length=1)]
    horizons: Horizons = list(HORIZONS_MONTHS)
    include_curve: bool = False


class ComparePlansRequest(BaseModel):
    """One patient and the candidate plans that replace its re-irradiation plan fields."""

    model_config = _REQUEST_CONFIG

    patient: PatientInput
    plans: Annotated[list[DosePlan], Field(min_length=1)]  # type: ignore[valid-type]
    horizons: Horizons = list(HORIZONS_MONTHS)
    include_curve: bool = False


class EmptyRequest(BaseModel):
    """No parameters."""

    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------ responses
class Curve(BaseModel):
    """The CIF on the model's time grid (a step function: constant between points)."""

    months: list[float]
    cif: list[float]


class EndpointRisk(BaseModel):
    """Cumulative incidence of one endpoint's event at the requested horizons."""

    endpoint: str = Field(description=f"One of {list(ENDPOINTS)}.")
    label: str
    horizons_months: list[float]
    cif: list[float]
    curve: Curve | None = None


class PatientScore(BaseModel):
    """One patient's risks with the assumptions made and the applicability warnings."""

    patient_id: str
    risks: list[EndpointRisk]
    assumed: list[str] = Field(description="Values the model assumed for empty inputs.")
    warnings: list[str] = Field(description="Inputs outside the training data's range.")

    def cif_at(self, endpoint: str, horizon: float) -> float:
        """The CIF of ``endpoint`` at ``horizon`` (which must be one of the requested)."""
        for r in self.risks:
            if r.endpoint == endpoint:
                return r.cif[r.horizons_months.index(float(horizon))]
        raise KeyError(endpoint)


class ModelRef(BaseModel):
    """Which model answered."""

    name: str
    version: str | None
    alias: str | None
    bundle_sha256_prefix: str
    source: str


class ScoreResponse(BaseModel):
    request_id: str
    model: ModelRef
    result: PatientScore
    disclaimer: str = DISCLAIMER


class BatchScoreResponse(BaseModel):
    request_id: str
    model: ModelRef
    n_patients: int
    results: list[PatientScore]
    disclaimer: str = DISCLAIMER


class PlanScore(BaseModel):
    """One candidate plan's dose (EQD2, alpha/beta 3 Gy) and the patient's risks under it."""

    plan_index: int
    label: str | None
    reirr_dose_gy: float
    reirr_fraction_gy: float
    reirr_fractions_per_day: int
    reirr_eqd2_gy: float
    cumulative_eqd2_gy: float
    risks: list[EndpointRisk]
    assumed: list[str]
    warnings: list[str]


class ComparePlansResponse(BaseModel):
    request_id: str
    model: ModelRef
    patient_id: str
    plans: list[PlanScore]
    note: str = PLAN_COMPARISON_NOTE
    disclaimer: str = DISCLAIMER


class ModelInfoResponse(BaseModel):
    """What the served model is, what it was trained on and how well it validated."""

    model: ModelRef
    bundle_sha256: str
    training_data_sha256: str | None
    n_training_rows: int | None
    grid_max_months: float
    grid_step_months: float
    standard_horizons_months: list[float]
    endpoints: list[str]
    feature_columns: list[str]
    metrics: dict[str, Any]
    provenance: dict[str, Any]
    registry: dict[str, Any] = Field(
        default_factory=dict, description="The registry's record (version, run, data hash)."
    )
    max_batch: int
    max_plans: int
    disclaimer: str = DISCLAIMER
