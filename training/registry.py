"""Model registry: register a version, the champion/challenger gate, promotion and rollback.

Every trained model becomes a version of ``reirrad-toxicity`` with the alias ``challenger``.
The gate (:mod:`training.gate`, rule in :class:`training.config.GateConfig`, fixed before
training) decides whether the alias ``champion`` moves to it; the job moves it inside the
promotion lock (:mod:`training.locks`). Old versions are never deleted, so ``reirrad promote
--version V`` rolls back to any of them.
"""

from __future__ import annotations

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlflow import MlflowClient
from models.store import CHALLENGER_ALIAS, CHAMPION_ALIAS

PREVIOUS_CHAMPION_TAG = "previous_champion"
GATE_TAG = "gate"
LOGGED_MODEL_URI_PREFIX = "models:/m-"
"""MLflow 3's URI of a logged model (``models:/<model id>``), as ``log_model`` returns it."""


def _logged_model_id(model_uri: str) -> str | None:
    """The logged model's id in ``models:/m-...``; an MLflow server refuses such a version
    source unless the same id comes with it (a local store does not check)."""
    if model_uri.startswith(LOGGED_MODEL_URI_PREFIX) and "/" not in model_uri[len("models:/") :]:
        return model_uri[len("models:/") :]
    return None


def get_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version carrying ``alias``, or None (no model, or no such alias yet)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register(
    client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str]
) -> ModelVersion:
    """Create a version with its tags and the ``challenger`` alias, all or nothing."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="Risk of severe late toxicity after NPC re-irradiation."
        )
    mv = client.create_model_version(
        name, model_uri, run_id=run_id, tags=tags, model_id=_logged_model_id(model_uri)
    )
    try:
        client.set_registered_model_alias(name, CHALLENGER_ALIAS, mv.version)
    except BaseException:
        client.delete_model_version(name, mv.version)
        raise
    return mv


def discard(
    client: MlflowClient, name: str, version: int | str, restore_champion: int | None
) -> None:
    """Undo a registration that could not be completed (the run failed after it)."""
    client.delete_model_version(name, str(version))
    if restore_champion is not None:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, str(restore_champion))


def promote(client: MlflowClient, name: str, version: int | str) -> int | None:
    """Point ``champion`` at ``version``; returns the previous champion's version (or None).

    The previous champion stays registered (and is tagged on the model) for rollback.
    """
    mv = client.get_model_version(name, str(version))  # raises if it does not exist
    old = get_alias(client, name, CHAMPION_ALIAS)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, mv.version)
    if old is not None and old.version != mv.version:
        client.set_registered_model_tag(name, PREVIOUS_CHAMPION_TAG, str(old.version))
        return int(old.version)
    return None
