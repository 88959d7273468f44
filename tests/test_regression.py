"""Regression losses (L1, MSE, SmoothL1, Huber, PoissonNLL, GaussianNLL).

* worked examples and spec anchors (fixed numbers; no torch needed);
* golden files made by tests/golden/make_golden.py (no torch needed);
* parity with torch 2.13 (values and autograd gradients through every closs
  route, reductions, legacy size_average/reduce, dtypes, shapes incl. 0-d and
  empty, broadcasting, weights, NaN/inf), skipped when torch is missing;
* memory layouts (strided, transposed, byte-swapped, unaligned, read-only),
  inputs never modified;
* bit-for-bit agreement of forward+backward, value_and_grad and functional.
"""
import contextlib
import glob
import json
import os
import warnings

import numpy as np
import pytest

import closs
import closs.functional as CF

from conftest import (
    BASIC_CASES,
    BASIC_IDS,
    CASE_IDS,
    CASES,
    FLOATS,
    REDUCTIONS,
    as_tuple,
    assert_close,
    assert_identical,
    closs_routes,
    make_args,
    random_grad_output,
    rng_for,
    torch_value_and_grads,
    value_scale,
)

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
DTYPE_IDS = ["f32", "f64"]


@contextlib.contextmanager
def quiet():
    """Silence the broadcast / legacy warnings where they are not under test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _expect_reduced_type(value, dtype):
    assert type(value) is np.dtype(dtype).type, f"{type(value)} is not {np.dtype(dtype)}"


# =================================================================================
# Worked examples (issue) and spec anchors: fixed expected numbers
# =================================================================================


class TestWorkedExamples:
    """Spec §25: hard numbers from the issue, verified against torch 2.13."""

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    @pytest.mark.parametrize("shape", [(3,), (1, 1, 1, 3)], ids=str)
    def test_l1_mse_123_vs_125(self, dtype, shape):
        x = np.array([1, 2, 3], dtype).reshape(shape)
        y = np.array([1, 2, 5], dtype).reshape(shape)
        assert closs.L1Loss()(x, y) == pytest.approx(0.6667, abs=5e-5)
        assert closs.L1Loss(reduction="sum")(x, y) == pytest.approx(2.0, rel=1e-7)
        assert closs.MSELoss()(x, y) == pytest.approx(1.3333, abs=5e-5)
        assert closs.MSELoss(reduction="sum")(x, y) == pytest.approx(4.0, rel=1e-7)
        rel = 1e-15 if dtype is np.float64 else 1e-7
        assert CF.l1_loss(x, y) == pytest.approx(2 / 3, rel=rel)
        assert CF.mse_loss(x, y) == pytest.approx(4 / 3, rel=rel)

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_l1_mse_2x2(self, dtype):
        x = np.array([[3, 1], [1, 0]], dtype)
        y = np.array([[1, 0], [1, 0]], dtype)
        assert closs.L1Loss()(x, y) == 0.75
        assert closs.MSELoss()(x, y) == 1.25
        assert CF.l1_loss(x, y) == 0.75
        assert CF.mse_loss(x, y) == 1.25

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_246_vs_135(self, dtype):
        x = np.array([2, 4, 6], dtype)
        y = np.array([1, 3, 5], dtype)
        assert closs.L1Loss()(x, y) == 1.0
        assert closs.MSELoss()(x, y) == 1.0
        assert closs.SmoothL1Loss()(x, y) == 0.5
        assert CF.smooth_l1_loss(x, y) == 0.5

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_poisson_log_input_false(self, dtype):
        x = np.array([2, 4, 6], dtype)
        y = np.array([1, 3, 5], dtype)
        crit = closs.PoissonNLLLoss(log_input=False, full=False, eps=1e-8, reduction="none")
        none = crit(x, y)
        assert none.dtype == dtype and none.shape == (3,)
        np.testing.assert_allclose(none, [1.3069, -0.1589, -2.9588], atol=5e-5)
        mean = closs.PoissonNLLLoss(log_input=False, full=False, eps=1e-8)(x, y)
        assert mean == pytest.approx(-0.6036, abs=5e-5)
        # the torch values of spec §25 #13, to full precision
        if dtype is np.float64:
            np.testing.assert_allclose(
                none, [1.3068528144400546, -0.15888309085967123, -2.9587973544736084],
                rtol=1e-13)
            assert mean == pytest.approx(np.mean([1.3068528144400546, -0.15888309085967123,
                                                  -2.9587973544736084]), rel=1e-13)
        else:
            np.testing.assert_allclose(none, [1.3068528175, -0.1588830948, -2.9587974548],
                                       rtol=1e-6)
            assert mean == pytest.approx(-0.6036092639, rel=1e-6)


class TestSpecAnchors:
    """The anchors of spec §1, §2, §8-§11 (torch 2.13 float64 values)."""

    X = np.array([[1, -2, 3], [0.5, 0, -1]])
    Y = np.array([[1.5, -2, 0], [0.5, 2, -4]])
    W = np.array([[1, 2, 0], [0.5, 1, 1]])

    def test_l1(self):
        assert CF.l1_loss(self.X, self.Y) == pytest.approx(1.4166666666666667, rel=1e-15)
        assert CF.l1_loss(self.X, self.Y, reduction="sum") == 8.5
        assert CF.l1_loss(self.X, self.Y, weight=self.W) == pytest.approx(1.0, rel=1e-15)
        assert CF.l1_loss(self.X, self.Y, weight=self.W, reduction="sum") == 5.5

    def test_mse(self):
        assert CF.mse_loss(self.X, self.Y) == pytest.approx(3.7083333333333335, rel=1e-15)
        assert CF.mse_loss(self.X, self.Y, reduction="sum") == 22.25
        assert CF.mse_loss(self.X, self.Y, weight=self.W) == pytest.approx(
            2.409090909090909, rel=1e-15)

    def test_mse_broadcast_example(self):
        x = np.array([[1.0], [2.0]])
        y = np.array([[0.0, 0, 0], [1, 1, 1]])
        with pytest.warns(UserWarning, match="Using a target size"):
            value, grad = closs.MSELoss().value_and_grad(x, y)
        assert value == 1.0
        assert grad.shape == (2, 1)
        np.testing.assert_array_equal(grad, [[1.0], [1.0]])

    def test_smooth_l1(self):
        assert CF.smooth_l1_loss(self.X, self.Y, beta=1.0) == pytest.approx(
            1.1041666666666667, rel=1e-15)
        assert CF.smooth_l1_loss(self.X, self.Y, beta=0.5, reduction="sum") == 7.5

    def test_huber(self):
        assert CF.huber_loss(self.X, self.Y, delta=2.0, reduction="sum") == 10.125
        assert CF.huber_loss(self.X, self.Y, delta=2.0) == 1.6875
        # weighted Huber 'mean' divides by n (6), not by sum(weight)
        assert CF.huber_loss(self.X, self.Y, delta=1.0, weight=self.W) == pytest.approx(
            0.6875, rel=1e-15)

    def test_poisson(self):
        x = np.array([-1, 0, 0.5, 2, 3])
        y = np.array([0, 0.5, 1, 2, 5])
        assert CF.poisson_nll_loss(x, y, reduction="sum") == pytest.approx(
            10.991193733989888, rel=1e-14)
        assert CF.poisson_nll_loss(x, y, full=True, reduction="sum") == pytest.approx(
            16.41384727018665, rel=1e-14)

    def test_poisson_zero_input(self):
        v, g = CF.poisson_nll_loss(np.array([0.0]), np.array([1.0]), log_input=False,
                                   reduction="sum", return_grad=True)
        assert v == pytest.approx(18.420680743952367, rel=1e-14)
        assert g[0] == pytest.approx(-99999999.0, rel=1e-12)

    def test_poisson_stirling_boundary(self):
        """full=True adds Stirling's term only where target > 1 (spec §10)."""
        x = np.zeros(4)
        y = np.array([0.0, 1.0, 1.0000001, 2.0])
        base = CF.poisson_nll_loss(x, y, reduction="none")
        full = CF.poisson_nll_loss(x, y, full=True, reduction="none")
        stirling = full - base
        assert stirling[0] == 0 and stirling[1] == 0
        for k in (2, 3):
            t = y[k]
            expected = t * np.log(t) - t + 0.5 * np.log(2 * np.pi * t)
            assert stirling[k] == pytest.approx(expected, rel=1e-9, abs=1e-15)
            assert stirling[k] != 0

    def test_gaussian_var_below_eps(self):
        """var below eps: value at the clamp, var gradient not masked (spec §11)."""
        x, y, var = np.array([0.0]), np.array([2.0]), np.array([1e-8])
        value, (gx, gv) = CF.gaussian_nll_loss(x, y, var, eps=1e-6, reduction="sum",
                                               return_grad=True)
        assert value == pytest.approx(1999993.092244721, rel=1e-13)
        assert gv[0] == pytest.approx(-1999999500000.0, rel=1e-13)
        assert gx[0] == pytest.approx(-2.0 / 1e-6, rel=1e-13)

    def test_smooth_l1_beta_inf(self):
        x = np.array([1.0, -3.0, 100.0])
        v, g = CF.smooth_l1_loss(x, np.zeros(3), beta=np.inf, reduction="none",
                                 return_grad=True)
        np.testing.assert_array_equal(v, 0.0)
        np.testing.assert_array_equal(g, 0.0)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_smooth_l1_beta0_is_l1(self, reduction):
        rng = rng_for("beta0", reduction)
        x = rng.normal(size=20)
        y = x.copy()
        y[:10] += rng.normal(size=10)  # half exact ties: sign(0) = 0
        a = CF.smooth_l1_loss(x, y, beta=0.0, reduction=reduction, return_grad=True)
        b = CF.l1_loss(x, y, reduction=reduction, return_grad=True)
        assert_identical(a[0], b[0])
        assert_identical(a[1], b[1])
        assert np.all(a[1][10:] == 0)

    @pytest.mark.parametrize("delta", [0.5, 1.0, 2.5])
    def test_huber_is_delta_times_smooth_l1(self, delta):
        rng = rng_for("huber", delta)
        x, y = rng.normal(size=(2, 30)) * 3
        h = CF.huber_loss(x, y, delta=delta, reduction="none")
        s = CF.smooth_l1_loss(x, y, beta=delta, reduction="none")
        np.testing.assert_allclose(h, delta * s, rtol=1e-14, atol=1e-15)

    def test_kink_gradients(self):
        """§0.6: sign(0)=0 for L1; both branches agree at |d| = beta/delta."""
        x = np.array([0.0, 1.0, -1.0, 2.0, -2.0])
        z = np.zeros(5)
        _, g = CF.l1_loss(x, z, reduction="sum", return_grad=True)
        np.testing.assert_array_equal(g, [0, 1, -1, 1, -1])
        _, g = CF.smooth_l1_loss(x, z, beta=1.0, reduction="sum", return_grad=True)
        np.testing.assert_array_equal(g, [0, 1, -1, 1, -1])
        _, g = CF.huber_loss(x, z, delta=2.0, reduction="sum", return_grad=True)
        np.testing.assert_array_equal(g, [0, 1, -1, 2, -2])
        v = CF.smooth_l1_loss(x, z, beta=1.0, reduction="none")
        np.testing.assert_array_equal(v, [0, 0.5, 0.5, 1.5, 1.5])


# =================================================================================
# Golden files (torch-made, checked without torch)
# =================================================================================


def _dec(obj):
    if isinstance(obj, dict):
        return np.array(obj["data"], dtype=np.float64).reshape(obj["shape"])
    return obj


def _golden_cases():
    out = []
    for path in sorted(glob.glob(os.path.join(GOLDEN_DIR, "*.json"))):
        with open(path) as f:
            data = json.load(f)
        for case in data["cases"]:
            out.append(pytest.param(data["func"], case, id=f"{data['func']}-{case['id']}"))
    return out


GOLDEN = _golden_cases()


def test_golden_files_present():
    funcs = {p.values[0] for p in GOLDEN}
    assert funcs == {"l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss",
                     "poisson_nll_loss", "gaussian_nll_loss"}
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(GOLDEN_DIR, "*.json")))
    assert total < 200_000


@pytest.mark.parametrize("func, case", GOLDEN)
def test_golden(func, case):
    args = [_dec(a) for a in case["args"]]
    kwargs = dict(case["kwargs"])
    reduction = case["reduction"]
    go = case["grad_output"]
    go = _dec(go) if go is not None else None
    expected_value = _dec(case["value"])
    expected_grads = [_dec(g) for g in case["grads"]]
    fn = getattr(CF, func)
    with quiet():
        if "weight" in case:
            value, grad = fn(*args, reduction=reduction, weight=_dec(case["weight"]),
                             return_grad=True, grad_output=go, **kwargs)
            results = [(value, as_tuple(grad))]
        else:
            value, grad = fn(*args, reduction=reduction, return_grad=True, grad_output=go,
                             **kwargs)
            results = [(value, as_tuple(grad))]
            cls = {"l1_loss": closs.L1Loss, "mse_loss": closs.MSELoss,
                   "smooth_l1_loss": closs.SmoothL1Loss, "huber_loss": closs.HuberLoss,
                   "poisson_nll_loss": closs.PoissonNLLLoss,
                   "gaussian_nll_loss": closs.GaussianNLLLoss}[func]
            crit = cls(reduction=reduction, **kwargs)
            results.append((crit(*args), as_tuple(crit.backward(go))))
    for value, grads in results:
        assert_close(value, expected_value, np.float64)
        assert len(grads) == len(expected_grads)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e, np.float64, check_dtype=not isinstance(e, float))


# =================================================================================
# Parity with torch: values and gradients through every route
# =================================================================================

SHAPES = [(), (7,), (2, 3, 2, 2), (0,)]


def _check_routes(case, args, reduction, dtype, go, ref_value, ref_grads, *, scale=None):
    routes = closs_routes(case, args, reduction, go)
    for route, (value, grads) in routes.items():
        msg = f"[{route}]"
        if reduction == "none":
            assert isinstance(value, np.ndarray), msg
        else:
            _expect_reduced_type(value, dtype)
        assert_close(value, ref_value, dtype, scale=scale, err_msg=msg + " value")
        if grads is None:
            continue
        assert len(grads) == len(ref_grads), msg
        for k, (g, r) in enumerate(zip(grads, ref_grads)):
            assert isinstance(g, np.ndarray) or np.ndim(g) == 0, msg
            assert_close(g, r, dtype, check_dtype=np.ndim(r) != 0 or isinstance(g, np.ndarray),
                         err_msg=f"{msg} grad[{k}]")
    return routes


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_torch_parity(torch, case, reduction, dtype, shape):
    rng = rng_for("parity", case.id, reduction, np.dtype(dtype).name, shape)
    args = make_args(case, rng, shape, dtype)
    go = random_grad_output(rng, reduction, shape, dtype)
    scale = value_scale(case, args, reduction, dtype) if reduction != "none" else None
    ref_value, ref_grads = torch_value_and_grads(case, args, reduction, go)
    _check_routes(case, args, reduction, dtype, go, ref_value, ref_grads, scale=scale)
    # default upstream gradient (1 / all ones)
    ref_value, ref_grads = torch_value_and_grads(case, args, reduction, None)
    crit = case.closs_cls(reduction=reduction, **case.kwargs)
    crit(*args)
    for g, r in zip(as_tuple(crit.backward()), ref_grads):
        assert_close(g, r, dtype)
    _, fg = case.closs_func(*args, reduction=reduction, return_grad=True, **case.kwargs)
    for g, r in zip(as_tuple(fg), ref_grads):
        assert_close(g, r, dtype)


GAUSSIAN_CASES = [c for c in CASES if c.func == "gaussian_nll_loss"]
VAR_SHAPES = [
    ((4, 5), (4, 5)),          # heteroscedastic
    ((4, 5), (4,)),            # input.shape[:-1]
    ((4, 5), (4, 1)),          # one dim of size 1
    ((4, 5), (1, 5)),
    ((1, 5), (1, 1)),          # the differing dim is the size-1 one
    ((4, 5), "float"),         # Python float
    ((4, 5), "float-small"),   # Python float below eps=0.3
    ((2, 3, 2, 2), (2, 3, 2)),
    ((2, 3, 2, 2), (2, 1, 2, 2)),
    ((2, 3, 2, 2), (1, 3, 2, 2)),
    ((2, 3, 2, 2), (2, 3, 2, 1)),
    ((5,), ()),                # 0-d array == input.shape[:-1]
    ((5,), (1,)),
    ((5,), "float"),
    ((), ()),
    ((), "float"),
    ((0, 3), (0,)),
]


def _var_for(rng, vshape, dtype):
    if vshape == "float":
        return float(np.round(rng.uniform(0.05, 2.0), 6))
    if vshape == "float-small":
        return 0.1
    return rng.uniform(0.01, 2.0, vshape).astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shapes", VAR_SHAPES, ids=lambda s: f"{s[0]}-var{s[1]}")
@pytest.mark.parametrize("case", GAUSSIAN_CASES, ids=[c.id for c in GAUSSIAN_CASES])
def test_gaussian_var_shapes_parity(torch, case, shapes, reduction, dtype):
    shape, vshape = shapes
    rng = rng_for("gvar", case.id, shapes, reduction, np.dtype(dtype).name)
    x, y, _ = make_args(case, rng, shape, dtype)
    var = _var_for(rng, vshape, dtype)
    go = random_grad_output(rng, reduction, shape, dtype)
    scale = value_scale(case, [x, y, var], reduction, dtype) if reduction != "none" else None
    ref_value, ref_grads = torch_value_and_grads(case, [x, y, var], reduction, go)
    routes = _check_routes(case, [x, y, var], reduction, dtype, go, ref_value, ref_grads,
                           scale=scale)
    for route, (_, grads) in routes.items():
        if grads is None:
            continue
        gx, gv = grads
        assert gx.shape == x.shape and gx.dtype == dtype
        assert np.shape(gv) == np.shape(var)
        if isinstance(var, np.ndarray):
            assert gv.dtype == dtype


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gaussian_var_nan_and_zero(torch, reduction, dtype):
    """NaN var passes the negativity check (nan loss); var = 0 is clamped to eps;
    var = +inf gives an infinite loss (log v) and a zero gradient."""
    case = GAUSSIAN_CASES[0]
    x = np.array([0.5, 1.0, -1.0, 2.0, 1.0], dtype)
    y = np.array([0.0, 1.0, 1.0, 0.0, 3.0], dtype)
    var = np.array([np.nan, 0.0, 1.0, 1e-9, np.inf], dtype)
    ref_value, ref_grads = torch_value_and_grads(case, [x, y, var], reduction, None)
    _check_routes(case, [x, y, var], reduction, dtype, None, ref_value, ref_grads)


# ---------------------------------------------------------------------------------
# mixed dtypes, integer / list targets
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("var_shape", [(3, 4), (3,), (3, 1)])
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_gaussian_grad_var_has_var_dtype(dtype, var_shape):
    """A var of the other float dtype: the value and grad_input are in input's
    dtype, grad_var in var's (API.md: each gradient has its argument's dtype),
    with the values of the computation in input's dtype."""
    rng = rng_for("gauss-var-dtype", var_shape)
    x, y = (rng.standard_normal((3, 4)).astype(dtype) for _ in range(2))
    other = np.float64 if dtype == np.float32 else np.float32
    var = rng.uniform(0.5, 2.0, var_shape).astype(other)
    v, (gx, gv) = CF.gaussian_nll_loss(x, y, var, return_grad=True)
    rv, (rgx, rgv) = CF.gaussian_nll_loss(x, y, var.astype(dtype), return_grad=True)
    assert v.dtype == gx.dtype == dtype and gv.dtype == other and gv.shape == var_shape
    assert v == rv and np.array_equal(gx, rgx) and np.array_equal(gv, rgv.astype(other))


@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_integer_target_equals_float_target(case):
    rng = rng_for("inttarget", case.id)
    args = make_args(case, rng, (3, 4), np.float64)
    y_int = np.round(np.abs(args[1]) * 2).astype(np.int32)
    a = case.closs_func(*([args[0], y_int] + args[2:]), reduction="none", return_grad=True,
                        **case.kwargs)
    b = case.closs_func(*([args[0], y_int.astype(np.float64)] + args[2:]), reduction="none",
                        return_grad=True, **case.kwargs)
    assert_identical(a[0], b[0])
    for ga, gb in zip(as_tuple(a[1]), as_tuple(b[1])):
        assert_identical(ga, gb)


@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_integer_target_torch(torch, case):
    rng = rng_for("inttarget-torch", case.id)
    args = make_args(case, rng, (3, 4), np.float64)
    args[1] = np.round(np.abs(args[1]) * 2).astype(np.int64)
    if case.func == "huber_loss":
        # torch 2.13's huber backward fails on an int64 target ("Found dtype Long
        # but expected Double"): compare against the float target there
        ref_value, ref_grads = torch_value_and_grads(
            case, [args[0], args[1].astype(np.float64)], "sum")
    else:
        ref_value, ref_grads = torch_value_and_grads(case, args, "sum")
    value, grad = case.closs_func(*args, reduction="sum", return_grad=True, **case.kwargs)
    assert_close(value, ref_value, np.float64)
    for g, r in zip(as_tuple(grad), ref_grads):
        assert_close(g, r, np.float64)


@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_mixed_float_dtypes_result_has_input_dtype(case):
    """API.md: the result has the input's float dtype (no silent up-cast)."""
    rng = rng_for("mixed", case.id)
    args = make_args(case, rng, (3, 4), np.float32)
    args64 = [args[0]] + [a.astype(np.float64) for a in args[1:]]
    for reduction in REDUCTIONS:
        v, g = case.closs_func(*args64, reduction=reduction, return_grad=True, **case.kwargs)
        assert np.asarray(v).dtype == np.float32
        if reduction != "none":
            _expect_reduced_type(v, np.float32)
        gi = as_tuple(g)[0]
        assert gi.dtype == np.float32
        ref = case.closs_func(*args, reduction=reduction, **case.kwargs)
        assert_close(v, ref, np.float32)


@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_lists_and_python_scalars(case):
    """Inputs are anything numpy.asarray accepts (float lists, Python floats)."""
    rng = rng_for("lists", case.id)
    args = make_args(case, rng, (2, 3), np.float64)
    as_lists = [a.tolist() for a in args]
    for reduction in REDUCTIONS:
        a = case.closs_func(*args, reduction=reduction, return_grad=True, **case.kwargs)
        b = case.closs_func(*as_lists, reduction=reduction, return_grad=True, **case.kwargs)
        assert_identical(a[0], b[0])
        for ga, gb in zip(as_tuple(a[1]), as_tuple(b[1])):
            assert_identical(ga, gb)
    scalars = [float(a.ravel()[0]) for a in args]
    v, g = case.closs_func(*scalars, reduction="sum", return_grad=True, **case.kwargs)
    _expect_reduced_type(v, np.float64)
    expected = case.closs_func(*[np.array(s) for s in scalars], reduction="sum", **case.kwargs)
    assert_identical(v, expected)
    assert np.shape(as_tuple(g)[0]) == ()


# ---------------------------------------------------------------------------------
# legacy size_average / reduce
# ---------------------------------------------------------------------------------

LEGACY = [
    (None, False, "none"),
    (False, None, "sum"),
    (True, None, "mean"),
    (False, True, "sum"),
    (True, True, "mean"),
    (True, False, "none"),
    (None, True, "mean"),
    (False, False, "none"),
]
LEGACY_CASES = [c for c in CASES if c.legacy and c.opts in ((), (("beta", 0.5),))
                or c.func == "poisson_nll_loss" and dict(c.opts).get("full")]


@pytest.mark.parametrize("size_average, reduce, expected", LEGACY,
                         ids=[f"sa={a}-r={b}" for a, b, _ in LEGACY])
@pytest.mark.parametrize("case", LEGACY_CASES, ids=[c.id for c in LEGACY_CASES])
def test_legacy_size_average_reduce(torch, case, size_average, reduce, expected):
    rng = rng_for("legacy", case.id, size_average, reduce)
    args = make_args(case, rng, (3, 4), np.float64)
    other = "sum" if expected != "sum" else "none"  # overridden by the legacy pair
    msg = ("size_average and reduce args will be deprecated, please use "
           f"reduction='{expected}' instead")
    with pytest.warns(UserWarning, match=msg):
        crit = case.closs_cls(size_average=size_average, reduce=reduce, reduction=other,
                              **case.kwargs)
    value, grad = crit.value_and_grad(*args)
    with pytest.warns(UserWarning, match=msg):
        fvalue, fgrad = case.closs_func(*args, size_average=size_average, reduce=reduce,
                                        reduction=other, return_grad=True, **case.kwargs)
    plain = case.closs_func(*args, reduction=expected, return_grad=True, **case.kwargs)
    for v, g in [(value, grad), (fvalue, fgrad)]:
        assert_identical(v, plain[0])
        assert_identical(g, plain[1])
    ref_value, ref_grads = torch_value_and_grads(
        case, args, other, legacy={"size_average": size_average, "reduce": reduce})
    assert_close(value, ref_value, np.float64)
    assert_close(grad, ref_grads[0], np.float64)


@pytest.mark.parametrize("case", LEGACY_CASES[:3], ids=[c.id for c in LEGACY_CASES[:3]])
def test_legacy_positional(case):
    """size_average, reduce keep torch's positional places."""
    x, y = make_args(case, rng_for("legpos", case.id), (5,), np.float64)
    with pytest.warns(UserWarning, match="reduction='sum'"):
        crit = case.closs_cls(False, True)
    with pytest.warns(UserWarning, match="reduction='sum'"):
        fv = case.closs_func(x, y, False, True)
    assert_identical(crit(x, y), case.closs_func(x, y, reduction="sum"))
    assert_identical(fv, case.closs_func(x, y, reduction="sum"))


# ---------------------------------------------------------------------------------
# empty inputs
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0,), (3, 0, 2)], ids=str)
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_empty(case, dtype, shape):
    """n == 0: 'none' -> empty, 'mean' -> nan, 'sum' -> 0 (spec §0.1)."""
    args = make_args(case, rng_for("empty"), shape, dtype)
    for route in ("class", "functional"):
        for reduction in REDUCTIONS:
            if route == "class":
                v, g = case.closs_cls(reduction=reduction, **case.kwargs).value_and_grad(*args)
            else:
                v, g = case.closs_func(*args, reduction=reduction, return_grad=True,
                                       **case.kwargs)
            if reduction == "none":
                assert isinstance(v, np.ndarray) and v.shape == shape and v.dtype == dtype
            elif reduction == "mean":
                _expect_reduced_type(v, dtype)
                assert np.isnan(v)
            else:
                _expect_reduced_type(v, dtype)
                assert v == 0
            for gi, a in zip(as_tuple(g), args[::2]):
                assert gi.shape == a.shape and gi.dtype == dtype


# ---------------------------------------------------------------------------------
# broadcasting
# ---------------------------------------------------------------------------------

BROADCASTS = [((2, 1), (2, 3)), ((3,), (4, 3)), ((4, 3), (3,)), ((4, 1, 3), (5, 3)),
              ((), (3,)), ((3,), ()), ((1, 3), (2, 1))]


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shapes", BROADCASTS, ids=lambda s: f"{s[0]}vs{s[1]}")
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_broadcast_target(torch, case, shapes, reduction, dtype):
    """L1/MSE/SmoothL1/Huber broadcast with torch's UserWarning; Poisson and
    GaussianNLL silently; the input gradient is summed back to input's shape."""
    shape, tshape = shapes
    rng = rng_for("bcast", case.id, shapes, reduction, np.dtype(dtype).name)
    args = make_args(case, rng, shape, dtype, target_shape=tshape)
    out_shape = np.broadcast_shapes(shape, tshape)
    go = random_grad_output(rng, reduction, out_shape, dtype)
    scale = value_scale(case, args, reduction, dtype) if reduction != "none" else None
    ref_value, ref_grads = torch_value_and_grads(case, args, reduction, go)

    if case.warns_on_broadcast:
        def ctx():
            return pytest.warns(UserWarning, match=r"Using a target size .* different to the "
                                                   r"input size")
    else:
        class _NoWarn:
            def __enter__(self):
                self.c = warnings.catch_warnings()
                self.c.__enter__()
                warnings.simplefilter("error")

            def __exit__(self, *exc):
                return self.c.__exit__(*exc)

        ctx = _NoWarn
    crit = case.closs_cls(reduction=reduction, **case.kwargs)
    with ctx():
        v1 = crit(*args)
    g1 = as_tuple(crit.backward(go))
    with ctx():
        v2, g2 = case.closs_cls(reduction=reduction, **case.kwargs).value_and_grad(
            *args, grad_output=go)
    with ctx():
        v3, g3 = case.closs_func(*args, reduction=reduction, return_grad=True, grad_output=go,
                                 **case.kwargs)
    for v, g in [(v1, g1), (v2, as_tuple(g2)), (v3, as_tuple(g3))]:
        if reduction == "none":
            assert v.shape == out_shape
        assert_close(v, ref_value, dtype, scale=scale)
        assert g[0].shape == shape
        for gi, r in zip(g, ref_grads):
            assert_close(gi, r, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shapes", [((2, 3), (4, 2, 3), (2, 1)), ((4, 1), (4, 5), (4, 1)),
                                    ((3, 4), (4,), (3,)), ((3, 4), (2, 1, 4), "float")],
                         ids=str)
def test_gaussian_broadcast_target_and_var(torch, shapes, reduction):
    """GaussianNLL: target broadcasts silently, var by its own rules; both
    gradients are summed back to their argument's shape."""
    case = GAUSSIAN_CASES[0]
    shape, tshape, vshape = shapes
    rng = rng_for("gbcast", shapes, reduction)
    x = rng.uniform(-2, 2, shape)
    y = rng.uniform(-2, 2, tshape)
    var = _var_for(rng, vshape, np.float64)
    out_shape = np.broadcast_shapes(shape, tshape)
    go = random_grad_output(rng, reduction, out_shape, np.float64)
    ref_value, ref_grads = torch_value_and_grads(case, [x, y, var], reduction, go)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_routes(case, [x, y, var], reduction, np.float64, go, ref_value, ref_grads)


# ---------------------------------------------------------------------------------
# functional weight= (l1_loss, mse_loss, huber_loss)
# ---------------------------------------------------------------------------------

WEIGHTED = [("l1_loss", {}), ("mse_loss", {}), ("huber_loss", {"delta": 1.0}),
            ("huber_loss", {"delta": 2.5})]


def test_torch_has_weight(torch):
    import inspect

    for name in ("l1_loss", "mse_loss", "huber_loss"):
        assert "weight" in inspect.signature(getattr(torch.nn.functional, name)).parameters


@pytest.mark.parametrize("target_shape", [None, (3,)], ids=["same", "broadcast"])
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("func, opts", WEIGHTED, ids=[f"{f}{o}" for f, o in WEIGHTED])
def test_weight_parity(torch, func, opts, reduction, dtype, target_shape):
    """Weighted L1/MSE 'mean' divides by sum(weight), Huber by n (spec §1, §2, §9)."""
    rng = rng_for("weight", func, opts, reduction, np.dtype(dtype).name, target_shape)
    shape = (4, 3)
    x = rng.uniform(-3, 3, shape).astype(dtype)
    y = rng.uniform(-3, 3, target_shape or shape).astype(dtype)
    w = rng.uniform(0, 2, shape).astype(dtype)
    w[0, 0] = 0.0
    go = random_grad_output(rng, reduction, shape, dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = getattr(torch.nn.functional, func)(tx, torch.from_numpy(y), reduction=reduction,
                                                 weight=torch.from_numpy(w), **opts)
    out.backward(torch.as_tensor(np.asarray(go, dtype)).reshape(out.shape))
    x0, y0, w0 = x.copy(), y.copy(), w.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v, g = getattr(CF, func)(x, y, reduction=reduction, weight=w, return_grad=True,
                                 grad_output=go, **opts)
        v_only = getattr(CF, func)(x, y, reduction=reduction, weight=w, **opts)
    assert_identical(v, v_only)
    absw = np.abs(w.astype(np.float64)).sum()
    scale = None if reduction == "none" else float(absw * 10)
    assert_close(v, out.detach().numpy(), dtype, scale=scale)
    assert_close(g, tx.grad.numpy(), dtype)
    for a, b in [(x, x0), (y, y0), (w, w0)]:
        assert_identical(a, b)


@pytest.mark.parametrize("size_average, reduce", [(False, None), (None, False), (True, True)])
@pytest.mark.parametrize("func", ["l1_loss", "mse_loss"])
def test_weight_with_legacy_args(torch, func, size_average, reduce):
    rng = rng_for("wlegacy", func, size_average, reduce)
    x, y, w = rng.uniform(-2, 2, (3, 3, 4))
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        v, g = getattr(CF, func)(x, y, size_average=size_average, reduce=reduce, weight=w,
                                 return_grad=True)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = getattr(torch.nn.functional, func)(tx, torch.from_numpy(y),
                                                 size_average=size_average, reduce=reduce,
                                                 weight=torch.from_numpy(w))
    out.backward(torch.ones_like(out))
    assert_close(v, out.detach().numpy(), np.float64)
    assert_close(g, tx.grad.numpy(), np.float64)


@pytest.mark.parametrize("func", ["l1_loss", "mse_loss"])
def test_weighted_mean_denominator(func):
    """Without torch: weighted mean of L1/MSE == sum(w*l) / sum(w)."""
    rng = rng_for("wden", func)
    x, y = rng.normal(size=(2, 10))
    w = rng.uniform(0.5, 3, 10)
    none = getattr(CF, func)(x, y, reduction="none")
    v, g = getattr(CF, func)(x, y, weight=w, return_grad=True)
    assert v == pytest.approx(np.sum(w * none) / np.sum(w), rel=1e-13)
    _, g1 = getattr(CF, func)(x, y, reduction="sum", return_grad=True)
    np.testing.assert_allclose(g, w * g1 / np.sum(w), rtol=1e-13)
    h = CF.huber_loss(x, y, weight=w, delta=0.7)
    hn = CF.huber_loss(x, y, reduction="none", delta=0.7)
    assert h == pytest.approx(np.sum(w * hn) / x.size, rel=1e-13)


# ---------------------------------------------------------------------------------
# NaN / inf propagate as in torch
# ---------------------------------------------------------------------------------


def _nonfinite_args(case, dtype):
    nan, inf = np.nan, np.inf
    x = np.array([nan, 1.0, inf, -inf, inf, 2.0, 0.5, -inf, 0.0, 1.0, 1e30, 3.0])
    y = np.array([0.0, nan, 1.0, 1.0, inf, 2.0, 1.5, -inf, nan, inf, 0.0, 1.0])
    if case.func == "poisson_nll_loss":
        y = np.abs(y)
        if not case.kwargs.get("log_input", True):
            x = np.abs(x)
    args = [x.astype(dtype), y.astype(dtype)]
    if case.nargs == 3:
        var = np.array([1.0, 1.0, 1.0, 0.5, 1.0, nan, inf, 1.0, 1.0, 1.0, 2.0, 0.0])
        args.append(var.astype(dtype))
    return args


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_nonfinite_parity(torch, case, reduction, dtype):
    args = _nonfinite_args(case, dtype)
    ref_value, ref_grads = torch_value_and_grads(case, args, reduction, None)
    with np.errstate(all="ignore"):
        routes = closs_routes(case, args, reduction, None)
    for route, (value, grads) in routes.items():
        assert_close(value, ref_value, dtype, err_msg=route)
        for g, r in zip(grads or (), ref_grads):
            assert_close(g, r, dtype, err_msg=route)


def test_nonfinite_anchors():
    """Spec §0.7, §1, §2: sign(nan)=0 for the L1 gradient; inf-inf -> nan."""
    x = np.array([np.nan, np.inf, 1.0])
    y = np.array([0.0, np.inf, -np.inf])
    v, g = CF.l1_loss(x, y, reduction="none", return_grad=True)
    assert np.isnan(v[0]) and np.isnan(v[1]) and v[2] == np.inf
    np.testing.assert_array_equal(g, [0.0, 0.0, 1.0])
    v, g = CF.mse_loss(x, y, reduction="none", return_grad=True)
    assert np.isnan(v[1]) and np.isnan(g[1])
    assert v[2] == np.inf and g[2] == np.inf
    assert np.isnan(CF.mse_loss(x, y))
    assert np.isnan(CF.smooth_l1_loss(x, y, reduction="none", return_grad=True)[1][0])


# =================================================================================
# Memory layouts, read-only inputs, inputs never modified
# =================================================================================


def _layout(kind, a, rng):
    """`a` (C-contiguous, 2-D (4, 5)) as a differently laid out array of equal values."""
    if kind == "contiguous":
        return a
    if kind == "every-other":
        big = np.empty((4, 10), a.dtype)
        big[:, ::2] = a
        big[:, 1::2] = rng.normal(size=(4, 5))
        return big[:, ::2]
    if kind == "transposed":
        return np.ascontiguousarray(a.T).T
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "reversed":
        return np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1]
    if kind == "byteswapped":
        return a.astype(a.dtype.newbyteorder("S"))
    if kind == "unaligned":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        out = np.frombuffer(buf[1:].data, dtype=a.dtype).reshape(a.shape)
        out[...] = a
        assert not out.flags.aligned
        return out
    if kind == "readonly":
        out = a.copy()
        out.flags.writeable = False
        return out
    if kind == "broadcast_to":  # stride-0 view: rows all equal
        return np.broadcast_to(a[0], a.shape)
    raise AssertionError(kind)


LAYOUTS = ["every-other", "transposed", "fortran", "reversed", "byteswapped", "unaligned",
           "readonly", "broadcast_to"]


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_layouts(case, layout, dtype):
    """Any layout gives exactly the result of the C-contiguous copy, and the
    arguments (incl. grad_output) are not modified."""
    rng = rng_for("layout", case.id, layout, np.dtype(dtype).name)
    base = make_args(case, rng, (4, 5), dtype)
    if layout == "broadcast_to":
        base = [np.broadcast_to(a[0], a.shape).copy() for a in base]
    args = [_layout(layout, a, rng) for a in base]
    for a, b in zip(args, base):
        np.testing.assert_array_equal(a, b)
    go_base = rng.uniform(-2, 2, (4, 5)).astype(dtype)
    if layout == "broadcast_to":
        go_base = np.broadcast_to(go_base[0], go_base.shape).copy()
    go = _layout(layout, go_base, rng)
    saved = [np.array(a, copy=True) for a in args] + [np.array(go, copy=True)]
    for reduction in REDUCTIONS:
        g_out = go if reduction == "none" else 0.75
        g_base = go_base if reduction == "none" else 0.75
        got = closs_routes(case, args, reduction, g_out)
        want = closs_routes(case, base, reduction, g_base)
        for route in want:
            assert_identical(got[route][0], want[route][0], route)
            for ga, gb in zip(got[route][1] or (), want[route][1] or ()):
                assert_identical(ga, gb, route)
    for a, s in zip(args + [go], saved):
        assert a.dtype == s.dtype
        assert a.tobytes() == s.tobytes(), "an argument was modified"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_inputs_never_modified(case):
    """Including 'none' grad_output arrays and the weight arrays; gradients are
    fresh arrays (no aliasing of the arguments)."""
    rng = rng_for("nomod", case.id)
    args = make_args(case, rng, (3, 7), np.float64)
    args[0][0, 0] = np.nan
    go = rng.uniform(-2, 2, (3, 7))
    saved = [a.copy() for a in args] + [go.copy()]
    for reduction in REDUCTIONS:
        g = go if reduction == "none" else None
        routes = closs_routes(case, args, reduction, g)
        for _, (value, grads) in routes.items():
            for gi in grads or ():
                for a in args + [go]:
                    assert not np.shares_memory(gi, a)
            if reduction == "none":
                for a in args + [go]:
                    assert not np.shares_memory(value, a)
    for a, s in zip(args + [go], saved):
        assert_identical(a, s)
    if case.func in ("l1_loss", "mse_loss", "huber_loss"):
        w = rng.uniform(0, 2, (3, 7))
        w0 = w.copy()
        case.closs_func(*args, weight=w, reduction="none", return_grad=True, grad_output=go,
                        **case.kwargs)
        assert_identical(w, w0)
        for a, s in zip(args, saved):
            assert_identical(a, s)


def test_backward_is_repeatable_and_independent_of_result_mutation():
    x, y = rng_for("rep").normal(size=(2, 50))
    crit = closs.MSELoss(reduction="none")
    v = crit(x, y)
    g1 = crit.backward()
    v[...] = 0  # mutating the returned value ...
    g1_copy = g1.copy()
    g1[...] = 0  # ... or a returned gradient
    g2 = crit.backward()
    assert_identical(g2, g1_copy)
    g3 = crit.backward(np.full(50, 2.0))
    np.testing.assert_allclose(g3, 2 * g2, rtol=0)


# =================================================================================
# Bit-for-bit agreement of the routes
# =================================================================================


@pytest.mark.parametrize("shape", [(37,), (2, 4500)], ids=str)
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_routes_bit_identical(case, reduction, dtype, shape):
    """forward+backward == value_and_grad == functional (return_grad or not),
    NaN positions included, with and without an explicit grad_output."""
    rng = rng_for("bits", case.id, reduction, np.dtype(dtype).name, shape)
    args = make_args(case, rng, shape, dtype)
    # a few NaN / inf entries and exact ties
    flat = args[0].reshape(-1)
    flat[::17] = np.nan
    flat[5::23] = np.inf
    args[1].reshape(-1)[3::19] = args[0].reshape(-1)[3::19]
    for go in (None, random_grad_output(rng, reduction, shape, dtype)):
        with np.errstate(all="ignore"):
            routes = closs_routes(case, args, reduction, go)
        ref_value, ref_grads = routes["value_and_grad"]
        for route, (value, grads) in routes.items():
            assert_identical(value, ref_value, route)
            for g, r in zip(grads or (), ref_grads):
                assert_identical(g, r, route)
    # 'sum' gradient == 'none' gradient with an all-ones grad_output
    if reduction == "sum":
        with np.errstate(all="ignore"):
            _, g_sum = case.closs_func(*args, reduction="sum", return_grad=True, **case.kwargs)
            _, g_none = case.closs_func(*args, reduction="none", return_grad=True,
                                        grad_output=np.ones(shape, dtype), **case.kwargs)
        for a, b in zip(as_tuple(g_sum), as_tuple(g_none)):
            assert_identical(a, b)
