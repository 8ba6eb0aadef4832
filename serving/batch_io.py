"""Streaming tables for batch scoring: chunks in, results and rejects out, bounded memory.

Reading: a CSV is parsed in blocks by pyarrow (every cell as text, an empty cell as missing,
as :func:`features.io.load_table` reads it, so that the contract, not the reader, types the
values); a line with the wrong number of fields becomes a rejected row instead of failing the
file. A Parquet file is read a batch of rows at a time; a JSON file (a list of patients, or
``{"patients": [...]}``) is read whole (JSON cannot be streamed) and then cut into chunks.
Each chunk carries the 1-based data-row numbers of its rows.

Writing: results and rejects go to temporary files beside their targets and are published
by ``os.replace`` only when the caller commits, so a failure never leaves a partial file.
A CSV result is written as the very bytes pandas' ``to_csv`` gave (each float as Python's
``repr``, missing as empty, text quoted only where needed), but formatted by pyarrow's
compiled kernels (:func:`float_texts`, :func:`csv_lines`): pandas spent more CPU writing a
chunk than the model spent scoring it. The same float texts are what the audit records keep.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.io import PUBLISHED_MODE, CohortFileError

CSV_SUFFIX = ".csv"
PARQUET_SUFFIXES = (".parquet", ".pq")
JSON_SUFFIX = ".json"
STREAM_SUFFIXES = (CSV_SUFFIX, *PARQUET_SUFFIXES)
CSV_BLOCK_BYTES = 1 << 20
"""Bytes of CSV parsed at a time (about 5,000 patients); chunks are re-cut to the row count."""
REJECT_COLUMNS = ("row", "patient_id", "column", "reason")
MALFORMED_REASON = "the line has {actual} field(s) where the header has {expected}"


@dataclass(frozen=True)
class Chunk:
    """Raw rows of the file (cells as read, untyped) and their 1-based data-row numbers."""

    frame: pd.DataFrame
    rows: np.ndarray


@dataclass(frozen=True)
class Malformed:
    """A line the parser could not cut into the header's fields (its text is never kept)."""

    row: int
    reason: str


def input_format(path: Path) -> str:
    """``csv``, ``parquet`` or ``json``, from the suffix (CohortFileError otherwise)."""
    suffix = path.suffix.lower()
    if suffix == CSV_SUFFIX:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix == JSON_SUFFIX:
        return "json"
    raise CohortFileError(f"{path}: unsupported file type {suffix or '(none)'}")


def csv_header(path: Path) -> list[str]:
    """The CSV's column names (the first record), read without the rest of the file."""
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(newlines_in_values=True,
                                             invalid_row_handler=lambda _row: "skip"),
        )
        return list(reader.schema.names)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as err:
        raise CohortFileError(f"{path}: not a readable table ({type(err).__name__})") from err


def csv_options(path: Path) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions]:
    """pyarrow's options for reading the cohort CSV as text (the Ray path uses them too)."""
    names = csv_header(path)
    read = pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES)
    parse = pacsv.ParseOptions(newlines_in_values=True)
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in names},
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        null_values=[""],
    )
    return read, parse, convert


def check_readable(path: Path) -> None:
    """Refuse (CohortFileError) a missing or empty file before any work."""
    if not path.is_file():
        raise CohortFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CohortFileError(f"{path}: the file is empty")


def file_columns(path: Path) -> list[str]:
    """The columns of the file, read from its header (JSON: read whole), after
    :func:`check_readable`."""
    check_readable(path)
    fmt = input_format(path)
    if fmt == "csv":
        return csv_header(path)
    if fmt == "parquet":
        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except (pa.ArrowInvalid, OSError) as err:
            raise CohortFileError(f"{path}: not a readable table ({err})") from err
    reader = ChunkReader(path, chunk_rows=1)
    next(iter(reader), None)
    return reader.columns


@dataclass
class ChunkReader:
    """Iterate a file's rows in chunks of ``chunk_rows``; malformed CSV lines are collected
    in ``malformed`` (row numbers counted like the others) rather than failing the file."""

    path: Path
    chunk_rows: int
    malformed: list[Malformed] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Chunk]:
        check_readable(self.path)
        fmt = input_format(self.path)
        frames = {"csv": self._csv, "parquet": self._parquet, "json": self._json}[fmt]()
        yield from _recut(frames, self.chunk_rows)

    # Each source yields (frame, row numbers) pieces of any size; _recut makes the chunks.
    def _csv(self) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        read, parse, convert = csv_options(self.path)
        skipped: set[int] = set()

        def on_invalid(row) -> str:
            number = int(row.number) - 1 if row.number is not None else -1  # header is 1
            skipped.add(number)
            self.malformed.append(Malformed(number, MALFORMED_REASON.format(
                actual=row.actual_columns, expected=row.expected_columns)))
            return "skip"

        parse = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid)
        try:
            reader = pacsv.open_csv(self.path, read_options=read, parse_options=parse,
                                    convert_options=convert)
            self.columns = list(reader.schema.names)
            next_row = 1
            for batch in reader:
                if not any(r >= next_row for r in skipped):
                    rows = np.arange(next_row, next_row + batch.num_rows)
                    next_row += batch.num_rows
                else:
                    rows = np.empty(batch.num_rows, dtype=np.int64)
                    for i in range(batch.num_rows):  # numbers of the lines kept, in order
                        while next_row in skipped:
                            next_row += 1
                        rows[i] = next_row
                        next_row += 1
                yield batch.to_pandas(), rows
        except (pa.ArrowInvalid, UnicodeDecodeError) as err:
            raise CohortFileError(
                f"{self.path}: not a readable table ({type(err).__name__})"
            ) from err

    def _parquet(self) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as err:
            raise CohortFileError(f"{self.path}: not a readable table ({err})") from err
        self.columns = list(pf.schema_arrow.names)
        start = 1
        for batch in pf.iter_batches(batch_size=self.chunk_rows):
            yield batch.to_pandas(), np.arange(start, start + batch.num_rows)
            start += batch.num_rows

    def _json(self) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CohortFileError(f"{self.path}: not readable JSON ({err})") from err
        if isinstance(data, dict):
            data = data.get("patients")
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise CohortFileError(
                f"{self.path}: expected a list of patient objects or {{'patients': [...]}}"
            )
        frame = pd.DataFrame(data)
        self.columns = [str(c) for c in frame.columns]
        yield frame, np.arange(1, len(frame) + 1)


def _recut(
    pieces: Iterator[tuple[pd.DataFrame, np.ndarray]], chunk_rows: int
) -> Iterator[Chunk]:
    """Pieces of any size as chunks of exactly ``chunk_rows`` rows (the last may be short)."""
    held: list[tuple[pd.DataFrame, np.ndarray]] = []
    n_held = 0
    for frame, rows in pieces:
        held.append((frame.reset_index(drop=True), rows))
        n_held += len(frame)
        while n_held >= chunk_rows:
            frame_all = pd.concat([f for f, _ in held], ignore_index=True)
            rows_all = np.concatenate([r for _, r in held])
            yield Chunk(frame_all.iloc[:chunk_rows].reset_index(drop=True), rows_all[:chunk_rows])
            rest = frame_all.iloc[chunk_rows:].reset_index(drop=True)
            held = [(rest, rows_all[chunk_rows:])]
            n_held = len(rest)
    if n_held:
        yield Chunk(pd.concat([f for f, _ in held], ignore_index=True),
                    np.concatenate([r for _, r in held]))


# ------------------------------------------------------------------------------ writing
def _temp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


class _PublishedBeside:
    """A file written to a temporary name beside ``self.path``: ``commit`` publishes it
    atomically (``os.replace``), ``discard`` removes it. Subclasses set ``path`` and ``tmp``
    and flush and close their handles in ``_close``."""

    path: Path
    tmp: Path

    def _close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def commit(self) -> None:
        self._close()
        os.chmod(self.tmp, PUBLISHED_MODE)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        try:
            self._close()
        finally:
            self.tmp.unlink(missing_ok=True)


PLAIN_LOW, PLAIN_HIGH = 1e-4, 1e10
"""Magnitudes (non-integer) where pyarrow's float text is Python's ``repr``: both print the
shortest round-trip digits, positionally; outside it (and for whole numbers: '1' against
'1.0') the notations differ, so those few values are formatted by ``repr`` itself."""
CSV_SPECIAL = '[,"\n]'
"""Characters that make Python's csv writer (``QUOTE_MINIMAL``, as pandas uses it, with the
line terminator "\\n") quote a field: the delimiter, the quote and the terminator (a lone
"\\r" stays unquoted, as pandas wrote it)."""


def float_texts(values: np.ndarray) -> pa.Array:
    """Each float64 as ``repr`` gives it (``nan``, ``inf`` included), as a pyarrow string array.

    Why not ``map(repr, ...)``: a million rows of 24 values is 24 million Python calls.
    """
    v = np.ascontiguousarray(values, dtype=np.float64)
    text = pc.cast(pa.array(v), pa.string())
    with np.errstate(invalid="ignore"):
        a = np.abs(v)
        whole = (v == np.floor(v)) & (a < PLAIN_HIGH)
        odd = ~(((a >= PLAIN_LOW) & (a < PLAIN_HIGH)) | whole)
    if whole.any():  # '0' -> '0.0' (a risk's bounds are often exactly 0 or 1)
        text = pc.if_else(pa.array(whole), pc.binary_join_element_wise(text, ".0", ""), text)
    if odd.any():
        where = np.flatnonzero(odd)
        fixed = text.to_numpy(zero_copy_only=False).astype(object)
        fixed[where] = [repr(x) for x in v[where].tolist()]
        text = pa.array(fixed, type=pa.string())
    return text


def csv_float_field(values: np.ndarray, texts: pa.Array | None = None) -> pa.Array:
    """A float column's CSV fields as pandas writes them: ``repr``, NaN as an empty field."""
    texts = float_texts(values) if texts is None else texts
    missing = np.isnan(np.asarray(values, dtype=np.float64))
    if missing.any():
        texts = pc.if_else(pa.array(missing), pa.scalar("", pa.string()), texts)
    return texts


def csv_text_field(values) -> pa.Array:
    """A text column's CSV fields as pandas (csv.writer, ``QUOTE_MINIMAL``) writes them:
    missing as empty, a value holding a comma, a quote or a "\\n" quoted (quotes
    doubled), any other as it is."""
    arr = pa.array(values, type=pa.string(), from_pandas=True).fill_null("")
    special = pc.match_substring_regex(arr, CSV_SPECIAL)
    if pc.any(special).as_py():
        quoted = pc.binary_join_element_wise(
            '"', pc.replace_substring(arr, '"', '""'), '"', ""
        )
        arr = pc.if_else(special, quoted, arr)
    return arr


def _string_data(arr: pa.Array) -> bytes:
    """The bytes of a string array's values, one after the other (no separators)."""
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset:arr.offset + len(arr) + 1]
    return arr.buffers()[2].to_pybytes()[int(offsets[0]):int(offsets[-1])]


def csv_bytes(fields: list[pa.Array]) -> bytes:
    """Lines of comma-joined ``fields`` (equal-length string arrays), each ending in "\n"."""
    if len(fields[0]) == 0:
        return b""
    lines = pc.binary_join_element_wise(*fields, "", ",")  # the empty field: the line's end
    # "a,b," -> "a,b\n": the data buffer then holds every line, one after the other
    return _string_data(
        pc.binary_join_element_wise(pc.utf8_slice_codeunits(lines, 0, -1), "\n", "")
    )


def joined_text(fields: list[pa.Array]) -> str:
    """Every value of ``fields`` (equal-length string arrays) in row-major order, joined by
    commas (the audit records' columnar text), without a Python string per row."""
    if len(fields[0]) == 0:
        return ""
    return _string_data(pc.binary_join_element_wise(*fields, "", ","))[:-1].decode("utf-8")


def float_texts_of(frame: pd.DataFrame, columns: list[str]) -> dict[str, pa.Array]:
    """:func:`float_texts` of several float columns, formatted in one call (a chunk has 24
    such columns of 2,000 values: per-call overhead mattered), one slice per column."""
    if not columns:
        return {}
    n = len(frame)
    stacked = np.concatenate([frame[c].to_numpy(dtype=np.float64) for c in columns])
    texts = float_texts(stacked)
    return {c: texts.slice(k * n, n) for k, c in enumerate(columns)}


class ResultWriter(_PublishedBeside):
    """Appends result chunks to a temporary CSV or Parquet file beside ``path``.

    ``commit`` publishes it (``os.replace``); ``discard`` removes it. The columns and their
    types are fixed up front, so a chunk whose every row was rejected still fits.
    """

    def __init__(self, path: Path, columns: list[str], text_columns: set[str]) -> None:
        self.path = path
        self.columns = columns
        self.tmp = _temp_beside(path)
        self.parquet = path.suffix.lower() in PARQUET_SUFFIXES
        self._fh = None
        self._pq: pq.ParquetWriter | None = None
        self.schema = pa.schema(
            [(c, pa.string() if c in text_columns else pa.float64()) for c in columns]
        )
        self.text_columns = set(text_columns)
        if self.parquet:
            self._pq = pq.ParquetWriter(self.tmp, self.schema)
        else:
            self._fh = open(self.tmp, "wb")  # noqa: SIM115
            self._fh.write(csv_bytes([csv_text_field([c]) for c in columns]))

    def write(self, frame: pd.DataFrame, texts: dict[str, pa.Array] | None = None) -> None:
        """Append ``frame``'s rows; ``texts``: :func:`float_texts` of float columns that the
        caller has already formatted (the audit records' text), reused as they are."""
        frame = frame[self.columns]
        if self._pq is not None:
            self._pq.write_table(pa.Table.from_pandas(frame, schema=self.schema,
                                                      preserve_index=False))
            return
        texts = texts or {}
        fields = [
            csv_text_field(frame[c].to_numpy(dtype=object)) if c in self.text_columns
            else csv_float_field(frame[c].to_numpy(dtype=np.float64), texts.get(c))
            for c in self.columns
        ]
        self._fh.write(csv_bytes(fields))

    def _close(self) -> None:
        if self._pq is not None:
            self._pq.close()
            self._pq = None
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None



class RejectWriter(_PublishedBeside):
    """Rejected rows (row, patient_id where readable, column, reason), one line per problem,
    to a temporary CSV beside ``path``; published and discarded like :class:`ResultWriter`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = _temp_beside(path)
        self._fh = open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.writer(self._fh, lineterminator="\n")
        self._csv.writerow(REJECT_COLUMNS)
        self.n_lines = 0

    def write(self, row: int, patient_id: str | None, column: str | None, reason: str) -> None:
        self._csv.writerow([row, patient_id or "", column or "", reason])
        self.n_lines += 1

    def _close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()



def rejects_path(output: Path) -> Path:
    """``<OUT stem>.rejects.csv`` beside the output."""
    return output.with_name(f"{output.stem}.rejects.csv")
