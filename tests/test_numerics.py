"""Numerics of the reductions and of the SIMD paths.

* reductions are deterministic (repeated calls, any thread count);
* sums and means are accumulated in double: float32 means of 1e6 values match
  a float64 reference to 1e-6, float32 'sum' is the correctly rounded sum of
  the float32 per-element losses (within 1 ulp), float64 sums are at least as
  accurate as NumPy's pairwise summation;
* large and small magnitudes behave as in torch;
* CLOSS_SIMD=portable|avx2|avx512 (fresh interpreters) give the default's
  results within float tolerance, and closs._kernels._runtime.SIMD_SELECTED
  reports the path used.
"""
import json
import math

import numpy as np
import pytest

import closs
import closs.functional as CF

from conftest import (
    BASIC_CASES,
    BASIC_IDS,
    CASE_IDS,
    CASES,
    as_tuple,
    assert_close,
    assert_identical,
    make_args,
    rng_for,
    run_python,
    torch_value_and_grads,
)

N = 1_000_000


# ---------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_repeated_calls_identical(case):
    args = make_args(case, rng_for("det", case.id), (N,), np.float32)
    for reduction in ("mean", "sum"):
        first = case.closs_func(*args, reduction=reduction, return_grad=True, **case.kwargs)
        for _ in range(3):
            again = case.closs_func(*args, reduction=reduction, return_grad=True,
                                    **case.kwargs)
            assert_identical(first[0], again[0])
            for a, b in zip(as_tuple(first[1]), as_tuple(again[1])):
                assert_identical(a, b)


@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_reduction_independent_of_thread_count(restore_threads, case):
    args = make_args(case, rng_for("thr", case.id), (300_001,), np.float64)
    results = []
    for n in (1, 2, 3, 4, 7):
        closs.set_num_threads(n)
        results.append([case.closs_func(*args, reduction=r, **case.kwargs)
                        for r in ("mean", "sum")])
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert_identical(a, b)


# ---------------------------------------------------------------------------------
# accumulation accuracy
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("func", ["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"])
def test_float32_mean_of_1e6_accumulated_in_double(func):
    """|d| in [1000, 1001]: a float32 running sum of 1e6 such values is off by
    far more than 1e-6; double accumulation is not."""
    rng = rng_for("acc32", func)
    x = rng.uniform(-1, 1, N).astype(np.float32)
    d = rng.uniform(1000, 1001, N) * np.where(rng.random(N) < 0.5, -1, 1)
    y = (x + d).astype(np.float32)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    z = np.abs(x64 - y64)
    ref = {"l1_loss": z, "mse_loss": z * z, "smooth_l1_loss": z - 0.5,
           "huber_loss": z - 0.5}[func]
    mean = getattr(CF, func)(x, y)
    total = getattr(CF, func)(x, y, reduction="sum")
    assert type(mean) is np.float32 and type(total) is np.float32
    assert mean == pytest.approx(math.fsum(ref) / N, rel=1e-6)
    assert total == pytest.approx(math.fsum(ref), rel=1e-6)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_sum_is_correctly_rounded(case):
    """'sum' of float32 = the exact sum of the float32 per-element losses,
    rounded once to float32 (within 1 ulp)."""
    args = make_args(case, rng_for("round32", case.id), (N,), np.float32)
    none = case.closs_func(*args, reduction="none", **case.kwargs)
    exact = math.fsum(none.astype(np.float64))
    total = case.closs_func(*args, reduction="sum", **case.kwargs)
    mean = case.closs_func(*args, reduction="mean", **case.kwargs)
    ulp = np.spacing(np.float32(abs(exact)))
    assert abs(float(total) - exact) <= ulp, (float(total), exact)
    assert abs(float(mean) - exact / N) <= np.spacing(np.float32(abs(exact / N)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float64_sum_at_least_as_accurate_as_numpy(case):
    args = make_args(case, rng_for("acc64", case.id), (N,), np.float64)
    none = case.closs_func(*args, reduction="none", **case.kwargs)
    exact = math.fsum(none)
    total = float(case.closs_func(*args, reduction="sum", **case.kwargs))
    err = abs(total - exact)
    err_numpy = abs(float(np.sum(none)) - exact)
    ulp = np.spacing(abs(exact))
    assert err <= max(2 * err_numpy, 4 * ulp), (err, err_numpy, ulp)
    assert err <= 1e-14 * math.fsum(np.abs(none))


@pytest.mark.parametrize("func", ["l1_loss", "mse_loss"])
def test_float32_small_terms_not_absorbed(func):
    """One 2**24 then ones: any float32 partial sum holding 2**24 drops every
    1 added to it; accumulated in double the total is 2**24 + (n - 1)."""
    n = 3 * 4096 + 5
    x = np.ones(n, np.float32)
    x[0] = 2.0 ** 24 if func == "l1_loss" else 2.0 ** 12
    y = np.zeros(n, np.float32)
    exact = 2.0 ** 24 + (n - 1)
    total = getattr(CF, func)(x, y, reduction="sum")
    assert total == np.float32(exact)
    assert getattr(CF, func)(x, y) == np.float32(exact / n)


def test_float32_sum_beyond_float32_integers():
    """2**24 + more ones: a float32 accumulator would stop at 16777216."""
    n = (1 << 24) + 1001
    x = np.ones(n, np.float32)
    y = np.zeros(n, np.float32)
    assert CF.l1_loss(x, y, reduction="sum") == np.float32(n)
    assert CF.mse_loss(x, y) == np.float32(1.0)


# ---------------------------------------------------------------------------------
# magnitudes
# ---------------------------------------------------------------------------------

MAGS64 = np.array([5e-324, 1e-300, 1e-150, 1e-20, 1e-8, 1.0, 3.5, 1e8, 1e20, 1e150, 1e300])
MAGS32 = np.array([1e-45, 1e-38, 1e-20, 1e-8, 1.0, 3.5, 1e8, 1e18, 1e30], np.float32)


def _magnitude_args(case, dtype):
    mags = MAGS64 if dtype == np.float64 else MAGS32
    x = np.concatenate([mags, -mags, mags]).astype(dtype)
    y = np.concatenate([np.zeros_like(mags), mags[::-1], 0.5 * mags]).astype(dtype)
    if case.func == "poisson_nll_loss":
        if case.kwargs.get("log_input", True):
            lim = 700.0 if dtype == np.float64 else 85.0
            x = np.clip(x, -lim, lim)
        else:
            x = np.abs(x)
        y = np.abs(y)
    args = [x, y]
    if case.nargs == 3:
        args.append(np.abs(y[::-1]).astype(dtype))
    return args


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_magnitudes_parity(torch, case, dtype):
    """Per-element values and gradients at extreme magnitudes as torch; the
    reduced value is the accurately accumulated sum of those elements."""
    args = _magnitude_args(case, dtype)
    ref_value, ref_grads = torch_value_and_grads(case, args, "none")
    with np.errstate(all="ignore"):
        value, grads = case.closs_func(*args, reduction="none", return_grad=True,
                                       **case.kwargs)
        total = case.closs_func(*args, reduction="sum", **case.kwargs)
    # elementwise: relative tolerance only (no scale-based atol across 600 decades)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    tiny = 1e-300 if dtype == np.float64 else 1e-38
    assert_close(value, ref_value, dtype, rtol=rtol, atol=tiny)
    for g, r in zip(as_tuple(grads), ref_grads):
        assert_close(g, r, dtype, rtol=rtol, atol=tiny)
    finite = value[np.isfinite(value)]
    if finite.size == value.size:
        exact = math.fsum(value.astype(np.float64))
        if np.isfinite(dtype(exact)):
            assert float(total) == pytest.approx(exact, rel=rtol,
                                                 abs=rtol * math.fsum(np.abs(finite)))
    else:
        assert np.isnan(total) or np.isinf(total)


def test_overflow_and_underflow_anchors():
    big = np.array([1e200])
    assert CF.mse_loss(big, -big) == np.inf
    assert CF.mse_loss(np.array([1e-200]), np.array([0.0])) == 0.0
    assert CF.l1_loss(np.array([1.7e308, -1.7e308]), np.zeros(2), reduction="none")[0] == 1.7e308
    assert CF.l1_loss(np.array([1e308]), np.array([-1e308])) == np.inf
    v, g = CF.poisson_nll_loss(np.array([800.0]), np.array([1.0]), reduction="sum",
                               return_grad=True)
    assert v == np.inf and g[0] == np.inf  # spec §10: x=800 -> inf/inf


@pytest.mark.parametrize("dtype, big", [(np.float32, 3e38), (np.float64, 1.7e308)])
def test_mse_mean_gradient_scales_before_doubling(dtype, big):
    """torch's MSE gradient is (2 / n) (x - y) * g: finite for |x - y| above
    max / 2, where 2 (x - y) overflows; 'sum' (2 (x - y)) overflows in both."""
    x, y = np.array([big, 1.0, 0.0], dtype), np.zeros(3, dtype)
    _, g = CF.mse_loss(x, y, return_grad=True)
    np.testing.assert_array_equal(g, dtype(2 / 3) * x)  # torch 2.13: 1.3333334e+38 (float32)
    _, g = CF.mse_loss(x, y, reduction="sum", return_grad=True)
    assert g[0] == np.inf and g[1] == 2


# ---------------------------------------------------------------------------------
# SIMD paths
# ---------------------------------------------------------------------------------

SIMD_SCRIPT = r"""
import json, sys, warnings
import numpy as np
import closs, closs.functional as F
from closs._kernels import _runtime
cases = json.loads(sys.argv[1]) if len(sys.argv) > 1 else json.loads(CASES)
out = {}
rng = np.random.default_rng(1234)
n = 10007
for i, (func, kw, nargs) in enumerate(cases):
    for dt in ("float32", "float64"):
        x = rng.uniform(-3, 3, n)
        y = x + rng.uniform(-3, 3, n)
        y[::13] = x[::13]                 # ties
        y[1::17] = x[1::17] + kw.get("beta", kw.get("delta", 1.0))  # kinks
        if func == "poisson_nll_loss":
            y = np.abs(y)
            if not kw.get("log_input", True):
                x = np.abs(x)
        x[::101] = np.nan
        x[3::211] = np.inf
        args = [x.astype(dt), y.astype(dt)]
        if nargs == 3:
            v = rng.uniform(0, 2, n)
            v[::7] = kw.get("eps", 1e-6) / 2
            args.append(v.astype(dt))
        for red in ("none", "mean", "sum"):
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                val, grad = getattr(F, func)(*args, reduction=red, return_grad=True, **kw)
            grads = grad if isinstance(grad, tuple) else (grad,)
            key = f"{i}|{dt}|{red}"
            out[key + "|value"] = np.asarray(val)
            for k, g in enumerate(grads):
                out[f"{key}|grad{k}"] = np.asarray(g)
np.savez(OUT, **out)
print(json.dumps({"selected": _runtime.SIMD_SELECTED, "supported": _runtime.SIMD_SUPPORTED}))
"""

ORDER = {"portable": 0, "avx2": 1, "avx512": 2}


@pytest.fixture(scope="module")
def simd_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("simd")
    cases = json.dumps([[c.func, c.kwargs, c.nargs] for c in CASES])
    runs = {}
    for isa in ("default", "portable", "avx2", "avx512"):
        path = tmp / f"{isa}.npz"
        code = f"CASES = {cases!r}\nOUT = {str(path)!r}\n" + SIMD_SCRIPT
        r = run_python(code, {"CLOSS_SIMD": None if isa == "default" else isa})
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout.strip().splitlines()[-1])
        with np.load(path) as data:
            runs[isa] = (info, {k: data[k] for k in data.files})
    return runs


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_simd_selection(simd_runs, isa):
    info, _ = simd_runs[isa]
    default_info, _ = simd_runs["default"]
    supported = info["supported"]
    assert default_info["selected"] == supported  # best path by default
    # a path the CPU lacks falls back to the best it has
    expected = isa if ORDER[isa] <= ORDER[supported] else supported
    assert info["selected"] == expected, info
    print(f"CLOSS_SIMD={isa}: SIMD_SELECTED={info['selected']} (supported {supported})")


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_simd_paths_agree(simd_runs, isa):
    info, results = simd_runs[isa]
    _, default = simd_runs["default"]
    assert results.keys() == default.keys()
    differ = 0
    for key, ref in default.items():
        got = results[key]
        dtype = got.dtype
        assert_close(got, ref, dtype, err_msg=f"{key} under CLOSS_SIMD={isa}")
        if not (np.array_equal(got, ref, equal_nan=True)):
            differ += 1
    print(f"CLOSS_SIMD={isa} (selected {info['selected']}): "
          f"{differ} of {len(default)} outputs not bit-identical to the default")


def test_simd_env_in_this_process_is_reported():
    from closs._kernels import _runtime

    assert _runtime.SIMD_SELECTED in ORDER
    assert _runtime.SIMD_SUPPORTED in ORDER
    assert ORDER[_runtime.SIMD_SELECTED] <= ORDER[_runtime.SIMD_SUPPORTED]
