"""Property tests (hypothesis) for the regression losses.

Random shapes (0-d to 3-D, empty included) and values (extremes included):
* agreement with an independent NumPy float64 implementation of the spec's
  formulas (values and gradients);
* values that must be non-negative are;
* reductions are consistent: sum == mean * n, 'none' summed == 'sum';
* L1/MSE/SmoothL1/Huber are symmetric in (input, target), their gradient
  antisymmetric;
* the 'sum' gradient equals the 'none' gradient with grad_output = ones, the
  'mean' gradient is the 'sum' one / n, gradients are linear in grad_output;
* float32 agrees with float64.
"""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from conftest import CASE_IDS, CASES, as_tuple, assert_identical

SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)
DIFFERENCE = [c for c in CASES if c.func in ("l1_loss", "mse_loss", "smooth_l1_loss",
                                              "huber_loss")]
DIFF_IDS = [c.id for c in DIFFERENCE]

EXTREMES = [0.0, -0.0, 5e-324, -5e-324, 1e-300, -1e-300, 1e-8, 1e150, -1e150, 1e10, -1e10]


def _floats(low, high, width=64, extremes=()):
    base = st.floats(low, high, allow_nan=False, allow_infinity=False, width=width)
    ext = [e for e in extremes if low <= e <= high]
    return st.one_of(base, st.sampled_from(ext)) if ext else base


def _domain(case, width, extreme):
    """Element strategies (input, target, var) for `case`."""
    kw = case.kwargs
    ex = EXTREMES if extreme else ()
    if case.func == "poisson_nll_loss":
        if kw.get("log_input", True):
            return _floats(-50, 50, width, ex), _floats(0, 1e3, width, ex), None
        return _floats(0, 1e6, width, ex), _floats(0, 1e3, width, ex), None
    if case.func == "gaussian_nll_loss":
        return (_floats(-1e3, 1e3, width, ex), _floats(-1e3, 1e3, width, ex),
                _floats(0, 1e3, width, ex))
    lim = 1e150 if (extreme and width == 64) else 1e3
    return _floats(-lim, lim, width, ex), _floats(-lim, lim, width, ex), None


@st.composite
def loss_args(draw, case, dtype=np.float64, extreme=True):
    width = 32 if dtype == np.float32 else 64
    ex, ey, ev = _domain(case, width, extreme)
    shape = draw(SHAPES)
    x = draw(hnp.arrays(dtype, shape, elements=ex))
    y = draw(hnp.arrays(dtype, shape, elements=ey))
    args = [x, y]
    if ev is not None:
        vshape = draw(st.sampled_from([shape, shape[:-1]] if shape else [shape]))
        args.append(draw(hnp.arrays(dtype, vshape, elements=ev)))
    return args


# ---------------------------------------------------------------------------------
# an independent NumPy implementation of the spec's formulas (float64)
# ---------------------------------------------------------------------------------


def reference(case, args):
    """Spec §1-§2, §8-§11 in float64: a list of (loss), (d/d input) and, for
    GaussianNLL, (d/d var) entries, each a pair (values, magnitudes) where
    magnitudes bound the terms the value is computed from (so that a
    cancellation is judged on the right scale)."""
    kw = case.kwargs
    x = np.asarray(args[0], np.float64)
    y = np.asarray(args[1], np.float64)
    with np.errstate(all="ignore"):
        if case.func in ("l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"):
            d = x - y
            z = np.abs(d)
            if case.func == "l1_loss" or (case.func == "smooth_l1_loss" and kw["beta"] == 0):
                return [(z, z), (np.sign(d), np.ones_like(d))]
            if case.func == "mse_loss":
                return [(d * d, d * d), (2 * d, 2 * z)]
            if case.func == "smooth_l1_loss":
                b = kw["beta"]
                loss = np.where(z < b, 0.5 * z * z / b, z - 0.5 * b)
                grad = np.where(z < b, d / b, np.sign(d))
                return [(loss, z + z * z / b), (grad, np.abs(grad))]
            t = kw["delta"]
            loss = np.where(z < t, 0.5 * z * z, t * (z - 0.5 * t))
            grad = np.where(z < t, d, t * np.sign(d))
            return [(loss, z * z + t * z + t * t), (grad, np.abs(grad))]
        if case.func == "poisson_nll_loss":
            if kw.get("log_input", True):
                e = np.exp(x)
                loss, lmag = e - y * x, e + np.abs(y * x)
                grad, gmag = e - y, e + y
            else:
                eps = kw.get("eps", 1e-8)
                lg = np.log(x + eps)
                loss, lmag = x - y * lg, np.abs(x) + np.abs(y * lg) + np.abs(y)
                grad, gmag = 1 - y / (x + eps), 1 + np.abs(y / (x + eps))
            if kw.get("full"):
                st_ = y * np.log(y) - y + 0.5 * np.log(2 * np.pi * y)
                smag = np.abs(y * np.log(y)) + y + np.abs(0.5 * np.log(2 * np.pi * y))
                loss = loss + np.where(y > 1, st_, 0.0)
                lmag = lmag + np.where(y > 1, smag, 0.0)
            return [(loss, lmag), (grad, gmag)]
        if case.func == "gaussian_nll_loss":
            var = np.asarray(args[2], np.float64)
            if var.shape != x.shape:
                var = var[..., None]
            v = np.maximum(var, kw.get("eps", 1e-6))
            d = x - y
            q = d * d / v
            loss = 0.5 * (np.log(v) + q)
            lmag = np.abs(np.log(v)) + q
            if kw.get("full"):
                loss = loss + 0.5 * math.log(2 * math.pi)
                lmag = lmag + 1.0
            gvar = 0.5 * (1 / v - q / v)
            gmag = 0.5 * (1 / v + q / v)
            if gvar.shape != np.shape(args[2]):
                gvar, gmag = np.sum(gvar, axis=-1), np.sum(gmag, axis=-1)
            return [(loss, lmag), (d / v, np.abs(d / v)), (gvar, gmag)]
    raise AssertionError(case)


def assert_within(actual, expected, mag, rtol, what=""):
    """|actual - expected| <= rtol * mag elementwise (infinities / NaN must match)."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, what
    nonfinite = ~np.isfinite(e)
    np.testing.assert_array_equal(a[nonfinite], e[nonfinite], err_msg=what)
    ok = np.abs(a - e) <= rtol * np.asarray(mag, np.float64) + 1e-300
    assert np.all(ok[~nonfinite]), (
        f"{what}: max excess {np.max(np.abs(a - e) - rtol * mag)}\n{a}\n{e}")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@given(data=st.data())
def test_matches_numpy_reference(case, data):
    args = data.draw(loss_args(case))
    ref = reference(case, args)
    v, g = case.closs_func(*args, reduction="none", return_grad=True, **case.kwargs)
    got = [v] + list(as_tuple(g))
    assert len(got) == len(ref)
    for k, (a, (e, mag)) in enumerate(zip(got, ref)):
        assert_within(a, e, mag, 1e-12, what=f"output {k}")
    total = case.closs_func(*args, reduction="sum", **case.kwargs)
    loss, lmag = ref[0]
    if np.all(np.isfinite(loss)):
        exact = math.fsum(loss.ravel().tolist())
        assert abs(float(total) - exact) <= 1e-12 * math.fsum(lmag.ravel().tolist()) + 1e-300


@pytest.mark.parametrize("case", DIFFERENCE, ids=DIFF_IDS)
@given(data=st.data())
def test_non_negative(case, data):
    args = data.draw(loss_args(case))
    for reduction in ("none", "sum", "mean"):
        v = case.closs_func(*args, reduction=reduction, **case.kwargs)
        if reduction == "mean" and np.size(args[0]) == 0:
            assert np.isnan(v)
            continue
        assert np.all(np.asarray(v) >= 0)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@given(data=st.data())
def test_reductions_consistent(case, data):
    args = data.draw(loss_args(case))
    none = case.closs_func(*args, reduction="none", **case.kwargs)
    total = case.closs_func(*args, reduction="sum", **case.kwargs)
    mean = case.closs_func(*args, reduction="mean", **case.kwargs)
    n = none.size
    if n == 0:
        assert total == 0 and np.isnan(mean)
        return
    if not np.all(np.isfinite(none)):
        return
    mag = math.fsum(np.abs(none).ravel().tolist())
    # 'sum' is the accurately summed 'none'
    assert abs(float(total) - math.fsum(none.ravel().tolist())) <= 1e-13 * mag + 1e-300
    assert abs(float(np.sum(none)) - float(total)) <= 1e-12 * mag + 1e-300
    # 'mean' is 'sum' / n
    assert abs(float(mean) * n - float(total)) <= 1e-15 * n * mag + 1e-300
    assert float(mean) == pytest.approx(float(total) / n, rel=1e-15, abs=1e-300)


@pytest.mark.parametrize("case", DIFFERENCE, ids=DIFF_IDS)
@given(data=st.data())
def test_symmetric(case, data):
    x, y = data.draw(loss_args(case))
    for reduction in ("none", "sum", "mean"):
        a, ga = case.closs_func(x, y, reduction=reduction, return_grad=True, **case.kwargs)
        b, gb = case.closs_func(y, x, reduction=reduction, return_grad=True, **case.kwargs)
        assert_identical(a, b)
        np.testing.assert_array_equal(ga, -gb)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@given(data=st.data(), c=st.floats(-4, 4, allow_nan=False).filter(lambda v: v != 0))
def test_gradient_reductions_and_linearity(case, data, c):
    args = data.draw(loss_args(case, extreme=False))
    kw = case.kwargs
    shape = np.shape(args[0])
    n = int(np.prod(shape))
    mags = [m for _, m in reference(case, args)[1:]]
    _, g_sum = case.closs_func(*args, reduction="sum", return_grad=True, **kw)
    _, g_none = case.closs_func(*args, reduction="none", return_grad=True,
                                grad_output=np.ones(shape), **kw)
    _, g_mean = case.closs_func(*args, reduction="mean", return_grad=True, **kw)
    _, g_c = case.closs_func(*args, reduction="sum", return_grad=True, grad_output=c, **kw)
    _, g_go = case.closs_func(*args, reduction="none", return_grad=True,
                              grad_output=np.full(shape, c), **kw)
    for k, (s, no, me, gc, ggo, mag) in enumerate(zip(
            as_tuple(g_sum), as_tuple(g_none), as_tuple(g_mean), as_tuple(g_c),
            as_tuple(g_go), mags)):
        assert_identical(s, no, f"grad {k}: 'sum' vs 'none' with ones")
        assert_identical(gc, ggo, f"grad {k}: scalar c vs array of c")
        if n:
            assert_within(me, s / n, mag / n, 4e-15, what=f"grad {k}: mean vs sum / n")
        assert_within(gc, c * s, abs(c) * mag, 4e-15, what=f"grad {k}: linear in c")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@given(data=st.data())
def test_float32_agrees_with_float64(case, data):
    args32 = data.draw(loss_args(case, np.float32, extreme=False))
    args64 = [a.astype(np.float64) for a in args32]
    kw = case.kwargs
    ref = reference(case, args64)
    v32, g32 = case.closs_func(*args32, reduction="none", return_grad=True, **kw)
    v64, g64 = case.closs_func(*args64, reduction="none", return_grad=True, **kw)
    got32 = [v32] + list(as_tuple(g32))
    got64 = [v64] + list(as_tuple(g64))
    for k, (a, b, (_, mag)) in enumerate(zip(got32, got64, ref)):
        assert np.asarray(a).dtype == np.float32
        # a few float32 roundings of the terms (float32 eps = 1.2e-7)
        assert_within(a, b, mag + 1e-30, 2e-6, what=f"output {k}")
    s32 = case.closs_func(*args32, reduction="sum", **kw)
    s64 = case.closs_func(*args64, reduction="sum", **kw)
    assert type(s32) is np.float32
    lmag = ref[0][1]
    assert abs(float(s32) - float(s64)) <= 2e-6 * float(np.sum(lmag)) + 1e-30


def test_warnings_are_not_raised_for_same_shapes():
    """Same-shape calls never warn (the broadcast warning is for broadcasts only)."""
    x = np.arange(6.0).reshape(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for case in CASES:
            args = [x, x + 0.5] + ([np.ones_like(x)] if case.nargs == 3 else [])
            case.closs_func(*args, **case.kwargs)
