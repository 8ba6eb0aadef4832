"""Batch scoring that keeps every row: `reirrad score` on files of any size.

A chunk of raw rows goes through the service's own code: each row is checked by the contract
(:func:`features.schema.validate_rows`, one row's errors never touching another's) and the
valid ones are scored by :func:`serving.scoring.score_inputs` (the bundle's features,
predictions and intervals). :func:`score_chunk` returns one line per input row, scored or
not, so that the same function serves a local loop and Ray Data's workers; the driver
(:class:`BatchRun`) then numbers rows, refuses repeated patient keys, writes the results and
the rejects, and commits one audit record per chunk before anything is published.

Exit codes of the command: 0 every row scored; 3 some rows rejected (results and rejects
written); 2 nothing scored (bad file, bad options, or any invalid row with ``--strict``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.config import ENDPOINTS
from features.schema import PatientInput, Violation, check_columns, validate_rows
from models.bundle import ModelBundle
from serving.batch_io import (
    ChunkReader,
    RejectWriter,
    ResultWriter,
    file_columns,
    float_texts_of,
    joined_text,
    rejects_path,
)
from serving.batch_keys import SeenKeys
from serving.scoring import score_inputs

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_REJECTED = 3
DEFAULT_CHUNK_ROWS = 2000
"""Rows scored at a time: the forest's per-tree predictions for the intervals take about
n_trees x rows x grid points x 8 bytes (200 x 2000 x 60 x 8 = 190 MB)."""
OK_COL, PID_COL, PROBLEMS_COL = "_ok", "_patient_id", "_problems"
TEXT_COLUMNS = {"patient_id", "assumed", "warnings"}
CLI_ROUTE = "cli.score"
MAX_SHOWN = 20
"""Problems kept for the terminal (all of them are in the rejects file)."""


class BatchInputError(ValueError):
    """The file cannot be scored at all (unreadable, or its header breaks the contract)."""

    def __init__(self, problems: Sequence[Violation | str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def result_columns(horizons: Sequence[float]) -> list[str]:
    """``patient_id``, ``<endpoint>_<H>m`` with ``_lower``/``_upper`` beside it, then the
    assumptions and warnings (the same table as the JSON-free output of ``reirrad score``)."""
    cols = ["patient_id"]
    for e in ENDPOINTS:
        for h in horizons:
            cols += [f"{e}_{h:g}m", f"{e}_{h:g}m_lower", f"{e}_{h:g}m_upper"]
    return [*cols, "assumed", "warnings"]


def _readable_id(frame: pd.DataFrame, i: int, problems: list[Violation]) -> str | None:
    """The row's patient key when the contract had nothing against it, else None."""
    if "patient_id" not in frame.columns or any(p.column == "patient_id" for p in problems):
        return None
    value = frame["patient_id"].iat[i]
    return None if value is None or pd.isna(value) else str(value).strip() or None


def rejected_lines(reasons: Sequence[str], horizons: Sequence[float]) -> pd.DataFrame:
    """:func:`score_chunk`'s lines for rows refused before the contract (malformed lines)."""
    n = len(reasons)
    out: dict[str, object] = {c: [None] * n for c in ("patient_id", "assumed", "warnings")}
    for c in result_columns(horizons):
        out.setdefault(c, np.full(n, np.nan))
    out[OK_COL] = np.zeros(n, dtype=bool)
    out[PID_COL] = [None] * n
    out[PROBLEMS_COL] = [json.dumps([[None, r]]) for r in reasons]
    return pd.DataFrame(out)[[*result_columns(horizons), OK_COL, PID_COL, PROBLEMS_COL]]


def score_chunk(bundle: ModelBundle, frame: pd.DataFrame, horizons: Sequence[float]
                ) -> pd.DataFrame:
    """One line per input row: the results of a valid row; ``_ok`` False, the readable key and
    the problems (JSON ``[[column, reason], ...]``, never the value) of an invalid one."""
    frame = frame.reset_index(drop=True)
    check = check_columns([str(c) for c in frame.columns])
    if check.errors:
        raise BatchInputError(check.errors)
    n = len(frame)
    ok = np.zeros(n, dtype=bool)
    pids: list[str | None] = [None] * n
    problems: list[str | None] = [None] * n
    patients: list[PatientInput] = []
    for i, (_, rec, violations) in enumerate(validate_rows(frame, check, echo=False)):
        if rec is None:
            pids[i] = _readable_id(frame, i, violations)
            problems[i] = json.dumps([[v.column, v.reason] for v in violations])
        else:
            ok[i] = True
            pids[i] = rec.patient_id
            patients.append(rec)
    h = np.asarray(horizons, dtype=float)
    out: dict[str, object] = {"patient_id": pids}
    for e in ENDPOINTS:
        for hh in h:
            for suffix in ("", "_lower", "_upper"):
                out[f"{e}_{hh:g}m{suffix}"] = np.full(n, np.nan)
    assumed: list[str | None] = [None] * n
    warnings: list[str | None] = [None] * n
    if patients:
        scored = score_inputs(bundle, patients, horizons)
        idx = np.flatnonzero(ok)
        for e in ENDPOINTS:
            for j, hh in enumerate(scored.horizons):
                out[f"{e}_{hh:g}m"][idx] = scored.cif[e][:, j]
                out[f"{e}_{hh:g}m_lower"][idx] = scored.lower[e][:, j]
                out[f"{e}_{hh:g}m_upper"][idx] = scored.upper[e][:, j]
        for k, i in enumerate(idx):
            assumed[i] = "; ".join(scored.assumed[k])
            warnings[i] = "; ".join(scored.warnings[k])
    out["assumed"] = assumed
    out["warnings"] = warnings
    out[OK_COL] = ok
    out[PID_COL] = pids
    out[PROBLEMS_COL] = problems
    return pd.DataFrame(out)


# -------------------------------------------------------------------------- the driver
@dataclass
class Summary:
    """What a run did: rows scored and rejected, and where the files are (None: not written)."""

    n_scored: int = 0
    n_rejected: int = 0
    n_chunks: int = 0
    output: Path | None = None
    rejects: Path | None = None
    problems: list[str] = field(default_factory=list)  # the first few, never a value

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.n_rejected == 0 else EXIT_REJECTED


def value_texts(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, pa.Array]:
    """The ``repr`` text of every value of the float ``columns`` (formatted once per chunk:
    the audit records and the CSV output both use it)."""
    return float_texts_of(frame, [c for c in columns if c not in TEXT_COLUMNS])


def _risk_outputs(frame: pd.DataFrame, horizons: Sequence[float],
                  texts: dict[str, pa.Array] | None = None) -> dict:
    """What the audit trail keeps of a chunk's scored rows, in their order (no identifiers).

    Columnar, so a million rows stay cheap to record: per endpoint, ``cif``, ``lower`` and
    ``upper`` as text, one value per row and horizon in row-major order (``repr`` digits, so
    the numbers are exact), and the number of assumptions and warnings of each row.
    ``texts``: :func:`value_texts` of the frame when the caller has them.
    """
    texts = value_texts(frame, result_columns(horizons)) if texts is None else texts

    def text(columns: list[str]) -> str:
        return joined_text([texts[c] for c in columns])

    risks = {}
    for e in ENDPOINTS:
        risks[e] = {
            stat: text([f"{e}_{h:g}m{suffix}" for h in horizons])
            for stat, suffix in (("cif", ""), ("lower", "_lower"), ("upper", "_upper"))
        }

    def count(values: pd.Series) -> list[int]:
        arr = pa.array(values.to_numpy(dtype=object), type=pa.string(),
                       from_pandas=True).fill_null("")
        parts = pc.add(pc.count_substring(arr, "; "), 1)
        return pc.if_else(pc.greater(pc.utf8_length(arr), 0), parts, 0).to_pylist()

    return {"format": "columns-v1", "horizons": [float(h) for h in horizons], "risks": risks,
            "n_assumed": count(frame["assumed"]),
            "n_warnings": count(frame["warnings"])}


class RowLedger:
    """Row bookkeeping in file order: numbers, repeated keys and rejects (one line each).

    The first row with a key is kept; a later one is rejected as its duplicate, as the
    contract refuses repeated keys in one table.
    """

    def __init__(self, sink: RejectWriter | None = None) -> None:
        self.sink = sink
        self.n_scored = 0
        self.n_rejected = 0
        self.shown: list[str] = []
        self._seen = SeenKeys()  # bounded: on disk past its budget (serving.batch_keys)

    def _reject(self, row: int, pid: str | None, column: str | None, reason: str) -> None:
        if self.sink is not None:
            self.sink.write(row, pid, column, reason)
        if len(self.shown) < MAX_SHOWN:
            self.shown.append(str(Violation(row, column, reason)))

    def take(self, result: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """The mask of ``result``'s lines to keep (valid and not a repeated key)."""
        ok = result[OK_COL].to_numpy(dtype=bool).copy()
        pids = result[PID_COL].tolist()
        problems = result[PROBLEMS_COL].tolist()
        firsts = np.asarray(rows, dtype=np.int64).copy()
        valid = np.flatnonzero(ok)
        firsts[valid] = self._seen.first_rows([pids[i] for i in valid], firsts[valid])
        for i in range(len(result)):
            row = int(rows[i])
            if not ok[i]:
                for column, reason in json.loads(problems[i]):
                    self._reject(row, pids[i], column, reason)
                self.n_rejected += 1
                continue
            first = int(firsts[i])
            if first != row:
                ok[i] = False
                self._reject(row, pids[i], "patient_id", f"duplicate of row {first}")
                self.n_rejected += 1
        self.n_scored += int(ok.sum())
        return ok

    def add_malformed(self, malformed: Iterable) -> None:
        for m in malformed:
            self._reject(m.row, None, None, m.reason)
            self.n_rejected += 1


AuditFn = Callable[[int, list[str], dict, "dict | None"], None]


class BatchRun:
    """Consumes :func:`score_chunk` results in file order: the ledger decides which lines are
    kept, the results and rejects go to temporary files, and each chunk is audited.

    ``audit``: called with (chunk index, patient keys of the kept rows, their outputs, summary
    or None); the last chunk's call is held back until :meth:`publish`, which gives it the
    summary, so that every record is committed before the output and the rejects appear.
    :meth:`abort` leaves nothing behind.
    """

    def __init__(self, output: Path, horizons: Sequence[float], audit: AuditFn | None) -> None:
        self.horizons = list(horizons)
        self.columns = result_columns(self.horizons)
        self.audit = audit
        self.output = output
        self.results = ResultWriter(output, self.columns, TEXT_COLUMNS)
        try:
            self.rejects = RejectWriter(rejects_path(output))
        except BaseException:
            self.results.discard()
            raise
        self.ledger = RowLedger(self.rejects)
        self.n_chunks = 0
        self._held: tuple[int, list[str], dict] | None = None

    def consume(self, result: pd.DataFrame, rows: np.ndarray) -> None:
        """One chunk's :func:`score_chunk` output and the data-row numbers of its lines."""
        kept = result.loc[self.ledger.take(result, rows), self.columns]
        texts = value_texts(kept, self.columns)
        if self.audit is not None:
            if self._held is not None:
                self.audit(*self._held, None)
            self._held = (self.n_chunks, kept["patient_id"].tolist(),
                          _risk_outputs(kept, self.horizons, texts))
        self.results.write(kept, texts)
        self.n_chunks += 1

    def summary(self) -> Summary:
        return Summary(self.ledger.n_scored, self.ledger.n_rejected, self.n_chunks,
                       self.output, self.rejects.path, self.ledger.shown)

    def publish(self) -> Summary:
        """Audit the last chunk with the summary, then publish the rejects and the output."""
        summary = self.summary()
        if self.audit is not None:
            held = self._held if self._held is not None else (0, [], {})
            self.audit(*held, {"scored": summary.n_scored, "rejected": summary.n_rejected,
                               "chunks": summary.n_chunks})
        self.rejects.commit()
        self.results.commit()
        return summary

    def abort(self) -> None:
        try:
            self.results.discard()
        finally:
            self.rejects.discard()


ResultsFn = Callable[[ChunkReader], Iterator[tuple[pd.DataFrame, np.ndarray]]]


def strict_check(input_path: Path, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Summary:
    """``--strict``'s first pass: every row checked, nothing scored or written."""
    ledger = RowLedger()
    reader = ChunkReader(input_path, chunk_rows)
    n_chunks = 0
    for chunk in reader:
        ledger.take(check_chunk(chunk.frame), chunk.rows)
        n_chunks += 1
    ledger.add_malformed(reader.malformed)
    _check_not_empty(n_chunks, ledger)
    return Summary(0, ledger.n_rejected, n_chunks, None, None, ledger.shown)


def _check_not_empty(n_chunks: int, ledger: RowLedger) -> None:
    if n_chunks == 0 and ledger.n_rejected == 0:
        raise BatchInputError(["table: the table has no data rows"])


def run_batch(
    input_path: Path,
    output_path: Path,
    bundle: ModelBundle | None,
    horizons: Sequence[float],
    audit: AuditFn | None = None,
    strict: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    results: ResultsFn | None = None,
) -> Summary:
    """Score ``input_path`` into ``output_path`` chunk by chunk (see the module docstring).

    ``results``: how chunks are scored, yielding (score_chunk output, row numbers) in file
    order; default in this process with ``bundle`` (the Ray path passes its own, and no
    bundle: its actors hold it). With ``strict`` every row is
    checked first and nothing is scored, audited or written unless all are valid: the
    returned summary then has ``n_rejected`` > 0 and no files.
    """
    check = check_columns(file_columns(input_path))
    if check.errors:
        raise BatchInputError(check.errors)
    if strict:
        probe = strict_check(input_path, chunk_rows)
        if probe.n_rejected:
            return probe
    reader = ChunkReader(input_path, chunk_rows)
    if results is None:
        def results(rd: ChunkReader) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
            for chunk in rd:
                yield score_chunk(bundle, chunk.frame, horizons), chunk.rows
    run = BatchRun(output_path, horizons, audit)
    try:
        for result, rows in results(reader):
            run.consume(result, rows)
        run.ledger.add_malformed(reader.malformed)
        _check_not_empty(run.n_chunks, run.ledger)
        return run.publish()
    except BaseException:
        run.abort()
        raise


def check_chunk(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`score_chunk`'s bookkeeping columns without scoring (``--strict``'s first pass)."""
    frame = frame.reset_index(drop=True)
    check = check_columns([str(c) for c in frame.columns])
    if check.errors:
        raise BatchInputError(check.errors)
    ok, pids, problems = [], [], []
    for i, (_, rec, violations) in enumerate(validate_rows(frame, check, echo=False)):
        ok.append(rec is not None)
        pids.append(rec.patient_id if rec is not None else _readable_id(frame, i, violations))
        problems.append(None if rec is not None
                        else json.dumps([[v.column, v.reason] for v in violations]))
    return pd.DataFrame({OK_COL: ok, PID_COL: pids, PROBLEMS_COL: problems})


def new_run_id() -> str:
    return uuid.uuid4().hex
