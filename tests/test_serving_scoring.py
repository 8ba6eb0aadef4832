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
    assert issubclass(ScoreRequest.model_fields["patient"].annotation, PatientInput)
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
    assert [p.loc for p in err.value.problems] == [("horizons", 1)]
    assert "grid" in err.value.problems[0].msg
    with pytest.raises(ScoringInputError) as err:
        scoring.score_patient(bundle, patient(), horizons=[12.5, 0.5, 24])
    assert [p.loc for p in err.value.problems] == [("horizons", 0), ("horizons", 1)]
    a = scoring.score_patient(bundle, patient(), horizons=[24.0])
    b = scoring.score_patient(bundle, patient(), horizons=[24])
    assert a.risks[0].cif == b.risks[0].cif and a.risks[0].horizons_months == [24.0]
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
            bundle, p.model_copy(update=plan.model_dump(exclude={"label", "brachytherapy_boost"}))
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


def test_requests_are_strict_files_are_not():
    for changes, loc in (
        ({"age_years": "52"}, ("patient", "age_years")),
        ({"chemotherapy": "yes"}, ("patient", "chemotherapy")),
        ({"reirr_fractions_per_day": 1.0}, ("patient", "reirr_fractions_per_day")),
        ({"gtv_cm3": float("nan")}, ("patient", "gtv_cm3")),
    ):
        with pytest.raises(ValidationError) as err:
            ScoreRequest.model_validate({"patient": BASE_PATIENT | changes})
        assert err.value.errors()[0]["loc"] == loc, changes
    assert ScoreRequest.model_validate({"patient": BASE_PATIENT | {"age_years": 52}})
    # a CSV cell is text: the file path keeps the contract's own parsing
    rows = pd.DataFrame([{k: str(v) for k, v in BASE_PATIENT.items()}])
    assert scoring.validated_records(rows)[0].age_years == 49.0


def test_every_risk_has_an_ordered_monotone_interval(bundle):
    pats = [patient(patient_id=f"I{i}", gtv_cm3=5.0 + 60 * i, reirr_dose_gy=40 + 10 * i)
            for i in range(4)]
    for s in scoring.score_batch(bundle, pats, horizons=[3, 6, 12, 24, 36, 60],
                                 include_curve=True):
        for r in s.risks:
            for c, lo, hi in ((r.cif, r.lower, r.upper),
                              (r.curve.cif, r.curve.lower, r.curve.upper)):
                c, lo, hi = np.asarray(c), np.asarray(lo), np.asarray(hi)
                assert np.all((lo >= 0) & (lo <= c) & (c <= hi) & (hi <= 1))
                assert np.all(np.diff(lo) >= 0) and np.all(np.diff(hi) >= 0)
            assert np.any(np.asarray(r.upper) > np.asarray(r.cif))  # not a zero-width band


def test_plans_may_set_the_boost_and_carry_paired_differences(bundle):
    p = patient(brachytherapy_boost=False)
    plans = [
        DosePlan(reirr_dose_gy=60, reirr_fraction_gy=2.0, reirr_fractions_per_day=1),
        DosePlan(reirr_dose_gy=60, reirr_fraction_gy=2.0, reirr_fractions_per_day=1,
                 brachytherapy_boost=True),
        DosePlan(reirr_dose_gy=60, reirr_fraction_gy=2.0, reirr_fractions_per_day=1),
    ]
    first, boosted, same = scoring.compare_plans(bundle, p, plans, horizons=[12, 24])
    assert (first.brachytherapy_boost, boosted.brachytherapy_boost) == (False, True)
    as_planned = {"reirr_dose_gy": 60, "reirr_fraction_gy": 2.0, "reirr_fractions_per_day": 1}
    alone = scoring.score_patient(
        bundle, p.model_copy(update=as_planned | {"brachytherapy_boost": True}), horizons=[12, 24]
    )
    assert [r.cif for r in alone.risks] == [r.cif for r in boosted.risks]
    assert first.differences is None and first.difference_uncertain is None
    assert same.difference_uncertain is True
    assert all(d.difference == [0.0, 0.0] and d.lower == [0.0, 0.0] for d in same.differences)
    for d, r, r0 in zip(boosted.differences, boosted.risks, first.risks, strict=True):
        np.testing.assert_allclose(d.difference, np.subtract(r.cif, r0.cif), atol=1e-12)
        assert all(lo <= x <= hi for lo, x, hi in zip(d.lower, d.difference, d.upper,
                                                      strict=True))


def test_paired_difference_interval_is_narrower_than_marginal_intervals(bundle):
    """The point of pairing: two close plans of one patient share most of their error."""
    p = patient()
    plans = [DosePlan(reirr_dose_gy=d, reirr_fraction_gy=2.0, reirr_fractions_per_day=1)
             for d in (60, 62)]
    first, second = scoring.compare_plans(bundle, p, plans, horizons=[24])
    for d, r, r0 in zip(second.differences, second.risks, first.risks, strict=True):
        paired = d.upper[0] - d.lower[0]
        marginal = (r.upper[0] - r.lower[0]) + (r0.upper[0] - r0.lower[0])
        assert paired < marginal


def test_explanations_add_up_to_the_scored_risk(bundle):
    from models.explain import PLAYERS, BundleExplainer
    from serving.explaining import explain_patient

    p = patient()
    scored = scoring.score_patient(bundle, p)
    explanations, method = explain_patient(bundle, BundleExplainer(bundle), p,
                                           "fatal_haemorrhage", HORIZONS_MONTHS)
    assert method == "interventional_inputs"
    for e, h in zip(explanations, HORIZONS_MONTHS, strict=True):
        assert e.months == h
        assert abs(e.base_value + sum(e.attributions.values()) - e.risk) <= 1e-9
        assert abs(e.risk - scored.cif_at("fatal_haemorrhage", h)) <= 1e-12
        assert len(e.top_factors) >= 3
        assert set(e.attributions) == set(PLAYERS)  # the contract's inputs are the players
