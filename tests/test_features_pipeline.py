"""Feature pipeline and endpoint encoding: hand-computed values."""

import numpy as np
import pandas as pd
import pytest

from features.pipeline import FEATURE_COLUMNS, build_features, encode_endpoint, eqd2
from features.schema import validated_frame
from tests.cohort_rows import BASE_PATIENT, good_cohort


@pytest.mark.parametrize(
    ("dose", "fraction", "expected"),
    [
        (60.0, 2.2, 62.4),  # 60 x 5.2 / 5
        (65.0, 1.2, 54.6),  # 65 x 4.2 / 5, twice daily: fractions per day do not enter
        (70.0, 2.0, 70.0),  # 2 Gy fractions: EQD2 equals the physical dose
        (68.0, 2.0, 68.0),
        (30.0, 3.0, 36.0),  # 30 x 6 / 5
    ],
)
def test_eqd2_matches_hand_computed_values(dose, fraction, expected):
    assert eqd2(dose, fraction) == pytest.approx(expected, abs=1e-12)


def test_build_features_columns_and_derived_values():
    df = validated_frame(good_cohort())
    X = build_features(df)
    assert tuple(X.columns) == FEATURE_COLUMNS
    assert X.dtypes.map(lambda d: np.issubdtype(d, np.floating)).all()
    first = X.iloc[0]
    assert first["reirr_eqd2_gy"] == pytest.approx(62.4)
    assert first["primary_eqd2_gy"] == pytest.approx(70.0)
    assert first["cumulative_eqd2_gy"] == pytest.approx(132.4)
    assert first["rt_stage"] == 3
    assert first["sex_male"] == 1 and X.iloc[1]["sex_male"] == 0
    bid = X.iloc[3]
    assert bid["reirr_twice_daily"] == 1 and bid["reirr_eqd2_gy"] == pytest.approx(54.6)
    assert X["reirr_twice_daily"].sum() == 1


def test_ttr_flag_is_inclusive_at_24_months():
    df = validated_frame(good_cohort(with_outcomes=False))
    df.loc[0, "ttr_months"] = 24.0
    df.loc[1, "ttr_months"] = 24.1
    X = build_features(df)
    assert X.loc[0, "ttr_le_24m"] == 1 and X.loc[1, "ttr_le_24m"] == 0


def test_assumed_primary_fraction_sets_indicator_and_uses_2gy():
    raw = pd.DataFrame([dict(BASE_PATIENT, primary_fraction_gy=None, primary_dose_gy=66)])
    X = build_features(validated_frame(raw))
    assert X.loc[0, "primary_fraction_assumed"] == 1
    assert X.loc[0, "primary_eqd2_gy"] == pytest.approx(66.0)


def test_features_ignore_patient_id():
    a = validated_frame(good_cohort())
    b = a.assign(patient_id=[f"other-{i}" for i in range(len(a))])
    pd.testing.assert_frame_equal(build_features(a), build_features(b))


def test_encode_mucosal_necrosis_on_hand_made_patients():
    y = encode_endpoint(validated_frame(good_cohort()), "mucosal_necrosis")
    assert y.dtype.names == ("event", "time")
    np.testing.assert_array_equal(y["event"], [1, 2, 0, 1, 2])
    np.testing.assert_allclose(y["time"], [6.0, 20.0, 48.0, 3.0, 14.2])


def test_encode_fatal_haemorrhage_on_hand_made_patients():
    y = encode_endpoint(validated_frame(good_cohort()), "fatal_haemorrhage")
    np.testing.assert_array_equal(y["event"], [1, 2, 0, 0, 2])
    np.testing.assert_allclose(y["time"], [9.5, 20.0, 48.0, 30.0, 14.2])


def test_encode_unknown_endpoint_is_refused():
    with pytest.raises(ValueError, match="unknown endpoint"):
        encode_endpoint(validated_frame(good_cohort()), "overall_survival")
