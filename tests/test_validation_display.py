"""The validated figures, their intervals and what they rest on reach the model card, the
clinician report (HTML and one-page PDF) and /model_info, read from the bundle alone."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from features.config import ENDPOINTS, HORIZONS_MONTHS, MAIN_HORIZON_MONTHS
from models.ensemble import CompetingRiskEnsemble
from serving.report import build_report, validation_note
from serving.report_render import render_html, render_pdf
from tests.bundle_factory import small_bundle
from tests.test_report_patient import EXAMPLE, _pdf_text
from training.model_card import build_model_card
from training.validation_coverage import coverage_entry, coverage_sentence

AUC = (0.712, 0.651, 0.771)
EVENTS = {ENDPOINTS[0]: 83, ENDPOINTS[1]: 61}
N = 470


def _validated(bundle):
    metrics: dict[str, float] = {}
    figures: dict[str, dict] = {}
    for e in ENDPOINTS:
        metrics[f"{e}/n_patients"] = N
        figures[e] = {}
        for h in HORIZONS_MONTHS:
            metrics[f"{e}/events_{h}m"] = EVENTS[e]
            for m, (v, lo, hi) in {
                "auc": AUC,
                "brier": (0.141, 0.128, 0.155),
                "ici": (0.021, 0.012, 0.044),
                "slope": (0.93, 0.71, 1.18),
            }.items():
                metrics[f"{e}/{m}_{h}m"] = v
                metrics[f"{e}/{m}_{h}m_lo"] = lo
                metrics[f"{e}/{m}_{h}m_hi"] = hi
            figures[e][f"{h}m"] = {
                "events": EVENTS[e],
                "auc": dict(zip(("estimate", "lo", "hi"), AUC, strict=True)),
            }
    record = {
        "method": "1 x 5-fold cross-validation by patient",
        "interval": "percentile bootstrap of patients over the out-of-fold predictions (B=200)",
        "level": 0.95,
        "n_patients": N,
        "auc_meaning": "AUC at H months: cases had the event by H; controls: everyone else, "
        "competing events included",
        "coverage_note": coverage_sentence(coverage_entry(CompetingRiskEnsemble())),
        "figures": figures,
    }
    return dataclasses.replace(bundle, metrics=metrics, validation=record)


@pytest.fixture(scope="module")
def bundle():
    return _validated(small_bundle())


def test_model_card_shows_intervals_counts_and_the_auc_meaning(bundle):
    card = build_model_card(bundle, {"sha256": "ab" * 32})
    assert "## Performance (cross-validated" in card
    assert "0.712 [0.651, 0.771]" in card
    assert f"| {EVENTS[ENDPOINTS[1]]} |" in card and f"Patients: {N}" in card
    assert "competing events included" in card
    assert "- Coverage: On synthetic cohorts (ensemble" in card


def test_report_shows_intervals_counts_and_the_auc_meaning(bundle):
    report = build_report(bundle, json.loads(Path(EXAMPLE).read_text()))
    row = report.performance[0]
    assert (row["auc"], row["auc_lo"], row["auc_hi"]) == AUC
    assert row["events"] == EVENTS[ENDPOINTS[0]] and row["n_patients"] == N
    note = report.notes["validation"]
    assert f"{N} patients" in note and str(EVENTS[ENDPOINTS[1]]) in note
    assert "competing events included" in note and f"{MAIN_HORIZON_MONTHS} months" in note
    assert "new patients in this share of runs" in note  # the measured coverage, not only 95 %
    html = render_html(report)
    assert "0.712 [0.651, 0.771]" in html and "competing events included" in html
    assert "share of runs" in html
    pages, text = _pdf_text(render_pdf(report))
    assert pages == 1 and "0.712 [0.651, 0.771]" in text and "share of runs" in text


def test_a_bundle_without_a_validation_record_says_so():
    assert "no record" in validation_note(small_bundle())


def test_model_info_carries_the_validation_record(bundle):
    from serving.loading import LoadedModel, describe_model
    from serving.settings import ServingSettings

    model = LoadedModel(bundle, "reirrad-toxicity", "3", "champion", "ab" * 32, "registry")
    info = describe_model(model, ServingSettings())
    assert info.validation["n_patients"] == N
    assert info.metrics[f"{ENDPOINTS[0]}/auc_24m_lo"] == AUC[1]
