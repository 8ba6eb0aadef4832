"""The one time grid shared by the models, the training job and the service.

Event times are rounded *up* to the next grid point (never down to 0), and anything after
the grid's end is censored there, so that every bootstrap fit sees the same grid and time
and memory do not grow with the number of distinct event times (design.md, 'Time').
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from features.config import EVENT_CENSORED, GRID_MAX_MONTHS, GRID_STEP_MONTHS


class HorizonOutOfGridError(ValueError):
    """A requested horizon lies outside the configured time grid."""


@dataclass(frozen=True)
class TimeGrid:
    """Whole steps from 0 to ``max_months``; the grid points are ``step, 2*step, ..., max``."""

    max_months: float = GRID_MAX_MONTHS
    step_months: float = GRID_STEP_MONTHS

    def __post_init__(self) -> None:
        if self.step_months <= 0 or self.max_months <= 0:
            raise ValueError("time grid: step and maximum must be positive")
        n = self.max_months / self.step_months
        if abs(n - round(n)) > 1e-9:
            raise ValueError("time grid: max_months must be a whole number of steps")

    @property
    def points(self) -> np.ndarray:
        """Grid points after 0 at which an event can happen: step, 2 step, ..., max.

        Read-only and built once per grid: a served call asks for them a dozen times."""
        return _grid_points(self.max_months, self.step_months)

    def check_horizons(self, horizons: np.ndarray | list[float] | float) -> np.ndarray:
        """Return horizons as a float array, refusing any that fall outside [0, max]."""
        h = np.atleast_1d(np.asarray(horizons, dtype=float))
        if h.ndim != 1 or not np.all(np.isfinite(h)):
            raise HorizonOutOfGridError("horizons must be finite numbers of months")
        bad = h[(h < 0) | (h > self.max_months + 1e-9)]
        if bad.size:
            raise HorizonOutOfGridError(
                f"horizon(s) {bad.tolist()} months outside the model's time grid "
                f"[0, {self.max_months:g}] months"
            )
        return h

    def discretize(self, time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Round times up onto the grid (minimum one step); censor after the grid's end.

        Returns (time_on_grid, event) with event set to 0 where the time was past the end.
        """
        t = np.asarray(time, dtype=float)
        e = np.asarray(event).astype(int).copy()
        if np.any(t < 0) or not np.all(np.isfinite(t)):
            raise ValueError("times must be finite and non-negative")
        steps = np.ceil(t / self.step_months - 1e-9)
        steps = np.maximum(steps, 1.0)
        g = steps * self.step_months
        late = g > self.max_months + 1e-9
        g[late] = self.max_months
        e[late] = EVENT_CENSORED
        return g, e

    def index_of(self, horizons: np.ndarray | list[float] | float) -> np.ndarray:
        """Index in ``points`` of the last grid point at or before each horizon (-1: none)."""
        h = self.check_horizons(horizons)
        return np.searchsorted(self.points, h + 1e-9, side="right") - 1


DEFAULT_GRID = TimeGrid()


@functools.lru_cache(maxsize=32)
def _grid_points(max_months: float, step_months: float) -> np.ndarray:
    n = int(round(max_months / step_months))
    points = np.arange(1, n + 1, dtype=float) * step_months
    points.setflags(write=False)
    return points
