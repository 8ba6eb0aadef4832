"""The batch writer's compiled formatting gives the very bytes pandas and ``repr`` gave.

``reirrad score`` formats its CSV output and its audit records with pyarrow's kernels
(serving/batch_io.py) instead of pandas' ``to_csv`` and ``map(repr, ...)``, for speed; the
files and the records must not change by a byte. Each test writes awkward values (every
magnitude, whole numbers, NaN, infinities, text with commas, quotes and line breaks) both
ways and compares.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from serving.batch import TEXT_COLUMNS, _risk_outputs, result_columns, value_texts
from serving.batch_io import ResultWriter, float_texts

HORIZONS = [6.0, 12.0, 24.0, 36.0]


def awkward_floats(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.integers(-12, 18, size=n)
    v = rng.random(n) * scale * np.where(rng.random(n) < 0.2, -1.0, 1.0)
    special = [0.0, -0.0, 1.0, 2.0, 0.5, 1e-4, 9.999999999999999e-05, 1e10, 1e16, 1e-300,
               5e-324, np.nan, np.inf, -np.inf, 0.1, 0.30000000000000004]
    v[: len(special)] = special
    whole = rng.random(n) < 0.05
    v[whole] = np.round(v[whole])
    return v


def awkward_frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    cols = result_columns(HORIZONS)
    rng = np.random.default_rng(seed)
    texts = ["", None, "plain", "a, b", 'say "no"', "line\nbreak", "cr\rhere", " lead",
             "tab\there", "é ü", "x=1 is outside the training range [18, 100]; y"]
    frame = {}
    for k, c in enumerate(cols):
        if c in TEXT_COLUMNS:
            frame[c] = [texts[i] for i in rng.integers(0, len(texts), size=n)]
        else:
            frame[c] = awkward_floats(n, seed + k)
    return pd.DataFrame(frame)


def test_float_texts_are_repr():
    v = awkward_floats(20000, seed=1)
    assert float_texts(v).to_pylist() == [repr(x) for x in v.tolist()]


def test_csv_output_is_byte_for_byte_pandas(tmp_path):
    frame = awkward_frame()
    cols = result_columns(HORIZONS)
    out = tmp_path / "out.csv"
    writer = ResultWriter(out, cols, TEXT_COLUMNS)
    writer.write(frame.iloc[:1700])
    writer.write(frame.iloc[1700:1700])  # a chunk whose rows were all rejected
    writer.write(frame.iloc[1700:], value_texts(frame.iloc[1700:], cols))
    writer.commit()
    want = frame.to_csv(index=False, lineterminator="\n").encode()
    assert out.read_bytes() == want


def test_audit_text_is_repr_row_major():
    frame = awkward_frame(500, seed=4)
    got = _risk_outputs(frame, HORIZONS)
    for e, stats in got["risks"].items():
        for stat, suffix in (("cif", ""), ("lower", "_lower"), ("upper", "_upper")):
            values = frame[[f"{e}_{h:g}m{suffix}" for h in HORIZONS]].to_numpy(dtype=float)
            assert stats[stat] == ",".join(map(repr, values.ravel().tolist()))
    for key, col in (("n_assumed", "assumed"), ("n_warnings", "warnings")):
        assert got[key] == [len(v.split("; ")) if v else 0 for v in frame[col].tolist()]
    empty = _risk_outputs(frame.iloc[:0], HORIZONS)
    assert all(t == "" for s in empty["risks"].values() for t in s.values())
    assert empty["n_assumed"] == []
