"""Where the served model comes from: a checked bundle file, or the registry's champion."""

from __future__ import annotations

import pytest

import models.store
from models.bundle import BundleIntegrityError
from serving.loading import describe_model, load_model, model_ref, verify_model
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


def test_damaged_bundle_files_are_refused_before_serving(tmp_path):
    """What `reirrad serve` checks before starting workers (tests/test_reliability.py runs
    the command itself): a changed byte by its hash, a cut file by failing to load as one."""
    path = tmp_path / "b.joblib"
    digest = small_bundle().save(path)
    assert verify_model(ServingSettings(bundle_path=path, bundle_sha256=digest)) == str(path)
    assert verify_model(ServingSettings(bundle_path=path)) == str(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    changed = tmp_path / "changed.joblib"
    changed.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=digest[:12]):
        verify_model(ServingSettings(bundle_path=changed, bundle_sha256=digest))
    cut = tmp_path / "cut.joblib"
    cut.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(BundleIntegrityError, match="not a readable model bundle"):
        verify_model(ServingSettings(bundle_path=cut))
    with pytest.raises(BundleIntegrityError, match="not a readable model bundle"):
        load_model(ServingSettings(bundle_path=cut))
    with pytest.raises(FileNotFoundError):
        verify_model(ServingSettings(bundle_path=tmp_path / "missing.joblib"))


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
