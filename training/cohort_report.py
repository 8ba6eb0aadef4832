"""The cohort report: how the model performs and what drives it, on a cohort with outcomes.

For a clinician deciding whether to trust the model at all (design.md): performance with
bootstrap intervals, calibration, decision curves, global explanations (exact Shapley values
over the cohort: importance per endpoint and horizon, beeswarm, dependence and time-dependent
importance), a data summary, the training run's own validated metrics when known, and the
TRIPOD+AI items. One self-contained HTML file (figures inlined as base64 PNG).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from jinja2 import Environment, FileSystemLoader, select_autoescape  # noqa: E402

from features.config import (  # noqa: E402
    ENDPOINT_LABELS,
    ENDPOINTS,
    EVENT_COMPETING,
    EVENT_OF_INTEREST,
    HORIZONS_MONTHS,
    MAIN_HORIZON_MONTHS,
)
from features.timegrid import DEFAULT_GRID  # noqa: E402
from features.wording import value_function_text  # noqa: E402
from models.explain import (  # noqa: E402
    INPUT_METHOD,
    BundleExplainer,
    Explanation,
    feature_label,
    importance,
)
from training.data import Cohort  # noqa: E402
from training.metrics import (  # noqa: E402
    auc_cr,
    brier_cr,
    calibration_cr,
    cumulative_incidence,
    net_benefit_cr,
    net_benefit_treat_all_cr,
)
from training.tripod import TRIPOD_AI  # noqa: E402

TEMPLATE_DIR = Path(__file__).with_name("templates")
TEMPLATE = "cohort_report.html.j2"
DEFAULT_BOOTSTRAP = 200
DEFAULT_MAX_EXPLAIN = 300
"""Patients explained for the global explanations (seeded sample when the cohort is larger)."""
CI_LEVEL = 0.95
N_TOP_DEPENDENCE = 3
N_TOP_TIME = 6
N_BEESWARM = 12
DPI = 110
THRESHOLDS = np.round(np.arange(0.01, 0.41, 0.01), 2)
"""Decision-curve threshold risks (the range where a toxicity decision could plausibly sit)."""
PERCENT = 100.0


@dataclass(frozen=True)
class CohortReport:
    context: dict[str, Any]
    figures: dict[str, str]  # name -> base64 PNG


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _quantiles(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if np.isfinite(x)])
    if v.size == 0:
        return float("nan"), float("nan")
    a = (1 - CI_LEVEL) / 2
    return float(np.quantile(v, a)), float(np.quantile(v, 1 - a))


# --------------------------------------------------------------------------- performance
def performance(
    cohort: Cohort, risks: dict[str, np.ndarray], n_boot: int, seed: int
) -> pd.DataFrame:
    """AUC and Brier with percentile bootstrap intervals (patients resampled), ICI and O/E."""
    rng = np.random.default_rng(seed)
    n = len(cohort)
    idx = [rng.integers(0, n, n) for _ in range(n_boot)]
    rows = []
    for e in ENDPOINTS:
        t, ev = cohort.y[e]["time"], cohort.y[e]["event"]
        for j, h in enumerate(HORIZONS_MONTHS):
            r = risks[e][:, j]
            auc = auc_cr(t, ev, r, EVENT_OF_INTEREST, h)
            brier = brier_cr(t, ev, r, EVENT_OF_INTEREST, h)
            boot_auc = [auc_cr(t[b], ev[b], r[b], EVENT_OF_INTEREST, h) for b in idx]
            boot_brier = [brier_cr(t[b], ev[b], r[b], EVENT_OF_INTEREST, h) for b in idx]
            try:
                cal = calibration_cr(t, ev, r, EVENT_OF_INTEREST, h)
                ici, obs, exp_ = cal.ici, cal.observed, cal.expected
            except (ValueError, FloatingPointError, np.linalg.LinAlgError):
                ici = obs = exp_ = float("nan")
            rows.append(
                {
                    "endpoint": ENDPOINT_LABELS[e],
                    "horizon": h,
                    "auc": auc,
                    "auc_ci": _quantiles(boot_auc),
                    "brier": brier,
                    "brier_ci": _quantiles(boot_brier),
                    "ici": ici,
                    "observed": obs,
                    "expected": exp_,
                }
            )
    return pd.DataFrame(rows)


def calibration_figure(cohort: Cohort, risks: dict[str, np.ndarray], endpoint: str) -> str:
    fig, axes = plt.subplots(1, len(HORIZONS_MONTHS), figsize=(2.6 * len(HORIZONS_MONTHS), 2.6))
    t, ev = cohort.y[endpoint]["time"], cohort.y[endpoint]["event"]
    for ax, (j, h) in zip(axes, enumerate(HORIZONS_MONTHS), strict=True):
        r = risks[endpoint][:, j]
        top = max(float(np.quantile(r, 0.99)), 0.05) * 1.1
        try:
            cal = calibration_cr(t, ev, r, EVENT_OF_INTEREST, h)
            ax.plot(PERCENT * cal.curve_risk, PERCENT * cal.curve_observed, color="#b2182b")
            ax.set_title(f"{h} months (ICI {PERCENT * cal.ici:.1f} pp)", fontsize=8)
            top = max(top, float(np.nanmax(cal.curve_observed)) * 1.05)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            ax.set_title(f"{h} months (not estimable)", fontsize=8)
        top = min(1.0, top)
        ax.plot([0, PERCENT * top], [0, PERCENT * top], ls="--", color="grey", lw=0.8)
        ax.plot(PERCENT * r, np.zeros_like(r), "|", color="#999999", ms=4, alpha=0.3)
        ax.set_xlim(0, PERCENT * top)
        ax.set_ylim(0, PERCENT * top)
        ax.set_xlabel("predicted (%)", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("observed (%, smoothed)", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def decision_figure(cohort: Cohort, risks: dict[str, np.ndarray], endpoint: str) -> str:
    h = MAIN_HORIZON_MONTHS
    j = list(HORIZONS_MONTHS).index(h)
    t, ev = cohort.y[endpoint]["time"], cohort.y[endpoint]["event"]
    nb = net_benefit_cr(t, ev, risks[endpoint][:, j], EVENT_OF_INTEREST, h, THRESHOLDS)
    nb_all = net_benefit_treat_all_cr(t, ev, EVENT_OF_INTEREST, h, THRESHOLDS)
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    ax.plot(PERCENT * THRESHOLDS, nb, color="#b2182b", label="model")
    ax.plot(PERCENT * THRESHOLDS, nb_all, color="grey", label="treat all as high risk")
    ax.axhline(0, color="black", lw=0.8, label="treat none")
    lo = min(0.0, float(np.nanmin(nb)))
    ax.set_ylim(lo - 0.01, max(float(np.nanmax(nb)), float(np.nanmax(nb_all)), 0.02) * 1.1)
    ax.set_xlabel(f"threshold risk at {h} months (%)", fontsize=8)
    ax.set_ylabel("net benefit", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------------ explanations
def beeswarm_figure(exp: Explanation, horizon: float = MAIN_HORIZON_MONTHS) -> str:
    """SHAP (pp) per patient and input, coloured by the input's value (low blue, high red)."""
    g = exp.grouped()
    _, phi, _ = g.at(horizon)
    order = np.argsort(-np.abs(phi).mean(0))[:N_BEESWARM][::-1]
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(5.2, 0.32 * len(order) + 0.8))
    for row, f in enumerate(order):
        values = g.data.iloc[:, f]
        numeric = pd.to_numeric(values, errors="coerce").astype(float)
        if numeric.isna().all():  # the grouped technique: colour by category code
            numeric = pd.Series(pd.factorize(values)[0], dtype=float)
        span = float(numeric.max() - numeric.min()) or 1.0
        colour = (numeric - numeric.min()) / span
        y = row + rng.uniform(-0.3, 0.3, size=phi.shape[0])
        ax.scatter(PERCENT * phi[:, f], y, c=colour, cmap="coolwarm", s=5, linewidths=0)
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([feature_label(g.feature_names[f]) for f in order], fontsize=7)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel(f"SHAP value at {horizon:g} months (percentage points)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return _png(fig)


def dependence_figure(exp: Explanation, horizon: float = MAIN_HORIZON_MONTHS) -> str:
    g = exp.grouped()
    _, phi, _ = g.at(horizon)
    values = {
        i: pd.to_numeric(g.data.iloc[:, i], errors="coerce").astype(float)
        for i in range(len(g.feature_names))
    }
    numeric = [i for i, v in values.items() if v.notna().any()]  # not the categories
    top = sorted(numeric, key=lambda i: -np.abs(phi[:, i]).mean())[:N_TOP_DEPENDENCE]
    fig, axes = plt.subplots(1, len(top), figsize=(2.7 * len(top), 2.4))
    for ax, f in zip(np.atleast_1d(axes), top, strict=True):
        ax.scatter(
            values[f],
            PERCENT * phi[:, f],
            s=5,
            color="#b2182b",
            alpha=0.6,
            linewidths=0,
        )
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xlabel(feature_label(g.feature_names[f]), fontsize=7)
        ax.tick_params(labelsize=7)
    np.atleast_1d(axes)[0].set_ylabel(f"SHAP at {horizon:g} months (pp)", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def time_importance_figure(exp: Explanation) -> str:
    """Mean |SHAP| over the time grid (the SurvSHAP(t) view, exact) for the top inputs."""
    g = exp.grouped()
    mean_abs = PERCENT * np.abs(g.values).mean(axis=0)  # (F, G)
    top = np.argsort(-mean_abs[:, -1])[:N_TOP_TIME]
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    for f in top:
        ax.plot(g.times, mean_abs[f], label=feature_label(g.feature_names[f]))
    ax.set_xlabel("months after start of re-irradiation", fontsize=8)
    ax.set_ylabel("mean |SHAP| (pp)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------------- data summary
def data_summary(cohort: Cohort, bundle) -> dict[str, Any]:
    n = len(cohort)
    endpoints = []
    for e in ENDPOINTS:
        t, ev = cohort.y[e]["time"], cohort.y[e]["event"]
        gt, ge = DEFAULT_GRID.discretize(t, ev)
        cif = cumulative_incidence(gt, ge, EVENT_OF_INTEREST, list(HORIZONS_MONTHS))
        endpoints.append(
            {
                "label": ENDPOINT_LABELS[e],
                "events": int((ev == EVENT_OF_INTEREST).sum()),
                "competing": int((ev == EVENT_COMPETING).sum()),
                "censored": int((ev == 0).sum()),
                "incidence": {h: float(c) for h, c in zip(HORIZONS_MONTHS, cif, strict=True)},
            }
        )
    X = cohort.X
    ranges = bundle.training_summary.get("feature_ranges", {})
    features = []
    for c in X.columns:
        v = X[c].astype(float)
        flag = set(np.unique(v)) <= {0.0, 1.0}
        r = ranges.get(c)
        outside = float(((v < r["min"]) | (v > r["max"])).mean()) if r else float("nan")
        features.append(
            {
                "label": feature_label(c),
                "summary": (
                    f"{PERCENT * v.mean():.0f}% yes"
                    if flag
                    else f"median {v.median():.3g} "
                    f"(IQR {v.quantile(0.25):.3g}-{v.quantile(0.75):.3g})"
                ),
                "outside": outside,
            }
        )
    follow = cohort.records["followup_months"].astype(float)
    return {
        "n": n,
        "endpoints": endpoints,
        "features": features,
        "followup_median": float(follow.median()),
    }


# ------------------------------------------------------------------------------ build
def build_cohort_report(
    bundle,
    cohort: Cohort,
    cohort_name: str,
    info: dict[str, Any] | None = None,
    run_metrics: dict[str, Any] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    max_explain: int = DEFAULT_MAX_EXPLAIN,
    seed: int = 0,
) -> CohortReport:
    """Everything the cohort report shows, computed on ``cohort`` (which must have outcomes)."""
    info = dict(info or {})
    risks = {e: m.predict_cif(cohort.X, HORIZONS_MONTHS)[:, 0, :] for e, m in bundle.models.items()}
    perf = performance(cohort, risks, n_boot, seed)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(cohort), size=min(max_explain, len(cohort)), replace=False))
    explanations = BundleExplainer(bundle).explain(cohort.records.iloc[pick])
    figures: dict[str, str] = {}
    tables = {}
    for e in ENDPOINTS:
        figures[f"calibration_{e}"] = calibration_figure(cohort, risks, e)
        figures[f"decision_{e}"] = decision_figure(cohort, risks, e)
        figures[f"beeswarm_{e}"] = beeswarm_figure(explanations[e])
        figures[f"dependence_{e}"] = dependence_figure(explanations[e])
        figures[f"time_{e}"] = time_importance_figure(explanations[e])
        tables[e] = importance(explanations[e]).round(2)
    prov = dict(bundle.provenance or {})
    corrected = {k: v for k, v in (bundle.metrics or {}).items() if isinstance(v, int | float)}
    context = {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cohort_name": cohort_name,
        "model": {
            "name": info.get("model_name") or prov.get("model_name", "reirrad forest"),
            "version": info.get("version") or prov.get("model_version", "unregistered"),
            "sha256": str(info.get("sha256") or "")[:12] or "n/a",
            "run_id": info.get("run_id") or prov.get("mlflow_run_id"),
            "data_source": prov.get("data_source", "n/a"),
            "data_sha256": str(prov.get("data_sha256") or "")[:12] or "n/a",
            "training_rows": prov.get("development_rows") or bundle.training_summary.get("n_rows"),
        },
        "performance": perf.to_dict("records"),
        "run_corrected": corrected,
        "run_metrics": run_metrics or {},
        "importance": {e: t for e, t in tables.items()},
        "n_explained": len(pick),
        "value_function": value_function_text(
            None if explanations[ENDPOINTS[0]].method != INPUT_METHOD else len(bundle.background)
        ),
        "data": data_summary(cohort, bundle),
        "tripod": TRIPOD_AI,
        "endpoints": [(e, ENDPOINT_LABELS[e]) for e in ENDPOINTS],
        "horizons": HORIZONS_MONTHS,
        "main_horizon": MAIN_HORIZON_MONTHS,
        "level": CI_LEVEL,
        "n_boot": n_boot,
    }
    return CohortReport(context, figures)


def render_cohort_report(report: CohortReport) -> str:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR), autoescape=select_autoescape(["html", "j2"])
    )
    return env.get_template(TEMPLATE).render(c=report.context, fig=report.figures)
