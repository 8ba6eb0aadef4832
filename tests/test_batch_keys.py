"""The compact ledger of kept patient keys answers as a dict of every key would, in a
bounded number of bytes a key."""

from __future__ import annotations

import numpy as np

from serving.batch_keys import SeenKeys, digests


def reference(chunks):
    seen: dict[str, int] = {}
    return [[seen.setdefault(k, r) for k, r in zip(keys, rows, strict=True)]
            for keys, rows in chunks]


def test_first_rows_equal_a_dict_of_every_key_across_and_within_chunks():
    rng = np.random.default_rng(4)
    pool = [f"P{i:05d}" for i in range(3000)] + ["", "é-ü", "x" * 200]
    chunks, row = [], 1
    for size in rng.integers(0, 90, size=120):  # empty chunks, repeats within and across
        keys = [pool[i] for i in rng.integers(0, len(pool), size=size)]
        rows = np.arange(row, row + size) + rng.integers(0, 2)  # gaps: rejected rows
        row = int(rows[-1]) + 1 if size else row
        chunks.append((keys, rows))
    ledger = SeenKeys()
    got = [ledger.first_rows(keys, rows).tolist() for keys, rows in chunks]
    assert got == reference(chunks)
    distinct = {k for keys, _ in chunks for k in keys}
    assert len(ledger) == len(distinct)
    assert len(ledger._runs) <= 2 * np.log2(len(distinct)) + 1  # merged as it grows


def test_a_key_costs_24_bytes_and_digests_tell_keys_apart():
    keys = [f"B{i:07d}" for i in range(200_000)]
    d = digests(keys)
    assert d.itemsize == 16 and len(np.unique(d)) == len(keys)
    ledger = SeenKeys()
    for start in range(0, len(keys), 2000):
        ledger.first_rows(keys[start:start + 2000], np.arange(start, start + 2000) + 1)
    assert sum(a.nbytes + b.nbytes for a, b in ledger._runs) == 24 * len(keys)
    again = ledger.first_rows(keys[::1000], np.arange(10**6, 10**6 + 200))
    assert again.tolist() == list(range(1, len(keys) + 1, 1000))
