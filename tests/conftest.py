"""Shared helpers for the closs test suite.

* ``torch`` fixture: the reference implementation, or a skip when torch is not
  importable (only the parity tests need it; goldens, worked examples, finite
  differences and properties run without it).
* ``CASES``: every regression loss with the option sets the suite exercises,
  and ``make_args`` which draws inputs for a case (optionally away from kinks).
* ``assert_close``: dtype-aware tolerances (float64 rtol 1e-12, float32 rtol
  1e-5; the absolute tolerance scales with the magnitude of the expected values).
* ``torch_value_and_grads``: torch's value and autograd gradients for a call.
* ``closs_routes``: the same call through every closs route (class forward +
  backward, class value_and_grad, functional with/without return_grad).
"""
import dataclasses
import os
import sys
import warnings
import zlib

import numpy as np
import pytest

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "closs",
        max_examples=50,
        deadline=None,
        database=None,  # do not write a .hypothesis directory into the repo
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(  # a longer search: CLOSS_HYPOTHESIS_PROFILE=closs-long
        "closs-long",
        parent=settings.get_profile("closs"),
        max_examples=1000,
    )
    settings.load_profile(os.environ.get("CLOSS_HYPOTHESIS_PROFILE", "closs"))
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass

import closs
import closs.functional as CF

PYTHON = sys.executable
OUTSIDE_REPO = os.path.dirname(os.path.abspath(os.sep))  # the filesystem root
FLOATS = (np.float32, np.float64)
REDUCTIONS = ("none", "mean", "sum")


# ---------------------------------------------------------------------------------
# torch (optional)
# ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def torch():
    """The torch module; tests using it are skipped when it is not importable."""
    try:  # a missing or broken torch install skips the parity tests
        return pytest.importorskip("torch", exc_type=ImportError)
    except TypeError:  # pytest < 8.2 has no exc_type
        return pytest.importorskip("torch")


# ---------------------------------------------------------------------------------
# tolerances
# ---------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _torch_single_threaded():
    """torch's reference calls are on tiny tensors: with one torch thread they
    do not stall in OpenMP barriers when the machine is busy (observed: ~4x
    slower modules on a loaded 2-core machine); restored afterwards."""
    try:
        import torch
    except ImportError:  # pragma: no cover - the torch tests are skipped then
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def rtol_for(dtype):
    return RTOL[np.dtype(dtype)]


def _finite_max_abs(a):
    a = np.asarray(a, dtype=np.float64)
    f = np.abs(a[np.isfinite(a)])
    return float(f.max()) if f.size else 0.0


def assert_close(actual, expected, dtype=None, *, scale=None, rtol=None, atol=None,
                 check_dtype=True, err_msg=""):
    """allclose with NaN positions and infinities required to match.

    rtol defaults to 1e-12 (float64) / 1e-5 (float32).  atol defaults to
    rtol * scale, where scale (default: the largest finite |expected|, at least
    1e-2) is the magnitude the compared numbers were computed from, so entries
    near 0 (cancellation) are compared on that scale.  A float64 atol is at
    least 1e-14, a float32 one at least 1e-7.
    """
    actual_arr = np.asarray(actual)
    expected_arr = np.asarray(expected)
    if dtype is None:
        dtype = expected_arr.dtype if expected_arr.dtype.kind == "f" else np.float64
    dtype = np.dtype(dtype)
    if check_dtype:
        assert actual_arr.dtype == dtype, f"dtype {actual_arr.dtype} != {dtype} {err_msg}"
    assert actual_arr.shape == expected_arr.shape, (
        f"shape {actual_arr.shape} != {expected_arr.shape} {err_msg}")
    if rtol is None:
        rtol = rtol_for(dtype)
    if atol is None:
        if scale is None:
            scale = _finite_max_abs(expected_arr)
        floor = 1e-14 if dtype == np.float64 else 1e-7
        atol = max(floor, rtol * max(scale, 1e-2))
    np.testing.assert_allclose(
        actual_arr.astype(np.float64), expected_arr.astype(np.float64), rtol=rtol, atol=atol,
        equal_nan=True, err_msg=err_msg)


def assert_identical(a, b, err_msg=""):
    """Bit-for-bit equality of values / arrays, NaN positions included."""
    a = np.asarray(a)
    b = np.asarray(b)
    assert a.dtype == b.dtype, f"{a.dtype} != {b.dtype} {err_msg}"
    assert a.shape == b.shape, f"{a.shape} != {b.shape} {err_msg}"
    # identical values, NaN positions and signed zeros (NaN sign / payload are
    # not values: IEEE 754 leaves them unspecified)
    same = np.array_equal(a, b, equal_nan=True)
    if same and a.dtype.kind == "f":
        num = ~np.isnan(a)
        same = np.array_equal(np.signbit(a[num]), np.signbit(b[num]))
    assert same, f"not identical {err_msg}:\n{a!r}\n{b!r}"


# ---------------------------------------------------------------------------------
# the regression losses and their option sets
# ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LossCase:
    """One loss with one set of options (constructor == functional keywords)."""

    cls: str                 # closs / torch.nn class name
    func: str                # closs.functional / torch.nn.functional name
    opts: tuple = ()         # (name, value) pairs
    nargs: int = 2           # forward arguments (3: GaussianNLL's var)
    legacy: bool = True      # accepts size_average / reduce

    @property
    def kwargs(self):
        return dict(self.opts)

    @property
    def id(self):
        return self.func + "".join(f"-{k}={v}" for k, v in self.opts)

    @property
    def closs_cls(self):
        return getattr(closs, self.cls)

    @property
    def closs_func(self):
        return getattr(CF, self.func)

    @property
    def threshold(self):
        """Where the loss has a kink in input - target (None if nowhere but 0)."""
        kw = self.kwargs
        if self.func == "smooth_l1_loss":
            return kw.get("beta", 1.0)
        if self.func == "huber_loss":
            return kw.get("delta", 1.0)
        return None

    @property
    def warns_on_broadcast(self):
        return self.func in ("l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss")


def _case(cls, func, nargs=2, legacy=True, **opts):
    return LossCase(cls, func, tuple(opts.items()), nargs, legacy)


CASES = [
    _case("L1Loss", "l1_loss"),
    _case("MSELoss", "mse_loss"),
    _case("SmoothL1Loss", "smooth_l1_loss", beta=1.0),
    _case("SmoothL1Loss", "smooth_l1_loss", beta=0.0),
    _case("SmoothL1Loss", "smooth_l1_loss", beta=0.5),
    _case("SmoothL1Loss", "smooth_l1_loss", beta=2.5),
    _case("HuberLoss", "huber_loss", legacy=False, delta=1.0),
    _case("HuberLoss", "huber_loss", legacy=False, delta=0.5),
    _case("HuberLoss", "huber_loss", legacy=False, delta=2.5),
    _case("PoissonNLLLoss", "poisson_nll_loss", log_input=True, full=False),
    _case("PoissonNLLLoss", "poisson_nll_loss", log_input=True, full=True),
    _case("PoissonNLLLoss", "poisson_nll_loss", log_input=False, full=False, eps=1e-8),
    _case("PoissonNLLLoss", "poisson_nll_loss", log_input=False, full=True, eps=1e-8),
    _case("PoissonNLLLoss", "poisson_nll_loss", log_input=False, full=False, eps=0.5),
    _case("GaussianNLLLoss", "gaussian_nll_loss", 3, False, full=False, eps=1e-6),
    _case("GaussianNLLLoss", "gaussian_nll_loss", 3, False, full=True, eps=1e-6),
    _case("GaussianNLLLoss", "gaussian_nll_loss", 3, False, full=False, eps=0.3),
    _case("GaussianNLLLoss", "gaussian_nll_loss", 3, False, full=True, eps=0.3),
]
CASE_IDS = [c.id for c in CASES]

# one option set per loss class (for tests where options do not matter)
BASIC_CASES = [CASES[0], CASES[1], CASES[2], CASES[6], CASES[9], CASES[14]]
BASIC_IDS = [c.id for c in BASIC_CASES]


def _away_from(rng, low, high, size, kinks, margin):
    """Uniform draws in [low, high) that keep `margin` away from every kink."""
    v = rng.uniform(low, high, size)
    for _ in range(100):
        bad = np.zeros(np.shape(v), bool)
        for k in kinks:
            bad |= np.abs(v - k) < margin
        if not bad.any():
            return v
        v = np.where(bad, rng.uniform(low, high, size), v)
    raise AssertionError("could not draw values away from the kinks")


def make_args(case, rng, shape, dtype=np.float64, *, smooth=False, var_shape=None,
              target_shape=None):
    """Forward arguments for `case`, as arrays of `dtype`.

    smooth=True keeps every element away from the loss's kinks (for finite
    differences): |input - target| away from 0 and from beta / delta,
    GaussianNLL's var above its eps clamp.  Otherwise values may sit anywhere,
    e.g. var below eps (where torch's var gradient is not masked).
    """
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    tshape = shape if target_shape is None else tuple(target_shape)
    kw = case.kwargs
    m = 0.1
    if case.func in ("l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"):
        x = rng.uniform(-3, 3, shape)
        kinks = [0.0] + ([case.threshold] if case.threshold else [])
        if smooth:
            mag = _away_from(rng, 0.0, 3.5, np.broadcast_shapes(shape, tshape), kinks, m)
        else:
            mag = rng.uniform(0.0, 3.5, np.broadcast_shapes(shape, tshape))
        sgn = np.where(rng.random(mag.shape) < 0.5, -1.0, 1.0)
        if tshape == shape:
            y = x + sgn * mag
        else:  # broadcast target: independent values
            y = rng.uniform(-3, 3, tshape)
            if smooth:
                # keep every broadcast difference away from the kinks
                for _ in range(1000):
                    d = np.abs(np.broadcast_to(x, np.broadcast_shapes(shape, tshape))
                               - np.broadcast_to(y, np.broadcast_shapes(shape, tshape)))
                    if all(np.all(np.abs(d - k) >= m) for k in kinks):
                        break
                    y = rng.uniform(-3, 3, tshape)
                else:
                    raise AssertionError("no kink-free broadcast target")
        return [x.astype(dtype), y.astype(dtype)]
    if case.func == "poisson_nll_loss":
        if kw.get("log_input", True):
            x = rng.uniform(-2, 2, shape)
        else:
            x = rng.uniform(0.3, 5, shape)
        y = rng.uniform(0, 5, tshape)
        # some whole counts, including 0 and 1 (the Stirling boundary)
        y = np.where(rng.random(tshape) < 0.3, np.floor(y), y)
        return [x.astype(dtype), y.astype(dtype)]
    if case.func == "gaussian_nll_loss":
        eps = kw.get("eps", 1e-6)
        x = rng.uniform(-2, 2, shape)
        y = rng.uniform(-2, 2, tshape)
        vshape = shape if var_shape is None else tuple(var_shape)
        if smooth:
            var = _away_from(rng, eps + 0.1, eps + 2.0, vshape, [], m)
        else:
            var = rng.uniform(0.01, 2.0, vshape)
        return [x.astype(dtype), y.astype(dtype), var.astype(dtype)]
    raise AssertionError(case)


# ---------------------------------------------------------------------------------
# torch reference
# ---------------------------------------------------------------------------------


def torch_value_and_grads(case, args, reduction="mean", grad_output=None, *, kwargs=None,
                          diff=None, legacy=None):
    """torch's value and autograd gradients for `case` on numpy `args`.

    Returns (value as numpy, list of gradients as numpy, one per index in
    `diff`; default: input, and var for GaussianNLL).  A Python float var is
    turned into a full tensor of input's shape whose gradient is summed, which
    is d value / d var for the scalar.  grad_output: None (ones) or the
    upstream gradient (scalar or array of the loss's shape).  legacy: a dict of
    size_average / reduce passed along (they override reduction).
    """
    import torch

    kw = dict(case.kwargs if kwargs is None else kwargs)
    kw["reduction"] = reduction
    if legacy is not None:
        kw.update(legacy)
    if diff is None:
        diff = (0, 2) if case.nargs == 3 else (0,)
    tensors = []
    scalar_var = False
    for i, a in enumerate(args):
        if case.nargs == 3 and i == 2 and isinstance(a, float):
            scalar_var = True
            t = torch.full(np.shape(args[0]), a, dtype=torch.from_numpy(
                np.asarray(args[0])).dtype)
        else:
            t = torch.from_numpy(np.array(a, copy=True))
        if i in diff and t.dtype.is_floating_point:
            t.requires_grad_(True)
        tensors.append(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = getattr(torch.nn.functional, case.func)(*tensors, **kw)
    if grad_output is None:
        go = torch.ones_like(out)
    else:
        go = torch.as_tensor(np.asarray(grad_output), dtype=out.dtype).reshape(out.shape)
    out.backward(go)
    grads = []
    for i in diff:
        t = tensors[i]
        g = torch.zeros_like(t) if t.grad is None else t.grad
        g = g.detach().numpy()
        if scalar_var and i == 2:
            g = np.sum(g, dtype=np.float64)
        grads.append(g)
    return out.detach().numpy(), grads


# ---------------------------------------------------------------------------------
# closs through every route
# ---------------------------------------------------------------------------------


def as_tuple(grad):
    return grad if isinstance(grad, tuple) else (grad,)


def closs_routes(case, args, reduction="mean", grad_output=None, *, kwargs=None):
    """{route: (value, grads tuple)} for the class and functional routes."""
    kw = dict(case.kwargs if kwargs is None else kwargs)
    out = {}
    crit = case.closs_cls(reduction=reduction, **kw)
    v = crit(*args)
    g = crit.backward(grad_output) if grad_output is not None else crit.backward()
    out["forward+backward"] = (v, as_tuple(g))
    crit2 = case.closs_cls(reduction=reduction, **kw)
    v2 = crit2.forward(*args)
    out["forward(default grad)"] = (v2, None)
    crit3 = case.closs_cls(reduction=reduction, **kw)
    v3, g3 = crit3.value_and_grad(*args, grad_output=grad_output)
    out["value_and_grad"] = (v3, as_tuple(g3))
    fv = case.closs_func(*args, reduction=reduction, **kw)
    out["functional"] = (fv, None)
    fv2, fg2 = case.closs_func(*args, reduction=reduction, return_grad=True,
                               grad_output=grad_output, **kw)
    out["functional(return_grad)"] = (fv2, as_tuple(fg2))
    return out


def random_grad_output(rng, reduction, shape, dtype):
    """A non-trivial upstream gradient for `reduction`."""
    if reduction == "none":
        return rng.uniform(-2, 2, shape).astype(dtype)
    return float(rng.uniform(0.25, 2.0))


def value_scale(case, args, reduction, dtype):
    """The magnitude a reduced value is computed from (sum or mean of |loss|),
    from closs's own unreduced float64 values: the absolute tolerance of a
    value that may cancel to ~0."""
    a64 = [np.asarray(a, np.float64) if not isinstance(a, float) else a for a in args]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        none = case.closs_func(*a64, reduction="none", **case.kwargs)
    mag = np.abs(none[np.isfinite(none)])
    if reduction == "sum":
        return float(mag.sum()) if mag.size else 0.0
    if reduction == "mean":
        return float(mag.mean()) if mag.size else 0.0
    return _finite_max_abs(none)


def rng_for(*key):
    """A generator seeded from the test's parameters (stable across runs)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def run_python(code, env_update=None, timeout=120):
    """Run `code` in a fresh interpreter; returns the CompletedProcess."""
    import subprocess

    env = dict(os.environ)
    for k, v in (env_update or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    # cwd outside the repository: `python -c` puts the cwd first on sys.path, and the
    # source tree's closs/ (without compiled kernels) would shadow the installed one
    return subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=OUTSIDE_REPO)


def run_every_isa(tmp, script):
    """Runs `script`, which saves its results to the .npz file named OUT, in a
    fresh interpreter per instruction-set path (CLOSS_SIMD) and once with the
    default; returns {"default" | isa: {key: array}}."""
    runs = {}
    for isa in ("default", "portable", "avx2", "avx512"):
        path = tmp / f"{isa}.npz"
        r = run_python(f"OUT = {str(path)!r}\n" + script,
                       {"CLOSS_SIMD": None if isa == "default" else isa})
        assert r.returncode == 0, r.stderr
        with np.load(path) as data:
            runs[isa] = {k: data[k] for k in data.files}
    return runs


@pytest.fixture
def restore_threads():
    """Restore closs's thread count after a test that changes it."""
    n = closs.get_num_threads()
    yield
    closs.set_num_threads(n)
