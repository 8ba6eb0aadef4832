"""Does the promotion gate (training/gate.py) decide on evidence? (issue 9, part 4)

Simulated cases, each one promotion decision: a champion trained on one synthetic cohort
(modern mix) of n patients, a challenger trained on the development part of a *fresh*
cohort of the same size and mix, both scored on that fresh cohort's hold-out (patients
neither trained on), and the gate's rule from the configuration applied to them. Two arms:

- ``equal``: the challenger is built exactly like the champion (equal quality): it should be
  promoted (target: >= 90 % of cases, Clopper-Pearson bounds reported);
- ``permuted``: the challenger was trained with the dose features permuted (one joint
  permutation of the dose columns across development patients, so the dose carries no
  information): it should be refused (target: >= 95 %).

Models: the job's registered architecture with the configuration's tuning (``--config quick``:
a forest of 50 trees, a 2-point grid tuned by 3-fold CV; ``--kind ensemble``: the stacked
ensemble with that preset's trees). Fits are pooled (``--pool``, 20 per arm by default): each
model is fitted on its own cohort, and 40 cases per arm pair every challenger (with its
cohort's hold-out) with two different equal-arm champions (:class:`Pool`). Cases that share a
challenger are not independent, so the Clopper-Pearson bounds, which assume they are, are
somewhat too narrow.

What is *not* exercised: the absolute limits (min_auc, max_ici need the validated figures of
a full training run); each challenger is treated as meeting them, so the figures measure the
paired comparison and the event-count rule alone.

Resumable: one CSV row per case (``--out``), appended as soon as the case is decided; cases
already in the file are skipped. ``--summary`` prints the table from the file.

    nice -n 10 python benchmarks/bench_gate.py --n 600 2000 --cases 40
    python benchmarks/bench_gate.py --summary
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.config import ENDPOINTS  # noqa: E402
from training.config import TrainConfig, load_config  # noqa: E402
from training.data import TrainingData, synthetic_training_data  # noqa: E402
from training.gate import HoldoutDefinition, decide  # noqa: E402
from training.tune import fit_forests, tune  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "gate_cases.csv"
DOSE_FEATURES = (
    "primary_eqd2_gy",
    "primary_fraction_assumed",
    "reirr_eqd2_gy",
    "reirr_fraction_gy",
    "reirr_twice_daily",
    "cumulative_eqd2_gy",
)
"""Every feature derived from a dose input (features/pipeline.py)."""
MODERN_MIX = {"twice_daily_share": 0.2}
COHORT_SEED_STRIDE = 1_000_003
"""Cohort seeds: base + arm offset + index * stride, so no two cohorts share a seed."""
ARM_OFFSET = {"equal": 0, "permuted": 500_000}
COLUMNS = [
    "n",
    "arm",
    "case",
    "seed_base",
    "config",
    "auc_margin",
    "brier_margin",
    "min_holdout_events",
    "n_bootstrap",
    "status",
    "promote",
    "holdout_patients",
    *[
        f"{e}_{k}"
        for e in ENDPOINTS
        for k in (
            "events",
            "auc_chal",
            "auc_champ",
            "auc_diff",
            "auc_lo",
            "auc_hi",
            "brier_chal",
            "brier_champ",
            "brier_diff",
            "brier_lo",
            "brier_hi",
        )
    ],
    "seconds",
]


def cohort(n: int, seed: int, cfg: TrainConfig) -> TrainingData:
    return synthetic_training_data(
        n, seed, cfg.holdout.salt, cfg.holdout.fraction, cfg.min_rows, **MODERN_MIX
    )


def fit(data: TrainingData, cfg: TrainConfig, seed: int, permute: bool):
    """The job's forests (tuned like the job) on the development part."""
    dev = data.development
    X = dev.X.reset_index(drop=True).copy()
    if permute:
        order = np.random.default_rng(seed).permutation(len(X))
        X.loc[:, list(DOSE_FEATURES)] = X.loc[order, list(DOSE_FEATURES)].to_numpy()
    groups = np.arange(len(X))
    tuned = tune(X, dev.y, groups, cfg, seed)
    return fit_forests(X, dev.y, tuned, cfg, seed, n_jobs=1)


class Pool:
    """Fitted models and their cohorts, made on demand (a resumed run fits only what it needs).

    ``size`` models per arm; case i's challenger is model ``i % size`` of its arm, and its
    champion an equal-arm model chosen so that no case pairs a model with itself:
    ``(i % size + 1 + i // size) % size`` for the equal arm, ``(i % size + i // size) % size``
    for the permuted arm. With 40 cases and a pool of 20, each challenger (and its hold-out)
    serves two cases against two different champions.
    """

    def __init__(self, n: int, cfg: TrainConfig, seed_base: int, size: int) -> None:
        self.n, self.cfg, self.seed_base, self.size = n, cfg, seed_base, size
        self._cache: dict[tuple[str, int], tuple[TrainingData, dict]] = {}

    def champion_index(self, arm: str, i: int) -> int:
        shift = i // self.size + (1 if arm == "equal" else 0)
        return (i % self.size + shift) % self.size

    def get(self, arm: str, i: int) -> tuple[TrainingData, dict]:
        key = (arm, i % self.size)
        if key not in self._cache:
            seed = self.seed_base + ARM_OFFSET[arm] + key[1] * COHORT_SEED_STRIDE + self.n
            data = cohort(self.n, seed % (2**31 - 1), self.cfg)
            self._cache[key] = (data, fit(data, self.cfg, seed % (2**31 - 1), arm == "permuted"))
        return self._cache[key]


def risks_at(models: dict, X, horizon: float) -> dict[str, np.ndarray]:
    return {e: m.predict_cif(X, [horizon])[:, 0, 0] for e, m in models.items()}


def run_case(pool: Pool, arm: str, i: int, cfg: TrainConfig) -> dict:
    started = time.perf_counter()
    data, challenger = pool.get(arm, i)
    _, champion = pool.get("equal", pool.champion_index(arm, i))
    rule = cfg.gate
    h = float(rule.horizon_months)
    hold = data.holdout
    holdout_def = HoldoutDefinition.from_config(cfg.holdout)
    decision = decide(
        rule,
        {e: {"auc": 1.0, "ici": 0.0} for e in rule.endpoints},  # absolute limits not exercised
        holdout_def,
        outcomes=hold.y,
        challenger_risk=risks_at(challenger, hold.X, h),
        champion_risk=risks_at(champion, hold.X, h),
        champion_version=1,
        champion_holdout=holdout_def,
        seed=pool.seed_base + i,
    )
    row: dict = {
        "n": pool.n,
        "arm": arm,
        "case": i,
        "seed_base": pool.seed_base,
        "config": cfg.name,
        "auc_margin": rule.auc_margin,
        "brier_margin": rule.brier_margin,
        "min_holdout_events": rule.min_holdout_events,
        "n_bootstrap": rule.n_bootstrap,
        "status": decision.status,
        "promote": int(decision.promote),
        "holdout_patients": len(hold),
    }
    for e in ENDPOINTS:
        y = hold.y[e]
        row[f"{e}_events"] = int(np.sum((y["event"] == 1) & (y["time"] <= h)))
        ev = decision.evidence.get(e)
        if ev is None:
            continue
        row.update(
            {
                f"{e}_auc_chal": ev.challenger_auc,
                f"{e}_auc_champ": ev.champion_auc,
                f"{e}_auc_diff": ev.auc_diff.estimate,
                f"{e}_auc_lo": ev.auc_diff.lo,
                f"{e}_auc_hi": ev.auc_diff.hi,
                f"{e}_brier_chal": ev.challenger_brier,
                f"{e}_brier_champ": ev.champion_brier,
                f"{e}_brier_diff": ev.brier_diff.estimate,
                f"{e}_brier_lo": ev.brier_diff.lo,
                f"{e}_brier_hi": ev.brier_diff.hi,
            }
        )
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


def _done(out: Path) -> set[tuple[int, str, int, int, str]]:
    if not out.is_file():
        return set()
    with out.open() as fh:
        return {
            (int(r["n"]), r["arm"], int(r["case"]), int(r["seed_base"]), r["config"])
            for r in csv.DictReader(fh)
        }


def _append(out: Path, row: dict) -> None:
    new = not out.is_file()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in COLUMNS})
        fh.flush()
        os.fsync(fh.fileno())


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for k successes in n."""
    from scipy.stats import beta

    a = (1 - confidence) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def decision_under(row: dict, auc_margin: float, brier_margin: float, min_events: int) -> str:
    """The gate's verdict for a recorded case under other margins (the intervals do not
    depend on the margins, so this is exactly what the gate would have answered)."""
    if any(int(row[f"{e}_events"]) < min_events for e in ENDPOINTS):
        return "insufficient_evidence"
    ok = all(
        float(row[f"{e}_auc_lo"]) > -auc_margin and float(row[f"{e}_brier_hi"]) < brier_margin
        for e in ENDPOINTS
    )
    return "promote" if ok else "refuse"


def _load(paths: list[Path]):
    import pandas as pd

    frames = [pd.read_csv(p) for p in paths if p.is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def summary(
    paths: list[Path],
    auc_margin: float,
    brier_margin: float,
    min_events: int,
    seed_base: int | None = None,
) -> str:
    """Share of cases decided as wanted, per n and arm, under the given rule."""
    df = _load(paths)
    if seed_base is not None:
        df = df[df["seed_base"] == seed_base]
    lines = [
        f"rule: AUC margin {auc_margin:g}, Brier margin {brier_margin:g}, "
        f"at least {min_events} hold-out events per endpoint",
        "",
        "| n | arm | cases | promoted | refused on evidence | insufficient evidence | "
        "share as wanted [95 % Clopper-Pearson] | target | met? |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (n, arm), g in df.groupby(["n", "arm"], sort=True):
        verdicts = [
            decision_under(r, auc_margin, brier_margin, min_events) for r in g.to_dict("records")
        ]
        k = len(verdicts)
        promoted = verdicts.count("promote")
        insufficient = verdicts.count("insufficient_evidence")
        refused = k - promoted - insufficient
        wanted = promoted if arm == "equal" else k - promoted
        target = 0.90 if arm == "equal" else 0.95
        lo, hi = clopper_pearson(wanted, k)
        share = wanted / k
        met = "yes" if share >= target else f"no (short by {target - share:.3f})"
        lines.append(
            f"| {n} | {arm} | {k} | {promoted} | {refused} | {insufficient} | "
            f"{share:.3f} [{lo:.3f}, {hi:.3f}] | >= {target:.2f} | {met} |"
        )
    return "\n".join(lines)


def consistency(paths: list[Path]) -> int:
    """Cases whose recorded verdict differs from :func:`decision_under` at their own margins."""
    df = _load(paths)
    bad = 0
    for r in df.to_dict("records"):
        again = decision_under(r, r["auc_margin"], r["brier_margin"], int(r["min_holdout_events"]))
        bad += again != r["status"]
    return bad


def distribution(paths: list[Path]) -> str:
    """Quantiles of the binding bounds per n and arm: the worst AUC lower bound and the worst
    Brier upper bound over the endpoints, among cases with enough events."""
    import numpy as np

    df = _load(paths)
    lines = [
        "| n | arm | cases with intervals | worst AUC lower bound: 5 %, 50 %, 95 % | "
        "worst Brier upper bound: 5 %, 50 %, 95 % | point AUC diff (mean) per endpoint |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (n, arm), g in df.groupby(["n", "arm"], sort=True):
        g = g.dropna(subset=[f"{e}_auc_lo" for e in ENDPOINTS])
        if g.empty:
            continue
        auc = g[[f"{e}_auc_lo" for e in ENDPOINTS]].min(axis=1).to_numpy()
        bri = g[[f"{e}_brier_hi" for e in ENDPOINTS]].max(axis=1).to_numpy()
        q = (5, 50, 95)
        diffs = ", ".join(f"{e} {g[f'{e}_auc_diff'].mean():+.3f}" for e in ENDPOINTS)
        lines.append(
            f"| {n} | {arm} | {len(g)} | "
            + ", ".join(f"{v:+.3f}" for v in np.percentile(auc, q))
            + " | "
            + ", ".join(f"{v:+.4f}" for v in np.percentile(bri, q))
            + f" | {diffs} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[600, 2000])
    ap.add_argument("--cases", type=int, default=40, help="cases per arm")
    ap.add_argument("--pool", type=int, default=20, help="models fitted per arm (reused)")
    ap.add_argument("--seed-base", type=int, default=1000)
    ap.add_argument("--config", default="quick")
    ap.add_argument(
        "--kind",
        choices=("forest", "ensemble"),
        help="registered architecture instead of the config's (the CSV's config column says so)",
    )
    ap.add_argument("--arms", nargs="+", default=["equal", "permuted"])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--summary",
        nargs="*",
        type=Path,
        default=None,
        help="only print the tables from these CSV files (default: --out)",
    )
    ap.add_argument(
        "--margins",
        nargs=2,
        type=float,
        action="append",
        metavar=("AUC", "BRIER"),
        help="also tabulate under these margins (sensitivity; repeatable)",
    )
    args = ap.parse_args()
    cfg = load_config(args.config).with_kind(args.kind)
    rule = cfg.gate
    if args.summary is not None:
        paths = args.summary or [args.out]
        print(f"recorded verdicts that disagree with the rule recomputed: {consistency(paths)}")
        print(summary(paths, rule.auc_margin, rule.brier_margin, rule.min_holdout_events))
        print()
        print(distribution(paths))
        for am, bm in args.margins or []:
            print()
            print(summary(paths, am, bm, rule.min_holdout_events))
        return
    done = _done(args.out)
    for n in args.n:
        pool = Pool(n, cfg, args.seed_base, min(args.pool, args.cases))
        for i in range(args.cases):
            for arm in args.arms:
                if (n, arm, i, args.seed_base, cfg.name) in done:
                    continue
                row = run_case(pool, arm, i, cfg)
                _append(args.out, row)
                print(
                    f"n={n} {arm} case {i}: {row['status']} "
                    + " ".join(
                        f"{e[:4]} ev={row[f'{e}_events']} "
                        f"auc_lo={row.get(f'{e}_auc_lo', float('nan')):+.3f} "
                        f"brier_hi={row.get(f'{e}_brier_hi', float('nan')):+.4f}"
                        for e in ENDPOINTS
                    )
                    + f" ({row['seconds']} s)",
                    flush=True,
                )
    print(summary([args.out], rule.auc_margin, rule.brier_margin, rule.min_holdout_events))


if __name__ == "__main__":
    main()
