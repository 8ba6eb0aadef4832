"""Evaluation figures, written as PNG files for MLflow: calibration, decision curves,
prediction instability. Every figure names the data it was drawn on."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from features.config import ENDPOINT_LABELS, ENDPOINTS, EVENT_OF_INTEREST  # noqa: E402
from training.evaluate import REGISTERED, Evaluation, _key  # noqa: E402
from training.metrics import (  # noqa: E402
    calibration_cr,
    net_benefit_cr,
    net_benefit_treat_all_cr,
)

DPI = 110
PANEL_SIZE_IN = 3.6
DC_MIN_SPAN = 0.01
DC_BELOW_ZERO = 0.3
"""The decision curve's y axis runs from -0.3 x its top to 1.1 x its top."""
INTERVAL = (2.5, 97.5)
"""Percentiles of the replicate risks drawn as the instability band."""


def calibration_plot(ev: Evaluation, y: dict[str, np.ndarray], endpoint: str, path: Path) -> Path:
    """Smoothed calibration curves of every model at every horizon (development data)."""
    hs = ev.horizons
    fig, axes = plt.subplots(
        1, len(hs), figsize=(PANEL_SIZE_IN * len(hs), PANEL_SIZE_IN), squeeze=False
    )
    for j, (ax, h) in enumerate(zip(axes[0], hs, strict=True)):
        top = 0.0
        for name in ev.apparent_risks:
            r = ev.apparent_risks[name][endpoint][:, j]
            try:
                cal = calibration_cr(
                    y[endpoint]["time"], y[endpoint]["event"], r, EVENT_OF_INTEREST, h
                )
            except ValueError:
                continue
            ici = ev.validated.get(_key(name, endpoint, f"ici_{h:g}m"), float("nan"))
            ax.plot(
                cal.curve_risk,
                cal.curve_observed,
                lw=2 if name == REGISTERED else 1,
                label=f"{name} (ICI* {ici:.3f})",
            )
            top = max(top, float(np.max(cal.curve_risk)), float(np.nanmax(cal.curve_observed)))
        top = min(1.0, top * 1.05 + 0.01)
        ax.plot([0, top], [0, top], color="grey", ls="--", lw=1)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_title(f"{h:g} months")
        ax.set_xlabel("predicted risk")
        if j == 0:
            ax.set_ylabel("observed (smoothed pseudo-values)")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"Calibration, {ENDPOINT_LABELS[endpoint]}: apparent curves on the development "
        "data; ICI* cross-validated (out-of-fold)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def decision_curve_plot(
    ev: Evaluation, y: dict[str, np.ndarray], endpoint: str, thresholds, path: Path
) -> Path:
    """Net benefit at the main horizon of every model, treat-all and treat-none."""
    h = ev.main_horizon
    j = list(ev.horizons).index(h)
    th = np.asarray(thresholds, dtype=float)
    t, e = y[endpoint]["time"], y[endpoint]["event"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    top = 0.0
    for name in ev.apparent_risks:
        nb = net_benefit_cr(t, e, ev.apparent_risks[name][endpoint][:, j], EVENT_OF_INTEREST, h, th)
        ax.plot(th, nb, lw=2 if name == REGISTERED else 1, label=name)
        top = max(top, float(np.max(nb)))
    treat_all = net_benefit_treat_all_cr(t, e, EVENT_OF_INTEREST, h, th)
    ax.plot(th, treat_all, color="grey", label="treat all")
    top = max(top, float(np.max(treat_all)), DC_MIN_SPAN)
    ax.set_ylim(-DC_BELOW_ZERO * top, 1.1 * top)  # treat-all dives far below 0
    ax.axhline(0.0, color="black", lw=1, label="treat none")
    ax.set_xlabel(f"threshold risk at {h:g} months")
    ax.set_ylabel("net benefit")
    ax.set_title(
        f"Decision curve, {ENDPOINT_LABELS[endpoint]} (apparent, development data)", fontsize=9
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def instability_plot(ev: Evaluation, path: Path) -> Path:
    """Each patient's out-of-fold risk (models fitted without them) vs the final model's
    (Riley & Collins 2023)."""
    j = list(ev.horizons).index(ev.main_horizon)
    fig, axes = plt.subplots(1, len(ENDPOINTS), figsize=(PANEL_SIZE_IN * 1.3 * len(ENDPOINTS), 4))
    mape = ev.instability()
    for ax, e in zip(np.atleast_1d(axes), ENDPOINTS, strict=True):
        final = ev.apparent_risks[REGISTERED][e][:, j]
        boot = ev.oof_risks[REGISTERED][e][:, :, j]
        xs = np.repeat(final[None, :], boot.shape[0], axis=0)
        ax.scatter(xs.ravel(), boot.ravel(), s=3, alpha=0.15, color="tab:blue")
        lo, hi = np.percentile(boot, INTERVAL, axis=0)
        ax.vlines(final, lo, hi, color="tab:red", lw=0.6, alpha=0.4, label="range over repeats")
        top = max(float(boot.max()), float(final.max())) * 1.05
        ax.plot([0, top], [0, top], color="grey", ls="--", lw=1)
        ax.set_xlabel(f"final model risk at {ev.main_horizon:g} months")
        ax.set_ylabel("out-of-fold risk (model without the patient)")
        ax.set_title(
            f"{ENDPOINT_LABELS[e]}\nmean |difference| {mape[e]:.3f}, repeats={boot.shape[0]}",
            fontsize=9,
        )
        ax.legend(fontsize=7)
    fig.suptitle("Prediction instability", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def subgroup_plot(ev: Evaluation, path: Path) -> Path:
    """Forest AUC (cross-validated) at the main horizon per subgroup and endpoint."""
    groups = sorted({"/".join(k.split("/")[:2]) for k in ev.subgroups_apparent})
    fig, axes = plt.subplots(
        1, len(ENDPOINTS), figsize=(10, 0.35 * max(len(groups), 4) + 1.2), sharey=True
    )
    for ax, e in zip(np.atleast_1d(axes), ENDPOINTS, strict=True):
        vals = [ev.subgroups_validated.get(f"{g}/{e}/auc", np.nan) for g in groups]
        ax.barh(range(len(groups)), vals, color="tab:blue")
        ax.axvline(0.5, color="grey", ls="--", lw=1)
        ax.set_xlim(0.4, 1.0)
        ax.set_title(ENDPOINT_LABELS[e], fontsize=9)
        ax.set_xlabel(f"AUC({ev.main_horizon:g}m), cross-validated")
    np.atleast_1d(axes)[0].set_yticks(
        range(len(groups)), [g.replace("/", ": ") for g in groups], fontsize=8
    )
    fig.suptitle("Performance by subgroup (bars missing: subgroup too small)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
