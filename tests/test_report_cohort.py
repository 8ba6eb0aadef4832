"""The cohort report and the model card: sections present, numbers consistent, CLI works."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from features.config import ENDPOINTS, HORIZONS_MONTHS
from features.schema import validated_frame
from features.synthetic import simulate_cohort
from tests.bundle_factory import small_bundle
from training.cohort_report import build_cohort_report, render_cohort_report
from training.data import Cohort
from training.model_card import build_model_card
from training.report_cli import register
from training.tripod import TRIPOD_AI

SECTIONS = (
    "header",
    "data",
    "performance",
    "calibration",
    "decision-curves",
    "explanations",
    "tripod",
    *(f"importance-{e}" for e in ENDPOINTS),
)


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.srcs.append(a.get("src", ""))


@pytest.fixture(scope="module")
def bundle():
    return small_bundle()


@pytest.fixture(scope="module")
def cohort():
    records = validated_frame(simulate_cohort(200, seed=31), require_outcomes=True)
    return Cohort.from_records(records)


@pytest.fixture(scope="module")
def report(bundle, cohort):
    return build_cohort_report(bundle, cohort, "test cohort", n_boot=20, max_explain=40)


def test_cohort_report_sections_and_figures(report):
    parsed = _Ids()
    parsed.feed(render_cohort_report(report))
    assert not [s for s in SECTIONS if s not in parsed.ids]
    assert len(parsed.srcs) == 5 * len(ENDPOINTS)
    assert all(s.startswith("data:image/png;base64,") for s in parsed.srcs)


def test_performance_intervals_bracket_the_estimates(report):
    rows = report.context["performance"]
    assert len(rows) == len(ENDPOINTS) * len(HORIZONS_MONTHS)
    for r in rows:
        if np.isfinite(r["auc"]):
            lo, hi = r["auc_ci"]
            assert lo <= hi and 0 <= lo <= 1 and 0 <= hi <= 1
        lo, hi = r["brier_ci"]
        assert lo <= r["brier"] * 1.5 and hi >= r["brier"] * 0.5


def test_importance_tables_rank_inputs(report):
    for e in ENDPOINTS:
        table = report.context["importance"][e]
        assert table.shape[1] == len(HORIZONS_MONTHS)
        assert table.iloc[0, 2] >= table.iloc[-1, 2]
        assert table.iloc[0, 2] > 0


def test_data_summary_counts(report, cohort):
    data = report.context["data"]
    assert data["n"] == len(cohort)
    for e, summary in zip(ENDPOINTS, data["endpoints"], strict=True):
        ev = cohort.y[e]["event"]
        assert summary["events"] + summary["competing"] + summary["censored"] == len(ev)


def test_model_card_has_the_required_sections(bundle):
    card = build_model_card(bundle, {"sha256": "ab" * 32}, {"gate": {"passed": True}})
    for heading in (
        "## Model details",
        "## Intended use",
        "## Out of scope",
        "## Training data",
        "## Performance",
        "## Uncertainty",
        "## TRIPOD+AI items",
    ):
        assert heading in card
    assert card.count("\n| ") >= len(TRIPOD_AI)
    assert "not causal" in card and "synthetic data" in card
    assert "Promotion gate: passed" in card


def test_cli_model_card_and_cohort_report(bundle, tmp_path):
    path = tmp_path / "b.joblib"
    bundle.save(path)
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    res = runner.invoke(app, ["model-card", "--bundle", str(path), "--out", str(tmp_path / "c.md")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c.md").read_text().startswith("# Model card")
    res = runner.invoke(
        app,
        [
            "cohort-report",
            "--bundle",
            str(path),
            "--out",
            str(tmp_path / "r.html"),
            "--synthetic-n",
            "150",
            "--n-bootstrap",
            "5",
            "--max-explain",
            "20",
        ],
    )
    assert res.exit_code == 0, res.output
    assert '<section id="performance">' in (tmp_path / "r.html").read_text()
    res = runner.invoke(
        app,
        [
            "model-card",
            "--bundle",
            str(tmp_path / "missing.joblib"),
            "--out",
            str(tmp_path / "x.md"),
        ],
    )
    assert res.exit_code == 3


def test_cli_defaults_mirror_the_report_defaults():
    from training import cohort_report, report_cli

    assert report_cli.DEFAULT_BOOTSTRAP == cohort_report.DEFAULT_BOOTSTRAP
    assert report_cli.DEFAULT_MAX_EXPLAIN == cohort_report.DEFAULT_MAX_EXPLAIN
