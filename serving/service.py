"""The BentoML risk-scoring API, called before re-irradiation (BentoML 1.4 service API).

Run with ``bentoml serve serving.service:RiskService`` from the project root (or ``reirrad
serve``). The model is loaded once at start-up: the bundle file named by
``REIRRAD_BUNDLE_PATH`` if set, else the registered champion; see :mod:`serving.settings` for
every environment variable. One worker by default: the forest is CPU-bound and the host has
two cores (``REIRRAD_WORKERS`` raises it). BentoML's own ``/readyz`` and ``/livez`` answer
health checks (``/readyz`` only once the model is loaded).

Endpoints (POST, JSON; bodies in :mod:`serving.schemas`):
``/score`` one patient; ``/score_batch`` several, all or none; ``/compare_plans`` one patient
under candidate dose plans; ``/model_info`` the served model, its data hash and its metrics.

A request that breaks the contract gets HTTP 400 with BentoML's pydantic error body,
``{"error": ..., "detail": [{"type", "loc", "msg"}]}``, whether the schema or the scoring
(e.g. a horizon beyond the grid, a batch too large) refused it; input values are never echoed.
Every answered call is written to the audit log before the response is returned.
"""

from __future__ import annotations

import uuid

import bentoml
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from serving import scoring
from serving.audit import AuditLog, resolve_salt
from serving.loading import describe_model, load_model, model_ref
from serving.schemas import (
    BatchScoreRequest,
    BatchScoreResponse,
    ComparePlansRequest,
    ComparePlansResponse,
    EmptyRequest,
    ModelInfoResponse,
    ScoreRequest,
    ScoreResponse,
)
from serving.scoring import ScoringInputError
from serving.settings import ServingSettings, service_workers

SERVICE_NAME = "reirrad-risk"
REQUEST_TIMEOUT_S = 120
REQUEST_ID_HEADER = "X-Request-ID"
ERROR_TYPE = "invalid_request"


def as_validation_error(err: ScoringInputError, title: str) -> ValidationError:
    """A scoring refusal in the same shape as a schema refusal (BentoML answers 400)."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError(ERROR_TYPE, "{reason}", {"reason": p.msg}),
            loc=p.loc,
            input=None,
        )
        for p in err.problems
    ]
    return ValidationError.from_exception_data(title, details, hide_input=True)


@bentoml.service(
    name=SERVICE_NAME, workers=service_workers(), traffic={"timeout": REQUEST_TIMEOUT_S}
)
class RiskService:
    """Risks of severe mucosal necrosis and fatal haemorrhage after re-irradiation."""

    def __init__(self) -> None:
        self.settings = ServingSettings.from_env()
        self.model = load_model(self.settings)
        self.ref = model_ref(self.model)
        salt = resolve_salt(self.settings.audit_salt, self.settings.audit_log)
        self.audit = AuditLog(self.settings.audit_log, salt)

    def _request_id(self, ctx: bentoml.Context) -> str:
        rid = uuid.uuid4().hex
        ctx.response.headers[REQUEST_ID_HEADER] = rid
        return rid

    @bentoml.api(route="/score")
    def score(self, request: ScoreRequest, /, ctx: bentoml.Context) -> ScoreResponse:
        """One patient's risks at the horizons (and optionally the whole curve)."""
        try:
            result = scoring.score_patient(
                self.model.bundle, request.patient, request.horizons, request.include_curve
            )
        except ScoringInputError as err:
            raise as_validation_error(err, "ScoreRequest") from err
        rid = self._request_id(ctx)
        self.audit.record_scores("score", rid, self.ref, [result])
        return ScoreResponse(request_id=rid, model=self.ref, result=result)

    @bentoml.api(route="/score_batch")
    def score_batch(
        self, request: BatchScoreRequest, /, ctx: bentoml.Context
    ) -> BatchScoreResponse:
        """Several patients, all or none (at most ``REIRRAD_MAX_BATCH``)."""
        try:
            results = scoring.score_batch(
                self.model.bundle,
                request.patients,
                request.horizons,
                request.include_curve,
                max_batch=self.settings.max_batch,
            )
        except ScoringInputError as err:
            raise as_validation_error(err, "BatchScoreRequest") from err
        rid = self._request_id(ctx)
        self.audit.record_scores("score_batch", rid, self.ref, results)
        return BatchScoreResponse(
            request_id=rid, model=self.ref, n_patients=len(results), results=results
        )

    @bentoml.api(route="/compare_plans")
    def compare_plans(
        self, request: ComparePlansRequest, /, ctx: bentoml.Context
    ) -> ComparePlansResponse:
        """One patient under each candidate plan, with each plan's EQD2. Toxicity only."""
        try:
            plans = scoring.compare_plans(
                self.model.bundle,
                request.patient,
                request.plans,
                request.horizons,
                request.include_curve,
                max_plans=self.settings.max_plans,
            )
        except ScoringInputError as err:
            raise as_validation_error(err, "ComparePlansRequest") from err
        rid = self._request_id(ctx)
        self.audit.record_plans("compare_plans", rid, self.ref, request.patient.patient_id, plans)
        return ComparePlansResponse(
            request_id=rid, model=self.ref, patient_id=request.patient.patient_id, plans=plans
        )

    @bentoml.api(route="/model_info")
    def model_info(self, request: EmptyRequest, /) -> ModelInfoResponse:
        """The served model: version, bundle and training-data hashes, validated metrics."""
        return describe_model(self.model, self.settings)
