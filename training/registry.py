"""Model registry: register a version, the champion/challenger gate, promotion and rollback.

Every trained model becomes a version of ``reirrad-toxicity`` with the alias ``challenger``.
The gate (rule in :class:`training.config.GateConfig`, fixed before training) decides whether
the alias ``champion`` moves to it. Old versions are never deleted, so ``reirrad promote
--version V`` rolls back to any of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlflow import MlflowClient
from models.store import CHALLENGER_ALIAS, CHAMPION_ALIAS
from training.config import GateConfig

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


@dataclass
class GateDecision:
    """The gate's verdict with every check, so the reason can be printed and logged."""

    passed: bool
    first_model: bool
    champion_version: int | None
    checks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [c["text"] for c in self.checks if not c["ok"]]

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        who = "first model" if self.first_model else f"against champion v{self.champion_version}"
        lines = [f"gate {verdict} ({who})"]
        lines += [("  ok    " if c["ok"] else "  FAIL  ") + c["text"] for c in self.checks]
        lines += [f"  note  {n}" for n in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "first_model": self.first_model,
            "champion_version": self.champion_version,
            "checks": self.checks,
            "notes": self.notes,
        }


def _check(checks: list, name: str, value: float, limit: float, ok: bool, text: str) -> None:
    checks.append({"name": name, "value": value, "limit": limit, "ok": bool(ok), "text": text})


def decide(
    rule: GateConfig,
    corrected: dict[str, dict[str, float]],
    challenger_holdout: dict[str, float],
    champion_holdout: dict[str, float] | None,
    champion_version: int | None = None,
) -> GateDecision:
    """Apply the rule.

    ``corrected[endpoint]`` holds the challenger's optimism-corrected ``auc`` and ``ici`` at
    the gate horizon; the hold-out dicts hold ``<endpoint>/auc`` and ``<endpoint>/brier``.
    ``champion_holdout`` None means there is no champion (first model: absolute limits only).
    """
    h = rule.horizon_months
    decision = GateDecision(True, champion_holdout is None, champion_version)
    checks = decision.checks
    for e in rule.endpoints:
        auc, ici = corrected[e]["auc"], corrected[e]["ici"]
        _check(
            checks,
            f"{e}/corrected_auc",
            auc,
            rule.min_auc,
            math.isfinite(auc) and auc >= rule.min_auc,
            f"{e}: optimism-corrected AUC({h}m) {auc:.3f} >= {rule.min_auc:.3f}",
        )
        _check(
            checks,
            f"{e}/corrected_ici",
            ici,
            rule.max_ici,
            math.isfinite(ici) and ici <= rule.max_ici,
            f"{e}: optimism-corrected ICI({h}m) {ici:.4f} <= {rule.max_ici:.4f}",
        )
        if champion_holdout is None:
            continue
        for metric, tol, better in (
            ("auc", rule.auc_tolerance, "higher"),
            ("brier", rule.brier_tolerance, "lower"),
        ):
            new, old = (
                challenger_holdout.get(f"{e}/{metric}"),
                champion_holdout.get(f"{e}/{metric}"),
            )
            if new is None or old is None or not (math.isfinite(new) and math.isfinite(old)):
                text = f"{e}: hold-out {metric.upper()}({h}m) cannot be computed (no events?)"
                if rule.require_holdout_metrics:
                    _check(checks, f"{e}/holdout_{metric}", float("nan"), tol, False, text)
                else:
                    decision.notes.append(text + "; not compared")
                continue
            if better == "higher":
                limit = old - tol
                ok = new >= limit
                text = f"{e}: hold-out AUC({h}m) {new:.3f} >= champion {old:.3f} - {tol:.3f}"
            else:
                limit = old + tol
                ok = new <= limit
                text = f"{e}: hold-out Brier({h}m) {new:.4f} <= champion {old:.4f} + {tol:.4f}"
            _check(checks, f"{e}/holdout_{metric}", new, limit, ok, text)
    decision.passed = all(c["ok"] for c in checks)
    return decision
