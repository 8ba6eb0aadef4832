"""The per-patient report: what a clinician reads in a minute, computed once, rendered twice.

:func:`build_report` gathers everything the page shows (inputs, risks with intervals, the
curves, the factors, the model's identity and validated performance, the limits of use)
into a :class:`PatientReport`; ``serving.report_render`` turns it into self-contained HTML
or a one-page PDF. Keeping the numbers apart from the layout lets the tests check the
content without parsing a layout, and keeps the two formats identical in substance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from features.config import (
    ASSUMED_PRIMARY_FRACTION_GY,
    ENDPOINT_LABELS,
    ENDPOINTS,
    HORIZONS_MONTHS,
    MAIN_HORIZON_MONTHS,
)
from features.schema import INPUT_COLUMNS, PatientInput, validate_table
from models.explain import INPUT_METHOD, BundleExplainer, Factor, describe_value, top_factors
from models.intervals import coverage_note
from models.uncertainty import DEFAULT_LEVEL

N_FACTORS = 5
MAX_WARNINGS_SHOWN = 4
PER_HUNDRED = 100
DERIVED_SHOWN = ("primary_eqd2_gy", "reirr_eqd2_gy", "cumulative_eqd2_gy")
"""Derived features shown with the inputs, so the clinician sees the doses the model used."""

INPUT_LABELS: dict[str, tuple[str, str]] = {
    "age_years": ("Age", "years"),
    "sex": ("Sex", ""),
    "rt_stage": ("rT stage (AJCC/UICC 7th)", ""),
    "nodal_recurrence": ("Nodal recurrence", ""),
    "ttr_months": ("First RT to recurrence", "months"),
    "gtv_cm3": ("Recurrent GTV", "cm3"),
    "primary_dose_gy": ("First-course dose", "Gy"),
    "primary_fraction_gy": ("First-course dose per fraction", "Gy"),
    "primary_technique": ("First-course technique", ""),
    "reirr_dose_gy": ("Re-irradiation dose", "Gy"),
    "reirr_fraction_gy": ("Re-irradiation dose per fraction", "Gy"),
    "reirr_fractions_per_day": ("Re-irradiation fractions per day", ""),
    "chemotherapy": ("Chemotherapy with re-irradiation", ""),
    "brachytherapy_boost": ("Brachytherapy boost", ""),
    "prior_grade3_toxicity": ("Grade >=3 toxicity after first course", ""),
    "preexisting_necrosis": ("Necrosis before re-irradiation", ""),
}

INTENDED_USE = (
    "Research and teaching: to show how a competing-risks model would estimate the risk of "
    "grade >=3 mucosal necrosis and of fatal haemorrhage after re-irradiation of a recurrent "
    "nasopharyngeal carcinoma, for adults whose inputs lie within the training data's ranges, "
    "as one input to a multidisciplinary discussion."
)
OUT_OF_SCOPE = (
    "Not for deciding any individual patient's treatment; not a medical device. Not for "
    "other tumour sites, for first-course radiotherapy, or for inputs outside the training "
    "ranges. It predicts toxicity only and does not weigh tumour control: a lower dose that "
    "lowers these risks may also lower the chance of cure."
)
NOT_CAUSAL = (
    "The model is not causal: the factors below describe how this model's estimate depends on "
    "the inputs (exact Shapley values), not what would happen if an input were changed."
)
SYNTHETIC_DATA = (
    "The model was trained on synthetic data generated to resemble a published cohort; its "
    "numbers are not evidence about real patients."
)
CI_NOTE = (
    "Intervals are {level:.0%} infinitesimal-jackknife intervals (Wager, Hastie & Efron 2014) "
    "of the forest's estimate: they describe the estimate's sampling variability, not the "
    "model's bias. On the synthetic cohort they covered the true risk in {coverage} of "
    "patient-horizon pairs (nominal {level:.0%}); see benchmarks/RESULTS.md."
)
CI_COVERAGE_FILE = Path(__file__).with_name("ci_coverage.json")
"""Written by ``benchmarks/bench_explain.py`` (coverage of true_cif on the synthetic cohort)."""
SHAP_NOTE = (
    "Factors: exact Shapley values of the model's risk at {h} months over the 16 inputs, "
    "against {k} training patients (interventional), in percentage points; all factors "
    "together add up to this patient's risk minus those patients' average risk."
)
SHAP_NOTE_FOREST = (
    "Factors: exact path-dependent TreeSHAP of the forest's risk at {h} months, in percentage "
    "points; all factors together add up to this patient's risk minus the training average. "
    "The four first-course technique indicators are shown as one factor."
)


class PatientFileError(ValueError):
    """The patient file cannot be read or breaks the data contract."""


@dataclass(frozen=True)
class HorizonRisk:
    months: float
    estimate: float
    lower: float
    upper: float

    @property
    def in_hundred(self) -> str:
        """'12 in 100' (rounded); '<1 in 100' below half a percent."""
        return per_hundred(self.estimate)

    @property
    def interval_text(self) -> str:
        return f"{per_hundred_number(self.lower)}-{per_hundred_number(self.upper)}"


@dataclass(frozen=True)
class EndpointSection:
    endpoint: str
    label: str
    risks: list[HorizonRisk]
    times: np.ndarray  # grid months, with 0 prepended
    curve: np.ndarray
    curve_lower: np.ndarray
    curve_upper: np.ndarray
    cohort_curve: np.ndarray
    factors: list[Factor]
    base_value: float  # training average at the main horizon

    def risk_at(self, months: float) -> HorizonRisk:
        return next(r for r in self.risks if r.months == months)


@dataclass(frozen=True)
class PatientReport:
    patient_id: str
    generated_at: str
    inputs: list[tuple[str, str]]
    derived: list[str]
    assumptions: list[str]
    warnings: list[str]
    sections: list[EndpointSection]
    model: dict[str, Any]
    performance: list[dict[str, Any]]
    main_horizon: int = MAIN_HORIZON_MONTHS
    level: float = DEFAULT_LEVEL
    notes: dict[str, str] = field(default_factory=dict)


def per_hundred_number(p: float) -> str:
    v = PER_HUNDRED * float(p)
    return "<1" if v < 0.5 else f"{v:.0f}"


def per_hundred(p: float) -> str:
    return f"{per_hundred_number(p)} in {PER_HUNDRED}"


# ------------------------------------------------------------------------ reading input
def read_patient_file(path: str | Path) -> dict[str, Any]:
    """One patient object from JSON (an object, or a one-element list / {"patients": [..]})."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PatientFileError(f"{p}: not readable JSON ({err})") from err
    if isinstance(data, dict) and "patients" in data:
        data = data["patients"]
    if isinstance(data, list):
        if len(data) != 1:
            raise PatientFileError(f"{p}: a report is for one patient; the file has {len(data)}")
        data = data[0]
    if not isinstance(data, dict):
        raise PatientFileError(f"{p}: expected one patient object")
    return data


def validate_patient(patient: dict[str, Any]) -> tuple[PatientInput, list[str]]:
    """The record validated by the contract, and its warnings; every violation is listed.

    The row model reports every field at once (missing, out of range, wrong category); the
    table check adds the contract's warnings.
    """
    try:
        PatientInput.model_validate(patient)
    except ValidationError as err:
        lines = [
            f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in err.errors()
        ]
        raise PatientFileError(
            "the patient breaks the data contract:\n  " + "\n  ".join(lines)
        ) from err
    report = validate_table(pd.DataFrame([patient]), require_outcomes=False)
    if not report.ok:
        lines = [f"{v.column or 'record'}: {v.reason}" for v in report.errors]
        raise PatientFileError("the patient breaks the data contract:\n  " + "\n  ".join(lines))
    # the assumed first-course fraction size is stated once, as an assumption
    notes = [
        f"{w.column}: {w.reason}" if w.column else w.reason
        for w in report.warnings
        if w.column != "primary_fraction_gy"
    ]
    return report.records[0], notes


def _format_input(name: str, value: Any) -> str:
    label, unit = INPUT_LABELS.get(name, (name, ""))
    if value is None or (isinstance(value, float) and np.isnan(value)):
        if name == "primary_fraction_gy":
            return f"empty ({ASSUMED_PRIMARY_FRACTION_GY:g} Gy assumed)"
        return "empty"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name == "reirr_fractions_per_day":
        return "twice daily" if int(value) == 2 else "once daily"
    if isinstance(value, float | int):
        return f"{float(value):g} {unit}".strip()
    return str(value)


# ------------------------------------------------------------------------- the content
def _performance(bundle, info: dict[str, Any]) -> list[dict[str, Any]]:
    """Validated AUC, Brier and ICI per endpoint at the main horizon, with their 95 %
    intervals (``<metric>_lo``/``_hi``, None when the bundle has none) and the events they
    rest on; the hold-out figures beside them."""
    metrics = dict(bundle.metrics or {})
    rows = []
    h = MAIN_HORIZON_MONTHS

    def number(key: str) -> float | None:
        v = metrics.get(key)
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return None if np.isnan(f) else f

    for e in ENDPOINTS:
        row: dict[str, Any] = {"endpoint": ENDPOINT_LABELS[e]}
        for m in ("auc", "brier", "ici"):
            for suffix in ("", "_lo", "_hi"):
                row[f"{m}{suffix}"] = number(f"{e}/{m}_{h}m{suffix}")
        for m in ("auc", "brier"):
            row[f"holdout_{m}"] = number(f"{e}/holdout_{m}_{h}m")
        events = number(f"{e}/events_{h}m")
        n = number(f"{e}/n_patients")
        row["events"] = None if events is None else int(events)
        row["n_patients"] = None if n is None else int(n)
        rows.append(row)
    return rows


def validation_note(bundle) -> str:
    """One paragraph under the performance table: how the figures were obtained, what they
    rest on and what the AUC means (read from the bundle; older bundles say less)."""
    record = getattr(bundle, "validation", None)
    if not record:
        return (
            "AUC, Brier score and integrated calibration index (ICI) from the training run "
            "(this model carries no record of how they were validated); hold-out: patients "
            "never used in training."
        )
    perf = _performance(bundle, {})
    events = ", ".join(
        f"{p['events']} {p['endpoint'].lower()}" for p in perf if p["events"] is not None
    )
    return (
        f"Validated by {record.get('method', 'cross-validation')}, on "
        f"{record.get('n_patients', 'n/a')} patients ({events} events by "
        f"{MAIN_HORIZON_MONTHS} months); in brackets, 95 % intervals "
        f"({record.get('interval', 'bootstrap')}). {record.get('auc_meaning', '')}. "
        + (f"{record['coverage_note']} " if record.get("coverage_note") else "")
        + "Hold-out: patients never used in training."
    )


def with_interval(p: dict[str, Any], metric: str) -> str:
    """``0.712 [0.650, 0.770]``, or the bare figure (or n/a) when there is no interval."""
    v, lo, hi = p.get(metric), p.get(f"{metric}_lo"), p.get(f"{metric}_hi")
    if v is None:
        return "n/a"
    if lo is None or hi is None:
        return f"{v:.3f}"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def _model_identity(bundle, info: dict[str, Any]) -> dict[str, Any]:
    prov = dict(bundle.provenance or {})
    summary = dict(bundle.training_summary or {})
    sha = str(info.get("sha256") or info.get("bundle_sha256") or "")
    return {
        "name": info.get("model_name") or prov.get("model_name", "reirrad forest"),
        "version": str(info.get("version") or prov.get("model_version", "unregistered")),
        "alias": info.get("alias"),
        "sha256": sha[:12] if sha else "n/a",
        "created_at": prov.get("created_at", "n/a"),
        "run_id": info.get("run_id") or prov.get("mlflow_run_id"),
        "data_source": prov.get("data_source", "synthetic cohort"),
        "data_rows": prov.get("data_rows") or summary.get("n_rows"),
        "development_rows": prov.get("development_rows") or summary.get("n_rows"),
        "data_sha256": str(prov.get("data_sha256") or prov.get("training_data_sha256") or "")[:12],
        "n_trees": {e: getattr(m, "n_estimators", None) for e, m in bundle.models.items()},
        "kind": model_kind(next(iter(bundle.models.values()))),
    }


def model_kind(model: Any) -> str:
    """What the served model is, in a few words for the report (a forest or an ensemble)."""
    if hasattr(model, "members_") and hasattr(model, "weights_"):
        names = ", ".join(name for name, _ in model.members_)
        return f"stacked competing-risks ensemble ({names}; weights by cross-validation)"
    return (
        "competing-risks random survival forest "
        f"({getattr(model, 'n_estimators', '?')} trees per endpoint)"
    )


def _shap_note(explainer: BundleExplainer) -> str:
    if explainer.method == INPUT_METHOD and explainer.background is not None:
        return SHAP_NOTE.format(h=MAIN_HORIZON_MONTHS, k=len(explainer.background))
    return SHAP_NOTE_FOREST.format(h=MAIN_HORIZON_MONTHS)


def _coverage_text() -> str:
    try:
        data = json.loads(CI_COVERAGE_FILE.read_text())
        return f"{100 * float(data['coverage']):.0f}%"
    except (OSError, ValueError, KeyError):
        return "an unmeasured share"


def interval_note(bundle, level: float = DEFAULT_LEVEL) -> str:
    """What the report says about the intervals: the method, the coverage record the bundle
    carries (configuration and n it was simulated at) and that real data have no known truth;
    for an older bundle, its forests' jackknife intervals."""
    note = coverage_note(bundle, level)
    return CI_NOTE.format(level=level, coverage=_coverage_text()) if note is None else note


def build_report(
    bundle,
    patient: dict[str, Any] | PatientInput,
    info: dict[str, Any] | None = None,
    explainer: BundleExplainer | None = None,
    level: float = DEFAULT_LEVEL,
) -> PatientReport:
    """Compute everything the one-page report shows for one patient.

    ``patient``: a raw record (validated here) or a :class:`PatientInput` that the contract
    already validated (the API's request; not validated twice).
    """
    info = dict(info or {})
    if isinstance(patient, PatientInput):
        validated, contract_warnings = patient, []
    else:
        validated, contract_warnings = validate_patient(patient)
    X = bundle.features_from_inputs([validated])
    explainer = explainer or BundleExplainer(bundle)
    explanations = explainer.explain([validated])
    grid = bundle.grid.points
    cif = bundle.predict_cif_features(X)
    bands = bundle.risk_intervals(X, grid, cif=cif, level=level)
    h_idx = [int(np.flatnonzero(np.isclose(grid, h))[0]) for h in HORIZONS_MONTHS]
    sections = []
    for e in ENDPOINTS:
        est, (lower, upper), exp = cif[e][0], bands[e], explanations[e]
        risks = [
            HorizonRisk(float(h), est[j], lower[0, j], upper[0, j])
            for h, j in zip(HORIZONS_MONTHS, h_idx, strict=True)
        ]
        cohort = np.asarray(bundle.baseline_cif.get(e) or exp.base_values, dtype=float)
        base_main, _, _ = exp.at(MAIN_HORIZON_MONTHS)
        sections.append(
            EndpointSection(
                endpoint=e,
                label=ENDPOINT_LABELS[e],
                risks=risks,
                times=np.concatenate([[0.0], grid]),
                curve=np.concatenate([[0.0], est]),
                curve_lower=np.concatenate([[0.0], lower[0]]),
                curve_upper=np.concatenate([[0.0], upper[0]]),
                cohort_curve=np.concatenate([[0.0], cohort]),
                factors=top_factors(exp, 0, MAIN_HORIZON_MONTHS, N_FACTORS),
                base_value=base_main,
            )
        )
    record = validated.model_dump()
    inputs = [
        (INPUT_LABELS[c][0], _format_input(c, record.get(c)))
        for c in INPUT_COLUMNS
        if c in INPUT_LABELS
    ]
    derived = [describe_value(c, X.iloc[0][c]) for c in DERIVED_SHOWN]
    assumptions = []
    if pd.isna(record.get("primary_fraction_gy")):
        assumptions.append(
            f"First-course dose per fraction was empty: {ASSUMED_PRIMARY_FRACTION_GY:g} Gy was "
            "assumed for its EQD2."
        )
    warnings = contract_warnings + bundle.applicability_warnings(X)[0]
    if len(warnings) > MAX_WARNINGS_SHOWN:  # the page has room for a few; say how many more
        hidden = len(warnings) - MAX_WARNINGS_SHOWN + 1
        warnings = warnings[: MAX_WARNINGS_SHOWN - 1] + [
            f"and {hidden} more inputs outside the training data's range"
        ]
    return PatientReport(
        patient_id=str(record["patient_id"]),
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        inputs=inputs,
        derived=derived,
        assumptions=assumptions,
        warnings=warnings,
        sections=sections,
        model=_model_identity(bundle, info),
        performance=_performance(bundle, info),
        level=level,
        notes={
            "intended_use": INTENDED_USE,
            "out_of_scope": OUT_OF_SCOPE,
            "not_causal": NOT_CAUSAL,
            "synthetic": SYNTHETIC_DATA,
            "ci": interval_note(bundle, level),
            "shap": _shap_note(explainer),
            "validation": validation_note(bundle),
        },
    )
