"""The per-patient report: content, HTML sections, the PDF page, and the CLI."""

from __future__ import annotations

import json
import re
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from features.config import ENDPOINTS, HORIZONS_MONTHS, MAIN_HORIZON_MONTHS
from serving.report import PatientFileError, build_report, per_hundred
from serving.report_cli import EXIT_INVALID, register
from serving.report_render import render_html, render_pdf
from tests.bundle_factory import small_bundle

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "example_patient.json"
REQUIRED_SECTIONS = (
    "header",
    "disclaimer",
    "inputs",
    "model",
    "use",
    *(f"risk-{e}" for e in ENDPOINTS),
    *(f"factors-{e}" for e in ENDPOINTS),
)


@pytest.fixture(scope="module")
def bundle():
    return small_bundle()


@pytest.fixture(scope="module")
def patient():
    return json.loads(EXAMPLE.read_text())


@pytest.fixture(scope="module")
def report(bundle, patient):
    return build_report(bundle, patient)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.srcs: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        if tag in ("link", "script", "iframe") or (tag == "a" and "href" in a):
            self.external.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _pdf_text(data: bytes) -> tuple[int, str]:
    """(number of pages, the text shown) of an fpdf2 file: inflate the streams, read Tj strings."""
    pages = len(re.findall(rb"/Type\s*/Page\b(?!s)", data))
    chunks = []
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            chunks.append(zlib.decompress(m.group(1)))
        except zlib.error:
            chunks.append(m.group(1))
    shown = []
    for c in chunks:
        for s in re.findall(rb"\((.*?)(?<!\\)\)\s*Tj", c, re.S):
            shown.append(s.replace(rb"\(", b"(").replace(rb"\)", b")").decode("latin-1"))
    return pages, " ".join(shown)


def test_report_content_matches_the_model(bundle, patient, report):
    X = bundle.features(__import__("pandas").DataFrame([patient]))
    for s in report.sections:
        cif = bundle.models[s.endpoint].predict_cif(X, HORIZONS_MONTHS)[0, 0]
        np.testing.assert_allclose([r.estimate for r in s.risks], cif, atol=1e-12)
        assert all(r.lower <= r.estimate <= r.upper for r in s.risks)
        assert 3 <= len(s.factors) <= 5
        assert all(("EQD2" not in f.description) or "Gy" in f.description for f in s.factors)
    assert any("re-irradiation EQD2" in d and d.endswith("Gy") for d in report.derived)
    assert report.model["n_trees"] == {e: 50 for e in ENDPOINTS}
    assert report.model["kind"] == "competing-risks random survival forest (50 trees per endpoint)"
    assert report.model["kind"] in render_html(report)


def test_an_ensemble_is_named_as_such():
    from features.pipeline import build_features, encode_endpoint
    from features.synthetic import simulate_cohort
    from models.ensemble import CompetingRiskEnsemble
    from serving.report import model_kind

    df = simulate_cohort(120, seed=1)
    model = CompetingRiskEnsemble(forest_leaf_sizes=(10,), n_estimators=8, cv=3, random_state=0)
    model.fit(build_features(df), encode_endpoint(df, ENDPOINTS[0]))
    kind = model_kind(model)
    assert kind.startswith("stacked competing-risks ensemble") and "cox" in kind
    assert "forest (" not in kind


def test_per_hundred_wording():
    assert per_hundred(0.123) == "12 in 100"
    assert per_hundred(0.004) == "<1 in 100"


def test_html_has_every_section_and_no_external_asset(report):
    html = render_html(report)
    parsed = _Collect()
    parsed.feed(html)
    missing = [s for s in REQUIRED_SECTIONS if s not in parsed.ids]
    assert not missing, missing
    assert len(parsed.srcs) == 2 * len(ENDPOINTS)
    assert all(src.startswith("data:image/png;base64,") for src in parsed.srcs)
    assert not parsed.external
    text = " ".join(parsed.text)
    for s in report.sections:
        for r in s.risks:
            assert r.in_hundred in text
        for f in s.factors:
            assert f.description in text
    for phrase in ("not causal", "synthetic data", "Intended use", "Out of scope", "AUC"):
        assert phrase in text


def test_pdf_is_one_page_with_the_risks(report):
    pages, text = _pdf_text(render_pdf(report))
    assert pages == 1
    for s in report.sections:
        assert " ".join(r.in_hundred for r in s.risks[:1]) in text
        assert s.risk_at(MAIN_HORIZON_MONTHS).in_hundred in text
    assert "not causal" in text and "synthetic data" in text


def test_invalid_patient_is_refused_with_every_violation(bundle, patient):
    bad = dict(patient, age_years=12, sex="other")
    bad.pop("gtv_cm3")
    with pytest.raises(PatientFileError) as err:
        build_report(bundle, bad)
    for field in ("age_years", "sex", "gtv_cm3"):
        assert field in str(err.value)


def test_cli_writes_html_and_pdf_and_refuses_bad_input(bundle, tmp_path):
    path = tmp_path / "bundle.joblib"
    bundle.save(path)
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps `report` a sub-command
    runner = CliRunner()
    for fmt in ("html", "pdf"):
        out = tmp_path / "out" / f"r.{fmt}"
        res = runner.invoke(
            app, ["report", "--patient", str(EXAMPLE), "--bundle", str(path), "--out", str(out)]
        )
        assert res.exit_code == 0, res.output
        head = out.read_bytes()[:5]
        assert head == (b"%PDF-" if fmt == "pdf" else b"<!DOC")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r.html", "r.pdf"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"patient_id": "B1", "age_years": 12}))
    res = runner.invoke(
        app,
        [
            "report",
            "--patient",
            str(bad),
            "--bundle",
            str(path),
            "--out",
            str(tmp_path / "bad.html"),
        ],
    )
    assert res.exit_code == EXIT_INVALID
    assert "age_years" in res.output and not (tmp_path / "bad.html").exists()


def test_unusual_patient_still_fits_one_page(bundle, patient):
    extreme = dict(
        patient,
        age_years=99,
        ttr_months=590,
        gtv_cm3=480,
        primary_dose_gy=89,
        primary_fraction_gy=4.0,
        reirr_dose_gy=89,
        reirr_fraction_gy=4.0,
        reirr_fractions_per_day=2,
        preexisting_necrosis=True,
        prior_grade3_toxicity=True,
    )
    report = build_report(bundle, extreme)
    assert report.warnings and len(report.warnings) <= 4
    assert any("outside" in w for w in report.warnings)
    pages, _ = _pdf_text(render_pdf(report))
    assert pages == 1


def test_an_output_suffix_that_does_not_match_the_format_is_refused(bundle, tmp_path):
    path = tmp_path / "bundle.joblib"
    bundle.save(path)
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    runner = CliRunner()
    base = ["report", "--patient", str(EXAMPLE), "--bundle", str(path)]
    for out, extra in (("r.html", ["--format", "pdf"]), ("r.pdf", ["--format", "html"]),
                       ("r.txt", []), ("r", [])):
        res = runner.invoke(app, [*base, "--out", str(tmp_path / out), *extra])
        assert res.exit_code == 2, (out, res.output)
        assert not (tmp_path / out).exists()
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "r.htm")])
    assert res.exit_code == 0 and (tmp_path / "r.htm").read_bytes()[:5] == b"<!DOC"


def test_a_validated_patient_gives_the_same_report(bundle, patient, report):
    from features.schema import PatientInput

    again = build_report(bundle, PatientInput.model_validate(patient))
    assert again.inputs == report.inputs and again.derived == report.derived
    for a, b in zip(again.sections, report.sections, strict=True):
        assert [(r.estimate, r.lower, r.upper) for r in a.risks] == \
            [(r.estimate, r.lower, r.upper) for r in b.risks]
        assert [f.description for f in a.factors] == [f.description for f in b.factors]
