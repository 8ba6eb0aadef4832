"""`reirrad cohort check`: each rule of the contract with its own bad file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.io import load_table, write_table
from features.schema import validate_table, validated_frame
from reirrad_cli import app
from tests.cohort_rows import good_cohort

runner = CliRunner()


def run_check(path: Path, *args: str):
    return runner.invoke(app, ["cohort", "check", str(path), *args])


def write_csv(tmp_path: Path, df: pd.DataFrame, name: str = "cohort.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_good_file_is_valid_and_nothing_is_written(tmp_path):
    path = write_csv(tmp_path, good_cohort())
    before = sorted(tmp_path.iterdir())
    result = run_check(path, "--for-training")
    assert result.exit_code == 0, result.output
    assert "valid: 5 row(s), 0 error(s)" in result.output
    assert sorted(tmp_path.iterdir()) == before


def test_inputs_only_file_is_valid_for_scoring_but_not_for_training(tmp_path):
    path = write_csv(tmp_path, good_cohort(with_outcomes=False))
    assert run_check(path).exit_code == 0
    result = run_check(path, "--for-training")
    assert result.exit_code == 2
    assert "column followup_months: required column is missing" in result.output


def _bad(changes):
    """Good cohort with one cell changed: changes map (row_index, column) -> value."""
    df = good_cohort().astype(object)
    for (i, col), value in changes.items():
        df.loc[i, col] = value
    return df


BAD_CASES = {
    "wrong_type": (_bad({(1, "gtv_cm3"): "large"}), 2, "gtv_cm3", "number"),
    "out_of_range": (_bad({(2, "age_years"): 130}), 3, "age_years", "less than or equal"),
    "unknown_stage": (_bad({(0, "rt_stage"): "rT5"}), 1, "rt_stage", "rT5"),
    "unknown_sex": (_bad({(3, "sex"): "x"}), 4, "sex", "'male' or 'female'"),
    "duplicate_id": (_bad({(4, "patient_id"): "P002"}), 5, "patient_id", "duplicate of row 2"),
    "negative_time": (_bad({(1, "followup_months"): -3}), 2, "followup_months", "greater"),
    "necrosis_after_followup": (
        _bad({(0, "necrosis_months"): 12.0}), 1, "necrosis_months", "after the last follow-up"
    ),
    "necrosis_without_time": (
        _bad({(3, "necrosis_months"): None}), 4, "necrosis_months", "no time is given"
    ),
    "unknown_death_cause": (_bad({(1, "death_cause"): "stroke"}), 2, "death_cause", "stroke"),
    "bad_fractions_per_day": (
        _bad({(0, "reirr_fractions_per_day"): 3}), 1, "reirr_fractions_per_day", "1 or 2"
    ),
    "empty_required_value": (_bad({(2, "chemotherapy"): None}), 3, "chemotherapy", "empty"),
    "not_a_boolean": (_bad({(2, "chemotherapy"): "maybe"}), 3, "chemotherapy", "boolean"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_each_rule_names_row_and_column_and_exits_2(tmp_path, case):
    df, row, column, reason = BAD_CASES[case]
    result = run_check(write_csv(tmp_path, df), "--for-training")
    assert result.exit_code == 2, result.output
    line = next(
        (ln for ln in result.output.splitlines() if ln.startswith(f"error: row {row}, ")), None
    )
    assert line is not None, result.output
    assert f"column {column}" in line and reason in line, line


def test_missing_required_column(tmp_path):
    path = write_csv(tmp_path, good_cohort().drop(columns=["gtv_cm3"]))
    result = run_check(path)
    assert result.exit_code == 2
    assert "error: table, column gtv_cm3: required column is missing" in result.output


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    result = run_check(path)
    assert result.exit_code == 2 and "empty" in result.output


def test_header_only_file_has_no_rows(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text(",".join(good_cohort().columns) + "\n")
    result = run_check(path)
    assert result.exit_code == 2 and "no data rows" in result.output


def test_file_that_is_not_a_table(tmp_path):
    path = tmp_path / "junk.parquet"
    path.write_bytes(b"\x00\x01 this is not parquet \xff")
    result = run_check(path)
    assert result.exit_code == 2 and "not a readable table" in result.output


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "cohort.xlsx"
    path.write_text("a,b\n1,2\n")
    result = run_check(path)
    assert result.exit_code == 2 and "unsupported file type" in result.output


def test_every_violation_is_reported_not_only_the_first(tmp_path):
    df = _bad({(0, "rt_stage"): "rT5", (1, "sex"): "x", (2, "gtv_cm3"): 0})
    result = run_check(write_csv(tmp_path, df))
    assert result.exit_code == 2
    assert "3 error(s)" in result.output


def test_assumed_primary_fraction_is_a_warning_not_an_error(tmp_path):
    df = _bad({(0, "primary_fraction_gy"): None})
    result = run_check(write_csv(tmp_path, df), "--for-training")
    assert result.exit_code == 0, result.output
    assert "warning: row 1, column primary_fraction_gy: empty: 2.0 Gy" in result.output


def test_haemorrhage_without_necrosis_is_a_warning(tmp_path):
    df = _bad({(1, "death_cause"): "haemorrhage"})
    result = run_check(write_csv(tmp_path, df), "--for-training")
    assert result.exit_code == 0
    assert "warning: row 2, column death_cause" in result.output


def test_empty_necrosis_time_without_necrosis_reads_as_followup():
    df = validated_frame(good_cohort())
    assert df.loc[1, "necrosis_months"] == df.loc[1, "followup_months"]


def test_validation_refuses_whole_table_on_any_error():
    report = validate_table(_bad({(4, "sex"): "x"}))
    assert not report.ok and report.records == []


def test_csv_parquet_round_trip(tmp_path):
    original = validated_frame(good_cohort())
    csv_path = write_table(original, tmp_path / "c.csv")
    pq_path = write_table(validated_frame(load_table(csv_path)), tmp_path / "c.parquet")
    assert run_check(pq_path, "--for-training").exit_code == 0
    back = validated_frame(load_table(pq_path))
    pd.testing.assert_frame_equal(original, back)


def test_console_script_exit_codes(tmp_path):
    good = write_csv(tmp_path, good_cohort(), "good.csv")
    bad = write_csv(tmp_path, _bad({(0, "rt_stage"): "rT5"}), "bad.csv")
    cmd = [sys.executable, "-m", "reirrad_cli", "cohort", "check"]
    ok = subprocess.run([*cmd, str(good)], capture_output=True, text=True)
    ko = subprocess.run([*cmd, str(bad)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ko.returncode == 2 and "row 1, column rt_stage" in ko.stdout


def test_column_cleaning_equals_the_cell_by_cell_cleaning():
    import numpy as np

    from features.schema import _clean_cell, _clean_column

    values = ["a", " b ", "", "   ", None, float("nan"), 1.5, np.float64(2.5), np.int64(3),
              np.nan, pd.NA, True, np.bool_(False), 7, "\t", "x y"]
    got = _clean_column(values)
    want = [_clean_cell(v) for v in values]
    assert [(type(g), g) for g in got] == [(type(w), w) for w in want]
    assert got[:5] == ["a", " b ", None, None, None] and got[5] is None
