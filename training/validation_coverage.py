"""How often the validated figures' 95 % intervals contained the truth, as measured.

The intervals of the validated AUC and Brier score come from a bootstrap of patients over the
out-of-fold predictions. That bootstrap leaves out how much the figure would move if every
fold model were refitted on other data: from one data set there is no unbiased estimate of
that part of a cross-validation estimate's variance (Bengio & Grandvalet 2004), so the
interval can cover less than its nominal level. ``benchmarks/bench_validation_truth.py``
measures how often it covered the figure the same model reaches on 20,000 new synthetic
patients, and ``--record`` writes the result here (``validation_coverage.json``, per model
kind and n). The training job quotes that record in the bundle; the model card, the report and
``/model_info`` show it beside the intervals, so a reader sees the level that was measured,
not only the nominal one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.config import ENDPOINT_LABELS, ENDPOINTS
from models.intervals import coverage_record

COVERAGE_FILE = Path(__file__).resolve().parent / "validation_coverage.json"
SHORT_OF_NOMINAL = 0.925
"""Below this measured share, the sentence says why the interval covers less than 95 %."""


def coverage_entry(model: Any, path: Path = COVERAGE_FILE) -> dict[str, Any] | None:
    """The recorded coverage for ``model``'s kind, with the record's common fields; None when
    that kind was not measured (or the file is missing or unreadable)."""
    entry = coverage_record(model, path)
    return entry if entry and entry.get("by_n") else None


def coverage_sentence(entry: dict[str, Any] | None) -> str:
    """One or two sentences for readers: the measured coverage per n, metric and endpoint."""
    if not entry:
        return (
            "How often these intervals contain the truth has not been measured for this kind "
            "of model."
        )
    parts, lowest = [], 1.0
    for n, row in sorted(entry["by_n"].items(), key=lambda kv: int(kv[0])):
        cells = []
        for metric, label in (("auc", "AUC"), ("brier", "Brier")):
            shares = row.get(metric) or {}
            lowest = min([lowest, *shares.values()])
            cells.append(
                f"{label} "
                + " / ".join(f"{100 * shares[e]:.0f} %" for e in ENDPOINTS if e in shares)
            )
        parts.append(f"n = {n} ({row['runs']} runs): " + ", ".join(cells))
    order = " / ".join(ENDPOINT_LABELS[e] for e in ENDPOINTS)
    text = (
        f"On synthetic cohorts ({entry.get('model')}, {entry.get('mix', 'n/a')}, "
        f"{entry.get('design', 'n/a')}, measured {entry.get('measured', 'n/a')}), the 95 % "
        "intervals at 24 months contained what the same model reached on 20,000 new patients "
        f"in this share of runs ({order}): " + "; ".join(parts) + " (benchmarks/RESULTS.md)."
    )
    if lowest < SHORT_OF_NOMINAL:
        text += (
            " Below 95 % because the bootstrap of patients leaves out how the figure would "
            "move if the fold models were refitted on other data, which one data set cannot "
            "estimate without bias (Bengio & Grandvalet 2004); read them as somewhat narrower "
            "than their nominal level."
        )
    return text
