"""Batch scoring on Ray Data: the same chunk function on a cluster's workers, in file order.

A Ray Data datasource streams the file with the local run's own reader (same chunks, same
row numbers, malformed CSV lines as rejects), a pool of actors that each hold the bundle once
runs :func:`serving.batch.score_chunk` on each block, and the driver receives the results in
file order (``preserve_order``), so it numbers, de-duplicates, audits and writes exactly as
in a local run. Memory stays bounded: Ray Data's streaming executor holds back the reader
when the object store fills.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.bundle import ModelBundle
from serving.batch import ResultsFn, rejected_lines, score_chunk
from serving.batch_io import ChunkReader

ROW_COL = "_row"
MALFORMED_COL = "_malformed"

LOCAL_ADDRESS = "local"
REPO_PACKAGES = ("features", "models", "serving")
"""Our packages shipped to the workers (``py_modules``), so a remote cluster needs no copy."""
DEFAULT_OBJECT_STORE_BYTES = 512 * 1024**2
"""The object store of a local cluster we start: results stream through it, so a small cap
bounds memory without slowing the run."""


class ChunkScorer:
    """A Ray Data actor: loads the bundle once, scores each batch with :func:`score_chunk`."""

    def __init__(self, bundle_ref: list, horizons: list[float]) -> None:
        import ray

        self.bundle = ray.get(bundle_ref[0])
        gc.freeze()  # as the local command: keep the bundle out of the collector's scans
        self.horizons = horizons

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        # Ray Data unifies the blocks' columns (every block may carry an empty _malformed)
        # and may hand the last chunk and the malformed lines' block over together
        malformed = batch.get(MALFORMED_COL)
        bad = (malformed.notna() if malformed is not None
               else pd.Series(False, index=batch.index)).to_numpy()
        frame = batch.loc[~bad].drop(columns=[c for c in (ROW_COL, MALFORMED_COL) if c in batch])
        parts, rows = [], []
        if (~bad).any():
            parts.append(score_chunk(self.bundle, frame, self.horizons))
            rows.append(batch.loc[~bad, ROW_COL].to_numpy())
        if bad.any():
            parts.append(rejected_lines(malformed[bad].tolist(), self.horizons))
            rows.append(batch.loc[bad, ROW_COL].to_numpy())
        out = pd.concat(parts, ignore_index=True)
        rows = np.concatenate(rows)
        out[ROW_COL] = rows
        return out


def init_ray(address: str, num_cpus: int | None = None,
             object_store_bytes: int | None = DEFAULT_OBJECT_STORE_BYTES) -> bool:
    """Connect to ``address`` or, for ``local``, start a cluster here; True if we started it.

    A local cluster gets ``num_cpus`` (default: the machine's) and an object store capped at
    ``object_store_bytes``. Ray >= 2.59 enables token authentication for local clusters;
    ``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN_PATH`` in the environment are honoured as usual.
    """
    import ray

    if ray.is_initialized():
        return False
    root = Path(__file__).resolve().parents[1]
    kwargs: dict[str, Any] = {
        "runtime_env": {"py_modules": [str(root / p) for p in REPO_PACKAGES]},
        "log_to_driver": False,
    }
    if address == LOCAL_ADDRESS:
        kwargs |= {"num_cpus": num_cpus or os.cpu_count() or 1, "include_dashboard": False}
        if object_store_bytes:
            kwargs["object_store_memory"] = object_store_bytes
    else:
        kwargs["address"] = address
    ray.init(**kwargs)
    return True


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


def _plain(batch: pd.DataFrame) -> pd.DataFrame:
    """Text columns back as Python objects with None for missing (Ray Data may hand back
    nullable string columns holding pd.NA), so the driver sees what a local run gives it."""
    for c in batch.columns:
        if not pd.api.types.is_float_dtype(batch[c]) and not pd.api.types.is_bool_dtype(batch[c]):
            col = batch[c].astype(object)
            batch[c] = col.where(col.notna(), None)
    return batch


def ray_results(bundle: ModelBundle, horizons: Sequence[float], chunk_rows: int,
                workers: int | None = None) -> ResultsFn:
    """A ``results`` function for :func:`serving.batch.run_batch` that scores on Ray Data
    (Ray must be initialised: :func:`init_ray`)."""
    import ray

    def results(reader: ChunkReader) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        size = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ds = ray.data.read_datasource(
            chunk_source(reader.path, chunk_rows), ray_remote_args={"num_cpus": 0}
        ).map_batches(
            ChunkScorer,
            fn_constructor_args=([ray.put(bundle)], list(horizons)),
            batch_size=None,  # one block = one chunk, as cut by the reader
            batch_format="pandas",
            concurrency=size,
            num_cpus=1,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            rows = batch.pop(ROW_COL).to_numpy()
            yield _plain(batch), rows
        reader.malformed.clear()  # they came through the last block

    return results
