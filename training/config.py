"""The training job's configuration: one typed, validated place, loadable from TOML.

Everything that changes what a training run computes or decides lives here (the tuning grid,
the cross-validation folds and repeats, seeds, the hold-out salt and fraction, the promotion
gate's tolerances and limits), and the whole config is logged with every run, so that the
acceptance rule is fixed *before* training and can be read back afterwards. Two presets ship
in ``training/configs``: ``quick`` (``make up`` and the tests) and ``release``.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.config import ENDPOINTS, HORIZONS_MONTHS, MAIN_HORIZON_MONTHS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PRESETS: tuple[str, ...] = ("quick", "release")
DEFAULT_PRESET = "release"

BaselineName = Literal["cox", "xgb", "published_rule"]
ModelKind = Literal["forest", "ensemble"]
REPLACED_GATE_KEYS: tuple[str, ...] = (
    "auc_tolerance",
    "brier_tolerance",
    "require_holdout_metrics",
)
"""Keys of the old point-estimate gate, refused with a message naming their replacement."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ForestConfig(_Strict):
    """Forest settings that are not tuned; ``grid`` lists the tuned ones (product of values)."""

    n_estimators: int = Field(100, ge=1)
    grid: dict[str, list[int | float | str | None]] = Field(
        default_factory=lambda: {"min_samples_leaf": [10, 20]}
    )
    fixed: dict[str, int | float | str | None] = Field(default_factory=dict)

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not grid or any(len(v) == 0 for v in grid.values()):
            raise ValueError("the tuning grid needs at least one value per parameter")
        return grid


class ModelConfig(_Strict):
    """The registered architecture (built by ``training.model_factory.build_model``).

    ``forest``: one tuned :class:`~models.forest.CompetingRiskForest` per endpoint (settings in
    ``[forest]``, leaf size by the tuning grid). ``ensemble``: a
    :class:`~models.ensemble.CompetingRiskEnsemble` per endpoint, whose super learner chooses
    its members' weights (and so the leaf size) by cross-validation inside ``fit``; ``params``
    are its keyword arguments (for example ``forest_leaf_sizes = [5, 30]``, ``cv = 5``),
    with ``[forest].n_estimators`` trees per forest member unless ``params`` says otherwise.
    """

    kind: ModelKind = "forest"
    params: dict[str, int | float | str | bool | list[int | float] | None] = Field(
        default_factory=dict
    )


class TuningConfig(_Strict):
    """Cross-validated grid search: folds split by patient, scored by the integrated Brier."""

    cv_folds: int = Field(3, ge=2)
    n_estimators: int | None = Field(None, ge=1)
    """Trees per forest while tuning (None: as many as the final forest). Fewer trees rank the
    grid points the same way at a fraction of the cost; the final forest uses all of them."""


class EvaluationConfig(_Strict):
    """Repeated K-fold cross-validation: every modelling step redone inside each fold."""

    cv_folds: int = Field(5, ge=2)
    cv_repeats: int = Field(1, ge=1)
    """Repeats of the K-fold split (different seeds); figures are averaged over repeats."""
    stratify: bool = True
    """Folds with equal shares of each outcome (training.evaluate.outcome_strata): pooled
    out-of-fold AUCs are pessimistic without it."""
    n_interval_bootstrap: int = Field(200, ge=20)
    """Bootstrap replicates of patients for the 95 % intervals of the validated figures."""
    horizons_months: tuple[int, ...] = HORIZONS_MONTHS
    decision_thresholds: tuple[float, ...] = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
    age_band_edges: tuple[float, ...] = (45.0, 60.0)
    """Age bands for subgroup metrics: below the first edge, between, at or above the last."""
    min_subgroup_size: int = Field(20, ge=1)
    """Smaller subgroups are reported with their size but no metrics."""


class HoldoutConfig(_Strict):
    """Hold-out by a salted hash of patient_id: a patient's side never changes across exports."""

    salt: str = Field("reirrad-holdout-v1", min_length=1)
    fraction: float = Field(0.2, gt=0.0, lt=1.0)


class GateConfig(_Strict):
    """The promotion rule, stated before training (applied by training/gate.py).

    A challenger becomes champion when, for every gated endpoint, (a) its validated AUC at
    ``horizon_months`` is at least ``min_auc`` and its validated ICI at most ``max_ici``
    (absolute limits, which alone decide for the first model ever), and (b) on the hold-out
    patients neither model trained on, the paired-bootstrap 95 % interval of the AUC
    difference (challenger - champion) lies above ``-auc_margin`` and that of the Brier
    difference below ``brier_margin``. With fewer than ``min_holdout_events`` events of
    interest by the horizon in the hold-out (any gated endpoint) nothing is promoted
    ("insufficient evidence": promote by hand). The margins and why they were chosen:
    benchmarks/RESULTS.md, "Promotion gate".
    """

    horizon_months: int = MAIN_HORIZON_MONTHS
    endpoints: tuple[str, ...] = ENDPOINTS
    min_auc: float = Field(0.60, ge=0.0, le=1.0)
    max_ici: float = Field(0.08, gt=0.0, le=1.0)
    auc_margin: float = Field(0.10, ge=0.0, le=1.0)
    """Non-inferiority margin: the hold-out AUC difference's 95 % lower bound must exceed
    minus this."""
    brier_margin: float = Field(0.01, ge=0.0, le=1.0)
    """The hold-out Brier difference's 95 % upper bound must stay below this."""
    min_holdout_events: int = Field(20, ge=1)
    """Fewer events of interest by the horizon in the hold-out (any gated endpoint): no
    decision, promote by hand."""
    n_bootstrap: int = Field(1000, ge=100)
    """Paired bootstrap replicates of the hold-out for the difference intervals."""

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            old = sorted(k for k in REPLACED_GATE_KEYS if k in data)
            if old:
                raise ValueError(
                    f"gate.{', gate.'.join(old)}: replaced by gate.auc_margin and "
                    "gate.brier_margin (bounds on the 95 % interval of the paired hold-out "
                    "difference, not tolerances on point estimates) and gate.min_holdout_events"
                )
        return data

    @field_validator("endpoints")
    @classmethod
    def _known(cls, endpoints: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [e for e in endpoints if e not in ENDPOINTS]
        if unknown:
            raise ValueError(f"unknown endpoint(s) {unknown}; expected {ENDPOINTS}")
        return endpoints


class BaselinesConfig(_Strict):
    """Comparators fitted and evaluated exactly like the forest (no tuning)."""

    models: tuple[BaselineName, ...] = ("cox", "xgb", "published_rule")
    params: dict[str, dict[str, int | float | str | None]] = Field(default_factory=dict)


class IntervalsConfig(_Strict):
    """Per-patient intervals (models/intervals.py): refits of the registered model on cohorts
    simulated from it, at training time; serving only looks them up."""

    n_resamples: int = Field(8, ge=2)
    n_estimators: int | None = Field(50, ge=1)
    """Trees per forest in each refit (None: as many as the registered model). Fewer trees
    make the refits cheap; their extra Monte-Carlo noise only widens the intervals."""


class SyntheticConfig(_Strict):
    """The cohort `make up` trains on when no champion exists (a modern mix of schedules)."""

    n: int = Field(800, ge=50)
    seed: int = 20240601
    overrides: dict[str, float | int | str] = Field(
        default_factory=lambda: {"twice_daily_share": 0.2}
    )


class TrainConfig(_Strict):
    """Everything a training run needs to know besides the data and the tracking store."""

    name: str = "custom"
    seed: int = 20240601
    experiment_name: str = "reirrad-training"
    model_name: str = "reirrad-toxicity"
    n_workers: int = Field(2, ge=1)
    """Local worker processes for tuning and bootstrap (Ray decides on a cluster)."""
    fit_n_jobs: int = Field(2, ge=1)
    """Threads for the final fits, outside the task engine."""
    min_rows: int = Field(50, ge=10)
    model: ModelConfig = ModelConfig()
    forest: ForestConfig = ForestConfig()
    tuning: TuningConfig = TuningConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    holdout: HoldoutConfig = HoldoutConfig()
    gate: GateConfig = GateConfig()
    intervals: IntervalsConfig = IntervalsConfig()
    baselines: BaselinesConfig = BaselinesConfig()
    synthetic: SyntheticConfig = SyntheticConfig()

    @model_validator(mode="after")
    def _gate_horizon_evaluated(self) -> TrainConfig:
        if self.gate.horizon_months not in self.evaluation.horizons_months:
            raise ValueError("gate.horizon_months must be one of evaluation.horizons_months")
        return self

    def with_kind(self, kind: str | None) -> TrainConfig:
        """A copy that registers another architecture, named ``<name>+<kind>`` (benchmarks
        measure the release ensemble with the quick preset's tree counts this way)."""
        if kind is None:
            return self
        model = self.model.model_copy(update={"kind": kind})
        return self.model_copy(update={"model": model, "name": f"{self.name}+{kind}"})

    def with_seed(self, seed: int | None) -> TrainConfig:
        """A copy with another seed (the CLI's --seed)."""
        return self if seed is None else self.model_copy(update={"seed": int(seed)})

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON: identifies the exact rule a run was judged by."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def flat_params(self) -> dict[str, str]:
        """Dotted keys -> strings, for MLflow params."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                out[prefix] = json.dumps(value) if isinstance(value, list | tuple) else str(value)

        walk("", self.model_dump(mode="json"))
        return out


def load_config(source: str | Path | None = None) -> TrainConfig:
    """A preset name (``quick``, ``release``), a TOML file or a JSON file (``.json``, as
    written by ``TrainConfig.model_dump_json``); None means the release preset."""
    if source is None:
        source = DEFAULT_PRESET
    text = str(source)
    path = CONFIG_DIR / f"{text}.toml" if text in PRESETS else Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"config {text!r}: no such preset ({PRESETS}) or TOML file")
    if path.suffix.lower() == ".json":
        return TrainConfig.model_validate_json(path.read_text())
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return TrainConfig.model_validate(data)
