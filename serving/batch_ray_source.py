"""The Ray Data datasource of batch scoring: the file cut exactly as a local run cuts it.

Kept apart from :mod:`serving.batch_ray` on purpose: the read task's worker imports this
module, and only the reader's dependencies (pandas, pyarrow, :mod:`serving.batch_io`) come
with it, not the model, the scoring code and numba (about 65 MB less in that process).

One chunk travels as one row. Ray Data reshapes the blocks a read task yields: it merges
them up to ``DataContext.target_max_block_size`` (128 MB by default, so a whole 30,000-row
file became a single batch) and splits them to reach its default parallelism (a 2,000-row
chunk became ``SplitBlocks(82)`` pieces at 1,000,000 rows). Either changes the batches the
actors score, and with them the memory of an actor (it grows with its batch) and the last
bit of some values (the Cox member's linear predictor is a BLAS product whose rounding
depends on a row's position in the batch). A row holding the whole chunk, pickled, cannot
be split or merged by anyone; :mod:`serving.batch_ray` asks for one row per block and one
row per batch, so every actor call scores exactly one local chunk.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from serving.batch_io import ChunkReader

PAYLOAD_COL = "payload"
CHUNK, MALFORMED = "chunk", "malformed"
"""The kinds of payload: a chunk's raw rows, or the malformed lines found in the file."""


def pack(kind: str, data: object, rows: np.ndarray):
    """One row of the dataset: (``kind``, the data, the data-row numbers), pickled."""
    import pyarrow as pa

    blob = pickle.dumps((kind, data, np.asarray(rows)), protocol=pickle.HIGHEST_PROTOCOL)
    return pa.table({PAYLOAD_COL: pa.array([blob], type=pa.binary())})


def unpack(table) -> Iterator[tuple[str, object, np.ndarray]]:
    """The payloads of a block or batch of :func:`pack` rows, in order."""
    for blob in table.column(PAYLOAD_COL).to_pylist():
        yield pickle.loads(blob)


def chunk_source(path: Path, chunk_rows: int, first: int = 0, stop: int | None = None):
    """A Ray Data datasource: the file read by :class:`serving.batch_io.ChunkReader` in one
    streaming read task, one row per chunk (:func:`pack`, the frame exactly as the local
    run's reader gives it), then the malformed lines, if any, as a last row.

    Only chunks ``first`` to ``stop`` (excluded; None: to the end) become rows, so that a
    file can be scored as a sequence of datasets (see :func:`read_blocks`)."""

    from ray.data import Datasource
    from ray.data.block import BlockMetadata
    from ray.data.datasource import ReadTask

    class ChunkSource(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return path.stat().st_size

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context=None) -> list:
            meta = BlockMetadata(num_rows=None, size_bytes=path.stat().st_size,
                                 input_files=[str(path)], exec_stats=None)
            return [ReadTask(lambda: read_blocks(path, chunk_rows, first, stop), meta)]

    return ChunkSource()


def read_blocks(path: Path, chunk_rows: int, first: int = 0,
                stop: int | None = None) -> Iterator:
    """The blocks of :func:`chunk_source` (run inside its read task): chunks ``first`` to
    ``stop`` of the file, then, only if the file ends before ``stop``, its malformed lines.

    The chunks before ``first`` are read again and dropped rather than sought to: a local
    run's chunks, their row numbers and its malformed lines all depend on everything read
    before them (a CSV value may hold a newline; a malformed line shifts the numbers), and
    reading is cheap beside scoring (about 3 s per million rows against 90 s)."""
    reader = ChunkReader(path, chunk_rows)
    for i, chunk in enumerate(reader):
        if stop is not None and i >= stop:
            return  # more chunks follow: the malformed lines go with the last dataset
        if i >= first:
            yield pack(CHUNK, chunk.frame, chunk.rows)
    if reader.malformed:
        yield pack(MALFORMED, [m.reason for m in reader.malformed],
                   np.array([m.row for m in reader.malformed]))
