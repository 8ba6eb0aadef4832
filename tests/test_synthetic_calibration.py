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

N_TARGETS = 10_000  # half the CLI's 20,000, to keep the suite fast
SEED = 99  # not the seed the defaults were fitted on
# Monte-Carlo allowance at n=10,000 (about two standard errors): shares ~0.9 point, the OS
# rates ~1 point, the median latency ~0.3 month, the rT3-4 share ~1.6 points, trial ratios
# ~0.05 (common random numbers make the ratios much steadier than independent arms would)
MC_SLACK = {
    "OS at 3 y, KM (%)": 1.0,
    "OS at 5 y, KM (%)": 1.0,
    "grade >=3 necrosis (%)": 0.9,
    "died of haemorrhage (%)": 0.9,
    "necrosis latency, median (mo)": 0.3,
    "haemorrhages in rT3-4 (%)": 1.6,
}
TRIAL_SLACK = 0.05
MARGINAL_SLACK = 1.0


@pytest.fixture(scope="module")
def rows() -> list[CalibrationRow]:
    return calibration_table(N_TARGETS, SEED)


def _widened(r: CalibrationRow) -> float:
    assert r.tolerance is not None
    if r.name in MC_SLACK:
        return r.tolerance + MC_SLACK[r.name]
    if r.name.startswith("trial"):
        return r.tolerance + TRIAL_SLACK
    return r.tolerance + MARGINAL_SLACK


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
    assert abs(r.simulated - r.target) <= _widened(r), (r.name, r.target, r.simulated)


def test_patient_mix_targets_hold(rows):
    bad = [
        (r.name, r.target, round(r.simulated, 2))
        for r in rows
        if r.kind == "target"
        and r.name not in MC_SLACK
        and not r.name.startswith("trial")
        and abs(r.simulated - r.target) > _widened(r)
    ]
    assert not bad


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
