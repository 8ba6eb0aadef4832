"""The training job's steps run in a fixed order and the registry is touched last.

The order test replaces every step by a recorder (no training, milliseconds); the fault test
trains a tiny model against a real MLflow store and makes each logging step fail in turn:
the run must end FAILED and the registry must be exactly as before.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from mlflow import MlflowClient
from training import train as train_module
from training.config import TrainConfig
from training.train import STEP_ORDER, train

MODEL = "reirrad-toxicity"
TINY = {
    "name": "tiny",
    "n_workers": 1,
    "fit_n_jobs": 1,
    "forest": {"n_estimators": 10, "grid": {"min_samples_leaf": [15]}},
    "tuning": {"cv_folds": 2, "n_estimators": 5},
    "evaluation": {"cv_folds": 2, "n_interval_bootstrap": 20},
    "baselines": {"models": ["published_rule"]},
    "gate": {"min_auc": 0.0, "max_ici": 1.0, "auc_margin": 1.0, "brier_margin": 1.0},
}
TINY_N = 120
LOGGING_STEPS = ("build_bundle_step", "log_evaluation", "decide_gate", "log_gate")


def test_steps_run_in_the_declared_order_with_registration_last(monkeypatch):
    calls: list[str] = []
    fake = SimpleNamespace(
        headline={},
        sha256="x",
        decision=SimpleNamespace(passed=True),
        champion_version=None,
    )

    def recorder(name):
        def step(*args, **kwargs):
            calls.append(name)
            return (1, 1) if name == "register_and_promote" else fake

        return step

    for name in STEP_ORDER:
        monkeypatch.setattr(train_module, name, recorder(name))

    @contextlib.contextmanager
    def lock(*args, **kwargs):
        calls.append("lock")
        yield SimpleNamespace(check=lambda: None)
        calls.append("unlock")

    monkeypatch.setattr(train_module, "_promotion_lock", lock)
    monkeypatch.setattr(
        train_module.mlflow,
        "active_run",
        lambda: SimpleNamespace(info=SimpleNamespace(experiment_id="0")),
    )
    data = SimpleNamespace(sha256="d")
    result = train_module._log_and_register(None, "uri", "run", None, data, None, "c", {}, print)
    # the champion is re-read, judged, registered and promoted inside the promotion lock
    assert calls.index("lock") < calls.index("decide_gate")
    assert calls.index("register_and_promote") < calls.index("unlock")
    assert tuple(c for c in calls if c not in ("lock", "unlock")) == STEP_ORDER
    assert STEP_ORDER[-1] == "register_and_promote"
    assert result.version == 1


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with one champion (v1), trained with the tiny config."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    first = train(
        synthetic_n=TINY_N,
        config=TrainConfig.model_validate(TINY),
        tracking_uri=uri,
        progress=False,
        echo=str,
    )
    assert first.version == 1 and first.gate.passed
    return uri


@pytest.mark.parametrize("failing", ["log_evaluation", "log_gate"])
def test_a_failing_logging_step_leaves_the_registry_unchanged(store, monkeypatch, failing):
    uri = store
    client = MlflowClient(uri, uri)
    cfg = TrainConfig.model_validate(TINY)
    before = [(v.version, dict(v.tags)) for v in client.search_model_versions(f"name='{MODEL}'")]
    aliases_before = client.get_registered_model(MODEL).aliases

    def boom(*args, **kwargs):
        raise RuntimeError(f"injected failure in {failing}")

    monkeypatch.setattr(train_module, failing, boom)
    with pytest.raises(RuntimeError, match="injected"):
        train(synthetic_n=TINY_N, config=cfg, tracking_uri=uri, progress=False, echo=str)
    after = [(v.version, dict(v.tags)) for v in client.search_model_versions(f"name='{MODEL}'")]
    assert after == before
    assert client.get_registered_model(MODEL).aliases == aliases_before
    exp = client.get_experiment_by_name(cfg.experiment_name)
    latest = max(client.search_runs([exp.experiment_id]), key=lambda r: r.info.start_time)
    assert latest.info.status == "FAILED"
    assert failing in LOGGING_STEPS
