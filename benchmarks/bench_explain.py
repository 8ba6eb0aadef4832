"""Exact TreeSHAP and report speed, shap's permutation explainer beside it, IJ interval coverage.

Issue 6. The forest: ``CompetingRiskForest`` at its defaults (``min_samples_leaf=15``,
``min_samples_split=30``, ``max_features="sqrt"``, ``max_bins=64``, bootstrap of n) except
``n_estimators=500``, fitted per endpoint on 2,000 synthetic patients (``simulate_cohort(2000,
seed=1)``), ``n_jobs=2``.

Measured:

* one full explanation: both endpoints, all 60 grid times (which include 6, 12, 24 and 36
  months), path-dependent (what the report uses) and interventional (100 background
  patients); wall and CPU time over repeated calls, after a warm-up (the numba kernels are
  compiled once and cached on disk);
* shap's ``PermutationExplainer`` on the same forest for ONE output (mucosal necrosis CIF at
  24 months) with the same 100-patient background (``maskers.Independent``), and its distance
  from our exact interventional values;
* the report: build (validation, features, SHAP, IJ intervals on the grid) plus rendering,
  per format, with the model already loaded, and the CLI end to end in a fresh process;
* coverage of the 95 % IJ intervals (logit and linear scale) of ``true_cif`` on fresh
  synthetic test patients, over ``--replicates`` training cohorts.

Rerun::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_explain.py --replicates 3

Writes ``benchmarks/results/explain.json`` and ``serving/ci_coverage.json`` (the coverage that
the report's small print quotes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from features.config import ENDPOINTS, HORIZONS_MONTHS, MAIN_HORIZON_MONTHS  # noqa: E402
from features.pipeline import build_features, encode_endpoint  # noqa: E402
from features.schema import validated_frame  # noqa: E402
from features.synthetic import simulate_cohort, true_cif  # noqa: E402
from features.timegrid import DEFAULT_GRID  # noqa: E402
from models.bundle import ModelBundle, summarise_training_data  # noqa: E402
from models.explain import BundleExplainer, sample_background  # noqa: E402
from models.forest import CompetingRiskForest  # noqa: E402
from models.uncertainty import ij_variance, ij_variance_parts, interval  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "explain.json"
COVERAGE_FILE = ROOT / "serving" / "ci_coverage.json"
N_TRAIN = 2000
N_TREES = 500
N_JOBS = 2
TRAIN_SEED = 1
TEST_SEED = 50_000
N_TEST = 500
N_BACKGROUND = 100
REPEATS = 30
LEVEL = 0.95
DEFAULT_VARIANT = "smoothed_mc_floor/linear"
"""What ``models.uncertainty.forest_interval`` does by default."""


def fit_bundle(n: int, n_trees: int, seed: int) -> tuple[ModelBundle, object]:
    records = validated_frame(simulate_cohort(n, seed=seed), require_outcomes=True)
    X = build_features(records)
    models = {
        e: CompetingRiskForest(
            n_estimators=n_trees, n_causes=2, n_jobs=N_JOBS, random_state=seed
        ).fit(X, encode_endpoint(records, e))
        for e in ENDPOINTS
    }
    bundle = ModelBundle(
        models=models,
        grid=DEFAULT_GRID,
        training_summary=summarise_training_data(X, records),
        provenance={
            "model_name": "bench-forest",
            "model_version": f"bench-n{n}-t{n_trees}-s{seed}",
            "data_source": "synthetic cohort",
            "data_rows": n,
            "development_rows": n,
        },
    )
    return bundle, X


def _timed(fn, repeats: int) -> dict[str, float]:
    fn()  # warm-up (numba cache load)
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {
        "wall_ms_median": 1e3 * float(np.median(wall)),
        "wall_ms_min": 1e3 * float(np.min(wall)),
        "cpu_ms_median": 1e3 * float(np.median(cpu)),
    }


def bench_explain(bundle: ModelBundle, X, out: dict) -> None:
    patient = X.iloc[[7]]
    t0 = time.perf_counter()
    BundleExplainer(bundle)
    out["pack_ms_first_in_process"] = 1e3 * (time.perf_counter() - t0)  # + numba cache load
    t0 = time.perf_counter()
    path_dep = BundleExplainer(bundle)
    out["pack_ms"] = 1e3 * (time.perf_counter() - t0)
    out["path_dependent"] = _timed(lambda: path_dep.explain(patient), REPEATS)
    background = sample_background(X, N_BACKGROUND, seed=0)
    interv = BundleExplainer(bundle, background=background)
    out["interventional"] = _timed(lambda: interv.explain(patient), max(3, REPEATS // 10))
    exps = path_dep.explain(X.iloc[:200])
    out["additivity_max_error_200_patients"] = max(e.additivity_error() for e in exps.values())
    out["n_outputs_per_patient"] = sum(e.values.shape[2] for e in exps.values())
    forest = bundle.models["mucosal_necrosis"]
    out["mean_leaves_per_tree"] = float(
        np.mean([(t.tree_.children_left < 0).sum() for t in forest.estimators_])
    )
    out["mean_depth"] = float(np.mean([t.tree_.max_depth for t in forest.estimators_]))

    import shap

    j = int(DEFAULT_GRID.index_of(MAIN_HORIZON_MONTHS)[0])
    cols = list(X.columns)

    def f(data: np.ndarray) -> np.ndarray:
        import pandas as pd

        return forest.predict_cif(pd.DataFrame(data, columns=cols))[:, 0, j]

    masker = shap.maskers.Independent(background.to_numpy(), max_samples=N_BACKGROUND)
    perm = shap.explainers.Permutation(f, masker, seed=0)
    perm(patient.to_numpy())  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        res = perm(patient.to_numpy())
        times.append(time.perf_counter() - t0)
    exact = interv.explain(patient)["mucosal_necrosis"].values[0, :, j]
    out["permutation_one_output"] = {
        "wall_s_median": float(np.median(times)),
        "max_abs_diff_from_exact_interventional_pp": 100
        * float(np.abs(res.values[0] - exact).max()),
        "max_abs_exact_pp": 100 * float(np.abs(exact).max()),
    }


def bench_report(bundle: ModelBundle, out: dict) -> None:
    from serving.report import build_report
    from serving.report_render import _images, render_html, render_pdf

    patient = json.loads((ROOT / "docs" / "example_patient.json").read_text())
    explainer = BundleExplainer(bundle)
    build_report(bundle, patient, explainer=explainer)

    def html() -> None:
        r = build_report(bundle, patient, explainer=explainer)
        render_html(r)

    def pdf() -> None:
        r = build_report(bundle, patient, explainer=explainer)
        render_pdf(r)

    out["report_html"] = _timed(html, 5)
    out["report_pdf"] = _timed(pdf, 5)
    r = build_report(bundle, patient, explainer=explainer)
    out["report_images"] = _timed(lambda: _images(r), 5)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bundle.joblib"
        bundle.save(path)
        cli = (
            "import typer; from serving.report_cli import register; app = typer.Typer(); "
            "register(app); app.command('noop')(lambda: None); app()"
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for fmt in ("html", "pdf"):
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    cli,
                    "report",
                    "--patient",
                    str(ROOT / "docs" / "example_patient.json"),
                    "--bundle",
                    str(path),
                    "--out",
                    str(Path(tmp) / f"r.{fmt}"),
                ],
                check=True,
                env=env,
                cwd=ROOT,
                capture_output=True,
            )
            out[f"cli_{fmt}_s"] = time.perf_counter() - t0


def _coverage_variants(model, X_test, truth) -> dict[str, tuple[np.ndarray, ...]]:
    """(estimate, lower, upper) at the horizons for each way of forming the interval."""
    per_tree = model.predict_cif_per_tree(X_test)  # (B, n, G)
    est = per_tree.mean(axis=0)
    v_ij, bias = ij_variance_parts(per_tree, model.inbag_counts_)
    corrected = v_ij - bias
    idx = DEFAULT_GRID.index_of(HORIZONS_MONTHS)
    monte_carlo = bias / model.inbag_counts_.shape[1]
    raw_se = {
        "clipped_at_0": np.sqrt(np.maximum(corrected, 0.0)),
        "uncorrected_fallback": np.sqrt(np.where(corrected > 0, corrected, v_ij)),
        "smoothed_mc_floor": np.sqrt(ij_variance(per_tree, model.inbag_counts_)),
        "mc_floor_unsmoothed": np.sqrt(np.maximum(corrected, monte_carlo)),
    }
    out = {}
    for name, se in raw_se.items():
        for scale in ("linear", "logit"):
            _, lo, hi = interval(est[:, idx], se[:, idx] ** 2, LEVEL, scale)
            out[f"{name}/{scale}"] = (est[:, idx], lo, hi, se[:, idx])
    out["_fallback_share"] = (float(np.mean(corrected[:, idx] <= 0)),)
    return out


def bench_coverage(replicates: int, out: dict) -> None:
    test = simulate_cohort(N_TEST, seed=TEST_SEED)
    X_test = build_features(validated_frame(test, require_outcomes=False))
    rows = []
    for r in range(replicates):
        bundle = fit_bundle(N_TRAIN, N_TREES, TRAIN_SEED + 100 * r)[0] if r else BUNDLE
        for e in ENDPOINTS:
            truth = true_cif(test, e, HORIZONS_MONTHS)
            variants = _coverage_variants(bundle.models[e], X_test, truth)
            share = variants.pop("_fallback_share")[0]
            for name, (est, lo, hi, se) in variants.items():
                inside = (lo <= truth) & (truth <= hi)
                for k, h in enumerate(HORIZONS_MONTHS):
                    rows.append(
                        {
                            "replicate": r,
                            "endpoint": e,
                            "variant": name,
                            "horizon": h,
                            "coverage": float(inside[:, k].mean()),
                            "mean_width_pp": 100 * float((hi - lo)[:, k].mean()),
                            "mean_abs_error_pp": 100 * float(np.abs(est - truth)[:, k].mean()),
                            "mean_se_pp": 100 * float(se[:, k].mean()),
                            "fallback_share": share,
                        }
                    )
        print(f"coverage replicate {r} done", flush=True)
    out["coverage_rows"] = rows
    chosen = [row["coverage"] for row in rows if row["variant"] == DEFAULT_VARIANT]
    out["coverage_default"] = float(np.mean(chosen))
    out["coverage_by_variant"] = {
        v: float(np.mean([row["coverage"] for row in rows if row["variant"] == v]))
        for v in sorted({row["variant"] for row in rows})
    }
    COVERAGE_FILE.write_text(
        json.dumps(
            {
                "coverage": float(np.mean(chosen)),
                "level": LEVEL,
                "variant": DEFAULT_VARIANT,
                "what": (
                    "share of (test patient, endpoint, horizon) whose true CIF lay inside "
                    f"the IJ interval; horizons {list(HORIZONS_MONTHS)}; {replicates} "
                    f"training cohort(s) of {N_TRAIN}, {N_TREES} trees, {N_TEST} test "
                    "patients (benchmarks/bench_explain.py)"
                ),
            },
            indent=1,
        )
        + "\n"
    )


def main() -> None:
    global BUNDLE
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], choices=["explain", "report", "coverage"])
    args = ap.parse_args()
    out: dict = {
        "n_train": N_TRAIN,
        "n_trees": N_TREES,
        "cpu_count": os.cpu_count(),
        "load_avg_start": os.getloadavg(),
    }
    t0 = time.perf_counter()
    BUNDLE, X = fit_bundle(N_TRAIN, N_TREES, TRAIN_SEED)
    out["fit_s_both_endpoints"] = time.perf_counter() - t0
    print("fitted", out["fit_s_both_endpoints"], flush=True)
    if "explain" not in args.skip:
        bench_explain(BUNDLE, X, out)
        print(
            json.dumps({k: v for k, v in out.items() if k != "coverage_rows"}, indent=1), flush=True
        )
    if "report" not in args.skip:
        bench_report(BUNDLE, out)
        print({k: out[k] for k in out if k.startswith(("report", "cli"))}, flush=True)
    if "coverage" not in args.skip:
        bench_coverage(args.replicates, out)
    out["load_avg_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if args.skip and RESULTS.exists():  # keep the parts not rerun
        out = {**json.loads(RESULTS.read_text()), **out}
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "coverage_rows"}, indent=1))


BUNDLE: ModelBundle | None = None

if __name__ == "__main__":
    main()
