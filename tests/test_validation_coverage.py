"""The measured coverage of the validated figures' intervals, as the product quotes it."""

from __future__ import annotations

import json

from models.ensemble import CompetingRiskEnsemble
from models.forest import CompetingRiskForest
from training.validation_coverage import COVERAGE_FILE, coverage_entry, coverage_sentence

NEC, HAEM = "mucosal_necrosis", "fatal_haemorrhage"
RECORD = {
    "mix": "modern mix",
    "design": "1 x 10-fold stratified cross-validation",
    "measured": "2026-12-03",
    "by_model": {
        "ensemble": {
            "by_n": {
                "2000": {"runs": 10, "auc": {NEC: 0.9, HAEM: 1.0}, "brier": {NEC: 0.9, HAEM: 0.9}},
                "600": {"runs": 20, "auc": {NEC: 0.95, HAEM: 0.85}, "brier": {NEC: 1.0, HAEM: 0.9}},
            }
        }
    },
}


def test_the_entry_is_the_record_of_the_models_kind(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(RECORD))
    entry = coverage_entry(CompetingRiskEnsemble(), path)
    assert entry["model"] == "ensemble" and entry["design"] == RECORD["design"]
    assert set(entry["by_n"]) == {"600", "2000"}
    assert coverage_entry(CompetingRiskForest(), path) is None  # not measured for forests
    assert coverage_entry(CompetingRiskEnsemble(), tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert coverage_entry(CompetingRiskEnsemble(), tmp_path / "bad.json") is None


def test_the_sentence_quotes_every_share_in_order_of_n_and_says_when_it_is_short():
    entry = {**{k: v for k, v in RECORD.items() if k != "by_model"}, "model": "ensemble"}
    entry.update(RECORD["by_model"]["ensemble"])
    text = coverage_sentence(entry)
    assert text.index("n = 600 (20 runs): AUC 95 % / 85 %") < text.index("n = 2000 (10 runs)")
    assert "Brier 100 % / 90 %" in text
    assert "Bengio & Grandvalet" in text  # 85 % is short of nominal: the reason is given
    full = json.loads(json.dumps(entry))
    for row in full["by_n"].values():
        for m in ("auc", "brier"):
            row[m] = {k: 0.95 for k in row[m]}
    assert "Bengio" not in coverage_sentence(full)
    assert "not been measured" in coverage_sentence(None)


def test_the_shipped_record_covers_the_registered_kind_at_the_default_n():
    """The release preset registers the ensemble and `make up` trains on 600 patients: the
    file the job quotes must say how the intervals fared there."""
    data = json.loads(COVERAGE_FILE.read_text())
    row = data["by_model"]["ensemble"]["by_n"]["600"]
    assert row["runs"] >= 20
    for m in ("auc", "brier"):
        assert set(row[m]) == {"mucosal_necrosis", "fatal_haemorrhage"}
        assert all(0.0 <= v <= 1.0 for v in row[m].values())
