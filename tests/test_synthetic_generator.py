"""The synthetic cohort generator: the contract, determinism, overrides, and its CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.cli import app
from features.io import load_table, write_table
from features.schema import INPUT_COLUMNS, OUTCOME_COLUMNS, validate_table
from features.synthetic import draw_covariates, simulate, simulate_cohort, simulate_outcomes
from features.synthetic_params import DEFAULT_PARAMS, DGPParams

N_SMALL = 3000
DOSE_COLUMNS = ["reirr_dose_gy", "reirr_fraction_gy", "reirr_fractions_per_day"]


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return simulate_cohort(N_SMALL, seed=11)


def test_columns_are_the_contract(cohort):
    assert list(cohort.columns) == list(INPUT_COLUMNS) + list(OUTCOME_COLUMNS)
    assert len(cohort) == N_SMALL
    assert cohort["patient_id"].is_unique
    assert cohort["patient_id"].iloc[0] == "SYN-11-000001"


def test_cohort_passes_the_contract(cohort):
    report = validate_table(cohort, require_outcomes=True)
    assert report.ok, report.errors[:5]


def test_times_are_recorded_consistently(cohort):
    nec = cohort["necrosis_months"].to_numpy()
    fu = cohort["followup_months"].to_numpy()
    assert np.all(nec <= fu)
    assert np.all(nec > 0) and np.all(fu > 0)
    assert np.allclose(fu * 10, np.round(fu * 10))  # 0.1-month precision
    no_nec = ~cohort["necrosis_event"].to_numpy()
    assert np.array_equal(nec[no_nec], fu[no_nec])
    # a haemorrhage death only ever follows a necrosis (illness-death model)
    haem = cohort["death_cause"] == "haemorrhage"
    assert cohort.loc[haem, "necrosis_event"].all()


def test_some_primary_fractions_are_left_empty(cohort):
    empty = cohort["primary_fraction_gy"].isna()
    assert 0 < empty.mean() < 0.2
    assert (cohort.loc[empty, "primary_technique"] == "unknown").all()


def test_unknown_causes_are_never_haemorrhages():
    sim = simulate(N_SMALL, seed=5)
    unknown = sim.frame["death_cause"].to_numpy() == "unknown"
    assert unknown.any()
    assert set(sim.true_cause[unknown]) <= {"progression", "other"}


def test_same_seed_same_table_other_seed_other_table(cohort):
    pd.testing.assert_frame_equal(cohort, simulate_cohort(N_SMALL, seed=11))
    other = simulate_cohort(N_SMALL, seed=12)
    assert not other["followup_months"].equals(cohort["followup_months"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_same_seed_same_file_bytes(tmp_path, suffix):
    a = write_table(simulate_cohort(500, seed=4), tmp_path / f"a{suffix}")
    b = write_table(simulate_cohort(500, seed=4), tmp_path / f"b{suffix}")
    assert a.read_bytes() == b.read_bytes()


def test_unknown_override_is_refused():
    with pytest.raises(TypeError, match="no_such_parameter"):
        simulate_cohort(10, seed=0, no_such_parameter=1.0)
    with pytest.raises(ValueError, match="twice_daily_share"):
        simulate_cohort(10, seed=0, twice_daily_share=1.5)


def test_default_is_the_seed_cohort_with_no_twice_daily_courses(cohort):
    assert DEFAULT_PARAMS.twice_daily_share == 0.0
    assert (cohort["reirr_fractions_per_day"] == 1).all()


def test_twice_daily_share_is_honoured():
    df = simulate_cohort(N_SMALL, seed=2, twice_daily_share=0.2)
    bid = df["reirr_fractions_per_day"] == 2
    assert abs(bid.mean() - 0.2) < 0.03
    assert np.allclose(df.loc[bid, "reirr_fraction_gy"], DEFAULT_PARAMS.twice_daily_fraction_gy)
    assert validate_table(df, require_outcomes=True).ok


def test_plan_override_keeps_the_same_patients():
    base = simulate_cohort(N_SMALL, seed=3)
    arm = simulate_cohort(N_SMALL, seed=3, plan=(68.0, 2.0, 1))
    others = [c for c in INPUT_COLUMNS if c not in DOSE_COLUMNS]
    pd.testing.assert_frame_equal(base[others], arm[others])
    assert (arm["reirr_dose_gy"] == 68.0).all() and (arm["reirr_fraction_gy"] == 2.0).all()
    # a higher dose for everyone never lowers anyone's necrosis time (common random numbers)
    low = simulate_cohort(N_SMALL, seed=3, plan=(60.0, 2.0, 1))
    assert arm["necrosis_event"].sum() > low["necrosis_event"].sum()


def test_simulate_outcomes_follows_given_patients():
    cov = draw_covariates(200, seed=1)
    out = simulate_outcomes(cov, seed=9)
    pd.testing.assert_frame_equal(out[list(INPUT_COLUMNS)], cov)
    assert validate_table(out, require_outcomes=True).ok


def test_params_replace_is_typed():
    p = DEFAULT_PARAMS.replace(twice_daily_share=0.2)
    assert isinstance(p, DGPParams) and p.twice_daily_share == 0.2
    assert DEFAULT_PARAMS.twice_daily_share == 0.0  # frozen: the default is untouched


def test_cli_synth_writes_a_valid_reproducible_file(tmp_path):
    runner = CliRunner()
    paths = [tmp_path / "one.csv", tmp_path / "two.csv"]
    for path in paths:
        result = runner.invoke(app, ["synth", "--n", "300", "--seed", "8", "--out", str(path)])
        assert result.exit_code == 0, result.output
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert validate_table(load_table(paths[0]), require_outcomes=True).ok
    check = runner.invoke(app, ["check", str(paths[0]), "--for-training"])
    assert check.exit_code == 0, check.output


def test_cli_synth_refuses_an_unknown_suffix(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--n", "10", "--out", str(tmp_path / "cohort.xlsx")])
    assert result.exit_code != 0
    assert "unsupported file type" in result.output
    assert not any(tmp_path.iterdir())


def test_datasheet_documents_every_parameter():
    from pathlib import Path

    from features.synthetic_params import PARAM_NAMES

    sheet = (Path(__file__).parents[1] / "docs" / "synthetic_cohort_datasheet.md").read_text()
    assert not [name for name in sorted(PARAM_NAMES) if f"`{name}`" not in sheet]
