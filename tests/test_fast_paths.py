"""The served prediction's short paths give the very values of the reference paths.

Issue 11 part 8 made a served call cheaper by skipping repeated input checks, computing one
cause only, packing the trees' nodes and converting tables once; none of that may change an
answer. Each test here computes the same quantity the plain way (scikit-learn's checks, every
cause, the pipeline's own ``predict``, the original numpy formulas) and asks for equality,
bit for bit.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from sklearn.utils.validation import validate_data

from features.timegrid import DEFAULT_GRID
from models._cif import checked_features
from models._flat_forest import apply_all
from models.ensemble import CompetingRiskEnsemble
from models.intervals import VARIANTS, fit_resample_intervals
from models.uncertainty import smooth_over_time
from tests.bundle_factory import small_bundle
from tests.survival_sim import simulate

SEED = 5


@lru_cache(maxsize=1)
def data():
    return simulate(260, seed=SEED)


@lru_cache(maxsize=1)
def ensemble() -> CompetingRiskEnsemble:
    X, y = data()
    return CompetingRiskEnsemble(n_estimators=12, cv=2, random_state=SEED, n_jobs=1).fit(X, y)


def test_ensemble_is_the_weighted_sum_of_its_members_public_predictions():
    model = ensemble()
    X, _ = data()
    Xv = validate_data(model, X, dtype=np.float64, reset=False)  # scikit-learn's own checks
    reference = np.zeros((X.shape[0], model.n_causes_, model.event_times_.size))
    for m, (_, est) in enumerate(model.members_):
        w = model.weights_[:, m]
        if np.any(w > 0):
            reference += w[None, :, None] * est.predict_cif(Xv)
    full = model.predict_cif(X)
    assert np.array_equal(full, reference)
    for cause in (1, 2):
        assert np.array_equal(model.predict_cause_cif(X, cause), full[:, cause - 1, :])


def test_forest_one_cause_and_packed_nodes_match_the_trees():
    from tests.test_intervals import cohort

    forest = small_bundle().models["mucosal_necrosis"]
    X = cohort().X
    full = forest.predict_cif(X)
    for cause in (1, 2):
        assert np.array_equal(forest.predict_cause_cif(X, cause), full[:, cause - 1, :])
    X32 = X.to_numpy(dtype=np.float32)
    flat = forest._flat_forest()
    leaves = apply_all(flat, X32) - flat.roots[:, None]
    for b, est in enumerate(forest.estimators_):
        assert np.array_equal(leaves[b], est.tree_.apply(X32))  # scikit-learn's own walk


@pytest.mark.parametrize("n_rows", [1, 3, 16, 17, 130])
def test_forest_kernel_is_the_mean_of_the_trees_leaf_values_for_any_block(n_rows):
    """A block of few rows walks several trees side by side (WALK_LANES); a block of many, one
    tree at a time; 130 rows end in a block of two. Every size must give, bit for bit, each
    row's leaf values added tree by tree in order (scikit-learn's own walk finds the leaves)."""
    from tests.test_intervals import cohort

    forest = small_bundle().models["mucosal_necrosis"]
    X32 = np.tile(cohort().X.to_numpy(dtype=np.float32), (2, 1))[:n_rows]
    reference = np.zeros((n_rows, forest.n_causes_, forest.event_times_.size))
    for est, values in zip(forest.estimators_, forest.leaf_values_, strict=True):
        reference += values[est.tree_.apply(X32)]
    reference /= len(forest.estimators_)
    assert np.array_equal(forest.predict_cif(X32), reference)


def test_cox_linear_predictor_is_the_pipelines_own_and_a_rows_value_ignores_its_batch():
    cox = dict(ensemble().members_)["cox"]
    X, _ = data()
    Xv = X.to_numpy(dtype=np.float64)
    for model in cox.models_:
        if model is not None:
            whole = cox._log_risk(model, Xv)
            np.testing.assert_allclose(whole, model.predict(Xv), rtol=0, atol=1e-12)
            for a, b in ((0, 1), (5, 6), (100, 131), (len(Xv) - 1, len(Xv))):
                assert np.array_equal(cox._log_risk(model, Xv[a:b]), whole[a:b])


def _numpy_cif_from_increments(d_cumhaz: np.ndarray) -> np.ndarray:
    """The CIF formula of models._cif in plain numpy, kept here as an independent check of
    the compiled kernel (which replaced it for speed)."""
    d_total = d_cumhaz.sum(axis=-2)
    cum_total = np.cumsum(d_total, axis=-1)
    weight = np.exp(-(cum_total - d_total)) * -np.expm1(-d_total)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(d_total[..., None, :] > 0, d_cumhaz / d_total[..., None, :], 0.0)
    return np.cumsum(weight[..., None, :] * share, axis=-1)


def test_compiled_cif_equals_the_numpy_formula_and_a_row_ignores_its_batch():
    from models._cif import cif_from_cumulative_hazard_increments as compiled

    rng = np.random.default_rng(SEED)
    for scale in (1e-4, 1e-2, 0.3, 3.0):
        d = rng.exponential(scale, size=(30, 3, 60)) * (rng.random((30, 3, 60)) > 0.2)
        full = compiled(d)
        # exp and expm1 may round their last bit differently in numba and numpy
        np.testing.assert_allclose(full, _numpy_cif_from_increments(d), rtol=0, atol=1e-15)
        for cause in (1, 2, 3):
            assert np.array_equal(compiled(d, cause), full[:, cause - 1, :])
        for i in (0, 29):
            assert np.array_equal(compiled(d[i : i + 1])[0], full[i])


def test_checked_features_short_path_equals_validate_data():
    model = ensemble()
    X, _ = data()
    for dtype in (np.float64, np.float32):
        fast = checked_features(model, X, dtype)
        assert fast.dtype == dtype
        assert np.array_equal(fast, validate_data(model, X, dtype=dtype, reset=False))
    bad = X.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        checked_features(model, bad)
    with pytest.raises(ValueError):  # other columns: scikit-learn's check and message
        checked_features(model, X.rename(columns={X.columns[0]: "other"}))


def _smooth_reference(se: np.ndarray, half_width: int) -> np.ndarray:
    n_t = se.shape[-1]
    csum = np.concatenate([np.zeros(se.shape[:-1] + (1,)), np.cumsum(se, axis=-1)], axis=-1)
    lo = np.clip(np.arange(n_t) - half_width, 0, n_t)
    hi = np.clip(np.arange(n_t) + half_width + 1, 0, n_t)
    return (csum[..., hi] - csum[..., lo]) / (hi - lo)


def test_smoothing_equals_the_plain_formula():
    rng = np.random.default_rng(SEED)
    for shape in ((1, 60), (7, 60), (3, 4, 12)):
        se = rng.random(shape)
        for half in (1, 3, 20):
            assert np.array_equal(smooth_over_time(se, half), _smooth_reference(se, half))


def _numpy_correction(variant: str, slope, bias, variance):
    """The variants' correction as numpy formulas, kept here on purpose as an independent
    check of the compiled rule (:func:`models._interval_kernels.correction`, the product's
    only statement of it): (shift, standard error below, standard error above)."""
    if variant == "spread":
        se = np.sqrt(variance)
        return bias, se, se
    shift = bias / slope
    plain = np.sqrt(variance) / slope
    if variant == "shrink":
        return shift, plain, plain
    wide = np.sqrt(variance + shift**2) / slope
    if variant == "directional":
        up = shift < 0  # the correction moves the centre up: the truth may lie further up
        return shift, np.where(up, plain, wide), np.where(up, wide, plain)
    return shift, wide, wide  # shrink_rms, shrink_rms_logit


@pytest.mark.parametrize("variant", VARIANTS)
def test_compiled_correction_equals_the_numpy_formulas(variant):
    """Bit for bit, on both sides of a zero bias (``directional`` turns on its sign)."""
    from models._interval_kernels import corrections
    from models.intervals import MIN_SLOPE, variant_code

    rng = np.random.default_rng(SEED)
    bias = rng.normal(0.0, 0.05, (9, 61))
    bias[0, :5] = 0.0
    variance = rng.random((9, 61)) * 0.01
    slope = rng.uniform(MIN_SLOPE, 1.0, 61)
    got = corrections(bias, variance, slope, variant_code(variant))
    for a, b in zip(got, _numpy_correction(variant, slope, bias, variance), strict=True):
        assert np.array_equal(a, b)


def _numpy_interval(iv, X, cif):
    """The interval recipe as numpy formulas (the code before the compiled kernels): exact
    float64 distances, a stable sort, the kernel weights, then ``grid_interval``'s steps."""
    from scipy.special import expit, logit

    from models.intervals import LOGIT_FLOOR, SMOOTH_HALF_WIDTH
    from models.uncertainty import normal_quantile

    xs = iv._standardise(X).astype(np.float64)
    ref = iv.train_features.astype(np.float64)
    k = min(iv.n_neighbours, ref.shape[0])
    kk = min(2 * k, ref.shape[0])
    d2 = ((xs[:, None, :] - ref[None, :, :]) ** 2).sum(axis=2)
    idx = np.argsort(d2, axis=1, kind="stable")[:, :kk]
    dist2 = np.take_along_axis(d2, idx, axis=1)
    h2 = np.maximum(dist2[:, [k - 1]], 1e-12)
    w = np.clip(np.exp(-0.5 * dist2 / h2) - np.exp(-0.5 * dist2[:, [-1]] / h2), 0, None)
    w = w / w.sum(axis=1, keepdims=True)
    bias = np.einsum("mk,mkg->mg", w, iv.bias[idx].astype(float))
    var = np.einsum("mk,mkg->mg", w, iv.variance[idx].astype(float))
    shift, se_lo, se_hi = _numpy_correction(iv.variant, iv.slope,
                                            smooth_over_time(bias, SMOOTH_HALF_WIDTH),
                                            smooth_over_time(var, SMOOTH_HALF_WIDTH))
    z = normal_quantile()
    centre = np.clip(cif - shift, 0.0, 1.0)
    if iv.variant.endswith("_logit"):
        p = np.clip(centre, LOGIT_FLOOR, 1.0 - LOGIT_FLOOR)
        slope = p * (1.0 - p)
        lower = expit(logit(p) - z * se_lo / slope) - (p - centre)
        upper = expit(logit(p) + z * se_hi / slope) - (p - centre)
    else:
        lower, upper = centre - z * se_lo, centre + z * se_hi
    lower, upper = np.clip(lower, 0.0, 1.0), np.clip(upper, 0.0, 1.0)
    upper = np.maximum.accumulate(np.maximum(upper, cif), axis=1)
    lower = np.minimum.accumulate(np.minimum(lower, cif)[:, ::-1], axis=1)[:, ::-1]
    return idx, w, np.clip(lower, 0.0, 1.0), np.clip(upper, 0.0, 1.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_compiled_interval_equals_the_numpy_recipe(variant):
    from dataclasses import replace

    model = ensemble()
    X, y = data()
    iv = replace(fit_resample_intervals(model, X, y, n_resamples=3,
                                        resample_params={"n_estimators": 4}), variant=variant)
    Xa = X.to_numpy()[:60]
    cif = model.predict_cause_cif(X.iloc[:60], 1)
    idx, w = iv.neighbours(Xa)
    ref_idx, ref_w, ref_lo, ref_hi = _numpy_interval(iv, Xa, cif)
    assert np.array_equal(idx, ref_idx)
    np.testing.assert_allclose(w, ref_w, rtol=0, atol=1e-12)
    lower, upper = iv.grid_interval(Xa, cif)
    np.testing.assert_allclose(lower, ref_lo, rtol=0, atol=1e-9)
    np.testing.assert_allclose(upper, ref_hi, rtol=0, atol=1e-9)
    assert np.all((lower <= cif) & (cif <= upper))


def test_a_patients_interval_does_not_depend_on_its_batch():
    """Row by row: the same bits alone, in a batch of 60, or at the end of an odd block
    (Ray's blocks and the local chunks cut a file differently)."""
    model = ensemble()
    X, y = data()
    iv = fit_resample_intervals(model, X, y, n_resamples=3, resample_params={"n_estimators": 4})
    Xa = X.to_numpy()[:60]
    cif = model.predict_cause_cif(X.iloc[:60], 1)
    lower, upper = iv.grid_interval(Xa, cif)
    for a, b in ((0, 1), (59, 60), (17, 30)):
        lo, hi = iv.grid_interval(Xa[a:b], cif[a:b])
        assert np.array_equal(lo, lower[a:b]) and np.array_equal(hi, upper[a:b])


def test_bundle_grid_paths_equal_the_explicit_grid_and_the_warnings_the_per_column_loop():
    from tests.test_intervals import cohort, interval_bundle

    X = cohort().X.iloc[:12].copy()
    X.iloc[0, X.columns.get_loc("gtv_cm3")] = 10_000.0  # outside the training range
    for bundle in (small_bundle(), interval_bundle()):
        points = DEFAULT_GRID.points
        grid = bundle.predict_cif_features(X)
        explicit = bundle.predict_cif_features(X, points)
        bands = bundle.risk_intervals(X, None, cif=grid)
        explicit_bands = bundle.risk_intervals(X, points, cif=explicit)
        for e in grid:
            assert np.array_equal(grid[e], explicit[e])
            assert np.array_equal(bands[e][0], explicit_bands[e][0])
            assert np.array_equal(bands[e][1], explicit_bands[e][1])
        ranges = bundle.training_summary["feature_ranges"]
        expect = [[] for _ in range(len(X))]
        for c, r in ranges.items():
            values = X[c].to_numpy(dtype=float)
            for i in np.flatnonzero((values < r["min"]) | (values > r["max"])):
                expect[i].append(
                    f"{c}={values[i]:g} is outside the training range [{r['min']:g}, {r['max']:g}]"
                )
        assert bundle.applicability_warnings(X) == expect
        assert expect[0]


def _lookup_one_by_one(xs, ref, k, kk):
    """The neighbour lookup candidate by candidate, in plain Python (the compiled kernel's
    first form): each distance summed feature after feature, equal distances in index order,
    the kernel weights with ``math.exp``."""
    import math

    out_idx, out_w = [], []
    for x in xs.astype(np.float64):
        d = []
        for row in ref.astype(np.float64):
            s = 0.0
            for a, b in zip(x.tolist(), row.tolist(), strict=True):
                s += (a - b) * (a - b)
            d.append(s)
        order = sorted(range(len(d)), key=lambda j: (d[j], j))[:kk]
        best = [d[j] for j in order]
        h2 = max(best[k - 1], 1e-12)
        edge = math.exp(-0.5 * best[-1] / h2)
        w = [max(math.exp(-0.5 * b / h2) - edge, 0.0) for b in best]
        total = 0.0
        for v in w:
            total += v
        out_idx.append(order)
        out_w.append([v / total if total > 0 else 1.0 / kk for v in w])
    return np.array(out_idx), np.array(out_w)


def test_neighbour_lookup_is_bit_for_bit_the_candidate_by_candidate_loop():
    from models._interval_kernels import neighbour_lookup

    rng = np.random.default_rng(SEED)
    ref = rng.normal(size=(150, 21)).astype(np.float32)
    ref[1::9] = ref[0]  # repeated training patients: tied distances
    xs = np.concatenate([rng.normal(size=(6, 21)), ref[:2].astype(np.float64) + 1e-3])
    xs = xs.astype(np.float32)
    idx, w = neighbour_lookup(xs, ref, 10, 20, False)
    ref_idx, ref_w = _lookup_one_by_one(xs, ref, 10, 20)
    assert np.array_equal(idx, ref_idx)
    assert np.array_equal(w, ref_w)


def test_endpoints_share_their_neighbours_only_when_the_lookup_is_the_same():
    from dataclasses import replace

    from tests.test_intervals import cohort, interval_bundle

    bundle = interval_bundle()
    X = cohort().X.iloc[:30]
    grid = bundle.predict_cif_features(X)
    bands = bundle.risk_intervals(X, None, cif=grid)
    Xa = X.to_numpy(dtype=float)
    for e, iv in bundle.intervals.items():
        alone = iv.grid_interval(Xa, grid[e])
        assert np.array_equal(bands[e][0], alone[0]) and np.array_equal(bands[e][1], alone[1])
    a, b = bundle.intervals.values()
    assert a.same_lookup(b)
    assert not a.same_lookup(replace(b, train_features=b.train_features + 1))
    assert not a.same_lookup(replace(b, n_neighbours=b.n_neighbours + 1))


def test_a_patients_served_numbers_do_not_depend_on_its_batch():
    """The CIF and both bounds of a patient scored alone equal, bit for bit, its row in a batch
    (``/score`` against ``/score_batch``, or two ``--chunk-rows``)."""
    from tests.test_intervals import cohort, interval_bundle

    X = cohort().X.iloc[:40]
    for bundle in (small_bundle(), interval_bundle()):
        cif = bundle.predict_cif_features(X)
        bands = bundle.risk_intervals(X, None, cif=cif)
        for i in (0, 17, 39):
            one = X.iloc[i : i + 1]
            cif1 = bundle.predict_cif_features(one)
            bands1 = bundle.risk_intervals(one, None, cif=cif1)
            for e in cif:
                assert np.array_equal(cif1[e][0], cif[e][i])
                assert np.array_equal(bands1[e][0][0], bands[e][0][i])
                assert np.array_equal(bands1[e][1][0], bands[e][1][i])
