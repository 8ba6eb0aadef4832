"""Score any grid-CIF model on the real competing-risk data sets, on the R models' splits.

The data, the 20 seeded 70/30 splits, each set's horizons and time grid, and riskRegression's
CSC/FGR predictions come from ``export_and_fit_r.R`` (committed under ``data/``, so nothing here
needs R). A model enters through a *factory*: any callable that takes keyword arguments and
returns an unfitted estimator with the project's grid-CIF interface,

    factory(*, cause, n_causes, time_grid_max, time_grid_step, random_state, [n_jobs], **params)
        -> estimator with fit(X, y) and predict_cif(X, times) -> (n, K, len(times))

where ``y`` is a structured array (``event`` 0 censored / 1..K, ``time`` months). The harness
passes only the keywords the factory's signature accepts (a ``**kwargs`` factory gets them
all), but it refuses a factory that cannot take the data set's grid (``time_grid_max``,
``time_grid_step``): the product's default grid (60 months) does not fit every set. A factory
that accepts ``cause`` is fitted once per scored cause (the forest grows its trees for one
cause); otherwise, or when the spec says that the fit does not depend on the cause
(``ModelSpec.one_fit``, ``--one-fit`` on the command line), one fit per split serves both.

Every model is scored with the project's metric code (``training.metrics.auc_cr``/``brier_cr``),
on the same test rows and at the same horizons as the R models.
"""

from __future__ import annotations

import importlib
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from features.config import GRID_MAX_MONTHS, GRID_STEP_MONTHS
from features.timegrid import TimeGrid
from models._cif import GridCIFMixin, aalen_johansen_grid, check_survival_y, grid_indices
from training.metrics import auc_cr, brier_cr

DATA_DIR = Path(__file__).resolve().parent / "data"
R_MODELS = ("csc", "fgr")
N_CAUSES = 2
SEED = 0
"""Model seed of split s is SEED + s (as in the issue-4 forest benchmark)."""
HARNESS_KEYWORDS = ("cause", "n_causes", "time_grid_max", "time_grid_step", "random_state")
GRID_KEYWORDS = ("time_grid_max", "time_grid_step")
RANGE_TOLERANCE = 1e-6
"""A predicted cumulative incidence further than this outside [0, 1] is counted as out of range."""

BUILTIN_MODELS = {
    "forest": "models.forest:CompetingRiskForest",
    "ensemble": "models.ensemble:CompetingRiskEnsemble",
    "cox": "models.baselines:CauseSpecificCox",
    "xgb": "models.baselines:CauseSpecificXGB",
    "marginal": "benchmarks.real_data.harness:MarginalCIF",
}
"""Short names for ``--model``; anything else is given as ``module:callable``."""

RESULT_COLUMNS = [
    "dataset", "split", "cause", "model", "horizon", "n_test", "n_cases",
    "auc", "brier", "n_out_of_range", "fit_seconds", "predict_seconds",
]  # fmt: skip


class MarginalCIF(GridCIFMixin, BaseEstimator):
    """Aalen-Johansen CIFs of the training split, the same for every patient (no covariates).

    The reference that shows what the covariates add: its AUC is 0.5 and its Brier score is the
    scale against which the other models' Brier differences are small or large.
    """

    def __init__(
        self,
        cause: int = 1,
        n_causes: int | None = None,
        time_grid_max: float = GRID_MAX_MONTHS,
        time_grid_step: float = GRID_STEP_MONTHS,
    ):
        self.cause = cause
        self.n_causes = n_causes
        self.time_grid_max = time_grid_max
        self.time_grid_step = time_grid_step

    def fit(self, X, y) -> MarginalCIF:
        event, t = check_survival_y(y)
        time_idx, event = grid_indices(self.grid_, t, event)
        self.n_causes_ = int(self.n_causes or max(int(event.max()), 1))
        self.event_times_ = self.grid_.points
        self.cif_ = aalen_johansen_grid(time_idx, event, self.n_causes_, self.event_times_.size)
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def _cif_on_grid(self, X) -> np.ndarray:
        return np.repeat(self.cif_, np.asarray(X).shape[0], axis=0)


@dataclass(frozen=True)
class Dataset:
    """One exported data set: numeric design matrix, outcome, splits, horizons and time grid."""

    name: str
    X: np.ndarray
    y: np.ndarray
    splits: np.ndarray  # (n, n_splits) bool, True = training row
    horizons: dict[int, np.ndarray]  # cause -> its horizons (months), points of ``grid``
    grid: TimeGrid
    cause_labels: dict[int, str]
    feature_names: list[str] = field(default_factory=list)

    @property
    def n_splits(self) -> int:
        return self.splits.shape[1]

    @property
    def all_horizons(self) -> np.ndarray:
        """Every cause's horizons, sorted: the times at which a model is asked for CIFs."""
        return np.unique(np.concatenate(list(self.horizons.values())))

    def r_predictions(self, cause: int) -> pd.DataFrame:
        return pd.read_csv(DATA_DIR / f"r_predictions_{self.name}_cause{cause}.csv.gz")


def dataset_table() -> pd.DataFrame:
    """``datasets.csv``: one row per exported set (the one source of horizons and grids)."""
    path = DATA_DIR / "datasets.csv"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} missing: run Rscript benchmarks/real_data/export_and_fit_r.R"
        )
    return pd.read_csv(path)


def load_dataset(name: str) -> Dataset:
    """Read one set as exported by the R script, checking that its horizons are grid points."""
    meta = dataset_table().set_index("dataset")
    if name not in meta.index:
        raise ValueError(f"unknown data set {name!r}; exported: {', '.join(meta.index)}")
    row = meta.loc[name]
    d = pd.read_csv(DATA_DIR / f"{name}.csv.gz")
    splits = pd.read_csv(DATA_DIR / f"{name}_splits.csv.gz").to_numpy() == 1
    if splits.shape[0] != len(d):
        raise ValueError(f"{name}: splits have {splits.shape[0]} rows, data {len(d)}")
    y = np.empty(len(d), dtype=[("event", np.int64), ("time", float)])
    y["event"], y["time"] = d["status"].to_numpy(int), d["time"].to_numpy(float)
    features = d.drop(columns=["time", "status"])
    grid = TimeGrid(float(row.grid_max_months), float(row.grid_step_months))
    horizons = {
        k: np.array([float(h) for h in str(row[f"horizons_cause{k}"]).split(";")])
        for k in range(1, N_CAUSES + 1)
    }
    for h in horizons.values():
        on_grid = np.isclose(h[:, None], grid.points[None, :]).any(axis=1)
        if not np.all(on_grid):
            raise ValueError(f"{name}: horizons {h[~on_grid]} are not points of {grid}")
    return Dataset(
        name=name,
        X=features.to_numpy(dtype=float),
        y=y,
        splits=splits,
        horizons=horizons,
        grid=grid,
        cause_labels={1: str(row.cause1), 2: str(row.cause2)},
        feature_names=list(features.columns),
    )


# ------------------------------------------------------------------------------ model specs
@dataclass(frozen=True)
class ModelSpec:
    """A labelled factory with fixed extra parameters, as given on the command line."""

    label: str
    target: str  # "module:callable"
    params: dict = field(default_factory=dict)
    one_fit: bool = False
    """True: the model's fit does not depend on ``cause``; one fit per split serves all causes."""

    def factory(self) -> Callable[..., object]:
        module_name, _, attr = self.target.partition(":")
        if not attr:
            raise ValueError(f"model {self.label!r}: target {self.target!r} is not module:callable")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            raise ValueError(
                f"model {self.label!r}: cannot import {module_name!r} ({err}); is the branch "
                "that adds it merged?"
            ) from err
        try:
            return getattr(module, attr)
        except AttributeError as err:
            raise ValueError(f"model {self.label!r}: {module_name} has no {attr!r}") from err


def parse_model_spec(text: str) -> ModelSpec:
    """``LABEL``, ``LABEL={json}``, ``LABEL=TARGET`` or ``LABEL=TARGET={json}``.

    TARGET is a built-in short name (``BUILTIN_MODELS``) or ``module:callable``; LABEL alone must
    be a built-in name. Examples: ``forest``, ``leaf5=forest={"min_samples_leaf": 5}``,
    ``ens=models.ensemble:CompetingRiskEnsemble``.
    """
    label, _, rest = text.partition("=")
    label = label.strip()
    if not label:
        raise ValueError(f"model spec {text!r}: empty label")
    if not rest or rest.lstrip().startswith("{"):
        target, params_text = label, rest
    else:
        target, _, params_text = rest.partition("=")
    target = BUILTIN_MODELS.get(target.strip(), target.strip())
    if ":" not in target:
        raise ValueError(
            f"model spec {text!r}: {target!r} is neither a built-in model "
            f"({', '.join(BUILTIN_MODELS)}) nor module:callable"
        )
    params = json.loads(params_text) if params_text.strip() else {}
    if not isinstance(params, dict):
        raise ValueError(f"model spec {text!r}: parameters must be a JSON object")
    clash = sorted(set(params) & set(HARNESS_KEYWORDS))
    if clash:
        raise ValueError(f"model spec {text!r}: {clash} are set by the harness per data set")
    if label in R_MODELS:
        raise ValueError(f"model label {label!r} is reserved for the R models")
    return ModelSpec(label=label, target=target, params=params)


def _accepted(factory: Callable[..., object]) -> tuple[set[str], bool]:
    """(named keyword parameters of ``factory``, whether it takes ``**kwargs``)."""
    sig = inspect.signature(factory)
    kinds = {p.kind for p in sig.parameters.values()}
    named = {
        n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return named, inspect.Parameter.VAR_KEYWORD in kinds


def fits_per_cause(spec: ModelSpec) -> bool:
    """A factory that takes ``cause`` may specialise its fit to it: fit once per cause (unless
    the spec says that its fit does not depend on the cause)."""
    if spec.one_fit:
        return False
    named, var_kw = _accepted(spec.factory())
    return "cause" in named or var_kw


def takes_n_jobs(spec: ModelSpec) -> bool:
    named, var_kw = _accepted(spec.factory())
    return "n_jobs" in named or var_kw


def build_estimator(
    spec: ModelSpec, ds: Dataset, cause: int | None, split: int, n_jobs: int
) -> object:
    """Call the factory with the harness keywords it accepts plus the spec's parameters."""
    factory = spec.factory()
    named, var_kw = _accepted(factory)
    missing = [k for k in GRID_KEYWORDS if k not in named and not var_kw]
    if missing:
        raise TypeError(
            f"model {spec.label!r}: the factory must accept {missing} so that it predicts on "
            f"the data set's grid ({ds.grid.max_months:g} months, step {ds.grid.step_months:g})"
        )
    offered = {
        "cause": cause,
        "n_causes": N_CAUSES,
        "time_grid_max": ds.grid.max_months,
        "time_grid_step": ds.grid.step_months,
        "random_state": SEED + split,
        "n_jobs": n_jobs,
    }
    kwargs = {k: v for k, v in offered.items() if (k in named or var_kw) and v is not None}
    kwargs.update(spec.params)
    return factory(**kwargs)


# ------------------------------------------------------------------------------ scoring
def score_predictions(
    ds: Dataset, test: np.ndarray, risk: np.ndarray, cause: int
) -> list[dict[str, float]]:
    """AUC and Brier of predicted CIFs ``risk`` (n_test, n_horizons) at the cause's horizons."""
    t, e = ds.y["time"][test], ds.y["event"][test]
    rows = []
    for j, h in enumerate(ds.horizons[cause]):
        r = risk[:, j]
        ok = bool(np.all(np.isfinite(r)))
        rows.append(
            {
                "horizon": float(h),
                "n_test": int(test.size),
                "n_cases": int(np.sum((t <= h) & (e == cause))),
                "auc": auc_cr(t, e, r, cause, h) if ok else np.nan,
                # Brier needs probabilities; a CSC risk of -0.0007 counts as 0 (as it would
                # be reported), and the row records how many predictions were clipped.
                "brier": brier_cr(t, e, np.clip(r, 0.0, 1.0), cause, h) if ok else np.nan,
                "n_out_of_range": int(np.sum((r < -RANGE_TOLERANCE) | (r > 1 + RANGE_TOLERANCE))),
            }
        )
    return rows


def score_r_models(ds: Dataset, causes: list[int]) -> pd.DataFrame:
    """Score riskRegression's CSC and FGR predictions (exported by the R script)."""
    preds = {cause: ds.r_predictions(cause) for cause in causes}
    rows = []
    for s in range(1, ds.n_splits + 1):
        test = np.flatnonzero(~ds.splits[:, s - 1])
        for cause in causes:
            pred = preds[cause]
            risk_cols = [f"risk_{h:g}" for h in ds.horizons[cause]]
            for model in R_MODELS:
                sub = pred[(pred.split == s) & (pred.model == model)]
                risk = sub.set_index("row").loc[test, risk_cols].to_numpy(dtype=float)
                for r in score_predictions(ds, test, risk, cause):
                    rows.append(
                        {
                            "dataset": ds.name,
                            "split": s,
                            "cause": cause,
                            "model": model,
                            "fit_seconds": np.nan,
                            "predict_seconds": np.nan,
                            **r,
                        }
                    )
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def _check_cif(cif: object, n: int, n_times: int, label: str) -> np.ndarray:
    cif = np.asarray(cif, dtype=float)
    if cif.ndim != 3 or cif.shape[0] != n or cif.shape[2] != n_times or cif.shape[1] < N_CAUSES:
        raise ValueError(
            f"model {label!r}: predict_cif returned shape {cif.shape}, expected "
            f"({n}, >= {N_CAUSES}, {n_times})"
        )
    if not np.all(np.isfinite(cif)):
        raise ValueError(f"model {label!r}: predict_cif returned non-finite values")
    return cif


def score_split(
    spec: ModelSpec, ds: Dataset, split: int, causes: list[int], n_jobs: int
) -> list[dict]:
    """Fit the model on one training split and score it on the test split, per cause."""
    train = ds.splits[:, split - 1]
    test = np.flatnonzero(~train)
    fit_causes = [[c] for c in causes] if fits_per_cause(spec) else [causes]
    rows = []
    for group in fit_causes:
        est = build_estimator(spec, ds, group[0] if len(group) == 1 else None, split, n_jobs)
        start = time.perf_counter()
        est.fit(ds.X[train], ds.y[train])
        fitted = time.perf_counter()
        times = ds.all_horizons
        cif = _check_cif(
            est.predict_cif(ds.X[test], times=times), test.size, times.size, spec.label
        )
        predicted = time.perf_counter()
        for cause in group:
            columns = np.searchsorted(times, ds.horizons[cause])
            for r in score_predictions(ds, test, cif[:, cause - 1, columns], cause):
                rows.append(
                    {
                        "dataset": ds.name,
                        "split": split,
                        "cause": cause,
                        "model": spec.label,
                        "fit_seconds": fitted - start,
                        "predict_seconds": predicted - fitted,
                        **r,
                    }
                )
    return rows


def score_model(
    spec: ModelSpec,
    ds: Dataset,
    causes: list[int],
    splits: list[int],
    n_jobs: int,
    progress: Callable[[str], None] = print,
) -> pd.DataFrame:
    """All requested splits of one data set. Splits run in ``n_jobs`` processes when the factory
    cannot use the cores itself (no ``n_jobs`` parameter); otherwise serially, the model
    parallel inside."""
    if takes_n_jobs(spec) or n_jobs == 1:
        rows = []
        for s in splits:
            rows += score_split(spec, ds, s, causes, n_jobs)
            progress(f"{spec.label} {ds.name} split {s} done")
    else:
        from joblib import Parallel, delayed

        parts = Parallel(n_jobs=n_jobs)(
            delayed(score_split)(spec, ds, s, causes, 1) for s in splits
        )
        rows = [r for part in parts for r in part]
        progress(f"{spec.label} {ds.name} splits {splits[0]}..{splits[-1]} done")
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)
