"""Streaming `reirrad score`: valid rows kept, invalid ones in the rejects file (never their
values), exit codes, --strict, atomic publish, CSV and Parquet, chunking and Ray invariance."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.config import ENDPOINTS
from features.schema import INPUT_COLUMNS
from features.synthetic import simulate_cohort
from serving.batch import EXIT_INVALID, EXIT_OK, EXIT_REJECTED
from serving.cli import scores_table
from serving.scoring import score_records
from tests.bundle_factory import small_bundle

runner = CliRunner()
N = 40
BAD = {4: "gtv_cm3", 7: "age_years", 10: "patient_id", 12: "patient_id", 15: None}
"""1-based data rows made invalid below, and the column each one's problem names."""


def cohort(n: int = N, seed: int = 3) -> pd.DataFrame:
    return simulate_cohort(n, seed=seed)[list(INPUT_COLUMNS)]


def bad_csv(path: Path) -> pd.DataFrame:
    """A CSV with the rows of BAD broken (a word, an impossible age, a repeated key, an empty
    key, a line with an extra field); returns the rows that remain valid, in order."""
    df = cohort().astype(object)
    df.loc[3, "gtv_cm3"] = "big"
    df.loc[6, "age_years"] = 7
    df.loc[9, "patient_id"] = df.loc[1, "patient_id"]
    df.loc[11, "patient_id"] = ""
    lines = df.to_csv(index=False, lineterminator="\n").splitlines()
    lines[15] += ",surplus"  # data row 15 is line 16
    path.write_text("\n".join(lines) + "\n")
    return df.drop(index=[r - 1 for r in BAD]).reset_index(drop=True)


def expected_table(valid: pd.DataFrame) -> pd.DataFrame:
    """What the service's own code gives for the valid rows (today's table)."""
    return scores_table(score_records(small_bundle(), valid))


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, float_precision="round_trip")  # the exact floats written


def invoke(app, *args: str):
    return runner.invoke(app, ["score", *map(str, args)])


def assert_same_table(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert got["patient_id"].astype(str).tolist() == want["patient_id"].tolist()
    num = [c for c in want.columns if c not in ("patient_id", "assumed", "warnings")]
    pd.testing.assert_frame_equal(got[num].reset_index(drop=True),
                                  want[num].reset_index(drop=True), check_exact=False,
                                  rtol=1e-12, atol=1e-15)
    for c in ("assumed", "warnings"):
        assert got[c].fillna("").tolist() == want[c].fillna("").tolist()


def test_invalid_rows_are_rejected_and_the_rest_scored(app, bundle_path, env):
    src, out = env / "in.csv", env / "out.csv"
    valid = bad_csv(src)
    res = invoke(app, src, out, "--bundle", bundle_path, "--chunk-rows", 8)
    assert res.exit_code == EXIT_REJECTED, res.output
    assert f"scored {N - len(BAD)}" in res.output and f"rejected {len(BAD)}" in res.output
    assert_same_table(read_csv(out), expected_table(valid))
    rejects_file = env / "out.rejects.csv"
    text = rejects_file.read_text()
    assert "big" not in text and "surplus" not in text  # never the submitted value
    rejects = pd.read_csv(rejects_file, dtype=str, keep_default_na=False)
    assert list(rejects.columns) == ["row", "patient_id", "column", "reason"]
    assert sorted(set(rejects["row"].astype(int))) == sorted(BAD)
    by_row = {int(r): g for r, g in rejects.groupby("row")}
    for row, column in BAD.items():
        assert (column or "") in by_row[row]["column"].tolist(), row
    df = cohort()
    assert by_row[4]["patient_id"].tolist() == [df.loc[3, "patient_id"]]  # readable key kept
    assert by_row[12]["patient_id"].tolist() == [""]  # the key itself was the problem
    assert "duplicate of row 2" in by_row[10]["reason"].iat[0]
    assert "field(s)" in by_row[15]["reason"].iat[0]


def test_a_clean_file_exits_0_and_chunking_changes_no_row(app, bundle_path, env):
    src = env / "in.csv"
    df = cohort()
    df.to_csv(src, index=False)
    outs = []
    for rows in (7, 2000):
        out = env / f"out{rows}.csv"
        res = invoke(app, src, out, "--bundle", bundle_path, "--chunk-rows", rows, "--no-audit")
        assert res.exit_code == EXIT_OK, res.output
        assert pd.read_csv(env / f"out{rows}.rejects.csv").empty
        outs.append(read_csv(out))
    # the same rows in the same order; the intervals' linear algebra may round the last digit
    # differently for another batch size
    pd.testing.assert_frame_equal(outs[0], outs[1], check_exact=False, rtol=1e-12, atol=1e-15)
    assert_same_table(outs[1], expected_table(df))


def test_strict_is_all_or_none(app, bundle_path, env):
    src, out = env / "in.csv", env / "out.csv"
    bad_csv(src)
    res = invoke(app, src, out, "--bundle", bundle_path, "--strict", "--chunk-rows", 8)
    assert res.exit_code == EXIT_INVALID
    assert "row 4" in res.output and "gtv_cm3" in res.output and "big" not in res.output
    assert not out.exists() and not (env / "out.rejects.csv").exists()
    assert not (env / "home" / "var" / "audit.db").exists() or _records(env) == []
    good = env / "good.csv"
    cohort().to_csv(good, index=False)
    res = invoke(app, good, out, "--bundle", bundle_path, "--strict")
    assert res.exit_code == EXIT_OK and len(read_csv(out)) == N


def _records(env: Path) -> list[dict]:
    from serving.audit import AuditTrail, load_audit_key

    key = load_audit_key(None, env / "home" / "var" / "audit.key")
    return AuditTrail(str(env / "home" / "var" / "audit.db"), key).records()


def test_one_audit_record_per_chunk_committed_with_a_summary(app, bundle_path, env):
    src, out = env / "in.csv", env / "out.csv"
    bad_csv(src)
    res = invoke(app, src, out, "--bundle", bundle_path, "--chunk-rows", 16)
    assert res.exit_code == EXIT_REJECTED
    records = _records(env)
    assert len(records) == 3  # 40 rows in chunks of 16 (the malformed line is not a row)
    assert sum(len(r["patient_keys"]) for r in records) == N - len(BAD)
    assert records[-1]["outputs"]["summary"] == {"scored": N - len(BAD),
                                                 "rejected": len(BAD), "chunks": 3}
    assert len({r["input_mac"] for r in records}) == 1
    table, first = read_csv(out), records[0]["outputs"]
    e = ENDPOINTS[0]
    recorded = [float(x) for x in first["risks"][e]["upper"].split(",")]
    assert recorded[1::4] == table[f"{e}_12m_upper"].tolist()[: len(first["n_assumed"])]
    assert "P0" not in str(records) and cohort().loc[0, "patient_id"] not in str(records)
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0


def test_a_failure_midway_publishes_nothing(app, bundle_path, env, monkeypatch):
    import serving.batch

    src, out = env / "in.csv", env / "out.csv"
    cohort().to_csv(src, index=False)
    out.write_text("previous results\n")
    real, calls = serving.batch.score_chunk, []

    def fails_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("worker lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(serving.batch, "score_chunk", fails_second_time)
    res = invoke(app, src, out, "--bundle", bundle_path, "--chunk-rows", 10)
    assert res.exit_code != 0 and isinstance(res.exception, MemoryError)
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in env.iterdir()) == ["home", "in.csv", "out.csv"]  # no temp


def test_parquet_in_and_out_with_a_bad_row(app, bundle_path, env):
    df = cohort()
    df.loc[5, "reirr_fractions_per_day"] = 3
    src, out = env / "in.parquet", env / "out.parquet"
    df.to_parquet(src, index=False)
    res = invoke(app, src, out, "--bundle", bundle_path, "--chunk-rows", 9)
    assert res.exit_code == EXIT_REJECTED, res.output
    rejects = pd.read_csv(env / "out.rejects.csv")
    assert rejects["row"].tolist() == [6] and rejects["column"].tolist() == [
        "reirr_fractions_per_day"]
    assert_same_table(pd.read_parquet(out), expected_table(df.drop(index=5)))


def test_suffixes_header_and_horizons_are_checked_before_any_work(app, bundle_path, env):
    src = env / "in.csv"
    cohort().to_csv(src, index=False)
    for bad_out in ("out.xlsx", "out.txt", "out"):
        res = invoke(app, src, env / bad_out, "--bundle", bundle_path)
        assert res.exit_code == EXIT_INVALID and "suffix" in res.output
    cohort().drop(columns=["sex"]).to_csv(env / "nosex.csv", index=False)
    res = invoke(app, env / "nosex.csv", env / "o.csv", "--bundle", bundle_path)
    assert res.exit_code == EXIT_INVALID and "sex" in res.output
    (env / "empty.csv").write_text(",".join(INPUT_COLUMNS) + "\n")
    res = invoke(app, env / "empty.csv", env / "o.csv", "--bundle", bundle_path)
    assert res.exit_code == EXIT_INVALID and "no data rows" in res.output
    res = invoke(app, src, env / "o.csv", "--bundle", bundle_path, "--horizons", "12.5")
    assert res.exit_code == EXIT_INVALID
    assert not any(p.name.startswith("o.") or p.name.startswith(".o.") for p in env.iterdir())


# ------------------------------------------------------------------------------- Ray
@pytest.mark.e2e
def test_ray_gives_the_same_rows_and_values_in_the_same_order(app, bundle_path, env,
                                                              ray_cluster):
    """On a real local cluster (`ray start --head`, with a token of its own: the training
    tests' fixture), reached by its address as a hospital's cluster would be."""
    df = cohort(60, seed=5)
    df.loc[8, "sex"] = "robot"
    df.loc[30, "patient_id"] = df.loc[2, "patient_id"]
    outputs = {}
    for fmt in ("csv", "parquet"):
        src = env / f"in.{fmt}"
        df.to_csv(src, index=False) if fmt == "csv" else df.to_parquet(src, index=False)
        if fmt == "csv":  # and a malformed line, which Ray's reader must not drop
            lines = src.read_text().splitlines()
            lines[20] += ",surplus"
            src.write_text("\n".join(lines) + "\n")
        for engine in ("local", "ray"):
            out = env / f"{engine}.{fmt}"
            extra = ["--ray-address", ray_cluster] if engine == "ray" else []
            res = invoke(app, src, out, "--bundle", bundle_path, "--chunk-rows", 16, *extra)
            assert res.exit_code == EXIT_REJECTED, res.output
            outputs[engine, fmt] = (
                read_csv(out) if fmt == "csv" else pd.read_parquet(out),
                (env / f"{engine}.rejects.csv").read_text(),
            )
        n_bad = 3 if fmt == "csv" else 2
        assert len(outputs["local", fmt][0]) == 60 - n_bad
        assert len(outputs["ray", fmt][0]) == 60 - n_bad, outputs["ray", fmt][1][:2000]
        assert outputs["local", fmt][1].count("\n") == 1 + n_bad
        pd.testing.assert_frame_equal(outputs["local", fmt][0], outputs["ray", fmt][0],
                                      check_exact=True)
        assert outputs["local", fmt][1] == outputs["ray", fmt][1]


@pytest.mark.e2e
def test_ray_scores_exactly_the_local_chunks(bundle_path, env, ray_cluster):
    """Each actor call scores one whole chunk as the local reader cuts it, never a piece or a
    merger of chunks (Ray Data reshapes blocks unless told not to, and the Cox member's BLAS
    product rounds a row differently by its place in the batch): the results come back
    chunk by chunk, frame for frame equal to the local run's, then the malformed lines;
    the same when the file is scored as a sequence of datasets (``segment_chunks``)."""
    import ray

    from models.bundle import ModelBundle
    from serving.batch import rejected_lines, score_chunk
    from serving.batch_io import ChunkReader
    from serving.batch_ray import init_ray, ray_results

    src = env / "in.csv"
    lines = cohort(45, seed=7).to_csv(index=False, lineterminator="\n").splitlines()
    lines[9] += ",surplus"
    src.write_text("\n".join(lines) + "\n")
    bundle = ModelBundle.load(bundle_path)
    horizons = [6.0, 12.0, 24.0, 36.0]
    local = ChunkReader(src, 7)
    want = [(score_chunk(bundle, c.frame, horizons), c.rows) for c in local]
    want.append((rejected_lines([m.reason for m in local.malformed], horizons),
                 [m.row for m in local.malformed]))
    assert [len(r) for r, _ in want] == [7] * 6 + [2, 1]
    # a clean file of exactly two segments of 3 chunks: the third dataset finds nothing
    clean = env / "clean.csv"
    cohort(42, seed=8).to_csv(clean, index=False, lineterminator="\n")
    want_clean = [(score_chunk(bundle, c.frame, horizons), c.rows)
                  for c in ChunkReader(clean, 7)]
    assert [len(r) for r, _ in want_clean] == [7] * 6
    init_ray(ray_cluster)
    try:
        # one dataset for the file, then one per 3 chunks (the malformed lines with the
        # third), then per 3 chunks of a file that ends exactly where a segment does
        runs = [(list(ray_results(bundle, horizons, 7, segment_chunks=n)(ChunkReader(f, 7))),
                 w) for f, n, w in ((src, None, want), (src, 3, want), (clean, 3, want_clean))]
    finally:
        ray.shutdown()
    for got, want_run in runs:
        assert len(got) == len(want_run)
        for (g, g_rows), (w, w_rows) in zip(got, want_run, strict=True):
            pd.testing.assert_frame_equal(g, w, check_exact=True)
            assert list(g_rows) == list(w_rows)


def test_the_read_task_imports_only_the_reader():
    """Ray's read task imports serving.batch_ray_source: the model, the scoring code and
    numba must stay out of that process (they would cost it about 65 MB for nothing)."""
    import subprocess
    import sys

    code = ("import sys, serving.batch_ray_source; "
            "print(sorted(m for m in ('models.bundle', 'serving.scoring', 'serving.batch', "
            "'numba', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]", out.stdout


def test_a_local_cluster_is_started_with_its_memory_capped(monkeypatch):
    """`--ray-address local`: the object store is capped and no idle worker is prestarted;
    an existing cluster is only connected to (its own settings are its operator's)."""
    import ray

    from serving import batch_ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    assert batch_ray.init_ray("local", num_cpus=2)
    assert calls[-1]["object_store_memory"] == batch_ray.DEFAULT_OBJECT_STORE_BYTES
    assert calls[-1]["object_store_memory"] < 2 * 1024**3 // 8
    assert calls[-1]["_system_config"] == {"enable_worker_prestart": False}
    assert calls[-1]["num_cpus"] == 2
    assert batch_ray.init_ray("10.0.0.1:6379")
    assert calls[-1]["address"] == "10.0.0.1:6379"
    assert "object_store_memory" not in calls[-1] and "_system_config" not in calls[-1]


def test_the_actors_are_as_many_as_the_memory_budget_leaves_room_for(monkeypatch):
    """Each scoring actor costs its own process; the budget (2 GB by default, issue 12's
    target) decides how many run, never fewer than one nor more than the cluster's CPUs."""
    import ray

    from serving import batch_ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0})
    assert batch_ray.actor_count() == 1  # 2 GB: room for one actor beside Ray's own cost
    room = batch_ray.FIXED_BYTES + 3 * batch_ray.ACTOR_BYTES
    assert batch_ray.actor_count(memory_budget=room) == 3
    assert batch_ray.actor_count(memory_budget=room - 1) == 2
    assert batch_ray.actor_count(memory_budget=1e12) == 8  # one per CPU at most
    assert batch_ray.actor_count(memory_budget=1e8) == 1
    assert batch_ray.actor_count(workers=5) == 5
