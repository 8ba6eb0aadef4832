"""Overlapping /score calls predicted together answer exactly what each call gets alone."""

from __future__ import annotations

import asyncio

import pytest

from features.schema import PatientInput
from serving import scoring
from serving.coalescing import ScoreCoalescer
from serving.scoring import ScoringInputError
from tests.bundle_factory import small_bundle
from tests.cohort_rows import BASE_PATIENT


@pytest.fixture(scope="module")
def bundle():
    return small_bundle()


def patient(i: int) -> PatientInput:
    # the same key twice on purpose: separate calls may score the same patient
    return PatientInput.model_validate(
        BASE_PATIENT | {"patient_id": f"P{i % 5}", "gtv_cm3": 5.0 + 7.0 * i, "age_years": 40 + i}
    )


async def _gather(coalescer: ScoreCoalescer, calls):
    return await asyncio.gather(
        *(coalescer.score(p, h, c) for p, h, c in calls), return_exceptions=True
    )


def test_overlapping_calls_are_predicted_together_with_each_ones_own_answer(bundle):
    coalescer = ScoreCoalescer(bundle, max_batch=4)
    calls = [(patient(i), [12, 24], False) for i in range(9)]
    calls += [(patient(20), [6, 36], True), (patient(21), [6, 36], True)]
    got = asyncio.run(_gather(coalescer, calls))
    assert coalescer.calls == len(calls)
    # 9 calls in chunks of 4 (3 predictions) and the two with other horizons together (1)
    assert coalescer.predictions == 4
    for (p, h, c), result in zip(calls, got, strict=True):
        alone = scoring.score_patient(bundle, p, h, c)
        assert result.model_dump() == alone.model_dump()  # bit for bit, curves included


def test_a_refused_call_does_not_take_the_others_with_it(bundle):
    coalescer = ScoreCoalescer(bundle)
    beyond = bundle.grid.max_months + 1
    calls = [(patient(0), [12], False), (patient(1), [12, beyond], False),
             (patient(2), [12], False)]
    got = asyncio.run(_gather(coalescer, calls))
    assert isinstance(got[1], ScoringInputError)
    for i in (0, 2):
        assert got[i].model_dump() == scoring.score_patient(bundle, calls[i][0], [12]).model_dump()


def test_a_failing_prediction_is_retried_patient_by_patient(bundle, monkeypatch):
    real = scoring.score_patients

    def fails_for_p3(b, patients, horizons, include_curve):
        if any(p.gtv_cm3 == patient(3).gtv_cm3 for p in patients):
            raise ScoringInputError([scoring.Problem(("patient",), "refused in this test")])
        return real(b, patients, horizons, include_curve)

    monkeypatch.setattr(scoring, "score_patients", fails_for_p3)
    coalescer = ScoreCoalescer(bundle)
    got = asyncio.run(_gather(coalescer, [(patient(i), [24], False) for i in range(2, 5)]))
    assert isinstance(got[1], ScoringInputError)
    assert [type(g).__name__ for g in (got[0], got[2])] == ["PatientScore", "PatientScore"]
    assert coalescer.predictions == 4  # together once, then each alone
