"""Accuracy of the vectorisable exp/log family (csrc/closs_vmath.hpp).

Every instruction-set path (CLOSS_SIMD=portable/avx2/avx512, those the CPU
has) runs the same check script in a subprocess (cwd outside the repository,
so the installed package is imported): the max error in ULPs of each function
over
  float32: a sweep of every 1021st bit pattern of the whole float32 range plus
           special values, against float64 NumPy references;
  float64: a sweep of bit patterns of the whole finite range, dense uniform
           sweeps of each function's interesting interval, plus special values,
           against 80-bit long double references;
together with a digest of all outputs (the paths must agree bit for bit) and
the number of elements whose value differs when computed alone (a size-1
array takes the scalar remainder loop) from the vectorised sweep.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from closs._kernels import _runtime, _vmath

FUNCTIONS = ("exp", "exp_nonpos", "log", "log1p", "softplus", "log_sigmoid")
ISAS = ("portable", "avx2", "avx512")

# Max error in ULPs of the exact result, as documented in csrc/closs_vmath.hpp
# (measured: float32 exhaustively, float64 on 10^8 inputs per function).
BOUNDS = {
    "float32": {"exp": 0.92, "exp_nonpos": 0.92, "log": 0.84, "log1p": 0.84,
                "softplus": 1.62, "log_sigmoid": 1.62},
    "float64": {"exp": 0.92, "exp_nonpos": 0.92, "log": 0.86, "log1p": 0.85,
                "softplus": 1.56, "log_sigmoid": 1.57},
}

CHECK_SCRIPT = r'''
import hashlib, json, sys
import numpy as np
from closs._kernels import _vmath

FUNCTIONS = ("exp", "exp_nonpos", "log", "log1p", "softplus", "log_sigmoid")


def ulp_err(y, ref, T):
    """|y - ref| in ULPs (format T) of the higher-precision reference ref."""
    fi = np.finfo(T)
    p, emin = fi.nmant + 1, fi.minexp
    _, e = np.frexp(ref)
    ex = np.where(ref == 0, emin, np.maximum(e.astype(np.int64) - 1, emin))
    ulp = np.ldexp(ref.dtype.type(1), (ex - p + 1).astype(np.int32))
    with np.errstate(all="ignore"):
        err = np.abs(y.astype(ref.dtype) - ref) / ulp
        rounded = ref.astype(T)
    special = np.isinf(rounded) | np.isinf(y) | np.isnan(ref) | np.isnan(y)
    same = (y == rounded) | (np.isnan(y) & np.isnan(ref))
    return np.where(special, np.where(same, 0.0, np.inf), err).astype(np.float64)


def reference(name, x, R):
    with np.errstate(all="ignore"):  # casting signalling NaNs raises 'invalid'
        xr = x.astype(R)
        if name in ("exp", "exp_nonpos"):
            return np.exp(xr)
        if name == "log":
            return np.log(xr)
        if name == "log1p":
            return np.log1p(xr)
        t = np.log1p(np.exp(-np.abs(xr)))
        return np.maximum(xr, R(0)) + t if name == "softplus" else np.minimum(xr, R(0)) - t


def specials(T):
    fi = np.finfo(T)
    U = np.uint32 if T == np.float32 else np.uint64
    pw = np.ldexp(T(1), np.arange(fi.minexp - fi.nmant, fi.maxexp).astype(np.int32))
    if T == np.float32:
        edges = [88.72283935546875, -103.97208, -87.33655, 17.0, 20.0, 88.0, 89.0, -104.0]
    else:
        edges = [709.782712893384, -745.1332191019411, -708.3964185322641, 20.0, 37.0,
                 710.0, -746.0, 2.0 ** -53, 2.0 ** -29]
    base = np.concatenate([
        np.array([0.0, 1.0, 0.5, 2.0, np.e, 0.41421356, -0.29289322, 1e-30, 30.0, 50.0,
                  fi.max, fi.tiny, fi.smallest_subnormal, fi.tiny - fi.smallest_subnormal],
                 dtype=T),
        np.array(edges, dtype=T), pw])
    base = np.concatenate([base, -base])
    near = [base]
    for k in (1, 2, 3):  # neighbours a few ULPs away
        with np.errstate(all="ignore"):
            near.append((base.view(U) + U(k)).view(T))
            near.append((base.view(U) - U(k)).view(T))
    out = np.concatenate(near + [np.array([np.inf, -np.inf, np.nan, -np.nan], dtype=T)])
    return out[~np.isnan(out) | (np.arange(out.size) >= out.size - 2)]


def inputs(name, T):
    if T == np.float32:
        sweep = np.arange(0, 2 ** 32, 1021, dtype=np.uint64).astype(np.uint32).view(np.float32)
        sets = [sweep, specials(T)]
    else:
        rng = np.random.default_rng(20240611)
        sweep = (np.arange(0, 2 ** 20, dtype=np.uint64) * np.uint64((2 ** 64 - 1) // 2 ** 20)
                 + rng.integers(0, 2 ** 40, 2 ** 20, dtype=np.uint64)).view(np.float64)
        dense = {"exp": (-746.0, 710.0), "exp_nonpos": (-746.0, 0.0), "log": (0.5, 2.0),
                 "log1p": (-1.0, 2.0), "softplus": (-40.0, 40.0), "log_sigmoid": (-40.0, 40.0)}
        lo, hi = dense[name]
        small = rng.uniform(-1.0, 1.0, 200_000) * np.ldexp(1.0, rng.integers(-60, 0, 200_000))
        sets = [sweep, rng.uniform(lo, hi, 600_000), small, specials(T)]
        if name == "log":
            sets.append(1.0 + small)
    x = np.concatenate(sets).astype(T)
    if name == "exp_nonpos":
        x = x[~(x > 0)]
    return x


def main():
    out = {"isa": _vmath.ISA, "max_ulp": {}, "worst_input": {}, "scalar_mismatch": {}}
    digest = hashlib.sha256()
    long_ok = np.finfo(np.longdouble).nmant >= 63
    for T, R in ((np.float32, np.float64), (np.float64, np.longdouble)):
        dt = np.dtype(T).name
        out["max_ulp"][dt], out["worst_input"][dt], out["scalar_mismatch"][dt] = {}, {}, {}
        if T == np.float64 and not long_ok:
            continue
        for name in FUNCTIONS:
            x = inputs(name, T)
            y = _vmath.apply(name, x)
            digest.update(y.tobytes())
            err = ulp_err(y, reference(name, x, R), T)
            i = int(np.argmax(err))
            out["max_ulp"][dt][name] = float(err[i])
            out["worst_input"][dt][name] = float(x[i]).hex()
            sample = x[:: max(1, x.size // 300)]
            batch = _vmath.apply(name, sample)
            alone = np.concatenate([_vmath.apply(name, sample[j:j + 1]) for j in range(sample.size)])
            out["scalar_mismatch"][dt][name] = int(np.sum(batch.view(np.uint8).reshape(sample.size, -1)
                                                          != alone.view(np.uint8).reshape(sample.size, -1)))
    out["digest"] = digest.hexdigest()
    json.dump(out, sys.stdout)


main()
'''


def _available(isa):
    return ISAS.index(isa) <= ISAS.index(_runtime.SIMD_SUPPORTED)


@pytest.fixture(scope="session")
def path_results(tmp_path_factory):
    """isa -> the check script's JSON, the paths run concurrently."""
    tmp = tmp_path_factory.mktemp("vmath")
    script = tmp / "check_vmath.py"
    script.write_text(CHECK_SCRIPT)
    procs = {}
    for isa in ISAS:
        if _available(isa):
            env = dict(os.environ, CLOSS_SIMD=isa)
            procs[isa] = subprocess.Popen([sys.executable, str(script)], cwd=tmp, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for isa, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"CLOSS_SIMD={isa}: check script failed:\n{stderr}"
        results[isa] = json.loads(stdout)
    return results


def _result(path_results, isa):
    if not _available(isa):
        pytest.skip(f"the CPU lacks {isa}")
    return path_results[isa]


@pytest.mark.parametrize("isa", ISAS)
def test_path_selected(path_results, isa):
    assert _result(path_results, isa)["isa"] == isa


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("isa", ISAS)
def test_max_ulp(path_results, isa, dtype, name):
    res = _result(path_results, isa)
    if name not in res["max_ulp"][dtype]:
        pytest.skip("np.longdouble is not 80-bit extended here: no float64 reference")
    err = res["max_ulp"][dtype][name]
    worst = res["worst_input"][dtype][name]
    assert err <= BOUNDS[dtype][name], f"{name} {dtype} [{isa}]: {err:.3f} ULP at x = {worst}"


@pytest.mark.parametrize("isa", ISAS)
def test_vectorised_matches_scalar(path_results, isa):
    res = _result(path_results, isa)
    bad = {dt: {n: c for n, c in per.items() if c} for dt, per in res["scalar_mismatch"].items()}
    assert not any(bad.values()), bad


def test_paths_bit_identical(path_results):
    digests = {isa: r["digest"] for isa, r in path_results.items()}
    assert len(set(digests.values())) == 1, digests


# ---------------------------------------------------------------------------
# In-process checks on the default path.
# ---------------------------------------------------------------------------

INF, NAN = np.inf, np.nan

EXACT = {
    "exp": [(0.0, 1.0), (-0.0, 1.0), (INF, INF), (-INF, 0.0), (NAN, NAN), (1e6, INF), (-1e6, 0.0)],
    "exp_nonpos": [(0.0, 1.0), (-0.0, 1.0), (-INF, 0.0), (NAN, NAN), (-1e6, 0.0)],
    "log": [(1.0, 0.0), (0.0, -INF), (-0.0, -INF), (INF, INF), (-INF, NAN), (-1.0, NAN),
            (-1e-30, NAN), (NAN, NAN), (2.0, np.log(2.0)), (0.5, -np.log(2.0))],
    "log1p": [(0.0, 0.0), (-1.0, -INF), (-1.5, NAN), (-INF, NAN), (INF, INF), (NAN, NAN),
              (1.0, np.log(2.0))],
    "softplus": [(0.0, np.log(2.0)), (INF, INF), (-INF, 0.0), (NAN, NAN), (1e6, 1e6), (-1e6, 0.0)],
    "log_sigmoid": [(0.0, -np.log(2.0)), (INF, 0.0), (-INF, -INF), (NAN, NAN), (-1e6, -1e6),
                    (1e6, 0.0)],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_special_values(name, dtype):
    x = np.array([a for a, _ in EXACT[name]], dtype=dtype)
    want = np.array([b for _, b in EXACT[name]], dtype=dtype)
    got = _vmath.apply(name, x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)  # NaN matches NaN, exact otherwise


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_signed_zero(dtype):
    z = np.array([0.0, -0.0], dtype=dtype)
    assert np.array_equal(np.signbit(_vmath.apply("log1p", z)), [False, True])


@pytest.mark.parametrize("dtype, big", [(np.float32, 17.0), (np.float64, 37.0)])
def test_softplus_saturates_exactly(dtype, big):
    fmax = float(np.finfo(dtype).max)
    x = np.concatenate([np.linspace(big, 1e4, 1000), np.geomspace(1e4, fmax / 16, 500), [fmax]])
    x = x.astype(dtype)
    np.testing.assert_array_equal(_vmath.apply("softplus", x), x)
    np.testing.assert_array_equal(_vmath.apply("log_sigmoid", -x), -x)
    # the other side decays like exp(-|x|) without overflow
    sp = _vmath.apply("softplus", -x)
    assert np.all(np.isfinite(sp)) and np.all(sp >= 0)
    np.testing.assert_array_equal(_vmath.apply("log_sigmoid", x), -sp)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_subnormal_results_exact_grid(dtype):
    # exp(x) across the subnormal output range is within the bound of the exact
    # value measured on the subnormal grid: never flushed to zero early.
    fi = np.finfo(dtype)
    lo = np.log(fi.smallest_subnormal.astype(np.float64))
    x = np.linspace(lo + 0.5, np.log(float(fi.tiny)), 20001).astype(dtype)
    y = _vmath.apply("exp", x)
    assert np.all(y > 0)
    assert np.all(y <= fi.tiny * 1.0001)


def _random_nonnegative(dtype, seed, n=200_000):
    """(unsigned type, n floats from random bits with the sign cleared: +0,
    subnormals, normals, inf and NaN)."""
    utype = np.uint32 if dtype == np.float32 else np.uint64
    bits = np.random.default_rng(seed).integers(0, np.iinfo(utype).max, n, dtype=utype)
    return utype, (bits >> utype(1)).view(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_nonneg_is_log_on_its_domain(dtype):
    # vlog_nonneg (GaussianNLL's log of the variance) drops vlog's special cases
    # for x < 0, +inf and NaN only: on finite x >= 0 it must give vlog's bits.
    utype, x = _random_nonnegative(dtype, 7)
    x = x[np.isfinite(x)]
    fi = np.finfo(dtype)
    x = np.concatenate([x, np.array([0.0, fi.smallest_subnormal, fi.tiny, 0.5, 1.0, fi.max],
                                    dtype), np.linspace(0, 1, 10001, dtype=dtype)])
    np.testing.assert_array_equal(_vmath.apply("log_nonneg", x).view(utype),
                                  _vmath.apply("log", x).view(utype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_normal_and_log_sum_are_log_on_their_domains(dtype):
    # vlog_nonneg<T, false> ("log_normal": the core of vlog_sum) also drops the
    # subnormal pre-scaling: on 0 and finite normal x it must give vlog's bits.
    # vlog_sum (the log of a log-sum-exp's sum, CTC and cross-entropy): on
    # x >= 1, 0 and NaN.
    utype, x = _random_nonnegative(dtype, 8)
    fi = np.finfo(dtype)
    normal = np.concatenate([x[np.isfinite(x) & (x >= fi.tiny)],
                             np.array([0.0, fi.tiny, fi.eps / 2, 0.5, 1.0, fi.max], dtype),
                             1 - np.linspace(0, 1, 10001, dtype=dtype)])
    np.testing.assert_array_equal(_vmath.apply("log_normal", normal).view(utype),
                                  _vmath.apply("log", normal).view(utype))
    sums = np.concatenate([normal[normal >= 1], np.linspace(1, 3, 10001, dtype=dtype),
                           np.array([0.0, np.nan], dtype)])
    np.testing.assert_array_equal(_vmath.apply("log_sum", sums).view(utype),
                                  _vmath.apply("log", sums).view(utype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_positive_is_log_above_zero(dtype):
    # vlog_positive (KL's y log y; without the pre-scaling, float64 BCE's
    # clamped logs) has no special case: on finite x > 0 it gives vlog's bits
    # (without the pre-scaling, on normal x only), and at 0 a finite number
    # below log(tiny) (SUBNORMAL: below the log of the smallest subnormal),
    # which a log clamped at -100 takes alike.
    utype, x = _random_nonnegative(dtype, 9)
    fi = np.finfo(dtype)
    x = np.concatenate([x[np.isfinite(x) & (x > 0)],
                        np.array([fi.smallest_subnormal, fi.tiny, 0.5, 1.0, fi.max], dtype),
                        np.linspace(0, 1, 10001, dtype=dtype)[1:]])
    np.testing.assert_array_equal(_vmath.apply("log_positive", x).view(utype),
                                  _vmath.apply("log", x).view(utype))
    normal = x[x >= fi.tiny]
    np.testing.assert_array_equal(_vmath.apply("log_positive_normal", normal).view(utype),
                                  _vmath.apply("log", normal).view(utype))
    zero = np.zeros(1, dtype)
    least = np.log(fi.smallest_subnormal.astype(np.float64))
    assert np.isfinite(_vmath.apply("log_positive", zero)[0])
    assert _vmath.apply("log_positive", zero)[0] < least
    assert -1e4 < _vmath.apply("log_positive_normal", zero)[0] < np.log(float(fi.tiny))
    # a subnormal without the pre-scaling: below log(tiny) + 1 (float64: below -708,
    # so under BCE's clamp; float32's BCE pre-scales, through vlog_unit)
    sub = np.array([fi.smallest_subnormal, fi.tiny / 2, fi.tiny * (1 - fi.eps)], dtype)
    assert np.all(_vmath.apply("log_positive_normal", sub) < np.log(float(fi.tiny)) + 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_unit_is_log_on_the_unit_interval(dtype):
    # vlog_unit (float32 BCE's logs of x and 1 - x) pre-scales every x in
    # [0, 1]: vlog's bits on (0, 1], subnormals included, and at 0 a finite
    # number below the smallest subnormal's log (under BCE's clamp at -100).
    utype = np.uint32 if dtype == np.float32 else np.uint64
    fi = np.finfo(dtype)
    one = np.array(1.0, dtype).view(utype)
    bits = np.random.default_rng(10).integers(1, int(one) + 1, 200_000, dtype=utype)
    x = np.concatenate([bits.view(dtype), np.linspace(0, 1, 10001, dtype=dtype)[1:],
                        np.array([fi.smallest_subnormal, fi.tiny, 1 - fi.epsneg, 1.0], dtype)])
    assert x.min() > 0 and x.max() <= 1
    np.testing.assert_array_equal(_vmath.apply("log_unit", x).view(utype),
                                  _vmath.apply("log", x).view(utype))
    zero = _vmath.apply("log_unit", np.zeros(1, dtype))[0]
    assert np.isfinite(zero) and zero < np.log(fi.smallest_subnormal.astype(np.float64))


def test_apply_shapes_and_layouts():
    x = np.linspace(-5, 5, 24).reshape(2, 3, 4)
    y = _vmath.apply("exp", x)
    assert y.shape == x.shape and y.dtype == np.float64 and y.flags.c_contiguous
    np.testing.assert_allclose(y, np.exp(x), rtol=3e-16)
    xt = x.transpose(2, 0, 1)  # not C-contiguous: copied first
    np.testing.assert_array_equal(_vmath.apply("exp", xt), _vmath.apply("exp", xt.copy()))
    assert _vmath.apply("log", np.zeros(0, np.float32)).shape == (0,)


def test_apply_errors():
    with pytest.raises(ValueError, match="unknown function"):
        _vmath.apply("sin", np.ones(3))
    with pytest.raises(TypeError, match="float32 or float64"):
        _vmath.apply("exp", np.ones(3, np.int64))


def test_header_documents_the_bounds():
    header = Path(__file__).resolve().parents[1] / "csrc" / "closs_vmath.hpp"
    if not header.exists():
        pytest.skip("csrc/ not next to the tests")
    rows = dict(re.findall(r"^//\s+(\w+)\s+(\d\.\d+\s+\d\.\d+)", header.read_text(), re.M))
    for name in FUNCTIONS:
        f32, f64 = map(float, rows["v" + name if "v" + name in rows else name].split())
        assert (f32, f64) == (BOUNDS["float32"][name], BOUNDS["float64"][name]), name
