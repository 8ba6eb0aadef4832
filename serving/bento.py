"""The deployable Bento: the champion as a BentoML model, the service and its code in one unit.

``reirrad bento build`` (:mod:`serving.bento_cli`) stores the model bundle in BentoML's model
store as the model ``reirrad-champion`` with its SHA-256 and the registry's record in the
metadata, then builds ``bentofile.yaml`` into a Bento that names that model. A hospital turns
the Bento into a container image with ``bentoml containerize`` (docs/deploy.md).

The same :class:`serving.service.RiskService` serves both ways. Served from a Bento, BentoML
sets the service's ``bento`` (:func:`bento_model_tag` finds our model in it) and the worker
loads the bundle from the model store, refusing it when the file's SHA-256 differs from the
one recorded when it was stored (:func:`load_bento_model`); served from source
(``reirrad serve``), there is no Bento and the bundle file or the registry's champion is
loaded as before (:func:`serving.loading.load_model`).

BentoML is imported inside the functions: the command line's ``--help`` stays fast.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from models.bundle import BundleIntegrityError, ModelBundle, sha256_file
from serving.loading import LoadedModel

if TYPE_CHECKING:
    from serving.settings import ServingSettings

BENTO_MODEL_NAME: Final[str] = "reirrad-champion"
"""The BentoML model's name; ``bentofile.yaml`` packs ``reirrad-champion:latest``."""
BUNDLE_FILENAME: Final[str] = "model_bundle.joblib"
SOURCE_BENTO: Final[str] = "bento"
META_SHA256: Final[str] = "bundle_sha256"
META_MODEL_NAME: Final[str] = "model_name"
META_VERSION: Final[str] = "model_version"
META_ALIAS: Final[str] = "alias"
META_ORIGIN: Final[str] = "origin"
REGISTRY_META_KEYS: Final[tuple[str, ...]] = (
    "run_id", "git_commit", "data_sha256", "data_rows",
)
"""What the registry knows about the model version, carried into the model's metadata (and
from there into ``/model_info`` and the report, as ``reirrad serve`` shows them)."""


class BentoError(RuntimeError):
    """A Bento cannot be built, or served, as asked; the message says why."""


@dataclass(frozen=True)
class ModelIdentity:
    """Who the bundle is: the registry's name, version and alias, or a bundle file's own."""

    name: str
    version: str | None
    alias: str | None
    origin: str  # "registry" or "file"
    registry: dict[str, Any]

    def metadata(self, sha256: str) -> dict[str, Any]:
        """The BentoML model's metadata (primitive values only, as BentoML requires)."""
        meta: dict[str, Any] = {
            META_SHA256: sha256,
            META_MODEL_NAME: self.name,
            META_VERSION: self.version,
            META_ALIAS: self.alias,
            META_ORIGIN: self.origin,
            **{k: self.registry.get(k) for k in REGISTRY_META_KEYS},
        }
        return {
            k: v if isinstance(v, str | int | float | bool) else str(v)
            for k, v in meta.items()
            if v is not None
        }

    def labels(self) -> dict[str, str]:
        """Labels for ``bentoml models list``: which model, which version."""
        return {"project": "reirrad", "model": self.name, "version": self.version or "none"}


def file_identity(bundle: ModelBundle, path: Path) -> ModelIdentity:
    """A bundle file's identity, read from its provenance as ``reirrad serve --bundle`` does."""
    from serving.loading import FILE_MODEL_NAME

    version = bundle.provenance.get("model_version")
    return ModelIdentity(
        name=str(bundle.provenance.get("model_name", FILE_MODEL_NAME)),
        version=None if version is None else str(version),
        alias=None,
        origin="file",
        registry={"path": str(path)},
    )


def registry_identity(info: dict[str, Any]) -> ModelIdentity:
    """The registered champion's identity (``models.store.fetch_champion``'s info)."""
    return ModelIdentity(
        name=str(info["model_name"]),
        version=str(info["version"]),
        alias=info.get("alias"),
        origin="registry",
        registry=info,
    )


def store_bundle(path: Path, sha256: str, identity: ModelIdentity, model_store: Any = None):
    """Copy a checked bundle file into BentoML's model store as ``reirrad-champion:<new>``.

    The copy is hashed again and compared with ``sha256`` (the registry's record, or the
    file's own), so that the model store never holds a file other than the one checked.
    Returns the model as stored (``.tag`` names it). ``model_store``: BentoML's default store
    (``$BENTOML_HOME/models``) unless given.
    """
    import bentoml

    kwargs = {} if model_store is None else {"_model_store": model_store}
    with bentoml.models.create(
        BENTO_MODEL_NAME, labels=identity.labels(), metadata=identity.metadata(sha256), **kwargs
    ) as model:
        target = Path(model.path_of(BUNDLE_FILENAME))
        shutil.copyfile(path, target)
        copied = sha256_file(target)
        if copied != sha256:
            raise BundleIntegrityError(
                f"{path}: the copy in the model store has SHA-256 {copied[:12]}..., "
                f"not {sha256[:12]}...; nothing stored"
            )
    return bentoml.models.get(model.tag, **kwargs)  # the store's copy, not the staging one


def build_bento(bentofile: Path, model_tag: str, labels: dict[str, str]):
    """Build ``bentofile`` (its folder is the build context) into a Bento in the Bento store.

    The bentofile packs ``reirrad-champion:latest``; the Bento must hold exactly the model
    just stored (``model_tag``), or it is deleted and the build refused (another model was
    stored in between). Nothing is downloaded: ``lock_packages: false`` in the bentofile
    keeps BentoML from resolving the requirements against an index.
    """
    import bentoml

    bento = bentoml.bentos.build_bentofile(
        str(bentofile), build_ctx=str(bentofile.parent), labels=labels
    )
    packed = [str(m.tag) for m in bento.info.all_models if m.tag.name == BENTO_MODEL_NAME]
    if packed != [model_tag]:
        bentoml.bentos.delete(bento.tag)
        raise BentoError(
            f"the Bento would pack {packed or 'no reirrad model'} instead of {model_tag}: "
            f"another model was stored meanwhile, or {bentofile.name} names another model; "
            "nothing built"
        )
    return bento


def bento_model_tag(bento: Any) -> str | None:
    """The tag of our model inside a Bento being served, or None when not served from one."""
    if bento is None:
        return None
    tags = [str(m.tag) for m in bento.info.all_models if m.tag.name == BENTO_MODEL_NAME]
    if len(tags) > 1:
        raise BentoError(f"the Bento {bento.tag} holds several reirrad models: {tags}")
    return tags[0] if tags else None


def load_bento_model(
    tag: str, settings: ServingSettings | None = None, model_store: Any = None
) -> LoadedModel:
    """Load the bundle of the BentoML model ``tag``, checked against its recorded SHA-256.

    A mismatch (the file changed after it was stored, or metadata without a hash) raises
    :class:`BundleIntegrityError`, so a worker refuses to start rather than serve an
    unverified model. A bundle file in the settings would be a second answer to "which
    model", so it is refused too: a Bento serves the model it was built with.
    """
    import bentoml

    if settings is not None and settings.bundle_path is not None:
        raise BentoError(
            "REIRRAD_BUNDLE_PATH is set, but a Bento serves the model it was built with "
            f"({tag}); unset it, or build a new Bento with `reirrad bento build --bundle FILE`"
        )
    kwargs = {} if model_store is None else {"_model_store": model_store}
    stored = bentoml.models.get(tag, **kwargs)
    meta = dict(stored.info.metadata)
    expected = meta.get(META_SHA256)
    path = Path(stored.path_of(BUNDLE_FILENAME))
    if not expected:
        raise BundleIntegrityError(f"BentoML model {tag}: no SHA-256 recorded; rebuild the Bento")
    bundle = ModelBundle.load(path, expected_sha256=expected)
    version = meta.get(META_VERSION)
    info: dict[str, Any] = {"bento_model": str(stored.tag)}
    if meta.get(META_ORIGIN) == "registry":  # what `reirrad serve` shows of a registered model
        info |= {k: meta[k] for k in REGISTRY_META_KEYS if k in meta}
        info |= {"model_name": meta.get(META_MODEL_NAME), "alias": meta.get(META_ALIAS),
                 "version": int(version) if str(version).isdigit() else version,  # as MLflow's
                 "sha256": expected}
    return LoadedModel(
        bundle=bundle,
        name=str(meta.get(META_MODEL_NAME, BENTO_MODEL_NAME)),
        version=None if version is None else str(version),
        alias=meta.get(META_ALIAS),
        sha256=expected,
        source=SOURCE_BENTO,
        info=info,
    )
