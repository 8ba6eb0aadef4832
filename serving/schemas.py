"""Request and response bodies of the risk-scoring API.

The patient object is :class:`features.schema.PatientInput` itself, so a request and a cohort
file obey one contract; a dose plan reuses that model's re-irradiation fields (same bounds and
validators), never a copy of them.

Requests are parsed *strictly*: JSON types are taken as they are, never coerced (``"52"`` is
not a number, ``"yes"`` is not a boolean, ``1.0`` is not an integer), NaN and infinity are
refused by field, unknown fields are refused, and input values are hidden from validation
messages (``hide_input_in_errors``) so that patient data never reaches a response or a log.
Files keep their own, text-based parsing (``reirrad score``, ``reirrad cohort check``): the
strictness is a subclass of the contract's model, not a second contract.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from features.config import ENDPOINTS, HORIZONS_MONTHS, MAIN_HORIZON_MONTHS
from features.schema import PatientInput

DISCLAIMER = (
    "Toxicity only: these are risks of severe late toxicity; the model does not weigh tumour "
    "control. Trained on synthetic data; research software, not a medical device. The "
    "associations it learned are not causal effects."
)
PLAN_COMPARISON_NOTE = (
    "Plan comparison is toxicity only: it does not weigh tumour control, which a lower dose may "
    "compromise. Differences between plans are the model's associations, not causal effects. "
    "A difference whose 95% interval (paired: the same patient under both plans) contains zero "
    "is marked uncertain."
)
EXPLANATION_NOTE = (
    "Attributions are exact Shapley values of the served risk: the base value plus all "
    "attributions equals the risk. They describe how this model's estimate depends on the "
    "inputs, not what would happen if an input were changed."
)
MAX_HORIZONS = 24
"""Most horizons one request may ask for (the grid has 60 points; curves are the way to more)."""

PLAN_FIELDS: tuple[str, ...] = ("reirr_dose_gy", "reirr_fraction_gy", "reirr_fractions_per_day")
OPTIONAL_PLAN_FIELDS: tuple[str, ...] = ("brachytherapy_boost",)
"""Plan fields that may be left out; the patient's own value is used then."""
PLAN_LABEL_MAX_LEN = 64
ReportFormat = Literal["html", "pdf"]
Endpoint = Literal["mucosal_necrosis", "fatal_haemorrhage"]

_STRICT = ConfigDict(
    extra="forbid", strict=True, allow_inf_nan=False, hide_input_in_errors=True
)
"""Every request model: no coercion, no NaN or infinity, no unknown field, no echoed input."""


class StrictPatientInput(PatientInput):
    """The contract's patient, parsed strictly (see the module docstring)."""

    model_config = _STRICT


def _positive_months(values: list[float]) -> list[float]:
    if any(v <= 0 for v in values):
        raise ValueError("horizons must be positive whole months on the model's grid")
    return values


Horizons = Annotated[
    list[float],
    Field(
        min_length=1,
        max_length=MAX_HORIZONS,
        description="Whole months from the start of re-irradiation on the model's grid "
        "(24 and 24.0 alike; 12.5 or beyond the grid is refused).",
    ),
    AfterValidator(_positive_months),
]


class _PlanBase(BaseModel):
    model_config = _STRICT

    label: Annotated[
        str | None, Field(default=None, max_length=PLAN_LABEL_MAX_LEN, description="Free label.")
    ] = None
    brachytherapy_boost: Annotated[
        bool | None,
        Field(default=None, description="Boost in this plan (default: the patient's value)."),
    ] = None


DosePlan = create_model(
    "DosePlan",
    __base__=_PlanBase,
    __doc__="A candidate re-irradiation plan: the plan fields of the patient contract.",
    **{name: (PatientInput.model_fields[name].annotation, PatientInput.model_fields[name])
       for name in PLAN_FIELDS},
)


class ScoreRequest(BaseModel):
    """One patient."""

    model_config = _STRICT

    patient: StrictPatientInput
    horizons: Horizons = list(HORIZONS_MONTHS)
    include_curve: bool = Field(False, description="Also return the CIF at every grid point.")


class BatchScoreRequest(BaseModel):
    """Several patients, scored all or none: one bad record refuses the batch."""

    model_config = _STRICT

    patients: Annotated[list[StrictPatientInput], Field(min_length=1)]
    horizons: Horizons = list(HORIZONS_MONTHS)
    include_curve: bool = False


class ComparePlansRequest(BaseModel):
    """One patient and the candidate plans that replace its re-irradiation plan fields."""

    model_config = _STRICT

    patient: StrictPatientInput
    plans: Annotated[list[DosePlan], Field(min_length=1)]  # type: ignore[valid-type]
    horizons: Horizons = list(HORIZONS_MONTHS)
    include_curve: bool = False


class ExplainRequest(BaseModel):
    """One patient, one endpoint, the horizons to explain."""

    model_config = _STRICT

    patient: StrictPatientInput
    endpoint: Endpoint
    horizons: Horizons = [float(MAIN_HORIZON_MONTHS)]


class ReportRequest(BaseModel):
    """One patient; the clinician report comes back as the document itself."""

    model_config = _STRICT

    patient: StrictPatientInput
    format: ReportFormat = "html"


class EmptyRequest(BaseModel):
    """No parameters."""

    model_config = _STRICT


# ------------------------------------------------------------------------------ responses
class Curve(BaseModel):
    """The CIF on the model's time grid (a step function: constant between points)."""

    months: list[float]
    cif: list[float]
    lower: list[float]
    upper: list[float]


class EndpointRisk(BaseModel):
    """Cumulative incidence of one endpoint's event at the requested horizons, with its 95 %
    interval: ``0 <= lower <= cif <= upper <= 1``, both bounds non-decreasing in time."""

    endpoint: str = Field(description=f"One of {list(ENDPOINTS)}.")
    label: str
    horizons_months: list[float]
    cif: list[float]
    lower: list[float] = Field(description="Lower bound of the 95 % interval, per horizon.")
    upper: list[float] = Field(description="Upper bound of the 95 % interval, per horizon.")
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


class PlanDifference(BaseModel):
    """This plan's risk minus the first plan's, for one endpoint, with the 95 % interval of
    the paired difference (the same patient under both plans) at each horizon."""

    endpoint: str
    horizons_months: list[float]
    difference: list[float]
    lower: list[float]
    upper: list[float]
    uncertain: list[bool] = Field(description="True where the interval contains zero.")


class PlanScore(BaseModel):
    """One candidate plan's dose (EQD2, alpha/beta 3 Gy) and the patient's risks under it."""

    plan_index: int
    label: str | None
    reirr_dose_gy: float
    reirr_fraction_gy: float
    reirr_fractions_per_day: int
    brachytherapy_boost: bool
    reirr_eqd2_gy: float
    cumulative_eqd2_gy: float
    risks: list[EndpointRisk]
    differences: list[PlanDifference] | None = Field(
        None, description="Against the first plan (null for the first plan)."
    )
    difference_uncertain: bool | None = Field(
        None,
        description="True when no difference from the first plan can be told from zero: every "
        "endpoint's and horizon's paired 95 % interval contains zero (null for the first plan).",
    )
    assumed: list[str]
    warnings: list[str]


class ComparePlansResponse(BaseModel):
    request_id: str
    model: ModelRef
    patient_id: str
    plans: list[PlanScore]
    note: str = PLAN_COMPARISON_NOTE
    disclaimer: str = DISCLAIMER


class HorizonExplanation(BaseModel):
    """Exact Shapley attributions of one risk: ``base_value + sum(attributions) == risk``."""

    months: float
    base_value: float
    risk: float
    attributions: dict[str, float] = Field(description="Per model input, probability scale.")
    top_factors: list[str] = Field(description="The inputs that move this risk most, in words.")


class ExplainResponse(BaseModel):
    request_id: str
    model: ModelRef
    patient_id: str
    endpoint: str
    method: str = Field(description="The Shapley value function used.")
    explanations: list[HorizonExplanation]
    note: str = EXPLANATION_NOTE
    disclaimer: str = DISCLAIMER


class ErrorDetail(BaseModel):
    """One problem with a request: where (a JSON path) and why; never the submitted value."""

    type: str
    loc: list[str | int]
    msg: str


class ErrorResponse(BaseModel):
    """Every refusal (4xx) has this body."""

    error: str
    detail: list[ErrorDetail] = Field(default_factory=list)


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
    validation: dict[str, Any] | None = Field(
        None, description="Validated figures with their 95 % intervals (when the bundle has them)."
    )
    provenance: dict[str, Any]
    registry: dict[str, Any] = Field(
        default_factory=dict, description="The registry's record (version, run, data hash)."
    )
    max_batch: int
    max_plans: int
    disclaimer: str = DISCLAIMER
