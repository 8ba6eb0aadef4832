"""Read and write cohort tables (CSV or Parquet, chosen by suffix)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where a table is read or written: CLIs start fast
    import pandas as pd

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")
PUBLISHED_MODE = 0o644
"""Files we write are readable by all (mkstemp alone would make them owner-only)."""


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
    import pandas as pd

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


@contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int = PUBLISHED_MODE) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else vanishes.

    The one way this project writes a file, so that a failure never leaves half a file.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write bytes atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """Write UTF-8 text atomically (see :func:`atomic_path`)."""
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a CSV or Parquet table atomically."""
    p = Path(path)
    suffix = _suffix(p)
    with atomic_path(p) as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, index=False, lineterminator="\n")
        else:
            df.to_parquet(tmp, index=False)
    return p
