"""training.model_factory: the configured architecture, its candidates and its model card line."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pydantic import ValidationError

from features.config import ENDPOINTS
from features.pipeline import build_features, encode_endpoint
from features.synthetic import simulate_cohort
from features.timegrid import DEFAULT_GRID
from models.bundle import ModelBundle
from models.ensemble import CompetingRiskEnsemble
from models.forest import CompetingRiskForest
from training.config import TrainConfig, load_config
from training.evaluate import REGISTERED, fit_all, make_baseline, predict_horizons
from training.model_card import build_model_card
from training.model_factory import (
    build_model,
    candidate_models,
    describe_model,
    member_candidates,
    needs_tuning,
)

ENSEMBLE_CONFIG = {
    "model": {"kind": "ensemble", "params": {"forest_leaf_sizes": [5, 20], "cv": 3}},
    "forest": {"n_estimators": 12},
    "baselines": {"models": []},
}


def test_default_is_the_tuned_forest():
    cfg = load_config("quick")
    assert cfg.model.kind == "forest" and needs_tuning(cfg)
    model = build_model(cfg, seed=4, params={"min_samples_leaf": 20}, n_jobs=2)
    assert isinstance(model, CompetingRiskForest)
    assert (model.min_samples_leaf, model.random_state, model.n_jobs) == (20, 4, 2)
    assert model.n_estimators == cfg.forest.n_estimators
    assert build_model(cfg, 4, n_estimators=7).n_estimators == 7
    assert list(candidate_models(cfg, 4)) == ["forest"]


def test_ensemble_from_the_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[model]\nkind = "ensemble"\nparams = { forest_leaf_sizes = [5, 20], cv = 3 }\n'
        "[forest]\nn_estimators = 12\n"
    )
    cfg = load_config(path)
    assert not needs_tuning(cfg)
    model = build_model(cfg, seed=9, params={"min_samples_leaf": 99})
    assert isinstance(model, CompetingRiskEnsemble)
    assert model.forest_leaf_sizes == (5, 20) and model.cv == 3
    assert (model.n_estimators, model.random_state, model.n_causes) == (12, 9, 2)
    cands = candidate_models(cfg, seed=9)
    assert list(cands) == [
        "ensemble",
        "ensemble:forest_leaf5",
        "ensemble:forest_leaf20",
        "ensemble:cox",
    ]
    assert cands["ensemble:forest_leaf20"].min_samples_leaf == 20
    assert cands["ensemble:forest_leaf5"].n_estimators == 12
    with pytest.raises(ValidationError):
        TrainConfig.model_validate({"model": {"kind": "boosting"}})


def test_the_job_fits_the_configured_ensemble_and_the_card_names_members_and_weights():
    cfg = TrainConfig.model_validate(ENSEMBLE_CONFIG)
    df = simulate_cohort(160, seed=2)
    X = build_features(df).reset_index(drop=True)
    y = {e: encode_endpoint(df, e) for e in ENDPOINTS}
    models, tuned = fit_all(X, y, np.arange(len(X)), cfg, seed=1)
    assert all(isinstance(m, CompetingRiskEnsemble) for m in models[REGISTERED].values())
    assert all(t["params"] == {} for t in tuned.values())
    model = models[REGISTERED][ENDPOINTS[0]]
    line = describe_model(model)
    for name, _ in model.members_:
        assert name in line
    assert f"weight {model.weights_[0, 0]:.2f})" in line  # shared weights: one number each
    cox = dict(model.members_)["cox"]
    assert "ridge penalty per cause " + "/".join(f"{a:.3g}" for a in cox.alphas_) in line
    members = member_candidates(models[REGISTERED])
    assert list(members) == ["ensemble:forest_leaf5", "ensemble:forest_leaf20", "ensemble:cox"]
    alone = candidate_models(cfg, seed=0)["ensemble:cox"]
    assert type(members["ensemble:cox"][ENDPOINTS[0]]) is type(alone)
    assert member_candidates({e: CompetingRiskForest() for e in ENDPOINTS}) == {}
    # members fitted on the ensemble's array are scored on the job's frame without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rule = make_baseline("published_rule", cfg, seed=0).fit(X, y[ENDPOINTS[0]])
        for per_endpoint in [models[REGISTERED], *members.values(), {"rule": rule}]:
            for m in per_endpoint.values():  # the rule reads columns by name: it keeps the frame
                assert predict_horizons(m, X, np.array([12.0, 24.0])).shape == (len(X), 2)
    bundle = ModelBundle(
        models=models[REGISTERED],
        grid=DEFAULT_GRID,
        training_summary={},
        metrics={},
        provenance={"tuned_params": {e: {} for e in ENDPOINTS}},
    )
    card = build_model_card(bundle, {"sha256": "ab" * 32})
    assert "stacked ensemble" in card and "forest_leaf20" in card and "cox" in card
