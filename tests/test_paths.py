"""Where state lives: REIRRAD_HOME, else the checkout, never the working directory."""

from pathlib import Path

from features import paths
from models.store import resolve_tracking_uri


def test_home_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("REIRRAD_HOME", str(tmp_path / "home"))
    assert paths.reirrad_home() == (tmp_path / "home").resolve()
    assert paths.var_dir() == (tmp_path / "home" / "var").resolve()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{(tmp_path / 'home' / 'mlflow' / 'mlflow.db')}"


def test_home_is_the_checkout_not_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("REIRRAD_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[1]
    assert paths.checkout_root() == root
    assert paths.reirrad_home() == root


def test_installed_code_uses_the_user_data_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("REIRRAD_HOME", raising=False)
    monkeypatch.setattr(paths, "checkout_root", lambda: None)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert paths.reirrad_home() == (tmp_path / "data" / "reirrad").resolve()
