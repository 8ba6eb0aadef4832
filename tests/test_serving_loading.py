"""Where the served model comes from: a checked bundle file, or the registry's champion."""

from __future__ import annotations

import pytest

import models.store
from models.bundle import BundleIntegrityError
from serving.loading import describe_model, load_model, model_ref
from serving.settings import ServingSettings
from tests.bundle_factory import small_bundle


def test_bundle_file_is_checked_and_identified(tmp_path):
    path = tmp_path / "b.joblib"
    digest = small_bundle().save(path)
    model = load_model(ServingSettings(bundle_path=path, bundle_sha256=digest))
    assert model.source == "file" and model.sha256 == digest
    assert model_ref(model).bundle_sha256_prefix == digest[:12]
    assert model.version == small_bundle().provenance["model_version"]
    with pytest.raises(BundleIntegrityError):
        load_model(ServingSettings(bundle_path=path, bundle_sha256="f" * 64))


def test_registry_champion_is_used_without_a_bundle_path(monkeypatch):
    calls = {}

    def fake_load_champion(tracking_uri=None, model_name="x", alias="y"):
        calls.update(uri=tracking_uri, name=model_name, alias=alias)
        info = {"model_name": model_name, "alias": alias, "version": 7, "run_id": "r1",
                "sha256": "ab" * 32, "data_sha256": "cd" * 32, "data_rows": 900,
                "metrics": {"m": 1.0}, "tracking_uri": tracking_uri}
        return small_bundle(), info

    monkeypatch.setattr(models.store, "load_champion", fake_load_champion)
    settings = ServingSettings(tracking_uri="sqlite:///t.db", model_alias="champion")
    model = load_model(settings)
    assert calls == {"uri": "sqlite:///t.db", "name": "reirrad-toxicity", "alias": "champion"}
    assert (model.source, model.version, model.alias) == ("registry", "7", "champion")
    assert model.sha256_prefix == "ab" * 6
    info = describe_model(model, settings)
    assert info.registry["run_id"] == "r1" and info.registry["version"] == 7
    assert info.training_data_sha256 == small_bundle().provenance["training_data_sha256"]
    assert info.metrics == small_bundle().metrics
