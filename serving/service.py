"""The BentoML risk-scoring API, called before re-irradiation (BentoML 1.4 service API).

Run with ``reirrad serve`` (or ``bentoml serve serving.service:RiskService`` from the project
root), or from a Bento built by ``reirrad bento build`` (``bentoml serve TAG``, or its
container image). Each worker loads the model once at start-up (served from a Bento: the
Bento's own BentoML model, its SHA-256 checked (:mod:`serving.bento`); otherwise the bundle
file named by ``REIRRAD_BUNDLE_PATH`` if set, else the registered champion), builds its
explainer, opens the audit trail and scores one patient to warm every compiled path before
``/readyz`` answers.
All settings are environment variables (:mod:`serving.settings`).

Endpoints (POST, JSON; bodies in :mod:`serving.schemas`): ``/score`` one patient;
``/score_batch`` several, all or none; ``/compare_plans`` one patient under candidate dose
plans, with paired differences; ``/explain`` exact attributions of one endpoint's risk;
``/report`` the clinician report itself (HTML or PDF); ``/model_info`` the served model.

In front of them sits :class:`serving.gate.Gate`, added with BentoML's own middleware hook:
bearer tokens, rate limit, body size and content type, request ids, and the audit record of
every call (committed before the response starts). Requests are parsed once, strictly, by
BentoML with the request models; a request that breaks the contract gets 400 with
``{"error", "detail": [{"type", "loc", "msg"}]}``, and the submitted values are never echoed.
"""

from __future__ import annotations

import gc
import hashlib
import logging
from typing import TYPE_CHECKING, Any

import bentoml
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from features.config import HORIZONS_MONTHS
from serving.audit import (
    AuditTrail,
    GroupCommitWriter,
    canonical_json,
    load_audit_key,
    risk_summary,
    score_outputs,
)
from serving.auth import RateLimiter, TokenSet
from serving.gate import CALL_SCOPE_KEY, CallInfo, Gate, error_body
from serving.schemas import (
    BatchScoreRequest,
    BatchScoreResponse,
    ComparePlansRequest,
    ComparePlansResponse,
    EmptyRequest,
    ExplainRequest,
    ExplainResponse,
    ModelInfoResponse,
    ReportRequest,
    ScoreRequest,
    ScoreResponse,
)
from serving.settings import ServingSettings, service_workers

if TYPE_CHECKING:
    from serving.loading import LoadedModel
    from serving.scoring import ScoringInputError

# The model's code (numpy, pandas, scipy, numba, the report's fpdf and matplotlib) is imported
# inside the methods that use it: the processes that only read this module's API (`bentoml
# serve`'s supervisor, `reirrad bento build`) then start seconds sooner; each worker imports it
# once, in __init__, before /readyz answers.

SERVICE_NAME = "reirrad-risk"
REQUEST_TIMEOUT_S = 120
ROUTES = ("/score", "/score_batch", "/compare_plans", "/explain", "/report", "/model_info")
REPORT_MEDIA_TYPES = {"html": "text/html; charset=utf-8", "pdf": "application/pdf"}
API_LOGGER = "reirrad"
BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"
"""Where BentoML logs a request it could not parse (at ERROR, with a traceback)."""
STATUS_REFUSED = 400


class _RefusalsAreNotErrors(logging.Filter):
    """Drop BentoML's ERROR record (with traceback) for a request body that failed validation.

    Such a request is a client's mistake, answered 400; the gate logs it once at INFO, on one
    line, without the traceback (issue 11). Server faults are untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ValidationError)


def _log_like_bentoml(name: str) -> None:
    """Send our logger's records to BentoML's handlers (same format and destination), at INFO.

    BentoML configures its own ``bentoml`` logger in each worker and leaves the others alone.
    """
    ours = logging.getLogger(name)
    handlers = logging.getLogger("bentoml").handlers
    if handlers and not ours.handlers:
        for handler in handlers:
            ours.addHandler(handler)
        ours.propagate = False
    ours.setLevel(logging.INFO)


def _freeze_startup_objects() -> None:
    """Move everything loaded at start-up (the model's objects, BentoML, the libraries) out of
    the garbage collector's reach.

    They live as long as the worker, yet every full collection walked them all: ~230,000
    objects, ~150 ms with the world stopped, a few times a minute under load, which showed as
    requests taking 0.2-0.9 s at the 99th percentile. ``gc.freeze`` (CPython's own remedy for
    long-lived start-up state) keeps collecting what requests create.
    """
    gc.collect()
    gc.freeze()


def _current_service() -> Any:
    try:
        return bentoml.get_current_service()
    except bentoml.exceptions.BentoMLException:
        return None


def _call(ctx: bentoml.Context) -> CallInfo:
    """The gate's record of this call (a blank one when called in-process, without the gate)."""
    request = getattr(ctx, "request", None)
    call = request.scope.get(CALL_SCOPE_KEY) if request is not None else None
    return call if call is not None else CallInfo(request_id="in-process", route="")


def _refusal(ctx: bentoml.Context, err: ScoringInputError, title: str) -> Response:
    """A scoring refusal in the same shape as a schema refusal (400)."""
    ctx.response.status_code = STATUS_REFUSED
    detail = [{"type": p.type, "loc": list(p.loc), "msg": p.msg} for p in err.problems]
    body = error_body(f"{len(detail)} validation error(s) for {title}", detail)
    return Response(body, status_code=STATUS_REFUSED, media_type="application/json")


def _input_mac(audit: AuditTrail, request: BaseModel) -> str:
    return audit.input_mac(canonical_json(request.model_dump(mode="json")).encode("utf-8"))


@bentoml.service(
    name=SERVICE_NAME, workers=service_workers(), traffic={"timeout": REQUEST_TIMEOUT_S}
)
class RiskService:
    """Risks of severe mucosal necrosis and fatal haemorrhage after re-irradiation."""

    def __init__(self) -> None:
        self.settings = ServingSettings.from_env()
        self.tokens = TokenSet.from_config(self.settings.api_tokens, self.settings.api_token_hashes)
        self.limiter = RateLimiter(self.settings.rate_limit_per_minute, service_workers())
        key = load_audit_key(self.settings.audit_key, self.settings.audit_key_file_resolved)
        self.audit = AuditTrail(self.settings.audit_db_resolved, key)
        self.audit_writer = GroupCommitWriter(self.audit)  # the gate commits through it
        from models.explain import BundleExplainer
        from serving.coalescing import ScoreCoalescer
        from serving.loading import limit_numeric_threads, model_ref

        limit_numeric_threads()
        self.model = self._load_model()
        self.ref = model_ref(self.model)
        self.model_dict = self.ref.model_dump()
        self.explainer = BundleExplainer(self.model.bundle)
        self.coalescer = ScoreCoalescer(self.model.bundle)
        logging.getLogger(BENTOML_ERROR_LOGGER).addFilter(_RefusalsAreNotErrors())
        _log_like_bentoml(API_LOGGER)
        self._warm_up()
        _freeze_startup_objects()

    def _load_model(self) -> LoadedModel:
        """The Bento's model when served from a Bento, else the file or the champion."""
        from serving.bento import bento_model_tag, load_bento_model
        from serving.loading import load_model

        tag = bento_model_tag(RiskService.bento)  # the Service object; BentoML sets .bento
        if tag is None:
            return load_model(self.settings)
        return load_bento_model(tag, self.settings)

    def _warm_up(self) -> None:
        """Score, compare and explain one fixed patient, so the first real call is not slow."""
        from serving import scoring
        from serving.explaining import explain_patient
        from serving.golden import golden_patients

        bundle = self.model.bundle
        patient = golden_patients()[0]
        scoring.score_patient(bundle, patient, HORIZONS_MONTHS, include_curve=True)
        explain_patient(bundle, self.explainer, patient, "mucosal_necrosis", HORIZONS_MONTHS)

    @bentoml.api(route="/score")
    async def score(self, request: ScoreRequest, /, ctx: bentoml.Context) -> ScoreResponse:
        """One patient's risks with 95 % intervals at the horizons (and the curve if asked).

        Run on the event loop itself: one patient costs about a millisecond of CPU, less
        than handing the call to a worker thread and back costs on a busy machine (two thread
        wake-ups and the GIL passed between them), and calls that overlap are predicted
        together (:mod:`serving.coalescing`). Batches, comparisons and explanations, which
        take longer, keep BentoML's thread pool.
        """
        from serving.scoring import ScoringInputError

        call = _call(ctx)
        try:
            result = await self.coalescer.score(
                request.patient, request.horizons, request.include_curve
            )
        except ScoringInputError as err:
            return _refusal(ctx, err, "ScoreRequest")
        call.patient_keys = [self.audit.patient_key(request.patient.patient_id)]
        call.input_mac = _input_mac(self.audit, request)
        call.outputs = score_outputs([result])
        return ScoreResponse(request_id=call.request_id, model=self.ref, result=result)

    @bentoml.api(route="/score_batch")
    def score_batch(
        self, request: BatchScoreRequest, /, ctx: bentoml.Context
    ) -> BatchScoreResponse:
        """Several patients, all or none (at most ``REIRRAD_MAX_BATCH``)."""
        from serving import scoring
        from serving.scoring import ScoringInputError

        call = _call(ctx)
        try:
            results = scoring.score_batch(
                self.model.bundle,
                request.patients,
                request.horizons,
                request.include_curve,
                max_batch=self.settings.max_batch,
            )
        except ScoringInputError as err:
            return _refusal(ctx, err, "BatchScoreRequest")
        call.patient_keys = self.audit.patient_keys([p.patient_id for p in request.patients])
        call.input_mac = _input_mac(self.audit, request)
        call.outputs = score_outputs(results)
        return BatchScoreResponse(
            request_id=call.request_id, model=self.ref, n_patients=len(results), results=results
        )

    @bentoml.api(route="/compare_plans")
    def compare_plans(
        self, request: ComparePlansRequest, /, ctx: bentoml.Context
    ) -> ComparePlansResponse:
        """One patient under each candidate plan: EQD2, risks, paired differences. Toxicity
        only."""
        from serving import scoring
        from serving.scoring import ScoringInputError

        call = _call(ctx)
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
            return _refusal(ctx, err, "ComparePlansRequest")
        call.patient_keys = [self.audit.patient_key(request.patient.patient_id)]
        call.input_mac = _input_mac(self.audit, request)
        call.outputs = {
            "plans": [
                p.model_dump(include={"plan_index", "reirr_dose_gy", "reirr_fraction_gy",
                                      "reirr_fractions_per_day", "brachytherapy_boost",
                                      "reirr_eqd2_gy", "cumulative_eqd2_gy",
                                      "difference_uncertain"})
                | {"risks": risk_summary(p.risks)}
                for p in plans
            ]
        }
        return ComparePlansResponse(
            request_id=call.request_id, model=self.ref, patient_id=request.patient.patient_id,
            plans=plans,
        )

    @bentoml.api(route="/explain")
    def explain(self, request: ExplainRequest, /, ctx: bentoml.Context) -> ExplainResponse:
        """Exact Shapley attributions of one endpoint's risk at the horizons."""
        from serving.explaining import explain_patient
        from serving.scoring import ScoringInputError

        call = _call(ctx)
        try:
            explanations, method = explain_patient(
                self.model.bundle, self.explainer, request.patient, request.endpoint,
                request.horizons,
            )
        except ScoringInputError as err:
            return _refusal(ctx, err, "ExplainRequest")
        call.patient_keys = [self.audit.patient_key(request.patient.patient_id)]
        call.input_mac = _input_mac(self.audit, request)
        call.outputs = {
            "endpoint": request.endpoint,
            "method": method,
            "explanations": [e.model_dump(exclude={"top_factors"}) for e in explanations],
        }
        return ExplainResponse(
            request_id=call.request_id, model=self.ref, patient_id=request.patient.patient_id,
            endpoint=request.endpoint, method=method, explanations=explanations,
        )

    @bentoml.api(route="/report")
    def report(self, request: ReportRequest, /, ctx: bentoml.Context) -> bytes:
        """The one-page clinician report (``text/html`` or ``application/pdf``), the same
        document ``reirrad report`` writes; built in memory, nothing is written here."""
        from serving.loading import report_info
        from serving.report import build_report
        from serving.report_render import render_html, render_pdf

        call = _call(ctx)
        built = build_report(
            self.model.bundle, request.patient, report_info(self.model), self.explainer
        )
        document = (
            render_html(built).encode("utf-8") if request.format == "html" else render_pdf(built)
        )
        call.patient_keys = [self.audit.patient_key(request.patient.patient_id)]
        call.input_mac = _input_mac(self.audit, request)
        call.outputs = {
            "format": request.format,
            "document_sha256": hashlib.sha256(document).hexdigest(),
            "risks": {
                s.endpoint: {f"{r.months:g}": [r.estimate, r.lower, r.upper] for r in s.risks}
                for s in built.sections
            },
        }
        return Response(document, media_type=REPORT_MEDIA_TYPES[request.format])

    @bentoml.api(route="/model_info")
    def model_info(self, request: EmptyRequest, /) -> ModelInfoResponse:
        """The served model: version, bundle and training-data hashes, validated figures."""
        from serving.loading import describe_model

        return describe_model(self.model, self.settings)


RiskService.add_asgi_middleware(Gate, routes=ROUTES, service_getter=_current_service)
