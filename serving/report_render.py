"""Render a :class:`serving.report.PatientReport` as self-contained HTML or a one-page PDF.

HTML: a jinja2 template (``serving/templates``) with the pictures inlined as base64 PNG, so
the file has no external assets. PDF: fpdf2 (pure Python, pip-installable, no system
libraries), A4 portrait, one page, built with fpdf2's core fonts.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Literal

from fpdf import FPDF
from jinja2 import Environment, FileSystemLoader, select_autoescape

from features.io import write_bytes_atomic
from serving.report import PatientReport, with_interval
from serving.report_plots import curve_png, icons_png

Format = Literal["html", "pdf"]
TEMPLATE_DIR = Path(__file__).with_name("templates")
TEMPLATE = "patient_report.html.j2"

# PDF layout (mm, A4 portrait)
MARGIN = 10.0
PAGE_W = 210.0
BODY_W = PAGE_W - 2 * MARGIN
LINE = 3.5
SMALL_LINE = 3.0
CURVE_W = 70.0
ICONS_W = 32.0
LEFT_W = BODY_W - CURVE_W - ICONS_W - 4.0
HEAD_RGB = (178, 24, 43)
UP_RGB = (178, 24, 43)
DOWN_RGB = (33, 102, 172)
BANNER_RGB = (251, 233, 231)
GREY_RGB = (90, 90, 90)
_LATIN1 = {
    "≥": ">=",
    "≤": "<=",
    "–": "-",
    "—": "-",
    "α": "alpha",
    "β": "beta",
    "·": "-",
    "’": "'",
    "“": '"',
    "”": '"',
    "³": "3",
}


def _images(report: PatientReport) -> dict[str, dict[str, bytes]]:
    out = {}
    for s in report.sections:
        main = s.risk_at(report.main_horizon)
        out[s.endpoint] = {"curve": curve_png(s), "icons": icons_png(main.estimate, main.upper)}
    return out


def render_html(report: PatientReport, images: dict | None = None) -> str:
    """The report as one self-contained HTML document."""
    images = images or _images(report)
    encoded = {
        e: {k: base64.b64encode(v).decode("ascii") for k, v in d.items()} for e, d in images.items()
    }
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR), autoescape=select_autoescape(["html", "j2"])
    )
    return env.get_template(TEMPLATE).render(r=report, images=encoded, with_interval=with_interval)


def _t(text: str) -> str:
    """fpdf2's core fonts are Latin-1: spell out the few symbols outside it."""
    for k, v in _LATIN1.items():
        text = text.replace(k, v)
    return text.encode("latin-1", "replace").decode("latin-1")


class _Pdf(FPDF):
    def heading(self, text: str) -> None:
        self.ln(1.2)
        self.set_font("Helvetica", "B", 9.5)
        self.set_text_color(*HEAD_RGB)
        self.cell(0, 5, _t(text), new_x="LMARGIN", new_y="NEXT")
        self.set_draw_color(200, 200, 200)
        self.line(MARGIN, self.get_y(), PAGE_W - MARGIN, self.get_y())
        self.ln(0.8)
        self.set_text_color(0, 0, 0)

    def para(
        self, text: str, size: float = 7.0, style: str = "", h: float = SMALL_LINE, rgb=(0, 0, 0)
    ) -> None:
        self.set_font("Helvetica", style, size)
        self.set_text_color(*rgb)
        self.multi_cell(0, h, _t(text), new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0, 0, 0)


def render_pdf(report: PatientReport, images: dict | None = None) -> bytes:
    """The report as a one-page A4 PDF."""
    images = images or _images(report)
    pdf = _Pdf(orientation="P", unit="mm", format="A4")
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(False)
    pdf.add_page()
    pdf.set_title(f"reirrad report {report.patient_id}")

    pdf.set_font("Helvetica", "B", 13)
    pdf.cell(
        0, 6, "Risk of severe late toxicity after re-irradiation", new_x="LMARGIN", new_y="NEXT"
    )
    m = report.model
    pdf.para(
        f"Patient {report.patient_id} - {report.generated_at} - model {m['name']} "
        f"version {m['version']} (file {m['sha256']})",
        size=7.5,
        rgb=GREY_RGB,
    )
    pdf.set_fill_color(*BANNER_RGB)
    pdf.set_font("Helvetica", "B", 7)
    pdf.multi_cell(
        0,
        SMALL_LINE,
        _t(
            "Research software, not a medical device. "
            + report.notes["synthetic"]
            + " "
            + report.notes["not_causal"]
        ),
        fill=True,
        new_x="LMARGIN",
        new_y="NEXT",
    )

    pdf.heading("Inputs used")
    half = (len(report.inputs) + 1) // 2
    col_w = BODY_W / 2
    y0 = pdf.get_y()
    for c, chunk in enumerate((report.inputs[:half], report.inputs[half:])):
        pdf.set_xy(MARGIN + c * col_w, y0)
        for label, value in chunk:
            pdf.set_x(MARGIN + c * col_w)
            pdf.set_font("Helvetica", "", 7)
            pdf.set_text_color(*GREY_RGB)
            pdf.cell(col_w * 0.6, SMALL_LINE, _t(label))
            pdf.set_text_color(0, 0, 0)
            pdf.set_font("Helvetica", "B", 7)
            pdf.cell(col_w * 0.4, SMALL_LINE, _t(value), new_x="LMARGIN", new_y="NEXT")
    pdf.set_y(y0 + half * SMALL_LINE + 0.5)
    pdf.para("Derived by the model (alpha/beta = 3 Gy): " + "; ".join(report.derived) + ".")
    for a in report.assumptions:
        pdf.para("Assumed: " + a, rgb=(138, 75, 0))
    for w in report.warnings:
        pdf.para("Caution: " + w, rgb=(138, 75, 0))

    for s in report.sections:
        pdf.heading(s.label[0].upper() + s.label[1:])
        top = pdf.get_y()
        # risk table
        first_w, cell_w = 16.0, (LEFT_W - 16.0) / len(s.risks)
        pdf.set_font("Helvetica", "B", 7)
        pdf.cell(first_w, LINE, "by month")
        for k in s.risks:
            pdf.cell(cell_w, LINE, f"{k.months:g}", align="C")
        pdf.ln(LINE)
        pdf.set_font("Helvetica", "", 7)
        pdf.cell(first_w, LINE, "risk")
        pdf.set_font("Helvetica", "B", 8)
        for k in s.risks:
            pdf.cell(cell_w, LINE, k.in_hundred, align="C")
        pdf.ln(LINE)
        pdf.set_font("Helvetica", "", 6.5)
        pdf.cell(first_w, LINE, f"{report.level:.0%} CI")
        for k in s.risks:
            pdf.cell(cell_w, LINE, k.interval_text, align="C")
        pdf.ln(LINE + 0.8)
        pdf.set_font("Helvetica", "B", 7)
        pdf.multi_cell(
            LEFT_W,
            SMALL_LINE,
            _t(
                f"What moves this patient's {report.main_horizon}-month risk most, compared "
                f"with the average training patient ({100 * s.base_value:.1f} in 100):"
            ),
            new_x="LMARGIN",
            new_y="NEXT",
        )
        for f in s.factors:
            up = f.shap > 0
            pdf.set_font("Helvetica", "B", 7)
            pdf.set_text_color(*(UP_RGB if up else DOWN_RGB))
            pdf.cell(4, SMALL_LINE, "+" if up else "-")
            pdf.set_text_color(0, 0, 0)
            pdf.set_font("Helvetica", "", 7)
            pdf.multi_cell(
                LEFT_W - 4,
                SMALL_LINE,
                _t(
                    f"{f.description}: {'raises' if up else 'lowers'} it by "
                    f"{abs(f.points):.1f} percentage points"
                ),
                new_x="LMARGIN",
                new_y="NEXT",
            )
        left_bottom = pdf.get_y()
        img = images[s.endpoint]
        x_curve = MARGIN + LEFT_W + 2.0
        pdf.image(io.BytesIO(img["curve"]), x=x_curve, y=top, w=CURVE_W)
        x_icons = x_curve + CURVE_W + 2.0
        pdf.image(io.BytesIO(img["icons"]), x=x_icons, y=top, w=ICONS_W - 2)
        main = s.risk_at(report.main_horizon)
        pdf.set_xy(x_icons - 1, top + ICONS_W + 1)
        pdf.set_font("Helvetica", "", 6)
        pdf.multi_cell(
            ICONS_W + 2,
            2.6,
            _t(
                f"of 100 such patients, about {main.in_hundred.split(' in ')[0]} by "
                f"{report.main_horizon} months (light: upper CI)"
            ),
            align="C",
        )
        pdf.set_y(max(left_bottom, top + CURVE_W * 0.58))

    pdf.heading("The model")
    pdf.para(
        f"{m['name']} v{m['version']}"
        + (f" ({m['alias']})" if m.get("alias") else "")
        + f", created {m['created_at']}; {m['kind']}, "
        f"trained on {m['development_rows']} patients of "
        f"the {m['data_source']} (data SHA-256 {m['data_sha256'] or 'n/a'})."
    )
    widths = (50.0, 36.0, 36.0, 36.0, 22.0)
    pdf.set_font("Helvetica", "B", 7)
    for w, h in zip(
        widths,
        (f"validated at {report.main_horizon} months", "AUC", "Brier", "ICI", "hold-out AUC"),
        strict=True,
    ):
        pdf.cell(w, SMALL_LINE, h, align="C" if w != widths[0] else "L")
    pdf.ln(SMALL_LINE)
    pdf.set_font("Helvetica", "", 7)
    for p in report.performance:
        pdf.cell(widths[0], SMALL_LINE, _t(p["endpoint"]))
        for w, k in zip(widths[1:4], ("auc", "brier", "ici"), strict=True):
            pdf.cell(w, SMALL_LINE, with_interval(p, k), align="C")
        hold = p["holdout_auc"]
        pdf.cell(widths[4], SMALL_LINE, "n/a" if hold is None else f"{hold:.3f}", align="C")
        pdf.ln(SMALL_LINE)
    pdf.para(_t(report.notes.get("validation", "")), size=6.5, rgb=GREY_RGB)

    pdf.heading("Use and limits")
    pdf.para("Intended use. " + report.notes["intended_use"])
    pdf.para("Out of scope. " + report.notes["out_of_scope"])
    pdf.para(
        "Not causal. "
        + report.notes["not_causal"]
        + " Synthetic data. "
        + report.notes["synthetic"]
    )
    pdf.para(report.notes["ci"] + " " + report.notes["shap"], size=6.3, rgb=GREY_RGB)
    return bytes(pdf.output())


def write_report(report: PatientReport, path: str | os.PathLike[str], fmt: Format) -> Path:
    """Render and write atomically (a temporary file in the target folder, then a rename)."""
    if fmt not in ("html", "pdf"):
        raise ValueError(f"unknown report format {fmt!r}; use html or pdf")
    data = render_html(report).encode("utf-8") if fmt == "html" else render_pdf(report)
    return write_bytes_atomic(data, path)
