"""A small real model bundle for tests: forests fitted on a seeded synthetic cohort.

Cached per process (the same arguments give the same object), so several test modules can
share one fit; callers must not mutate it.
"""

from __future__ import annotations

from functools import lru_cache

from features.config import ENDPOINTS
from features.pipeline import build_features, encode_endpoint
from features.players import background_inputs
from features.schema import validated_frame
from features.synthetic import simulate_cohort
from features.timegrid import DEFAULT_GRID
from models.bundle import ModelBundle, summarise_training_data
from models.forest import CompetingRiskForest

N_CAUSES = 2
TEST_N_JOBS = 2
BACKGROUND_SIZE = 30
"""The explanations' background (K) of test bundles: small, so that tests stay fast."""


@lru_cache(maxsize=4)
def small_bundle(n: int = 300, n_estimators: int = 50, seed: int = 0) -> ModelBundle:
    """Both endpoints' forests fitted on ``n`` synthetic patients (seeded)."""
    records = validated_frame(simulate_cohort(n, seed=seed), require_outcomes=True)
    X = build_features(records)
    models = {
        e: CompetingRiskForest(
            n_estimators=n_estimators, n_causes=N_CAUSES, n_jobs=TEST_N_JOBS, random_state=seed
        ).fit(X, encode_endpoint(records, e))
        for e in ENDPOINTS
    }
    return ModelBundle(
        models=models,
        grid=DEFAULT_GRID,
        training_summary=summarise_training_data(X, records),
        metrics={"test_bundle": True},
        provenance={
            "model_name": "test-forest",
            "model_version": f"test-n{n}-t{n_estimators}-s{seed}",
            "training_data_sha256": "0" * 64,
            "seed": seed,
        },
        background=background_inputs(records, size=BACKGROUND_SIZE, seed=seed),
    )
