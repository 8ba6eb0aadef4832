"""Fit the synthetic cohort's free parameters to the targets of literature.md section 4.

Run by hand when the DGP changes; the result is printed, then copied by hand into the
defaults of ``features/synthetic_params.DGPParams`` (nothing is fitted at run time):

    PYTHONPATH=. .venv/bin/python benchmarks/calibrate_dgp.py --n 10000 --seed 7

Free parameters (marked FITTED in DGPParams): the necrosis Weibull shape and scale, its
per-Gy dose slope and rT3-4 log-HR, the share of necroses exposing the carotid artery and
its rT3-4 log-odds ratio, the progression Weibull shape and scale, the other-cause death
rate and the loss-to-follow-up rate. Every other parameter is fixed at its published or
assumed value. The loss is the squared distance to each target in units of its tolerance,
on one simulated cohort with common random numbers (same seed every evaluation), minimised
by Nelder-Mead: the crude shares are step functions of the parameters, so a gradient method
would stall.

Shipped defaults: the fit above (n=10,000, seed 7), then the progression Weibull shape and
scale re-tuned by hand on the mean of seeds 1-3 at n=20,000, because the 5-year OS of the
seed-7 fit sat 2 points high on other seeds (``evaluate`` below, three seeds); and, after
the necrosis lag and onset offset were added, a refit of five parameters at n=20,000
averaged over seeds 1-2::

    benchmarks/calibrate_dgp.py --n 20000 --seed 1 --seeds 2 --maxfev 160 --free \
        necrosis_weibull_shape,necrosis_weibull_scale_months,necrosis_log_hr_per_eqd2_gy,\
        ica_exposure_logit,progression_weibull_scale_months
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import numpy as np
from scipy.optimize import minimize

from features.calibration import (
    TRIAL1_ARMS,
    TRIAL1_RATIO,
    TRIAL2_ARMS,
    TRIAL2_RATIO,
    summarise_outcomes,
    trial_ratio,
)
from features.synthetic import simulate
from features.synthetic_params import DEFAULT_PARAMS, DGPParams

LOG = "log"
LIN = "lin"
FREE: tuple[tuple[str, str], ...] = (
    ("necrosis_weibull_shape", LOG),
    ("necrosis_weibull_scale_months", LOG),
    ("necrosis_log_hr_per_eqd2_gy", LIN),
    ("necrosis_log_hr_rt34", LIN),
    ("ica_exposure_logit", LIN),
    ("ica_exposure_log_or_rt34", LIN),
    ("progression_weibull_shape", LOG),
    ("progression_weibull_scale_months", LOG),
    ("other_death_rate_per_month", LOG),
    ("loss_rate_per_month", LOG),
)
# (summary attribute or trial, target, scale): scale is the tolerance of literature.md §4
TARGETS: tuple[tuple[str, float, float], ...] = (
    ("os_3y", 46.0, 3.0),
    ("os_5y", 28.8, 3.0),
    ("necrosis_share", 31.6, 3.0),
    ("haemorrhage_share", 23.9, 3.0),
    ("median_latency", 6.0, 1.0),
    ("haemorrhage_advanced_share", 75.0, 5.0),
    ("trial1", TRIAL1_RATIO, 0.35),
    ("trial2", TRIAL2_RATIO, 0.15),
    ("progression_of_known_other", 39 / 54 * 100, 5.0),  # seed causes of death (context)
    ("lost_share", 8 / 184 * 100, 1.0),  # seed: 8 of 184 lost (context)
)


START: dict[str, float] = {}
"""Optional starting point different from the shipped defaults (empty: start from them)."""


def to_params(x: np.ndarray, base: DGPParams) -> DGPParams:
    values = {
        name: float(math.exp(v) if kind == LOG else v)
        for (name, kind), v in zip(FREE, x, strict=True)
    }
    return dataclasses.replace(base, **values)


def from_params(p: DGPParams) -> np.ndarray:
    return np.array(
        [math.log(getattr(p, name)) if kind == LOG else getattr(p, name) for name, kind in FREE]
    )


def evaluate(p: DGPParams, n: int, seed: int) -> dict[str, float]:
    s = summarise_outcomes(simulate(n, seed, p))
    out = {name: getattr(s, name) for name, _, _ in TARGETS if hasattr(s, name)}
    out["trial1"] = trial_ratio(n, seed, TRIAL1_ARMS, p)
    out["trial2"] = trial_ratio(n, seed, TRIAL2_ARMS, p)
    return out


def loss(values: dict[str, float]) -> float:
    return float(sum(((values[k] - t) / s) ** 2 for k, t, s in TARGETS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--maxfev", type=int, default=800)
    ap.add_argument("--seeds", type=int, default=1, help="average the targets over this many seeds")
    ap.add_argument("--free", default="", help="comma-separated subset of the free parameters")
    args = ap.parse_args()
    base = DEFAULT_PARAMS.replace(**START)
    global FREE
    if args.free:
        wanted = set(args.free.split(","))
        unknown = wanted - {name for name, _ in FREE}
        if unknown:
            raise SystemExit(f"not a free parameter: {sorted(unknown)}")
        FREE = tuple(f for f in FREE if f[0] in wanted)

    def evaluate_mean(p: DGPParams) -> dict[str, float]:
        runs = [evaluate(p, args.n, args.seed + i) for i in range(args.seeds)]
        return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}

    def objective(x: np.ndarray) -> float:
        return loss(evaluate_mean(to_params(x, base)))

    x0 = from_params(base)
    print(f"start loss {objective(x0):.3f}", flush=True)
    res = minimize(
        objective,
        x0,
        method="Nelder-Mead",
        options={"maxfev": args.maxfev, "xatol": 1e-3, "fatol": 1e-3, "adaptive": True},
    )
    best = to_params(res.x, base)
    print(f"end loss {res.fun:.3f} after {res.nfev} evaluations")
    for name, _ in FREE:
        print(f"    {name}: float = {getattr(best, name):.6g}")
    values = evaluate_mean(best)
    for k, t, s in TARGETS:
        print(f"{k:30s} target {t:7.2f} simulated {values[k]:7.2f} (scale {s})")


if __name__ == "__main__":
    main()
