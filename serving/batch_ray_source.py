"""The Ray Data datasource of batch scoring: the file cut exactly as a local run cuts it.

Kept apart from :mod:`serving.batch_ray` on purpose: the read task's worker imports this
module, and only the reader's dependencies (pandas, pyarrow, :mod:`serving.batch_io`) come
with it, not the model, the scoring code and numba (about 65 MB less in that process).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from serving.batch_io import ChunkReader

ROW_COL = "_row"
MALFORMED_COL = "_malformed"


def chunk_source(path: Path, chunk_rows: int):
    """A Ray Data datasource: the file read by :class:`serving.batch_io.ChunkReader` in one
    streaming read task, as blocks of exactly the local run's chunks (a ``_row`` column holds
    the data-row numbers), then the malformed lines, if any, as a last block.

    Cutting the file exactly as a local run does keeps every value identical to the last bit:
    the intervals' linear algebra can differ in the last digit when the same rows are scored
    in batches of other sizes.
    """

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
            return [ReadTask(lambda: read_blocks(path, chunk_rows), meta)]

    return ChunkSource()


def read_blocks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The blocks of :func:`chunk_source` (run inside its read task)."""
    reader = ChunkReader(path, chunk_rows)
    for chunk in reader:
        yield chunk.frame.assign(**{ROW_COL: chunk.rows})
    if reader.malformed:
        yield pd.DataFrame({ROW_COL: [m.row for m in reader.malformed],
                            MALFORMED_COL: [m.reason for m in reader.malformed]})
