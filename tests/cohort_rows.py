"""Hand-made cohort rows for tests: small, readable, and valid under the contract."""

from __future__ import annotations

import pandas as pd

BASE_PATIENT = {
    "patient_id": "P001",
    "age_years": 49,
    "sex": "male",
    "rt_stage": "rT3",
    "nodal_recurrence": False,
    "ttr_months": 35,
    "gtv_cm3": 28.5,
    "primary_dose_gy": 70,
    "primary_fraction_gy": 2.0,
    "primary_technique": "2D",
    "reirr_dose_gy": 60,
    "reirr_fraction_gy": 2.2,
    "reirr_fractions_per_day": 1,
    "chemotherapy": True,
    "brachytherapy_boost": False,
    "prior_grade3_toxicity": False,
    "preexisting_necrosis": False,
}

OUTCOMES = [
    # necrosis at 6 months, later died of haemorrhage
    {"necrosis_event": True, "necrosis_months": 6.0, "followup_months": 9.5,
     "death_cause": "haemorrhage"},
    # no necrosis, died of progression
    {"necrosis_event": False, "necrosis_months": None, "followup_months": 20.0,
     "death_cause": "progression"},
    # alive without necrosis
    {"necrosis_event": False, "necrosis_months": 48.0, "followup_months": 48.0,
     "death_cause": "alive"},
    # necrosis, alive
    {"necrosis_event": True, "necrosis_months": 3.0, "followup_months": 30.0,
     "death_cause": "alive"},
    # unknown cause of death
    {"necrosis_event": False, "necrosis_months": None, "followup_months": 14.2,
     "death_cause": "unknown"},
]


def good_cohort(with_outcomes: bool = True) -> pd.DataFrame:
    """Five valid patients with varied inputs and, optionally, outcomes."""
    rows = []
    for i, outcome in enumerate(OUTCOMES, start=1):
        row = dict(BASE_PATIENT, patient_id=f"P{i:03d}", gtv_cm3=10.0 * i, age_years=40 + i)
        if i == 2:
            row.update(sex="female", rt_stage="rT1", primary_technique="IMRT")
        if i == 4:
            row.update(reirr_dose_gy=65, reirr_fraction_gy=1.2, reirr_fractions_per_day=2)
        if with_outcomes:
            row.update(outcome)
        rows.append(row)
    return pd.DataFrame(rows)
