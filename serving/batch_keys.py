"""The patient keys a batch run has kept so far, in 24 bytes a key whatever the key's length.

Why: refusing a repeated key means remembering every key kept, so this memory grows with the
file. A dict of Python strings to row numbers took about 110 bytes a key (the driver of a
1,000,000-row run grew by 108 MB between 100,000 and 1,000,000 rows, which alone broke the
2 GB budget of a Ray run). Here a key is kept as a 128-bit digest (two independent 64-bit
SipHash values, pandas' vectorised ``hash_array``) and its row number, in sorted numpy runs
merged as they grow (a log-structured merge: O(log n) runs, each element copied O(log n)
times). Two different keys share a digest with probability about n^2 / 2^129 (1e-27 for a
million keys): the cost would be one row wrongly refused as a duplicate, visibly, in the
rejects file, never a silent wrong score.

Past ``max_in_memory`` keys (default 1,000,000: 24 MB; ``REIRRAD_BATCH_KEYS_IN_MEMORY``) the
ledger moves to a SQLite file in a temporary directory (a B-tree keyed by digest, 32 MB of
page cache) and grows there: a run's memory then stays bounded whatever the file's size, at
the cost of a few microseconds per row for the lookups beyond that many keys.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Sequence

import numpy as np
import pandas as pd

MAX_KEYS_IN_MEMORY = 1_000_000
KEYS_IN_MEMORY_ENV = "REIRRAD_BATCH_KEYS_IN_MEMORY"
SPILL_CACHE_KIB = 32 * 1024
SQL_VARIABLES = 900
"""Digests per lookup statement (under SQLite's smallest limit on bound variables)."""
STORE_BATCH = 8192
"""Digests converted to Python objects and inserted at a time. Moving a million in-memory
keys to SQLite in one ``executemany`` built about 110 MB of Python bytes and ints at once:
the driver of a 3,000,000-row Ray run peaked at 524 MB there against a steady ~400 MB."""
HASH_KEYS = ("reirrad-keys-one", "reirrad-keys-two")
"""The two SipHash keys (16 bytes each) whose 64-bit digests make a key's 128-bit digest."""


def digests(keys: Sequence[str]) -> np.ndarray:
    """Each key's 128-bit digest, as 16-byte strings (sortable and searchable by numpy)."""
    values = np.asarray(keys, dtype=object)
    halves = [pd.util.hash_array(values, hash_key=k, categorize=False) for k in HASH_KEYS]
    return np.ascontiguousarray(np.stack(halves, axis=1)).view("S16").ravel()


class SeenKeys:
    """Keys seen so far, each with the data row where it was first seen."""

    def __init__(self, max_in_memory: int | None = None) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted digests, rows)
        if max_in_memory is None:
            max_in_memory = int(os.environ.get(KEYS_IN_MEMORY_ENV, MAX_KEYS_IN_MEMORY))
        self.max_in_memory = max(int(max_in_memory), 1)
        self._dir: tempfile.TemporaryDirectory | None = None
        self._db: sqlite3.Connection | None = None
        self._n_spilled = 0

    def __len__(self) -> int:
        return sum(len(d) for d, _ in self._runs) + self._n_spilled

    @property
    def spilled(self) -> bool:
        """Whether the ledger has moved to its SQLite file."""
        return self._db is not None

    def first_rows(self, keys: Sequence[str], rows: np.ndarray) -> np.ndarray:
        """For keys met in file order at data rows ``rows``: the row where each key was
        first met (in an earlier call or earlier in this one; its own row if new). The new
        keys are remembered."""
        rows = np.asarray(rows, dtype=np.int64)
        n = len(rows)
        if n == 0:
            return rows.copy()
        d = digests(keys)
        order = np.argsort(d, kind="stable")  # equal digests stay in file order
        ds, rs = d[order], rows[order]
        starts = np.ones(n, dtype=bool)
        starts[1:] = ds[1:] != ds[:-1]
        first_sorted = rs[np.maximum.accumulate(np.where(starts, np.arange(n), 0))]
        known = np.zeros(n, dtype=bool)
        runs = list(self._runs)  # the sorted runs in memory, then what the file holds of ds
        if self._db is not None:
            runs.append(self._lookup(ds[starts]))
        for run_d, run_rows in runs:
            if not len(run_d):
                continue
            at = np.minimum(np.searchsorted(run_d, ds), len(run_d) - 1)
            hit = run_d[at] == ds
            first_sorted[hit] = run_rows[at[hit]]
            known |= hit
        new = starts & ~known
        if new.any():
            self._add(ds[new], first_sorted[new])
        first = np.empty(n, dtype=np.int64)
        first[order] = first_sorted
        return first

    def _add(self, d: np.ndarray, rows: np.ndarray) -> None:
        """Append a sorted run; merge the last two while the older is not twice as long;
        past the memory budget, everything goes to the SQLite file."""
        if self._db is not None:
            self._store(d, rows)
            return
        self._runs.append((d, rows))
        if len(self) > self.max_in_memory:
            self._spill()
            return
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0]):
            (d1, r1), (d2, r2) = self._runs.pop(-2), self._runs.pop()
            self._runs.append(_merge(d1, r1, d2, r2))

    # ----------------------------------------------------------------- the SQLite file
    def _spill(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="reirrad-keys-")
        db = sqlite3.connect(os.path.join(self._dir.name, "keys.db"))
        db.execute("PRAGMA journal_mode=OFF")  # scratch data: no journal, no fsync
        db.execute("PRAGMA synchronous=OFF")
        db.execute(f"PRAGMA cache_size=-{SPILL_CACHE_KIB}")
        db.execute("CREATE TABLE seen (d BLOB PRIMARY KEY, row INTEGER NOT NULL) WITHOUT ROWID")
        self._db = db
        runs, self._runs = self._runs, []
        while runs:  # each run freed once stored
            self._store(*runs.pop())

    def _store(self, d: np.ndarray, rows: np.ndarray) -> None:
        """Insert a run, :data:`STORE_BATCH` keys at a time (one transaction)."""
        assert self._db is not None
        with self._db:
            for a in range(0, len(d), STORE_BATCH):
                self._db.executemany(
                    "INSERT INTO seen (d, row) VALUES (?, ?)",
                    zip(d[a:a + STORE_BATCH].tolist(), rows[a:a + STORE_BATCH].tolist(),
                        strict=True),
                )
        self._n_spilled += len(d)

    def _lookup(self, unique_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stored digests among ``unique_sorted`` (sorted) and their rows."""
        assert self._db is not None
        found: list[tuple[bytes, int]] = []
        values = unique_sorted.tolist()
        for a in range(0, len(values), SQL_VARIABLES):
            part = values[a : a + SQL_VARIABLES]
            marks = ",".join("?" * len(part))
            found += self._db.execute(
                f"SELECT d, row FROM seen WHERE d IN ({marks})", part
            ).fetchall()
        if not found:
            return np.empty(0, dtype="S16"), np.empty(0, dtype=np.int64)
        found.sort()
        return (np.array([f[0] for f in found], dtype="S16"),
                np.array([f[1] for f in found], dtype=np.int64))


def _merge(d1: np.ndarray, r1: np.ndarray, d2: np.ndarray, r2: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted runs as one, in linear time, with no copy beyond the result, the second
    run's positions and a mask: 29 bytes a key of the result at the peak, measured, where
    concatenating and sorting again took 56 (56 MB at the in-memory budget of a million
    keys). A digest is never in two runs, so where equal ones go does not matter."""
    at = np.searchsorted(d1, d2) + np.arange(len(d2))
    first = np.ones(len(d1) + len(d2), dtype=bool)
    first[at] = False
    d = np.empty(len(first), dtype=d1.dtype)
    d[at], d[first] = d2, d1
    rows = np.empty(len(first), dtype=np.int64)
    rows[at], rows[first] = r2, r1
    return d, rows
