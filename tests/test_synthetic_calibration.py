"""The synthetic cohort against the published targets of literature.md section 4."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from features.calibration import (
    CalibrationRow,
    all_targets_hold,
    calibration_table,
)
from features.cli import app

N_TARGETS = 20_000  # the size literature.md section 4 asks for; about 2 s
SEED = 99  # not a seed the defaults were fitted or tuned on


@pytest.fixture(scope="module")
def rows() -> list[CalibrationRow]:
    return calibration_table(N_TARGETS, SEED)


def test_every_target_of_section_4_is_in_the_table(rows):
    names = {r.name for r in rows if r.kind == "target"}
    for needed in (
        "OS at 3 y, KM (%)",
        "OS at 5 y, KM (%)",
        "grade >=3 necrosis (%)",
        "died of haemorrhage (%)",
        "necrosis latency, median (mo)",
        "haemorrhages in rT3-4 (%)",
        "male (%)",
        "re-RT dose, median (Gy)",
        "brachytherapy boost (%)",
    ):
        assert needed in names
    assert sum(r.name.startswith("trial") for r in rows) == 2


@pytest.mark.parametrize(
    "name",
    [
        "OS at 3 y, KM (%)",
        "OS at 5 y, KM (%)",
        "grade >=3 necrosis (%)",
        "died of haemorrhage (%)",
        "necrosis latency, median (mo)",
        "haemorrhages in rT3-4 (%)",
        "trial 68/2.0 vs 60/2.22 Gy, necrosis ratio",
        "trial 65/1.2 b.i.d. vs 60/2.2 Gy, necrosis ratio",
    ],
)
def test_outcome_target_holds(rows, name):
    (r,) = [r for r in rows if r.name == name]
    assert r.tolerance is not None
    assert abs(r.simulated - r.target) <= r.tolerance, (r.name, r.target, r.simulated)


def test_patient_mix_targets_hold(rows):
    bad = [(r.name, r.target, round(r.simulated, 2)) for r in rows if r.holds is False]
    assert not bad
    assert all_targets_hold(rows)


def test_holds_and_gate_follow_the_tolerance():
    ok = CalibrationRow("x", 10.0, 11.0, 2.0, "test")
    miss = CalibrationRow("y", 10.0, 13.0, 2.0, "test")
    info = CalibrationRow("z", 10.0, 99.0, None, "test", "info")
    assert ok.holds and not miss.holds and info.holds is None
    assert all_targets_hold([ok, info]) and not all_targets_hold([ok, miss])


def test_cli_calibrate_prints_the_table_and_exits_zero():
    result = CliRunner().invoke(app, ["calibrate", "--n", "6000", "--seed", "3"])
    assert "haemorrhages in rT3-4" in result.output
    assert "targets hold" in result.output
    # at n=6000 a target may miss by Monte-Carlo error; the exit code must match the verdict
    held = calibration_table(6000, 3)
    assert result.exit_code == (0 if all_targets_hold(held) else 1)
