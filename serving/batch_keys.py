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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

HASH_KEYS = ("reirrad-keys-one", "reirrad-keys-two")
"""The two SipHash keys (16 bytes each) whose 64-bit digests make a key's 128-bit digest."""


def digests(keys: Sequence[str]) -> np.ndarray:
    """Each key's 128-bit digest, as 16-byte strings (sortable and searchable by numpy)."""
    values = np.asarray(keys, dtype=object)
    halves = [pd.util.hash_array(values, hash_key=k, categorize=False) for k in HASH_KEYS]
    return np.ascontiguousarray(np.stack(halves, axis=1)).view("S16").ravel()


class SeenKeys:
    """Keys seen so far, each with the data row where it was first seen."""

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted digests, rows)

    def __len__(self) -> int:
        return sum(len(d) for d, _ in self._runs)

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
        for run_d, run_rows in self._runs:
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
        """Append a sorted run; merge the last two while the older is not twice as long."""
        self._runs.append((d, rows))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0]):
            (d1, r1), (d2, r2) = self._runs.pop(-2), self._runs.pop()
            merged = np.concatenate([d1, d2])
            order = np.argsort(merged, kind="stable")
            self._runs.append((merged[order], np.concatenate([r1, r2])[order]))
