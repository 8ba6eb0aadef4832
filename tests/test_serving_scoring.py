"""Scoring units: assumptions, applicability, plans, all-or-nothing batches, horizons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from features.config import ENDPOINTS, HORIZONS_MONTHS
from features.pipeline import eqd2
from features.schema import PatientInput
from serving import scoring
from serving.schemas import (
    DISCLAIMER,
    PLAN_COMPARISON_NOTE,
    BatchScoreRequest,
    ComparePlansRequest,
    ComparePlansResponse,
    DosePlan,
    ScoreRequest,
)
from serving.scoring import ScoringInputError
from tests.bundle_factory import small_bundle
from tests.cohort_rows import BASE_PATIENT


@pytest.fixture(scope="module")
def bundle():
    return small_bundle()


def patient(**changes) -> PatientInput:
    return PatientInput.model_validate(BASE_PATIENT | changes)


def test_schemas_reuse_the_patient_contract():
    assert ScoreRequest.model_fields["patient"].annotation is PatientInput
    for name in ("reirr_dose_gy", "reirr_fraction_gy", "reirr_fractions_per_day"):
        assert DosePlan.model_fields[name].metadata == PatientInput.model_fields[name].metadata
    with pytest.raises(ValidationError) as err:
        DosePlan(reirr_dose_gy=95, reirr_fraction_gy=2.0, reirr_fractions_per_day=1)
    assert err.value.errors()[0]["loc"] == ("reirr_dose_gy",)


def test_score_patient_returns_cif_at_standard_horizons(bundle):
    s = scoring.score_patient(bundle, patient())
    assert [r.endpoint for r in s.risks] == list(ENDPOINTS)
    expected = bundle.predict_horizons(scoring.records_frame([patient()]))
    for r in s.risks:
        assert r.horizons_months == [float(h) for h in HORIZONS_MONTHS]
        assert np.all(np.diff(r.cif) >= 0) and r.cif[0] >= 0 and r.cif[-1] <= 1
        for h, c in zip(r.horizons_months, r.cif, strict=True):
            assert c == pytest.approx(expected[f"{r.endpoint}_{h:g}m"].iloc[0], abs=1e-12)
        assert r.curve is None


def test_curve_on_the_grid_agrees_with_horizons(bundle):
    s = scoring.score_patient(bundle, patient(), horizons=[6, 24], include_curve=True)
    for r in s.risks:
        assert r.curve.months == bundle.grid.points.tolist()
        assert r.curve.cif[5] == pytest.approx(r.cif[0], abs=1e-12)
        assert r.curve.cif[23] == pytest.approx(r.cif[1], abs=1e-12)


def test_empty_primary_fraction_is_assumed_and_said(bundle):
    stated = scoring.score_patient(bundle, patient(primary_fraction_gy=2.0))
    empty = scoring.score_patient(bundle, patient(primary_fraction_gy=None))
    assert stated.assumed == []
    assert len(empty.assumed) == 1 and "2 Gy" in empty.assumed[0]
    assert "primary_fraction_gy" in empty.assumed[0]


def test_inputs_outside_the_training_range_are_flagged(bundle):
    top = bundle.training_summary["feature_ranges"]["age_years"]["max"]
    assert top < 100, "the test needs an age above the training range"
    inside = scoring.score_patient(bundle, patient(age_years=top))
    outside = scoring.score_patient(bundle, patient(age_years=min(100.0, top + 10)))
    assert not any("age_years" in w for w in inside.warnings)
    assert any(w.startswith("age_years=") for w in outside.warnings)


def test_patient_id_changes_nothing(bundle):
    a = scoring.score_patient(bundle, patient(patient_id="A1"))
    b = scoring.score_patient(bundle, patient(patient_id="ZZ-other"))
    assert [r.cif for r in a.risks] == [r.cif for r in b.risks]


def test_batch_equals_single_scores(bundle):
    pats = [patient(patient_id=f"B{i}", gtv_cm3=5.0 + 40 * i) for i in range(4)]
    batch = scoring.score_batch(bundle, pats)
    assert [s.patient_id for s in batch] == [p.patient_id for p in pats]
    for p, s in zip(pats, batch, strict=True):
        one = scoring.score_patient(bundle, p)
        assert [r.cif for r in one.risks] == [r.cif for r in s.risks]


def test_batch_with_one_bad_record_is_refused_whole(bundle):
    rows = pd.DataFrame([BASE_PATIENT | {"patient_id": f"R{i}"} for i in range(3)])
    rows.loc[1, "gtv_cm3"] = -4.0
    with pytest.raises(ScoringInputError) as err:
        scoring.score_records(bundle, rows)
    assert [p.loc for p in err.value.problems] == [("patients", 1, "gtv_cm3")]
    # duplicate keys: both records are valid alone, the batch is not
    dup = [patient(patient_id="D1"), patient(patient_id="D1")]
    with pytest.raises(ScoringInputError) as err:
        scoring.score_batch(bundle, dup)
    assert err.value.problems[0].loc == ("patients", 1, "patient_id")
    # a request body with one bad record does not parse at all
    body = {"patients": [BASE_PATIENT, BASE_PATIENT | {"patient_id": "X", "sex": "other"}]}
    with pytest.raises(ValidationError) as verr:
        BatchScoreRequest.model_validate(body)
    assert verr.value.errors()[0]["loc"] == ("patients", 1, "sex")


def test_batch_size_limit(bundle):
    pats = [patient(patient_id=f"L{i}") for i in range(3)]
    with pytest.raises(ScoringInputError) as err:
        scoring.score_batch(bundle, pats, max_batch=2)
    assert err.value.problems[0].loc == ("patients",)
    assert len(scoring.score_batch(bundle, pats, max_batch=3)) == 3


def test_horizons_beyond_the_grid_are_refused(bundle):
    with pytest.raises(ScoringInputError) as err:
        scoring.score_patient(bundle, patient(), horizons=[12, bundle.grid.max_months + 1])
    assert err.value.problems[0].loc == ("horizons",)
    assert "grid" in err.value.problems[0].msg
    with pytest.raises(ValidationError):
        ScoreRequest.model_validate({"patient": BASE_PATIENT, "horizons": [-3]})


def test_compare_plans_reports_each_plans_eqd2_and_risks(bundle):
    p = patient(primary_fraction_gy=None)
    plans = [
        DosePlan(reirr_dose_gy=50, reirr_fraction_gy=2.0, reirr_fractions_per_day=1, label="low"),
        DosePlan(reirr_dose_gy=70, reirr_fraction_gy=2.5, reirr_fractions_per_day=1),
        DosePlan(reirr_dose_gy=64, reirr_fraction_gy=1.6, reirr_fractions_per_day=2),
    ]
    out = scoring.compare_plans(bundle, p, plans)
    assert [o.plan_index for o in out] == [0, 1, 2]
    assert out[0].label == "low"
    for o, plan in zip(out, plans, strict=True):
        want = float(eqd2(plan.reirr_dose_gy, plan.reirr_fraction_gy))
        assert o.reirr_eqd2_gy == pytest.approx(want)
        assert o.cumulative_eqd2_gy == pytest.approx(want + float(eqd2(p.primary_dose_gy, 2.0)))
        assert o.assumed, "the assumed first-course fraction is said for every plan"
        alone = scoring.score_patient(
            bundle, p.model_copy(update=plan.model_dump(exclude={"label"}))
        )
        assert [r.cif for r in alone.risks] == [r.cif for r in o.risks]
    assert out[1].reirr_eqd2_gy > out[0].reirr_eqd2_gy
    resp = ComparePlansResponse(request_id="r", model=_ref(), patient_id=p.patient_id, plans=out)
    assert "tumour control" in resp.note and resp.note == PLAN_COMPARISON_NOTE
    assert "synthetic" in resp.disclaimer and resp.disclaimer == DISCLAIMER


def test_compare_plans_limits_and_location_of_a_bad_plan(bundle):
    body = {
        "patient": BASE_PATIENT,
        "plans": [
            {"reirr_dose_gy": 60, "reirr_fraction_gy": 2, "reirr_fractions_per_day": 1},
            {"reirr_dose_gy": 60, "reirr_fraction_gy": 2, "reirr_fractions_per_day": 3},
        ],
    }
    with pytest.raises(ValidationError) as err:
        ComparePlansRequest.model_validate(body)
    assert err.value.errors()[0]["loc"] == ("plans", 1, "reirr_fractions_per_day")
    plan = DosePlan(reirr_dose_gy=60, reirr_fraction_gy=2, reirr_fractions_per_day=1)
    with pytest.raises(ScoringInputError):
        scoring.compare_plans(bundle, patient(), [plan] * 3, max_plans=2)


def _ref():
    from serving.schemas import ModelRef

    return ModelRef(name="m", version="1", alias=None, bundle_sha256_prefix="ab", source="file")
