"""Where the tuning and bootstrap tasks run: local processes or a Ray cluster, one interface.

A task is a top-level function plus its arguments; ``shared`` data (the cohort) is sent once.
Results come back in task order and every task carries its own seed, so the numbers do not
depend on the engine, the number of workers or the order in which tasks finish.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

REPO_PACKAGES = ("features", "models", "training")
"""Our packages, shipped to Ray workers as ``py_modules`` so a remote cluster can import them."""

LOCAL_RAY_ADDRESSES = ("local",)
"""``--ray-address local`` starts a private in-process Ray instance instead of joining one."""


def task_seed(seed: int, *path: int) -> int:
    """A 32-bit seed for one task, from the run's seed and the task's position (engine-free)."""
    return int(np.random.SeedSequence([int(seed), *map(int, path)]).generate_state(1)[0])


class Engine(Protocol):
    """Runs ``fn(shared, *args)`` for each args tuple; returns results in task order."""

    name: str

    def map(
        self, fn: Callable[..., Any], shared: Any, tasks: Sequence[tuple], desc: str
    ) -> list[Any]: ...

    def close(self) -> None: ...


class LocalEngine:
    """Local worker processes (joblib's loky), or in-process when ``n_workers`` is 1."""

    name = "local"

    def __init__(self, n_workers: int = 1, progress: bool = True) -> None:
        self.n_workers = max(1, int(n_workers))
        self.progress = progress

    def map(self, fn, shared, tasks, desc):
        bar = tqdm(total=len(tasks), desc=desc, disable=not self.progress, leave=False)
        try:
            if self.n_workers == 1 or len(tasks) <= 1:
                out = []
                for args in tasks:
                    out.append(fn(shared, *args))
                    bar.update()
                return out
            from joblib import Parallel, delayed

            results = Parallel(n_jobs=self.n_workers, backend="loky", return_as="generator")(
                delayed(fn)(shared, *args) for args in tasks
            )
            out = []
            for r in results:  # the generator yields in task order
                out.append(r)
                bar.update()
            return out
        finally:
            bar.close()

    def close(self) -> None:
        return None


class RayEngine:
    """Tasks as Ray remote functions on the cluster at ``address`` (or ``auto``)."""

    name = "ray"

    def __init__(self, address: str, progress: bool = True) -> None:
        import ray

        self._ray = ray
        self.progress = progress
        root = Path(__file__).resolve().parents[1]
        runtime_env = {"py_modules": [str(root / p) for p in REPO_PACKAGES]}
        self._owns = not ray.is_initialized()
        if self._owns:
            kwargs: dict[str, Any] = {
                "runtime_env": runtime_env,
                "log_to_driver": False,
                "include_dashboard": False,
            }
            if address not in LOCAL_RAY_ADDRESSES:
                kwargs["address"] = address
                kwargs.pop("include_dashboard")
            else:
                kwargs["num_cpus"] = min(os.cpu_count() or 1, 2)
            ray.init(**kwargs)
        self.address = address

    def map(self, fn, shared, tasks, desc):
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        shared_ref = ray.put(shared)
        refs = [remote.remote(shared_ref, *args) for args in tasks]
        index = {r: i for i, r in enumerate(refs)}
        out: list[Any] = [None] * len(refs)
        pending = list(refs)
        with tqdm(
            total=len(refs), desc=f"{desc} [ray]", disable=not self.progress, leave=False
        ) as bar:
            try:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for r in done:
                        out[index[r]] = ray.get(r)
                        bar.update()
            except BaseException:
                for r in pending:
                    ray.cancel(r, force=True)
                raise
        return out

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def make_engine(ray_address: str | None, n_workers: int, progress: bool = True) -> Engine:
    """Ray when an address is given (``auto``, ``host:port``, ``ray://...`` or ``local``)."""
    if ray_address:
        return RayEngine(ray_address, progress=progress)
    return LocalEngine(n_workers, progress=progress)
