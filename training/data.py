"""Training data: load, validate with the cohort contract, fingerprint, split off the hold-out.

The data hash is the SHA-256 of a canonical serialisation of the *validated* records (contract
column order, rows sorted by patient_id, floats written with ``repr``), so the same cohort
gives the same hash whether it arrives as CSV or Parquet, in any row or column order.

The hold-out is chosen by a salted hash of ``patient_id``: a patient's side depends on the
key and the salt alone, never on the rest of the export, so patients held out from one model
stay held out from every later one trained with the same salt (the promotion gate compares
models on patients neither trained on). Keys never leave this module un-hashed.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.config import ENDPOINTS
from features.io import load_table
from features.pipeline import build_features, encode_endpoint
from features.schema import INPUT_COLUMNS, OUTCOME_COLUMNS, validate_table, validated_frame
from features.synthetic import simulate_cohort

HASH_BUCKETS = 2**64
"""The salted hash's first 8 bytes, read as an integer in [0, 2**64), map a key to [0, 1)."""


class TooFewRowsError(ValueError):
    """The development set is too small to train and evaluate a model."""


@dataclass
class Cohort:
    """Validated records with their features and endpoint labels (index 0..n-1)."""

    records: pd.DataFrame
    X: pd.DataFrame
    y: dict[str, np.ndarray]

    @classmethod
    def from_records(cls, records: pd.DataFrame) -> Cohort:
        records = records.reset_index(drop=True)
        return cls(
            records, build_features(records), {e: encode_endpoint(records, e) for e in ENDPOINTS}
        )

    def subset(self, mask: np.ndarray) -> Cohort:
        return Cohort.from_records(self.records.loc[np.asarray(mask, dtype=bool)])

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class TrainingData:
    """The validated cohort split into development and hold-out, with its fingerprint."""

    source: str
    sha256: str
    n_rows: int
    development: Cohort
    holdout: Cohort
    n_warnings: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """What is logged about the data: no patient key ever."""
        return {
            "data_source": self.source,
            "data_sha256": self.sha256,
            "data_rows": self.n_rows,
            "development_rows": len(self.development),
            "holdout_rows": len(self.holdout),
            "data_warnings": self.n_warnings,
        }


def canonical_sha256(records: pd.DataFrame) -> str:
    """SHA-256 of the validated records in a canonical form (see the module docstring)."""
    cols = [c for c in (*INPUT_COLUMNS, *OUTCOME_COLUMNS) if c in records.columns]
    canon = records[cols].sort_values("patient_id", kind="mergesort").reset_index(drop=True)
    buf = io.StringIO()
    canon.to_csv(buf, index=False, lineterminator="\n", float_format="%r")
    return hashlib.sha256(buf.getvalue().encode("utf-8")).hexdigest()


def holdout_mask(patient_ids, salt: str, fraction: float) -> np.ndarray:
    """True for patients in the hold-out: SHA-256(salt, key) falls below ``fraction``."""
    ids = [str(p) for p in patient_ids]
    out = np.empty(len(ids), dtype=bool)
    for i, pid in enumerate(ids):
        digest = hashlib.sha256(f"{salt}\x00{pid}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "big") / HASH_BUCKETS < fraction
    return out


def prepare(
    records: pd.DataFrame, source: str, salt: str, fraction: float, min_rows: int
) -> TrainingData:
    """Validate (all or nothing), hash, and split a cohort table with outcomes."""
    report = validate_table(records, require_outcomes=True)
    valid = validated_frame(records, require_outcomes=True)  # raises CohortValidationError
    held = holdout_mask(valid["patient_id"], salt, fraction)
    data = TrainingData(
        source=source,
        sha256=canonical_sha256(valid),
        n_rows=len(valid),
        development=Cohort.from_records(valid.loc[~held]),
        holdout=Cohort.from_records(valid.loc[held]),
        n_warnings=len(report.warnings),
    )
    if len(data.development) < min_rows:
        raise TooFewRowsError(
            f"{len(data.development)} development rows after the hold-out; at least "
            f"{min_rows} are needed to train"
        )
    return data


def load_training_data(
    path: str | os.PathLike[str], salt: str, fraction: float, min_rows: int
) -> TrainingData:
    """Read a cohort file (CSV/Parquet) and prepare it; refuses it whole on any violation."""
    return prepare(
        load_table(path), f"file:{os.path.basename(str(path))}", salt, fraction, min_rows
    )


def synthetic_training_data(
    n: int, seed: int, salt: str, fraction: float, min_rows: int, **overrides: object
) -> TrainingData:
    """The synthetic cohort (features.synthetic) prepared like a file."""
    extra = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    source = f"synthetic:n={n},seed={seed}" + (f",{extra}" if extra else "")
    return prepare(simulate_cohort(n, seed=seed, **overrides), source, salt, fraction, min_rows)
