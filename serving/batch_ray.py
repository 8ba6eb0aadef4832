"""Batch scoring on Ray Data: the same chunk function on a cluster's workers, in file order.

A Ray Data datasource (:mod:`serving.batch_ray_source`) streams the file with the local run's
own reader (same chunks, same row numbers, malformed CSV lines as rejects), one chunk per
row, block and batch; a pool of actors that each hold the bundle once runs
:func:`serving.batch.score_chunk` on each chunk, and the driver receives the results in file
order (``preserve_order``), so it numbers, de-duplicates, audits and writes exactly as in a
local run. Every value is the local run's to the last bit: each actor call scores exactly a
local chunk (see :mod:`serving.batch_ray_source` for why Ray Data's own block shaping would
not).

Memory (issue 12: the driver and every Ray process together under 2 GB whatever the file's
size). Measured on a local cluster (release model, 2 CPUs, Ray 2.60), 1.35 GB are spent
before any scoring actor: Ray's daemons, Ray Data's helper actors, the read task and the
driver (:data:`FIXED_BYTES`); each scoring actor adds about 0.36 GB (:data:`ACTOR_BYTES`).
Only the blocks waiting in the object store could grow with the file, so they are capped,
and the actors are counted from the budget:

- :func:`actor_count`: as many scoring actors as the budget (``--ray-memory-gb``, 2 GB by
  default) leaves room for, at least one and at most one per CPU, each fed one chunk at a
  time (``max_tasks_in_flight_per_actor=1``): no actor queues chunks it cannot score yet;
- Ray Data's object-store budget for this dataset is :data:`DATA_STORE_BYTES` (on any
  cluster, ours or not), and its read task yields one chunk per block (a streaming
  generator Ray holds back a few blocks ahead), so the reader never runs far ahead;
- a local cluster we start gets an object store of :data:`DEFAULT_OBJECT_STORE_BYTES`: the
  pickled bundle (about 50 MB for the release model) plus the dataset's budget plus room;
- the bundle is put in the object store once; the actors read its arrays in place and the
  driver drops its own copy (:func:`release_memory`);
- no idle workers prestarted (``enable_worker_prestart``): Ray would otherwise start one
  Python process per CPU that this job never uses (its workers need our runtime_env);
- the read task's module imports only the reader, not the model.

The patient keys the driver must remember to refuse repeated ones are the one thing that
grows with the file in the driver: 24 bytes a key (:mod:`serving.batch_keys`), 24 MB per
million rows, moved to SQLite past a budget. Ray Data's statistics grow with a dataset's
blocks, so a long file is scored as a sequence of datasets (:data:`SEGMENT_CHUNKS`).
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
from serving.batch_ray_source import CHUNK, MALFORMED, chunk_source, pack, unpack

LOCAL_ADDRESS = "local"
REPO_PACKAGES = ("features", "models", "serving")
"""Our packages shipped to the workers (``py_modules``), so a remote cluster needs no copy."""
DATA_STORE_BYTES = 64 * 1024**2
"""Ray Data's object-store budget for the scoring dataset: a chunk of 2,000 rows is about
1 MB in and 1 MB out, so 64 MB keeps dozens of chunks ahead of the actors (they never wait
on the reader) while bounding what waits in the store."""
DEFAULT_OBJECT_STORE_BYTES = 192 * 1024**2
"""The object store of a local cluster we start: the bundle put once (about 50 MB), the
dataset's budget (:data:`DATA_STORE_BYTES`) and room for results on their way to the
driver. Above it Ray spills to disk rather than use more memory."""
MEMORY_BUDGET_BYTES = 2e9
"""Issue 12's target for the driver and every Ray process together (PSS, as
benchmarks/bench_batch_score.py measures it): the default budget of :func:`actor_count`."""
FIXED_BYTES = 1.35e9
"""What a run costs before any scoring actor (measured, 1,000,000 rows on a 2-CPU local
cluster, Ray 2.60, release model): Ray's daemons 0.42 GB (dashboard agent and API server,
runtime-env agent, autoscaler monitor, log monitor, GCS, raylet), Ray Data's helper actors
0.33 GB (stats, autoscaling coordinator, actor-location tracker; none can be switched off),
the read task 0.18 GB and the driver 0.39 GB, rounded up."""
ACTOR_BYTES = 0.40e9
"""One scoring actor (measured 0.36 GB: imports, Ray Data's worker, a chunk's scoring; the
model's arrays are read in place from the object store; 0.29-0.31 GB alone for chunks of
500 to 4,000 rows, so it hardly depends on the chunk), rounded up."""
ONE_ROW_BLOCKS = 1
"""``DataContext.target_max_block_size`` of the scoring dataset, in bytes: smaller than any
row, so that every block holds exactly one row (one chunk)."""
SEGMENT_CHUNKS = 2500
"""Chunks scored by one Ray Data dataset (5,000,000 rows at the default 2,000 rows a chunk);
a longer file is scored by a sequence of them.
Ray Data keeps statistics for every block of a dataset as long as the dataset lives and
ships them, growing, to its ``_StatsActor`` (ray-project/ray#66016, #43924): with one block
per chunk and one dataset for the whole file, that actor kept growing with the file
(measured, 3,000,000 rows: 5.6 MB per million rows past the first million with one
dataset, 1.5 with datasets of 500 chunks, flat past the first; benchmarks/RESULTS.md).
Why 2,500 and not the measured 500: a dataset's read task re-reads the file up to its first
chunk (about 3 s per million rows), so the k-th dataset re-reads k segments and the cost grows
with the square of the file's length. 2,500 chunks keep files of up to 5,000,000 rows in one
dataset (as measured up to 3,000,000), bound the statistics' growth to one segment's (~25 MB
at the slope above; inferred, not measured at this size), and cost one re-read of 5,000,000
rows (~15 s) at 10,000,000 rows instead of 45,000,000 (~2-3 min). Not smaller than a few
hundred: each dataset has a cost of its own in that actor (datasets of 100 chunks made it
grow faster, 21 MB per million rows against 12-19) and starts its actors again (seconds)."""
SYSTEM_CONFIG = {"enable_worker_prestart": False}
"""A local cluster starts no idle workers ahead of time (see the module docstring)."""


class ChunkScorer:
    """A Ray Data actor: loads the bundle once, scores each chunk with :func:`score_chunk`."""

    def __init__(self, bundle_ref: list, horizons: list[float]) -> None:
        import ray

        from serving.loading import limit_numeric_threads

        # one actor per CPU already: BLAS threads inside it would only spin against the
        # other actors (same bits with one thread, see limit_numeric_threads)
        limit_numeric_threads()
        self.bundle = ray.get(bundle_ref[0])
        gc.freeze()  # as the local command: keep the bundle out of the collector's scans
        self.horizons = horizons

    def __call__(self, batch):
        """One row in (a chunk, or the malformed lines), one row out: the chunk's
        :func:`score_chunk` lines and their data-row numbers, pickled."""
        ((kind, data, rows),) = unpack(batch)  # one row per batch (see ray_results)
        if kind == CHUNK:
            out = score_chunk(self.bundle, data, self.horizons)
        else:
            out = rejected_lines(data, self.horizons)
        return pack(kind, out, rows)


def init_ray(address: str, num_cpus: int | None = None,
             object_store_bytes: int | None = DEFAULT_OBJECT_STORE_BYTES) -> bool:
    """Connect to ``address`` or, for ``local``, start a cluster here; True if we started it.

    A local cluster gets ``num_cpus`` (default: the machine's), an object store capped at
    ``object_store_bytes`` and no prestarted workers (see the module docstring). Ray >= 2.59
    enables token authentication for local clusters; ``RAY_AUTH_MODE`` and
    ``RAY_AUTH_TOKEN_PATH`` in the environment are honoured as usual.
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
        kwargs |= {"num_cpus": num_cpus or os.cpu_count() or 1, "include_dashboard": False,
                   "_system_config": dict(SYSTEM_CONFIG)}
        if object_store_bytes:
            kwargs["object_store_memory"] = object_store_bytes
    else:
        kwargs["address"] = address
    ray.init(**kwargs)
    return True


def actor_count(workers: int | None = None,
                memory_budget: float = MEMORY_BUDGET_BYTES) -> int:
    """Scoring actors: ``workers`` if given, else as many as ``memory_budget`` leaves room
    for beside the fixed cost (:data:`FIXED_BYTES`, :data:`ACTOR_BYTES`), at least one and
    at most one per CPU of the cluster (more would add a process holding the model without
    more CPU to run it). Under the 2 GB target that is one actor: 1.35 GB are Ray's, Ray
    Data's, the reader's and the driver's before any actor scores."""
    import ray

    if workers:
        return workers
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(cpus, int((memory_budget - FIXED_BYTES) // ACTOR_BYTES)))


def release_memory() -> None:
    """Collect, then hand the freed heap back to the system (glibc keeps freed memory for
    reuse otherwise, so the driver's footprint would not fall when it drops the bundle)."""
    import contextlib
    import ctypes

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: merely reused later
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def scoring_dataset(path: Path, chunk_rows: int, first: int, stop: int, bundle_ref,
                    horizons: list[float], n_actors: int):
    """The dataset scoring chunks ``first`` to ``stop`` of ``path``: one read task, then
    ``n_actors`` :class:`ChunkScorer` actors fed one chunk at a time."""
    import ray
    from ray.data import ActorPoolStrategy

    return ray.data.read_datasource(
        chunk_source(path, chunk_rows, first, stop), num_cpus=0,
        override_num_blocks=1,  # one read task, its rows never split to reach 200 blocks
    ).map_batches(
        ChunkScorer,
        fn_constructor_args=([bundle_ref], horizons),
        batch_size=1,  # one chunk per call, as cut by the reader
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=n_actors, max_tasks_in_flight_per_actor=1),
        num_cpus=1,
    )


def ray_results(bundle: ModelBundle, horizons: Sequence[float], chunk_rows: int,
                workers: int | None = None,
                memory_budget: float = MEMORY_BUDGET_BYTES,
                segment_chunks: int | None = None) -> ResultsFn:
    """A ``results`` function for :func:`serving.batch.run_batch` that scores on Ray Data
    (Ray must be initialised: :func:`init_ray`) with :func:`actor_count` actors, one dataset
    per ``segment_chunks`` chunks (default :data:`SEGMENT_CHUNKS`). The bundle is put in
    the object store now: the caller may drop its own copy."""
    import ray

    segment_chunks = segment_chunks or SEGMENT_CHUNKS

    bundle_ref = ray.put(bundle)
    n_actors = actor_count(workers, memory_budget)

    def results(reader: ChunkReader) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.execution_options.resource_limits = (
            ctx.execution_options.resource_limits.copy(object_store_memory=DATA_STORE_BYTES))
        # one row (one chunk) per block: any block bigger than this is cut into blocks of
        # one row, and none is merged with the next (see serving.batch_ray_source)
        ctx.target_max_block_size = ONE_ROW_BLOCKS
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        first = 0
        while True:  # one dataset per segment_chunks chunks, until one ends the file
            ds = scoring_dataset(reader.path, chunk_rows, first, first + segment_chunks,
                                 bundle_ref, list(horizons), n_actors)
            n_chunks, ended = 0, False
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for kind, result, rows in unpack(block):
                    n_chunks += kind == CHUNK
                    ended |= kind == MALFORMED
                    yield result, rows
            del ds  # its statistics (one record per block) go with it
            if ended or n_chunks < segment_chunks:
                break
            first += segment_chunks
        reader.malformed.clear()  # they came through the last block

    return results
