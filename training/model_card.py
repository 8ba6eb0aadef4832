"""The model card (Mitchell et al. 2019) of a bundle, in Markdown, with the TRIPOD+AI items.

Read from the bundle (provenance, training summary, headline metrics) and, when known, the
training run's ``metrics.json`` (cross-validated and hold-out metrics, the promotion gate,
tuning). Markdown so it renders in the repository, in MLflow and as plain text alike.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features.config import ENDPOINT_LABELS, ENDPOINTS, HORIZONS_MONTHS, MAIN_HORIZON_MONTHS
from features.pipeline import FEATURES
from features.wording import value_function_text
from training.model_factory import describe_model
from training.tripod import TRIPOD_AI

BENCH_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "explain.json"
NA = "n/a"
NOMINAL_PERCENT = 95.0
COVERAGE_SLACK_PERCENT = 2.0
"""Coverage within this many points of nominal is called close to nominal."""


def _fmt(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return NA
    return NA if f != f else f"{f:.{digits}f}"


def _with_interval(metrics: dict[str, Any], key: str) -> str:
    lo, hi = metrics.get(f"{key}_lo"), metrics.get(f"{key}_hi")
    v = _fmt(metrics.get(key))
    if v == NA or _fmt(lo) == NA or _fmt(hi) == NA:
        return v
    return f"{v} [{_fmt(lo)}, {_fmt(hi)}]"


def _metric_table(metrics: dict[str, Any]) -> list[str]:
    """Validated figures with their 95 % intervals and the events each horizon rests on."""
    lines = [
        "| endpoint | months | events | AUC [95 % interval] | Brier | ICI | calibration slope |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in ENDPOINTS:
        for h in HORIZONS_MONTHS:
            vals = [_with_interval(metrics, f"{e}/{m}_{h}m") for m in ("auc", "brier", "ici")]
            vals.append(_with_interval(metrics, f"{e}/slope_{h}m"))
            events = metrics.get(f"{e}/events_{h}m")
            ev = NA if events is None else f"{int(float(events))}"
            lines.append(f"| {ENDPOINT_LABELS[e]} | {h} | {ev} | " + " | ".join(vals) + " |")
    return lines


def _performance_section(bundle) -> list[str]:
    """The heading, the method, what the figures rest on and the table."""
    metrics = dict(bundle.metrics or {})
    record = getattr(bundle, "validation", None)
    if not record:
        return [
            "## Performance (development data; this model carries no validation record)",
            "",
            *_metric_table(metrics),
            "",
        ]
    return [
        "## Performance (cross-validated on the development data)",
        "",
        f"- Method: {record.get('method', NA)}.",
        f"- Intervals: {100 * float(record.get('level', 0.95)):.0f} % "
        f"{record.get('interval', NA)}.",
        *([f"- Coverage: {record['coverage_note']}"] if record.get("coverage_note") else []),
        f"- Patients: {record.get('n_patients', NA)}; events of each endpoint by each horizon "
        "in the table.",
        f"- {record.get('auc_meaning', '')}.",
        "",
        *_metric_table(metrics),
        "",
    ]


def _coverage_line(bundle=None) -> str:
    from models.intervals import coverage_note

    note = coverage_note(bundle)
    if note is not None:
        return note
    try:
        data = json.loads(BENCH_RESULTS.read_text())
        cov = 100 * float(data["coverage_default"])
    except (OSError, ValueError, KeyError):
        return "Coverage of the true risk: not measured for this build."
    judged = (
        "close to nominal"
        if cov >= NOMINAL_PERCENT - COVERAGE_SLACK_PERCENT
        else "below nominal: the interval describes the forest's sampling variability, "
        "not its smoothing bias"
    )
    return (
        f"Pointwise 95 % infinitesimal-jackknife intervals covered the true risk of synthetic "
        f"test patients in {cov:.0f} % of patient-horizon pairs ({judged}; "
        "benchmarks/RESULTS.md)."
    )


def _background_size(bundle) -> int | None:
    background = getattr(bundle, "background", None)
    return None if background is None else len(background)


def _type_line(bundle, params: dict[str, Any]) -> str:
    """What the registered model is: a forest, or an ensemble's members and weights."""
    models = dict(bundle.models)
    if not any(hasattr(m, "members_") for m in models.values()):
        return (
            "- Type: competing-risks random survival forest (cause-specific log-rank splits, "
            f"Aalen-Johansen leaves), one per endpoint; parameters {params}."
        )
    lines = ["- Type: one model per endpoint:"]
    for e, m in models.items():
        label = ENDPOINT_LABELS.get(e, e)
        lines.append(f"  - {label}: {describe_model(m)}.")
    return "\n".join(lines)


def build_model_card(
    bundle, info: dict[str, Any] | None = None, run_metrics: dict[str, Any] | None = None
) -> str:
    """The model card as Markdown."""
    info = dict(info or {})
    run = dict(run_metrics or {})
    prov = dict(bundle.provenance or {})
    summary = dict(bundle.training_summary or {})
    forest = next(iter(bundle.models.values()))
    params = {
        k: getattr(forest, k)
        for k in ("n_estimators", "min_samples_leaf", "min_samples_split", "max_features")
        if hasattr(forest, k)
    }
    run_id = info.get("run_id") or prov.get("mlflow_run_id", NA)
    n_rows = prov.get("data_rows", summary.get("n_rows", NA))
    name = info.get("model_name") or prov.get("model_name", "reirrad-toxicity")
    version = info.get("version") or prov.get("model_version", "unregistered")
    out: list[str] = [
        f"# Model card: {name} version {version}",
        "",
        "Risk of grade >=3 mucosal necrosis and of fatal massive haemorrhage after "
        "re-irradiation of recurrent nasopharyngeal carcinoma, with competing deaths.",
        "",
        "> Research software trained on synthetic data; not a medical device. The model "
        "predicts toxicity only (it does not weigh tumour control) and is not causal.",
        "",
        "## Model details",
        "",
        _type_line(bundle, params),
        f"- Tuned per endpoint: {prov.get('tuned_params', NA)}.",
        f"- Created {prov.get('created_at', NA)}; MLflow run {run_id}; "
        f"git commit {prov.get('git_commit', NA)}; bundle SHA-256 "
        f"{str(info.get('sha256') or NA)[:16]}.",
        f"- Outputs: cumulative incidence of each endpoint's event on a monthly grid to "
        f"{bundle.grid.max_months:g} months; reported at {', '.join(map(str, HORIZONS_MONTHS))} "
        f"months (main horizon {MAIN_HORIZON_MONTHS}).",
        f"- Explanations: {value_function_text(_background_size(bundle))}; "
        + (
            "confidence intervals by the infinitesimal jackknife (Wager, Hastie & Efron 2014)."
            if getattr(bundle, "intervals", None) is None
            else "confidence intervals from refits on cohorts simulated from the model, "
            "bias-corrected (models/intervals.py)."
        ),
        "",
        "## Intended use",
        "",
        "Research and teaching: to show how such a model estimates the risks above for adults "
        "with a recurrent nasopharyngeal carcinoma considered for re-irradiation, whose inputs "
        "lie within the training ranges, as one input to a multidisciplinary discussion.",
        "",
        "## Out of scope",
        "",
        "Deciding an individual patient's treatment; other tumour sites; first-course "
        "radiotherapy; inputs outside the training ranges; any use as a medical device; "
        "reading the explanations as causal effects of changing an input.",
        "",
        "## Training data",
        "",
        f"- Source: {prov.get('data_source', NA)}; {n_rows} "
        f"rows, of which {prov.get('development_rows', summary.get('n_rows', NA))} for development "
        f"and {prov.get('holdout_rows', NA)} held out (salted hash of the patient key).",
        f"- Data SHA-256 (canonical validated records): {prov.get('data_sha256', NA)}.",
        "- Synthetic cohort generated to match a published cohort's mix and event rates "
        "(see the synthetic cohort datasheet); no real patient is in it.",
        "",
        "### Inputs",
        "",
        "| feature | unit |",
        "| --- | --- |",
        *[f"| {f.label} | {f.unit or f.kind} |" for f in FEATURES],
        "",
        *_performance_section(bundle),
    ]
    hold = {k: v for k, v in (bundle.metrics or {}).items() if "holdout" in k}
    if hold:
        out += ["Hold-out: " + "; ".join(f"{k} {_fmt(v)}" for k, v in sorted(hold.items())), ""]
    gate = run.get("gate")
    if gate:
        verdict = "passed" if gate.get("passed") else "failed"
        reason = f" ({gate['reason']})" if gate.get("reason") else ""
        out += [f"Promotion gate: {verdict}{reason}.", ""]
        for c in gate.get("checks", []):
            out.append(f"- {c.get('text', c.get('name'))}: {'ok' if c.get('ok') else 'FAILED'}")
        out.append("")
    if run.get("instability"):
        out += [
            "Prediction instability (mean |out-of-fold - final| risk at the main horizon): "
            + "; ".join(
                f"{ENDPOINT_LABELS.get(k, k)} {_fmt(v)}" for k, v in run["instability"].items()
            ),
            "",
        ]
    out += [
        "Calibration, decision curves, subgroup performance and global explanations: the "
        "cohort report (`reirrad cohort-report`).",
        "",
        "## Uncertainty",
        "",
        _coverage_line(bundle),
        "",
        "## Ethical considerations and caveats",
        "",
        "- Trained on synthetic data: the numbers say nothing reliable about real patients.",
        "- Not causal: a factor that raises the predicted risk need not raise the real risk if "
        "changed; dose comparisons are toxicity only and ignore tumour control.",
        "- Subgroups with few patients (rare stages, twice-daily schedules) are estimated with "
        "little data; their intervals are wide and their bias unknown.",
        "- The reported intervals cover sampling variability, not model bias."
        if getattr(bundle, "intervals", None) is None
        else "- The reported intervals include an estimate of the model's bias; their coverage "
        "is known only on simulated data.",
        "",
        "## TRIPOD+AI items",
        "",
        "| item | topic | status | where |",
        "| --- | --- | --- | --- |",
        *[f"| {t.number} | {t.topic} | {t.status} | {t.where} |" for t in TRIPOD_AI],
        "",
        f"_Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}._",
        "",
    ]
    return "\n".join(out)
