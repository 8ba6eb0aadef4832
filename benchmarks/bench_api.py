"""API speed, side by side with a trivial BentoML echo service in one run (issue 11 part 8).

Starts two servers on loopback, one worker each: the echo service (``benchmarks/
echo_service.py``, the floor: BentoML with no model) and the real API with the registered
champion (or ``--bundle``), its bearer token, its gate and its audit trail (SQLite in WAL mode,
a commit per call, as deployed). Then, alternating between the two for ``--rounds`` rounds so
that the machine's load drifts over both alike, it drives each with wrk:

* ``/score`` with one patient (intervals and the audit commit included) against the echo's
  ``/score`` with the same body: requests per second, target >= 50 % of the echo's;
* ``/score_batch`` with 100 patients: patients per second, target >= 2,000;
* ``/explain`` (one endpoint, four horizons), one connection: median latency, target <= 250 ms
  for the ensemble, 25 ms for a forest alone;

and checks that no request failed (non-2xx or socket errors) and that the audit trail holds a
verified record of every call. Finally it times ``reirrad --help`` (target < 1 s) beside the
bare ``import typer`` it cannot avoid.

Run (wrk from Debian: ``apt-get install -y wrk``)::

    nice -n 10 .venv/bin/python benchmarks/bench_api.py [--bundle FILE] [--duration 15]
    .venv/bin/python benchmarks/bench_api.py --bundle FILE --only explain   # /explain alone

Results: printed as a Markdown table, and written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from features.config import ENDPOINTS, HORIZONS_MONTHS  # noqa: E402
from serving.audit import AuditKey, AuditTrail  # noqa: E402
from serving.cli import serve_command  # noqa: E402

EXAMPLE = PROJECT_ROOT / "docs" / "example_patient.json"
BATCH_SIZE = 100
READY_TIMEOUT_S = 600.0
TARGET_SCORE_RATIO = 0.5
TARGET_BATCH_PATIENTS_PER_S = 2000.0
TARGET_EXPLAIN_MS_ENSEMBLE = 250.0
TARGET_EXPLAIN_MS_FOREST = 25.0
TARGET_HELP_S = 1.0
HELP_RUNS = 7
WORKLOADS = ("echo", "score", "batch", "explain")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_ready(proc: subprocess.Popen, base: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server not ready:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)


def lua_script(tmp: Path, name: str, body: dict, token: str | None) -> Path:
    body_file = tmp / f"{name}.json"
    body_file.write_text(json.dumps(body))
    lines = [
        'wrk.method = "POST"',
        f'local f = io.open("{body_file}", "rb"); wrk.body = f:read("*a"); f:close()',
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    if token:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    script = tmp / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def wrk(url: str, script: Path, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p50 = re.search(r"\s50%\s+(\S+)", out)
    p99 = re.search(r"\s99%\s+(\S+)", out)
    return {
        "rps": rps,
        "requests": total,
        "errors": (int(non2xx.group(1)) if non2xx else 0)
        + (sum(int(g) for g in sock.groups()) if sock else 0),
        "p50_ms": _ms(p50.group(1)) if p50 else float("nan"),
        "p99_ms": _ms(p99.group(1)) if p99 else float("nan"),
    }


def time_command(cmd: list[str], runs: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds) of ``runs`` runs of ``cmd``."""
    walls, cpus = [], []
    for _ in range(runs):
        before = os.times()
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        walls.append(time.perf_counter() - t0)
        after = os.times()
        cpus.append((after.children_user - before.children_user)
                    + (after.children_system - before.children_system))
    return statistics.median(walls), statistics.median(cpus)


def stage_times(bundle_path: Path | None, tmp: Path, patient: dict, n: int = 20) -> dict:
    """Median milliseconds of each step of one ``/score`` call, in process: where time goes."""
    from models.explain import BundleExplainer
    from serving.audit import AuditRecord
    from serving.explaining import explain_patient
    from serving.loading import limit_numeric_threads, load_model
    from serving.schemas import ScoreRequest, ScoreResponse
    from serving.scoring import score_patient
    from serving.settings import ServingSettings

    limit_numeric_threads()  # as a serving worker does
    model = load_model(ServingSettings(bundle_path=bundle_path))
    b = model.bundle
    body = json.dumps({"patient": patient}).encode()
    req = ScoreRequest.model_validate_json(body)
    X = b.features_from_inputs([req.patient])
    h = list(HORIZONS_MONTHS)
    cif = b.predict_cif_features(X)  # as /score does: the whole grid, bounds built on it
    trail = AuditTrail(str(tmp / "stages.db"), AuditKey(b"stage-timing-key-0123456789"))
    explainer = BundleExplainer(b)
    result = score_patient(b, req.patient)
    steps = {
        "parse and validate (strict)": lambda: ScoreRequest.model_validate_json(body),
        "features": lambda: b.features_from_inputs([req.patient]),
        "predict (model, whole grid)": lambda: b.predict_cif_features(X),
        "intervals (model, whole grid)": lambda: b.risk_intervals(X, None, cif=cif),
        "applicability warnings": lambda: b.applicability_warnings(X),
        "audit commit": lambda: trail.append(AuditRecord("r", "/score", 200, "tok")),
        "response JSON": lambda: ScoreResponse(request_id="r", model=model_ref_of(model),
                                               result=result).model_dump_json(),
        "whole /score in process": lambda: score_patient(b, req.patient),
        "explain, 1 endpoint x 4 horizons": lambda: explain_patient(
            b, explainer, req.patient, ENDPOINTS[0], h),
    }
    out = {}
    for name, fn in steps.items():
        fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        out[name] = statistics.median(times)
    return out


def model_ref_of(model):
    from serving.loading import model_ref

    return model_ref(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, help="Bundle file (default: the registered champion).")
    ap.add_argument("--duration", type=int, default=15, help="Seconds per wrk run.")
    ap.add_argument("--rounds", type=int, default=2, help="Alternating rounds per comparison.")
    ap.add_argument("--connections", type=int, default=4, help="wrk connections (throughput).")
    ap.add_argument("--only", default=",".join(WORKLOADS),
                    help="Workloads to run, e.g. 'explain' alone: a latency not disturbed by the "
                         "batches still being served after their wrk run timed out.")
    ap.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" /
                    "api.json")
    args = ap.parse_args()
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(only) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"--only: unknown workload(s) {unknown}; choose from {WORKLOADS}")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")

    tmp = Path(tempfile.mkdtemp(prefix="reirrad-bench-api-"))
    token, audit_key = secrets.token_urlsafe(32), secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REIRRAD_")}
    env.update(BENTOML_DO_NOT_TRACK="True", BENTOML_HOME=str(tmp / "bentoml"),
               PYTHONPATH=str(PROJECT_ROOT))
    api_env = env | {
        "REIRRAD_API_TOKENS": token,
        "REIRRAD_AUDIT_DB": str(tmp / "audit.db"),
        "REIRRAD_AUDIT_KEY": audit_key,
        "REIRRAD_MAX_BATCH": str(BATCH_SIZE),
    }
    if args.bundle:
        api_env["REIRRAD_BUNDLE_PATH"] = str(args.bundle.resolve())
    echo_port, api_port = free_port(), free_port()
    echo = start([sys.executable, "-m", "bentoml", "serve", "benchmarks.echo_service:Echo",
                  "--host", "127.0.0.1", "--port", str(echo_port),
                  "--working-dir", str(PROJECT_ROOT)], env, tmp / "echo.log")
    api = start(serve_command("127.0.0.1", api_port), api_env, tmp / "api.log")
    echo_url, api_url = f"http://127.0.0.1:{echo_port}", f"http://127.0.0.1:{api_port}"
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    try:
        wait_ready(echo, echo_url, tmp / "echo.log")
        wait_ready(api, api_url, tmp / "api.log")
        info = httpx.post(f"{api_url}/model_info", json={}, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}).json()
        patient = json.loads(EXAMPLE.read_text())
        batch = [patient | {"patient_id": f"B{i:03d}", "gtv_cm3": 5.0 + i,
                            "reirr_dose_gy": 50 + (i % 30)} for i in range(BATCH_SIZE)]
        scripts = {
            "echo": lua_script(tmp, "echo", {"patient": patient}, None),
            "score": lua_script(tmp, "score", {"patient": patient}, token),
            "batch": lua_script(tmp, "batch", {"patients": batch}, token),
            "explain": lua_script(tmp, "explain", {"patient": patient, "endpoint": ENDPOINTS[0],
                                                   "horizons": list(HORIZONS_MONTHS)}, token),
        }
        runs: dict[str, list[dict]] = {k: [] for k in scripts}
        for _ in range(args.rounds):
            for name, url, conns in (
                ("echo", f"{echo_url}/score", args.connections),
                ("score", f"{api_url}/score", args.connections),
                ("batch", f"{api_url}/score_batch", 2),
                ("explain", f"{api_url}/explain", 1),
            ):
                if name not in only:
                    continue
                runs[name].append(wrk(url, scripts[name], args.duration, conns))
                print(f"{name}: {runs[name][-1]}", flush=True)
        trail = AuditTrail(str(tmp / "audit.db"), AuditKey(audit_key.encode()))
        check = trail.verify()
        api_requests = sum(r["requests"] for k in ("score", "batch", "explain") for r in runs[k])
    finally:
        stop(api)
        stop(echo)
    stages = stage_times(args.bundle, tmp, json.loads(EXAMPLE.read_text()))
    help_wall, help_cpu = time_command([str(Path(sys.executable).parent / "reirrad"), "--help"],
                                       HELP_RUNS)
    typer_wall, typer_cpu = time_command([sys.executable, "-c", "import typer"], HELP_RUNS)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name]) if runs[name] else float("nan")

    echo_rps, score_rps = med("echo", "rps"), med("score", "rps")
    result = {
        "started": started,
        "git_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT,
                                     capture_output=True, text=True).stdout.strip(),
        "machine": {"cpus": os.cpu_count(), "load_before": load_before,
                    "load_after": os.getloadavg()},
        "model": info.get("model"),
        "settings": {"duration_s": args.duration, "rounds": args.rounds, "only": only,
                     "connections": args.connections, "batch_size": BATCH_SIZE},
        "runs": runs,
        "echo_rps": echo_rps,
        "score_rps": score_rps,
        "score_ratio": score_rps / echo_rps,
        "batch_patients_per_s": med("batch", "rps") * BATCH_SIZE,
        "explain_p50_ms": med("explain", "p50_ms"),
        "errors": sum(r["errors"] for rs in runs.values() for r in rs),
        "audit": {"ok": check.ok, "records": check.n_records, "api_requests": api_requests},
        "stages_ms": stages,
        "help": {"wall_s": help_wall, "cpu_s": help_cpu, "import_typer_wall_s": typer_wall,
                 "import_typer_cpu_s": typer_cpu},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)

    def verdict(ok: bool, value: float = 0.0) -> str:
        return "not run" if value != value else "met" if ok else "MISSED"

    per_s, p50 = result["batch_patients_per_s"], result["explain_p50_ms"]
    batch_ok = verdict(per_s >= TARGET_BATCH_PATIENTS_PER_S, per_s)
    forest_ok = verdict(p50 <= TARGET_EXPLAIN_MS_FOREST, p50)
    ensemble_ok = verdict(p50 <= TARGET_EXPLAIN_MS_ENSEMBLE, p50)
    print(f"\nmodel {result['model']}, {started}, load {load_before[0]:.1f} -> "
          f"{result['machine']['load_after'][0]:.1f}\n")
    print("| measure | result | target | |")
    print("| --- | --- | --- | --- |")
    print(f"| echo /score (floor) | {echo_rps:.0f} req/s | | |")
    print(f"| /score, 1 patient | {score_rps:.0f} req/s = {100 * result['score_ratio']:.0f} % of "
          f"echo | >= 50 % | "
          f"{verdict(result['score_ratio'] >= TARGET_SCORE_RATIO, result['score_ratio'])} |")
    print(f"| /score_batch, 100 patients | {result['batch_patients_per_s']:.0f} patients/s | "
          f">= 2000 | {batch_ok} |")
    print(f"| /explain, 1 endpoint x 4 horizons, median | {result['explain_p50_ms']:.1f} ms | "
          f"<= 25 (forest) / 250 (ensemble) | forest "
          f"{forest_ok}, ensemble {ensemble_ok} |")
    print(f"| errors under load | {result['errors']} | 0 | {verdict(result['errors'] == 0)} |")
    print(f"| audit trail | {check.n_records} records, verified {check.ok} "
          f"({api_requests} API requests) | all recorded | "
          f"{verdict(check.ok and check.n_records >= api_requests)} |")
    print(f"| reirrad --help | {help_wall:.2f} s wall, {help_cpu:.2f} s CPU (import typer: "
          f"{typer_wall:.2f} s / {typer_cpu:.2f} s) | < 1 s | "
          f"{verdict(help_wall < TARGET_HELP_S)} |")
    print("\n| step of one /score call (in process) | median ms |\n| --- | --- |")
    for name, ms in stages.items():
        print(f"| {name} | {ms:.2f} |")


if __name__ == "__main__":
    main()
