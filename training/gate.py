"""The promotion gate: promote a challenger only on evidence that it is not worse.

Challenger and champion are scored on the *same* hold-out patients (neither trained on them:
the hold-out is chosen by a salted hash of ``patient_id``, see ``training/data.py``), and the
gate looks at the paired differences, challenger minus champion, of the AUC and the Brier
score at the gate horizon, for every gated endpoint. Resampling the hold-out patients (one
resample shared by both models and both endpoints) gives a two-sided 95 % percentile
interval for each difference. The rule, fixed in the configuration before training:

- absolute limits: the challenger's validated AUC >= ``min_auc`` and ICI <= ``max_ici``
  (these alone decide for the first model ever);
- against a champion, for every gated endpoint: the AUC difference's lower bound above
  ``-auc_margin`` and the Brier difference's upper bound below ``brier_margin`` (a
  non-inferiority rule: the interval must exclude "worse by the margin or more");
- fewer than ``min_holdout_events`` events of interest by the horizon in the hold-out (for
  any gated endpoint): no decision on noise; the gate answers "insufficient evidence" and
  promotes nothing (a person can, with ``reirrad promote``);
- champion and challenger must share the hold-out definition (salt, fraction), recorded with
  every registered version: otherwise the challenger may have trained on the champion's
  hold-out patients (or the reverse), and the comparison is refused.

Why a paired interval and not two point estimates: at a few hundred hold-out patients the
sampling error of each AUC is several hundredths, far above any sensible tolerance on a
point difference, but the two models' errors on the same patients are strongly correlated,
so the difference is known much more precisely than either figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

import numpy as np

from features.config import EVENT_CENSORED, EVENT_OF_INTEREST
from training.config import GateConfig, HoldoutConfig
from training.metrics import _ipcw_weights, _weighted_auc, auc_cr, brier_cr

HOLDOUT_SALT_TAG: Final[str] = "holdout_salt"
HOLDOUT_FRACTION_TAG: Final[str] = "holdout_fraction"
"""Registry tags of every version: the hold-out it was *not* trained on."""
HOLDOUT_SALT_PARAM: Final[str] = "config.holdout.salt"
HOLDOUT_FRACTION_PARAM: Final[str] = "config.holdout.fraction"
"""Run params that record the same for versions registered before the tags existed."""
INSUFFICIENT_EVIDENCE: Final[str] = "insufficient evidence: promote by hand with `reirrad promote`"
CONFIDENCE: Final[float] = 0.95

Status = Literal[
    "promote",  # passed against a champion
    "first_model",  # no champion: absolute limits passed
    "refuse",  # a check failed
    "insufficient_evidence",  # too few hold-out events to decide
    "holdout_mismatch",  # champion judged on another hold-out definition
    "champion_unscorable",  # the champion cannot be scored on the hold-out
]


class HoldoutMismatchError(ValueError):
    """Champion and challenger were split with different hold-out definitions."""


# --------------------------------------------------------------------- hold-out definition
@dataclass(frozen=True)
class HoldoutDefinition:
    """Which patients a version never trained on: ``salt`` and ``fraction`` of the hash split."""

    salt: str
    fraction: float

    @classmethod
    def from_config(cls, holdout: HoldoutConfig) -> HoldoutDefinition:
        return cls(holdout.salt, float(holdout.fraction))

    def tags(self) -> dict[str, str]:
        """Registry tags (``repr`` keeps the fraction exact)."""
        return {HOLDOUT_SALT_TAG: self.salt, HOLDOUT_FRACTION_TAG: repr(float(self.fraction))}

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, str], salt_key: str, fraction_key: str
    ) -> HoldoutDefinition | None:
        salt, fraction = values.get(salt_key), values.get(fraction_key)
        if not salt or fraction is None:
            return None
        try:
            return cls(str(salt), float(fraction))
        except ValueError:
            return None

    def describe(self) -> str:
        return f"salt {self.salt!r}, fraction {self.fraction:g}"


def version_holdout(client: Any, name: str, version: int | str) -> HoldoutDefinition | None:
    """The hold-out definition of a registered version: its tags, else its run's config
    params (versions registered before the tags existed), else None (unknown)."""
    mv = client.get_model_version(name, str(version))
    found = HoldoutDefinition.from_mapping(mv.tags or {}, HOLDOUT_SALT_TAG, HOLDOUT_FRACTION_TAG)
    if found is None and mv.run_id:
        params = client.get_run(mv.run_id).data.params
        found = HoldoutDefinition.from_mapping(params, HOLDOUT_SALT_PARAM, HOLDOUT_FRACTION_PARAM)
    return found


def check_same_holdout(
    challenger: HoldoutDefinition,
    champion: HoldoutDefinition | None,
    champion_version: int | None = None,
) -> None:
    """Raise :class:`HoldoutMismatchError` (with the fix) unless both share one definition."""
    who = f"champion v{champion_version}" if champion_version is not None else "the champion"
    if champion is None:
        raise HoldoutMismatchError(
            f"{who} has no recorded hold-out definition, so its hold-out patients may have "
            f"trained the challenger (hold-out {challenger.describe()}); comparison refused. "
            "Promote by hand with `reirrad promote` if intended."
        )
    if champion != challenger:
        raise HoldoutMismatchError(
            f"hold-out definitions differ: {who} used {champion.describe()}, the challenger "
            f"{challenger.describe()}; each may have trained on the other's hold-out patients, "
            "so the comparison is refused. Train with the champion's [holdout] settings, or "
            "promote by hand with `reirrad promote` if intended."
        )


# -------------------------------------------------------------------- paired bootstrap
@dataclass(frozen=True)
class Interval:
    """A difference (challenger - champion) on the hold-out with its 95 % interval."""

    estimate: float
    lo: float
    hi: float

    def text(self, digits: int) -> str:
        return f"{self.estimate:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]"


@dataclass(frozen=True)
class EndpointEvidence:
    """One endpoint's paired comparison on the hold-out."""

    endpoint: str
    n_patients: int
    n_events: int
    challenger_auc: float
    champion_auc: float
    challenger_brier: float
    champion_brier: float
    auc_diff: Interval
    brier_diff: Interval
    n_replicates: int
    """Replicates in which both AUCs could be computed (cases and controls present)."""


def count_events(y: np.ndarray, horizon: float) -> int:
    """Events of interest by ``horizon``: the AUC's cases, what the evidence rests on."""
    return int(np.sum((y["event"] == EVENT_OF_INTEREST) & (y["time"] <= horizon)))


def _scores(time: np.ndarray, event: np.ndarray, risk: np.ndarray, horizon: float):
    return (
        auc_cr(time, event, risk, EVENT_OF_INTEREST, horizon),
        brier_cr(time, event, risk, EVENT_OF_INTEREST, horizon),
    )


def _paired_scores(
    time: np.ndarray, event: np.ndarray, new: np.ndarray, old: np.ndarray, horizon: float
) -> tuple[float, float, float, float]:
    """(AUC new, AUC old, Brier new, Brier old): :func:`auc_cr` and :func:`brier_cr` of both
    models with the IPCW weights estimated once (the bootstrap's inner loop)."""
    w = _ipcw_weights(time, event, horizon)
    by_h = time <= horizon
    cases = by_h & (event == EVENT_OF_INTEREST)
    controls = (time > horizon) | (by_h & (event != EVENT_OF_INTEREST) & (event != EVENT_CENSORED))
    outcome = cases.astype(float)
    b_new = float(np.mean(w * (outcome - new) ** 2))
    b_old = float(np.mean(w * (outcome - old) ** 2))
    if not np.any(cases) or not np.any(controls):
        return math.nan, math.nan, b_new, b_old
    wc, wk = w[cases], w[controls]
    return (
        _weighted_auc(new[cases], wc, new[controls], wk),
        _weighted_auc(old[cases], wc, old[controls], wk),
        b_new,
        b_old,
    )


def paired_bootstrap(
    outcomes: Mapping[str, np.ndarray],
    challenger_risk: Mapping[str, np.ndarray],
    champion_risk: Mapping[str, np.ndarray],
    horizon: float,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, EndpointEvidence]:
    """Paired percentile-bootstrap intervals of AUC and Brier differences per endpoint.

    ``outcomes[e]`` is the hold-out's structured (event, time) array; the risks are each
    model's predicted cumulative incidence at ``horizon`` for the same patients in the same
    order. Each replicate draws patients with replacement once and scores both models on
    that draw for every endpoint (the IPCW weights are re-estimated in the draw).
    """
    endpoints = list(outcomes)
    n = len(next(iter(outcomes.values()))) if endpoints else 0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_bootstrap, n)) if n else np.zeros((n_bootstrap, 0), int)
    out: dict[str, EndpointEvidence] = {}
    alpha = (1.0 - CONFIDENCE) / 2.0
    for e in endpoints:
        y = outcomes[e]
        t, ev = np.asarray(y["time"], float), np.asarray(y["event"], int)
        new = np.clip(np.asarray(challenger_risk[e], float), 0.0, 1.0)
        old = np.clip(np.asarray(champion_risk[e], float), 0.0, 1.0)
        if not (len(new) == len(old) == n):
            raise ValueError(f"{e}: risks and outcomes differ in length")
        new_auc, new_brier = _scores(t, ev, new, horizon)
        old_auc, old_brier = _scores(t, ev, old, horizon)
        d_auc = np.full(n_bootstrap, np.nan)
        d_brier = np.full(n_bootstrap, np.nan)
        for b, idx in enumerate(draws):
            a1, a0, b1, b0 = _paired_scores(t[idx], ev[idx], new[idx], old[idx], horizon)
            d_auc[b] = a1 - a0
            d_brier[b] = b1 - b0
        ok = np.isfinite(d_auc)
        out[e] = EndpointEvidence(
            endpoint=e,
            n_patients=n,
            n_events=count_events(y, horizon),
            challenger_auc=new_auc,
            champion_auc=old_auc,
            challenger_brier=new_brier,
            champion_brier=old_brier,
            auc_diff=_interval(new_auc - old_auc, d_auc[ok], alpha),
            brier_diff=_interval(new_brier - old_brier, d_brier[np.isfinite(d_brier)], alpha),
            n_replicates=int(ok.sum()),
        )
    return out


def _interval(estimate: float, replicates: np.ndarray, alpha: float) -> Interval:
    if replicates.size == 0 or not math.isfinite(estimate):
        return Interval(float(estimate), math.nan, math.nan)
    lo, hi = np.quantile(replicates, [alpha, 1.0 - alpha])
    return Interval(float(estimate), float(lo), float(hi))


# ----------------------------------------------------------------------------- decision
@dataclass
class GateDecision:
    """The gate's verdict: promote or not, why, every check and the intervals.

    ``passed`` (= ``promote``), ``first_model``, ``reasons``, ``summary()`` and ``as_dict()``
    are what the training job prints, logs (``gate.json``, tags, metrics) and returns.
    """

    promote: bool
    status: Status
    reason: str
    champion_version: int | None
    horizon_months: float
    holdout: dict[str, Any]
    rule: dict[str, Any]
    checks: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[str, EndpointEvidence] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.promote

    @property
    def first_model(self) -> bool:
        return self.status == "first_model"

    @property
    def reasons(self) -> list[str]:
        """Why it was not promoted: the failed checks, then what stopped the comparison."""
        if self.promote:
            return []
        failed = [c["text"] for c in self.checks if not c["ok"]]
        return failed if self.status == "refuse" else [*failed, self.reason]

    def summary(self) -> str:
        verdict = "PASS" if self.promote else "FAIL"
        who = "first model" if self.first_model else f"against champion v{self.champion_version}"
        lines = [f"gate {verdict} ({who}): {self.reason}"]
        lines += [("  ok    " if c["ok"] else "  FAIL  ") + c["text"] for c in self.checks]
        for ev in self.evidence.values():
            lines.append(
                f"  {ev.endpoint}: {ev.n_events} events in {ev.n_patients} hold-out patients; "
                f"AUC {ev.challenger_auc:.3f} vs {ev.champion_auc:.3f}, "
                f"diff {ev.auc_diff.text(3)}; Brier {ev.challenger_brier:.4f} vs "
                f"{ev.champion_brier:.4f}, diff {ev.brier_diff.text(4)}"
            )
        lines += [f"  note  {n}" for n in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.promote,
            "promote": self.promote,
            "status": self.status,
            "reason": self.reason,
            "first_model": self.first_model,
            "champion_version": self.champion_version,
            "horizon_months": self.horizon_months,
            "holdout": self.holdout,
            "rule": self.rule,
            "checks": self.checks,
            "intervals": {e: asdict(ev) for e, ev in self.evidence.items()},
            "notes": self.notes,
        }

    def metrics(self) -> dict[str, float]:
        """Numbers for MLflow: ``gate/<endpoint>/auc_diff`` with ``_lo``/``_hi``, etc."""
        out: dict[str, float] = {"gate_passed": float(self.promote)}
        for e, ev in self.evidence.items():
            for name, iv in (("auc_diff", ev.auc_diff), ("brier_diff", ev.brier_diff)):
                out[f"gate/{e}/{name}"] = iv.estimate
                out[f"gate/{e}/{name}_lo"] = iv.lo
                out[f"gate/{e}/{name}_hi"] = iv.hi
            out[f"gate/{e}/holdout_events"] = float(ev.n_events)
        return {k: v for k, v in out.items() if math.isfinite(v)}


def _check(checks: list, name: str, value: float, limit: float, ok: bool, text: str) -> None:
    checks.append({"name": name, "value": value, "limit": limit, "ok": bool(ok), "text": text})


def _absolute_checks(rule: GateConfig, validated: Mapping[str, Mapping[str, float]]) -> list:
    checks: list[dict[str, Any]] = []
    h = rule.horizon_months
    for e in rule.endpoints:
        auc, ici = float(validated[e]["auc"]), float(validated[e]["ici"])
        _check(
            checks,
            f"{e}/validated_auc",
            auc,
            rule.min_auc,
            math.isfinite(auc) and auc >= rule.min_auc,
            f"{e}: validated AUC({h}m) {auc:.3f} >= {rule.min_auc:.3f}",
        )
        _check(
            checks,
            f"{e}/validated_ici",
            ici,
            rule.max_ici,
            math.isfinite(ici) and ici <= rule.max_ici,
            f"{e}: validated ICI({h}m) {ici:.4f} <= {rule.max_ici:.4f}",
        )
    return checks


def decide(
    rule: GateConfig,
    validated: Mapping[str, Mapping[str, float]],
    holdout: HoldoutDefinition,
    outcomes: Mapping[str, np.ndarray] | None = None,
    challenger_risk: Mapping[str, np.ndarray] | None = None,
    champion_risk: Mapping[str, np.ndarray] | None = None,
    champion_version: int | None = None,
    champion_holdout: HoldoutDefinition | None = None,
    champion_error: str | None = None,
    seed: int = 0,
) -> GateDecision:
    """Apply the rule (module docstring).

    ``validated[e]`` holds the challenger's validated ``auc`` and ``ici`` at the gate horizon.
    ``champion_version`` None means there is no champion (first model: absolute limits
    only). Otherwise ``outcomes``, ``challenger_risk`` and ``champion_risk`` (per endpoint,
    on the hold-out) and the champion's hold-out definition are needed; ``champion_error``
    says the champion could not be scored (refused: a champion we cannot score cannot be
    beaten safely).
    """
    h = float(rule.horizon_months)
    decision = GateDecision(
        promote=False,
        status="refuse",
        reason="",
        champion_version=champion_version,
        horizon_months=h,
        holdout={
            "challenger": asdict(holdout),
            "champion": asdict(champion_holdout) if champion_holdout else None,
        },
        rule={
            k: getattr(rule, k)
            for k in (
                "min_auc",
                "max_ici",
                "auc_margin",
                "brier_margin",
                "min_holdout_events",
                "n_bootstrap",
            )
        },
        checks=_absolute_checks(rule, validated),
    )
    limits_ok = all(c["ok"] for c in decision.checks)
    limits_text = "absolute limits hold" if limits_ok else "absolute limits fail"

    if champion_version is None:
        decision.promote, decision.status = limits_ok, "first_model" if limits_ok else "refuse"
        decision.reason = f"no champion; {limits_text}"
        return decision
    if champion_error is not None:
        decision.status = "champion_unscorable"
        decision.reason = (
            f"champion v{champion_version} cannot be scored on the hold-out ({champion_error}); "
            "promote by hand with `reirrad promote` if intended"
        )
        return decision
    try:
        check_same_holdout(holdout, champion_holdout, champion_version)
    except HoldoutMismatchError as err:
        decision.status, decision.reason = "holdout_mismatch", str(err)
        return decision
    if outcomes is None or challenger_risk is None or champion_risk is None:
        raise ValueError("a champion needs outcomes and both models' hold-out risks")

    events = {e: count_events(outcomes[e], h) for e in rule.endpoints}
    few = {e: k for e, k in events.items() if k < rule.min_holdout_events}
    if few:
        decision.status = "insufficient_evidence"
        decision.reason = INSUFFICIENT_EVIDENCE
        decision.notes.append(
            "hold-out events of interest by "
            f"{h:g} months: "
            + ", ".join(f"{e} {k}" for e, k in events.items())
            + f" (at least {rule.min_holdout_events} needed per endpoint)"
        )
        return decision

    decision.evidence = paired_bootstrap(
        {e: outcomes[e] for e in rule.endpoints},
        challenger_risk,
        champion_risk,
        h,
        rule.n_bootstrap,
        seed,
    )
    for e, ev in decision.evidence.items():
        lo, hi = ev.auc_diff.lo, ev.brier_diff.hi
        _check(
            decision.checks,
            f"{e}/holdout_auc_diff",
            lo,
            -rule.auc_margin,
            math.isfinite(lo) and lo > -rule.auc_margin,
            f"{e}: hold-out AUC({h:g}m) difference {ev.auc_diff.text(3)}, lower bound "
            f"> -{rule.auc_margin:.3f}",
        )
        _check(
            decision.checks,
            f"{e}/holdout_brier_diff",
            hi,
            rule.brier_margin,
            math.isfinite(hi) and hi < rule.brier_margin,
            f"{e}: hold-out Brier({h:g}m) difference {ev.brier_diff.text(4)}, upper bound "
            f"< {rule.brier_margin:.4f}",
        )
    decision.promote = all(c["ok"] for c in decision.checks)
    decision.status = "promote" if decision.promote else "refuse"
    decision.reason = (
        "not worse than the champion beyond the margins, absolute limits hold"
        if decision.promote
        else "; ".join(c["text"] for c in decision.checks if not c["ok"])
    )
    return decision
