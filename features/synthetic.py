"""The synthetic cohort: a literature-calibrated multi-state model with known true risks.

Patients are drawn with the seed paper's mix (literature.md section 1), then followed from
the start of re-irradiation through an illness-death model::

    no necrosis --N--> necrosis (ICA exposed with probability q) --H--> haemorrhage death
         |                 |
         +--P, O--> death (progression, other causes) <--P, c*O--+

with proportional cause-specific hazards (Weibull for necrosis and progression, constant
for other causes and for haemorrhage after an ICA-exposing necrosis; a necrosis that does
not expose the internal carotid artery does not bleed), administrative censoring from the
seed's accrual and closing dates, and independent loss to follow-up. Because the hazards
are known, :func:`true_cif` gives each patient's true cumulative incidence, the yardstick
for every model trained on these data. Parameters live in
:class:`features.synthetic_params.DGPParams`; the datasheet is
``docs/synthetic_cohort_datasheet.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit
from scipy.stats import norm

from features.config import (
    ASSUMED_PRIMARY_FRACTION_GY,
    ENDPOINTS,
    EVENT_COMPETING,
    EVENT_OF_INTEREST,
    Endpoint,
)
from features.pipeline import eqd2
from features.schema import INPUT_COLUMNS, OUTCOME_COLUMNS
from features.synthetic_params import DEFAULT_PARAMS, DGPParams, with_overrides

RT_STAGES: tuple[str, ...] = ("rT1", "rT2", "rT3", "rT4")
ADVANCED_STAGE_INDEX = 2  # rT3 and rT4 are "locally advanced" (index >= 2)
DAYS_PER_MONTH = 365.25 / 12
TRUE_CIF_STEP_MONTHS = 0.05
"""Integration step of :func:`true_cif` (months); its error is far below Monte-Carlo error."""
MIN_RECORDED_MONTHS = 0.1
"""A recorded time is never 0: an export's first possible value is one rounding step."""
MEASURE_DECIMALS = 1  # GTV (cm3) and TTR (months) to one decimal
ID_PREFIX = "SYN"
CAUSE_ALIVE, CAUSE_HAEM, CAUSE_PROG, CAUSE_OTHER, CAUSE_UNKNOWN = (
    "alive",
    "haemorrhage",
    "progression",
    "other",
    "unknown",
)

# Fixed layout of the random draws: each step always consumes the same numbers, so that
# overriding a parameter (a dose plan, the twice-daily share) leaves every other draw of
# the same seed untouched (common random numbers for the virtual trials).
_N_UNIFORM_COV = 13
_N_NORMAL_COV = 5
_N_EXP_OUT = 5
_N_UNIFORM_OUT = 3


def _resolve(params: DGPParams | None, overrides: dict[str, Any]) -> DGPParams:
    base = DEFAULT_PARAMS if params is None else params
    return with_overrides(base, **overrides) if overrides else base


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for covariates and outcomes, both from the one seed."""
    cov_seq, out_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(cov_seq), np.random.default_rng(out_seq)


# ---------------------------------------------------------------------------- covariates
def _ttr_log_sd(p: DGPParams) -> float:
    """Log-normal sd that puts ``ttr_share_le_24`` of TTRs at or below the short-TTR cut."""
    z = norm.ppf(p.ttr_share_le_24)
    return float(np.log(p.short_ttr_months / p.ttr_median_months) / z)


def _chemo_intercept(p: DGPParams) -> float:
    """Logistic intercept that makes the chemotherapy share ``chemo_share`` overall."""
    shares = np.asarray(p.rt_stage_shares, dtype=float)
    p_adv = shares[ADVANCED_STAGE_INDEX:].sum() / shares.sum()
    p_short = p.ttr_share_le_24
    cells = [(a, s) for a in (0.0, 1.0) for s in (0.0, 1.0)]
    weights = [(p_adv if a else 1 - p_adv) * (p_short if s else 1 - p_short) for a, s in cells]

    def gap(b0: float) -> float:
        mean = sum(
            w * expit(b0 + p.chemo_log_or_rt34 * a + p.chemo_log_or_short_ttr * s)
            for (a, s), w in zip(cells, weights, strict=True)
        )
        return mean - p.chemo_share

    share = min(max(p.chemo_share, 1e-6), 1 - 1e-6)
    bound = abs(np.log(share / (1 - share))) + 20.0
    return float(brentq(gap, -bound, bound))


def _pick(u: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Categorical draw by inverse transform (one uniform per patient, whatever the shares)."""
    cdf = np.cumsum(shares) / np.sum(shares)
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(shares) - 1)


def draw_covariates(n: int, seed: int = 0, params: DGPParams | None = None) -> pd.DataFrame:
    """Draw ``n`` patients' inputs (the contract's input columns) with the seed's mix."""
    p = DEFAULT_PARAMS if params is None else params
    rng, _ = _streams(seed)
    return _draw_covariates(n, seed, p, rng)


def _draw_covariates(n: int, seed: int, p: DGPParams, rng: np.random.Generator) -> pd.DataFrame:
    if n < 1:
        raise ValueError(f"n must be at least 1 (got {n})")
    u = rng.random((n, _N_UNIFORM_COV))
    z = rng.standard_normal((n, _N_NORMAL_COV))

    male = u[:, 0] < p.male_share
    age = np.clip(p.age_median_years + p.age_sd_years * z[:, 0], p.age_min_years, p.age_max_years)
    stage = _pick(u[:, 1], np.asarray(p.rt_stage_shares))
    advanced = stage >= ADVANCED_STAGE_INDEX
    gtv_median = np.asarray(p.gtv_median_cm3_by_stage, dtype=float)[stage]
    gtv = np.clip(gtv_median * np.exp(p.gtv_log_sd * z[:, 1]), p.gtv_min_cm3, p.gtv_max_cm3)
    nodal = u[:, 2] < p.nodal_share
    ttr = np.clip(
        p.ttr_median_months * np.exp(_ttr_log_sd(p) * z[:, 2]), p.ttr_min_months, p.ttr_max_months
    )
    ttr = np.round(ttr, MEASURE_DECIMALS)
    short_ttr = ttr <= p.short_ttr_months

    tech_names = np.array([name for name, _ in p.primary_technique_shares], dtype=object)
    tech = tech_names[_pick(u[:, 3], np.array([s for _, s in p.primary_technique_shares]))]
    primary_dose = np.clip(
        p.primary_dose_median_gy + p.primary_dose_sd_gy * z[:, 3],
        p.primary_dose_min_gy,
        p.primary_dose_max_gy,
    )
    primary_frac = np.where(
        tech == "IMRT",
        p.primary_fraction_imrt_gy,
        np.where(tech == "2D", p.primary_fraction_2d_gy, p.primary_fraction_unknown_gy),
    ).astype(float)
    missing_frac = (tech == "unknown") & (u[:, 4] < p.primary_fraction_missing_share_unknown)
    primary_frac[missing_frac] = np.nan

    chemo_p = expit(
        _chemo_intercept(p) + p.chemo_log_or_rt34 * advanced + p.chemo_log_or_short_ttr * short_ttr
    )
    chemo = u[:, 5] < chemo_p

    twice_daily = u[:, 7] < p.twice_daily_share
    early_stop = (~twice_daily) & (u[:, 6] < p.early_stop_share)
    mix_frac = np.array([f for f, _ in p.reirr_fraction_mix])
    frac = mix_frac[_pick(u[:, 8], np.array([s for _, s in p.reirr_fraction_mix]))]
    dose = np.clip(
        p.reirr_dose_median_gy + p.reirr_dose_sd_gy * z[:, 4],
        p.reirr_dose_min_gy,
        p.reirr_dose_max_gy,
    )
    dose = np.where(
        early_stop,
        p.early_stop_dose_min_gy + (p.early_stop_dose_max_gy - p.early_stop_dose_min_gy) * u[:, 9],
        dose,
    )
    bid_dose = np.clip(
        p.twice_daily_dose_median_gy + p.twice_daily_dose_sd_gy * z[:, 4],
        p.twice_daily_dose_min_gy,
        p.twice_daily_dose_max_gy,
    )
    dose = np.where(twice_daily, bid_dose, dose)
    frac = np.where(twice_daily, p.twice_daily_fraction_gy, frac)
    per_day = np.where(twice_daily, 2, 1)
    if p.plan is not None:
        plan_dose, plan_frac, plan_per_day = p.plan
        dose = np.full(n, float(plan_dose))
        frac = np.full(n, float(plan_frac))
        per_day = np.full(n, int(plan_per_day))

    shares = np.asarray(p.rt_stage_shares, dtype=float) / np.sum(p.rt_stage_shares)
    p_adv = shares[ADVANCED_STAGE_INDEX:].sum()
    brachy_early = p.brachy_share / ((1 - p_adv) + p.brachy_rt34_relative * p_adv)
    brachy = u[:, 10] < np.where(advanced, p.brachy_rt34_relative * brachy_early, brachy_early)
    prior_g3 = u[:, 11] < p.prior_grade3_share
    pre_necrosis = u[:, 12] < p.preexisting_necrosis_share

    width = max(6, len(str(n)))
    return pd.DataFrame(
        {
            "patient_id": [f"{ID_PREFIX}-{seed}-{i:0{width}d}" for i in range(1, n + 1)],
            "age_years": np.round(age).astype(np.int64),  # whole years, as exported
            "sex": np.where(male, "male", "female"),
            "rt_stage": np.array(RT_STAGES, dtype=object)[stage],
            "nodal_recurrence": nodal,
            "ttr_months": ttr,
            "gtv_cm3": np.round(gtv, MEASURE_DECIMALS),
            "primary_dose_gy": np.round(primary_dose, p.dose_decimals),
            "primary_fraction_gy": np.round(primary_frac, p.dose_decimals),
            "primary_technique": tech.astype(str),
            "reirr_dose_gy": np.round(dose, p.dose_decimals),
            "reirr_fraction_gy": np.round(frac, p.dose_decimals),
            "reirr_fractions_per_day": per_day.astype(np.int64),
            "chemotherapy": chemo,
            "brachytherapy_boost": brachy,
            "prior_grade3_toxicity": prior_g3,
            "preexisting_necrosis": pre_necrosis,
        }
    )[list(INPUT_COLUMNS)]


# ---------------------------------------------------------------------------- hazards
@dataclass(frozen=True)
class Hazards:
    """Each patient's hazard parameters; cumulative hazards are closed-form in time."""

    necrosis_mult: np.ndarray  # exp(lp_N)
    progression_mult: np.ndarray  # exp(lp_P)
    other_rate: np.ndarray  # per month, before necrosis
    haemorrhage_rate: np.ndarray  # per month, after a necrosis exposing the ICA
    ica_share: np.ndarray  # probability that a necrosis exposes the ICA
    params: DGPParams

    def cum_necrosis(self, t: np.ndarray) -> np.ndarray:
        """Cumulative necrosis hazard, shape (n_patients, len(t))."""
        return self.necrosis_mult[:, None] * necrosis_baseline(np.asarray(t, float), self.params)

    def cum_progression(self, t: np.ndarray) -> np.ndarray:
        p = self.params
        scaled = np.asarray(t, dtype=float) / p.progression_weibull_scale_months
        return self.progression_mult[:, None] * scaled**p.progression_weibull_shape


def necrosis_baseline(t: np.ndarray, p: DGPParams) -> np.ndarray:
    """Baseline cumulative necrosis hazard: a Weibull that starts after a lag with a finite hazard.

    H0(t) = ((u + s) / scale)^shape - (s / scale)^shape with u = (t - lag)+ and s the onset
    offset: zero before the lag, then a falling hazard that is finite at onset (a pure
    Weibull with shape < 1 would pile cases up in the first days after the lag).
    """
    after = np.maximum(np.asarray(t, dtype=float) - p.necrosis_lag_months, 0.0)
    s = p.necrosis_onset_offset_months
    scale, shape = p.necrosis_weibull_scale_months, p.necrosis_weibull_shape
    return ((after + s) / scale) ** shape - (s / scale) ** shape


def _invert_necrosis(e: np.ndarray, mult: np.ndarray, p: DGPParams) -> np.ndarray:
    """Time at which exp(lp_N) H0(t) reaches the exponential draw ``e`` (inverse of above)."""
    s = p.necrosis_onset_offset_months
    scale, shape = p.necrosis_weibull_scale_months, p.necrosis_weibull_shape
    with np.errstate(divide="ignore"):
        inner = e / mult + (s / scale) ** shape
    return p.necrosis_lag_months - s + scale * inner ** (1.0 / shape)


def dgp_eqd2(total_gy, fraction_gy, fractions_per_day, params: DGPParams) -> np.ndarray:
    """EQD2 with the DGP's own alpha/beta and incomplete repair between b.i.d. fractions."""
    per_day = np.asarray(fractions_per_day, dtype=float)
    repair = np.where(per_day >= 2, 1.0 + params.bid_incomplete_repair_h, 1.0)
    return eqd2(total_gy, np.asarray(fraction_gy, dtype=float) * repair, params.dgp_alpha_beta_gy)


_TRUE_TEXT = frozenset({"true", "1", "1.0", "yes"})
_FALSE_TEXT = frozenset({"false", "0", "0.0", "no"})


def _flag(col: pd.Series, name: str) -> np.ndarray:
    """A boolean column as booleans, also when read from a CSV as text ("False" is false)."""
    if col.dtype == bool:
        return col.to_numpy()
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy() != 0
    text = col.astype(str).str.strip().str.lower()
    bad = ~text.isin(_TRUE_TEXT | _FALSE_TEXT)
    if bad.any():
        raise ValueError(f"hazards: {name} has non-boolean value(s) {sorted(set(col[bad]))[:3]}")
    return text.isin(_TRUE_TEXT).to_numpy()


def hazards(df: pd.DataFrame, params: DGPParams | None = None) -> Hazards:
    """The hazard parameters of each row of ``df`` (contract input columns; outcomes ignored)."""
    p = DEFAULT_PARAMS if params is None else params
    missing = [c for c in INPUT_COLUMNS if c not in df.columns and c != "patient_id"]
    missing = [c for c in missing if c != "primary_fraction_gy"]
    if missing:
        raise ValueError(f"hazards: missing input column(s) {missing}")
    stage = df["rt_stage"].astype(str).map({s: i for i, s in enumerate(RT_STAGES)})
    if stage.isna().any():
        raise ValueError("hazards: unknown rt_stage value(s)")
    advanced = (stage.to_numpy() >= ADVANCED_STAGE_INDEX).astype(float)
    age = df["age_years"].astype(float).to_numpy() - p.age_reference_years
    gtv = np.minimum(df["gtv_cm3"].astype(float).to_numpy(), p.gtv_effect_cap_cm3)
    gtv = gtv - p.gtv_reference_cm3
    short_ttr = (df["ttr_months"].astype(float).to_numpy() <= p.short_ttr_months).astype(float)
    male = (df["sex"].astype(str).to_numpy() == "male").astype(float)
    flag = {
        c: _flag(df[c], c).astype(float)
        for c in (
            "nodal_recurrence",
            "chemotherapy",
            "brachytherapy_boost",
            "prior_grade3_toxicity",
            "preexisting_necrosis",
        )
    }
    primary_frac = (
        pd.to_numeric(df["primary_fraction_gy"], errors="coerce")
        if "primary_fraction_gy" in df.columns
        else pd.Series(np.nan, index=df.index)
    ).fillna(ASSUMED_PRIMARY_FRACTION_GY)
    cum_eqd2 = eqd2(
        df["primary_dose_gy"].astype(float).to_numpy(),
        primary_frac.to_numpy(),
        p.dgp_alpha_beta_gy,
    ) + dgp_eqd2(
        df["reirr_dose_gy"].astype(float).to_numpy(),
        df["reirr_fraction_gy"].astype(float).to_numpy(),
        pd.to_numeric(df["reirr_fractions_per_day"]).to_numpy(),
        p,
    )
    lp_n = (
        p.necrosis_log_hr_per_eqd2_gy * (cum_eqd2 - p.eqd2_reference_gy)
        + p.necrosis_log_hr_gtv_per_cm3 * gtv
        + p.necrosis_log_hr_short_ttr * short_ttr
        + p.necrosis_log_hr_male * male
        + p.necrosis_log_hr_preexisting * flag["preexisting_necrosis"]
        + p.necrosis_log_hr_prior_grade3 * flag["prior_grade3_toxicity"]
        + p.necrosis_log_hr_age_per_year * age
        + p.necrosis_log_hr_brachy * flag["brachytherapy_boost"]
        + p.necrosis_log_hr_chemo * flag["chemotherapy"]
        + p.necrosis_log_hr_rt34 * advanced
    )
    lp_p = (
        p.progression_log_hr_rt34 * advanced
        + p.progression_log_hr_gtv_per_cm3 * gtv
        + p.progression_log_hr_age_per_year * age
        + p.progression_log_hr_nodal * flag["nodal_recurrence"]
        + p.progression_log_hr_short_ttr * short_ttr
        + p.progression_log_hr_chemo * flag["chemotherapy"]
    )
    lp_o = (
        p.other_log_hr_age_per_year * age
        + p.other_log_hr_prior_grade3 * flag["prior_grade3_toxicity"]
    )
    ica_share = expit(p.ica_exposure_logit + p.ica_exposure_log_or_rt34 * advanced)
    return Hazards(
        necrosis_mult=np.exp(lp_n),
        progression_mult=np.exp(lp_p),
        other_rate=p.other_death_rate_per_month * np.exp(lp_o),
        haemorrhage_rate=np.full(len(df), p.haemorrhage_rate_per_month),
        ica_share=ica_share,
        params=p,
    )


# ---------------------------------------------------------------------------- outcomes
@dataclass(frozen=True)
class Simulation:
    """A simulated cohort plus what a real export would not show (for calibration)."""

    frame: pd.DataFrame
    true_cause: np.ndarray  # cause before relabelling some as unknown; "alive" if censored
    lost: np.ndarray  # censored by loss to follow-up (not administratively)


def _months_between(start: str, end: str) -> float:
    days = (np.datetime64(end, "D") - np.datetime64(start, "D")).astype(float)
    return float(days / DAYS_PER_MONTH)


def _invert_weibull(e: np.ndarray, mult: np.ndarray, scale: float, shape: float) -> np.ndarray:
    """Time at which exp(lp) (t / scale)^shape reaches the exponential draw ``e``."""
    with np.errstate(divide="ignore"):
        return scale * (e / mult) ** (1.0 / shape)


def _simulate_outcomes(cov: pd.DataFrame, p: DGPParams, rng: np.random.Generator) -> Simulation:
    n = len(cov)
    e = rng.standard_exponential((n, _N_EXP_OUT))
    u = rng.random((n, _N_UNIFORM_OUT))
    hz = hazards(cov, p)

    t_nec = _invert_necrosis(e[:, 0], hz.necrosis_mult, p)
    t_prog = _invert_weibull(
        e[:, 1],
        hz.progression_mult,
        p.progression_weibull_scale_months,
        p.progression_weibull_shape,
    )
    with np.errstate(divide="ignore"):
        t_other0 = np.where(hz.other_rate > 0, e[:, 2] / hz.other_rate, np.inf)
    necrosis_first = t_nec < np.minimum(t_prog, t_other0)
    # In the necrosis state the other-cause hazard is multiplied by c: the same exponential
    # draw continues from the cumulative hazard already spent (inverse transform, Markov).
    c = p.other_death_hr_after_necrosis
    with np.errstate(divide="ignore", invalid="ignore"):
        t_other1 = t_nec + (e[:, 2] - hz.other_rate * t_nec) / (hz.other_rate * c)
        t_haem = t_nec + e[:, 3] / hz.haemorrhage_rate
    t_haem = np.where(u[:, 2] < hz.ica_share, t_haem, np.inf)  # only an exposed ICA bleeds
    t_other = np.where(necrosis_first, np.where(np.isfinite(t_other1), t_other1, np.inf), t_other0)
    t_haem = np.where(necrosis_first, t_haem, np.inf)
    t_death = np.minimum.reduce([t_prog, t_other, t_haem])
    cause = np.where(
        t_haem <= t_death, CAUSE_HAEM, np.where(t_prog <= t_death, CAUSE_PROG, CAUSE_OTHER)
    ).astype(object)

    accrual = _months_between(p.accrual_start, p.accrual_end)
    admin = _months_between(p.accrual_start, p.final_followup) - accrual * u[:, 0]
    with np.errstate(divide="ignore"):
        t_lost = e[:, 4] / p.loss_rate_per_month if p.loss_rate_per_month > 0 else np.inf
    t_lost = np.broadcast_to(t_lost, (n,))
    censor = np.minimum(admin, t_lost)

    died = t_death <= censor
    follow = np.where(died, t_death, censor)
    necrosis = necrosis_first & (t_nec <= follow)
    true_cause = np.where(died, cause, CAUSE_ALIVE).astype(object)
    unknown = died & (cause != CAUSE_HAEM) & (u[:, 1] < p.unknown_cause_share)
    label = np.where(unknown, CAUSE_UNKNOWN, true_cause)

    follow_r = np.maximum(np.round(follow, p.time_decimals), MIN_RECORDED_MONTHS)
    nec_r = np.maximum(
        np.round(np.where(necrosis, t_nec, follow), p.time_decimals), MIN_RECORDED_MONTHS
    )
    nec_r = np.minimum(np.where(necrosis, nec_r, follow_r), follow_r)
    out = cov.copy()
    out["necrosis_event"] = necrosis
    out["necrosis_months"] = nec_r
    out["followup_months"] = follow_r
    out["death_cause"] = label.astype(str)
    out = out[list(INPUT_COLUMNS) + list(OUTCOME_COLUMNS)]
    return Simulation(frame=out, true_cause=true_cause.astype(str), lost=(~died) & (t_lost < admin))


def simulate(
    n: int, seed: int = 0, params: DGPParams | None = None, **overrides: Any
) -> Simulation:
    """Simulate a cohort and keep the hidden truth (true causes, losses) for calibration."""
    p = _resolve(params, overrides)
    cov_rng, out_rng = _streams(seed)
    cov = _draw_covariates(int(n), seed, p, cov_rng)
    return _simulate_outcomes(cov, p, out_rng)


def simulate_cohort(
    n: int, seed: int = 0, params: DGPParams | None = None, **overrides: Any
) -> pd.DataFrame:
    """``n`` synthetic patients in the cohort contract (inputs and outcomes).

    ``overrides`` replace :class:`DGPParams` fields by name, e.g. ``twice_daily_share=0.2``
    or ``plan=(68.0, 2.0, 1)``. The same seed gives the same table; overriding the dose plan
    keeps every patient and every random draw (common random numbers).
    """
    return simulate(n, seed, params, **overrides).frame


def simulate_outcomes(
    covariates: pd.DataFrame, seed: int = 0, params: DGPParams | None = None, **overrides: Any
) -> pd.DataFrame:
    """Follow the given patients (input columns) through the DGP; returns inputs + outcomes."""
    p = _resolve(params, overrides)
    _, out_rng = _streams(seed)
    cov = covariates.reset_index(drop=True)
    return _simulate_outcomes(cov, p, out_rng).frame


# ---------------------------------------------------------------------------- the truth
def true_cif(
    df: pd.DataFrame,
    endpoint: Endpoint,
    times,
    params: DGPParams | None = None,
    event: int = EVENT_OF_INTEREST,
    step_months: float = TRUE_CIF_STEP_MONTHS,
) -> np.ndarray:
    """Each patient's true cumulative incidence of ``endpoint`` at ``times`` (no censoring).

    Computed from the DGP's hazards by integrating the illness-death model's forward
    equations on a fine grid (hazards constant within each step, whose length is at most
    ``step_months``; the requested times are grid points), never by simulating the patient.
    ``event`` 1 is the endpoint's event, 2 its competing event (mucosal_necrosis: death
    without necrosis; fatal_haemorrhage: death from any other cause). Works for any rows
    with the contract's input columns; outcome columns are ignored.
    Returns an array of shape (n_patients, len(times)).
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
    if event not in (EVENT_OF_INTEREST, EVENT_COMPETING):
        raise ValueError(f"event must be {EVENT_OF_INTEREST} or {EVENT_COMPETING} (got {event})")
    t_req = np.atleast_1d(np.asarray(times, dtype=float))
    if t_req.ndim != 1 or np.any(t_req < 0) or not np.all(np.isfinite(t_req)):
        raise ValueError("times must be a 1-d array of finite, non-negative months")
    p = DEFAULT_PARAMS if params is None else params
    hz = hazards(df.reset_index(drop=True), p)
    t_max = float(t_req.max(initial=0.0))
    n_steps = max(1, int(np.ceil(t_max / step_months)))
    lag = [p.necrosis_lag_months] if p.necrosis_lag_months < t_max else []
    grid = np.unique(np.concatenate([np.linspace(0.0, t_max, n_steps + 1), t_req, lag]))
    quantity = _CIF_QUANTITY[(endpoint, event)]
    return np.clip(_integrate(hz, grid, t_req, quantity), 0.0, 1.0)


_CIF_QUANTITY: dict[tuple[str, int], str] = {
    ("mucosal_necrosis", EVENT_OF_INTEREST): "necrosis",
    ("mucosal_necrosis", EVENT_COMPETING): "death_without_necrosis",
    ("fatal_haemorrhage", EVENT_OF_INTEREST): "haemorrhage",
    ("fatal_haemorrhage", EVENT_COMPETING): "other_death",
}


def _integrate(hz: Hazards, grid: np.ndarray, t_req: np.ndarray, quantity: str) -> np.ndarray:
    """Step the illness-death model's forward equations over ``grid``, one step at a time.

    States: 0 no necrosis; 1a necrosis exposing the ICA (can bleed); 1b necrosis that does
    not (cannot bleed). Memory is O(patients): each step updates per-patient vectors.
    Within a step all hazards are constant (the Weibull ones through their exact cumulative
    increments), so the step is solved exactly: with a and b the step's total cumulative
    hazards out of state 0 and out of a necrosis state,
        P0(k+1) = P0(k) e^-a,
        P1(k+1) = P1(k) e^-b + s P0(k) dH_N (e^-b - e^-a) / (a - b)   (P0 dH_N e^-a if a = b),
    with s the share entering that necrosis state; what leaves a state is split between its
    exits in proportion to their hazards.
    """
    p = hz.params
    n = len(hz.necrosis_mult)
    c = p.other_death_hr_after_necrosis
    p0, p1a, p1b = np.ones(n), np.zeros(n), np.zeros(n)
    cif_n, cif_d0, cif_h = np.zeros(n), np.zeros(n), np.zeros(n)
    q = hz.ica_share
    base_n = necrosis_baseline(grid, p)
    base_p = (grid / p.progression_weibull_scale_months) ** p.progression_weibull_shape
    cols_at: dict[int, list[int]] = {}
    for col, g in enumerate(np.searchsorted(grid, t_req)):
        cols_at.setdefault(int(g), []).append(col)
    out = np.zeros((n, len(t_req)))

    def value() -> np.ndarray:
        if quantity == "necrosis":
            return cif_n
        if quantity == "death_without_necrosis":
            return cif_d0
        if quantity == "haemorrhage":
            return cif_h
        return 1.0 - p0 - p1a - p1b - cif_h

    def kernel(a: np.ndarray, ea: np.ndarray, b: np.ndarray, eb: np.ndarray) -> np.ndarray:
        diff = a - b
        close = np.abs(diff) < _CLOSE_HAZARDS
        return np.where(close, ea, (eb - ea) / np.where(close, 1.0, diff))

    if 0 in cols_at:
        out[:, cols_at[0]] = value()[:, None]
    for k in range(len(grid) - 1):
        dt = grid[k + 1] - grid[k]
        d_n = hz.necrosis_mult * (base_n[k + 1] - base_n[k])
        d_p = hz.progression_mult * (base_p[k + 1] - base_p[k])
        d_o = hz.other_rate * dt
        d_h = hz.haemorrhage_rate * dt
        a = d_n + d_p + d_o
        b_b = d_p + c * d_o  # out of a necrosis that cannot bleed
        b_a = d_h + b_b  # out of a necrosis exposing the ICA
        ea, eba, ebb = np.exp(-a), np.exp(-b_a), np.exp(-b_b)
        leave0 = p0 * -np.expm1(-a)
        to_n = leave0 * np.divide(d_n, a, out=np.zeros(n), where=a > 0)
        p1a_next = p1a * eba + q * p0 * d_n * kernel(a, ea, b_a, eba)
        p1b_next = p1b * ebb + (1.0 - q) * p0 * d_n * kernel(a, ea, b_b, ebb)
        left1a = p1a + q * to_n - p1a_next
        cif_h = cif_h + left1a * np.divide(d_h, b_a, out=np.zeros(n), where=b_a > 0)
        cif_n = cif_n + to_n
        cif_d0 = cif_d0 + (leave0 - to_n)
        p0, p1a, p1b = p0 * ea, p1a_next, p1b_next
        if k + 1 in cols_at:
            out[:, cols_at[k + 1]] = value()[:, None]
    return out


_CLOSE_HAZARDS = 1e-12
