"""An installable package (issue 12 part 2).

Fast checks read the source: every third-party module the code imports is declared in
pyproject.toml, every data file next to the code is shipped as package data, the security
floors hold, and requirements.lock satisfies pyproject.toml. The slow test does what a new
user does: build the wheel, install it into a fresh virtual environment outside the source
tree, and from another folder run ``reirrad --help``, ``cohort synth``, ``train`` and
``score``, with ``REIRRAD_HOME`` set; the state must land there and nowhere else.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "models", "training", "serving")
ENTRY_MODULES = ("reirrad_cli.py",)
DEV_TREES = ("tests", "benchmarks")
FIRST_PARTY = {*PACKAGES, "reirrad_cli", "tests", "benchmarks"}
SOURCE_SUFFIXES = (".py", ".pyc")
COPY_IGNORE = (".git", ".venv", "mlflow", "var", "build", "dist", "*.egg-info", "__pycache__",
               ".pytest_cache", ".ruff_cache", "benchmarks", "docs")
# Known-vulnerable releases each floor must exclude: (package, newest vulnerable release).
SECURITY_FLOORS = {
    "bentoml": "1.4.38",  # CVE-2025-54381 (< 1.4.19) ... CVE-2026-44345 (< 1.4.39)
    "scikit-survival": "0.27.9",  # the forest relies on 0.28 (issue 12)
    "mlflow": "3.15.2",  # CVE-2026-71211 (<= 3.15.2) and older
    "ray": "2.53.0",  # CVE-2026-27482
    "jinja2": "3.1.5",  # CVE-2025-27516
    "pyarrow": "23.0.0",  # CVE-2026-25087
    "tqdm": "4.66.2",  # CVE-2024-34062
    "requests": "2.32.5",  # GHSA-gc5v-m9x4-r6x2 (fixed in 2.33.0)
    "pytest": "9.0.2",  # CVE-2025-71176
    "setuptools": "78.1.0",  # CVE-2025-47273 (build requirement)
}
UV_TIMEOUT_S = 600
COMMAND_TIMEOUT_S = 600
TRAIN_N = 120
SYNTH_N = 200
OFFLINE_FAILURE_MARKERS = ("network", "offline", "not found in the cache", "cached")
NETWORK_FAILURE_MARKERS = ("failed to fetch", "dns error", "error sending request",
                           "connection refused", "network is unreachable", "timed out",
                           "could not connect", "failed to download")


# ------------------------------------------------------------------------------ helpers
def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _declared(extra: str | None = None) -> dict[str, Requirement]:
    project = _pyproject()["project"]
    reqs = project["dependencies"] + (
        project["optional-dependencies"][extra] if extra is not None else []
    )
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in reqs}


def _imported_top_level(paths: list[Path]) -> dict[str, set[str]]:
    """Absolute imports' top-level names -> the files that import them (stdlib left out)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _python_files(*roots: str) -> list[Path]:
    files: list[Path] = []
    for name in roots:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
    return files


def _undeclared(imports: dict[str, set[str]], declared: set[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for module, files in sorted(imports.items()):
        dists = {canonicalize_name(d) for d in distributions.get(module, [])}
        if not dists:
            problems.append(f"{module} (imported by {sorted(files)[0]}) is not installed")
        elif not dists & declared:
            problems.append(f"{module} from {sorted(dists)} (imported by {sorted(files)[0]})")
    return problems


# ------------------------------------------------------------------- fast source checks
def test_every_imported_package_is_declared():
    runtime = _imported_top_level(_python_files(*PACKAGES, *ENTRY_MODULES))
    problems = _undeclared(runtime, set(_declared()))
    assert not problems, "imported but not in [project.dependencies]: " + "; ".join(problems)

    dev = _imported_top_level(_python_files(*DEV_TREES))
    problems = _undeclared(dev, set(_declared("dev")))
    assert not problems, "imported by tests/benchmarks, not declared: " + "; ".join(problems)


def test_every_data_file_beside_the_code_is_package_data():
    globs = _pyproject()["tool"]["setuptools"]["package-data"]
    missing = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if not path.is_file() or path.suffix in SOURCE_SUFFIXES or "__pycache__" in path.parts:
                continue
            relative = path.relative_to(ROOT / package).as_posix()
            if not any(fnmatch.fnmatch(relative, g) for g in globs.get(package, [])):
                missing.append(f"{package}/{relative}")
    assert not missing, f"not shipped in the wheel ([tool.setuptools.package-data]): {missing}"


def test_floors_exclude_known_vulnerable_releases():
    declared = _declared("dev")
    build = {canonicalize_name(Requirement(r).name): Requirement(r)
             for r in _pyproject()["build-system"]["requires"]}
    for package, vulnerable in SECURITY_FLOORS.items():
        req = declared.get(package) or build.get(package)
        assert req is not None, f"{package} is no longer declared"
        assert not req.specifier.contains(vulnerable, prereleases=True), (
            f"{req} admits {package} {vulnerable}, a known-vulnerable release"
        )


def test_lock_satisfies_pyproject():
    """requirements.lock is what `make lock` makes of pyproject.toml (run it after editing)."""
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            pins[canonicalize_name(name)] = Version(version)
    for name, req in _declared("dev").items():
        assert name in pins, f"{req} is declared but not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {req}: run `make lock`"
        )


# ------------------------------------------------------------- the installed wheel, e2e
class IndexUnreachable(Exception):
    """uv needed the package index and could not reach it."""


def _uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert found, "uv not found: `make install` puts it in .venv/bin"
    return found


def _uv_run(args: list[str], cwd: Path) -> None:
    """Run uv from its cache alone first (nothing downloads), then with the index if the
    cache lacks something; raise :class:`IndexUnreachable` when the index cannot be reached."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PYTHON"))}
    offline = subprocess.run([_uv(), *args, "--offline"], cwd=cwd, env=env, text=True,
                             capture_output=True, timeout=UV_TIMEOUT_S)
    if offline.returncode == 0:
        return
    online = subprocess.run([_uv(), *args], cwd=cwd, env=env, text=True,
                            capture_output=True, timeout=UV_TIMEOUT_S)
    if online.returncode == 0:
        return
    message = online.stderr.lower()
    if any(m in message for m in NETWORK_FAILURE_MARKERS):
        raise IndexUnreachable(online.stderr.strip().splitlines()[-1][:300])
    raise AssertionError(f"uv {' '.join(args[:2])} failed:\n{online.stderr[-3000:]}")


def _reirrad(venv: Path, args: list[str], cwd: Path, env: dict[str, str]):
    proc = subprocess.run([str(venv / "bin" / "reirrad"), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=COMMAND_TIMEOUT_S)
    assert proc.returncode == 0, (
        f"reirrad {' '.join(args)} exited {proc.returncode}\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def _tree(folder: Path, skip: tuple[str, ...] = ()) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if not any(part in skip for part in p.relative_to(folder).parts)
    }


@pytest.mark.slow
@pytest.mark.e2e
def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path):
    src, dist, venv = tmp_path / "src", tmp_path / "dist", tmp_path / "venv"
    work, home, state = tmp_path / "work", tmp_path / "home", tmp_path / "state"
    for folder in (work, home):
        folder.mkdir()
    # build from a copy, so that the build's own files (egg-info, build/) stay out of the
    # checkout; uv builds the sdist first and the wheel from it, so both are checked
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*COPY_IGNORE))
    checkout_before = _tree(ROOT, skip=(".git", ".venv", "__pycache__", ".pytest_cache"))
    try:
        _uv_run(["build", "--out-dir", str(dist), str(src)], cwd=tmp_path)
        _uv_run(["venv", "--python", sys.executable, str(venv)], cwd=tmp_path)
        (wheel,) = dist.glob("reirrad-*.whl")
        _uv_run(["pip", "install", "--python", str(venv / "bin" / "python"), str(wheel),
                 "--constraint", str(ROOT / "requirements.lock")], cwd=tmp_path)
    except IndexUnreachable as err:
        pytest.skip(f"package index unreachable and uv's cache lacks a needed wheel: {err}")

    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "REIRRAD_HOME": str(state),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import features.paths as p, training; print(training.__file__); "
         "print(p.checkout_root())"],
        cwd=work, env=env, text=True, capture_output=True, check=True,
    ).stdout.split("\n")
    assert where[0].startswith(str(venv)), f"reirrad imported from {where[0]}, not the venv"
    assert where[1] == "None"

    assert "train" in _reirrad(venv, ["--help"], work, env).stdout
    _reirrad(venv, ["cohort", "synth", "--n", str(SYNTH_N), "--seed", "7",
                    "--out", "cohort.csv"], work, env)
    _reirrad(venv, ["train", "--synthetic", str(TRAIN_N), "--config", "quick",
                    "--no-progress"], work, env)

    import mlflow

    uri = f"sqlite:///{state / 'mlflow' / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, uri)
    (version,) = client.search_model_versions("name='reirrad-toxicity'")
    if "champion" not in version.aliases:
        # 120 patients may miss the gate's absolute limits (a training matter); promotion
        # by hand is the documented way to serve such a model, and it is the path tested
        _reirrad(venv, ["promote", "--version", str(version.version)], work, env)
    _reirrad(venv, ["score", "cohort.csv", "scores.csv"], work, env)

    # the pyfunc was logged from code, from the file the wheel installed (no CloudPickle), and
    # the installed environment loads it with pickle deserialisation refused
    logged = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri(version.name, version.version),
        dst_path=str(tmp_path / "logged"),
    ))
    flavour = mlflow.models.Model.load(str(logged)).flavors["python_function"]
    assert flavour["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert flavour["model_code_path"].startswith(str(venv.resolve())), flavour["model_code_path"]
    assert "python_model" not in flavour and not list(logged.rglob("*.pkl*"))
    loaded = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sys, mlflow\n"
         "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
         "out = m.predict(m.metadata.load_input_example(sys.argv[1]))\n"
         "print(len(out), out.filter(regex=r'_\\d+m$').to_numpy().max())\n",
         str(logged)],
        cwd=work, env={**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"},
        text=True, capture_output=True, timeout=COMMAND_TIMEOUT_S,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    rows, top = loaded.stdout.split()
    assert int(rows) == 2 and 0 < float(top) <= 1

    cohort, scores = pd.read_csv(work / "cohort.csv"), pd.read_csv(work / "scores.csv")
    assert len(scores) == len(cohort) == SYNTH_N
    assert list(scores["patient_id"]) == list(cohort["patient_id"])
    risks = scores.filter(regex=r"_\d+m$")
    assert risks.shape[1] > 0 and risks.notna().all().all()
    assert ((risks >= 0) & (risks <= 1)).all().all()

    # state under REIRRAD_HOME; nothing in the working folder but what was asked for
    assert (state / "mlflow" / "mlflow.db").is_file()
    assert any((state / "mlflow" / "artifacts").rglob("model_bundle.joblib"))
    assert any((state / "var").iterdir()), "the audit trail is not under REIRRAD_HOME/var"
    leftovers = sorted(p.name for p in work.iterdir() if not p.name.startswith("scores"))
    assert leftovers == ["cohort.csv"], f"written into the working folder: {leftovers}"
    assert not (home / ".local" / "share" / "reirrad").exists()
    assert not [p for p in home.rglob("*") if p.name in ("mlflow.db", "mlruns", "audit.jsonl")]
    after = _tree(ROOT, skip=(".git", ".venv", "__pycache__", ".pytest_cache"))
    assert after == checkout_before, f"the source tree changed: {sorted(after ^ checkout_before)}"
