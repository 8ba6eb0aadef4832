"""Real competing-risk data: any grid-CIF model against riskRegression's CSC and Fine-Gray.

Reads what ``export_and_fit_r.R`` wrote to ``benchmarks/real_data/data/`` (four public data sets
as numeric design matrices, 20 seeded 70/30 splits each, each set's horizons and time grid, the
R models' predicted cumulative incidences on every test split), fits each requested model on
the same training splits, and scores every model on the same test rows with the project's
metric code (``training.metrics.auc_cr``/``brier_cr``) per set, cause and horizon. R is not
needed here.

Writes to ``--results-dir`` (default ``benchmarks/results/real_data/``):

- ``<label>.csv`` per model: tidy per-split rows (set, split, cause, model, horizon, cases, AUC,
  Brier, ...). A rerun of a model replaces only the sets, causes and splits it ran.
- ``r_models.csv``: the same for CSC and FGR.
- ``summary.csv`` and ``summary.md``: every model found in the directory, mean AUC and Brier
  per set, cause, horizon and model, and each model's paired difference to the better R model
  with a 95 % interval corrected for overlapping splits (see ``summary.py``).

Models (``--model``, repeatable): a built-in name (forest, ensemble, cox, xgb, marginal), or
``LABEL=module:callable``, optionally followed by ``={JSON params}``. The callable is a factory
(an estimator class is one) called with the keywords it accepts among ``cause``, ``n_causes``,
``time_grid_max``, ``time_grid_step``, ``random_state``, ``n_jobs``, plus the JSON params; the
result needs ``fit(X, y)`` (structured y: event, time in months) and ``predict_cif(X, times)``
returning (n, K, len(times)). See harness.py.

Examples (from the repository root)::

    PYTHONPATH=. .venv/bin/python benchmarks/real_data/score_real_data.py \\
        --model forest --model cox --model xgb --model marginal --one-fit cox xgb marginal
    PYTHONPATH=. .venv/bin/python benchmarks/real_data/score_real_data.py --model ensemble
    PYTHONPATH=. .venv/bin/python benchmarks/real_data/score_real_data.py \\
        --model 'leaf5=forest={"min_samples_leaf": 5, "min_samples_split": 10}'
    PYTHONPATH=. .venv/bin/python benchmarks/real_data/score_real_data.py --summary-only
    # a quick check on a scratch directory
    PYTHONPATH=. .venv/bin/python benchmarks/real_data/score_real_data.py --model cox \\
        --datasets pbc --splits 1 2 --results-dir /tmp/rd
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from benchmarks.real_data.harness import (
    N_CAUSES,
    R_MODELS,
    ModelSpec,
    dataset_table,
    load_dataset,
    parse_model_spec,
    score_model,
    score_r_models,
)
from benchmarks.real_data.summary import Margins, render_markdown, summarise
from features.io import write_table, write_text_atomic

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results" / "real_data"
R_RESULTS = "r_models.csv"
SUMMARY_FILES = ("summary.csv", "summary.md")
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
MAX_JOBS = 2
"""The machine's 2 cores are shared: never more than 2 worker processes."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def read_results(path: Path) -> pd.DataFrame:
    """A per-split results file; only empty cells are missing (a label 'null' stays a label)."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def merge_rows(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """Replace the (set, cause, split) rows of ``new`` in the file at ``path``, keep the rest."""
    if not path.exists():
        return new
    old = read_results(path)
    keys = ["dataset", "cause", "split"]
    replaced = old.set_index(keys).index.isin(new.set_index(keys).index)
    return pd.concat([old[~replaced], new], ignore_index=True).sort_values(
        ["dataset", "cause", "split", "horizon"], kind="mergesort"
    )


def run_model(
    spec: ModelSpec,
    datasets: list[str],
    causes: list[int],
    splits: list[int] | None,
    n_jobs: int,
    results_dir: Path,
) -> None:
    """Fit and score one model on every set; the file is rewritten (atomically) after each set."""
    path = results_dir / f"{spec.label}.csv"
    for name in datasets:
        ds = load_dataset(name)
        chosen = splits or list(range(1, ds.n_splits + 1))
        bad = [s for s in chosen if not 1 <= s <= ds.n_splits]
        if bad:
            raise ValueError(f"{name}: splits {bad} outside 1..{ds.n_splits}")
        horizons = "; ".join(f"cause {k}: {h.tolist()}" for k, h in ds.horizons.items())
        log(
            f"{spec.label} on {name}: grid to {ds.grid.max_months:g} months "
            f"(step {ds.grid.step_months:g}), horizons {horizons}"
        )
        res = score_model(spec, ds, causes, chosen, n_jobs, progress=log)
        res["target"] = spec.target
        res["params"] = json.dumps(spec.params, sort_keys=True)
        write_table(merge_rows(path, res), path)
    log(f"{spec.label}: per-split rows in {path}")


def write_summary(results_dir: Path, margins: Margins) -> str:
    """Summarise every per-model file in ``results_dir`` with the R models' scores."""
    files = sorted(p for p in results_dir.glob("*.csv") if p.name not in SUMMARY_FILES)
    if not any(p.name == R_RESULTS for p in files):
        raise FileNotFoundError(f"{results_dir / R_RESULTS} missing: run without --summary-only")
    res = pd.concat([read_results(p) for p in files], ignore_index=True)
    meta = dataset_table().set_index("dataset")
    res = res[res.dataset.isin(meta.index)]
    summary = summarise(res, meta.train_share.to_dict(), margins)
    labels = {n: {1: meta.loc[n, "cause1"], 2: meta.loc[n, "cause2"]} for n in res.dataset.unique()}
    text = render_markdown(summary, margins, labels)
    r_splits = summary[summary.model.isin(R_MODELS)].n_splits.max()
    partial = sorted(summary.loc[summary.n_splits < r_splits, "model"].unique())
    if partial:
        text += f"\nIncomplete: {', '.join(partial)} ran on fewer splits than the R models.\n"
    write_table(summary, results_dir / "summary.csv")
    write_text_atomic(text, results_dir / "summary.md")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="See the module docstring (and benchmarks/real_data/README.md) for the details.",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="SPEC",
        help="model to fit: forest | ensemble | cox | xgb | marginal | LABEL=module:callable, "
        "optionally followed by ={JSON params} (repeatable)",
    )
    p.add_argument(
        "--one-fit",
        nargs="+",
        default=[],
        metavar="LABEL",
        help="models whose fit does not depend on `cause` (e.g. cox xgb marginal): one fit per "
        "split serves both causes instead of one fit per cause (faster; wrong for the forest)",
    )
    p.add_argument("--datasets", nargs="+", default=None, help="default: every exported set")
    p.add_argument("--causes", nargs="+", type=int, default=list(range(1, N_CAUSES + 1)))
    p.add_argument("--splits", nargs="+", type=int, default=None, help="1-based; default all")
    p.add_argument("--n-jobs", type=int, default=MAX_JOBS, choices=range(1, MAX_JOBS + 1))
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--summary-only", action="store_true", help="only re-summarise the files")
    p.add_argument("--auc-margin", type=float, default=Margins().auc)
    p.add_argument("--brier-margin", type=float, default=Margins().brier)
    args = p.parse_args(argv)
    try:
        args.specs = [parse_model_spec(s) for s in args.model]
    except (ValueError, json.JSONDecodeError) as err:
        p.error(str(err))
    for spec in args.specs:
        if not LABEL_PATTERN.match(spec.label):
            p.error(f"model label {spec.label!r}: use letters, digits, '_', '.', '-'")
        try:
            spec.factory()
        except ValueError as err:
            p.error(str(err))
    labels = [s.label for s in args.specs]
    if len(set(labels)) != len(labels):
        p.error("model labels must be unique")
    stray = sorted(set(args.one_fit) - set(labels))
    if stray:
        p.error(f"--one-fit {stray}: no such --model label")
    args.specs = [replace(s, one_fit=s.label in args.one_fit) for s in args.specs]
    bad_causes = [c for c in args.causes if not 1 <= c <= N_CAUSES]
    if bad_causes:
        p.error(f"causes {bad_causes} outside 1..{N_CAUSES}")
    if not args.specs and not args.summary_only:
        p.error("give at least one --model, or --summary-only")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    margins = Margins(auc=args.auc_margin, brier=args.brier_margin)
    known = dataset_table().dataset.tolist()
    datasets = args.datasets or known
    unknown = sorted(set(datasets) - set(known))
    if unknown:
        print(f"unknown data set(s) {unknown}; exported: {known}", file=sys.stderr)
        return 2
    if not args.summary_only:
        r_path = args.results_dir / R_RESULTS
        r_res = pd.concat([score_r_models(load_dataset(n), args.causes) for n in datasets])
        write_table(merge_rows(r_path, r_res), r_path)
        log(f"R models scored: {r_path}")
        for spec in args.specs:
            run_model(spec, datasets, args.causes, args.splits, args.n_jobs, args.results_dir)
    print(write_summary(args.results_dir, margins))
    return 0


if __name__ == "__main__":
    sys.exit(main())
