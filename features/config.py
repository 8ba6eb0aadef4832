"""The one typed place for the constants that training and serving share.

Everything that decides what a feature or a time point means lives here, so that the
training job, the models and the API cannot drift apart.
"""

from __future__ import annotations

from typing import Final, Literal

ALPHA_BETA_GY: Final[float] = 3.0
"""Late-effect alpha/beta ratio of the clinical EQD2 convention (literature.md section 3)."""

REFERENCE_FRACTION_GY: Final[float] = 2.0
"""EQD2 is the dose in 2 Gy fractions."""

ASSUMED_PRIMARY_FRACTION_GY: Final[float] = 2.0
"""Assumed dose per fraction of the first course when the record leaves it empty (design.md)."""

TTR_SHORT_MONTHS: Final[float] = 24.0
"""Time to recurrence at or below this is 'early recurrence' (Tian et al.; the published rule)."""

GTV_LARGE_CM3: Final[float] = 30.0
"""Recurrent GTV above this is 'large' in the published rule (Tian et al.)."""

GRID_MAX_MONTHS: Final[int] = 60
"""The default time grid: whole months 0..60 from the start of re-irradiation."""

GRID_STEP_MONTHS: Final[float] = 1.0

HORIZONS_MONTHS: Final[tuple[int, ...]] = (6, 12, 24, 36)
"""Standard horizons at which risks are reported, evaluated and served."""

MAIN_HORIZON_MONTHS: Final[int] = 24
"""The horizon used for the promotion gate and the headline risk."""

Endpoint = Literal["mucosal_necrosis", "fatal_haemorrhage"]
ENDPOINTS: Final[tuple[Endpoint, ...]] = ("mucosal_necrosis", "fatal_haemorrhage")

ENDPOINT_LABELS: Final[dict[str, str]] = {
    "mucosal_necrosis": "grade >=3 mucosal necrosis",
    "fatal_haemorrhage": "fatal massive haemorrhage",
}

EVENT_CENSORED: Final[int] = 0
EVENT_OF_INTEREST: Final[int] = 1
EVENT_COMPETING: Final[int] = 2

DEFAULT_CALIBRATION_N: Final[int] = 20_000
"""Simulated patients of `reirrad cohort calibrate` (the size docs/literature.md section 4 asks)."""
DEFAULT_CALIBRATION_SEED: Final[int] = 2018
"""The seed paper's year; any seed should pass."""
