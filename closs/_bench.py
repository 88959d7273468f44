"""Benchmark machinery behind ``closs bench`` and the pytest-benchmark suites in bench/.

Design:

1. ``LOSSES`` describes each regression loss once: how to make its data, the
   closs class, a vectorised NumPy implementation of value and gradient (the
   baseline a careful NumPy user would write), and the torch / JAX expressions.
2. ``make_impls`` turns a (loss, data, mode) into zero-argument callables, one
   per implementation, each called exactly as a user calls it:
   closs ``loss(x, y)`` / ``loss.value_and_grad(x, y)``; torch on
   ``torch.from_numpy`` views, with the ``requires_grad_()`` leaf created inside
   the timed call for "value+grad"; JAX through ``jax.jit`` (compiled during
   warm-up, which is not timed) on arrays already on the device, waiting with
   ``block_until_ready``; NumPy as written below.
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
5. ``run`` loops over the cases, prints progress (tqdm when installed) and
   returns plain dicts; ``format_table`` renders them as text or Markdown.
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

IMPLS = ("closs", "numpy", "torch", "jax", "sklearn")
PEERS = ("torch", "jax", "sklearn")  # reported by `closs info`
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


@dataclasses.dataclass(frozen=True)
class LossSpec:
    key: str  # command-line name
    name: str  # class name (closs and torch.nn)
    make_data: Callable  # (rng, n, dtype) -> tuple of arrays
    grad_args: tuple  # indices of the differentiable arguments
    numpy_value: Callable
    numpy_value_and_grad: Callable
    torch_fn: Callable  # (F, *tensors) -> loss tensor
    jax_fn: Callable  # (jnp, lax, *arrays) -> scalar
    n_args: int = 2  # full-size arrays read (for GB/s; class indices are not counted)
    sklearn_fn: Callable = None  # (grad_mode, *arrays) -> (value, grad), scikit-learn's Cython loss
    title: str = None  # the row's name in tables (default: name)
    options: tuple = ()  # (name, value) pairs for the closs class


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
                 lambda jnp, lax, x, y: jnp.mean(jnp.exp(x) - y * x)),
        LossSpec("gaussian_nll", "GaussianNLLLoss", _gaussian_data, (0, 2), _np_gaussian,
                 _np_gaussian_vg, lambda F, x, y, v: F.gaussian_nll_loss(x, y, v, eps=GAUSS_EPS),
                 _jax_gaussian, n_args=3),
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
             lambda F, x, t: F.cross_entropy(x, t), _jax_ce, n_args=1, sklearn_fn=_sklearn_ce,
             title="CrossEntropyLoss (N, 10)"),
    LossSpec("cross_entropy_1000", "CrossEntropyLoss", _logits_data(1000), (0,), _np_ce,
             _np_ce_vg, lambda F, x, t: F.cross_entropy(x, t), _jax_ce, n_args=1,
             sklearn_fn=_sklearn_ce, title="CrossEntropyLoss (N, 1000)"),
    LossSpec("bce_with_logits", "BCEWithLogitsLoss", _binary_data, (0,), _np_bce_logits,
             _np_bce_logits_vg, lambda F, x, y: F.binary_cross_entropy_with_logits(x, y),
             _jax_bce_logits),
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
             lambda F, x, t: F.nll_loss(x, t), _jax_nll, n_args=1, title="NLLLoss (N, 10)"),
    LossSpec("bce", "BCELoss", _probs_data, (0,), _np_bce, _np_bce_vg,
             lambda F, x, y: F.binary_cross_entropy(x, y), _jax_bce),
    LossSpec("kl_div", "KLDivLoss", _kl_data, (0,), _np_kl, _np_kl_vg,
             lambda F, x, y: F.kl_div(x, y, reduction="batchmean"), _jax_kl,
             options=(("reduction", "batchmean"),), title="KLDivLoss (batchmean)"),
    LossSpec("multilabel_soft_margin", "MultiLabelSoftMarginLoss", _multilabel_data, (0,),
             _np_multilabel, _np_multilabel_vg,
             lambda F, x, y: F.multilabel_soft_margin_loss(x, y), _jax_bce_logits,
             title="MultiLabelSoftMarginLoss (N, 10)"),
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
    """The peer's module (torch, jax, sklearn, tqdm), or an ImportError-ish exception."""
    if name not in _MODULES:
        try:
            if name == "jax":
                os.environ.setdefault("JAX_PLATFORMS", "cpu")
                mod = importlib.import_module("jax")
                mod.config.update("jax_enable_x64", True)  # float64 arrays stay float64
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
        elif name == "jax":
            impls[name] = _jax_impl(spec, arrays, grad_mode)
        elif name == "sklearn" and spec.sklearn_fn is not None:
            impls[name] = _sklearn_impl(spec, arrays, grad_mode)
    return impls


def _sklearn_impl(spec, arrays, grad_mode):
    def to_numpy(out):  # sklearn's gradient is per sample; closs's is of the mean
        value, grad = out
        return float(value), ((grad / len(grad),) if grad_mode else ())

    return Impl("sklearn", lambda: spec.sklearn_fn(grad_mode, *arrays), to_numpy)


def _torch_impl(spec, arrays, grad_mode):
    torch = import_peer("torch")
    F = torch.nn.functional
    fn = spec.torch_fn
    from_numpy = torch.from_numpy
    if not grad_mode:
        def call():
            return fn(F, *[from_numpy(a) for a in arrays])

        return Impl("torch", call, lambda out: (float(out), ()))
    diff = spec.grad_args

    def call():
        ts = [from_numpy(a).requires_grad_() if i in diff else from_numpy(a)
              for i, a in enumerate(arrays)]
        loss = fn(F, *ts)
        loss.backward()
        return loss.detach(), tuple(ts[i].grad for i in diff)

    return Impl("torch", call, lambda out: (float(out[0]), tuple(g.numpy() for g in out[1])))


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
# At large sizes (from PAUSE_FROM elements) a short sleep comes first too.  The
# sleep alone is not enough: after an idle pause a (virtual) CPU runs slowly for
# a while, so an implementation timed right after it looks several times slower.
PAUSE = 0.02
PAUSE_FROM = 5_000_000
WARMUP = 3e-3


def settle(call, n, per_call):
    """Let the previous implementation's threads go quiet, then warm `call` up."""
    if n >= PAUSE_FROM:
        time.sleep(PAUSE)
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


def bytes_moved(spec, n, dtype, mode):
    """Bytes a single pass must read and write: the inputs, plus the gradients."""
    itemsize = np.dtype(dtype).itemsize
    arrays = spec.n_args + (len(spec.grad_args) if mode == "value+grad" else 0)
    return arrays * n * itemsize


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


def run(losses, dtypes, sizes, modes=MODES, impls=IMPLS, budget=FULL, seed=0, progress=True,
        warn=None):
    """Benchmark every case; returns a list of result dicts (see README / --json)."""
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    cases = [(k, dt, n, m) for k in losses for dt in dtypes for n in sizes for m in modes]
    bar = _Progress(len(cases), progress)
    results = []
    data_key, data = None, None
    try:
        for key, dtype, n, mode in cases:
            spec = LOSSES[key]
            label = f"{spec.label} {dtype} {format_size(n)} {mode}"
            bar.start(label)
            if data_key != (key, dtype, n):
                data = None  # free the previous case's arrays first
                data_key = (key, dtype, n)
                rng = np.random.default_rng([seed, list(LOSSES).index(key), n])
                data = spec.make_data(rng, n, dtype)
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
            nbytes = bytes_moved(spec, n, dtype, mode)
            other_load = meter.other_load()
            results.append({
                "loss": spec.label, "key": key, "dtype": dtype, "size": n, "mode": mode,
                "other_load": other_load,
                "bytes": nbytes, "closs_gbps": nbytes / closs_med / 1e9,
                "times": stats,
                "ratios": {m: s["median"] / closs_med for m, s in stats.items() if m != "closs"},
                "check": agreement,
            })
            del case_impls
            bar.advance()
    finally:
        bar.close()
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
        "env": {k: os.environ[k] for k in ("CLOSS_NUM_THREADS", "CLOSS_SIMD", "OMP_NUM_THREADS",
                                           "OMP_WAIT_POLICY", "XLA_FLAGS") if k in os.environ},
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


def format_table(results, markdown=False):
    """The results as an aligned text table or a Markdown table."""
    peers = [m for m in IMPLS[1:] if any(m in r["times"] for r in results)]
    head = ["loss", "dtype", "size", "mode", "closs"]
    for p in peers:
        head += [p, f"{p}/closs"]
    head.append("closs GB/s")
    rows = []
    for r in results:
        busy = (r.get("other_load") or 0.0) > BUSY
        mode = r["mode"] + (" (busy)" if busy else "")
        row = [r["loss"], r["dtype"], format_size(r["size"]), mode, _cell(r["times"]["closs"])]
        for p in peers:
            if p in r["times"]:
                flag = "" if r["check"][p]["ok"] else " MISMATCH"
                row += [_cell(r["times"][p]) + flag, f"{r['ratios'][p]:.2f}"]
            else:
                row += ["-", "-"]
        row.append(f"{r['closs_gbps']:.2f}")
        rows.append(row)
    numeric = [False] * 4 + [True] * (len(head) - 4)
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

    out = [line(head), line(["-" * w for w in widths])] + [line(row) for row in rows]
    return "\n".join(out)


TABLE_NOTE = ("median time per call, ± half the inter-quartile range; peer/closs > 1 means "
              "closs is faster; GB/s counts the inputs read plus the gradients written once; "
              f"(busy): other processes used more than {BUSY:.0%} of the CPUs during that case.")
