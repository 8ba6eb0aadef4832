"""Every parameter of the synthetic cohort's data-generating process, in one place.

Each field says its value's source: the seed paper (Kong et al., BMC Cancer 2018; tables of
``docs/literature.md`` section 1), another study (section 2), a calibration target
(section 4, fitted by ``benchmarks/calibrate_dgp.py`` and frozen here), or ASSUMED (ours;
change it freely). Nothing is re-fitted at run time: the defaults are constants.

Times are in months from the start of re-irradiation; hazards are per month.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

DosePlan = tuple[float, float, int]
"""(re-irradiation total dose Gy, dose per fraction Gy, fractions per day)."""


@dataclass(frozen=True)
class DGPParams:
    """Parameters of the synthetic cohort's multi-state model (see the datasheet)."""

    # ---------------------------------------------------------------- patient mix (seed §1)
    male_share: float = 0.723  # seed Table 2: 133/184
    age_median_years: float = 49.0  # seed Table 2
    age_sd_years: float = 11.0  # ASSUMED (normal; gives roughly the range 23-86)
    age_min_years: float = 23.0  # seed Table 2 range
    age_max_years: float = 86.0  # seed Table 2 range
    rt_stage_shares: tuple[float, float, float, float] = (0.150, 0.198, 0.300, 0.352)
    # rT1..rT4; rT1-2 = 34.8 %, rT3-4 = 65.2 % (seed Table 2); split within pairs ASSUMED
    gtv_median_cm3_by_stage: tuple[float, float, float, float] = (9.0, 16.0, 30.0, 45.0)
    # ASSUMED log-normal GTV rising with rT stage, overall median ~25-30 cm3 (literature §2)
    gtv_log_sd: float = 0.65  # ASSUMED
    gtv_min_cm3: float = 0.5  # ASSUMED floor (contract: > 0)
    gtv_max_cm3: float = 300.0  # ASSUMED cap (contract: <= 500)
    nodal_share: float = 0.168  # seed Table 2: 31/184
    ttr_median_months: float = 35.0  # seed Table 2
    ttr_share_le_24: float = 0.321  # seed Table 2: TTR <= 2 y, 59/184; sets the log-normal sd
    ttr_min_months: float = 6.0  # seed Table 2 range
    ttr_max_months: float = 388.0  # seed Table 2 range
    primary_technique_shares: tuple[tuple[str, float], ...] = (
        ("2D", 0.560),  # seed Table 2: 103/184 (2D-CRT)
        ("IMRT", 0.234),  # seed Table 2: 43/184
        ("unknown", 0.207),  # seed Table 2: 38/184 (3D: none in the seed cohort)
    )
    primary_dose_median_gy: float = 70.0  # seed Table 2
    primary_dose_sd_gy: float = 2.5  # ASSUMED (normal)
    primary_dose_min_gy: float = 60.0  # seed Table 2 range
    primary_dose_max_gy: float = 78.35  # seed Table 2 range
    primary_fraction_2d_gy: float = 2.0  # ASSUMED: conventional 2 Gy fractions
    primary_fraction_imrt_gy: float = 2.12  # ASSUMED: 70 Gy in 33 fractions
    primary_fraction_unknown_gy: float = 2.0  # ASSUMED, when recorded
    primary_fraction_missing_share_unknown: float = 0.5
    # ASSUMED: half of the unknown-technique records leave the fraction size empty, to exercise
    # the contract's "2.0 Gy assumed" path (about 10 % of all rows)
    chemo_share: float = 0.75  # seed Table 1: 138/184 had chemotherapy with re-irradiation
    chemo_log_or_rt34: float = 1.0  # ASSUMED direction (seed: chemo for advanced disease)
    chemo_log_or_short_ttr: float = 0.5  # ASSUMED direction (seed: ... or a short interval)
    reirr_dose_median_gy: float = 66.9  # ASSUMED so that the overall median is 66.7 (seed)
    reirr_dose_sd_gy: float = 3.0  # ASSUMED (normal)
    reirr_dose_min_gy: float = 60.0  # ASSUMED for completed courses
    reirr_dose_max_gy: float = 77.0  # seed Table 1 range
    early_stop_share: float = 5 / 184  # seed: 5 stopped early after 42-64 Gy
    early_stop_dose_min_gy: float = 42.0  # seed
    early_stop_dose_max_gy: float = 64.0  # seed
    reirr_fraction_mix: tuple[tuple[float, float], ...] = (
        (1.8, 0.005),  # seed Table 1: 1 patient
        (2.0, 0.679),  # seed Table 1: 125
        (2.1, 0.239),  # seed Table 1: 44
        (2.2, 0.033),  # seed Table 1: 6
        (2.3, 0.038),  # seed Table 1: 7
    )
    twice_daily_share: float = 0.0
    # seed cohort: none. Training on synthetic data uses a modern mix (e.g. 0.2), so that a
    # model has seen the schedule it is asked about (You et al., Lancet 2023)
    twice_daily_fraction_gy: float = 1.2  # You et al. 2023: 1.2 Gy b.i.d.
    twice_daily_dose_median_gy: float = 65.0  # You et al. 2023: 65 Gy in 54 fractions
    twice_daily_dose_sd_gy: float = 1.5  # ASSUMED
    twice_daily_dose_min_gy: float = 60.0  # ASSUMED
    twice_daily_dose_max_gy: float = 72.0  # ASSUMED
    brachy_share: float = 0.071  # seed Table 1: 13/184
    brachy_rt34_relative: float = 0.15
    # ASSUMED: a boost is mostly for superficial (rT1-2) recurrences; rT3-4 rate relative
    prior_grade3_share: float = 0.10  # ASSUMED (not reported by the seed)
    preexisting_necrosis_share: float = 0.05  # ASSUMED (not reported by the seed)
    plan: DosePlan | None = None
    # a fixed re-irradiation plan for every patient (virtual trials); None: drawn as above

    # ---------------------------------------------------------------- dose arithmetic
    dgp_alpha_beta_gy: float = 5.0
    # ASSUMED (literature §4 note): the DGP's own alpha/beta in the necrosis dose term; the
    # feature pipeline keeps the clinical 3 Gy, a deliberate, realistic mismatch
    bid_incomplete_repair_h: float = 0.0
    # ASSUMED: Thames incomplete-repair factor between b.i.d. fractions (0 = full repair);
    # the effective dose per fraction is d (1 + h)
    eqd2_reference_gy: float = 140.0  # seed: cumulative EQD2 split; centres the dose term
    age_reference_years: float = 49.0  # centres the age terms (seed median)
    gtv_reference_cm3: float = 30.0  # centres the GTV terms (Tian et al. cut-off)
    gtv_effect_cap_cm3: float = 150.0  # ASSUMED: log-linear GTV effects stop growing here
    short_ttr_months: float = 24.0  # Tian et al.: interval <= 2 years

    # ---------------------------------------------------------------- necrosis hazard
    # Weibull cause-specific hazard from the no-necrosis state, proportional in covariates:
    # H_N(t) = exp(lp_N) (t / scale)^shape. Scale, shape and dose slope fitted (section 4).
    necrosis_lag_months: float = 0.5
    # seed: earliest necrosis at 0.5 months; ASSUMED none earlier (the baseline Weibull starts
    # here)
    necrosis_onset_offset_months: float = 0.25
    # ASSUMED: H_N(t) = exp(lp_N) [((u + s) / scale)^shape - (s / scale)^shape], u = (t - lag)+;
    # the offset s keeps the hazard finite at onset (no pile-up of cases just after the lag)
    necrosis_weibull_shape: float = 0.3825  # FITTED: median latency 6.0 months, share 31.6 %
    necrosis_weibull_scale_months: float = 1095.0  # FITTED: share with necrosis 31.6 %
    necrosis_log_hr_per_eqd2_gy: float = 0.1271  # FITTED: virtual trial 1 (Tian 2014)
    necrosis_log_hr_gtv_per_cm3: float = math.log(1.014)  # Xiao 2015 (toxicity death), capped
    necrosis_log_hr_short_ttr: float = math.log(1.6)  # Tian (direction); size ASSUMED
    necrosis_log_hr_male: float = math.log(1.3)  # Yu 2016 score (direction); size ASSUMED
    necrosis_log_hr_preexisting: float = math.log(2.5)  # Yu 2016 score (direction); ASSUMED
    necrosis_log_hr_prior_grade3: float = math.log(1.5)  # ASSUMED
    necrosis_log_hr_age_per_year: float = math.log(1.01)  # seed discussion: old age; ASSUMED
    necrosis_log_hr_brachy: float = math.log(1.5)  # ASSUMED: extra mucosal dose
    necrosis_log_hr_chemo: float = 0.0  # ASSUMED: no effect
    necrosis_log_hr_rt34: float = 0.270  # FITTED: 75 % of haemorrhages in rT3-4 (seed)

    # ---------------------------------------------------------------- haemorrhage hazard
    # Only from the necrosis state (illness-death). On entering it, a necrosis exposes the
    # internal carotid artery (ICA) with probability expit(logit + log-OR x rT3-4); only an
    # exposed necrosis can bleed, at a constant rate. (Seed: the 44 fatal bleeds came from
    # necroses involving the ICA; literature §2: about half of necroses bleed after any RT,
    # 44 of 56 after re-irradiation.)
    haemorrhage_rate_per_month: float = math.log(2) / 3.0
    # ASSUMED: median 3 months from an ICA-exposing necrosis to the bleed (literature §2: no
    # published distribution; "a few months")
    ica_exposure_logit: float = 1.073  # FITTED: share dying of haemorrhage 23.9 %
    ica_exposure_log_or_rt34: float = 0.786  # FITTED: 75 % of haemorrhages in rT3-4 (seed)

    # ---------------------------------------------------------------- death from progression
    # Weibull: H_P(t) = exp(lp_P) (t / scale)^shape, same in both states (Markov).
    progression_weibull_shape: float = 1.45  # FITTED: OS 3 y 46.0 %, 5 y 28.8 %
    progression_weibull_scale_months: float = 120.0  # FITTED: OS
    progression_log_hr_rt34: float = math.log(1.96)  # JCO 2018 index (OS)
    progression_log_hr_gtv_per_cm3: float = math.log(1.01)  # JCO 2018 index (OS), capped
    progression_log_hr_age_per_year: float = math.log(1.02)  # JCO 2018 index (OS)
    progression_log_hr_nodal: float = math.log(1.5)  # ASSUMED
    progression_log_hr_short_ttr: float = math.log(1.3)  # seed: early recurrence; ASSUMED
    progression_log_hr_chemo: float = 0.0  # seed: no effect on OS

    # ---------------------------------------------------------------- death from other causes
    other_death_rate_per_month: float = 0.00352  # FITTED: progression 72 % of known other causes
    other_log_hr_age_per_year: float = math.log(1.04)  # ASSUMED
    other_log_hr_prior_grade3: float = math.log(1.9)  # JCO 2018 index (OS)
    other_death_hr_after_necrosis: float = 1.5  # ASSUMED: feeding difficulty, infection

    # ---------------------------------------------------------------- labels and follow-up
    unknown_cause_share: float = 36 / 90
    # seed: 36 deaths of unknown cause among the 90 not from haemorrhage; only non-haemorrhage
    # deaths are relabelled "unknown", so labels and true_cif agree
    accrual_start: str = "2005-02-01"  # seed: February 2005
    accrual_end: str = "2013-05-31"  # seed: May 2013
    final_followup: str = "2016-10-12"  # seed: last follow-up date
    loss_rate_per_month: float = 0.001135  # FITTED: about 8 of 184 lost to follow-up (seed)
    time_decimals: int = 1  # a real export's precision (0.1 month)
    dose_decimals: int = 2  # 0.01 Gy

    def replace(self, **overrides: Any) -> DGPParams:
        """A copy with fields overridden by name; an unknown name is a clear error."""
        return with_overrides(self, **overrides)


PARAM_NAMES: frozenset[str] = frozenset(f.name for f in dataclasses.fields(DGPParams))


def with_overrides(params: DGPParams, **overrides: Any) -> DGPParams:
    """Return ``params`` with the named fields replaced, refusing names that do not exist."""
    unknown = sorted(set(overrides) - PARAM_NAMES)
    if unknown:
        raise TypeError(
            f"unknown DGP parameter(s) {unknown}; see features.synthetic_params.DGPParams"
        )
    new = dataclasses.replace(params, **overrides)
    _check(new)
    return new


def _check(p: DGPParams) -> None:
    """Refuse values that would make the process meaningless (shares outside [0, 1], ...)."""
    shares = {
        "male_share": p.male_share,
        "nodal_share": p.nodal_share,
        "ttr_share_le_24": p.ttr_share_le_24,
        "chemo_share": p.chemo_share,
        "early_stop_share": p.early_stop_share,
        "twice_daily_share": p.twice_daily_share,
        "brachy_share": p.brachy_share,
        "prior_grade3_share": p.prior_grade3_share,
        "preexisting_necrosis_share": p.preexisting_necrosis_share,
        "unknown_cause_share": p.unknown_cause_share,
        "primary_fraction_missing_share_unknown": p.primary_fraction_missing_share_unknown,
    }
    bad = [k for k, v in shares.items() if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"DGP share(s) outside [0, 1]: {bad}")
    positive = {
        "necrosis_weibull_shape": p.necrosis_weibull_shape,
        "necrosis_weibull_scale_months": p.necrosis_weibull_scale_months,
        "progression_weibull_shape": p.progression_weibull_shape,
        "progression_weibull_scale_months": p.progression_weibull_scale_months,
        "dgp_alpha_beta_gy": p.dgp_alpha_beta_gy,
    }
    bad = [k for k, v in positive.items() if not v > 0]
    if bad:
        raise ValueError(f"DGP parameter(s) must be positive: {bad}")
    nonneg = {
        "haemorrhage_rate_per_month": p.haemorrhage_rate_per_month,
        "other_death_rate_per_month": p.other_death_rate_per_month,
        "loss_rate_per_month": p.loss_rate_per_month,
        "other_death_hr_after_necrosis": p.other_death_hr_after_necrosis,
        "bid_incomplete_repair_h": p.bid_incomplete_repair_h,
        "necrosis_lag_months": p.necrosis_lag_months,
        "necrosis_onset_offset_months": p.necrosis_onset_offset_months,
    }
    bad = [k for k, v in nonneg.items() if not v >= 0]
    if bad:
        raise ValueError(f"DGP parameter(s) must be non-negative: {bad}")
    if len(p.rt_stage_shares) != 4 or len(p.gtv_median_cm3_by_stage) != 4:
        raise ValueError("rt_stage_shares and gtv_median_cm3_by_stage need 4 values (rT1..rT4)")
    if p.plan is not None:
        dose, frac, per_day = p.plan
        if not (dose > 0 and frac > 0 and int(per_day) in (1, 2)):
            raise ValueError(f"plan {p.plan!r}: need (dose Gy > 0, fraction Gy > 0, 1 or 2)")


DEFAULT_PARAMS = DGPParams()
