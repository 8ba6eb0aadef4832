"""Model behaviour on the synthetic cohort (design.md): invariance, direction, known profiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.config import MAIN_HORIZON_MONTHS
from models.forest import CompetingRiskForest

N_TREES = 100
SEED = 2024
H = MAIN_HORIZON_MONTHS

synthetic = pytest.importorskip("features.synthetic")
pipeline = pytest.importorskip("features.pipeline")

HIGH_RISK = dict(
    rt_stage="rT4",
    gtv_cm3=80.0,
    ttr_months=12.0,
    reirr_dose_gy=70.0,
    reirr_fraction_gy=2.2,
    preexisting_necrosis=True,
)
LOW_RISK = dict(
    rt_stage="rT1",
    gtv_cm3=5.0,
    ttr_months=100.0,
    reirr_dose_gy=60.0,
    reirr_fraction_gy=2.0,
    preexisting_necrosis=False,
)


@pytest.fixture(scope="module")
def cohort():
    return synthetic.simulate_cohort(1000, seed=SEED)


@pytest.fixture(scope="module", params=["mucosal_necrosis", "fatal_haemorrhage"])
def fitted(request, cohort):
    X = pipeline.build_features(cohort)
    y = pipeline.encode_endpoint(cohort, request.param)
    forest = CompetingRiskForest(n_estimators=N_TREES, random_state=SEED, n_jobs=2)
    return request.param, forest.fit(X, y)


def _risk(forest, records: pd.DataFrame) -> np.ndarray:
    return forest.predict_risk(pipeline.build_features(records), H)


def test_patient_id_changes_nothing(fitted, cohort):
    _, forest = fitted
    renamed = cohort.assign(patient_id=[f"other-{i}" for i in range(len(cohort))])
    np.testing.assert_array_equal(_risk(forest, renamed), _risk(forest, cohort))


def test_larger_gtv_or_higher_dose_never_lowers_mean_risk(fitted, cohort):
    _, forest = fitted
    base = _risk(forest, cohort).mean()
    assert _risk(forest, cohort.assign(gtv_cm3=cohort["gtv_cm3"] * 2.0)).mean() >= base
    assert _risk(forest, cohort.assign(reirr_dose_gy=cohort["reirr_dose_gy"] + 6.0)).mean() >= base


def test_known_profiles_rank(fitted, cohort):
    _, forest = fitted
    template = cohort.iloc[:1]
    high = _risk(forest, template.assign(**HIGH_RISK))[0]
    low = _risk(forest, template.assign(**LOW_RISK))[0]
    assert high > low


def test_closer_to_the_true_risk_than_the_cohort_average(fitted):
    endpoint, forest = fitted
    test = synthetic.simulate_cohort(500, seed=SEED + 1)
    truth = synthetic.true_cif(test, endpoint, [H])[:, 0]
    pred = _risk(forest, test)
    assert np.mean(np.abs(pred - truth)) < 0.75 * np.mean(np.abs(truth.mean() - truth))
    assert np.corrcoef(pred, truth)[0, 1] > 0.6
