"""Units of the training job: config, data fingerprint and hold-out, seeds, folds, the gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from features.synthetic import simulate_cohort
from training.config import PRESETS, GateConfig, TrainConfig, load_config
from training.data import canonical_sha256, holdout_mask, prepare
from training.engine import LocalEngine, task_seed
from training.tune import grid_points, patient_folds


def test_presets_load_and_differ():
    quick, release = (load_config(p) for p in PRESETS)
    assert release.model.kind == "ensemble"  # issue 10: the job registers the ensemble
    assert release.forest.n_estimators >= 200
    assert quick.forest.n_estimators < release.forest.n_estimators
    assert quick.evaluation.cv_repeats <= release.evaluation.cv_repeats
    assert quick.fingerprint() != release.fingerprint()
    assert quick.gate.horizon_months in quick.evaluation.horizons_months


def test_config_file_and_seed_override(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\nseed = 5\n[evaluation]\ncv_folds = 3\n')
    cfg = load_config(path)
    assert (cfg.name, cfg.seed, cfg.evaluation.cv_folds) == ("x", 5, 3)
    assert cfg.with_seed(9).seed == 9 and cfg.with_seed(None).seed == 5
    assert cfg.with_seed(9).fingerprint() != cfg.fingerprint()


def test_config_refuses_unknown_keys_and_ungated_horizons(tmp_path):
    with pytest.raises(ValidationError):
        TrainConfig.model_validate({"n_bootstrap": 3})
    with pytest.raises(ValidationError):
        TrainConfig.model_validate({"gate": {"horizon_months": 18}})
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.toml")


def test_holdout_depends_on_the_key_and_salt_only():
    ids = [f"P{i:05d}" for i in range(4000)]
    mask = holdout_mask(ids, "salt-a", 0.2)
    assert 0.17 < mask.mean() < 0.23
    # the same patient lands on the same side whatever else is in the export
    sub = holdout_mask(ids[::7][::-1], "salt-a", 0.2)
    np.testing.assert_array_equal(sub, mask[::7][::-1])
    assert not np.array_equal(holdout_mask(ids, "salt-b", 0.2), mask)


def test_data_hash_ignores_row_and_column_order_but_not_values():
    df = simulate_cohort(120, seed=3)
    a = prepare(df, "a", "s", 0.2, 10)
    shuffled = df.sample(frac=1.0, random_state=1)[list(df.columns[::-1])]
    assert prepare(shuffled, "b", "s", 0.2, 10).sha256 == a.sha256
    changed = df.copy()
    changed.loc[0, "gtv_cm3"] = float(changed.loc[0, "gtv_cm3"]) + 1.0
    assert prepare(changed, "c", "s", 0.2, 10).sha256 != a.sha256
    assert len(a.development) + len(a.holdout) == 120
    assert not set(a.development.records.patient_id) & set(a.holdout.records.patient_id)


def test_canonical_hash_is_sha256_hex():
    h = canonical_sha256(pd.DataFrame({"patient_id": ["b", "a"], "age_years": [1.0, 2.0]}))
    assert len(h) == 64 and int(h, 16) >= 0


def test_task_seeds_are_deterministic_and_distinct():
    assert task_seed(1, 2, 3) == task_seed(1, 2, 3)
    seeds = {task_seed(1, 3, b) for b in range(200)}
    assert len(seeds) == 200
    assert task_seed(2, 3, 0) != task_seed(1, 3, 0)


def test_patient_folds_keep_duplicates_together():
    groups = np.array([5, 5, 1, 2, 2, 2, 9, 7, 7, 3])
    folds = patient_folds(groups, 3, seed=4)
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    assert set(folds) <= {0, 1, 2}


def test_grid_points_is_the_product():
    cfg = TrainConfig.model_validate(
        {"forest": {"grid": {"min_samples_leaf": [5, 10], "max_features": ["sqrt", 0.5]}}}
    )
    points = grid_points(cfg)
    assert len(points) == 4 and {"min_samples_leaf": 5, "max_features": 0.5} in points


def _square(shared, x):
    return shared * x * x


def test_local_engine_in_process_keeps_task_order():
    # worker processes are exercised by the engine-equivalence test in test_training_job
    tasks = [(i,) for i in range(6)]
    out = LocalEngine(1, progress=False).map(_square, 2, tasks, "t")
    assert out == [2 * i * i for i in range(6)]


# --------------------------------------------------------------------------- the gate
# the rule itself: tests/test_gate.py
def test_the_old_point_estimate_gate_keys_are_refused_with_their_replacement():
    with pytest.raises(ValidationError, match="auc_margin"):
        GateConfig.model_validate({"auc_tolerance": 0.02})
    with pytest.raises(ValidationError, match="replaced"):
        TrainConfig.model_validate({"gate": {"require_holdout_metrics": True}})
    assert GateConfig(auc_margin=0.1).auc_margin == 0.1


def test_with_kind_swaps_the_registered_architecture_and_says_so_in_the_name():
    cfg = load_config("quick")
    assert cfg.with_kind(None) is cfg
    other = cfg.with_kind("ensemble")
    assert (other.model.kind, other.name) == ("ensemble", "quick+ensemble")
    assert other.forest == cfg.forest and cfg.model.kind == "forest"  # the rest, untouched
