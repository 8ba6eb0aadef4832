"""Read and write cohort tables (CSV or Parquet, chosen by suffix)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")


class CohortFileError(ValueError):
    """The file cannot be read as a table at all."""


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise CohortFileError(
            f"{path}: unsupported file type {suffix or '(none)'}; use .csv or .parquet"
        )
    return suffix


def load_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Load a cohort table as raw values; typing is the contract's job, not the reader's.

    CSV cells are read as text (empty cells as missing) so that a word in a numeric
    column is reported by the contract rather than silently coerced by pandas.
    """
    p = Path(path)
    suffix = _suffix(p)
    if not p.is_file():
        raise CohortFileError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise CohortFileError(f"{p}: the file is empty")
    try:
        if suffix == ".csv":
            df = pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""])
        else:
            df = pd.read_parquet(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CohortFileError(f"{p}: not a readable table ({err})") from err
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        raise CohortFileError(f"{p}: not a readable table ({type(err).__name__}: {err})") from err
    return df


def write_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write atomically (temporary file, then rename), so a failure leaves nothing half-written."""
    p = Path(path)
    suffix = _suffix(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if suffix == ".csv":
            df.to_csv(tmp, index=False, lineterminator="\n")
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
