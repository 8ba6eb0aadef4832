"""The report's two pictures per endpoint, as PNG bytes: the risk curve and an icon array.

Drawn with matplotlib's Agg backend (no display, no system libraries) and embedded in the
HTML as base64 and in the PDF as images, so both formats are self-contained.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from features.config import HORIZONS_MONTHS  # noqa: E402

DPI = 150
CURVE_SIZE_IN = (3.6, 2.0)
ICONS_SIZE_IN = (1.9, 2.0)
ICON_GRID = 10
PATIENT_COLOUR = "#b2182b"
COHORT_COLOUR = "#4d4d4d"
EMPTY_ICON = "#d9d9d9"
UPPER_COLOUR = "#f4a582"
HEAD_SIZE = 14.0
BODY_SIZE = 26.0
BAND_ALPHA = 0.18
PERCENT = 100.0
CURVE_MARGINS = {"left": 0.14, "right": 0.98, "bottom": 0.2, "top": 0.97}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # fixed margins instead of bbox_inches="tight", which draws the figure twice
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def curve_png(section) -> bytes:
    """Cumulative incidence (%) over 60 months: this patient with its interval, and the cohort."""
    fig, ax = plt.subplots(figsize=CURVE_SIZE_IN)
    fig.subplots_adjust(**CURVE_MARGINS)
    t = section.times
    ax.fill_between(
        t,
        PERCENT * section.curve_lower,
        PERCENT * section.curve_upper,
        step="post",
        color=PATIENT_COLOUR,
        alpha=BAND_ALPHA,
        linewidth=0,
    )
    ax.step(
        t, PERCENT * section.curve, where="post", color=PATIENT_COLOUR, lw=1.8, label="this patient"
    )
    ax.step(
        t,
        PERCENT * section.cohort_curve,
        where="post",
        color=COHORT_COLOUR,
        lw=1.2,
        ls="--",
        label="training cohort average",
    )
    for h in HORIZONS_MONTHS:
        ax.axvline(h, color="#bbbbbb", lw=0.5, zorder=0)
    top = max(
        PERCENT * float(np.max(section.curve_upper)),
        PERCENT * float(np.max(section.cohort_curve)),
        5.0,
    )
    ax.set_ylim(0, min(100.0, top * 1.15))
    ax.set_xlim(0, t[-1])
    ax.set_xticks([0, *HORIZONS_MONTHS, int(t[-1])])
    ax.set_xlabel("months after start of re-irradiation", fontsize=7)
    ax.set_ylabel("cumulative risk (%)", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=6.5, frameon=False, loc="upper left")
    return _png(fig)


def icons_png(risk: float, upper: float) -> bytes:
    """100 people: dark = expected to have the event; light = up to the interval's upper end."""
    n_risk = int(round(PERCENT * risk))
    n_upper = max(n_risk, int(round(PERCENT * upper)))
    k = np.arange(ICON_GRID * ICON_GRID)
    row, col = np.divmod(k, ICON_GRID)
    x, y = col + 0.5, ICON_GRID - 1 - row
    colours = np.where(k < n_risk, PATIENT_COLOUR, np.where(k < n_upper, UPPER_COLOUR, EMPTY_ICON))
    fig = plt.figure(figsize=ICONS_SIZE_IN)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.scatter(x, y + 0.72, s=HEAD_SIZE, c=colours, marker="o", linewidths=0)
    ax.scatter(x, y + 0.3, s=BODY_SIZE, c=colours, marker="s", linewidths=0)
    ax.set_xlim(0, ICON_GRID)
    ax.set_ylim(0, ICON_GRID)
    ax.set_aspect("equal")
    ax.axis("off")
    return _png(fig)
