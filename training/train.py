"""The retraining job: validate, tune, fit, evaluate, log, register, gate.

One function, :func:`train`, which the CLI, ``reirrad up`` (via :func:`ensure_champion`) and
the tests call alike. Order matters for the fault rules: the tracking store is checked
before anything else, the data are validated before a run exists (a refused file logs
nothing), and the model is registered last, after every artifact is logged, so an error or
an interrupt leaves a FAILED run and no half-registered version.
"""

from __future__ import annotations

import importlib
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import infer_signature

import mlflow
from features.config import ENDPOINTS, EVENT_OF_INTEREST, HORIZONS_MONTHS
from features.players import background_inputs
from features.schema import INPUT_COLUMNS
from features.synthetic import simulate_cohort
from features.timegrid import DEFAULT_GRID
from models.bundle import ModelBundle, summarise_training_data
from models.pyfunc import BUNDLE_ARTIFACT_KEY, SHA_CONFIG_KEY, model_code_file
from models.store import (
    BUNDLE_ARTIFACT_DIR,
    BUNDLE_FILENAME,
    CHAMPION_ALIAS,
    SHA_TAG,
    load_champion,
)
from training import gate as gate_rule
from training import locks, plots, registry, tracking
from training.config import TrainConfig, load_config
from training.data import TrainingData, load_training_data, synthetic_training_data
from training.engine import make_engine
from training.evaluate import (
    INTERVAL_LEVEL,
    INTERVAL_METRICS,
    METRIC_SEP,
    REGISTERED,
    Evaluation,
    evaluate,
    holdout_scores,
)
from training.metrics import cumulative_incidence
from training.validation_coverage import coverage_entry, coverage_sentence

MODEL_ARTIFACT_NAME = "model"
EXAMPLE_SEED = 7
EXAMPLE_ROWS = 2
PYFUNC_PACKAGES = ("features", "models")
"""Shipped with the MLflow model (code_paths) so it loads where reirrad is not installed."""
PYFUNC_REQUIREMENTS = (
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "scikit-survival",
    "joblib",
    "pydantic",
    "mlflow",
    "pyarrow",
)
METRICS_BATCH = 500
MAKE_UP_PRESET = "release"
"""What ``make up`` trains when no champion exists: the release architecture."""
VALIDATION_METHOD = (
    "{r} x {k}-fold {s}cross-validation by patient; every modelling step (tuning included) "
    "redone inside each fold; metrics of the pooled out-of-fold predictions, mean over repeats"
)
INTERVAL_METHOD = (
    "percentile bootstrap of patients over the out-of-fold predictions (B={b}); the ICI's "
    "interval shifted by the bootstrap's bias estimate"
)
AUC_MEANING = (
    "AUC at H months: the chance that a patient who had the event by H was given a higher "
    "risk than one who did not (controls: everyone else, competing events included)"
)


@dataclass
class TrainResult:
    """What a training run produced and decided."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    version: int
    gate: gate_rule.GateDecision
    champion_version: int | None
    bundle_sha256: str
    data_sha256: str
    headline: dict[str, float]
    engine: str
    seconds: float


# ----------------------------------------------------------------------------- helpers
def _example_input() -> pd.DataFrame:
    """Two synthetic patients (never real ones) as the model's input example."""
    df = simulate_cohort(EXAMPLE_ROWS, seed=EXAMPLE_SEED)[list(INPUT_COLUMNS)].copy()
    df["patient_id"] = [f"example-{i + 1}" for i in range(len(df))]
    df["primary_fraction_gy"] = df["primary_fraction_gy"].astype(float).fillna(2.0)
    for c in (
        "nodal_recurrence",
        "chemotherapy",
        "brachytherapy_boost",
        "prior_grade3_toxicity",
        "preexisting_necrosis",
    ):
        df[c] = df[c].astype(bool)
    df["reirr_fractions_per_day"] = df["reirr_fractions_per_day"].astype("int64")
    return df.reset_index(drop=True)


def _signature(example: pd.DataFrame, output: pd.DataFrame):
    """The model signature; MLflow's hint about integer columns is moot here (the contract
    refuses missing values in ``reirr_fractions_per_day``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        return infer_signature(example, output)


def _package_dir(name: str) -> Path:
    """Where one of our packages is installed (a checkout or site-packages)."""
    return Path(importlib.import_module(name).__file__).resolve().parent


def _pip_requirements() -> list[str]:
    versions = tracking.package_versions()
    return [
        f"{p}=={versions[p]}" if versions.get(p, "not installed") != "not installed" else p
        for p in PYFUNC_REQUIREMENTS
    ]


def _log_metrics(client: mlflow.MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())]
    for i in range(0, len(items), METRICS_BATCH):
        client.log_batch(run_id, metrics=items[i : i + METRICS_BATCH])


def validated_headline(ev: Evaluation) -> dict[str, float]:
    """The registered model's validated figures with their 95 % intervals and what they rest
    on: ``<endpoint>/<metric>_<H>m`` (+ ``_lo``, ``_hi``), ``<endpoint>/events_<H>m``,
    ``<endpoint>/n_patients``."""
    out: dict[str, float] = {}
    for e in ENDPOINTS:
        out[f"{e}/n_patients"] = ev.counts[METRIC_SEP.join((e, "n"))]
        for hh in ev.horizons:
            tag = f"{hh:g}m"
            out[f"{e}/events_{tag}"] = ev.counts[METRIC_SEP.join((e, f"events_{tag}"))]
            for m in INTERVAL_METRICS:
                est, lo, hi = ev.registered(e, f"{m}_{tag}")
                out[f"{e}/{m}_{tag}"] = est
                out[f"{e}/{m}_{tag}_lo"] = lo
                out[f"{e}/{m}_{tag}_hi"] = hi
    return out


def validation_record(ev: Evaluation) -> dict[str, Any]:
    """What the bundle carries about its validation (serving shows it; it imports no training)."""
    figures: dict[str, dict[str, Any]] = {}
    for e in ENDPOINTS:
        per: dict[str, Any] = {}
        for hh in ev.horizons:
            tag = f"{hh:g}m"
            row: dict[str, Any] = {
                "events": int(ev.counts[METRIC_SEP.join((e, f"events_{tag}"))]),
            }
            for m in INTERVAL_METRICS:
                est, lo, hi = ev.registered(e, f"{m}_{tag}")
                row[m] = {"estimate": est, "lo": lo, "hi": hi}
            per[tag] = row
        figures[e] = per
    coverage = coverage_entry(ev.models[REGISTERED][ENDPOINTS[0]])
    return _jsonable(
        {
            "method": VALIDATION_METHOD.format(
                k=ev.n_folds, r=ev.n_repeats, s="stratified " if ev.stratified else ""
            ),
            "stratified": ev.stratified,
            "interval": INTERVAL_METHOD.format(b=ev.n_interval_bootstrap),
            "level": INTERVAL_LEVEL,
            "folds": ev.n_folds,
            "repeats": ev.n_repeats,
            "n_patients": int(ev.counts[METRIC_SEP.join((ENDPOINTS[0], "n"))]),
            "auc_meaning": AUC_MEANING,
            "coverage": coverage,
            "coverage_note": coverage_sentence(coverage),
            "figures": figures,
        }
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if np.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _comparison_table(ev: Evaluation) -> pd.DataFrame:
    """Every candidate side by side: apparent and cross-validated, per horizon, same folds."""
    rows = []
    for key, validated in ev.validated.items():
        model, endpoint, metric = key.split(METRIC_SEP)
        name, _, horizon = metric.rpartition("_")
        rows.append(
            {
                "model": model,
                "endpoint": endpoint,
                "metric": name,
                "horizon": horizon,
                "apparent": ev.apparent[key],
                "validated": validated,
            }
        )
    return pd.DataFrame(rows).sort_values(["endpoint", "metric", "horizon", "model"])


def _comparison_text(ev: Evaluation, horizon: float) -> str:
    """Every candidate at the gate horizon (cross-validated, same folds), for the console."""
    lines = [
        f"validated at {horizon:g} months ({ev.n_repeats} x {ev.n_folds}-fold CV, "
        "out-of-fold):  AUC   Brier   ICI"
    ]
    for e in ENDPOINTS:
        for model in ev.models:
            vals = [
                ev.validated[METRIC_SEP.join((model, e, f"{m}_{horizon:g}m"))]
                for m in ("auc", "brier", "ici")
            ]
            lines.append(f"  {e:18s} {model:15s} {vals[0]:6.3f} {vals[1]:6.3f} {vals[2]:6.3f}")
        est, lo, hi = ev.registered(e, f"auc_{horizon:g}m")
        lines.append(f"  {e:18s} {REGISTERED} AUC 95% interval [{lo:.3f}, {hi:.3f}]")
    return "\n".join(lines)


def _subgroup_table(ev: Evaluation) -> pd.DataFrame:
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for key, value in ev.subgroups_apparent.items():
        col, level, endpoint, metric = key.split(METRIC_SEP)
        row = rows.setdefault(
            (col, level, endpoint),
            {
                "subgroup": col,
                "level": level,
                "endpoint": endpoint,
            },
        )
        row[metric] = value
        if metric in ("auc", "brier"):
            row[f"{metric}_validated"] = ev.subgroups_validated[key]
    return pd.DataFrame(list(rows.values()))


@dataclass
class ChampionOnHoldout:
    """The champion as re-read for the gate: its version, hold-out definition and risks."""

    version: int | None
    holdout: gate_rule.HoldoutDefinition | None = None
    risk: dict[str, np.ndarray] | None = None
    error: str | None = None


def _champion_on_holdout(
    uri: str, name: str, data: TrainingData, horizon: float
) -> ChampionOnHoldout:
    """The current champion's risks at ``horizon`` on the hold-out (read inside the promotion
    lock), or its version with ``error`` set when it cannot be scored."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, uri)
    mv = registry.get_alias(client, name, CHAMPION_ALIAS)
    if mv is None:
        return ChampionOnHoldout(None)
    version = int(mv.version)
    try:
        holdout = gate_rule.version_holdout(client, name, version)
        with tempfile.TemporaryDirectory() as tmp:
            bundle, info = load_champion(uri, name, CHAMPION_ALIAS, dst_dir=tmp)
        if int(info["version"]) != version:  # only a writer without the lock can do this
            raise RuntimeError(f"the champion moved from v{version} to v{info['version']}")
        risks = _bundle_risks(bundle, data, horizon)
        return ChampionOnHoldout(version, holdout, risks)
    except Exception as err:  # a champion we cannot score cannot be beaten safely
        return ChampionOnHoldout(version, error=f"{type(err).__name__}: {err}")


def _bundle_risks(bundle: ModelBundle, data: TrainingData, horizon: float) -> dict[str, np.ndarray]:
    """A bundle's cumulative incidence at ``horizon`` for each hold-out patient, per endpoint."""
    if len(data.holdout) == 0:
        return {e: np.zeros(0) for e in ENDPOINTS}
    risks = bundle.predict_cif_features(data.holdout.X, [horizon])
    return {e: np.asarray(r[:, 0], dtype=float) for e, r in risks.items()}


def _build_bundle(
    ev: Evaluation,
    data: TrainingData,
    config: TrainConfig,
    provenance: dict[str, Any],
    headline: dict[str, float],
) -> ModelBundle:
    dev = data.development
    summary = summarise_training_data(dev.X, dev.records)
    baseline_cif: dict[str, list[float]] = {}
    incidence: dict[str, dict[str, float]] = {}
    for e in ENDPOINTS:
        t, ev_codes = dev.y[e]["time"], dev.y[e]["event"]
        grid_t, grid_e = DEFAULT_GRID.discretize(t, ev_codes)
        baseline_cif[e] = cumulative_incidence(
            grid_t, grid_e, EVENT_OF_INTEREST, DEFAULT_GRID.points
        ).tolist()
        incidence[e] = {
            f"{h}m": float(cumulative_incidence(grid_t, grid_e, EVENT_OF_INTEREST, [h])[0])
            for h in HORIZONS_MONTHS
        }
    summary["baseline_incidence"] = incidence
    bundle = ModelBundle(
        models=dict(ev.models[REGISTERED]),
        grid=DEFAULT_GRID,
        training_summary=summary,
        baseline_cif=baseline_cif,
        metrics=headline,
        provenance=provenance,
        background=background_inputs(dev.records, seed=config.seed),
    )
    return attach_intervals(bundle, dev.X, dev.y, config)


def attach_intervals(
    bundle: ModelBundle, X: pd.DataFrame, y: dict[str, np.ndarray], config: TrainConfig
) -> ModelBundle:
    """Fit the per-patient interval models (refits on simulated cohorts; models/intervals.py)
    on the bundle's training rows, and record the method's measured coverage with them."""
    from models.intervals import coverage_record, fit_bundle_intervals

    cfg = config.intervals
    light = {} if cfg.n_estimators is None else {"n_estimators": cfg.n_estimators}
    bundle.intervals = fit_bundle_intervals(
        bundle.models,
        X,
        y,
        n_resamples=cfg.n_resamples,
        random_state=config.seed,
        resample_params=light,
    )
    bundle.interval_record = coverage_record(next(iter(bundle.models.values())))
    bundle.provenance["intervals"] = {e: iv.info for e, iv in bundle.intervals.items()}
    return bundle


# ------------------------------------------------------------------------------- train
def train(
    *,
    data_path: str | Path | None = None,
    synthetic_n: int | None = None,
    seed: int | None = None,
    config: TrainConfig | str | Path | None = None,
    tracking_uri: str | None = None,
    ray_address: str | None = None,
    n_workers: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Run the whole job; see the module docstring for the order and the fault rules.

    ``synthetic_n`` patients are drawn from the synthetic cohort with the config's
    ``synthetic.seed`` and schedule mix (``synthetic.overrides``); ``seed`` (else the
    config's) seeds every modelling step.
    """
    started = time.perf_counter()
    if (data_path is None) == (synthetic_n is None):
        raise ValueError("give exactly one of data_path or synthetic_n")
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    cfg = cfg.with_seed(seed)

    uri, client = tracking.connect(tracking_uri)  # fail fast, before any work
    echo(f"tracking store: {uri}")
    locks.check_promotion_lock(uri, model_name=cfg.model_name)  # and before training

    if data_path is not None:
        data = load_training_data(data_path, cfg.holdout.salt, cfg.holdout.fraction, cfg.min_rows)
    else:
        data = synthetic_training_data(
            int(synthetic_n),
            cfg.synthetic.seed,
            cfg.holdout.salt,
            cfg.holdout.fraction,
            cfg.min_rows,
            **cfg.synthetic.overrides,
        )
    echo(
        f"data: {data.source}: {data.n_rows} rows valid ({len(data.development)} development, "
        f"{len(data.holdout)} hold-out), sha256 {data.sha256[:12]}..."
    )

    experiment_id = tracking.ensure_experiment(client, cfg.experiment_name, uri)
    engine = make_engine(ray_address, n_workers or cfg.n_workers, progress=progress)
    commit = tracking.git_commit()
    versions = tracking.package_versions()
    tags = {
        "git_commit": commit,
        "engine": engine.name,
        "config_name": cfg.name,
        "config_sha256": cfg.fingerprint(),
        "data_source": data.source,
        "data_sha256": data.sha256,
    }
    try:
        with tracking.tracked_run(client, experiment_id, f"train-{cfg.name}", tags) as run:
            run_id = run.info.run_id
            params = {f"config.{k}": v for k, v in cfg.flat_params().items()}
            params.update({k: str(v) for k, v in data.summary().items()})
            params.update({f"pkg.{k}": v for k, v in versions.items()})
            params["seed"] = str(cfg.seed)
            params["engine"] = engine.name
            mlflow.log_params(params)
            mlflow.log_dict(cfg.model_dump(mode="json"), "config.json")

            ev = evaluate(data.development, cfg, engine, n_jobs=cfg.fit_n_jobs)
            result = _log_and_register(client, uri, run_id, cfg, data, ev, commit, versions, echo)
    finally:
        engine.close()
    result.engine = engine.name
    result.seconds = time.perf_counter() - started
    return result


# ------------------------------------------------------------------------------- steps
# The job after evaluation is a fixed sequence of steps, each a function of its own:
#   1. build_bundle_step   hold-out scores, headline figures, provenance, the bundle
#   2. log_evaluation      metrics, console comparison, bundle artifact, plots, tables, pyfunc
#   3. decide_gate         the champion re-read, the gate's verdict (training/gate.py; no logging)
#   4. log_gate            the verdict, metrics.json, gate.json, tags
#   5. register_and_promote  the registry: a version (alias challenger), then champion if passed
# Steps 3-5 run inside the promotion lock (training/locks.py), so the champion the gate
# compares against is the one the alias still names when it moves.
# Nothing touches the registry before steps 1-4 have all succeeded, so a failure anywhere
# leaves a FAILED run and an unchanged registry (tests/test_training_steps.py).
STEP_ORDER: tuple[str, ...] = (
    "build_bundle_step",
    "log_evaluation",
    "decide_gate",
    "log_gate",
    "register_and_promote",
)


@dataclass
class BuiltBundle:
    """Step 1's output: the bundle and the figures it carries."""

    bundle: ModelBundle
    headline: dict[str, float]
    challenger_holdout: dict[str, float]
    horizon: float


@dataclass
class LoggedModel:
    """Step 2's output: where the logged pyfunc lives and the bundle's hash."""

    model_uri: str
    sha256: str


@dataclass
class GateOutcome:
    """Step 3's output: the verdict and what it was based on."""

    decision: gate_rule.GateDecision
    champion_version: int | None
    champion_holdout: dict[str, float] | None


def build_bundle_step(
    run_id: str,
    cfg: TrainConfig,
    data: TrainingData,
    ev: Evaluation,
    commit: str,
    versions: dict[str, str],
) -> BuiltBundle:
    """Score the final models on the hold-out and build the bundle (no logging, no registry)."""
    h = float(cfg.gate.horizon_months)
    challenger_holdout = holdout_scores(
        {e: m.predict_cif(data.holdout.X, [h])[:, 0, 0] for e, m in ev.models[REGISTERED].items()}
        if len(data.holdout)
        else {e: np.zeros(0) for e in ENDPOINTS},
        data.holdout,
        h,
    )
    headline = validated_headline(ev)
    for e in ENDPOINTS:
        for m in ("auc", "brier"):
            headline[f"{e}/holdout_{m}_{h:g}m"] = challenger_holdout[f"{e}/{m}"]
    provenance = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mlflow_run_id": run_id,
        "git_commit": commit,
        "packages": versions,
        "config_name": cfg.name,
        "config_sha256": cfg.fingerprint(),
        "seed": cfg.seed,
        "tuned_params": {e: ev.tuned[e]["params"] for e in ENDPOINTS},
        **data.summary(),
    }
    bundle = _build_bundle(ev, data, cfg, provenance, headline)
    bundle.validation = validation_record(ev)
    return BuiltBundle(bundle, headline, challenger_holdout, h)


def log_evaluation(
    client: mlflow.MlflowClient,
    run_id: str,
    cfg: TrainConfig,
    data: TrainingData,
    ev: Evaluation,
    built: BuiltBundle,
    echo: Callable[[str], None],
) -> LoggedModel:
    """Log the evaluation's metrics, the bundle, plots, tables and the pyfunc model."""
    metrics: dict[str, float] = {f"apparent/{k}": v for k, v in ev.apparent.items()}
    metrics.update({f"cv/{k}": v for k, v in ev.validated.items()})
    metrics.update(
        {
            f"validated/{k}": v
            for k, v in built.headline.items()
            if "holdout" not in k and not k.endswith("n_patients")
        }
    )
    metrics.update(
        {f"validated/{e}/n_patients": built.headline[f"{e}/n_patients"] for e in ENDPOINTS}
    )
    metrics.update({f"subgroup/{k}": v for k, v in ev.subgroups_validated.items()})
    metrics.update({f"holdout/{REGISTERED}/{k}": v for k, v in built.challenger_holdout.items()})
    metrics.update({f"instability/{e}/mean_abs_diff": v for e, v in ev.instability().items()})
    metrics["cv_folds"] = float(ev.n_folds)
    metrics["cv_repeats"] = float(ev.n_repeats)
    _log_metrics(client, run_id, metrics)
    echo(_comparison_text(ev, built.horizon))

    bundle = built.bundle
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        bundle_path = tmp / BUNDLE_FILENAME
        sha = bundle.save(bundle_path)
        mlflow.log_param(SHA_TAG, sha)
        mlflow.set_tag(SHA_TAG, sha)
        mlflow.log_artifact(str(bundle_path), artifact_path=BUNDLE_ARTIFACT_DIR)

        plot_dir = tmp / "plots"
        plot_dir.mkdir()
        y = data.development.y
        for e in ENDPOINTS:
            plots.calibration_plot(ev, y, e, plot_dir / f"calibration_{e}.png")
            plots.decision_curve_plot(
                ev, y, e, cfg.evaluation.decision_thresholds, plot_dir / f"decision_curve_{e}.png"
            )
        plots.instability_plot(ev, plot_dir / "prediction_instability.png")
        plots.subgroup_plot(ev, plot_dir / "subgroups.png")
        mlflow.log_artifacts(str(plot_dir), artifact_path="plots")

        tables = tmp / "tables"
        tables.mkdir()
        _comparison_table(ev).to_csv(tables / "model_comparison.csv", index=False)
        _subgroup_table(ev).to_csv(tables / "subgroups.csv", index=False)
        mlflow.log_artifacts(str(tables), artifact_path="evaluation")

        example = _example_input()
        # logged from code (models/pyfunc_model.py), not as a CloudPickle of an object
        with model_code_file() as code_file:
            model_info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT_NAME,
                python_model=str(code_file),
                artifacts={BUNDLE_ARTIFACT_KEY: str(bundle_path)},
                model_config={SHA_CONFIG_KEY: sha},
                signature=_signature(example, bundle.predict_horizons(example)),
                input_example=example,
                pip_requirements=_pip_requirements(),
                code_paths=[str(_package_dir(p)) for p in PYFUNC_PACKAGES],
            )
    return LoggedModel(model_info.model_uri, sha)


def decide_gate(uri: str, cfg: TrainConfig, data: TrainingData, built: BuiltBundle) -> GateOutcome:
    """The promotion gate (training/gate.py), the rule fixed in the config before training.

    Runs inside the promotion lock: the champion is re-read here, so a promotion that
    finished while this job waited for the lock is the one compared against. Pure decision:
    logs and registers nothing.
    """
    h = built.horizon
    champion = _champion_on_holdout(uri, cfg.model_name, data, h)
    validated = {
        e: {"auc": built.headline[f"{e}/auc_{h:g}m"], "ici": built.headline[f"{e}/ici_{h:g}m"]}
        for e in ENDPOINTS
    }
    decision = gate_rule.decide(
        cfg.gate,
        validated,
        gate_rule.HoldoutDefinition.from_config(cfg.holdout),
        outcomes=data.holdout.y,
        challenger_risk=_bundle_risks(built.bundle, data, h),
        champion_risk=champion.risk,
        champion_version=champion.version,
        champion_holdout=champion.holdout,
        champion_error=champion.error,
        seed=cfg.seed,
    )
    champion_scores = (
        holdout_scores(champion.risk, data.holdout, h)
        if champion.risk is not None and len(data.holdout)
        else None
    )
    return GateOutcome(decision, champion.version, champion_scores)


def log_gate(
    client: mlflow.MlflowClient,
    run_id: str,
    cfg: TrainConfig,
    data: TrainingData,
    ev: Evaluation,
    built: BuiltBundle,
    logged: LoggedModel,
    gate: GateOutcome,
    echo: Callable[[str], None],
) -> None:
    """Log the verdict with everything behind it (metrics.json, gate.json, tags)."""
    decision = gate.decision
    if gate.champion_holdout:
        _log_metrics(
            client, run_id, {f"holdout/champion/{k}": v for k, v in gate.champion_holdout.items()}
        )
    mlflow.log_dict(
        _jsonable(
            {
                "config": cfg.model_dump(mode="json"),
                "apparent": ev.apparent,
                "validated": ev.validated,
                "validation": validation_record(ev),
                "subgroups_apparent": ev.subgroups_apparent,
                "subgroups_validated": ev.subgroups_validated,
                "holdout": {
                    "challenger": built.challenger_holdout,
                    "champion": gate.champion_holdout,
                },
                "instability": ev.instability(),
                "tuning": ev.tuned,
                "fold_tuning_choices": ev.tuning_choices,
                "cv_folds": ev.n_folds,
                "cv_repeats": ev.n_repeats,
                "gate": decision.as_dict(),
                "data": data.summary(),
                "bundle_sha256": logged.sha256,
            }
        ),
        "metrics.json",
    )
    mlflow.log_dict(_jsonable(decision.as_dict()), "gate.json")
    mlflow.set_tag("gate.passed", str(decision.passed).lower())
    mlflow.set_tag("gate.status", decision.status)
    mlflow.set_tag(
        "gate.reason", "; ".join(decision.reasons)[: tracking.MAX_TAG_CHARS] or decision.reason
    )
    _log_metrics(client, run_id, decision.metrics())
    echo(decision.summary())


def register_and_promote(
    client: mlflow.MlflowClient,
    run_id: str,
    cfg: TrainConfig,
    data: TrainingData,
    logged: LoggedModel,
    gate: GateOutcome,
    commit: str,
    echo: Callable[[str], None],
    lock: locks.PromotionLock | None = None,
) -> tuple[int, int | None]:
    """The last step: register a version (alias challenger), promote it if the gate passed.

    Every version records the hold-out it was not trained on (tags ``holdout_salt``,
    ``holdout_fraction``), which later gates compare. With ``lock`` (the promotion lock held
    since the champion was re-read) it checks the lock is still held right before moving the
    alias. Returns ``(version, champion version now)``.
    """
    decision = gate.decision
    mv = registry.register(
        client,
        cfg.model_name,
        logged.model_uri,
        run_id,
        tags={
            SHA_TAG: logged.sha256,
            "data_sha256": data.sha256,
            "gate": "pass" if decision.passed else "fail",
            "gate_status": decision.status,
            "git_commit": commit,
            **gate_rule.HoldoutDefinition.from_config(cfg.holdout).tags(),
        },
    )
    version = int(mv.version)
    echo(f"registered {cfg.model_name} v{version} (alias challenger)")
    if not decision.passed:
        champion = gate.champion_version
        echo("champion unchanged" + (f" (v{champion})" if champion else " (none)"))
        return version, champion
    try:
        if lock is not None:
            lock.check()
        registry.promote(client, cfg.model_name, version)
    except BaseException:  # leave no half-promoted version behind a FAILED run
        registry.discard(client, cfg.model_name, version, gate.champion_version)
        raise
    echo(f"champion -> v{version}")
    return version, version


def _promotion_lock(uri: str, cfg: TrainConfig, echo: Callable[[str], None]):
    """The promotion lock of the config's model (a context manager yielding the lock)."""
    echo(f"promotion lock: {locks.lock_target(uri, model_name=cfg.model_name).describe()}")
    return locks.promotion_lock(uri, model_name=cfg.model_name)


def _log_and_register(
    client: mlflow.MlflowClient,
    uri: str,
    run_id: str,
    cfg: TrainConfig,
    data: TrainingData,
    ev: Evaluation,
    commit: str,
    versions: dict[str, str],
    echo: Callable[[str], None],
) -> TrainResult:
    """Run the steps of :data:`STEP_ORDER` in that order; the registry is touched last."""
    built = build_bundle_step(run_id, cfg, data, ev, commit, versions)
    logged = log_evaluation(client, run_id, cfg, data, ev, built, echo)
    # champion re-read, gate, register and promote: one promotion at a time (training/locks.py)
    with _promotion_lock(uri, cfg, echo) as lock:
        gate = decide_gate(uri, cfg, data, built)
        log_gate(client, run_id, cfg, data, ev, built, logged, gate, echo)
        version, champion_now = register_and_promote(
            client, run_id, cfg, data, logged, gate, commit, echo, lock
        )
    return TrainResult(
        run_id=run_id,
        experiment_id=mlflow.active_run().info.experiment_id,
        tracking_uri=uri,
        version=version,
        gate=gate.decision,
        champion_version=champion_now,
        bundle_sha256=logged.sha256,
        data_sha256=data.sha256,
        headline=built.headline,
        engine="",
        seconds=0.0,
    )


# --------------------------------------------------------------------------- make up
@dataclass
class ChampionInfo:
    """The champion after :func:`ensure_champion`: its version, and whether we trained it."""

    version: int
    run_id: str
    trained: bool
    tracking_uri: str


def ensure_champion(
    tracking_uri: str | None = None,
    progress: bool = True,
    config: TrainConfig | str = MAKE_UP_PRESET,
) -> ChampionInfo:
    """Train on the synthetic cohort when the registry has no champion (``make up``: the
    release preset, whose resampling is sized to finish in minutes; tests pass ``quick``).

    Raises RuntimeError when the freshly trained model fails the gate's absolute limits.
    """
    uri, client = tracking.connect(tracking_uri)
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    mv = registry.get_alias(client, cfg.model_name, CHAMPION_ALIAS)
    if mv is not None:
        return ChampionInfo(int(mv.version), mv.run_id, False, uri)
    result = train_synthetic(cfg, uri, progress=progress)
    if not result.gate.passed:
        raise RuntimeError(
            "the model trained on the synthetic cohort failed the gate: "
            + "; ".join(result.gate.reasons)
        )
    return ChampionInfo(result.version, result.run_id, True, uri)


def train_synthetic(
    cfg: TrainConfig, tracking_uri: str | None, progress: bool = True, **kwargs: Any
) -> TrainResult:
    """Train on the config's synthetic cohort (size, seed and schedule mix from ``synthetic``)."""
    return train(
        synthetic_n=cfg.synthetic.n,
        config=cfg,
        tracking_uri=tracking_uri,
        progress=progress,
        **kwargs,
    )
