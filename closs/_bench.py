"""Benchmark machinery behind ``closs bench`` and the pytest-benchmark suites in bench/.

Design:

1. ``LOSSES`` describes each loss once: how to make its data, its sizes at the
   presets tiny / medium / large (``PRESETS``, ``LossSpec.sizes``), the closs
   class, a vectorised NumPy implementation of value and gradient (the
   baseline a careful NumPy user would write), the torch / JAX (/ scikit-learn,
   MONAI) expressions, and its exp/log count per element (``LossSpec.exps``).
2. ``make_impls`` turns a (loss, data, mode) into zero-argument callables, one
   per implementation, each called exactly as a user calls it:
   closs ``loss(x, y)`` / ``loss.value_and_grad(x, y)``; torch (and MONAI's
   loss modules) on ``torch.from_numpy`` views, with the ``requires_grad_()``
   leaf created inside the timed call for "value+grad"; JAX through
   ``jax.jit`` (compiled during warm-up, which is not timed) on arrays already
   on the device, waiting with ``block_until_ready``; NumPy as written below.
3. ``check`` compares every peer's value and gradient with closs's before
   anything is timed (rtol 1e-4 for float32, 1e-9 for float64; gradients
   norm-wise: max |peer - closs| <= rtol * max |closs|).
4. ``time_case`` calibrates a batch size per implementation (enough calls for a
   batch of a millisecond or two, one call at large sizes), then runs rounds
   that time one batch of every implementation, in rotating order, so drift
   hits them all alike.  Before each timed batch ``settle`` pauses briefly at
   large sizes and runs the implementation untimed for a few milliseconds, so
   the previous runtime's spinning OpenMP/Eigen workers have gone quiet (see
   the comment at PAUSE).  Per implementation it reports the median time per
   call, the quartiles, min and max.
5. ``run`` loops over the cases (loss, dtype, size, thread count, mode; the
   thread count is set for closs and torch alike, and every thread of the
   process is pinned to that many cores, since JAX's pool cannot be resized
   after import), prints progress (tqdm when
   installed) and returns plain dicts; ``format_table`` renders them as text or
   Markdown, ``plot`` as throughput against size (matplotlib, imported lazily).
6. ``measure_machine`` times this machine's read and read+write bandwidth and
   closs's vexp rate (closs/_kernels/_roofline.pyx, csrc/closs_roofline.hpp);
   ``roofline_rows`` turns each result's bytes and exps into a lower bound on
   its time and closs's distance from it (``closs bench --roofline``).
"""
from __future__ import annotations

import dataclasses
import gc
import importlib
import math
import os
import platform
import sys
import time
from typing import Callable

import numpy as np

import closs

IMPLS = ("closs", "numpy", "torch", "jax", "sklearn", "monai")
PEERS = ("torch", "jax", "sklearn", "monai")  # reported by `closs info`
MODES = ("value", "value+grad")
RTOL = {"float32": 1e-4, "float64": 1e-9}
BUSY = 0.05  # other processes above this share of the CPUs make a timing suspect


# ----------------------------------------------------------------------------------
# Losses: data, closs, NumPy, torch, JAX
# ----------------------------------------------------------------------------------

BETA = 1.0  # SmoothL1Loss default
DELTA = 1.0  # HuberLoss default
GAUSS_EPS = 1e-6  # GaussianNLLLoss default


def _regression_data(rng, n, dtype):
    return (rng.standard_normal(n, dtype=dtype), rng.standard_normal(n, dtype=dtype))


def _poisson_data(rng, n, dtype):
    log_rate = (0.5 * rng.standard_normal(n)).astype(dtype)
    counts = rng.poisson(np.exp(log_rate)).astype(dtype)
    return (log_rate, counts)


def _gaussian_data(rng, n, dtype):
    x, y = _regression_data(rng, n, dtype)
    var = rng.uniform(0.5, 2.0, n).astype(dtype)
    return (x, y, var)


# NumPy: vectorised, few temporaries, in-place where a temporary is ours.

def _np_l1(x, y):
    d = x - y
    np.abs(d, out=d)
    return d.mean()


def _np_l1_vg(x, y):
    d = x - y
    value = np.abs(d).mean()
    g = np.sign(d)  # not out=d: numpy 2.4's in-place float sign is ~10x slower
    g *= 1.0 / d.size
    return value, g


def _np_mse(x, y):
    d = x - y
    np.square(d, out=d)
    return d.mean()


def _np_mse_vg(x, y):
    d = x - y
    value = np.square(d).mean()
    d *= 2.0 / d.size
    return value, d


def _np_piecewise_quadratic(ad, t):
    """c (|d| - c/2) with c = min(|d|, t): 0.5 d**2 below t, t (|d| - t/2) above."""
    c = np.minimum(ad, t)
    ad -= 0.5 * c
    ad *= c
    return ad.mean()


def _np_smooth_l1(x, y, beta=BETA):
    return _np_piecewise_quadratic(np.abs(x - y), beta) / beta


def _np_smooth_l1_vg(x, y, beta=BETA):
    d = x - y
    value = _np_piecewise_quadratic(np.abs(d), beta) / beta
    g = np.clip(d, -beta, beta, out=d)
    g *= 1.0 / (beta * d.size)
    return value, g


def _np_huber(x, y, delta=DELTA):
    return _np_piecewise_quadratic(np.abs(x - y), delta)


def _np_huber_vg(x, y, delta=DELTA):
    d = x - y
    value = _np_piecewise_quadratic(np.abs(d), delta)
    g = np.clip(d, -delta, delta, out=d)
    g *= 1.0 / d.size
    return value, g


def _np_poisson(x, y):
    e = np.exp(x)
    e -= y * x
    return e.mean()


def _np_poisson_vg(x, y):
    e = np.exp(x)
    value = (e - y * x).mean()
    e -= y
    e *= 1.0 / e.size
    return value, e


def _np_gaussian(x, y, var, eps=GAUSS_EPS):
    v = np.maximum(var, eps)
    t = x - y
    np.square(t, out=t)
    t /= v
    t += np.log(v)
    return 0.5 * t.mean()


def _np_gaussian_vg(x, y, var, eps=GAUSS_EPS):
    v = np.maximum(var, eps)
    d = x - y
    r = d / v  # d / v
    t = r * d  # d**2 / v
    t += np.log(v)
    value = 0.5 * t.mean()
    gv = np.reciprocal(v, out=v)  # 1/v - (d/v)**2, as torch (unmasked at the clamp)
    gv -= np.square(r, out=t)
    gv *= 0.5 / d.size
    r *= 1.0 / d.size
    return value, (r, gv)


# torch (F = torch.nn.functional) and JAX (jnp, lax = jax.numpy, jax.lax)

def _jax_smooth_l1(jnp, lax, x, y):
    ad = jnp.abs(x - y)
    return jnp.mean(jnp.where(ad < BETA, 0.5 * ad * ad / BETA, ad - 0.5 * BETA))


def _jax_huber(jnp, lax, x, y):
    ad = jnp.abs(x - y)
    return jnp.mean(jnp.where(ad < DELTA, 0.5 * ad * ad, DELTA * (ad - 0.5 * DELTA)))


def _jax_gaussian(jnp, lax, x, y, var):
    # torch clamps var under no_grad: the value sees max(var, eps), the gradient is not masked
    v = var + lax.stop_gradient(jnp.maximum(var, GAUSS_EPS) - var)
    return jnp.mean(0.5 * (jnp.log(v) + (x - y) ** 2 / v))


# Sizes.  Each loss runs at three presets, tiny / medium / large, given per loss
# as the element count n its make_data turns into a shape: 100 / 1e5 / 1e7 for
# pointwise losses, the row-wise equivalents (rows x columns) otherwise.
PRESETS = ("tiny", "medium", "large")
POINTWISE_SIZES = (100, 100_000, 10_000_000)


def _rows(cols, rows=(8, 10_000, 1_000_000)):
    """The presets of a (rows, cols) input: 8 x cols, 10000 x cols, 1e6 x cols by default."""
    return tuple(r * cols for r in rows)


def resolve_size(spec, size):
    """make_data's n for a preset name ("tiny", "medium", "large") or an element count."""
    return spec.sizes[PRESETS.index(size)] if isinstance(size, str) else int(size)


@dataclasses.dataclass(frozen=True)
class LossSpec:
    key: str  # command-line name
    name: str  # class name (closs and torch.nn)
    make_data: Callable  # (rng, n, dtype) -> tuple of arrays
    grad_args: tuple  # indices of the differentiable arguments
    numpy_value: Callable
    numpy_value_and_grad: Callable
    torch_fn: Callable  # (F, *tensors) -> loss tensor
    jax_fn: Callable  # (jnp, lax, *arrays) -> scalar, or None: no JAX peer
    sklearn_fn: Callable = None  # (grad_mode, *arrays) -> (value, grad), scikit-learn's Cython loss
    monai_fn: Callable = None  # (monai) -> MONAI's loss module, called on torch tensors
    title: str = None  # the row's name in tables (default: name)
    options: tuple = ()  # (name, value) pairs for the closs class
    sizes: tuple = POINTWISE_SIZES  # make_data's n at the presets tiny, medium, large
    # exp/log evaluations per element of the first input (value, value+grad): the
    # roofline's compute bound (--roofline), e.g. CrossEntropy 1 exp per logit + 1 log per row
    exps: tuple = (0.0, 0.0)

    @property
    def label(self):
        return self.title or self.name

    def closs_module(self):
        return getattr(closs, self.name)(**dict(self.options))


LOSSES = {
    s.key: s
    for s in [
        LossSpec("l1", "L1Loss", _regression_data, (0,), _np_l1, _np_l1_vg,
                 lambda F, x, y: F.l1_loss(x, y),
                 lambda jnp, lax, x, y: jnp.mean(jnp.abs(x - y))),
        LossSpec("mse", "MSELoss", _regression_data, (0,), _np_mse, _np_mse_vg,
                 lambda F, x, y: F.mse_loss(x, y),
                 lambda jnp, lax, x, y: jnp.mean(jnp.square(x - y))),
        LossSpec("smooth_l1", "SmoothL1Loss", _regression_data, (0,), _np_smooth_l1,
                 _np_smooth_l1_vg, lambda F, x, y: F.smooth_l1_loss(x, y, beta=BETA),
                 _jax_smooth_l1),
        LossSpec("huber", "HuberLoss", _regression_data, (0,), _np_huber, _np_huber_vg,
                 lambda F, x, y: F.huber_loss(x, y, delta=DELTA), _jax_huber),
        LossSpec("poisson_nll", "PoissonNLLLoss", _poisson_data, (0,), _np_poisson,
                 _np_poisson_vg, lambda F, x, y: F.poisson_nll_loss(x, y),
                 lambda jnp, lax, x, y: jnp.mean(jnp.exp(x) - y * x),
                 exps=(1, 1)),
        LossSpec("gaussian_nll", "GaussianNLLLoss", _gaussian_data, (0, 2), _np_gaussian,
                 _np_gaussian_vg, lambda F, x, y, v: F.gaussian_nll_loss(x, y, v, eps=GAUSS_EPS),
                 _jax_gaussian,
                 exps=(1, 1)),
    ]
}


# Classification: logits (n / C, C) with class indices; binary losses on n logits.

def _logits_data(classes):
    def make(rng, n, dtype):
        rows = max(1, n // classes)
        return (rng.standard_normal((rows, classes), dtype=dtype),
                rng.integers(0, classes, rows))
    return make


def _binary_data(rng, n, dtype):
    return (rng.standard_normal(n, dtype=dtype), rng.uniform(0, 1, n).astype(dtype))


def _np_ce(x, t):
    z = x - x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return np.mean(lse - z[np.arange(len(t)), t])


def _np_ce_vg(x, t):
    z = x - x.max(axis=1, keepdims=True)
    rows = np.arange(len(t))
    z_t = z[rows, t]
    p = np.exp(z, out=z)
    s = p.sum(axis=1, keepdims=True)
    value = np.mean(np.log(s[:, 0]) - z_t)
    p /= s
    p[rows, t] -= 1
    p /= len(t)
    return value, p


def _np_bce_logits(x, y):
    return np.mean((1 - y) * x + np.logaddexp(0, -x))


def _np_bce_logits_vg(x, y):
    sig = 1 / (1 + np.exp(-x))
    value = np.mean((1 - y) * x + np.logaddexp(0, -x))
    sig -= y
    sig /= x.size
    return value, sig


def _jax_ce(jnp, lax, x, t):
    import jax
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(x, axis=1), t[:, None], axis=1))


def _jax_bce_logits(jnp, lax, x, y):
    import jax
    return jnp.mean((1 - y) * x - jax.nn.log_sigmoid(x))


def _sklearn_ce(grad_mode, x, t):
    from sklearn._loss.loss import HalfMultinomialLoss
    loss = HalfMultinomialLoss(n_classes=x.shape[1])
    kw = dict(y_true=t.astype(x.dtype), raw_prediction=x, n_threads=closs.get_num_threads())
    if not grad_mode:
        return loss.loss(**kw).mean(), None
    value, grad = loss.loss_gradient(**kw)
    return value.mean(), grad  # its gradient is per sample: divided by N in the check


for _spec in [
    LossSpec("cross_entropy", "CrossEntropyLoss", _logits_data(10), (0,), _np_ce, _np_ce_vg,
             lambda F, x, t: F.cross_entropy(x, t), _jax_ce, sklearn_fn=_sklearn_ce,
             title="CrossEntropyLoss (N, 10)",
             sizes=_rows(10), exps=(1.1, 1.1)),
    LossSpec("cross_entropy_1000", "CrossEntropyLoss", _logits_data(1000), (0,), _np_ce,
             _np_ce_vg, lambda F, x, t: F.cross_entropy(x, t), _jax_ce,
             sklearn_fn=_sklearn_ce, title="CrossEntropyLoss (N, 1000)",
             sizes=_rows(1000, (8, 100, 16_384)), exps=(1.001, 1.001)),
    LossSpec("bce_with_logits", "BCEWithLogitsLoss", _binary_data, (0,), _np_bce_logits,
             _np_bce_logits_vg, lambda F, x, y: F.binary_cross_entropy_with_logits(x, y),
             _jax_bce_logits,
             exps=(2, 2)),
]:
    LOSSES[_spec.key] = _spec

def _log_probs_data(classes):
    def make(rng, n, dtype):
        x, t = _logits_data(classes)(rng, n, dtype)
        x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
        return x, t
    return make


def _probs_data(rng, n, dtype):
    return (rng.uniform(0.01, 0.99, n).astype(dtype), rng.uniform(0, 1, n).astype(dtype))


def _kl_data(rng, n, dtype):
    x, _ = _log_probs_data(10)(rng, n, dtype)
    y = np.exp(_log_probs_data(10)(rng, n, dtype)[0])
    return x, y


def _multilabel_data(rng, n, dtype):
    x, _ = _logits_data(10)(rng, n, dtype)
    return x, (rng.uniform(0, 1, x.shape) < 0.3).astype(dtype)


def _np_nll(x, t):
    return -np.mean(x[np.arange(len(t)), t])


def _np_nll_vg(x, t):
    g = np.zeros_like(x)
    g[np.arange(len(t)), t] = -1.0 / len(t)
    return _np_nll(x, t), g


def _np_bce(x, y):
    return -np.mean(y * np.log(x) + (1 - y) * np.log1p(-x))


def _np_bce_vg(x, y):
    return _np_bce(x, y), (x - y) / (x * (1 - x) * x.size)


def _np_kl(x, y):
    return np.sum(y * (np.log(y) - x)) / len(x)


def _np_kl_vg(x, y):
    return _np_kl(x, y), -y / len(x)


def _np_multilabel(x, y):
    return np.mean((1 - y) * x + np.logaddexp(0, -x))


def _np_multilabel_vg(x, y):
    g = 1 / (1 + np.exp(-x))
    g -= y
    g /= x.size
    return _np_multilabel(x, y), g


def _jax_nll(jnp, lax, x, t):
    return -jnp.mean(jnp.take_along_axis(x, t[:, None], axis=1))


def _jax_bce(jnp, lax, x, y):
    return -jnp.mean(y * jnp.log(x) + (1 - y) * jnp.log1p(-x))


def _jax_kl(jnp, lax, x, y):
    return jnp.sum(y * (jnp.log(y) - x)) / x.shape[0]


for _spec in [
    LossSpec("nll", "NLLLoss", _log_probs_data(10), (0,), _np_nll, _np_nll_vg,
             lambda F, x, t: F.nll_loss(x, t), _jax_nll, title="NLLLoss (N, 10)",
             sizes=_rows(10)),
    LossSpec("bce", "BCELoss", _probs_data, (0,), _np_bce, _np_bce_vg,
             lambda F, x, y: F.binary_cross_entropy(x, y), _jax_bce,
             exps=(2, 2)),
    LossSpec("kl_div", "KLDivLoss", _kl_data, (0,), _np_kl, _np_kl_vg,
             lambda F, x, y: F.kl_div(x, y, reduction="batchmean"), _jax_kl,
             options=(("reduction", "batchmean"),), title="KLDivLoss (batchmean)",
             sizes=_rows(10), exps=(1, 1)),
    LossSpec("multilabel_soft_margin", "MultiLabelSoftMarginLoss", _multilabel_data, (0,),
             _np_multilabel, _np_multilabel_vg,
             lambda F, x, y: F.multilabel_soft_margin_loss(x, y), _jax_bce_logits,
             title="MultiLabelSoftMarginLoss (N, 10)",
             sizes=_rows(10), exps=(2, 2)),
]:
    LOSSES[_spec.key] = _spec


ALIASES = {"smoothl1": "smooth_l1", "poisson": "poisson_nll", "gaussian": "gaussian_nll",
           "gaussiannll": "gaussian_nll", "poissonnll": "poisson_nll"}
ALIASES.update({s.name.lower(): s.key for s in LOSSES.values() if s.title is None})
ALIASES.update({s.name.lower()[:-4]: s.key for s in LOSSES.values()
                if s.title is None})  # "mse", "huber", ...
ALIASES.update({"crossentropy": "cross_entropy", "crossentropyloss": "cross_entropy"})


def loss_key(name):
    """The LOSSES key for a command-line name (`mse`, `MSELoss`, `smooth_l1`, ...)."""
    k = name.strip().lower().replace("-", "_")
    if k not in LOSSES:
        k = ALIASES.get(k, ALIASES.get(k.replace("_", ""), k))
    if k not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    return k


# ----------------------------------------------------------------------------------
# Peers: import on demand
# ----------------------------------------------------------------------------------

_MODULES = {}


def import_peer(name):
    """The peer's module (torch, jax, sklearn, monai, tqdm), or an ImportError-ish exception."""
    if name not in _MODULES:
        try:
            if name == "jax":
                os.environ.setdefault("JAX_PLATFORMS", "cpu")
                mod = importlib.import_module("jax")
                mod.config.update("jax_enable_x64", True)  # float64 arrays stay float64
                # Start the CPU client now: it sizes its thread pool by the CPUs the
                # process may use at that moment, and pin_cores may restrict them later.
                mod.devices()
            else:
                mod = importlib.import_module(name)
            _MODULES[name] = mod
        except Exception as exc:  # noqa: BLE001 - a broken install is "not importable" too
            _MODULES[name] = exc
    return _MODULES[name]


def available(name):
    return name in ("closs", "numpy") or not isinstance(import_peer(name), Exception)


def peer_versions(names=PEERS + ("tqdm",)):
    """{name: version string or None when not importable}."""
    out = {}
    for name in names:
        mod = import_peer(name)
        out[name] = None if isinstance(mod, Exception) else getattr(mod, "__version__", "?")
    return out


def set_threads(n):
    """Thread count for closs and torch (JAX/XLA's pool is fixed at import)."""
    closs.set_num_threads(n)
    if "torch" in _MODULES and available("torch"):
        _MODULES["torch"].set_num_threads(n)


_CPUS = None  # the CPUs this process could use when the benchmark first pinned it


def pin_cores(n):
    """Run every thread of this process (JAX's, BLAS's and OpenMP's pools too) on
    the first n of its CPUs (n None: on all of them again).

    JAX/XLA's thread pool is sized at import and cannot be shrunk, so without this
    a 1-thread row would time JAX on every core.  Threads started later inherit
    their creator's CPUs.  Returns whether the process could be pinned (Linux)."""
    global _CPUS
    if not (hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task")):
        return False
    if _CPUS is None:
        _CPUS = sorted(os.sched_getaffinity(0))
    cpus = set(_CPUS if n is None else _CPUS[:max(1, n)])
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:  # the thread has just exited
            pass
    return True


# ----------------------------------------------------------------------------------
# Implementations
# ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Impl:
    name: str
    call: Callable[[], object]  # what is timed
    to_numpy: Callable[[object], tuple]  # output -> (value: float, grads: tuple of arrays)


def _np_out(out, mode):
    if mode == "value":
        return float(out), ()
    value, grad = out
    grads = grad if isinstance(grad, tuple) else (grad,)
    return float(value), tuple(np.asarray(g) for g in grads)


def make_impls(spec: LossSpec, arrays, mode, names=IMPLS):
    """{name: Impl} for the importable ones among `names`."""
    impls = {}
    grad_mode = mode == "value+grad"
    for name in names:
        if not available(name):
            continue
        if name == "closs":
            loss = spec.closs_module()
            call = loss.value_and_grad if grad_mode else loss
            impls[name] = Impl(name, lambda call=call: call(*arrays),
                               lambda out: _np_out(out, mode))
        elif name == "numpy":
            fn = spec.numpy_value_and_grad if grad_mode else spec.numpy_value
            impls[name] = Impl(name, lambda fn=fn: fn(*arrays), lambda out: _np_out(out, mode))
        elif name == "torch":
            impls[name] = _torch_impl(spec, arrays, grad_mode)
        elif name == "jax" and spec.jax_fn is not None:
            impls[name] = _jax_impl(spec, arrays, grad_mode)
        elif name == "sklearn" and spec.sklearn_fn is not None:
            impls[name] = _sklearn_impl(spec, arrays, grad_mode)
        elif name == "monai" and spec.monai_fn is not None:
            loss = spec.monai_fn(import_peer("monai"))
            impls[name] = _torch_impl(spec, arrays, grad_mode, "monai",
                                      lambda F, *ts, loss=loss: loss(*ts))
    return impls


def _sklearn_impl(spec, arrays, grad_mode):
    def to_numpy(out):  # sklearn's gradient is per sample; closs's is of the mean
        value, grad = out
        return float(value), ((grad / len(grad),) if grad_mode else ())

    return Impl("sklearn", lambda: spec.sklearn_fn(grad_mode, *arrays), to_numpy)


def _torch_impl(spec, arrays, grad_mode, name="torch", fn=None):
    """torch's functional form of the loss (spec.torch_fn), or fn (MONAI's module)."""
    torch = import_peer("torch")
    F = torch.nn.functional
    fn = fn or spec.torch_fn
    from_numpy = torch.from_numpy
    if not grad_mode:
        def call():
            return fn(F, *[from_numpy(a) for a in arrays])

        return Impl(name, call, lambda out: (float(out), ()))
    diff = spec.grad_args

    def call():
        ts = [from_numpy(a).requires_grad_() if i in diff else from_numpy(a)
              for i, a in enumerate(arrays)]
        loss = fn(F, *ts)
        loss.backward()
        return loss.detach(), tuple(ts[i].grad for i in diff)

    return Impl(name, call, lambda out: (float(out[0]), tuple(g.numpy() for g in out[1])))


def _jax_impl(spec, arrays, grad_mode):
    jax = import_peer("jax")
    jnp, lax = jax.numpy, jax.lax
    dev = [jax.device_put(a) for a in arrays]

    def f(*xs):
        return spec.jax_fn(jnp, lax, *xs)

    if not grad_mode:
        jf = jax.jit(f)

        def call():
            return jf(*dev).block_until_ready()

        return Impl("jax", call, lambda out: (float(out), ()))
    jf = jax.jit(jax.value_and_grad(f, argnums=spec.grad_args))
    block = jax.block_until_ready

    def call():
        return block(jf(*dev))

    return Impl("jax", call,
                lambda out: (float(out[0]), tuple(np.asarray(g) for g in out[1])))


# ----------------------------------------------------------------------------------
# Agreement with closs
# ----------------------------------------------------------------------------------

def check(impls, dtype):
    """{peer: {"ok", "value_err", "grad_err"}} against closs (relative errors).

    Also the warm-up: every implementation (JAX: compilation) runs once here.
    """
    rtol = RTOL[dtype]
    outs = {name: impl.to_numpy(impl.call()) for name, impl in impls.items()}
    ref_value, ref_grads = outs["closs"]
    report = {}
    for name, (value, grads) in outs.items():
        if name == "closs":
            continue
        value_err = abs(value - ref_value) / max(abs(ref_value), np.finfo(np.float64).tiny)
        grad_err = 0.0
        dtype_ok = True
        for g, r in zip(grads, ref_grads):
            dtype_ok &= g.dtype == r.dtype and g.shape == r.shape
            if r.size == 0 or g.shape != r.shape:
                continue
            scale = float(np.max(np.abs(r)))
            diff = float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64))))
            err = diff / scale if scale else diff
            grad_err = err if np.isnan(err) else max(grad_err, err)
        ok = (bool(value_err <= rtol) and grad_err <= rtol and dtype_ok
              and len(grads) == len(ref_grads))
        report[name] = {"ok": ok, "value_err": value_err, "grad_err": grad_err,
                        "dtype_ok": bool(dtype_ok)}
    return report


# ----------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Budget:
    """How long to spend on one case."""
    seconds: float = 1.0  # target time for the rounds of one case (all implementations)
    batch: float = 2e-3  # target duration of one timed batch
    min_rounds: int = 5
    max_rounds: int = 41


FULL = Budget()
QUICK = Budget(seconds=0.3, batch=1e-3, min_rounds=3, max_rounds=15)

# Switching implementations.  OpenMP (closs, torch) and Eigen (JAX) workers spin
# for a few milliseconds after a parallel region; timed right away, the next
# implementation would share the cores with them.  So before every timed batch
# the implementation first runs untimed for WARMUP seconds (at least one call):
# the other runtime's workers give up spinning meanwhile, and the caches, the
# allocator and the core's clock are in the state the timed batch will see.
# At large sizes (from PAUSE_FROM elements) a short sleep comes first too, and
# then more sleeps until the process is quiet (its threads use under QUIET of a
# CPU, for at most QUIET_MAX seconds): after a long call, JAX's and torch's
# threads went on working or spinning for tens of milliseconds (closs's
# multilabel margin on two threads, timed after JAX's 0.5 s call, took 1.4-2.1x
# its time alone).  The sleep alone is not enough: after an idle pause a
# (virtual) CPU runs slowly for a while, so an implementation timed right after
# it looks several times slower.
PAUSE = 0.02
PAUSE_FROM = 5_000_000
QUIET = 0.1
QUIET_MAX = 1.0
WARMUP = 3e-3


def _wait_quiet(step=5e-3):
    """Sleep until this process's threads use less than QUIET of a CPU."""
    end = time.perf_counter() + QUIET_MAX
    while time.perf_counter() < end:
        busy = time.process_time()
        time.sleep(step)
        if time.process_time() - busy < QUIET * step:
            return


def settle(call, n, per_call):
    """Let the previous implementation's threads go quiet, then warm `call` up."""
    if n >= PAUSE_FROM:
        time.sleep(PAUSE)
        _wait_quiet()
    for _ in range(max(1, math.ceil(WARMUP / max(per_call, 1e-9)))):
        call()


def _time_batch(call, k):
    perf = time.perf_counter
    t0 = perf()
    for _ in range(k):
        call()
    return perf() - t0


def _calibrate(call, target):
    """(calls per batch so that one batch takes about `target` seconds, time per call)."""
    k = 1
    while True:
        t = _time_batch(call, k)
        if t >= 0.2 * target or k >= 1 << 20:
            return max(1, math.ceil(k * target / max(t, 1e-9))), t / k
        k *= 4 if t < 0.02 * target else 2


def _stats(samples):
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3),
            "min": float(min(samples)), "max": float(max(samples))}


def time_case(impls, n, budget=FULL):
    """{name: stats} of the time per call of each implementation, interleaved:
    every round times one batch of each implementation, in rotating order."""
    names = list(impls)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        batches, per_call = {}, {}
        for name in names:
            call = impls[name].call
            settle(call, n, 1.0)  # one call
            batches[name], per_call[name] = _calibrate(call, budget.batch)
        overhead = (PAUSE if n >= PAUSE_FROM else 0.0)
        round_time = sum(batches[m] * per_call[m] + max(WARMUP, per_call[m]) + overhead
                         for m in names)
        rounds = int(min(budget.max_rounds, max(budget.min_rounds, budget.seconds / round_time)))
        samples = {name: [] for name in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                call, k = impls[name].call, batches[name]
                settle(call, n, per_call[name])
                samples[name].append(_time_batch(call, k) / k)
                gc.collect(0)  # outside the timed region
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: dict(_stats(samples[name]), rounds=rounds, calls_per_sample=batches[name],
                       samples=samples[name]) for name in names}


def bytes_moved(spec, arrays, mode):
    """(bytes read, bytes written) by a single pass: every input array (targets and
    labels too), and for value+grad the gradients (the size of their inputs)."""
    read = sum(np.asarray(a).nbytes for a in arrays)
    written = sum(arrays[i].nbytes for i in spec.grad_args) if mode == "value+grad" else 0
    return read, written


# ----------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------

class _Progress:
    """tqdm when installed, else one stderr line per case (rewritten on a terminal)."""

    def __init__(self, total, enabled=True):
        self.enabled, self.total, self.count = enabled, total, 0
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and available("tqdm"):
            self.bar = import_peer("tqdm").tqdm(total=total, unit="case", file=sys.stderr,
                                                 leave=False, dynamic_ncols=True)

    def start(self, label):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description_str(label)
            return
        tty = sys.stderr.isatty()
        line = (f"[{self.count + 1}/{self.total}] {label} "
                f"({time.perf_counter() - self.t0:.0f} s)")
        sys.stderr.write(("\r\x1b[2K" + line) if tty else line + "\n")
        sys.stderr.flush()

    def advance(self):
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and sys.stderr.isatty():
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def format_size(n):
    e = math.log10(n) if n > 0 else 0
    return f"1e{round(e)}" if n >= 1000 and e == round(e) else str(n)


def format_shape(shape):
    """1e6x10, 16384x1000, 16x4x400x400, 1e7: powers of ten from 1e4 as 1eK."""
    return "x".join(format_size(d) if d >= 10_000 else str(d) for d in shape)


def run(losses, dtypes, sizes, modes=MODES, impls=IMPLS, budget=FULL, seed=0, progress=True,
        warn=None, threads=None):
    """Benchmark every case; returns a list of result dicts (see README / --json).

    sizes: preset names (PRESETS) and/or element counts; threads: thread counts
    for closs and torch, each case run at each (default: closs's current count).
    """
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    threads = list(threads or [closs.get_num_threads()])
    for name in impls:
        available(name)  # import the peers first: set_threads reaches torch's pool too
    cases = [(k, dt, size, t, m) for k in losses for dt in dtypes for size in sizes
             for t in threads for m in modes]
    bar = _Progress(len(cases), progress)
    results = []
    data_key, data = None, None
    saved_threads = closs.get_num_threads()
    try:
        for key, dtype, size, nthreads, mode in cases:
            spec = LOSSES[key]
            n = resolve_size(spec, size)
            if data_key != (key, dtype, n):
                data = None  # free the previous case's arrays first
                data_key = (key, dtype, n)
                rng = np.random.default_rng([seed, list(LOSSES).index(key), n])
                data = spec.make_data(rng, n, dtype)
            shape = data[0].shape
            label = f"{spec.label} {dtype} {format_shape(shape)} {nthreads}T {mode}"
            bar.start(label)
            set_threads(nthreads)
            pin_cores(nthreads)
            meter = LoadMeter()
            case_impls = make_impls(spec, data, mode, impls)
            agreement = check(case_impls, dtype)
            for peer, rep in agreement.items():
                if not rep["ok"]:
                    warn(f"\n*** MISMATCH: {peer} disagrees with closs on {label}: "
                         f"value rel. err {rep['value_err']:.3g}, grad rel. err "
                         f"{rep['grad_err']:.3g} (rtol {RTOL[dtype]:g})"
                         + ("" if rep["dtype_ok"] else ", gradient dtype/shape differs"))
            stats = time_case(case_impls, n, budget)
            closs_med = stats["closs"]["median"]
            read, written = bytes_moved(spec, data, mode)
            other_load = meter.other_load()
            results.append({
                "loss": spec.label, "key": key, "dtype": dtype, "size": n,
                "preset": size if isinstance(size, str) else None, "shape": list(shape),
                "elements": int(data[0].size), "threads": nthreads, "mode": mode,
                "other_load": other_load,
                "bytes": read + written, "bytes_read": read, "bytes_written": written,
                "exps": spec.exps[MODES.index(mode)] * data[0].size,
                "closs_gbps": (read + written) / closs_med / 1e9,
                "times": stats,
                "ratios": {m: s["median"] / closs_med for m, s in stats.items() if m != "closs"},
                "check": agreement,
            })
            del case_impls
            bar.advance()
    finally:
        bar.close()
        set_threads(saved_threads)
        pin_cores(None)
    return results


# ----------------------------------------------------------------------------------
# Machine information and output
# ----------------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def runtime_info():
    from ._kernels import _runtime
    return {
        "openmp": bool(getattr(_runtime, "OPENMP", False)),
        "build_flags": getattr(_runtime, "BUILD_FLAGS", ""),
        "simd_supported": getattr(_runtime, "SIMD_SUPPORTED", "?"),
        "simd_selected": getattr(_runtime, "SIMD_SELECTED", "?"),
        "threads": closs.get_num_threads(),
        "grad_cache_mb": _runtime.cache_limit() / 2**20,  # gradient memory reuse (0: off)
    }


def machine_info(peers=PEERS + ("tqdm",)):
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    versions = peer_versions(peers)
    info = {
        "cpu": cpu_model(), "cores": cores, "logical_cpus": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
        "numpy": np.__version__, "closs": closs.__version__, **{"closs_" + k: v for k, v in
                                                              runtime_info().items()},
        "peers": versions,
        "env": {k: os.environ[k] for k in ("CLOSS_NUM_THREADS", "CLOSS_SIMD", "CLOSS_GRAD_CACHE_MB",
                                           "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "XLA_FLAGS") if k in os.environ},
    }
    if versions.get("torch"):
        info["torch_threads"] = import_peer("torch").get_num_threads()
    return info


class LoadMeter:
    """How busy the machine was with other processes while we ran.

    Busy time of all CPUs (/proc/stat) minus this process's own CPU time, as a
    fraction of the machine's capacity over the wall time; None off Linux.
    """

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
        t = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system, time.monotonic()

    def other_load(self):
        end = self._sample()
        if self.start is None or end is None:
            return None
        busy, own, wall = (b - a for a, b in zip(self.start, end))
        cpus = os.cpu_count() or 1
        return max(0.0, (busy - own) / (wall * cpus)) if wall > 0 else 0.0


def format_time(t):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if t >= scale or unit == "ns":
            v = t / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return str(t)


def _cell(stats):
    spread = (stats["q3"] - stats["q1"]) / 2 / stats["median"] * 100
    return f"{format_time(stats['median'])} ±{spread:.0f}%"


def render_table(head, rows, numeric, markdown=False):
    """Rows of cells as an aligned text table (numeric columns right-aligned) or Markdown."""
    if markdown:
        out = ["| " + " | ".join(head) + " |",
               "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(row) for row in rows])


def size_label(r):
    """A result's size as its shape (1e6x10), or its element count (older JSON files)."""
    return format_shape(r["shape"]) if r.get("shape") else format_size(r["size"])


def format_table(results, markdown=False):
    """The results as an aligned text table or a Markdown table."""
    peers = [m for m in IMPLS[1:] if any(m in r["times"] for r in results)]
    head = ["loss", "dtype", "size", "threads", "mode", "closs"]
    for p in peers:
        head += [p, f"{p}/closs"]
    head.append("closs GB/s")
    rows = []
    for r in results:
        busy = (r.get("other_load") or 0.0) > BUSY
        mode = r["mode"] + (" (busy)" if busy else "")
        row = [r["loss"], r["dtype"], size_label(r), str(r.get("threads", "")), mode,
               _cell(r["times"]["closs"])]
        for p in peers:
            if p in r["times"]:
                flag = "" if r["check"][p]["ok"] else " MISMATCH"
                row += [_cell(r["times"][p]) + flag, f"{r['ratios'][p]:.2f}"]
            else:
                row += ["-", "-"]
        row.append(f"{r['closs_gbps']:.2f}")
        rows.append(row)
    numeric = [False, False, True, True, False] + [True] * (len(head) - 5)
    return render_table(head, rows, numeric, markdown)


TABLE_NOTE = ("median time per call, ± half the inter-quartile range; peer/closs > 1 means "
              "closs is faster; GB/s counts the inputs read (targets too) plus the gradients "
              "written once; threads: closs's and torch's thread count (scikit-learn's "
              "n_threads too; NumPy runs on one); every thread of the process, JAX's pool "
              "included, is pinned to that many cores; "
              f"(busy): other processes used more than {BUSY:.0%} of the CPUs during that case.")


# ----------------------------------------------------------------------------------
# --plot: throughput against size
# ----------------------------------------------------------------------------------

COLORS = {"closs": "tab:red", "numpy": "tab:gray", "torch": "tab:orange", "jax": "tab:blue",
          "sklearn": "tab:green", "monai": "tab:purple"}


class PlotError(RuntimeError):
    pass


def require_matplotlib():
    """Raise PlotError with the install hint when matplotlib is not importable."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotError("--plot needs matplotlib: pip install 'closs[plot]' "
                        f"(or pip install matplotlib); {exc}") from None


def plot(results, path, dtype=None):
    """Throughput (elements per second of the first input) against its size, log-log,
    one panel per loss, a line per implementation: value+grad solid, value dashed,
    at the largest thread count of the run (closs's value+grad at one thread dotted,
    when the run has it).  Rows of one dtype: float32 when present."""
    require_matplotlib()
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    dtypes = list(dict.fromkeys(r["dtype"] for r in results))
    if not dtypes:
        raise PlotError("--plot: no results to plot")
    dtype = dtype or ("float32" if "float32" in dtypes else dtypes[0])
    rows = [r for r in results if r["dtype"] == dtype]
    nthreads = max(r.get("threads", 1) for r in rows)
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    ncols = min(4, len(losses))
    nrows = math.ceil(len(losses) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.3 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()

    def line(ax, impl, mode, threads, **style):
        pts = sorted((r.get("elements", r["size"]), r["times"][impl]["median"]) for r in rows
                     if r["loss"] == loss and r["mode"] == mode
                     and r.get("threads", 1) == threads and impl in r["times"])
        if pts:
            ax.plot([n for n, _ in pts], [n / t for n, t in pts], color=COLORS.get(impl),
                    marker="o", markersize=3, **style)

    for ax, loss in zip(axes, losses):
        for impl in IMPLS:
            line(ax, impl, "value+grad", nthreads, label=f"{impl} value+grad")
            line(ax, impl, "value", nthreads, linestyle="--", linewidth=1,
                 label=f"{impl} value")
        if nthreads != 1:
            line(ax, "closs", "value+grad", 1, linestyle=":", label="closs value+grad, 1 thread")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(loss, fontsize=9)
        ax.set_xlabel("elements", fontsize=8)
        ax.set_ylabel("elements / s", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(losses):]:
        ax.set_visible(False)
    handles = {}
    for ax in axes[:len(losses)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=min(6, len(handles)), fontsize=8)
    fig.suptitle(f"closs bench: throughput, {dtype}, {nthreads} thread(s) "
                 f"(higher is better)", fontsize=11)
    fig.savefig(path, dpi=110)
    return path


# ----------------------------------------------------------------------------------
# --roofline: this machine's limits, and how close closs gets to them
# ----------------------------------------------------------------------------------

ROOFLINE_MB = 256  # the bandwidth arrays: far beyond the caches
ROOFLINE_REPEATS = 5  # best of
EXP_BUFFER = 2048  # elements per thread for the exp rate: in L1 / L2


def _best_time(fn, repeats):
    """The shortest of `repeats` timed calls (after one untimed)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_machine(threads=(1, 2), megabytes=ROOFLINE_MB, repeats=ROOFLINE_REPEATS):
    """This machine's limits at each thread count, best of `repeats`:

    read_gbps           sum of a float64 array of `megabytes`
    copy_fresh_gbps     out = 2 x into a fresh np.empty, allocation, first-touch page
                        faults and release included (how closs returns a gradient,
                        and the benchmark drops it inside the timed call), bytes
                        read + written
    copy_prealloc_gbps  the same into a preallocated, already touched output
    write_fresh_gbps    bytes written per second of what the fresh copy takes beyond
                        reading its input (the cost of a gradient byte)
    exp_f32, exp_f64    vexp evaluations per second on in-cache buffers
    """
    from ._kernels import _roofline

    meter = LoadMeter()
    n = max(1, int(megabytes * 2**20) // 8)
    x = np.full(n, 1.5)
    pre = np.zeros_like(x)
    figures = []
    for t in threads:
        t_read = _best_time(lambda: _roofline.read(x, t), repeats)
        t_fresh = _best_time(lambda: _roofline.scale(x, np.empty_like(x), 2.0, t), repeats)
        t_pre = _best_time(lambda: _roofline.scale(x, pre, 2.0, t), repeats)
        row = {"threads": t, "read_gbps": x.nbytes / t_read / 1e9,
               "copy_fresh_gbps": 2 * x.nbytes / t_fresh / 1e9,
               "copy_prealloc_gbps": 2 * x.nbytes / t_pre / 1e9,
               "write_fresh_gbps": x.nbytes / max(t_fresh - t_read, 1e-3 * t_fresh) / 1e9}
        for dtype in ("float32", "float64"):
            a = np.linspace(-20.0, 20.0, t * EXP_BUFFER).astype(dtype).reshape(t, EXP_BUFFER)
            b = np.empty_like(a)
            reps = max(1, n // a.size)  # as many exps as the arrays have elements
            seconds = _best_time(lambda: _roofline.exp(a, b, reps, t), repeats)
            row["exp_" + dtype[-2:]] = a.size * reps / seconds
        figures.append(row)
    return {"megabytes": megabytes, "repeats": repeats, "openmp": _roofline.OPENMP,
            "simd": runtime_info()["simd_selected"], "other_load": meter.other_load(),
            "threads": figures}


def roofline_rows(results, machine):
    """Per large result (preset "large", or an explicit element count): the lower
    bound on closs's time from its bytes and exps at this machine's limits (at the
    result's thread count) and closs's median over it.

    bytes: read / read_gbps + written / write_fresh_gbps (the gradient is a fresh
    array, as users get it); exps: exps / exp rate of the dtype (logs counted as
    exps); bound = max of the two.
    """
    by_threads = {m["threads"]: m for m in machine["threads"]}
    rows = []
    for r in results:
        if r.get("preset") not in (None, "large"):
            continue
        nthreads = r.get("threads", 1)
        m = by_threads.get(nthreads) or by_threads[min(by_threads, key=lambda t: abs(t - nthreads))]
        t_bytes = (r["bytes_read"] / (m["read_gbps"] * 1e9)
                   + r["bytes_written"] / (m["write_fresh_gbps"] * 1e9))
        t_exps = r["exps"] / m["exp_" + r["dtype"][-2:]]
        bound = max(t_bytes, t_exps)
        closs_time = r["times"]["closs"]["median"]
        rows.append({"loss": r["loss"], "key": r["key"], "dtype": r["dtype"], "size": r["size"],
                     "shape": r.get("shape"), "threads": nthreads, "mode": r["mode"],
                     "bytes_read": r["bytes_read"], "bytes_written": r["bytes_written"],
                     "exps": r["exps"], "bytes_bound": t_bytes, "exp_bound": t_exps,
                     "bound": bound, "limit": "memory" if t_bytes >= t_exps else "exp",
                     "closs": closs_time, "of_roofline": closs_time / bound})
    return rows


def format_roofline(machine, rows, markdown=False):
    """The machine's figures, then the bound and closs's distance to it per row."""
    head = ["threads", "read GB/s", "copy GB/s (fresh out)", "copy GB/s (prealloc. out)",
            "write GB/s (fresh)", "exp/s float32", "exp/s float64"]
    cells = [[str(m["threads"]), f"{m['read_gbps']:.1f}", f"{m['copy_fresh_gbps']:.1f}",
              f"{m['copy_prealloc_gbps']:.1f}", f"{m['write_fresh_gbps']:.1f}",
              f"{m['exp_32']:.3g}", f"{m['exp_64']:.3g}"] for m in machine["threads"]]
    out = [render_table(head, cells, [True] * len(head), markdown)]
    head = ["loss", "dtype", "size", "threads", "mode", "MB read", "MB written", "Mexp",
            "bytes bound", "exp bound", "closs", "x of roofline"]
    cells = [[r["loss"], r["dtype"], size_label(r), str(r["threads"]), r["mode"],
              f"{r['bytes_read'] / 1e6:.1f}", f"{r['bytes_written'] / 1e6:.1f}",
              f"{r['exps'] / 1e6:.3g}", format_time(r["bytes_bound"]),
              format_time(r["exp_bound"]) if r["exps"] else "-", format_time(r["closs"]),
              f"{r['of_roofline']:.2f}"] for r in rows]
    out.append(render_table(head, cells, [False, False, True, True, False] + [True] * 7,
                            markdown))
    return "\n\n".join(out)


def roofline_note(machine):
    return (f"roofline: best of {machine['repeats']} passes over {machine['megabytes']:g} MB "
            f"float64 arrays (SIMD {machine['simd']}); copy = 2 x into a fresh np.empty "
            "(allocation, page faults and release included) or into a touched output; "
            "exp/s: closs's vexp on "
            f"{EXP_BUFFER}-element in-cache buffers per thread.  Bound = max(bytes read / "
            "read GB/s + bytes written / write GB/s (fresh), exps / exp/s) with logs counted "
            "as exps; x of roofline = closs's median / bound (target <= 2).")


# ----------------------------------------------------------------------------------
# Margin, ranking and focal losses: more pointwise kernels (closs/_kernels/_pointwise.pyx).
# ----------------------------------------------------------------------------------

MR_MARGIN = 0.0  # MarginRankingLoss default
HINGE_MARGIN = 1.0  # HingeEmbeddingLoss default
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0  # FocalLoss defaults


def _signs(rng, n, dtype):
    return np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(dtype)


def _ranking_data(rng, n, dtype):
    return (rng.standard_normal(n, dtype=dtype), rng.standard_normal(n, dtype=dtype),
            _signs(rng, n, dtype))


def _signed_data(rng, n, dtype):
    return (rng.standard_normal(n, dtype=dtype), _signs(rng, n, dtype))


def _focal_data(rng, n, dtype):
    return (rng.standard_normal(n, dtype=dtype), (rng.random(n) < 0.3).astype(dtype))


def _jax_margin_ranking(jnp, lax, x1, x2, y):
    # torch's gradient passes at the hinge (z == 0); jnp.maximum would split it
    z = -y * (x1 - x2) + MR_MARGIN
    return jnp.mean(jnp.where(z >= 0, z, 0.0))


def _np_margin_ranking(x1, x2, y):
    v = x2 - x1
    v *= y
    v += MR_MARGIN
    np.maximum(v, 0, out=v)
    return v.mean()


def _np_margin_ranking_vg(x1, x2, y):
    v = x2 - x1
    v *= y
    v += MR_MARGIN  # -y (x1 - x2) + margin
    g1 = np.where(v >= 0, y, 0)  # torch's clamp_min passes the gradient at 0
    g1 *= -1.0 / v.size
    np.maximum(v, 0, out=v)
    return v.mean(), (g1, -g1)


def _np_hinge(x, y):  # targets +-1 only
    return np.where(y == 1, x, np.maximum(HINGE_MARGIN - x, 0)).mean()


def _np_hinge_vg(x, y):
    g = np.where(y == 1, 1.0, np.where(x <= HINGE_MARGIN, -1.0, 0.0)).astype(x.dtype)
    g *= 1.0 / x.size
    return _np_hinge(x, y), g


def _np_soft_margin(x, y):
    return np.logaddexp(0, -y * x).mean()


def _np_soft_margin_vg(x, y):
    z = -y * x
    value = np.logaddexp(0, z).mean()
    g = np.exp(-z)
    g += 1
    np.divide(-y, g, out=g)  # -y sigmoid(z)
    g *= 1.0 / x.size
    return value, g


def _np_focal_terms(x, y):
    """sigmoid(x), BCE-with-logits, q = 1 - p_t and alpha_t."""
    p = 1 / (1 + np.exp(-x))
    ce = np.logaddexp(0, x) - y * x
    q = p + y - 2 * p * y
    at = FOCAL_ALPHA * y + (1 - FOCAL_ALPHA) * (1 - y)
    return p, ce, q, at


def _np_focal(x, y):
    _, ce, q, at = _np_focal_terms(x, y)
    return np.mean(at * ce * q ** FOCAL_GAMMA)


def _np_focal_vg(x, y):
    p, ce, q, at = _np_focal_terms(x, y)
    w = q ** FOCAL_GAMMA
    value = np.mean(at * ce * w)
    g = at * ((p - y) * w - FOCAL_GAMMA * ce * q ** (FOCAL_GAMMA - 1) * p * (1 - p) * (2 * y - 1))
    g *= 1.0 / x.size
    return value, g


def _torch_focal(F, x, y):  # torchvision.ops.sigmoid_focal_loss(x, y, reduction="mean")
    p = x.sigmoid()
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = FOCAL_ALPHA * y + (1 - FOCAL_ALPHA) * (1 - y)
    return (alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA).mean()


def _jax_hinge(jnp, lax, x, y):
    return jnp.mean(jnp.where(y != -1, x, 0.0)
                    + jnp.where(y != 1, jnp.maximum(HINGE_MARGIN - x, 0.0), 0.0))


def _jax_soft_margin(jnp, lax, x, y):
    import jax
    return jnp.mean(jax.nn.softplus(-y * x))


def _jax_focal(jnp, lax, x, y):
    import jax
    p = jax.nn.sigmoid(x)
    ce = (1 - y) * x - jax.nn.log_sigmoid(x)
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = FOCAL_ALPHA * y + (1 - FOCAL_ALPHA) * (1 - y)
    return jnp.mean(alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA)


for _spec in [
    LossSpec("margin_ranking", "MarginRankingLoss", _ranking_data, (0, 1), _np_margin_ranking,
             _np_margin_ranking_vg, lambda F, x1, x2, y: F.margin_ranking_loss(x1, x2, y),
             _jax_margin_ranking),
    LossSpec("hinge_embedding", "HingeEmbeddingLoss", _signed_data, (0,), _np_hinge,
             _np_hinge_vg, lambda F, x, y: F.hinge_embedding_loss(x, y), _jax_hinge),
    LossSpec("soft_margin", "SoftMarginLoss", _signed_data, (0,), _np_soft_margin,
             _np_soft_margin_vg, lambda F, x, y: F.soft_margin_loss(x, y), _jax_soft_margin,
             exps=(2, 2)),
    LossSpec("sigmoid_focal", "FocalLoss", _focal_data, (0,), _np_focal, _np_focal_vg,
             _torch_focal, _jax_focal,
             exps=(2, 2)),
]:
    LOSSES[_spec.key] = _spec
    ALIASES[_spec.name.lower()] = ALIASES[_spec.name.lower()[:-4]] = _spec.key


# ----------------------------------------------------------------------------------
# Margin losses over the class axis: MultiMargin, MultiLabelMargin (closs/_kernels/_margin.pyx).
# ----------------------------------------------------------------------------------

def _label_sets_data(classes, most):
    """Logits (n / C, C) and per row 0..most distinct target classes, then -1s."""
    def make(rng, n, dtype):
        rows = max(1, n // classes)
        order = np.argsort(rng.random((rows, classes)), axis=1)  # a permutation per row
        count = rng.integers(0, most + 1, rows)
        return (rng.standard_normal((rows, classes), dtype=dtype),
                np.where(np.arange(classes) < count[:, None], order, -1))
    return make


def _np_multi_margin_terms(x, t):
    """(z = 1 - x[t] + x with z[t] = 0, row indices)."""
    rows = np.arange(len(t))
    z = x - x[rows, t][:, None]
    z += 1.0
    z[rows, t] = 0.0
    return z, rows


def _np_multi_margin(x, t):
    z, _ = _np_multi_margin_terms(x, t)
    return np.maximum(z, 0.0, out=z).sum() / z.size  # mean of row sums / C


def _np_multi_margin_vg(x, t):
    z, rows = _np_multi_margin_terms(x, t)
    g = (z > 0).astype(x.dtype)
    value = np.maximum(z, 0.0, out=z).sum() / z.size
    g[rows, t] = -g.sum(axis=1)
    g /= z.size
    return value, g


def _np_label_pairs(x, t):
    """(valid target slots, their classes, active pairs (row, slot, class), z)."""
    valid = np.cumprod(t >= 0, axis=1).astype(bool)  # the entries before the first -1
    rows = np.broadcast_to(np.arange(len(x))[:, None], t.shape)[valid]
    is_target = np.zeros(x.shape, bool)
    is_target[rows, t[valid]] = True
    z = 1.0 - np.take_along_axis(x, np.where(valid, t, 0), axis=1)[:, :, None] + x[:, None, :]
    active = valid[:, :, None] & ~is_target[:, None, :] & (z > 0)
    return valid, rows, active, z


def _np_multilabel_margin(x, t):
    _, _, active, z = _np_label_pairs(x, t)
    return np.sum(z, where=active, dtype=np.float64) / x.size


def _np_multilabel_margin_vg(x, t):
    valid, rows, active, z = _np_label_pairs(x, t)
    g = active.sum(axis=1).astype(x.dtype)
    np.subtract.at(g, (rows, t[valid]), active.sum(axis=2)[valid].astype(x.dtype))
    g /= x.size
    return np.sum(z, where=active, dtype=np.float64) / x.size, g


def _jax_multi_margin(jnp, lax, x, t):
    z = 1.0 - jnp.take_along_axis(x, t[:, None], axis=1) + x
    other = jnp.arange(x.shape[1])[None, :] != t[:, None]
    return jnp.sum(jnp.where(other & (z > 0), z, 0.0)) / x.size


def _jax_multilabel_margin(jnp, lax, x, t):
    """Every (target slot, class) pair: C times the input, fine for C = 10."""
    n, c = x.shape
    valid = jnp.cumprod(t >= 0, axis=1) > 0
    is_target = jnp.zeros(x.shape, bool).at[jnp.arange(n)[:, None], jnp.where(valid, t, c)].set(
        True, mode="drop")
    z = 1.0 - jnp.take_along_axis(x, jnp.where(valid, t, 0), axis=1)[:, :, None] + x[:, None, :]
    active = valid[:, :, None] & ~is_target[:, None, :] & (z > 0)
    return jnp.sum(jnp.where(active, z, 0.0)) / x.size


for _spec in [
    LossSpec("multi_margin", "MultiMarginLoss", _logits_data(1000), (0,), _np_multi_margin,
             _np_multi_margin_vg, lambda F, x, t: F.multi_margin_loss(x, t), _jax_multi_margin,
             title="MultiMarginLoss (N, 1000)",
             sizes=_rows(1000, (8, 100, 16_384))),
    LossSpec("multilabel_margin", "MultiLabelMarginLoss", _label_sets_data(10, 4), (0,),
             _np_multilabel_margin, _np_multilabel_margin_vg,
             lambda F, x, t: F.multilabel_margin_loss(x, t), _jax_multilabel_margin,
             title="MultiLabelMarginLoss (N, 10)",
             sizes=_rows(10)),
]:
    LOSSES[_spec.key] = _spec


# ----------------------------------------------------------------------------------
# Losses over feature rows: CosineEmbedding, TripletMargin(+WithDistance) (closs/_kernels/_features.pyx).
# ----------------------------------------------------------------------------------

# Rows of FEATURES features made from n elements (n / FEATURES rows): the presets
# are 8, 800 and 78125 (1e7 elements) rows of 128, per input.
FEATURES = 128
FEATURE_SIZES = _rows(FEATURES, (8, 800, 78_125))
COS_EPS = float(np.float32(1e-12))  # torch's cosine_embedding_loss epsilon
TRIPLET_MARGIN = 1.0  # TripletMarginLoss defaults
PAIRWISE_EPS = 1e-6
COSINE_SIM_EPS = 1e-8  # torch's cosine_similarity default


def _feature_rows(count):
    def make(rng, n, dtype):
        rows = max(1, n // FEATURES)
        return tuple(rng.standard_normal((rows, FEATURES), dtype=dtype) for _ in range(count))
    return make


def _cosine_pairs_data(rng, n, dtype):
    x1, x2 = _feature_rows(2)(rng, n, dtype)
    return x1, x2, np.where(rng.random(len(x1)) < 0.5, -1.0, 1.0).astype(dtype)


def _np_rowdot(x, y):
    return np.einsum("ij,ij->i", x, y)


def _np_cosine_parts(x1, x2):
    m1 = _np_rowdot(x1, x1) + COS_EPS
    m2 = _np_rowdot(x2, x2) + COS_EPS
    den = np.sqrt(m1 * m2)
    return _np_rowdot(x1, x2) / den, den, m1, m2


def _np_cosine_embedding(x1, x2, y):  # margin 0
    cos = _np_cosine_parts(x1, x2)[0]
    return np.where(y == 1, 1 - cos, np.where(y == -1, np.maximum(cos, 0), 0)).mean()


def _np_cosine_embedding_vg(x1, x2, y):
    cos, den, m1, m2 = _np_cosine_parts(x1, x2)
    value = np.where(y == 1, 1 - cos, np.where(y == -1, np.maximum(cos, 0), 0)).mean()
    dcos = np.where(y == 1, -1.0, np.where((y == -1) & (cos >= 0), 1.0, 0.0)) / len(y)
    k = (dcos / den)[:, None]
    g1 = k * x2 - (dcos * cos / m1)[:, None] * x1
    g2 = k * x1 - (dcos * cos / m2)[:, None] * x2
    return value, (g1.astype(x1.dtype), g2.astype(x2.dtype))


def _jax_cosine_embedding(jnp, lax, x1, x2, y):
    m1 = jnp.sum(x1 * x1, axis=1) + COS_EPS
    m2 = jnp.sum(x2 * x2, axis=1) + COS_EPS
    cos = jnp.sum(x1 * x2, axis=1) / jnp.sqrt(m1 * m2)
    return jnp.mean(jnp.where(y == 1, 1 - cos, jnp.where(y == -1, jnp.maximum(cos, 0), 0)))


def _np_triplet(a, p, n):
    d_ap = np.sqrt(_np_rowdot(a - p + PAIRWISE_EPS, a - p + PAIRWISE_EPS))
    d_an = np.sqrt(_np_rowdot(a - n + PAIRWISE_EPS, a - n + PAIRWISE_EPS))
    return np.maximum(TRIPLET_MARGIN + d_ap - d_an, 0).mean()


def _np_triplet_vg(a, p, n):
    u = a - p
    u += PAIRWISE_EPS
    v = a - n
    v += PAIRWISE_EPS
    d_ap, d_an = np.sqrt(_np_rowdot(u, u)), np.sqrt(_np_rowdot(v, v))
    h = TRIPLET_MARGIN + d_ap - d_an
    active = (h >= 0) / len(h)
    u *= (active / d_ap)[:, None].astype(a.dtype)
    v *= (active / d_an)[:, None].astype(a.dtype)
    return np.maximum(h, 0).mean(), (u - v, -u, v)


def _jax_triplet(jnp, lax, a, p, n):
    d_ap = jnp.sqrt(jnp.sum((a - p + PAIRWISE_EPS) ** 2, axis=1))
    d_an = jnp.sqrt(jnp.sum((a - n + PAIRWISE_EPS) ** 2, axis=1))
    return jnp.mean(jnp.maximum(TRIPLET_MARGIN + d_ap - d_an, 0))


def _np_cosine_distance_parts(x, y):
    nx = np.maximum(np.sqrt(_np_rowdot(x, x)), COSINE_SIM_EPS)
    ny = np.maximum(np.sqrt(_np_rowdot(y, y)), COSINE_SIM_EPS)
    return 1 - _np_rowdot(x, y) / (nx * ny), nx, ny


def _np_triplet_cosine(a, p, n):
    d_ap = _np_cosine_distance_parts(a, p)[0]
    d_an = _np_cosine_distance_parts(a, n)[0]
    return np.maximum(TRIPLET_MARGIN + d_ap - d_an, 0).mean()


def _np_triplet_cosine_vg(a, p, n):
    d_ap, na, np_ = _np_cosine_distance_parts(a, p)
    d_an, _, nn = _np_cosine_distance_parts(a, n)
    h = TRIPLET_MARGIN + d_ap - d_an
    c = (h >= 0) / len(h)
    # d (1 - cos(x, y)) / d x = cos x / |x|^2 - y / (|x| |y|) (norms above eps)
    cap, can = 1 - d_ap, 1 - d_an
    col = lambda v: v[:, None].astype(a.dtype)  # noqa: E731
    ga = col(c * (cap - can) / na ** 2) * a - col(c / (na * np_)) * p + col(c / (na * nn)) * n
    gp = col(c * cap / np_ ** 2) * p - col(c / (na * np_)) * a
    gn = col(c / (na * nn)) * a - col(c * can / nn ** 2) * n
    return np.maximum(h, 0).mean(), (ga, gp, gn)


def _jax_triplet_cosine(jnp, lax, a, p, n):
    def distance(x, y):
        nx = jnp.maximum(jnp.sqrt(jnp.sum(x * x, axis=1)), COSINE_SIM_EPS)
        ny = jnp.maximum(jnp.sqrt(jnp.sum(y * y, axis=1)), COSINE_SIM_EPS)
        return 1 - jnp.sum(x * y, axis=1) / (nx * ny)
    return jnp.mean(jnp.maximum(TRIPLET_MARGIN + distance(a, p) - distance(a, n), 0))


def _torch_triplet_cosine(F, a, p, n):
    return F.triplet_margin_with_distance_loss(
        a, p, n, distance_function=lambda x, y: 1 - F.cosine_similarity(x, y))


for _spec in [
    LossSpec("cosine_embedding", "CosineEmbeddingLoss", _cosine_pairs_data, (0, 1),
             _np_cosine_embedding, _np_cosine_embedding_vg,
             lambda F, x1, x2, y: F.cosine_embedding_loss(x1, x2, y), _jax_cosine_embedding,
             title="CosineEmbeddingLoss (N, 128)",
             sizes=FEATURE_SIZES),
    LossSpec("triplet_margin", "TripletMarginLoss", _feature_rows(3), (0, 1, 2), _np_triplet,
             _np_triplet_vg, lambda F, a, p, n: F.triplet_margin_loss(a, p, n), _jax_triplet,
             title="TripletMarginLoss (N, 128)",
             sizes=FEATURE_SIZES),
    LossSpec("triplet_margin_with_distance", "TripletMarginWithDistanceLoss", _feature_rows(3),
             (0, 1, 2), _np_triplet_cosine, _np_triplet_cosine_vg, _torch_triplet_cosine,
             _jax_triplet_cosine, options=(("distance_function", "cosine"),),
             title="TripletMarginWithDistanceLoss (cosine, N, 128)",
             sizes=FEATURE_SIZES),
]:
    LOSSES[_spec.key] = _spec


# ----------------------------------------------------------------------------------
# Overlap losses: Dice, Tversky (closs/_kernels/_overlap.pyx).
# ----------------------------------------------------------------------------------

# MONAI-style segmentation losses on (B, 4, H, W) logits with softmax over the 4
# channels: Dice with a dense one-hot target, Tversky (alpha 0.3, beta 0.7) with
# (B, 1, H, W) labels through to_onehot_y.  The peers implement MONAI's formulas,
# and MONAI itself is one when it is installed.

OVERLAP_CLASSES = 4
OVERLAP_SMOOTH = 1e-5  # MONAI's smooth_nr = smooth_dr default
TVERSKY_AB = (0.3, 0.7)


# The presets 16 x 4 x 4 x 4, 16 x 4 x 40 x 40 and 16 x 4 x 400 x 400.
OVERLAP_SIZES = (16 * 4 * 4 * 4, 16 * 4 * 40 * 40, 16 * 4 * 400 * 400)


def _overlap_shape(n, classes=OVERLAP_CLASSES):
    """About n elements as (B, C, H, W): up to 16 images of at least 16 pixels,
    H x W as square as it comes (16 x 4 x 400 x 400 for n = 10_240_000)."""
    batch = min(16, max(1, n // (classes * 16)))
    pixels = max(1, n // (batch * classes))
    h = max(1, math.isqrt(pixels))
    return batch, classes, h, pixels // h


def _overlap_labels(rng, n):
    b, c, h, w = _overlap_shape(n)
    return rng.integers(0, c, (b, 1, h, w))


def _dice_data(rng, n, dtype):
    labels = _overlap_labels(rng, n)
    x = rng.standard_normal((labels.shape[0], OVERLAP_CLASSES) + labels.shape[2:], dtype=dtype)
    return x, _np_one_hot(labels, dtype)


def _tversky_data(rng, n, dtype):
    labels = _overlap_labels(rng, n)
    x = rng.standard_normal((labels.shape[0], OVERLAP_CLASSES) + labels.shape[2:], dtype=dtype)
    return x, labels


def _np_one_hot(labels, dtype):
    """(B, 1, H, W) labels -> (B, C, H, W) one-hot of dtype."""
    return (labels == np.arange(OVERLAP_CLASSES).reshape(1, -1, 1, 1)).astype(dtype)


# The score of both as L = 1 - (k I + nr) / (u I + a P + b G + dr) per (b, c), with
# I = sum p y, P = sum p, G = sum y over H, W (closs/functional.py's coefficients).
_DICE_COEF = (2.0, 0.0, 1.0, 1.0)
_TVERSKY_COEF = (1.0, 1.0 - sum(TVERSKY_AB)) + TVERSKY_AB


def _np_overlap(x, y, coef):
    """(softmax p, N, D), N and D of shape (B, C, 1, 1)."""
    k, u, a, b = coef
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    i = np.sum(p * y, axis=(2, 3), keepdims=True)
    n = k * i + OVERLAP_SMOOTH
    d = u * i + a * p.sum(axis=(2, 3), keepdims=True) + b * y.sum(axis=(2, 3), keepdims=True)
    d += OVERLAP_SMOOTH
    return p, n, d


def _np_overlap_vg(x, y, coef):
    k, u, a, b = coef
    p, n, d = _np_overlap(x, y, coef)
    r = n / d
    value = np.mean(1 - r)
    gp = y * (-(k - u * r) / d) + a * r / d  # d value / d p, then through the softmax
    gp /= r.size
    g = gp - np.sum(p * gp, axis=1, keepdims=True)
    g *= p
    return value, g


def _np_dice(x, y):
    _, n, d = _np_overlap(x, y, _DICE_COEF)
    return np.mean(1 - n / d)


def _np_dice_vg(x, y):
    return _np_overlap_vg(x, y, _DICE_COEF)


def _np_tversky(x, t):
    _, n, d = _np_overlap(x, _np_one_hot(t, x.dtype), _TVERSKY_COEF)
    return np.mean(1 - n / d)


def _np_tversky_vg(x, t):
    return _np_overlap_vg(x, _np_one_hot(t, x.dtype), _TVERSKY_COEF)


def _monai_dice(mod, p, y):
    """MONAI's DiceLoss formula (mean over B x C) on softmax p, for torch and JAX."""
    tp = (p * y).sum((2, 3))
    fp = p.sum((2, 3)) - tp
    fn = y.sum((2, 3)) - tp
    return mod.mean(1 - (2 * tp + OVERLAP_SMOOTH) / (2 * (tp + 0.5 * fp + 0.5 * fn)
                                                     + OVERLAP_SMOOTH))


def _monai_tversky(mod, p, y):
    """MONAI's TverskyLoss formula (coupled sums, mean over B x C)."""
    alpha, beta = TVERSKY_AB
    tp = (p * y).sum((2, 3))
    fp = (p * (1 - y)).sum((2, 3))
    fn = ((1 - p) * y).sum((2, 3))
    return mod.mean(1 - (tp + OVERLAP_SMOOTH)
                    / (tp + alpha * fp + beta * fn + OVERLAP_SMOOTH))


def _torch_tversky(F, x, t):
    torch = import_peer("torch")
    y = F.one_hot(t[:, 0], x.shape[1]).permute(0, 3, 1, 2).to(x.dtype)
    return _monai_tversky(torch, F.softmax(x, 1), y)


def _jax_tversky(jnp, lax, x, t):
    import jax
    y = jax.nn.one_hot(t[:, 0], x.shape[1], axis=1, dtype=x.dtype)
    return _monai_tversky(jnp, jax.nn.softmax(x, axis=1), y)


def _jax_dice(jnp, lax, x, y):
    import jax
    return _monai_dice(jnp, jax.nn.softmax(x, axis=1), y)


for _spec in [
    LossSpec("dice", "DiceLoss", _dice_data, (0,), _np_dice, _np_dice_vg,
             lambda F, x, y: _monai_dice(import_peer("torch"), F.softmax(x, 1), y), _jax_dice,
             options=(("softmax", True),), title="DiceLoss (softmax, one-hot (B, 4, H, W))",
             sizes=OVERLAP_SIZES, exps=(1, 1),
             monai_fn=lambda monai: monai.losses.DiceLoss(softmax=True)),
    LossSpec("tversky", "TverskyLoss", _tversky_data, (0,), _np_tversky, _np_tversky_vg,
             _torch_tversky, _jax_tversky,
             options=(("softmax", True), ("to_onehot_y", True), ("alpha", TVERSKY_AB[0]),
                      ("beta", TVERSKY_AB[1])),
             title="TverskyLoss (softmax, labels (B, 1, H, W), a=0.3 b=0.7)",
             sizes=OVERLAP_SIZES, exps=(1, 1),
             monai_fn=lambda monai: monai.losses.TverskyLoss(
                 softmax=True, to_onehot_y=True, alpha=TVERSKY_AB[0], beta=TVERSKY_AB[1])),
]:
    LOSSES[_spec.key] = _spec


# ----------------------------------------------------------------------------------
# Sequence loss: CTC (closs/_kernels/_ctc.pyx).
# ----------------------------------------------------------------------------------

# The shape: T=50 steps, C=20 classes (blank 0), padded targets of S=10; the
# batch N = n // (T C) (at least 1), so n = 16000 is the N=16 and n is about
# the number of log-probabilities.  Presets: N = 1, 16 (the issue's), 256.
CTC_T, CTC_C, CTC_S = 50, 20, 10
CTC_SIZES = tuple(CTC_T * CTC_C * batch for batch in (1, 16, 256))
# exp/log per log-probability: alpha's 3-term log-sum-exp (2 exp + 1 log) over
# ~0.8 states per class (W = 2 S + 1 <= 21 states, S in [5, 10], C = 20); for the
# gradient also beta (as alpha), the log-add into A (~2 per state) and
# exp(lp), exp(A + loss - lp) per class.  float32 evaluates them in float64.
CTC_EXPS = (2.5, 8.5)


def _ctc_data(rng, n, dtype):
    N = max(1, n // (CTC_T * CTC_C))
    x = 2.0 * rng.standard_normal((CTC_T, N, CTC_C))
    x -= np.log(np.exp(x).sum(axis=2, keepdims=True))
    return (x.astype(dtype), rng.integers(1, CTC_C, (N, CTC_S)),
            rng.integers(CTC_T - 10, CTC_T + 1, N), rng.integers(CTC_S // 2, CTC_S + 1, N))


def _np_ctc_forward(lp, targets, il, tl):
    """The log-space alpha recursion, vectorised over the batch (float64; inputs
    with il >= 1): (alpha (T, N, W), per-state log-probabilities, states,
    skip mask, loss (N,))."""
    lp = lp.astype(np.float64)
    T, N, _ = lp.shape
    W = 2 * targets.shape[1] + 1
    ext = np.zeros((N, W), np.int64)
    ext[:, 1::2] = targets
    skip = np.zeros((N, W), bool)
    skip[:, 3::2] = ext[:, 3::2] != ext[:, 1:-2:2]
    em = np.take_along_axis(lp, np.broadcast_to(ext, (T, N, W)), axis=2)
    alpha = np.full((T, N, W), -np.inf)
    alpha[0, :, :2] = em[0, :, :2]
    with np.errstate(invalid="ignore"):
        for t in range(1, T):
            a = alpha[t - 1]
            acc = np.logaddexp(a[:, 1:], a[:, :-1])
            acc[:, 1:] = np.where(skip[:, 2:], np.logaddexp(acc[:, 1:], a[:, :-2]), acc[:, 1:])
            alpha[t, :, 0] = a[:, 0] + em[t, :, 0]
            alpha[t, :, 1:] = acc + em[t, :, 1:]
    rows = np.arange(N)
    last = alpha[il - 1, rows]
    loss = -np.logaddexp(last[rows, 2 * tl], np.where(tl > 0, last[rows, 2 * tl - 1], -np.inf))
    return alpha, em, ext, skip, loss


def _np_ctc(lp, targets, il, tl):
    loss = _np_ctc_forward(lp, targets, il, tl)[-1]
    return np.mean(loss / np.maximum(tl, 1)).astype(lp.dtype)


def _np_ctc_vg(lp, targets, il, tl):
    """Beta by the mirrored recursion, gamma by scattering exp(alpha + beta - lp +
    loss) onto the classes; torch's gradient g (exp(lp) - gamma) for t < il."""
    alpha, em, ext, skip, loss = _np_ctc_forward(lp, targets, il, tl)
    T, N, W = alpha.shape
    rows = np.arange(N)
    beta = np.full((T, N, W), -np.inf)
    with np.errstate(invalid="ignore"):
        for t in range(T - 1, -1, -1):
            start = np.full((N, W), -np.inf)
            start[rows, 2 * tl] = em[t, rows, 2 * tl]
            start[rows, 2 * tl - 1] = np.where(tl > 0, em[t, rows, 2 * tl - 1], -np.inf)
            if t == T - 1:
                beta[t] = np.where((il - 1 == t)[:, None], start, -np.inf)
                continue
            b = beta[t + 1]
            acc = np.logaddexp(b[:, :-1], b[:, 1:])
            acc[:, :-1] = np.where(skip[:, 2:], np.logaddexp(acc[:, :-1], b[:, 2:]), acc[:, :-1])
            step = np.concatenate([acc, b[:, -1:]], axis=1) + em[t]
            beta[t] = np.where((il - 1 == t)[:, None], start,
                               np.where((t < il - 1)[:, None], step, -np.inf))
    post = np.exp(alpha + beta - em + loss[None, :, None])
    gamma = np.zeros(lp.shape)
    np.add.at(gamma, (slice(None), rows[:, None], ext), post)
    g = 1.0 / (N * np.maximum(tl, 1))
    mask = np.arange(T)[:, None] < il[None, :]
    grad = (np.exp(lp.astype(np.float64)) - gamma) * (g * mask)[:, :, None]
    return np.mean(loss / np.maximum(tl, 1)).astype(lp.dtype), grad.astype(lp.dtype)


def _optax_importable():
    import importlib.util
    return importlib.util.find_spec("optax") is not None


def _jax_ctc(jnp, lax, lp, targets, il, tl):
    """optax.ctc_loss (batch-major, log_softmax applied inside: its gradient w.r.t.
    normalised log-probabilities is torch's exp(lp) - gamma), reduced as torch's 'mean'."""
    import optax
    T, S = lp.shape[0], targets.shape[1]
    logit_pad = (jnp.arange(T)[None, :] >= il[:, None]).astype(lp.dtype)
    label_pad = (jnp.arange(S)[None, :] >= tl[:, None]).astype(lp.dtype)
    per_seq = optax.ctc_loss(jnp.transpose(lp, (1, 0, 2)), logit_pad, targets, label_pad)
    return jnp.mean(per_seq / jnp.maximum(tl, 1))


LOSSES["ctc"] = LossSpec(
    "ctc", "CTCLoss", _ctc_data, (0,), _np_ctc, _np_ctc_vg,
    lambda F, lp, t, il, tl: F.ctc_loss(lp, t, il, tl),
    _jax_ctc if _optax_importable() else None,  # no JAX peer without optax
    title="CTCLoss (T=50, C=20, S=10)",
    sizes=CTC_SIZES, exps=CTC_EXPS)
