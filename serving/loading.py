"""Find and describe the model to serve: a bundle file if configured, else the champion.

Loaded once at service start-up; every response names the model (name, version, alias and the
bundle's SHA-256 prefix) so that any risk can be traced to the exact file that produced it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features.config import ENDPOINTS, HORIZONS_MONTHS
from models.bundle import ModelBundle, sha256_file
from serving.schemas import ModelInfoResponse, ModelRef
from serving.settings import ServingSettings

SHA_PREFIX_LEN = 12
"""Characters of the bundle's SHA-256 shown in responses (48 bits: collisions are no concern)."""

FILE_MODEL_NAME = "bundle-file"
DATA_HASH_KEYS = ("training_data_sha256", "data_sha256")
REGISTRY_INFO_KEYS = ("version", "alias", "run_id", "git_commit", "data_sha256", "data_rows")
"""What ``/model_info`` passes on from the registry's description of the model version."""


@dataclass(frozen=True)
class LoadedModel:
    """A bundle plus what identifies it."""

    bundle: ModelBundle
    name: str
    version: str | None
    alias: str | None
    sha256: str
    source: str  # "file" or "registry"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256_prefix(self) -> str:
        return self.sha256[:SHA_PREFIX_LEN]


SERVING_BLAS_THREADS = 1


def limit_numeric_threads(threads: int = SERVING_BLAS_THREADS) -> None:
    """Let BLAS and OpenMP use ``threads`` threads in this process (a serving worker).

    Why: a served call multiplies a few small matrices (the interval models' neighbour
    distances). With OpenBLAS's default of one thread per core, on a machine whose cores are
    busy (other workers, the load generator), its threads spin waiting for each other: the
    100 x 21 by 21 x 472 product of a batch took 46 ms instead of 0.04 ms. One thread gives
    the same bits (each output element is summed by one thread either way); a worker gets its
    parallelism from serving requests side by side, not from inside one product.
    """
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    threadpool_limits(limits=threads)


def load_bundle_file(path: str | Path, expected_sha256: str | None = None) -> LoadedModel:
    """Load a bundle file (checked against ``expected_sha256`` when given)."""
    p = Path(path)
    bundle = ModelBundle.load(p, expected_sha256=expected_sha256)
    digest = expected_sha256 or sha256_file(p)
    version = bundle.provenance.get("model_version")
    return LoadedModel(
        bundle=bundle,
        name=str(bundle.provenance.get("model_name", FILE_MODEL_NAME)),
        version=None if version is None else str(version),
        alias=None,
        sha256=digest,
        source="file",
        info={"path": str(p)},
    )


def _first(info: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if info.get(key) is not None:
            return info[key]
    return None


def load_registered(
    tracking_uri: str | None, model_name: str, alias: str
) -> LoadedModel:
    """Load the model the registry's alias points to (``models.store.load_champion``)."""
    # Imported here: the registry needs MLflow, which a bundle-file deployment does not.
    from models.store import load_champion

    bundle, info = load_champion(tracking_uri=tracking_uri, model_name=model_name, alias=alias)
    info = dict(info or {})
    digest = _first(info, "bundle_sha256", "sha256")
    version = _first(info, "version", "model_version")
    return LoadedModel(
        bundle=bundle,
        name=str(_first(info, "name", "model_name") or model_name),
        version=None if version is None else str(version),
        alias=str(_first(info, "alias") or alias),
        sha256=str(digest) if digest else "unknown",
        source="registry",
        info=info,
    )


def load_model(settings: ServingSettings) -> LoadedModel:
    """The bundle file of the settings if any, else the registered model."""
    if settings.bundle_path is not None:
        return load_bundle_file(settings.bundle_path, settings.bundle_sha256)
    return load_registered(settings.tracking_uri, settings.model_name, settings.model_alias)


def verify_model(settings: ServingSettings) -> str:
    """Check the model the settings name before any worker starts; return what it is.

    Workers that fail to load a model are respawned by BentoML for ever, each with a
    traceback, and never become ready; ``reirrad serve`` calls this first so that a missing,
    damaged or replaced model stops the start with one message. A registered model, or a
    bundle file with an expected SHA-256, is checked by its hash (the file is read, never
    unpickled); a bundle file without one has nothing to be compared with and is loaded whole.

    Raises :class:`models.store.ModelNotFoundError` (no version has the alias),
    :class:`models.bundle.BundleIntegrityError` (hash differs, or not a readable bundle) or
    :class:`FileNotFoundError`.
    """
    from models.bundle import check_sha256

    if settings.bundle_path is not None:
        path = Path(settings.bundle_path)
        if not path.is_file():
            raise FileNotFoundError(f"no bundle file at {path}")
        if settings.bundle_sha256:
            check_sha256(path, settings.bundle_sha256)
        else:
            ModelBundle.load(path)
        return str(path)
    # Imported here: the registry needs MLflow, which a bundle-file deployment does not.
    from models.store import verify_champion

    version = verify_champion(settings.tracking_uri, settings.model_name, settings.model_alias)
    return f"{settings.model_name} v{version} (@{settings.model_alias})"


def report_info(model: LoadedModel) -> dict[str, Any]:
    """What the clinician report states about the model (as ``reirrad report`` passes it)."""
    info = dict(model.info)
    info.setdefault("sha256", model.sha256)
    info.setdefault("model_name", model.name)
    if model.version is not None:
        info.setdefault("version", model.version)
    if model.alias is not None:
        info.setdefault("alias", model.alias)
    return info


def model_ref(model: LoadedModel) -> ModelRef:
    """The short identification every response carries."""
    return ModelRef(
        name=model.name,
        version=model.version,
        alias=model.alias,
        bundle_sha256_prefix=model.sha256_prefix,
        source=model.source,
    )


def _jsonable(obj: Any) -> Any:
    """Bundle metadata as plain JSON values (numpy scalars and arrays included)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    return json.loads(json.dumps(obj, default=default))


def describe_model(model: LoadedModel, settings: ServingSettings) -> ModelInfoResponse:
    """What ``/model_info`` returns: identity, hashes, grid, metrics, limits."""
    b = model.bundle
    prov = _jsonable(b.provenance)
    info = _jsonable({k: model.info[k] for k in REGISTRY_INFO_KEYS if k in model.info})
    data_hash = next(
        (src[k] for src in (prov, info) for k in DATA_HASH_KEYS if src.get(k)),
        None,
    )
    n_rows = b.training_summary.get("n_rows")
    return ModelInfoResponse(
        model=model_ref(model),
        bundle_sha256=model.sha256,
        training_data_sha256=data_hash,
        n_training_rows=None if n_rows is None else int(n_rows),
        grid_max_months=float(b.grid.max_months),
        grid_step_months=float(b.grid.step_months),
        standard_horizons_months=[float(h) for h in HORIZONS_MONTHS],
        endpoints=list(ENDPOINTS),
        feature_columns=list(b.feature_columns),
        metrics=_jsonable(b.metrics),
        validation=_jsonable(getattr(b, "validation", None)),
        provenance=prov,
        registry=info,
        max_batch=settings.max_batch,
        max_plans=settings.max_plans,
    )
