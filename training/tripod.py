"""The TRIPOD+AI items (Collins et al., BMJ 2024) that apply to this model, and where each is met.

One list, shown by the model card and the cohort report, so the two never disagree. Items
that cannot apply to a model trained on synthetic data (patient and public involvement,
ethics approval) are listed as such rather than left out.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TripodItem:
    number: str
    topic: str
    status: str  # "met", "partly", "n/a"
    where: str


TRIPOD_AI: tuple[TripodItem, ...] = (
    TripodItem(
        "1",
        "Title: development/evaluation, population, outcome",
        "met",
        "model card title; report headers",
    ),
    TripodItem(
        "3",
        "Background: healthcare context, rationale",
        "met",
        "docs (design), model card 'Intended use'",
    ),
    TripodItem("4", "Objectives: develop and/or evaluate", "met", "model card 'Model details'"),
    TripodItem(
        "5",
        "Data sources",
        "partly",
        "synthetic cohort generator and its datasheet; no real patients",
    ),
    TripodItem(
        "6",
        "Participants: eligibility, setting, treatments",
        "met",
        "data contract (design.md); cohort report 'Data'",
    ),
    TripodItem(
        "7",
        "Data preparation and quality checks",
        "met",
        "cohort contract validation; refused records are listed, never half-loaded",
    ),
    TripodItem(
        "8",
        "Outcome: definition, time horizon, competing risks",
        "met",
        "endpoints with competing risks; 6-36 month horizons",
    ),
    TripodItem(
        "9",
        "Predictors: definition, derived features (EQD2)",
        "met",
        "feature list with units; EQD2 with alpha/beta = 3 Gy computed, never typed in",
    ),
    TripodItem(
        "10", "Sample size", "partly", "training rows stated; no formal sample-size calculation"
    ),
    TripodItem(
        "11",
        "Missing data",
        "met",
        "only first-course fraction size may be empty: 2 Gy assumed and flagged",
    ),
    TripodItem(
        "12",
        "Analytical methods: model, tuning, internal validation",
        "met",
        "registered model (forest or ensemble); repeated K-fold cross-validation, tuning "
        "nested in each fold, 95 % bootstrap intervals; hold-out",
    ),
    TripodItem(
        "14",
        "Fairness: performance in subgroups",
        "partly",
        "subgroup AUC by sex, age band and rT stage in the training run",
    ),
    TripodItem(
        "15",
        "Model output and its use",
        "met",
        "cumulative incidence as 'x in 100' with intervals; no decision threshold",
    ),
    TripodItem(
        "16",
        "Differences between development and evaluation data",
        "met",
        "cohort report states its cohort; hold-out by salted patient key",
    ),
    TripodItem("17", "Ethical approval", "n/a", "synthetic data only"),
    TripodItem(
        "18",
        "Open science: code, model availability",
        "met",
        "code in the repository; model in the MLflow registry with SHA-256",
    ),
    TripodItem("19", "Patient and public involvement", "n/a", "none (research software)"),
    TripodItem("20", "Participants: flow and characteristics", "met", "cohort report 'Data'"),
    TripodItem("22", "Model specification", "met", "model card 'Model details'; bundle provenance"),
    TripodItem(
        "23",
        "Performance with confidence intervals; calibration; decision curves",
        "met",
        "cohort report 'Performance', calibration and decision curves",
    ),
    TripodItem("24", "Model updating", "met", "retraining job with promotion gate"),
    TripodItem(
        "25",
        "Interpretation: explanations",
        "met",
        "exact Shapley values, global (cohort report) and per patient (report)",
    ),
    TripodItem("26", "Usability: how to use, by whom", "met", "model card 'Intended use'"),
    TripodItem("27", "Limitations", "met", "model card 'Caveats'; report small print"),
)
