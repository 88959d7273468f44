"""Losses over feature rows: CosineEmbeddingLoss, TripletMarginLoss,
TripletMarginWithDistanceLoss (spec §0, §17, §19, §20).

* spec anchors and hand-checked kinks (cos == margin, margin + d+ - d- == 0,
  the swap tie split 1/2 - 1/2, the max-norm's even split between tied
  entries): fixed numbers, no torch needed;
* golden files (tests/golden/features/, made by tests/golden/features/make_golden.py),
  checked without torch;
* parity with torch 2.13 through every closs route (class forward + backward,
  value_and_grad, functional with/without return_grad, explicit grad_output):
  every option (margin, p in {2, 1, 3, 1.5, 0.5, -1, 0, inf, -inf}, eps, swap,
  the built-in distances and user callables), reductions, float32/float64,
  every shape form ((N, D), unbatched (D,), 0-d and (N, M, D) triplets,
  broadcast batch / feature sizes, N = 0, D = 0, D = 1, large D), targets
  other than +-1, zero and tiny vectors, NaN / inf in every operand;
* 4th-order finite differences (float64) for every gradient; hypothesis
  properties against an independent NumPy implementation of the spec's
  formulas;
* memory layouts, read-only arrays, inputs never modified; bit-for-bit
  agreement of the routes, of 1 vs 2 threads and of every instruction-set path;
* the gradient contract of distance_function callables;
* bad input: exception type per API.md, message naming the argument.

Tolerances (conftest.assert_close): rtol 1e-12 (float64) / 1e-5 (float32)
with an absolute tolerance of rtol times a scale.  For gradients the scale is
the magnitude of the terms each entry is a difference of (e.g. x2 / den and
cos x1 / m1 for the cosine), not of the entry itself: with D = 1 the cosine's
gradient is exactly 0 in exact arithmetic and both torch and closs return
rounding noise of those terms' size.
"""
import glob
import json
import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp

import closs
import closs.functional as CF

from conftest import (
    FLOATS,
    REDUCTIONS,
    LossCase,
    assert_close,
    assert_identical,
    closs_routes,
    rng_for,
    run_every_isa,
)

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "features")
DTYPE_IDS = ["f32", "f64"]
COS = "cosine_embedding_loss"
TRIP = "triplet_margin_loss"
TWD = "triplet_margin_with_distance_loss"
CLASS_OF = {COS: "CosineEmbeddingLoss", TRIP: "TripletMarginLoss",
            TWD: "TripletMarginWithDistanceLoss"}
INF = math.inf
P_VALUES = [2.0, 1.0, 3.0, 1.5, 0.5, -1.0, 0.0, INF, -INF]
COS_EPS = float(np.float32(1e-12))  # torch's EPSILON in cosine_embedding_loss


def n_diff(func):
    return 2 if func == COS else 3


def case_of(func, **kwargs):
    return LossCase(CLASS_OF[func], func, tuple(kwargs.items()))


# ---------------------------------------------------------------------------------
# distance callables (the gradient contract) and their torch twins
# ---------------------------------------------------------------------------------


def sq_euclidean(x, y, return_grad=False):
    """Squared Euclidean distance with its gradient (the documented contract)."""
    d = x - y
    dist = np.sum(d * d, axis=-1)
    return (dist, (2 * d, -2 * d)) if return_grad else dist


def np_cosine_distance(x, y, return_grad=False):
    """1 - cosine_similarity(x, y, dim=-1, eps=1e-8) in NumPy, torch's eps rules."""
    eps = 1e-8
    nx = np.sqrt(np.sum(x * x, axis=-1))
    ny = np.sqrt(np.sum(y * y, axis=-1))
    cx, cy = np.maximum(nx, eps), np.maximum(ny, eps)
    dot = np.sum(x * y, axis=-1)
    dist = 1 - dot / (cx * cy)
    if not return_grad:
        return dist
    k = (1 / (cx * cy))[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        hx = (dot / (cx * cx * cy))[..., None] * np.where(nx == 0, 0, 1 / nx)[..., None]
        hy = (dot / (cy * cy * cx))[..., None] * np.where(ny == 0, 0, 1 / ny)[..., None]
    return dist, (x * hx - y * k, y * hy - x * k)


def value_only(x, y):
    """A distance without a gradient: values only."""
    return np.sqrt(np.sum((x - y) ** 2, axis=-1))


def with_kwargs(x, y, **options):
    """A distance taking **kwargs: return_grad reaches it."""
    return sq_euclidean(x, y, options.get("return_grad", False))


def torch_distance(name):
    import torch

    return {
        None: None,
        "pairwise": None,
        "cosine": lambda x, y: 1.0 - torch.nn.functional.cosine_similarity(x, y, dim=-1),
        "np_cosine": lambda x, y: 1.0 - torch.nn.functional.cosine_similarity(x, y, dim=-1),
        "sq": lambda x, y: ((x - y) ** 2).sum(-1),
        "value_only": lambda x, y: ((x - y) ** 2).sum(-1).sqrt(),
    }[name]


CALLABLES = {"np_cosine": np_cosine_distance, "sq": sq_euclidean, "value_only": value_only}


def closs_kwargs(func, kwargs):
    """kwargs with a callable's test name replaced by the callable."""
    kw = dict(kwargs)
    if kw.get("distance_function") in CALLABLES:
        kw["distance_function"] = CALLABLES[kw["distance_function"]]
    return kw


# ---------------------------------------------------------------------------------
# torch reference and closs routes
# ---------------------------------------------------------------------------------


def torch_ref(func, args, kwargs, reduction="mean", grad_output=None):
    """torch's value and autograd gradients (one per differentiable argument)."""
    import torch

    kw = dict(kwargs, reduction=reduction)
    if func == TWD:
        kw["distance_function"] = torch_distance(kw.get("distance_function"))
    ts = []
    for i, a in enumerate(args):
        t = torch.from_numpy(np.array(a, copy=True))
        if i < n_diff(func):
            t.requires_grad_(True)
        ts.append(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = getattr(torch.nn.functional, func)(*ts, **kw)
    go = torch.ones_like(out) if grad_output is None else torch.as_tensor(
        np.asarray(grad_output), dtype=out.dtype).reshape(out.shape)
    out.backward(go)
    grads = [(torch.zeros_like(t) if t.grad is None else t.grad).numpy()
             for t in ts[:n_diff(func)]]
    return out.detach().numpy(), grads


def routes(func, args, kwargs, reduction="mean", grad_output=None):
    return closs_routes(case_of(func, **closs_kwargs(func, kwargs)), args, reduction,
                        grad_output)


def full_shape_of(func, args):
    """The shape the differentiable arguments broadcast to."""
    if func == COS:
        return loss_shape_of(func, args) + np.shape(args[0])[-1:]
    return np.broadcast_shapes(*[np.shape(a) for a in args])


def row_scales(func, args, reduction, grad_output, grads, kwargs=None):
    """Per row of the loss, the magnitude of the terms that row's gradient
    entries are differences of (see the module docstring).

    CosineEmbedding: max|x2| / den + |cos| max|x1| / m1 (and symmetric), times
    the row's upstream factor.  Triplets: the largest entry of the row's
    gradients (the terms d d+ / d u, d d- / d v ... appear alone in some
    argument's gradient); grads are the reference gradients."""
    loss_shape = loss_shape_of(func, args)
    full = full_shape_of(func, args)
    go = 1.0 if grad_output is None else grad_output
    factor = np.abs(np.broadcast_to(np.asarray(go, np.float64), loss_shape))
    if reduction == "mean":
        factor = factor / max(math.prod(loss_shape), 1)
    if func == COS:
        x1, x2 = (np.broadcast_to(np.asarray(a, np.float64), full) for a in args[:2])
        with np.errstate(all="ignore"):
            m1 = np.sum(x1 * x1, -1) + COS_EPS
            m2 = np.sum(x2 * x2, -1) + COS_EPS
            den = np.sqrt(m1 * m2)
            cos = np.abs(np.sum(x1 * x2, -1) / den)
            big1 = np.max(np.abs(x1), -1, initial=0.0)
            big2 = np.max(np.abs(x2), -1, initial=0.0)
            term = np.maximum(big2 / den + cos * big1 / m1, big1 / den + cos * big2 / m2)
        return np.where(np.isfinite(term), term, 0.0) * factor
    term = np.zeros(loss_shape)
    kwargs = kwargs or {}
    if func == TWD and kwargs.get("distance_function") in ("cosine", "np_cosine"):
        # d (1 - cos(x, y)) / d x = cos x / c_x^2 - y / (c_x c_y): terms of size
        # 1 / c (with D = 1 they cancel exactly: the gradient is 0)
        with np.errstate(all="ignore"):
            norms = [np.maximum(np.sqrt(np.sum(np.broadcast_to(np.asarray(a, np.float64),
                                                               full) ** 2, -1)), 1e-8)
                     for a in args]
            small = np.minimum(np.minimum(norms[0], norms[1]), norms[2])
            cos_term = np.where(np.isfinite(small), 2 / small, 0.0) * factor
        term = np.maximum(term, cos_term)
    for g in grads:
        if np.shape(g) == full:
            a = np.abs(np.asarray(g, np.float64))
            a = np.where(np.isfinite(a), a, 0.0)
            term = np.maximum(term, np.max(a, -1, initial=0.0) if full else a)
    return term


def assert_grad_close(actual, expected, dtype, scales, full, err_msg=""):
    """assert_close with an absolute tolerance of rtol times each row's scale
    (one scale for all rows when the argument was broadcast)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == np.dtype(dtype) and actual.shape == expected.shape, err_msg
    rtol = 1e-12 if np.dtype(dtype) == np.float64 else 1e-5
    scales = np.asarray(scales, np.float64)
    if expected.shape == full:
        atol = rtol * scales[..., None] if full else rtol * scales
    else:
        atol = rtol * float(np.max(scales, initial=0.0))
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    assert np.array_equal(np.isnan(a), np.isnan(e)), f"NaN positions differ {err_msg}"
    inf = np.isinf(e)
    assert np.array_equal(a[inf], e[inf]), f"infinities differ {err_msg}"
    fin = np.isfinite(e)
    err = np.where(fin, np.abs(a - e) - (atol + rtol * np.abs(e)), 0.0)
    assert np.all(err <= 0), (
        f"{err_msg}: {np.sum(err > 0)} entries differ, "
        f"worst at {np.unravel_index(np.argmax(err), err.shape)}"
        f"\nactual {a}\nexpected {e}")


def check_parity(func, args, kwargs, reduction, grad_output=None, *, value_scale=None):
    """closs (every route) against torch; returns the closs routes."""
    tv, tg = torch_ref(func, args, kwargs, reduction, grad_output)
    got = routes(func, args, kwargs, reduction, grad_output)
    dtype = np.result_type(*args[:n_diff(func)])
    scales = row_scales(func, args, reduction, grad_output, tg, kwargs)
    full = full_shape_of(func, args)
    for route, (value, grads) in got.items():
        if reduction == "none":
            assert isinstance(value, np.ndarray), route
        else:
            assert type(value) is dtype.type, f"{route}: {type(value)}"
        assert_close(value, tv, dtype, scale=value_scale, err_msg=f"{route} value")
        if grads is None:
            continue
        assert len(grads) == n_diff(func)
        for i, (g, t, a) in enumerate(zip(grads, tg, args)):
            assert g.shape == np.shape(a) and g.dtype == np.asarray(a).dtype, route
            assert_grad_close(g, t, g.dtype, scales, full, err_msg=f"{route} grad {i}")
    return got


def assert_routes_identical(got):
    """forward + backward == value_and_grad == functional(return_grad=True), bit for bit."""
    ref_value, ref_grads = got["value_and_grad"]
    for route, (value, grads) in got.items():
        assert_identical(value, ref_value, route)
        if grads is not None:
            for g, r in zip(grads, ref_grads):
                assert_identical(g, r, route)


# ---------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------


def cos_args(rng, shape, dtype, *, target_shape=None, shape2=None, targets=(1.0, -1.0)):
    shape2 = shape if shape2 is None else shape2
    x1 = rng.normal(0.0, 1.0, shape).astype(dtype)
    x2 = rng.normal(0.0, 1.0, shape2).astype(dtype)
    if target_shape is None:
        target_shape = np.broadcast_shapes(shape[:-1], shape2[:-1])
    y = rng.choice(np.array(targets), target_shape).astype(np.float32)
    return [x1, x2, y]


def trip_args(rng, shapes, dtype):
    return [rng.normal(0.0, 1.0, s).astype(dtype) for s in shapes]


def rand_grad_output(rng, reduction, loss_shape, dtype):
    if reduction == "none":
        return rng.uniform(-2, 2, loss_shape).astype(dtype)
    return float(rng.uniform(0.25, 2.0))


def loss_shape_of(func, args):
    if func == COS:
        return np.broadcast_shapes(args[0].shape[:-1], args[1].shape[:-1], np.shape(args[2]))
    full = np.broadcast_shapes(*[np.shape(a) for a in args])
    return full[:-1]


# =================================================================================
# Spec anchors, worked examples, kinks (no torch)
# =================================================================================

X1 = np.array([[1., 0, 0], [1, 1, 0], [0, 0, 0], [3, 4, 0]])
X2 = np.array([[0., 1, 0], [1, 1, 0], [1, 2, 3], [-3, -4, 0]])
Y = np.array([1, -1, 1, -1])
A3 = np.array([[0., 0], [1, 1], [0, 0]])
P3 = np.array([[1., 0], [1, 1], [3, 4]])
N3 = np.array([[0., 2], [1, 1.5], [1, 1]])


def test_cosine_embedding_anchor():
    none = CF.cosine_embedding_loss(X1, X2, Y, reduction="none")
    np.testing.assert_allclose(none, [1.0, 0.9999999999995, 1.0, 0.0], rtol=1e-13)
    assert CF.cosine_embedding_loss(X1, X2, Y) == pytest.approx(0.749999999999875, rel=1e-14)
    assert closs.CosineEmbeddingLoss(reduction="sum")(X1, X2, Y) == pytest.approx(
        2.9999999999995, rel=1e-14)


def test_cosine_embedding_float32_epsilon():
    """x1 = x2 = [1e-7, 0]: the digits prove the float32 epsilon (spec §17)."""
    v = np.array([1e-7, 0.0])
    assert CF.cosine_embedding_loss(v, v, np.array(1)) == pytest.approx(0.9900990098618194,
                                                                         rel=1e-13)
    # with a float64 1e-12 it would be 0.990099009900..., off in the 11th digit
    assert 1 - 1e-14 / (1e-14 + 1e-12) != pytest.approx(0.9900990098618194, rel=1e-12)


def test_triplet_anchor():
    none = CF.triplet_margin_loss(A3, P3, N3, reduction="none")
    np.testing.assert_allclose(none, [2.498e-13, 0.5000024142125624, 4.585786451840471],
                               rtol=1e-3, atol=0)  # the first digits as given in the spec
    np.testing.assert_allclose(none[1:], [0.5000024142125624, 4.585786451840471], rtol=1e-14)
    assert CF.triplet_margin_loss(A3, P3, N3) == pytest.approx(1.6952629553510945, rel=1e-14)


def test_triplet_with_distance_cosine_anchor():
    a, p, n = np.array([[1., 0], [1, 1]]), np.array([[1., 1], [0, 1]]), np.array([[0., 1], [1, 0]])
    got = CF.triplet_margin_with_distance_loss(a, p, n, distance_function="cosine",
                                               reduction="none")
    np.testing.assert_allclose(got, [0.29289321881345254, 1.0], rtol=1e-14)
    # the same through a user callable
    got2 = CF.triplet_margin_with_distance_loss(a, p, n, distance_function=np_cosine_distance,
                                                reduction="none")
    np.testing.assert_allclose(got2, got, rtol=1e-14)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_cosine_kink_passes(dtype):
    """cos == margin exactly with y = -1: the gradient passes (clamp_min)."""
    x1, x2 = np.array([[1., 0]], dtype), np.array([[0., 1]], dtype)
    v, (g1, g2) = CF.cosine_embedding_loss(x1, x2, np.array([-1]), margin=0.0,
                                           reduction="sum", return_grad=True)
    assert v == 0
    den = 1 + COS_EPS  # sqrt((1 + e)(1 + e))
    assert_close(g1, np.array([[0, 1 / den]], dtype), dtype)
    assert_close(g2, np.array([[1 / den, 0]], dtype), dtype)
    # just below the margin: no gradient
    v, (g1, g2) = CF.cosine_embedding_loss(x1, x2, np.array([-1]), margin=1e-3,
                                           reduction="sum", return_grad=True)
    assert v == 0 and not g1.any() and not g2.any()


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_triplet_kink_passes(dtype):
    """margin + d(a, p) - d(a, n) == 0 exactly (eps = 0): the gradient passes."""
    a, p, n = (np.array([v], dtype) for v in ([0., 0], [3., 4], [0., 6]))
    v, (ga, gp, gn) = CF.triplet_margin_loss(a, p, n, margin=1.0, eps=0.0, reduction="sum",
                                             return_grad=True)
    assert v == 0
    assert_close(ga, np.array([[-0.6, 0.2]], dtype), dtype)
    assert_close(gp, np.array([[0.6, 0.8]], dtype), dtype)
    assert_close(gn, np.array([[0.0, -1.0]], dtype), dtype)


@pytest.mark.parametrize("p", [3.0, 8.0, 1.5])
@pytest.mark.parametrize("scale", [1e-6, 1e-25])
def test_general_p_gradient_of_small_distances_stays_finite(p, scale):
    """A small distance d with p > 2: the factor d^(1-p) alone leaves float32's
    range (d = 1e-6, p = 8: 1e41) although the gradient (|u| / d)^(p-1) is of
    order 1; float32 gives float64's gradient to float32 accuracy."""
    rng = rng_for("small-p", p, scale)
    a64 = rng.uniform(-1, 1, (3, 5))
    p64 = a64 + scale * rng.uniform(-1, 1, (3, 5))
    n64 = a64 + rng.uniform(-1, 1, (3, 5))
    kw = {"p": p, "eps": 0.0, "margin": 2.0, "reduction": "sum", "return_grad": True}
    v64, g64 = CF.triplet_margin_loss(a64, p64, n64, **kw)
    a, q, n = (x.astype(np.float32) for x in (a64, p64, n64))
    v32, g32 = CF.triplet_margin_loss(a, q, n, **kw)
    # float32's own differences a - q (rounded inputs), in float64
    v_ref, g_ref = CF.triplet_margin_loss(*(x.astype(np.float64) for x in (a, q, n)), **kw)
    assert np.isfinite(v64) and all(np.isfinite(g).all() for g in g64)
    assert_close(v32, v_ref, np.float32)
    for g, r in zip(g32, g_ref):
        assert np.isfinite(g).all()
        assert_close(g, r, np.float32, scale=max(1.0, float(np.abs(r).max())))


@pytest.mark.parametrize("case", [
    # |u|^p underflows to 0: d = 0, where the derivative is masked to 0 (not
    # (|u| / 0)^(p-1) * 0 = nan)
    ([[1e-200, 0.5]], [[0.0, 0.5]], [[1.0, 1.0]], 3.0, 2.0),
    # a subnormal entry with p < 1 (hypothesis): |u| / d underflows, the power
    # from logs does not (inactive row: 0, not inf * 0)
    ([[0.0, 0.0]], [[0.0, 0.0]], [[3.0, 5e-324]], 0.5, 1.0),
])
def test_general_p_extreme_distances_as_torch(torch, case):
    *rows, p, margin = case
    a, q, n = (np.array(r) for r in rows)
    v, g = CF.triplet_margin_loss(a, q, n, p=p, eps=0.0, margin=margin, reduction="sum",
                                  return_grad=True)
    ts = [torch.tensor(x, requires_grad=True) for x in (a, q, n)]
    tv = torch.nn.functional.triplet_margin_loss(*ts, p=p, eps=0.0, margin=margin,
                                                 reduction="sum")
    tv.backward()
    assert_close(v, tv.item(), np.float64)
    for got, t in zip(g, ts):
        assert_close(got, t.grad.numpy(), np.float64)


@pytest.mark.parametrize("dtype, p, big", [
    (np.float32, 2.0, 3e19), (np.float32, 2.0, 1e38), (np.float64, 2.0, 1e160),
    (np.float64, 3.0, 1e-110), (np.float64, 0.5, 1e300), (np.float32, 1.5, 1e-30)])
@pytest.mark.parametrize("swap", [False, True], ids=["noswap", "swap"])
def test_one_feature_distance_is_its_magnitude_as_torch(torch, dtype, p, big, swap):
    """Over D = 1 torch's norm is |u| for every p, where u^2 or |u|^p would
    overflow or underflow (float32 p = 2 past 1.8e19: inf - inf = nan before)."""
    a = np.array([[big], [big], [0.0], [-big]], dtype)
    q = np.array([[-big], [0.0], [big], [big]], dtype)
    n = np.array([[0.0], [-big], [-big], [0.0]], dtype)
    kw = {"p": p, "swap": swap, "eps": 0.0, "reduction": "none"}
    v, g = CF.triplet_margin_loss(a, q, n, return_grad=True, **kw)
    ts = [torch.tensor(x, requires_grad=True) for x in (a, q, n)]
    tv = torch.nn.functional.triplet_margin_loss(*ts, **kw)
    tv.sum().backward()
    np.testing.assert_array_equal(v, tv.detach().numpy())
    assert np.isfinite(v).all() and v[0] == v.dtype.type(big) + 1  # margin + 2 big - big
    for got, t in zip(g, ts):
        assert_close(got, t.grad.numpy(), dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_swap_tie_splits_half_half(dtype):
    """d(a, n) == d(p, n) exactly: torch.minimum sends half to each."""
    a, p, n = (np.array([v], dtype) for v in ([0., 0], [2., 0], [1., 3]))
    v, (ga, gp, gn) = CF.triplet_margin_loss(a, p, n, margin=2.0, eps=0.0, swap=True,
                                             reduction="sum", return_grad=True)
    r10 = math.sqrt(10)
    assert v == pytest.approx(4 - r10, rel=1e-6)
    u = np.array([-1.0, 0.0])  # (a - p) / |a - p|
    va = np.array([-1.0, -3.0]) / r10  # (a - n) / |a - n|
    w = np.array([1.0, -3.0]) / r10  # (p - n) / |p - n|
    assert_close(ga[0], (u - 0.5 * va).astype(dtype), dtype)
    assert_close(gp[0], (-u - 0.5 * w).astype(dtype), dtype)
    assert_close(gn[0], (0.5 * va + 0.5 * w).astype(dtype), dtype)


def test_max_norm_ties_split_evenly():
    """p = inf: the subgradient is split between the entries at the max (torch)."""
    a, p, n = np.array([[1., 0, 3]]), np.array([[1., 1, 5]]), np.array([[0., 2, 3]])
    _, g = CF.triplet_margin_loss(a, p, n, p=INF, eps=0.0, reduction="sum", return_grad=True)
    for got, want in zip(g, ([0, 1, -1], [0, 0, 1], [0, -1, 0])):
        np.testing.assert_array_equal(got[0], want)
    _, g = CF.triplet_margin_loss(a, p, n, p=INF, eps=0.0, swap=True, reduction="sum",
                                  return_grad=True)
    for got, want in zip(g, ([0, 0.5, -1], [0, 0, 0.5], [0, -0.5, 0.5])):
        np.testing.assert_array_equal(got[0], want)


def test_eps_keeps_equal_rows_differentiable():
    """a == p: with eps = 0 torch masks u / |u| (no gradient through d(a, p));
    the default eps keeps it differentiable (spec §19)."""
    a, n = np.array([[1., 2.]]), np.array([[1.6, 2.8]])  # d(a, n) = 1 < margin: active
    _, (ga, gp, gn) = CF.triplet_margin_loss(a, a, n, eps=0.0, reduction="sum",
                                             return_grad=True)
    np.testing.assert_array_equal(gp, [[0.0, 0.0]])
    np.testing.assert_allclose(ga, [[0.6, 0.8]], rtol=1e-15)  # -(a - n) / |a - n|
    np.testing.assert_allclose(gn, [[-0.6, -0.8]], rtol=1e-15)
    _, (_, gp, _) = CF.triplet_margin_loss(a, a, n, reduction="sum", return_grad=True)
    np.testing.assert_allclose(gp, -np.full((1, 2), 1 / math.sqrt(2)), rtol=1e-12)


def test_empty_features():
    """D = 0: cos 0 (spec §17); every distance 0 so the triplet loss is the margin."""
    got = CF.cosine_embedding_loss(np.zeros((2, 0)), np.zeros((2, 0)), np.array([1, -1]),
                                   reduction="none")
    np.testing.assert_array_equal(got, [1.0, 0.0])
    e = np.zeros((3, 0))
    for p in (2.0, 1.0, 0.5, 0.0):
        v, g = CF.triplet_margin_loss(e, e, e, margin=0.7, p=p, reduction="none",
                                      return_grad=True)
        np.testing.assert_array_equal(v, [0.7] * 3)
        assert [x.shape for x in g] == [(3, 0)] * 3


def test_zero_target_values_give_zero():
    got = CF.cosine_embedding_loss(X1, X2, np.array([0, 2, 0.5, np.nan]), reduction="none")
    np.testing.assert_array_equal(got, [0, 0, 0, 0])


def test_distance_none_is_pairwise_is_triplet():
    rng = rng_for("none-is-pairwise")
    a, p, n = trip_args(rng, [(20, 7)] * 3, np.float64)
    for swap in (False, True):
        ref = CF.triplet_margin_loss(a, p, n, swap=swap, margin=0.8, reduction="none",
                                     return_grad=True)
        for df in (None, "pairwise"):
            got = CF.triplet_margin_with_distance_loss(a, p, n, distance_function=df, swap=swap,
                                                       margin=0.8, reduction="none",
                                                       return_grad=True)
            assert_identical(got[0], ref[0])
            for g, r in zip(got[1], ref[1]):
                assert_identical(g, r)


def test_builtin_cosine_matches_callable():
    rng = rng_for("cosine-vs-callable")
    a, p, n = trip_args(rng, [(30, 9)] * 3, np.float64)
    a[3] = 0.0
    p[4] *= 1e-10
    for swap in (False, True):
        v1, g1 = CF.triplet_margin_with_distance_loss(a, p, n, distance_function="cosine",
                                                      swap=swap, reduction="none",
                                                      return_grad=True)
        v2, g2 = CF.triplet_margin_with_distance_loss(a, p, n,
                                                      distance_function=np_cosine_distance,
                                                      swap=swap, reduction="none",
                                                      return_grad=True)
        assert_close(v1, v2, np.float64, scale=1.0)
        for x, y in zip(g1, g2):
            assert_close(x, y, np.float64, scale=float(np.max(np.abs(y))))


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
    assert {p.values[0] for p in GOLDEN} == {COS, TRIP, TWD}
    assert len(GOLDEN) >= 60


@pytest.mark.parametrize("func, case", GOLDEN)
def test_golden(func, case):
    args = [_dec(a) for a in case["args"]]
    kwargs = case["kwargs"]
    reduction = case["reduction"]
    go = _dec(case["grad_output"])
    want_value = _dec(case["value"])
    want_grads = [_dec(g) for g in case["grads"]]
    crit = getattr(closs, CLASS_OF[func])(reduction=reduction, **kwargs)
    results = [getattr(CF, func)(*args, reduction=reduction, return_grad=True, grad_output=go,
                                 **kwargs),
               (crit(*args), crit.backward(go))]
    scales = row_scales(func, args, reduction, go, want_grads, kwargs)
    full = full_shape_of(func, args)
    for value, grads in results:
        assert np.shape(value) == np.shape(want_value)
        assert_close(value, want_value, np.float64)
        for g, w in zip(grads, want_grads):
            assert_grad_close(g, w, np.float64, scales, full)


# =================================================================================
# Parity with torch
# =================================================================================

COS_SHAPES = [  # (x1 shape, x2 shape, target shape)
    ((6, 5), (6, 5), (6,)),
    ((5,), (5,), ()),
    ((1, 5), (6, 5), (6,)),
    ((6, 5), (1, 5), (1,)),
    ((1, 4), (1, 4), (3,)),
    ((3, 1), (3, 1), (3,)),
    ((0, 4), (0, 4), (0,)),
    ((4, 0), (4, 0), (4,)),
    ((70, 130), (70, 130), (70,)),
]
COS_SHAPE_IDS = ["x".join(map(str, s[0])) + "|" + "x".join(map(str, s[1])) + "|"
                 + "x".join(map(str, s[2])) for s in COS_SHAPES]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("shapes", COS_SHAPES, ids=COS_SHAPE_IDS)
@pytest.mark.parametrize("margin", [0.0, 0.4, -0.3])
def test_cosine_embedding_torch(torch, margin, shapes, dtype, reduction):
    rng = rng_for("cos", margin, shapes, dtype, reduction)
    args = cos_args(rng, shapes[0], dtype, shape2=shapes[1], target_shape=shapes[2])
    go = rand_grad_output(rng, reduction, loss_shape_of(COS, args), dtype)
    got = check_parity(COS, args, {"margin": margin}, reduction)
    assert_routes_identical(got)
    assert_routes_identical(check_parity(COS, args, {"margin": margin}, reduction, go))


@pytest.mark.parametrize("target_dtype", [np.int64, np.int8, np.uint8, np.float32, np.float64,
                                          np.bool_])
def test_cosine_embedding_target_dtypes(torch, target_dtype):
    rng = rng_for("cos-target", target_dtype)
    x1, x2, _ = cos_args(rng, (8, 4), np.float64)
    vals = [1, -1, 0, 2, 1, -1, 1, -1] if target_dtype not in (np.uint8, np.bool_) \
        else [1, 0, 2, 1, 0, 1, 1, 0]
    y = np.array(vals).astype(target_dtype)
    for reduction in REDUCTIONS:
        check_parity(COS, [x1, x2, y], {"margin": 0.1}, reduction)


def test_cosine_embedding_float_targets_compare_in_their_dtype(torch):
    """y = 0.99999999999 (float64) is not 1, even against float32 inputs."""
    rng = rng_for("cos-target-exact")
    x1, x2, _ = cos_args(rng, (3, 4), np.float32)
    y = np.array([0.99999999999, -1.0, 1.0])
    check_parity(COS, [x1, x2, y], {}, "none")
    assert CF.cosine_embedding_loss(x1, x2, y, reduction="none")[0] == 0


TRIP_SHAPES = [
    [(6, 5)] * 3,
    [(5,)] * 3,
    [()] * 3,
    [(2, 3, 4)] * 3,
    [(1, 5), (6, 5), (6, 1)],
    [(6, 1), (1, 5), (6, 5)],
    [(2, 1, 4), (1, 3, 4), (2, 3, 4)],
    [(0, 4)] * 3,
    [(3, 1)] * 3,
    [(40, 70)] * 3,
]
TRIP_SHAPE_IDS = ["|".join("x".join(map(str, s)) or "0d" for s in shapes)
                  for shapes in TRIP_SHAPES]


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("shapes", TRIP_SHAPES, ids=TRIP_SHAPE_IDS)
@pytest.mark.parametrize("swap", [False, True], ids=["noswap", "swap"])
@pytest.mark.parametrize("p", P_VALUES)
def test_triplet_torch(torch, p, swap, shapes, dtype):
    rng = rng_for("trip", p, swap, shapes, dtype)
    args = trip_args(rng, shapes, dtype)
    for reduction in REDUCTIONS:
        for eps in (1e-6, 0.0, 0.25):
            kw = {"p": p, "swap": swap, "eps": eps, "margin": 0.9}
            check_parity(TRIP, args, kw, reduction)
        go = rand_grad_output(rng, reduction, loss_shape_of(TRIP, args), dtype)
        assert_routes_identical(check_parity(TRIP, args, {"p": p, "swap": swap}, reduction, go))


@pytest.mark.parametrize("p", [2.0, 1.0, 0.5, 0.0])
def test_triplet_empty_features_torch(torch, p):
    args = [np.zeros((3, 0))] * 3
    for reduction in REDUCTIONS:
        check_parity(TRIP, args, {"p": p, "margin": 0.3}, reduction)


@pytest.mark.parametrize("margin", [0.1, 1.0, 2.5, np.nan])
def test_triplet_margins_torch(torch, margin):
    rng = rng_for("trip-margin", margin)
    args = trip_args(rng, [(9, 4)] * 3, np.float64)
    for reduction in REDUCTIONS:
        check_parity(TRIP, args, {"margin": margin, "swap": True}, reduction)


def test_triplet_large_rows_torch(torch):
    """Few long rows (D > one chunk's elements) and many short ones."""
    rng = rng_for("trip-large")
    for shape in [(2, 40_000), (5000, 3)]:
        for dtype in FLOATS:
            args = trip_args(rng, [shape] * 3, dtype)
            # the loss is a difference of distances ~ sqrt(2 D): judged on their scale
            scale = 2 * math.sqrt(2 * shape[1])
            for reduction in ("mean", "none"):
                check_parity(TRIP, args, {"swap": True, "margin": 2.0}, reduction,
                             value_scale=scale)
                check_parity(COS, [args[0], args[1], np.where(args[2][:, 0] > 0, 1, -1)],
                             {"margin": 0.05}, reduction)


TWD_DISTANCES = [None, "pairwise", "cosine", "np_cosine", "sq"]


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("shapes", [[(6, 5)] * 3, [(5,)] * 3, [(2, 3, 4)] * 3,
                                    [(1, 5), (6, 5), (6, 5)], [(0, 3)] * 3, [(4, 1)] * 3],
                         ids=["6x5", "5", "2x3x4", "bcast", "0x3", "4x1"])
@pytest.mark.parametrize("swap", [False, True], ids=["noswap", "swap"])
@pytest.mark.parametrize("distance", TWD_DISTANCES, ids=str)
def test_triplet_with_distance_torch(torch, distance, swap, shapes, dtype):
    rng = rng_for("twd", distance, swap, shapes, dtype)
    args = trip_args(rng, shapes, dtype)
    for reduction in REDUCTIONS:
        kw = {"distance_function": distance, "swap": swap, "margin": 0.6}
        check_parity(TWD, args, kw, reduction)
        go = rand_grad_output(rng, reduction, loss_shape_of(TWD, args), dtype)
        assert_routes_identical(check_parity(TWD, args, kw, reduction, go))


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_cosine_distance_small_and_zero_vectors_torch(torch, dtype):
    """Norms below cosine_similarity's eps: clamped in the division only."""
    rng = rng_for("twd-small", dtype)
    a, p, n = trip_args(rng, [(6, 4)] * 3, dtype)
    a[0] = 0.0
    p[1] *= dtype(1e-9)
    n[2] *= dtype(1e-9)
    a[3] *= dtype(1e-9)
    p[3] = 0.0
    for swap in (False, True):
        for reduction in ("none", "sum"):
            check_parity(TWD, [a, p, n], {"distance_function": "cosine", "swap": swap},
                         reduction)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_zero_vectors_torch(torch, dtype):
    """A zero x1 gives cos 0 and gradients of size 1/sqrt(eps) (spec §17)."""
    rng = rng_for("zeros", dtype)
    x1, x2, _ = cos_args(rng, (4, 3), dtype)
    x1[0] = 0.0
    x2[1] = 0.0
    x1[2] = x2[2] = 0.0
    y = np.array([1, -1, 1, -1])
    for reduction in REDUCTIONS:
        check_parity(COS, [x1, x2, y], {"margin": -0.5}, reduction)
    a, p, n = trip_args(rng, [(4, 3)] * 3, dtype)
    p[0] = a[0]
    n[1] = a[1]
    a[2] = p[2] = n[2] = 0.0
    for kw in ({"eps": 0.0}, {}, {"eps": 0.0, "p": 1.0}, {"eps": 0.0, "p": 0.5},
               {"eps": 0.0, "p": INF}, {"eps": 0.0, "swap": True}):
        for reduction in ("none", "sum"):
            check_parity(TRIP, [a, p, n], kw, reduction)


def test_mixed_dtypes_promote(torch):
    """float32 with float64 computes in float64 (as torch); each gradient keeps
    its argument's dtype (API.md)."""
    rng = rng_for("mixed")
    x1 = rng.normal(size=(5, 3)).astype(np.float32)
    x2 = rng.normal(size=(5, 3))
    y = np.array([1, -1, 1, -1, 1])
    v, (g1, g2) = CF.cosine_embedding_loss(x1, x2, y, return_grad=True)
    assert type(v) is np.float64 and g1.dtype == np.float32 and g2.dtype == np.float64
    tv, tg = torch_ref(COS, [x1, x2, y], {}, "mean")
    # torch squares the float32 argument in float32 (x1 * x1) before promoting:
    # closs converts first, so the two agree to float32 precision only
    assert_close(v, tv, np.float64, rtol=1e-6)
    assert_close(g1, tg[0], np.float32)
    assert_close(g2, tg[1], np.float64, rtol=1e-6)
    v64, (_, h2) = CF.cosine_embedding_loss(x1.astype(np.float64), x2, y, return_grad=True)
    assert v == v64 and np.array_equal(g2, h2)  # closs: exactly the float64 computation
    args = [x1, x2, rng.normal(size=(5, 3)).astype(np.float32)]
    # torch computes d(a, n) of two float32 arguments in float32 (and the cosine
    # distance's float32 norms) before promoting: agreement to float32 precision
    for func, kw, rtol in ((TRIP, {"swap": True}, 1e-6),
                           (TWD, {"distance_function": "cosine"}, 1e-6)):
        v, g = getattr(CF, func)(*args, return_grad=True, **kw)
        assert type(v) is np.float64
        assert [x.dtype for x in g] == [np.float32, np.float64, np.float32]
        tv, tg = torch_ref(func, args, kw, "mean")
        assert_close(v, tv, np.float64, rtol=rtol)
        for x, t in zip(g, tg):
            assert_close(x, t, x.dtype, rtol=rtol if x.dtype == np.float64 else None)


# ---------------------------------------------------------------------------------
# NaN and inf (spec §0.7): value and gradient NaN positions as torch
# ---------------------------------------------------------------------------------

SPECIALS = [np.nan, np.inf, -np.inf, 0.0]


def special_args(rng, dtype, n_args):
    arrs = [rng.normal(size=(5, 3)).astype(dtype) for _ in range(n_args)]
    for _ in range(3):
        arrs[rng.integers(0, n_args)][rng.integers(0, 5), rng.integers(0, 3)] = \
            SPECIALS[rng.integers(0, 4)]
    arrs[rng.integers(0, n_args)][rng.integers(0, 5)] = 0.0  # a zero row
    return arrs


def check_specials(func, args, kw, reduction, grad_output=None):
    tv, tg = torch_ref(func, args, kw, reduction, grad_output)
    v, g = getattr(CF, func)(*args, reduction=reduction, return_grad=True,
                             grad_output=grad_output, **closs_kwargs(func, kw))
    assert_close(v, tv, scale=1.0, err_msg="value")
    for i, (x, t) in enumerate(zip(g, tg)):
        finite = np.abs(t[np.isfinite(t)])
        assert_close(x, t, x.dtype, scale=max(1.0, float(finite.max()) if finite.size else 1.0),
                     err_msg=f"grad {i}")


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("seed", range(12))
def test_nan_inf_torch(torch, seed, dtype):
    rng = rng_for("specials", seed, dtype)
    x1, x2 = special_args(rng, dtype, 2)
    y = np.array([1, -1, 1, -1, 0])
    for reduction in ("none", "sum"):
        check_specials(COS, [x1, x2, y], {"margin": 0.1}, reduction)
    args = special_args(rng, dtype, 3)
    for reduction in ("none", "sum"):
        for p in P_VALUES:
            for swap in (False, True):
                check_specials(TRIP, args, {"p": p, "swap": swap}, reduction)
        for distance in ("pairwise", "cosine"):
            for swap in (False, True):
                check_specials(TWD, args, {"distance_function": distance, "swap": swap},
                               reduction)


def test_nan_grad_output_as_torch(torch):
    """A NaN upstream gradient: torch masks the hinge, the swap and the targets
    with where() (a masked row gets 0), while the norm's masks (u / |u| at
    |u| = 0, entries off the max) multiply it (NaN)."""
    rng = rng_for("nan-go")
    a, p, n = trip_args(rng, [(6, 4)] * 3, np.float64)
    p[0] = a[0]  # |a - p| = 0 with eps = 0: torch's masked u / |u|
    n[1] = a[1] + 5.0  # far: inactive
    p[2] = a[2] + 5.0  # far positive: active
    p[3], n[3] = a[3] + 1.0, a[3] + 1.0  # swap chooses d(p, n) = |eps|
    go = np.full(6, np.nan)
    go[4] = 1.0
    for kw in ({"eps": 0.0}, {"eps": 0.0, "p": INF}, {"eps": 0.0, "p": 3.0},
               {"eps": 0.0, "swap": True}, {"swap": True}):
        check_specials(TRIP, [a, p, n], kw, "none", go)
    for kw in ({"distance_function": "cosine", "swap": True},
               {"distance_function": "sq", "swap": True}):
        check_specials(TWD, [a, p, n], kw, "none", go)
    y = np.array([1, -1, -1, 0, 2, 1])
    check_specials(COS, [a, p, y], {"margin": 0.2}, "none", go)


# =================================================================================
# Finite differences (float64, 4th order)
# =================================================================================


def fd_gradient(f, args, i, h=1e-4):
    """d f / d args[i] by 4th-order central differences."""
    x = np.array(args[i], dtype=np.float64)
    g = np.zeros_like(x)
    for k in np.ndindex(x.shape):
        vals = []
        for step in (2, 1, -1, -2):
            xs = x.copy()
            xs[k] += step * h
            vals.append(f(*args[:i], xs, *args[i + 1:]))
        g[k] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
    return g


FD_CASES = [
    (COS, {"margin": 0.2}),
    (COS, {"margin": -0.4}),
    (TRIP, {}),
    (TRIP, {"swap": True, "margin": 3.0}),
    (TRIP, {"p": 1.0, "margin": 2.0}),
    (TRIP, {"p": 3.0, "eps": 0.1}),
    (TRIP, {"p": 1.5, "swap": True, "margin": 2.0}),
    (TRIP, {"p": 0.5, "margin": 4.0}),
    (TRIP, {"p": -1.0, "margin": 1.0}),
    (TRIP, {"p": INF, "margin": 2.0}),
    (TRIP, {"p": -INF, "margin": 1.0, "swap": True}),
    (TWD, {"distance_function": "cosine", "margin": 1.0}),
    (TWD, {"distance_function": "cosine", "swap": True, "margin": 1.0}),
    (TWD, {"distance_function": "sq", "swap": True, "margin": 3.0}),
]


def _smooth_args(func, kw, rng):
    """Arguments whose every row is away from the hinge, the swap tie and
    (p = inf) ties between entries."""
    for _ in range(200):
        if func == COS:
            args = cos_args(rng, (4, 5), np.float64)
            x1, x2, y = args
            cos = np.sum(x1 * x2, -1) / np.sqrt(np.sum(x1 * x1, -1) * np.sum(x2 * x2, -1))
            if np.all(np.abs(cos - kw["margin"]) > 0.05):
                return args
            continue
        args = trip_args(rng, [(3, 4)] * 3, np.float64)
        none = getattr(CF, func)(*args, reduction="none", **closs_kwargs(func, kw))
        if np.any((none > 0) & (none < 0.05)) or np.all(none == 0):
            continue
        diffs = [args[0] - args[1], args[0] - args[2], args[1] - args[2]]
        if kw.get("p") in (INF, -INF):
            srt = np.sort(np.abs(np.stack(diffs)), axis=-1)
            if np.min(np.diff(srt, axis=-1)) < 0.05:
                continue
        if kw.get("swap"):
            d = [np.sqrt(np.sum(x * x, -1)) for x in diffs[1:]]
            if np.min(np.abs(d[0] - d[1])) < 0.05:
                continue
        return args
    raise AssertionError("no smooth arguments")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("func, kw", FD_CASES,
                         ids=[f"{f}-{'-'.join(f'{k}={v}' for k, v in kw.items())}"
                              for f, kw in FD_CASES])
def test_finite_differences(func, kw, reduction):
    rng = rng_for("fd", func, sorted(kw.items(), key=str), reduction)
    args = _smooth_args(func, kw, rng)
    go = rand_grad_output(rng, reduction, loss_shape_of(func, args), np.float64)
    kwargs = closs_kwargs(func, kw)
    fn = getattr(CF, func)

    def objective(*a):
        v = fn(*a, reduction=reduction, **kwargs)
        return float(np.sum(v * go))

    _, grads = fn(*args, reduction=reduction, return_grad=True, grad_output=go, **kwargs)
    for i in range(n_diff(func)):
        want = fd_gradient(objective, args, i)
        assert_close(grads[i], want, np.float64, rtol=1e-7,
                     err_msg=f"grad {i}")


# =================================================================================
# Hypothesis: closs against an independent NumPy implementation of the spec
# =================================================================================


def np_cosine_embedding(x1, x2, y, margin):
    dot = np.sum(x1 * x2, -1)
    m1 = np.sum(x1 * x1, -1) + COS_EPS
    m2 = np.sum(x2 * x2, -1) + COS_EPS
    den = np.sqrt(m1 * m2)
    cos = dot / den
    loss = np.where(y == 1, 1 - cos, np.where(y == -1, np.maximum(cos - margin, 0), 0.0))
    dcos = np.where(y == 1, -1.0, np.where((y == -1) & (cos >= margin), 1.0, 0.0))[:, None]
    g1 = dcos * (x2 / den[:, None] - cos[:, None] * x1 / m1[:, None])
    g2 = dcos * (x1 / den[:, None] - cos[:, None] * x2 / m2[:, None])
    return loss, (g1, g2), cos - margin


def np_norm_and_grad(u, p):
    a = np.abs(u)
    if p == INF or p == -INF:
        d = a.max(-1) if p == INF else a.min(-1)
        mask = a == d[:, None]
        return d, np.sign(u) * mask / mask.sum(-1, keepdims=True)
    if p == 2:
        d = np.sqrt(np.sum(u * u, -1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return d, np.where(d[:, None] == 0, 0.0, u / d[:, None])
    if p == 1:
        return a.sum(-1), np.sign(u)
    d = np.sum(a ** p, -1) ** (1 / p)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(a == 0, 0.0, np.sign(u) * a ** (p - 1)) * np.where(
            d == 0, 0.0, d ** (1 - p))[:, None]
    return d, g


def np_triplet(a, p, n, margin, order, eps, swap):
    d_ap, g_u = np_norm_and_grad(a - p + eps, order)
    d_an, g_v = np_norm_and_grad(a - n + eps, order)
    d_pn, g_w = np_norm_and_grad(p - n + eps, order)
    d_neg = np.minimum(d_an, d_pn) if swap else d_an
    h = margin + d_ap - d_neg
    active = (h >= 0)[:, None] * 1.0
    s_an = np.where(d_an == d_pn, 0.5, np.where(d_an > d_pn, 0.0, 1.0))[:, None] if swap else 1.0
    s_pn = (1.0 - s_an) if swap else 0.0
    ga = active * (g_u - s_an * g_v)
    gp = active * (-g_u - s_pn * g_w)
    gn = active * (s_an * g_v + s_pn * g_w)
    return np.maximum(h, 0), (ga, gp, gn), h, d_an - d_pn


ELEMENT = st.one_of(st.just(0.0), st.floats(-4, 4, allow_nan=False, allow_infinity=False))


@st.composite
def rows(draw, n_arrays, min_d=1):
    N = draw(st.integers(1, 5))
    D = draw(st.integers(min_d, 6))
    return [draw(hnp.arrays(np.float64, (N, D), elements=ELEMENT)) for _ in range(n_arrays)]


@given(rows(2), st.floats(-0.9, 0.9), st.data())
def test_hypothesis_cosine_embedding(xs, margin, data):
    x1, x2 = xs
    y = data.draw(hnp.arrays(np.float64, x1.shape[:1], elements=st.sampled_from([1, -1, 0, 2])))
    loss, grads, h = np_cosine_embedding(x1, x2, y, margin)
    assume(np.all(np.abs(h[y == -1]) > 1e-9))  # the hinge is tested exactly elsewhere
    v, g = CF.cosine_embedding_loss(x1, x2, y, margin, reduction="none", return_grad=True)
    assert np.all(v >= -1e-15)  # 1 - cos >= 0 and the hinge
    assert_close(v, loss, np.float64, scale=1.0)
    for got, want in zip(g, grads):
        assert_close(got, want, np.float64, rtol=1e-9, scale=float(np.max(np.abs(want),
                                                                             initial=1.0)))


@given(rows(3), st.sampled_from([2.0, 1.0, 3.0, 0.5, INF, -INF]), st.booleans(),
       st.sampled_from([1e-6, 0.0, 0.5]), st.floats(0.01, 3))
def test_hypothesis_triplet(xs, p, swap, eps, margin):
    a, q, n = xs
    loss, grads, h, gap = np_triplet(a, q, n, margin, p, eps, swap)
    assume(np.all(np.abs(h) > 1e-9))
    if swap:
        assume(np.all(np.abs(gap) > 1e-9))
    if p in (INF, -INF):  # ties between entries at the max are tested exactly elsewhere
        for u in (a - q + eps, a - n + eps, q - n + eps):
            srt = np.sort(np.abs(u), -1)
            assume(np.all(np.diff(srt, axis=-1) > 1e-9))
    v, g = CF.triplet_margin_loss(a, q, n, margin, p, eps, swap, reduction="none",
                                  return_grad=True)
    assert np.all(v >= 0)
    assert_close(v, loss, np.float64, scale=max(1.0, float(np.max(np.abs(loss)))))
    for got, want in zip(g, grads):
        assert_close(got, want, np.float64, rtol=1e-9, scale=float(np.max(np.abs(want),
                                                                             initial=1.0)))


@given(rows(3), st.booleans(), st.floats(0.01, 2))
def test_hypothesis_cosine_distance(xs, swap, margin):
    a, q, n = xs
    d = {k: np_cosine_distance(x, y, True) for k, (x, y) in
         {"ap": (a, q), "an": (a, n), "pn": (q, n)}.items()}
    d_neg = np.minimum(d["an"][0], d["pn"][0]) if swap else d["an"][0]
    h = margin + d["ap"][0] - d_neg
    assume(np.all(np.abs(h) > 1e-9))
    if swap:
        assume(np.all(np.abs(d["an"][0] - d["pn"][0]) > 1e-9))
    v, g = CF.triplet_margin_with_distance_loss(a, q, n, distance_function="cosine",
                                                margin=margin, swap=swap, reduction="none",
                                                return_grad=True)
    assert np.all(v >= 0)
    assert_close(v, np.maximum(h, 0), np.float64, scale=1.0)
    act = (h >= 0)[:, None] * 1.0
    take_pn = (d["pn"][0] < d["an"][0])[:, None] * 1.0 if swap else 0.0
    want = [act * (d["ap"][1][0] - (1 - take_pn) * d["an"][1][0]),
            act * (d["ap"][1][1] - take_pn * d["pn"][1][0]),
            act * (-(1 - take_pn) * d["an"][1][1] - take_pn * d["pn"][1][1])]
    # each entry is x h_x - y k (and so on): judged on the size of those terms
    # (|y| k with k = 1 / (c_x c_y); |x h_x| is no larger)
    def clamped(x):
        return np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)

    scale = max(1.0, max(float(np.max(np.abs(y) / (clamped(x) * clamped(y)), initial=0.0))
                         for x, y in ((a, q), (a, n), (q, n), (q, a), (n, a), (n, q))))
    for got, w in zip(g, want):
        assert_close(got, w, np.float64, rtol=1e-9, scale=scale)


AWAY_FROM_ZERO = st.floats(0.5, 4).flatmap(lambda v: st.sampled_from([v, -v]))


@given(st.integers(1, 5).flatmap(lambda d: st.tuples(
    *[hnp.arrays(np.float64, (3, d), elements=AWAY_FROM_ZERO)] * 2)), st.floats(0.1, 100))
def test_hypothesis_cosine_scale_invariance(xs, c):
    """Scaling both inputs by c > 0 leaves the cosine loss unchanged: every
    |x|^2 c^2 >= 0.0025, so eps / |x|^2 stays below 1e-9."""
    x1, x2 = xs
    y = np.ones(x1.shape[0])
    v = CF.cosine_embedding_loss(x1, x2, y, reduction="none")
    assert_close(CF.cosine_embedding_loss(c * x1, c * x2, y, reduction="none"), v,
                 np.float64, rtol=1e-9, scale=1.0)


# =================================================================================
# Layouts, routes, threads, instruction sets
# =================================================================================


def _layouts(a):
    yield "fortran", np.asfortranarray(a)
    yield "strided", np.repeat(a, 2, axis=-1)[..., ::2]
    ro = a.copy()
    ro.flags.writeable = False
    yield "readonly", ro
    yield "byteswapped", a.astype(a.dtype.newbyteorder(">"))
    yield "list", a.tolist()


@pytest.mark.parametrize("func, kw", [(COS, {"margin": 0.1}), (TRIP, {"swap": True}),
                                      (TWD, {"distance_function": "cosine"}),
                                      (TWD, {"distance_function": "sq"})],
                         ids=["cos", "trip", "twd-cosine", "twd-callable"])
def test_layouts_and_inputs_unmodified(func, kw):
    rng = rng_for("layouts", func)
    if func == COS:
        args = cos_args(rng, (7, 5), np.float64)
    else:
        args = trip_args(rng, [(7, 5)] * 3, np.float64)
    kwargs = closs_kwargs(func, kw)
    fn = getattr(CF, func)
    ref_v, ref_g = fn(*args, reduction="none", return_grad=True, **kwargs)
    copies = [np.array(a, copy=True) for a in args]
    for i in range(n_diff(func)):
        for name, alt in _layouts(args[i]):
            new = list(args)
            new[i] = alt
            v, g = fn(*new, reduction="none", return_grad=True, **kwargs)
            assert_identical(v, ref_v, name)
            for x, r in zip(g, ref_g):
                assert_identical(x, r, name)
    for a, c in zip(args, copies):
        assert_identical(a, c, "input modified")


def test_loss_class_attributes_and_repr():
    crit = closs.TripletMarginLoss(margin=0.5, p=1, swap=True)
    assert (crit.margin, crit.p, crit.eps, crit.swap) == (0.5, 1.0, 1e-6, True)
    assert "margin=0.5" in repr(crit) and "swap=True" in repr(crit)
    crit = closs.TripletMarginWithDistanceLoss(distance_function="cosine", reduction="sum")
    assert crit.distance_function == "cosine" and crit.reduction == "sum"
    assert "cosine" in repr(crit)
    assert "margin=0.25" in repr(closs.CosineEmbeddingLoss(margin=0.25))


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_empty_batch(dtype):
    e = np.zeros((0, 4), dtype)
    for func, args in ((COS, [e, e, np.zeros(0)]), (TRIP, [e, e, e]),
                       (TWD, [e, e, e])):
        fn = getattr(CF, func)
        with np.errstate(invalid="ignore"):
            assert math.isnan(fn(*args))
        assert fn(*args, reduction="sum") == 0
        v, g = fn(*args, reduction="none", return_grad=True)
        assert v.shape == (0,) and v.dtype == dtype
        assert all(x.shape == (0, 4) for x in g)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("func, kw", [(COS, {}), (TRIP, {}), (TRIP, {"swap": True, "p": 3}),
                                      (TRIP, {"p": INF}),
                                      (TWD, {"distance_function": "cosine", "swap": True})],
                         ids=["cos", "trip", "trip-p3-swap", "trip-inf", "twd-cos-swap"])
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_one_and_two_threads_bit_identical(restore_threads, dtype, func, kw, reduction):
    rng = rng_for("threads", dtype, func, reduction)
    shape = (1531, 97)  # > 2 grains of elements, rows not a multiple of a chunk
    if func == COS:
        args = cos_args(rng, shape, dtype)
    else:
        args = trip_args(rng, [shape] * 3, dtype)
    go = rand_grad_output(rng, reduction, shape[:1], dtype)
    out = []
    for n in (1, 2):
        closs.set_num_threads(n)
        out.append(getattr(CF, func)(*args, reduction=reduction, return_grad=True,
                                     grad_output=go, **kw))
    assert_identical(out[0][0], out[1][0])
    for a, b in zip(out[0][1], out[1][1]):
        assert_identical(a, b)


ISA_SCRIPT = """
import numpy as np, closs.functional as CF
rng = np.random.default_rng(11)
a, p, n = (rng.normal(size=(300, 37)) for _ in range(3))
y = np.where(rng.random(300) < 0.5, -1.0, 1.0)
out = {}
calls = {
    "cos": lambda d: CF.cosine_embedding_loss(a.astype(d), p.astype(d), y, 0.1,
                                              reduction="none", return_grad=True),
}
for order in (2.0, 1.0, 3.0, 0.5, np.inf):
    for swap in (False, True):
        calls[f"trip{order}{swap}"] = (lambda d, o=order, s=swap: CF.triplet_margin_loss(
            a.astype(d), p.astype(d), n.astype(d), 3.0, o, swap=s, reduction="none",
            return_grad=True))
for swap in (False, True):
    calls[f"twd{swap}"] = (lambda d, s=swap: CF.triplet_margin_with_distance_loss(
        a.astype(d), p.astype(d), n.astype(d), distance_function="cosine", swap=s, margin=1.5,
        reduction="none", return_grad=True))
for key, call in calls.items():
    for d in ("float32", "float64"):
        value, grad = call(d)
        out[f"{key}|{d}|value"] = value
        for i, g in enumerate(grad):
            out[f"{key}|{d}|grad{i}"] = g
np.savez(OUT, **out)
"""


@pytest.fixture(scope="module")
def isa_runs(tmp_path_factory):
    return run_every_isa(tmp_path_factory.mktemp("isa-features"), ISA_SCRIPT)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_every_instruction_set_gives_the_same_bits(isa_runs, isa):
    """Fixed lanes, no FMA contraction, one vmath: every path computes the same numbers."""
    default = isa_runs["default"]
    assert isa_runs[isa].keys() == default.keys()
    for key, ref in default.items():
        assert_identical(isa_runs[isa][key], ref, f"{isa} {key}")


# =================================================================================
# distance_function callables: the gradient contract
# =================================================================================


def test_callable_without_gradient_gives_values_only(torch):
    rng = rng_for("value-only")
    args = trip_args(rng, [(5, 3)] * 3, np.float64)
    kw = {"distance_function": "value_only", "swap": True}
    tv, _ = torch_ref(TWD, args, kw, "none")
    assert_close(CF.triplet_margin_with_distance_loss(*args, reduction="none",
                                                      **closs_kwargs(TWD, kw)), tv)
    crit = closs.TripletMarginWithDistanceLoss(distance_function=value_only)
    crit(*args)
    match = r"distance_function: expected a callable that supplies its gradient .*return_grad"
    with pytest.raises(TypeError, match=match):
        crit.backward()
    with pytest.raises(TypeError, match=match):
        crit.value_and_grad(*args)
    with pytest.raises(TypeError, match=match):
        CF.triplet_margin_with_distance_loss(*args, distance_function=value_only,
                                             return_grad=True)


def test_callable_with_kwargs_and_broadcast_arguments(torch):
    """return_grad reaches a **kwargs callable; the callable sees the arguments
    broadcast to one shape, and the gradients are summed back."""
    seen = []

    def spy(x, y, **options):
        seen.append((x.shape, y.shape))
        return with_kwargs(x, y, **options)

    rng = rng_for("kwargs-callable")
    args = trip_args(rng, [(1, 4), (5, 4), (5, 1)], np.float64)
    v, g = CF.triplet_margin_with_distance_loss(*args, distance_function=spy, swap=True,
                                                margin=2.0, return_grad=True)
    assert set(seen) == {((5, 4), (5, 4))}
    tv, tg = torch_ref(TWD, args, {"distance_function": "sq", "swap": True, "margin": 2.0},
                       "mean")
    assert_close(v, tv)
    for x, t, a in zip(g, tg, args):
        assert x.shape == a.shape
        assert_close(x, t)


@pytest.mark.parametrize("bad, exc, match", [
    (lambda x, y, return_grad=False: (np.sum(x - y), (x, y)), ValueError,
     r"distance_function: expected one distance per row, an array of shape \(4,\), got "
     r"shape \(\)"),
    (lambda x, y, return_grad=False: np.sum(x - y, -1), TypeError,
     r"distance_function: expected \(distance, \(grad_x, grad_y\)\)"),
    (lambda x, y, return_grad=False: (np.sum(x - y, -1), (x[:, :1], y)), ValueError,
     r"distance_function: expected grad_x of the argument's shape \(4, 3\), got \(4, 1\)"),
    (lambda x, y, return_grad=False: (np.sum(x - y, -1), (x, y.astype(str))), TypeError,
     r"grad_y: expected an array of real numbers"),
], ids=["scalar", "no-tuple", "grad-shape", "grad-dtype"])
def test_callable_bad_results(bad, exc, match):
    args = [np.ones((4, 3))] * 3
    with pytest.raises(exc, match=match):
        CF.triplet_margin_with_distance_loss(*args, distance_function=bad, return_grad=True)


def test_callable_bad_values():
    args = [np.ones((4, 3))] * 3
    with pytest.raises(ValueError, match=r"expected one distance per row, an array of shape "
                                         r"\(4,\), got shape \(4, 1\)"):
        CF.triplet_margin_with_distance_loss(
            *args, distance_function=lambda x, y: np.sum(x - y, -1, keepdims=True))
    with pytest.raises(TypeError, match=r"distance_function's result: expected an array of "
                                        r"real numbers"):
        CF.triplet_margin_with_distance_loss(*args, distance_function=lambda x, y: "far")


# =================================================================================
# Options, legacy arguments, warnings
# =================================================================================


@pytest.mark.parametrize("func", [COS, TRIP])
def test_legacy_size_average_reduce(func):
    rng = rng_for("legacy", func)
    args = cos_args(rng, (4, 3), np.float64) if func == COS else \
        trip_args(rng, [(4, 3)] * 3, np.float64)
    fn = getattr(CF, func)
    for (sa, red), want in {(False, None): "sum", (None, False): "none",
                            (True, True): "mean"}.items():
        with pytest.warns(UserWarning, match=f"please use reduction='{want}' instead"):
            got = fn(*args, size_average=sa, reduce=red, reduction="none")
        assert_identical(got, fn(*args, reduction=want))
        with pytest.warns(UserWarning, match="size_average and reduce"):
            crit = getattr(closs, CLASS_OF[func])(size_average=sa, reduce=red)
        assert crit.reduction == want


def test_elementwise_mean():
    args = [np.ones((2, 3))] * 3
    with pytest.warns(UserWarning, match="elementwise_mean"):
        assert CF.triplet_margin_loss(*args, reduction="elementwise_mean") == \
            CF.triplet_margin_loss(*args)
    with pytest.warns(UserWarning, match="elementwise_mean"):
        closs.CosineEmbeddingLoss(reduction="elementwise_mean")
    with pytest.raises(ValueError, match="'elementwise_mean' is not a valid value"):
        CF.triplet_margin_with_distance_loss(*args, reduction="elementwise_mean")
    with pytest.raises(TypeError):
        closs.TripletMarginWithDistanceLoss(size_average=False)  # no legacy arguments
    with pytest.raises(TypeError):
        closs.TripletMarginWithDistanceLoss(None)  # keyword-only


def test_grad_output_checked():
    args = [np.ones((2, 3))] * 3
    with pytest.raises(ValueError, match=r"grad_output: expected a scalar"):
        CF.triplet_margin_loss(*args, return_grad=True, grad_output=np.ones(2))
    with pytest.raises(ValueError, match=r"grad_output: expected the loss's shape \(2,\)"):
        CF.triplet_margin_loss(*args, reduction="none", return_grad=True,
                               grad_output=np.ones(3))
    with pytest.raises(RuntimeError, match="before forward"):
        closs.CosineEmbeddingLoss().backward()


# =================================================================================
# Bad input (API.md "Bad input")
# =================================================================================

M = np.zeros((3, 4))
V = np.zeros(4)
T3 = np.ones(3)
BAD = [
    ("cos-int-input1", lambda: CF.cosine_embedding_loss(np.ones((3, 4), int), M, T3), TypeError,
     r"input1: expected a floating-point array.*int64"),
    ("cos-int-input2", lambda: CF.cosine_embedding_loss(M, [[1, 2, 3, 4]] * 3, T3), TypeError,
     r"input2: expected a floating-point array"),
    ("cos-str-target", lambda: CF.cosine_embedding_loss(M, M, np.array(["a"] * 3)), TypeError,
     r"target: expected an array of real numbers"),
    ("cos-2d-target", lambda: CF.cosine_embedding_loss(M, M, np.ones((3, 1))), ValueError,
     r"target: expected a 0-d or 1-d array \(0D or 1D target tensor expected, multi-target "
     r"not supported\), got shape \(3, 1\)"),
    ("cos-3d-input", lambda: CF.cosine_embedding_loss(np.zeros((3, 2, 4)), M, T3), ValueError,
     r"input1: expected a 2-d array \(N, D\) for a 1-d target \(1D target tensor expects 2D "
     r"input tensors.*got shape \(3, 2, 4\)"),
    ("cos-0d-target", lambda: CF.cosine_embedding_loss(M, M, np.array(1.0)), ValueError,
     r"input1: expected a 1-d array .* for a 0-d target"),
    ("cos-1d-input-1d-target", lambda: CF.cosine_embedding_loss(V, M, T3), ValueError,
     r"input1: expected a 2-d array"),
    ("cos-batch", lambda: CF.cosine_embedding_loss(M, np.zeros((2, 4)), T3), ValueError,
     r"input2: expected a shape that broadcasts with input1 \(3,\), got \(2,\)"),
    ("cos-target-batch", lambda: CF.cosine_embedding_loss(M, M, np.ones(2)), ValueError,
     r"target: expected a shape that broadcasts .*got \(2,\)"),
    ("cos-features", lambda: CF.cosine_embedding_loss(M, np.zeros((3, 1)), T3), ValueError,
     r"input2: expected the feature size of input1 \(4; the feature dimension does not "
     r"broadcast\), got shape \(3, 1\)"),
    ("cos-margin", lambda: CF.cosine_embedding_loss(M, M, T3, margin="a"), TypeError,
     r"margin: expected a real number, got 'a'"),
    ("cos-class-margin", lambda: closs.CosineEmbeddingLoss(margin=None), TypeError,
     r"margin: expected a real number"),
    ("cos-reduction", lambda: CF.cosine_embedding_loss(M, M, T3, reduction="foo"), ValueError,
     r"reduction: expected one of .*got 'foo'"),
    ("cos-class-reduction", lambda: closs.CosineEmbeddingLoss(reduction="batchmean"),
     ValueError, r"'batchmean' is not a valid value for reduction"),
    ("trip-int", lambda: CF.triplet_margin_loss(M, M, np.zeros((3, 4), int)), TypeError,
     r"negative: expected a floating-point array"),
    ("trip-complex", lambda: CF.triplet_margin_loss(M.astype(complex), M, M), TypeError,
     r"anchor: expected a floating-point array"),
    ("trip-ndim", lambda: CF.triplet_margin_loss(V, M, M), ValueError,
     r"positive: expected 1 dimensions like anchor \(The anchor, positive, and negative "
     r"tensors are expected to have the same number of dimensions, but got: anchor 1D, "
     r"positive 2D, and negative 2D inputs\), got shape \(3, 4\)"),
    ("trip-ndim-negative", lambda: CF.triplet_margin_loss(M, M, V), ValueError,
     r"negative: expected 2 dimensions like anchor"),
    ("trip-broadcast", lambda: CF.triplet_margin_loss(M, np.zeros((2, 4)), M), ValueError,
     r"positive: expected a shape that broadcasts with anchor \(3, 4\), got \(2, 4\)"),
    ("trip-feature-pair", lambda: CF.triplet_margin_loss(np.zeros((3, 1)), np.zeros((3, 1)), M),
     ValueError, r"positive: expected a feature size that broadcasts with anchor's to 4"),
    ("trip-margin-0", lambda: CF.triplet_margin_loss(M, M, M, margin=0), ValueError,
     r"margin: expected a value > 0 \(margin must be greater than 0, got 0.0\), got 0.0"),
    ("trip-class-margin", lambda: closs.TripletMarginLoss(margin=-1), ValueError,
     r"margin: expected a value > 0 \(TripletMarginLoss: expected margin to be greater than "
     r"0, got -1.0 instead\)"),
    ("trip-p-str", lambda: CF.triplet_margin_loss(M, M, M, p="2"), TypeError,
     r"p: expected a real number, got '2'"),
    ("trip-eps-none", lambda: CF.triplet_margin_loss(M, M, M, eps=None), TypeError,
     r"eps: expected a real number"),
    ("trip-swap", lambda: CF.triplet_margin_loss(M, M, M, swap="yes"), TypeError,
     r"swap: expected a bool"),
    ("trip-inf-empty", lambda: CF.triplet_margin_loss(*[np.zeros((2, 0))] * 3, p=INF),
     ValueError, r"p: expected p >= 0 for an empty feature dimension"),
    ("trip-neg-empty", lambda: CF.triplet_margin_loss(*[np.zeros((2, 0))] * 3, p=-1),
     ValueError, r"p: expected p >= 0 for an empty feature dimension"),
    ("twd-margin", lambda: CF.triplet_margin_with_distance_loss(M, M, M, margin=0), ValueError,
     r"margin must be greater than 0"),
    ("twd-class-margin", lambda: closs.TripletMarginWithDistanceLoss(margin=0), ValueError,
     r"TripletMarginWithDistanceLoss: expected margin to be greater than 0"),
    ("twd-reduction", lambda: CF.triplet_margin_with_distance_loss(M, M, M, reduction="foo"),
     ValueError, r"'foo' is not a valid value for reduction"),
    ("twd-distance-name", lambda: CF.triplet_margin_with_distance_loss(
        M, M, M, distance_function="euclid"), ValueError,
     r"distance_function: expected None, a callable or one of 'pairwise', 'cosine', got "
     r"'euclid'"),
    ("twd-distance-type", lambda: closs.TripletMarginWithDistanceLoss(distance_function=3),
     TypeError, r"distance_function: expected None, a callable or one of"),
    ("twd-ndim", lambda: CF.triplet_margin_with_distance_loss(V, M, M,
                                                              distance_function=sq_euclidean),
     ValueError,
     r"positive: expected 1 dimensions like anchor"),
    ("twd-int", lambda: CF.triplet_margin_with_distance_loss(M, np.zeros((3, 4), int), M),
     TypeError, r"positive: expected a floating-point array"),
]


@pytest.mark.parametrize("call, exc, match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()


def test_nan_margin_accepted_as_torch():
    """torch's check is `margin <= 0`: a NaN margin passes and gives NaN."""
    v = CF.triplet_margin_loss(M, M, M, margin=np.nan)
    assert math.isnan(v)


@pytest.mark.parametrize("obj", [CF.cosine_embedding_loss, CF.triplet_margin_loss,
                                 CF.triplet_margin_with_distance_loss, closs.CosineEmbeddingLoss,
                                 closs.TripletMarginLoss, closs.TripletMarginWithDistanceLoss],
                         ids=lambda o: o.__name__)
def test_docstring_examples(obj):
    import doctest

    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = doctest.DocTestFinder(recurse=False).find(obj, obj.__name__, globs={})
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0
