"""Exact input-level Shapley values: speed of one full explanation, forest alone and ensemble.

Issue 10 part 3. One full explanation = one patient, both endpoints, all 60 grid times, the
16 contract inputs as players, interventional against the bundle's background of K = 100
training patients (``models.shapley``), through ``BundleExplainer.explain`` (what the report
calls), additivity to the bundle's served CIF checked on every call. Also timed: what
``/explain`` asks (issue 11 part 8), one endpoint at 4 horizons (``one_endpoint_4_horizons``).

Models, fitted per endpoint on ``simulate_cohort(N, seed=1)`` (``--n``, default 2000):

* forest alone: ``CompetingRiskForest`` at its defaults (300 trees), ``n_jobs=2``;
* ensemble: ``CompetingRiskEnsemble`` at its defaults (forests with leaves of 5 and 30,
  300 trees each, ridge cause-specific Cox; weights by cross-validated IBS), ``n_jobs=2``.

Reference in the same run (speeds as ratios): the forest's feature-level path-dependent
TreeSHAP (the kernel the report used before), on the same patients.

Rerun::

    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/bench_shapley.py --n 2000 \
        --patients 10 --repeats 10 --background-sizes 100,50,25

Writes ``benchmarks/results/shapley.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from features.config import ENDPOINTS, HORIZONS_MONTHS  # noqa: E402
from features.pipeline import build_features, encode_endpoint  # noqa: E402
from features.players import background_inputs  # noqa: E402
from features.schema import PatientInput, validated_frame  # noqa: E402
from features.synthetic import simulate_cohort  # noqa: E402
from features.timegrid import DEFAULT_GRID  # noqa: E402
from models.bundle import ModelBundle  # noqa: E402
from models.ensemble import CompetingRiskEnsemble  # noqa: E402
from models.forest import CompetingRiskForest  # noqa: E402
from models.shapley import (  # noqa: E402
    DEFAULT_BACKGROUND_SIZE,
    BundleExplainer,
    CoxMember,
    ForestExplainer,
    ForestMember,
)

RESULTS = ROOT / "benchmarks" / "results" / "shapley.json"
TRAIN_SEED = 1
TEST_SEED = 60_000
N_JOBS = 2


def fit_bundle(kind: str, records, X) -> ModelBundle:
    models = {}
    for e in ENDPOINTS:
        y = encode_endpoint(records, e)
        if kind == "forest":
            est = CompetingRiskForest(n_causes=2, n_jobs=N_JOBS, random_state=TRAIN_SEED)
        else:
            est = CompetingRiskEnsemble(n_causes=2, n_jobs=N_JOBS, random_state=TRAIN_SEED)
        models[e] = est.fit(X, y)
    return ModelBundle(
        models=models,
        grid=DEFAULT_GRID,
        background=background_inputs(records, DEFAULT_BACKGROUND_SIZE, seed=TRAIN_SEED),
    )


def _timed(fn, repeats: int) -> dict[str, float]:
    fn()  # warm-up (numba cache load, BLAS)
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {
        "wall_median_s": float(np.median(wall)),
        "wall_min_s": float(np.min(wall)),
        "cpu_median_s": float(np.median(cpu)),
    }


def measure(kind: str, bundle: ModelBundle, patients: list, repeats: int) -> dict:
    t0 = time.perf_counter()
    explainer = BundleExplainer(bundle)
    build_s = time.perf_counter() - t0
    X = bundle.features_from_inputs(patients)
    served = bundle.predict_cif_features(X)
    worst = 0.0
    for r, p in enumerate(patients):  # additivity against the served CIF, every patient
        exp = explainer.explain([p])
        for e in ENDPOINTS:
            recon = exp[e].base_values + exp[e].values[0].sum(axis=0)
            worst = max(worst, float(np.abs(recon - served[e][r]).max()))
    it = iter(range(10**9))
    out = {
        "kind": kind,
        "build_explainer_s": build_s,
        "max_additivity_error_vs_served": worst,
        "full_explanation": _timed(
            lambda: explainer.explain([patients[next(it) % len(patients)]]), repeats
        ),
        # what /explain asks: one endpoint, 4 horizons (its trees walked in two threads)
        "one_endpoint_4_horizons": _timed(
            lambda: explainer.explain(
                [patients[next(it) % len(patients)]],
                endpoints=[ENDPOINTS[0]],
                times=HORIZONS_MONTHS,
            ),
            repeats,
        ),
    }
    # where the time goes: each member's kernel on one endpoint, one patient
    ex = explainer.input_explainers[ENDPOINTS[0]]
    cols = ex.players.columns([patients[0]])
    out["hybrid_table"] = _timed(
        lambda: ex.players.hybrid_table(cols, ex.background, 0), repeats
    )
    table = ex.players.hybrid_table(cols, ex.background, 0)
    grid = np.arange(ex.times.size)
    parts = getattr(ex.member, "parts", [(1.0, ex.member)])
    for i, (w, part) in enumerate(parts):
        name = f"member{i}_{type(part).__name__}"
        if isinstance(part, ForestMember):
            name += f"_{part.packed.left.shape[0]}nodes"
        out[name] = {
            "weight": w,
            **_timed(lambda part=part: part.attributions(table, grid), repeats),
        }
        if isinstance(part, CoxMember):
            out[name]["note"] = "one endpoint"
    return out


def reference(bundle: ModelBundle, patients: list, repeats: int) -> dict:
    """Feature-level path-dependent TreeSHAP of the forest bundle (the previous kernel)."""
    explainers = {e: ForestExplainer(m, endpoint=e) for e, m in bundle.models.items()}
    X = bundle.features_from_inputs(patients)
    it = iter(range(10**9))

    def run():
        r = next(it) % len(patients)
        for ex in explainers.values():
            ex.explain(X.iloc[[r]])

    return _timed(run, repeats)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--kinds", default="forest,ensemble")
    ap.add_argument(
        "--background-sizes", default=str(DEFAULT_BACKGROUND_SIZE), help="K values, e.g. 100,50"
    )
    args = ap.parse_args()
    records = validated_frame(simulate_cohort(args.n, seed=TRAIN_SEED), require_outcomes=True)
    X = build_features(records)
    test = validated_frame(simulate_cohort(args.patients, seed=TEST_SEED), require_outcomes=True)
    cols = [c for c in PatientInput.model_fields]
    patients = [PatientInput.model_validate(r) for r in test[cols].to_dict("records")]
    result = {
        "n_train": args.n,
        "background_size": DEFAULT_BACKGROUND_SIZE,
        "patients": args.patients,
        "repeats": args.repeats,
        "machine": {
            "nproc": os.cpu_count(),
            "load_before": os.getloadavg(),
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    sizes = [int(k) for k in args.background_sizes.split(",")]
    for kind in args.kinds.split(","):
        t0 = time.perf_counter()
        bundle = fit_bundle(kind, records, X)
        fit_s = time.perf_counter() - t0
        res = measure(kind, bundle, patients, args.repeats)
        res["fit_s"] = fit_s
        if kind == "forest":
            res["reference_path_dependent_features"] = reference(bundle, patients, args.repeats)
        for k in sizes:  # the same models against smaller background samples
            if k == DEFAULT_BACKGROUND_SIZE:
                continue
            bundle.background = background_inputs(records, k, seed=TRAIN_SEED)
            res[f"background_{k}"] = measure(kind, bundle, patients, args.repeats)
        if kind == "ensemble":
            res["weights_cause1"] = {
                e: dict(
                    zip(
                        [n for n, _ in m.members_],
                        [float(w) for w in m.weights_[0]],
                        strict=True,
                    )
                )
                for e, m in bundle.models.items()
            }
        result[kind] = res
        print(json.dumps(res, indent=1), flush=True)
    result["machine"]["load_after"] = os.getloadavg()
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
