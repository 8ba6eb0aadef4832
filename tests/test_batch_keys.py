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


def test_past_its_memory_budget_the_ledger_moves_to_sqlite_and_answers_the_same():
    rng = np.random.default_rng(9)
    pool = [f"P{i:05d}" for i in range(2000)] + ["", "é-ü", "x" * 200]
    chunks, row = [], 1
    for size in rng.integers(0, 90, size=80):
        keys = [pool[i] for i in rng.integers(0, len(pool), size=size)]
        rows = np.arange(row, row + size)
        row = int(rows[-1]) + 1 if size else row
        chunks.append((keys, rows))
    ledger = SeenKeys(max_in_memory=300)
    got = [ledger.first_rows(keys, rows).tolist() for keys, rows in chunks]
    assert ledger.spilled and not ledger._runs  # nothing kept in memory once moved
    assert got == reference(chunks)
    assert len(ledger) == len({k for keys, _ in chunks for k in keys})


def test_digests_ending_in_zero_bytes_survive_the_sqlite_file():
    ledger = SeenKeys(max_in_memory=1)
    keys = [f"K{i}" for i in range(5000)]
    last_byte = digests(keys).view(np.uint8).reshape(-1, 16)[:, -1]
    zero_tail = [k for k, b in zip(keys, last_byte, strict=True) if b == 0][:5]
    assert zero_tail  # about one key in 256
    first = ledger.first_rows(zero_tail + ["other"], np.arange(1, len(zero_tail) + 2))
    again = ledger.first_rows(zero_tail, np.arange(100, 100 + len(zero_tail)))
    assert ledger.spilled
    assert again.tolist() == first[: len(zero_tail)].tolist()


def test_moving_to_sqlite_and_merging_allocate_little_beyond_the_runs():
    """The move to SQLite goes in slices (one executemany of every key built ~110 bytes of
    Python objects a key: the driver of a 3,000,000-row Ray run peaked there), and a merge
    of two runs costs about the result plus the positions, not a sort's copies."""
    import tracemalloc

    n = 120_000
    keys = [f"B{i:07d}" for i in range(n)]
    ledger = SeenKeys(max_in_memory=n)
    for start in range(0, n, 2000):
        ledger.first_rows(keys[start:start + 2000], np.arange(start, start + 2000) + 1)
    assert not ledger.spilled and len(ledger) == n
    tracemalloc.start()
    try:
        ledger.first_rows(["one more"], np.array([n + 1]))  # past the budget: the move
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ledger.spilled and not ledger._runs
    assert peak < 24 * n / 2  # the runs themselves are 24 bytes a key
    again = ledger.first_rows(keys[::997], np.arange(10**6, 10**6 + len(keys[::997])))
    assert again.tolist() == list(range(1, n + 1, 997))

    big = SeenKeys(max_in_memory=10**7)
    half = n // 2
    big.first_rows(keys[:half], np.arange(1, half + 1))
    d2 = np.sort(digests(keys[half:]))
    r2 = np.arange(half + 1, n + 1)
    tracemalloc.start()
    try:
        big._add(d2, r2)  # two runs of equal length: merged
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(big._runs) == 1
    d, rows = big._runs[0]
    assert (d[1:] > d[:-1]).all() and sorted(rows.tolist()) == list(range(1, n + 1))
    assert peak < 24 * n * 1.5  # the merged run, its positions, a mask (a re-sort: 2.3)
