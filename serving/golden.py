"""Golden vectors: frozen patients with a released model's outputs, checked on every release.

As open clinical calculators do (QRISK3 ships fixed inputs with reference outputs), a
directory holds ``inputs.json`` (the patients, in the API's patient format) and
``expected.json`` (the model's SHA-256 and each patient's CIF per endpoint and horizon).
:func:`check_golden` scores the inputs with a bundle through the service's own scoring code;
:func:`compare_golden` compares any scores (e.g. an HTTP response's) with the expectation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.config import ENDPOINTS, HORIZONS_MONTHS
from features.io import write_text_atomic
from features.schema import PatientInput
from models.bundle import ModelBundle
from serving.schemas import PatientScore
from serving.scoring import score_batch

INPUTS_FILE = "inputs.json"
EXPECTED_FILE = "expected.json"
DEFAULT_TOLERANCE = 1e-9
GOLDEN_FORMAT_VERSION = 1

_BASE = {
    "age_years": 50,
    "sex": "male",
    "rt_stage": "rT3",
    "nodal_recurrence": False,
    "ttr_months": 36,
    "gtv_cm3": 25.0,
    "primary_dose_gy": 70,
    "primary_fraction_gy": 2.0,
    "primary_technique": "IMRT",
    "reirr_dose_gy": 60,
    "reirr_fraction_gy": 2.0,
    "reirr_fractions_per_day": 1,
    "chemotherapy": True,
    "brachytherapy_boost": False,
    "prior_grade3_toxicity": False,
    "preexisting_necrosis": False,
}
_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("G01", {}),
    ("G02", {"rt_stage": "rT1", "gtv_cm3": 5.0, "reirr_dose_gy": 50, "ttr_months": 80}),
    ("G03", {"rt_stage": "rT4", "gtv_cm3": 80.0, "reirr_dose_gy": 70, "ttr_months": 14}),
    ("G04", {"primary_fraction_gy": None, "primary_technique": "2D"}),
    ("G05", {"reirr_fraction_gy": 1.2, "reirr_fractions_per_day": 2, "reirr_dose_gy": 65}),
    ("G06", {"preexisting_necrosis": True, "prior_grade3_toxicity": True, "age_years": 68}),
    ("G07", {"sex": "female", "primary_technique": "3D", "brachytherapy_boost": True}),
    ("G08", {"nodal_recurrence": True, "chemotherapy": False, "primary_technique": "unknown"}),
)


def golden_patients() -> list[PatientInput]:
    """The frozen patient set: a typical profile and variations over every input kind."""
    return [PatientInput.model_validate(_BASE | {"patient_id": pid} | v) for pid, v in _VARIANTS]


@dataclass(frozen=True)
class Mismatch:
    """A golden value the model no longer reproduces (or a patient/endpoint it lacks)."""

    patient_id: str
    endpoint: str
    horizon_months: float | None
    expected: float | None
    observed: float | None

    def __str__(self) -> str:
        return (
            f"{self.patient_id} {self.endpoint} at {self.horizon_months} months: "
            f"expected {self.expected}, observed {self.observed}"
        )


def _atomic_json(obj: Any, path: Path) -> None:
    write_text_atomic(json.dumps(obj, indent=1, sort_keys=True) + "\n", path)


def _expected_from(scores: Sequence[PatientScore]) -> dict[str, dict[str, dict[str, float]]]:
    return {
        s.patient_id: {
            r.endpoint: {f"{h:g}": c for h, c in zip(r.horizons_months, r.cif, strict=True)}
            for r in s.risks
        }
        for s in scores
    }


def freeze_golden(
    bundle: ModelBundle,
    path: str | os.PathLike[str],
    bundle_sha256: str,
    patients: Sequence[PatientInput] | None = None,
    horizons: Sequence[float] = HORIZONS_MONTHS,
) -> Path:
    """Write the golden inputs and this bundle's outputs to directory ``path``."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    pats = list(golden_patients() if patients is None else patients)
    scores = score_batch(bundle, pats, horizons)
    _atomic_json([p.model_dump() for p in pats], out / INPUTS_FILE)
    _atomic_json(
        {
            "format_version": GOLDEN_FORMAT_VERSION,
            "bundle_sha256": bundle_sha256,
            "horizons_months": [float(h) for h in horizons],
            "cif": _expected_from(scores),
        },
        out / EXPECTED_FILE,
    )
    return out


def load_golden(path: str | os.PathLike[str]) -> tuple[list[PatientInput], dict[str, Any]]:
    """The frozen patients and the expected outputs."""
    p = Path(path)
    inputs = json.loads((p / INPUTS_FILE).read_text())
    expected = json.loads((p / EXPECTED_FILE).read_text())
    if expected.get("format_version") != GOLDEN_FORMAT_VERSION:
        raise ValueError(f"{p}: golden format {expected.get('format_version')} not readable")
    return [PatientInput.model_validate(r) for r in inputs], expected


def compare_golden(
    expected: dict[str, Any], scores: Sequence[PatientScore], tol: float = DEFAULT_TOLERANCE
) -> list[Mismatch]:
    """Every expected value that ``scores`` do not reproduce within ``tol``."""
    observed = _expected_from(scores)
    out: list[Mismatch] = []
    for pid, per_endpoint in expected["cif"].items():
        for endpoint in ENDPOINTS:
            want = per_endpoint.get(endpoint, {})
            got = observed.get(pid, {}).get(endpoint)
            if got is None:
                out.append(Mismatch(pid, endpoint, None, None, None))
                continue
            for h, value in want.items():
                obs = got.get(h)
                if obs is None or abs(obs - value) > tol:
                    out.append(Mismatch(pid, endpoint, float(h), value, obs))
    return out


def check_golden(
    bundle: ModelBundle, path: str | os.PathLike[str], tol: float = DEFAULT_TOLERANCE
) -> list[Mismatch]:
    """Score the frozen patients with ``bundle``; return what differs from the frozen outputs."""
    patients, expected = load_golden(path)
    scores = score_batch(bundle, patients, expected["horizons_months"])
    return compare_golden(expected, scores, tol)
