"""The shared time grid: rounding up, never to 0, censoring after the end."""

import numpy as np
import pytest

from features.timegrid import DEFAULT_GRID, HorizonOutOfGridError, TimeGrid


def test_default_grid_is_whole_months_to_60():
    np.testing.assert_array_equal(DEFAULT_GRID.points, np.arange(1, 61))


def test_discretize_rounds_up_never_to_zero_and_censors_after_end():
    t = np.array([0.0, 0.2, 1.0, 1.01, 59.5, 60.0, 61.0, 200.0])
    e = np.array([1, 2, 1, 0, 1, 2, 1, 2])
    g, ev = DEFAULT_GRID.discretize(t, e)
    np.testing.assert_array_equal(g, [1, 1, 1, 2, 60, 60, 60, 60])
    np.testing.assert_array_equal(ev, [1, 2, 1, 0, 1, 2, 0, 0])


def test_horizons_beyond_grid_are_refused():
    assert DEFAULT_GRID.check_horizons([6, 60]).tolist() == [6.0, 60.0]
    with pytest.raises(HorizonOutOfGridError, match="outside"):
        DEFAULT_GRID.check_horizons([61])
    with pytest.raises(HorizonOutOfGridError):
        DEFAULT_GRID.check_horizons(-1)


def test_index_of_horizon_uses_last_point_at_or_before():
    np.testing.assert_array_equal(DEFAULT_GRID.index_of([0.5, 1, 6, 6.5, 60]), [-1, 0, 5, 5, 59])


def test_grid_must_be_whole_steps():
    with pytest.raises(ValueError):
        TimeGrid(max_months=10, step_months=3)
