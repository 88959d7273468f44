"""Overlap losses: DiceLoss / dice_loss and TverskyLoss / tversky_loss with
MONAI's conventions (spec §22, §24, §25).

* one reference formula, ``monai_reference``, written from MONAI 1.6.1's code
  (DiceLoss.forward, TverskyLoss.forward, compute_tp_fp_fn) against a tiny
  array namespace, so the same lines run in NumPy float64 (values, always) and
  in torch (autograd gradients, when torch is importable);
* the worked example of spec §25 (fixed numbers);
* every option combination against the reference (values always, gradients
  against torch autograd), both dtypes, every reduction, scalar and 'none'
  upstream gradients, 1 to 3 spatial dims;
* golden files (tests/golden/overlap/, made by tests/golden/overlap/make_golden.py
  from the torch reference), checked without torch;
* parity with MONAI 1.6.1 itself when it is importable (CI installs it): dense
  targets and to_onehot_y labels, both dtypes, the option families;
* 4th-order finite differences (float64); hypothesis properties (the Dice /
  Tversky / jaccard identities, reductions, against the reference);
* empty masks and the smooth terms, empty arrays, NaN / inf, huge logits;
* bad input and MONAI's warnings; memory layouts, label dtypes, inputs never
  modified; routes, threads and SIMD paths bit-identical.
"""
import itertools
import json
import os
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import closs
import closs.functional as CF

from conftest import FLOATS, REDUCTIONS, assert_close, assert_identical, rng_for, run_python

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "overlap")
DTYPE_IDS = ["f32", "f64"]
ACTS = ("none", "sigmoid", "softmax")


def _torch_module():
    try:
        import torch
    except ImportError:  # pragma: no cover - the gradient halves then rely on the goldens
        return None
    return torch


TORCH = _torch_module()


# =================================================================================
# The reference: MONAI's formulas, once, for NumPy and torch
# =================================================================================


class Xp:
    """The few array operations the reference needs, in NumPy or torch."""

    def __init__(self, mod):
        self.mod = mod
        self.is_torch = mod.__name__ == "torch"

    def sum(self, a, axes):
        return a.sum(dim=axes) if self.is_torch else a.sum(axis=axes)

    def sigmoid(self, a):
        if self.is_torch:
            return self.mod.sigmoid(a)
        with np.errstate(over="ignore"):
            e = np.exp(-np.abs(a))  # stable on both sides
            return np.where(a >= 0, 1 / (1 + e), e / (1 + e))

    def softmax(self, a):
        if self.is_torch:
            return self.mod.softmax(a, 1)
        with np.errstate(invalid="ignore"):
            e = np.exp(a - a.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

    def one_hot(self, labels, classes, like):
        """MONAI's one_hot of (B, 1, ...) labels, in like's dtype (closs: exact)."""
        shape = (1, classes) + (1,) * (labels.ndim - 2)
        if self.is_torch:
            return (labels == self.mod.arange(classes).reshape(shape)).to(like.dtype)
        return (labels == np.arange(classes).reshape(shape)).astype(like.dtype)

    def as_weight(self, weight, like):
        w = np.asarray(weight, dtype=np.float64)
        return self.mod.from_numpy(w).to(like.dtype) if self.is_torch else w


def monai_reference(xp, kind, x, y, include_background=True, to_onehot_y=False, sigmoid=False,
                    softmax=False, squared_pred=False, jaccard=False, alpha=0.5, beta=0.5,
                    reduction="mean", smooth_nr=1e-5, smooth_dr=1e-5, batch=False, weight=None):
    """MONAI 1.6.1's DiceLoss (kind 'dice') / TverskyLoss (kind 'tversky') forward
    on arrays of xp (MONAI's warnings and errors left out)."""
    classes = x.shape[1]
    p = x
    if sigmoid:
        p = xp.sigmoid(p)
    if softmax and classes != 1:
        p = xp.softmax(p)
    if to_onehot_y and classes != 1:
        y = xp.one_hot(y, classes, p)
    if not include_background and classes != 1:
        p, y = p[:, 1:], y[:, 1:]
    assert tuple(y.shape) == tuple(p.shape)
    axes = tuple(range(2, x.ndim))
    if batch:
        axes = (0,) + axes
    tp = xp.sum(p * y, axes)
    if kind == "dice":
        # compute_tp_fp_fn, decoupled (ord 1) or through the squared norms (ord 2)
        pred_o = xp.sum(p * p if squared_pred else p, axes)
        ground_o = xp.sum(y * y if squared_pred else y, axes)
        fp, fn = pred_o - tp, ground_o - tp
        if not jaccard:
            fp, fn = 0.5 * fp, 0.5 * fn
        f = 1 - (2 * tp + smooth_nr) / (2 * (tp + fp + fn) + smooth_dr)
        scored = y.shape[1]
        if weight is not None and scored != 1:
            w = np.asarray(weight, dtype=np.float64)
            f = f * xp.as_weight(np.full(scored, w) if w.ndim == 0 else w, f)
    else:  # coupled
        fp = xp.sum(p * (1 - y), axes)
        fn = xp.sum((1 - p) * y, axes)
        f = 1 - (tp + smooth_nr) / (tp + alpha * fp + beta * fn + smooth_dr)
    if reduction == "mean":
        return f.mean()
    if reduction == "sum":
        return f.sum()
    if kind == "dice":
        return f.reshape(tuple(f.shape[0:2]) + (1,) * (x.ndim - 2))
    return f


NP = Xp(np)


def numpy_value(kind, x, y, **kw):
    """The reference value in float64."""
    x64 = np.asarray(x, dtype=np.float64)
    y64 = np.asarray(y) if kw.get("to_onehot_y") else np.asarray(y, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mean of no entries
        return np.asarray(monai_reference(NP, kind, x64, y64, **kw))


def torch_value_and_grad(kind, x, y, grad_output=None, **kw):
    """The reference value and its autograd gradient w.r.t. x, in x's dtype."""
    torch = TORCH
    xt = torch.from_numpy(np.array(x, copy=True)).requires_grad_(True)
    yt = torch.from_numpy(np.array(y, copy=True))
    if not kw.get("to_onehot_y"):
        yt = yt.to(xt.dtype)
    out = monai_reference(Xp(torch), kind, xt, yt, **kw)
    go = (torch.ones_like(out) if grad_output is None
          else torch.as_tensor(np.asarray(grad_output), dtype=out.dtype).reshape(out.shape))
    out.backward(go)
    return out.detach().numpy(), xt.grad.numpy()


def closs_func(kind):
    return CF.dice_loss if kind == "dice" else CF.tversky_loss


def closs_cls(kind):
    return closs.DiceLoss if kind == "dice" else closs.TverskyLoss


# =================================================================================
# Arguments
# =================================================================================


def make_inputs(rng, shape, dtype, act="none", onehot=False, soft=False):
    """(input, target): probabilities (act 'none') or logits; a binary (or soft)
    target of input's shape, or (B, 1, ...) int64 labels with onehot."""
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    if act == "none":
        x = rng.uniform(0.0, 1.0, shape)
    else:
        x = rng.normal(0.0, 2.0, shape)
    if onehot:
        y = rng.integers(0, shape[1], (shape[0], 1) + shape[2:])
    elif soft:
        y = rng.uniform(0.0, 1.0, shape).astype(dtype)
    else:
        y = (rng.random(shape) < 0.4).astype(dtype)
    return x.astype(dtype), y


def act_kwargs(act):
    return {"sigmoid": act == "sigmoid", "softmax": act == "softmax"}


def random_go(rng, reduction, shape, dtype):
    if reduction == "none":
        return rng.uniform(-2, 2, shape).astype(dtype)
    return float(rng.uniform(0.25, 2.0))


def loss_shape(kind, x_shape, kw):
    classes = x_shape[1]
    scored = classes - (0 if kw.get("include_background", True) or classes == 1 else 1)
    lead = (scored,) if kw.get("batch") else (x_shape[0], scored)
    return lead + (1,) * (len(x_shape) - 2) if kind == "dice" else lead


def all_routes(kind, x, y, reduction, go, kw):
    """[(route, value, grad)] through the class and functional routes."""
    func, cls = closs_func(kind), closs_cls(kind)
    out = []
    crit = cls(reduction=reduction, **kw)
    v = crit(x, y)
    out.append(("forward+backward", v, crit.backward(go)))
    crit = cls(reduction=reduction, **kw)
    out.append(("value_and_grad",) + tuple(crit.value_and_grad(x, y, grad_output=go)))
    out.append(("functional",) + tuple(func(x, y, reduction=reduction, return_grad=True,
                                            grad_output=go, **kw)))
    out.append(("functional(value)", func(x, y, reduction=reduction, **kw), None))
    return out


def check_against_reference(kind, x, y, reduction, go, kw, dtype, *, grads=True):
    """closs through every route vs the NumPy value and the torch gradient."""
    expected = numpy_value(kind, x, y, reduction=reduction, **kw)
    ref_grad = None
    if grads and TORCH is not None:
        ref_value, ref_grad = torch_value_and_grad(kind, x, y, go, reduction=reduction, **kw)
        assert_close(ref_value, expected.astype(ref_value.dtype), dtype, check_dtype=False)
    routes = all_routes(kind, x, y, reduction, go, kw)
    for route, value, grad in routes:
        if reduction == "none":
            assert isinstance(value, np.ndarray) and value.shape == loss_shape(kind, x.shape, kw)
        else:
            assert type(value) is np.dtype(dtype).type, route
        assert_close(value, expected, dtype, check_dtype=False, err_msg=route)
        if grad is not None:
            assert grad.dtype == np.dtype(dtype) and grad.shape == x.shape
            if ref_grad is not None:
                assert_close(grad, ref_grad, dtype, err_msg=route)
    # the routes agree bit for bit
    for route, value, grad in routes[1:]:
        assert_identical(value, routes[0][1], route)
        if grad is not None:
            assert_identical(grad, routes[0][2], route)
    return routes[0][2]


# =================================================================================
# The worked example (spec §25) and anchors
# =================================================================================


def worked_example(dtype=np.float64):
    p1 = np.array([[0.9, 0.2], [0.6, 0.1]])
    x = np.stack([1 - p1, p1])[None].astype(dtype)  # (1, 2, 2, 2)
    y = np.array([[[[1, 0], [1, 0]]]])  # (1, 1, 2, 2) labels
    return x, y


class TestWorkedExample:
    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_dice(self, dtype):
        x, y = worked_example(dtype)
        none = CF.dice_loss(x, y, to_onehot_y=True, reduction="none")
        assert none.shape == (1, 2, 1, 1) and none.dtype == dtype
        assert_close(none.ravel(), np.array([0.19047573696253095, 0.21052576177431115]), dtype)
        assert_close(CF.dice_loss(x, y, to_onehot_y=True), 0.20050074936842105, dtype)
        assert_close(CF.dice_loss(x, y, to_onehot_y=True, include_background=False),
                     0.21052576177431115, dtype)
        assert_close(CF.dice_loss(x, y, to_onehot_y=True, squared_pred=True),
                     0.06454804098242517, dtype)
        assert_close(CF.dice_loss(x, y, to_onehot_y=True, jaccard=True),
                     0.33391234540788906, dtype)

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_tversky(self, dtype):
        x, y = worked_example(dtype)
        crit = closs.TverskyLoss(to_onehot_y=True, alpha=0.3, beta=0.7, reduction="none")
        assert_close(crit(x, y), np.array([[0.17475643322119794, 0.22680295462394517]]), dtype)
        assert_close(CF.tversky_loss(x, y, to_onehot_y=True, alpha=0.3, beta=0.7),
                     0.20077969392257156, dtype)

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_gradient(self, dtype):
        x, y = worked_example(dtype)
        grad = closs.DiceLoss(to_onehot_y=True).value_and_grad(x, y)[1]
        expected = np.array([[0.0963717066, -0.1417229646, 0.0963717066, -0.1417229646],
                             [-0.1592792863, 0.1038779159, -0.1592792863, 0.1038779159]])
        assert_close(grad.reshape(2, 4), expected, dtype, rtol=1e-9 if dtype == np.float64
                     else 1e-5)

    def test_spec_gradient_formulas(self):
        """§22's closed forms of dL/dp, for each option, on the worked example."""
        x, y = worked_example()
        g = np.stack([1 - y[:, 0], y[:, 0]], axis=1).astype(np.float64)
        nr = dr = 1e-5
        n = 2  # 'mean' over B * C entries
        axes = (2, 3)
        inter = (x * g).sum(axes, keepdims=True)
        for opts in ({}, {"squared_pred": True}, {"jaccard": True},
                     {"squared_pred": True, "jaccard": True}):
            sq = opts.get("squared_pred", False)
            s = ((x * x).sum(axes, keepdims=True) + (g * g).sum(axes, keepdims=True) if sq
                 else x.sum(axes, keepdims=True) + g.sum(axes, keepdims=True))
            num = 2 * inter + nr
            if opts.get("jaccard"):
                d = 2 * (s - inter) + dr
                expected = -2 * g / d + num * 2 * ((2 * x if sq else 1) - g) / d ** 2
            else:
                d = s + dr
                expected = -2 * g / d + (2 * x if sq else 1) * num / d ** 2
            grad = CF.dice_loss(x, y, to_onehot_y=True, return_grad=True, **opts)[1]
            assert_close(grad, expected / n, np.float64, err_msg=str(opts))
        # Tversky: -[g Dn - (TP + nr)(g + a(1 - g) - b g)] / Dn^2
        a, b = 0.3, 0.7
        fp, fn = (x * (1 - g)).sum(axes, keepdims=True), ((1 - x) * g).sum(axes, keepdims=True)
        dn = inter + a * fp + b * fn + dr
        expected = -(g * dn - (inter + nr) * (g + a * (1 - g) - b * g)) / dn ** 2
        grad = CF.tversky_loss(x, y, to_onehot_y=True, alpha=a, beta=b, return_grad=True)[1]
        assert_close(grad, expected / n, np.float64)

    def test_docstring_examples_run(self):
        import doctest
        for obj in (CF.dice_loss, CF.tversky_loss, closs.DiceLoss, closs.TverskyLoss):
            finder = doctest.DocTestFinder(recurse=False)
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
            for test in finder.find(obj, globs={}):
                runner.run(test)
            assert runner.failures == 0 and runner.tries > 0, obj


# =================================================================================
# Every option against the reference
# =================================================================================

DICE_OPTS = list(itertools.product([True, False], [False, True], ACTS, [False, True],
                                   [False, True], [False, True], [None, "list", "scalar"]))


def _dice_id(opt):
    ib, onehot, act, sq, jac, batch, w = opt
    return (f"{'bg' if ib else 'nobg'}-{'labels' if onehot else 'dense'}-{act}"
            f"{'-sq' if sq else ''}{'-jac' if jac else ''}{'-batch' if batch else ''}"
            f"{'-w=' + w if w else ''}")


def dice_kwargs(opt, classes, rng):
    ib, onehot, act, sq, jac, batch, w = opt
    kw = dict(include_background=ib, to_onehot_y=onehot, squared_pred=sq, jaccard=jac,
              batch=batch, **act_kwargs(act))
    if w == "list":
        kw["weight"] = list(rng.uniform(0.25, 2.0, classes - (0 if ib else 1)))
    elif w == "scalar":
        kw["weight"] = 1.5
    return kw


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("opt", DICE_OPTS, ids=[_dice_id(o) for o in DICE_OPTS])
def test_dice_options(opt, dtype):
    for reduction in REDUCTIONS:
        rng = rng_for("dice", opt, reduction, np.dtype(dtype).name)
        kw = dice_kwargs(opt, 3, rng)
        x, y = make_inputs(rng, (2, 3, 4, 5), dtype, opt[2], opt[1])
        go = random_go(rng, reduction, loss_shape("dice", x.shape, kw), dtype)
        check_against_reference("dice", x, y, reduction, go, kw, dtype)


TVERSKY_OPTS = list(itertools.product([True, False], [False, True], ACTS, [False, True],
                                      [(0.5, 0.5), (0.3, 0.7), (1.0, 1.0), (2.0, 0.0)]))


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("opt", TVERSKY_OPTS, ids=[
    f"{'bg' if ib else 'nobg'}-{'labels' if oh else 'dense'}-{act}{'-batch' if b else ''}"
    f"-a={a}-b={bb}" for ib, oh, act, b, (a, bb) in TVERSKY_OPTS])
def test_tversky_options(opt, dtype):
    ib, onehot, act, batch, (alpha, beta) = opt
    kw = dict(include_background=ib, to_onehot_y=onehot, batch=batch, alpha=alpha, beta=beta,
              **act_kwargs(act))
    for reduction in REDUCTIONS:
        rng = rng_for("tversky", opt, reduction, np.dtype(dtype).name)
        x, y = make_inputs(rng, (2, 3, 4, 5), dtype, act, onehot)
        go = random_go(rng, reduction, loss_shape("tversky", x.shape, kw), dtype)
        check_against_reference("tversky", x, y, reduction, go, kw, dtype)


# Every route of csrc/closs_overlap.hpp: entries packed several to a tile (at most 32
# positions), an entry of one tile (48: its gradient from the tile's buffers), of
# several tiles in one unit (130, with a tail tile), of several units (4200 positions
# of 2 channels: separate sums and gradient sweeps); single positions.
SHAPES = [(2, 3, 7), (2, 3, 4, 5), (1, 4, 3, 2, 5), (2, 3, 6, 8), (3, 2, 130), (1, 2, 4200),
          (2, 5, 1, 1)]


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", ["dice", "tversky"])
@pytest.mark.parametrize("act", ACTS)
def test_shapes(kind, act, shape, dtype):
    """1 to 3 spatial dims, every route of the kernel."""
    for onehot, reduction in itertools.product([False, True], REDUCTIONS):
        rng = rng_for("shapes", kind, act, shape, onehot, reduction, np.dtype(dtype).name)
        x, y = make_inputs(rng, shape, dtype, act, onehot)
        kw = dict(to_onehot_y=onehot, **act_kwargs(act))
        if kind == "tversky":
            kw.update(alpha=0.4, beta=0.8)
        go = random_go(rng, reduction, loss_shape(kind, shape, kw), dtype)
        check_against_reference(kind, x, y, reduction, go, kw, dtype)


# Entries of at most 32 positions are packed several to a tile (csrc/closs_overlap.hpp):
# a last pack with fewer entries (5 of 4 per tile, 7 of 7), positions that are not a
# whole number of lanes (9), and, at 1100 entries, several units of work over threads.
PACKED_SHAPES = [(5, 3, 16), (7, 2, 3, 3), (1100, 4, 4, 4)]


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", PACKED_SHAPES, ids=str)
@pytest.mark.parametrize("kind", ["dice", "tversky"])
@pytest.mark.parametrize("act", ACTS)
def test_packed_small_entries(kind, act, shape, dtype, restore_threads):
    """Against the references, and bit-identical on 1 and 2 threads."""
    for onehot in (False, True):
        rng = rng_for("packed", kind, act, shape, onehot, np.dtype(dtype).name)
        x, y = make_inputs(rng, shape, dtype, act, onehot)
        kw = dict(to_onehot_y=onehot, **act_kwargs(act))
        go = random_go(rng, "none", loss_shape(kind, shape, kw), dtype)
        runs = []
        for threads in (1, 2):
            closs.set_num_threads(threads)
            crit = closs_cls(kind)(reduction="none", **kw)
            runs.append(crit.value_and_grad(x, y, grad_output=go))
        check_against_reference(kind, x, y, "none", go, kw, dtype)
        assert_identical(runs[1][0], runs[0][0], "value, 2 threads")
        assert_identical(runs[1][1], runs[0][1], "gradient, 2 threads")


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", ["dice", "tversky"])
@pytest.mark.parametrize("smooth", [(0.0, 0.0), (0.5, 1.0), (1e-3, 0.0), (1.0, 1e-6)])
def test_smooth_terms(kind, smooth, dtype):
    rng = rng_for("smooth", kind, smooth, np.dtype(dtype).name)
    kw = dict(smooth_nr=smooth[0], smooth_dr=smooth[1], softmax=True)
    x, y = make_inputs(rng, (2, 3, 6), dtype, "softmax")
    y[0, 1] = 1  # nonempty everywhere, so both smooths 0 stay finite
    for reduction in REDUCTIONS:
        go = random_go(rng, reduction, loss_shape(kind, x.shape, kw), dtype)
        check_against_reference(kind, x, y, reduction, go, kw, dtype)


SOFT_CASES = [("dice", {}), ("dice", {"squared_pred": True}), ("dice", {"jaccard": True}),
              ("tversky", {}), ("tversky", {"alpha": 0.2, "beta": 1.5})]


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind, opts", SOFT_CASES, ids=[f"{k}-{o}" for k, o in SOFT_CASES])
def test_soft_and_unchecked_targets(kind, opts, dtype):
    """Targets are not checked to be binary (MONAI): soft targets, and g = 2."""
    rng = rng_for("soft", kind, str(opts), np.dtype(dtype).name)
    x, y = make_inputs(rng, (2, 3, 4, 4), dtype, soft=True)
    y[0, 0, 0, 0] = 2.0
    check_against_reference(kind, x, y, "mean", None, opts, dtype)


# =================================================================================
# Golden files (no torch needed)
# =================================================================================


def _dec(obj):
    if isinstance(obj, dict) and "data" in obj:
        dtype = np.int64 if obj.get("dtype") == "int64" else np.float64
        return np.array(obj["data"], dtype=dtype).reshape(obj["shape"])
    return obj


def _golden_cases():
    out = []
    for func in ("dice_loss", "tversky_loss"):
        path = os.path.join(GOLDEN_DIR, func + ".json")
        if not os.path.exists(path):  # test_golden_files_present fails then
            continue
        with open(path) as f:
            data = json.load(f)
        for case in data["cases"]:
            out.append(pytest.param(func, case, id=f"{func}-{case['id']}"))
    return out


GOLDEN = _golden_cases()


def test_golden_files_present():
    assert {p.values[0] for p in GOLDEN} == {"dice_loss", "tversky_loss"}
    assert len(GOLDEN) >= 40
    total = sum(os.path.getsize(os.path.join(GOLDEN_DIR, f + ".json"))
                for f in ("dice_loss", "tversky_loss"))
    assert total < 200_000


@pytest.mark.parametrize("func, case", GOLDEN)
def test_golden(func, case):
    x, y = (_dec(a) for a in case["args"])
    kw = {k: _dec(v) for k, v in case["kwargs"].items()}
    reduction = case["reduction"]
    go = _dec(case["grad_output"])
    expected_value, expected_grad = _dec(case["value"]), _dec(case["grad"])
    kind = func.split("_")[0]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        crit = closs_cls(kind)(reduction=reduction, **kw)
        results = [closs_func(kind)(x, y, reduction=reduction, return_grad=True, grad_output=go,
                                    **kw), (crit(x, y), crit.backward(go))]
    for value, grad in results:
        assert np.shape(value) == np.shape(expected_value)
        assert_close(value, expected_value, np.float64)
        assert_close(grad, expected_grad, np.float64)


# =================================================================================
# MONAI itself (when importable; .ci/run installs it)
# =================================================================================


@pytest.mark.parametrize("kind", ["dice", "tversky"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("onehot", [False, True], ids=["dense", "labels"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_monai_parity(kind, act, batch, onehot, dtype):
    """Value and gradient against MONAI's own DiceLoss / TverskyLoss (autograd),
    for every option family, dense targets and to_onehot_y labels."""
    monai = pytest.importorskip("monai")
    torch = TORCH
    rng = rng_for("monai", kind, act, batch, onehot, np.dtype(dtype).name)
    x, y = make_inputs(rng, (2, 3, 4, 5), dtype, act, onehot=onehot)
    cases = [dict(), dict(include_background=False), dict(reduction="none"),
             dict(reduction="sum", smooth_nr=0.5, smooth_dr=2.0)]
    cases += ([dict(squared_pred=True), dict(jaccard=True), dict(weight=[0.5, 1.0, 2.0]),
               dict(jaccard=True, squared_pred=True, include_background=False)]
              if kind == "dice" else [dict(alpha=0.3, beta=0.7), dict(alpha=1.5, beta=0.2)])
    cls = monai.losses.DiceLoss if kind == "dice" else monai.losses.TverskyLoss
    for extra in cases:
        kw = dict(batch=batch, to_onehot_y=onehot, **act_kwargs(act), **extra)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        # MONAI one-hot encodes a float label tensor (B, 1, ...) itself, but in
        # float32, and with squared_pred it sums squared vector norms: G =
        # norm(one-hot)^2 then carries float32 roundings (sqrt(7)^2 != 7), where
        # closs counts G exactly.  There MONAI gets the one-hot in x's dtype.
        monai_kw, yt = kw, torch.from_numpy(y.astype(dtype))
        if onehot and extra.get("squared_pred"):
            monai_kw = dict(kw, to_onehot_y=False)
            yt = torch.from_numpy(NP.one_hot(y, 3, x))
        out = cls(**monai_kw)(xt, yt)
        go = rng.uniform(0.5, 2.0, tuple(out.shape)).astype(dtype)
        out.backward(torch.from_numpy(go))
        value, grad = closs_cls(kind)(**kw).value_and_grad(x, y, grad_output=go)
        assert_close(value, out.detach().numpy(), dtype)
        assert_close(grad, xt.grad.numpy(), dtype)


# =================================================================================
# Finite differences (float64)
# =================================================================================


def finite_difference_grad(f, x, h=1e-4):
    """4th-order central differences of the scalar f at x."""
    grad = np.empty_like(x)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        v = flat[i]
        vals = []
        for step in (2, 1, -1, -2):
            flat[i] = v + step * h
            vals.append(f(x))
        flat[i] = v
        out[i] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
    return grad


FD_CASES = (
    [("dice", dict(to_onehot_y=oh, squared_pred=sq, jaccard=jac, batch=b,
                   include_background=ib, **act_kwargs(act)))
     for act, oh, sq, jac, b, ib in itertools.product(ACTS, [False, True], [False, True],
                                                      [False, True], [False, True], [True])]
    + [("dice", dict(include_background=False, weight=[0.5, 2.0], softmax=True)),
       ("dice", dict(include_background=False, sigmoid=True, smooth_nr=0.0, smooth_dr=0.0))]
    + [("tversky", dict(to_onehot_y=oh, batch=b, alpha=a, beta=bb, include_background=ib,
                        **act_kwargs(act)))
       for act, oh, b, ib, (a, bb) in itertools.product(ACTS, [False, True], [False, True],
                                                        [True, False], [(0.3, 0.7), (1.5, 0.2)])]
)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind, kw", FD_CASES,
                         ids=[f"{k}-" + "-".join(f"{a}={v}" for a, v in kw.items() if v)
                              for k, kw in FD_CASES])
def test_finite_differences(kind, kw, reduction):
    rng = rng_for("fd", kind, str(kw), reduction)
    act = "sigmoid" if kw.get("sigmoid") else "softmax" if kw.get("softmax") else "none"
    x, y = make_inputs(rng, (2, 3, 2, 3), np.float64, act, kw.get("to_onehot_y", False))
    go = random_go(rng, reduction, loss_shape(kind, x.shape, kw), np.float64)
    func = closs_func(kind)
    grad = func(x, y, reduction=reduction, return_grad=True, grad_output=go, **kw)[1]

    def f(z):
        return float(np.sum(np.asarray(func(z, y, reduction=reduction, **kw)) * go))

    expected = finite_difference_grad(f, x.copy())
    assert_close(grad, expected, np.float64, rtol=1e-8)


# =================================================================================
# Empty masks, empty arrays, non-finite values
# =================================================================================


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", ["dice", "tversky"])
def test_empty_masks(kind, dtype):
    """An empty class with zero prediction scores 0 (default smoothing), with
    nonzero prediction about 1; both smooths 0 give nan (value and gradient)."""
    x = np.zeros((1, 2, 3, 3), dtype)
    y = np.zeros((1, 2, 3, 3), dtype)
    x[0, 1] = 0.5
    y[0, 1, 0, 0] = 1
    func = closs_func(kind)
    none, grad = func(x, y, reduction="none", return_grad=True)
    assert_close(none.ravel()[0], 0.0, dtype)
    v = func(x[:, ::-1].copy(), np.zeros_like(y), reduction="none")
    assert v.ravel()[0] > 0.99999
    # both smooth terms 0: 0/0 for the empty class
    kw = dict(smooth_nr=0.0, smooth_dr=0.0)
    none, grad = func(x, y, reduction="none", return_grad=True, **kw)
    assert np.isnan(none.ravel()[0]) and np.isfinite(none.ravel()[1])
    assert np.isnan(grad[0, 0]).all() and np.isfinite(grad[0, 1]).all()
    value, grad = func(x, y, return_grad=True, **kw)
    assert np.isnan(value)
    if TORCH is not None:
        for reduction in REDUCTIONS:
            check_against_reference(kind, x, y, reduction, None, kw, dtype)
        check_against_reference(kind, x, y, "mean", None, {}, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", ["dice", "tversky"])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 3, 0), (2, 3, 0, 5), (0, 3, 0)], ids=str)
def test_empty_arrays(kind, batch, shape, dtype):
    """B = 0: no entries ('mean' nan, 'sum' 0) unless batch=True (sums of nothing:
    L = 1 - nr/dr = 0); no positions: every sum 0, as MONAI's torch.sum."""
    x = np.zeros(shape, dtype)
    for onehot in (False, True):
        y = np.zeros((shape[0], 1) + shape[2:], np.int64) if onehot else np.zeros(shape, dtype)
        kw = dict(batch=batch, to_onehot_y=onehot, softmax=True)
        expected = {r: numpy_value(kind, x, y, reduction=r, **kw) for r in REDUCTIONS}
        for reduction in REDUCTIONS:
            value, grad = closs_func(kind)(x, y, reduction=reduction, return_grad=True, **kw)
            assert grad.shape == shape and grad.dtype == dtype
            assert_close(value, expected[reduction], dtype, check_dtype=False)
            assert np.shape(value) == np.shape(expected[reduction])


def test_no_classes():
    x = np.zeros((2, 0, 3))
    for kind in ("dice", "tversky"):
        value, grad = closs_func(kind)(x, x, return_grad=True)
        assert np.isnan(value) and grad.shape == x.shape
        assert closs_func(kind)(x, x, reduction="none").shape[:2] == (2, 0)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", ["dice", "tversky"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input(kind, act, bad, dtype):
    """NaN / inf propagate as in torch (NaN where torch has NaN, same finite values)."""
    if TORCH is None:
        pytest.skip("needs torch for the NaN pattern")
    rng = rng_for("nonfinite", kind, act, bad, np.dtype(dtype).name)
    for onehot, ib in itertools.product([False, True], [True, False]):
        x, y = make_inputs(rng, (2, 3, 4, 2), dtype, act, onehot)
        x[0, 1, 2, 1] = bad
        x[1, 0, 0, 0] = bad
        kw = dict(to_onehot_y=onehot, include_background=ib, **act_kwargs(act))
        with np.errstate(all="ignore"):
            for reduction in REDUCTIONS:
                check_against_reference(kind, x, y, reduction, None, kw, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", ["dice", "tversky"])
@pytest.mark.parametrize("magnitude", [30.0, 1e3, 1e30])
def test_huge_logits(kind, magnitude, dtype):
    """Saturated sigmoid / softmax stay finite and agree with the reference."""
    rng = rng_for("huge", kind, magnitude, np.dtype(dtype).name)
    x = (np.sign(rng.normal(size=(2, 3, 5))) * magnitude).astype(dtype)
    x[0, :, 0] = magnitude  # ties in the softmax
    y = (rng.random(x.shape) < 0.5).astype(dtype)
    for act in ("sigmoid", "softmax"):
        kw = act_kwargs(act)
        value, grad = closs_func(kind)(x, y, return_grad=True, **kw)
        assert np.isfinite(value) and np.isfinite(grad).all()
        check_against_reference(kind, x, y, "mean", None, kw, dtype)


@pytest.mark.parametrize("kind", ["dice", "tversky"])
def test_softmax_shift_invariance(kind):
    rng = rng_for("shift", kind)
    x, y = make_inputs(rng, (2, 4, 33), np.float64, "softmax", onehot=True)
    a = closs_func(kind)(x, y, softmax=True, to_onehot_y=True, return_grad=True)
    b = closs_func(kind)(x + 1e3, y, softmax=True, to_onehot_y=True, return_grad=True)
    assert_close(b[0], a[0], np.float64, rtol=1e-9)
    assert_close(b[1], a[1], np.float64, rtol=1e-9)


# =================================================================================
# Hypothesis properties
# =================================================================================


@st.composite
def problems(draw):
    """(x, y, onehot, act): a small problem of any shape, logits or probabilities."""
    batch = draw(st.integers(1, 3))
    classes = draw(st.integers(1, 4))
    spatial = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    shape = (batch, classes) + spatial
    act = draw(st.sampled_from(ACTS))
    onehot = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x, y = make_inputs(rng, shape, np.float64, act, onehot, soft=draw(st.booleans()))
    return x, y, onehot, act


@given(problems(), st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_dice_matches_reference_property(problem, ib, sq, jac, batch):
    x, y, onehot, act = problem
    kw = dict(include_background=ib, to_onehot_y=onehot, squared_pred=sq, jaccard=jac,
              batch=batch, **act_kwargs(act))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # single-channel warnings
        for reduction in REDUCTIONS:
            value = CF.dice_loss(x, y, reduction=reduction, **kw)
            assert_close(value, numpy_value("dice", x, y, reduction=reduction, **kw),
                         np.float64, check_dtype=False)


@given(problems(), st.floats(0.0, 3.0), st.floats(0.0, 3.0), st.booleans())
def test_tversky_matches_reference_property(problem, alpha, beta, batch):
    x, y, onehot, act = problem
    kw = dict(to_onehot_y=onehot, alpha=alpha, beta=beta, batch=batch, **act_kwargs(act))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        none = CF.tversky_loss(x, y, reduction="none", **kw)
        expected = numpy_value("tversky", x, y, reduction="none", **kw)
        # 1 - N/D loses absolute, not relative, accuracy: compare on the scale of 1
        assert_close(none, expected, np.float64, scale=1.0)
        assert_close(CF.tversky_loss(x, y, reduction="sum", **kw), np.sum(expected),
                     np.float64, scale=max(1.0, expected.size))


@given(problems(), st.floats(0.0, 1.0), st.floats(0.01, 1.0))
def test_dice_is_tversky_with_halved_smooths(problem, nr, dr):
    """Dice(nr, dr) = Tversky(1/2, 1/2, nr/2, dr/2); jaccard = Tversky(1, 1, nr/2, dr/2),
    values and gradients (spec §24: the relation with the smooth terms)."""
    x, y, onehot, act = problem
    kw = dict(to_onehot_y=onehot, **act_kwargs(act))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for jac, ab in ((False, 0.5), (True, 1.0)):
            d = CF.dice_loss(x, y, jaccard=jac, smooth_nr=nr, smooth_dr=dr, reduction="none",
                             return_grad=True, grad_output=None, **kw)
            t = CF.tversky_loss(x, y, alpha=ab, beta=ab, smooth_nr=nr / 2, smooth_dr=dr / 2,
                                reduction="none", return_grad=True, **kw)
            assert_close(d[0].reshape(t[0].shape), t[0], np.float64, scale=1.0)
            assert_close(d[1], t[1], np.float64)


@given(problems(), st.booleans())
def test_reductions_property(problem, batch):
    """'mean' / 'sum' are the mean / sum of 'none'; their gradients scale alike."""
    x, y, onehot, act = problem
    kw = dict(to_onehot_y=onehot, batch=batch, **act_kwargs(act))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        none, g_none = CF.dice_loss(x, y, reduction="none", return_grad=True, **kw)
        total, g_sum = CF.dice_loss(x, y, reduction="sum", return_grad=True, **kw)
        mean, g_mean = CF.dice_loss(x, y, reduction="mean", return_grad=True, **kw)
    assert_close(total, np.sum(none), np.float64, check_dtype=False)
    assert_close(mean, np.mean(none), np.float64, check_dtype=False)
    assert_close(g_none, g_sum, np.float64)
    assert_close(g_mean * none.size, g_sum, np.float64)


@given(problems())
def test_float32_agrees_with_float64(problem):
    x, y, onehot, act = problem
    kw = dict(to_onehot_y=onehot, **act_kwargs(act))
    y32 = y if onehot else y.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v64, g64 = CF.dice_loss(x, y, return_grad=True, **kw)
        v32, g32 = CF.dice_loss(x.astype(np.float32), y32, return_grad=True, **kw)
    assert_close(v32, v64, np.float32, check_dtype=False, scale=1.0)
    assert_close(g32, g64, np.float32, check_dtype=False)


# =================================================================================
# MONAI's warnings and bad input
# =================================================================================


@pytest.mark.parametrize("kind", ["dice", "tversky"])
def test_single_channel_warnings(kind):
    """C = 1: softmax, to_onehot_y and include_background=False are ignored, with
    MONAI's warnings, in that order."""
    rng = rng_for("single", kind)
    x, y = make_inputs(rng, (2, 1, 4, 3), np.float64)
    plain = closs_func(kind)(x, y, return_grad=True)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = closs_func(kind)(x, y, softmax=True, to_onehot_y=True, include_background=False,
                               return_grad=True)
    assert [str(w.message) for w in rec] == [
        "single channel prediction, `softmax=True` ignored.",
        "single channel prediction, `to_onehot_y=True` ignored.",
        "single channel prediction, `include_background=False` ignored."]
    assert all(w.category is UserWarning for w in rec)
    assert_identical(got[0], plain[0])
    assert_identical(got[1], plain[1])
    with pytest.warns(UserWarning, match="include_background"):  # the class warns per forward
        crit = closs_cls(kind)(include_background=False)
        crit(x, y)


def test_weight_ignored_for_one_scored_class():
    """MONAI applies (and checks) weight only when more than one class is scored."""
    rng = rng_for("weight-one")
    x, y = make_inputs(rng, (2, 2, 5), np.float64)
    plain = CF.dice_loss(x, y, include_background=False)
    assert CF.dice_loss(x, y, include_background=False, weight=[-1.0, 2.0, 3.0]) == plain
    assert CF.dice_loss(x, y, include_background=False, weight=7.0) == plain


def _err(exc, match, fn, *args, **kw):
    with pytest.raises(exc, match=match):
        fn(*args, **kw)


@pytest.mark.parametrize("kind", ["dice", "tversky"])
def test_bad_input(kind):
    func, cls = closs_func(kind), closs_cls(kind)
    x = np.full((2, 3, 4), 0.5)
    y = np.zeros((2, 3, 4))
    labels = np.zeros((2, 1, 4), np.int64)
    # shapes
    _err(ValueError, r"input: expected shape \(B, C, spatial...\).*got \(2, 3\)", func,
         x[..., 0], y[..., 0])
    _err(ValueError, r"target: expected the shape of input \(2, 3, 4\).*ground truth", func,
         x, y[:, :2])
    _err(ValueError, r"target: .*labels should have a channel with length equal to one",
         func, x, y, to_onehot_y=True)
    _err(ValueError, r"target: expected labels of shape \(2, 1, 4\).*ground truth", func,
         x, labels[:, :, :3], to_onehot_y=True)
    _err(ValueError, r"target: expected labels of shape", func, x, labels[:, 0, :1],
         to_onehot_y=True)
    # labels
    for bad, shown in ((3, "3"), (-1, "-1")):
        lab = labels.copy()
        lab[1, 0, 2] = bad
        for exc in (ValueError, IndexError):
            _err(exc, rf"target: expected class labels that are whole numbers in \[0, 3\).*"
                      rf"got {shown}", func, x, lab, to_onehot_y=True)
    for bad in (1.5, np.nan, np.inf, -0.5, 3.0):
        lab = labels.astype(np.float64)
        lab[0, 0, 1] = bad
        _err(ValueError, r"whole numbers in \[0, 3\)", func, x, lab, to_onehot_y=True)
    _err(IndexError, r"got 300", func, x, np.full((2, 1, 4), 300, np.uint16), to_onehot_y=True)
    _err(TypeError, r"target: expected class labels", func, x, labels.astype(complex),
         to_onehot_y=True)
    # dtypes
    _err(TypeError, r"input: expected a floating-point array", func, x.astype(int), y)
    _err(TypeError, r"target: expected an array of real numbers", func, x, y.astype(complex))
    # activations
    msg = r"Incompatible values: more than 1 of \[sigmoid=True, softmax=True, other_act"
    _err(ValueError, msg, func, x, y, sigmoid=True, softmax=True)
    _err(ValueError, msg, cls, sigmoid=True, other_act=np.tanh)
    _err(ValueError, r"other_act: expected None", func, x, y, other_act=np.tanh)
    _err(ValueError, r"other_act: expected None", cls, other_act=np.tanh)
    _err(TypeError, r"other_act must be None or callable but is int", cls, other_act=3)
    _err(TypeError, r"sigmoid: expected a bool", cls, sigmoid="yes")
    _err(TypeError, r"smooth_nr: expected a real number", cls, smooth_nr="1e-5")
    # reduction: at construction (MONAI), and in the functional
    _err(ValueError, r"reduction: expected one of 'none', 'mean', 'sum', got 'foo'", cls,
         reduction="foo")
    _err(ValueError, r"reduction: .*'elementwise_mean'", cls, reduction="elementwise_mean")
    _err(ValueError, r"reduction: .*got 'batchmean'", func, x, y, reduction="batchmean")
    # grad_output
    _err(ValueError, r"grad_output: expected a scalar", func, x, y, return_grad=True,
         grad_output=np.ones(2))
    _err(ValueError, r"grad_output: expected the loss's shape", func, x, y, reduction="none",
         return_grad=True, grad_output=np.ones((2, 3, 1, 1)))
    with pytest.raises(RuntimeError, match="before forward"):
        cls().backward()
    if kind == "tversky":
        _err(TypeError, r"alpha: expected a real number", cls, alpha=None)
        return
    # weight
    _err(ValueError, r"weight: expected 3 values, one per scored class.*got 2", func, x, y,
         weight=[1.0, 2.0])
    _err(ValueError, r"weight: expected 2 values.*got 3", func, x, y, weight=[1.0, 2.0, 3.0],
         include_background=False)
    _err(ValueError, r"weight: expected values >= 0.*no less than 0.*got -1", func, x, y,
         weight=[1.0, -1.0, 2.0])
    _err(ValueError, r"weight: expected values >= 0", func, x, y, weight=-2.0)
    _err(ValueError, r"weight: expected a number or one value per class, got an array of "
                     r"shape \(1, 3\)", cls, weight=[[1.0, 2.0, 3.0]])
    _err(TypeError, r"weight: expected a number or a sequence of numbers", cls, weight="a")


def test_signatures():
    """MONAI's parameter names, order and defaults (spec §22, §24), without the
    soft_label / ignore_index tail; the functional adds (input, target) in front."""
    import inspect

    dice = [("include_background", True), ("to_onehot_y", False), ("sigmoid", False),
            ("softmax", False), ("other_act", None), ("squared_pred", False),
            ("jaccard", False), ("reduction", "mean"), ("smooth_nr", 1e-5),
            ("smooth_dr", 1e-5), ("batch", False), ("weight", None)]
    tversky = [("include_background", True), ("to_onehot_y", False), ("sigmoid", False),
               ("softmax", False), ("other_act", None), ("alpha", 0.5), ("beta", 0.5),
               ("reduction", "mean"), ("smooth_nr", 1e-5), ("smooth_dr", 1e-5),
               ("batch", False)]
    for obj, expected, lead in ((closs.DiceLoss.__init__, dice, ["self"]),
                                (closs.TverskyLoss.__init__, tversky, ["self"]),
                                (CF.dice_loss, dice, ["input", "target"]),
                                (CF.tversky_loss, tversky, ["input", "target"])):
        params = list(inspect.signature(obj).parameters.values())
        assert [p.name for p in params[:len(lead)]] == lead
        got = [(p.name, p.default) for p in params[len(lead):len(lead) + len(expected)]]
        assert got == expected
        tail = {p.name: p for p in params[len(lead) + len(expected):]}
        if obj in (CF.dice_loss, CF.tversky_loss):
            assert tail["return_grad"].default is False and "grad_output" in tail
    assert "dice_loss" in CF.__all__ and "tversky_loss" in CF.__all__
    assert "DiceLoss" in closs.__all__ and "TverskyLoss" in closs.__all__


def test_class_attributes():
    crit = closs.DiceLoss(include_background=False, softmax=True, weight=[1, 2], batch=True)
    assert (crit.include_background, crit.softmax, crit.sigmoid, crit.batch) == (
        False, True, False, True)
    assert crit.weight.dtype == np.float64 and crit.reduction == "mean"
    t = closs.TverskyLoss(alpha=0.3, beta=0.7, reduction="sum")
    assert (t.alpha, t.beta, t.reduction, t.smooth_nr) == (0.3, 0.7, "sum", 1e-5)


# =================================================================================
# Layouts, dtypes, routes, threads
# =================================================================================


def test_fast_operands_agree_with_the_validated_path():
    """The common call's operands, made in Cython (fast_operands), equal those of
    closs.functional's full validation of the same call; any other call is left
    to that validation (None)."""
    from closs._kernels import _overlap
    rng = rng_for("fast-operands")
    fields = ("batch", "classes", "spatial", "first", "act", "squared", "batch_sum", "k", "u",
              "a", "b", "nr", "dr", "count", "loss_shape")
    cases = [(CF._dice_options(True, False, False, True, None, False, False, 1e-5, 1e-5, False,
                               None), (2, 3, 4, 5), False),
             (CF._dice_options(False, False, True, False, None, True, True, 0.5, 0.1, True,
                               None), (3, 4, 6), False),
             (CF._tversky_options(False, True, False, True, None, 0.3, 0.7, 1e-5, 1e-5,
                                  False), (2, 3, 4, 5), True),
             (CF._tversky_options(True, True, True, False, None, 0.5, 0.5, 1.0, 1.0, True),
              (1, 2, 9), True)]
    for opts, shape, onehot in cases:
        for dtype in FLOATS:
            x, y = make_inputs(rng, shape, dtype, "softmax", onehot)
            fast = _overlap.fast_operands(opts, x, y)
            slow = CF._overlap_operands(opts, np.asfortranarray(x), y.tolist())
            assert fast is not None
            for name in fields:
                assert getattr(fast, name) == getattr(slow, name), name
            assert_identical(fast.x, slow.x)
            assert_identical(fast.labels if onehot else fast.target,
                             slow.labels if onehot else slow.target)
            assert (fast.target if onehot else fast.labels) is None
    dice, tversky = cases[0][0], cases[2][0]
    x, y = make_inputs(rng, (2, 3, 4, 5), np.float64, "softmax", False)
    _, labels = make_inputs(rng, (2, 3, 4, 5), np.float64, "softmax", True)
    bad_labels = labels.copy()
    bad_labels[1, 0, 2, 3] = 3
    others = [(dice, x.tolist(), y), (dice, np.asfortranarray(x), y), (dice, x, y[:, :2]),
              (dice, x, y.astype(np.float32)), (dice, x.astype(">f8"), y), (dice, x[:, :1],
              y[:, :1]), (dice, x[..., 0, 0], y[..., 0, 0]),
              (dice._replace(weight=np.ones(3)), x, y), (tversky, x, labels.astype(np.int32)),
              (tversky, x, bad_labels), (tversky, x, labels[:, :, :3]), (tversky, x, y)]
    for opts, a, b in others:
        assert _overlap.fast_operands(opts, a, b) is None


@pytest.mark.parametrize("kind", ["dice", "tversky"])
def test_label_dtypes(kind):
    """Labels of any integer dtype, bool, whole floats and byte-swapped arrays agree."""
    rng = rng_for("label-dtypes", kind)
    x, y = make_inputs(rng, (2, 2, 4, 3), np.float64, "softmax", onehot=True)
    kw = dict(to_onehot_y=True, softmax=True)
    ref = closs_func(kind)(x, y, return_grad=True, **kw)
    for dtype in (np.int8, np.uint8, np.int16, np.int32, np.uint32, np.uint64, np.bool_,
                  np.float32, np.float64, ">i8", ">f8"):
        got = closs_func(kind)(x, y.astype(dtype), return_grad=True, **kw)
        assert_identical(got[0], ref[0], str(dtype))
        assert_identical(got[1], ref[1], str(dtype))
    got = closs_func(kind)(x, y.tolist(), return_grad=True, **kw)
    assert_identical(got[1], ref[1])


@pytest.mark.parametrize("kind", ["dice", "tversky"])
@pytest.mark.parametrize("layout", ["strided", "fortran", "readonly", "byteswapped", "list",
                                    "int-target", "mixed-dtype"])
def test_layouts(kind, layout):
    rng = rng_for("layouts", kind, layout)
    x, y = make_inputs(rng, (2, 3, 5, 4), np.float64, "sigmoid")
    kw = dict(sigmoid=True, include_background=False)
    ref = closs_func(kind)(x, y, reduction="none", return_grad=True, **kw)
    xs, ys = x.copy(), y.copy()
    if layout == "strided":
        big_x, big_y = np.zeros((2, 3, 10, 4)), np.zeros((2, 3, 10, 4))
        big_x[:, :, ::2], big_y[:, :, ::2] = x, y
        a, b = big_x[:, :, ::2], big_y[:, :, ::2]
    elif layout == "fortran":
        a, b = np.asfortranarray(x), np.asfortranarray(y)
    elif layout == "readonly":
        a, b = x.copy(), y.copy()
        a.flags.writeable = b.flags.writeable = False
    elif layout == "byteswapped":
        a, b = x.astype(">f8"), y.astype(">f8")
    elif layout == "list":
        a, b = x.tolist(), y.tolist()
    elif layout == "int-target":
        a, b = x, y.astype(np.int32)
    else:  # a float32 target meets a float64 input: the input's dtype wins
        a, b = x, y.astype(np.float32)
    got = closs_func(kind)(a, b, reduction="none", return_grad=True, **kw)
    assert_identical(got[0], ref[0])
    assert_identical(got[1], ref[1])
    np.testing.assert_array_equal(x, xs)  # inputs not modified
    np.testing.assert_array_equal(y, ys)
    assert not np.shares_memory(got[1], x)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_inputs_not_modified_and_results_fresh(dtype):
    rng = rng_for("fresh", np.dtype(dtype).name)
    x, y = make_inputs(rng, (2, 3, 8), dtype, "softmax", onehot=True)
    x0, y0 = x.copy(), y.copy()
    crit = closs.DiceLoss(softmax=True, to_onehot_y=True, reduction="none")
    v1 = crit(x, y)
    g1 = crit.backward()
    v1c, g1c = v1.copy(), g1.copy()
    v1[...] = 7
    g1[...] = 7
    g2 = crit.backward()  # backward is repeatable and independent of the returned arrays
    assert_identical(g2, g1c)
    assert_identical(crit(x, y), v1c)
    assert_identical(x, x0)
    assert_identical(y, y0)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", ["dice", "tversky"])
def test_default_grad_output(kind, dtype):
    """backward() without grad_output: 1 for reduced losses, ones for 'none'."""
    rng = rng_for("default-go", kind, np.dtype(dtype).name)
    x, y = make_inputs(rng, (2, 3, 6), dtype, "softmax")
    for reduction in REDUCTIONS:
        crit = closs_cls(kind)(softmax=True, reduction=reduction)
        value = crit(x, y)
        ones = np.ones(np.shape(value), dtype) if reduction == "none" else 1.0
        assert_identical(crit.backward(), crit.backward(ones))
        assert_identical(crit.backward(), closs_func(kind)(x, y, softmax=True,
                                                            reduction=reduction,
                                                            return_grad=True)[1])


THREAD_CASES = [("dice", dict(softmax=True, to_onehot_y=True)),
                ("dice", dict(sigmoid=True, squared_pred=True, batch=True)),
                ("dice", dict(jaccard=True, include_background=False, weight=[1.0, 2.0, 0.5])),
                ("tversky", dict(softmax=True, alpha=0.3, beta=0.7)),
                ("tversky", dict(sigmoid=True, to_onehot_y=True, batch=True))]


@pytest.mark.parametrize("shape", [(2, 4, 120, 161), (3000, 4, 3, 5)], ids=["pieces", "groups"])
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind, kw", THREAD_CASES, ids=[f"{k}-{i}" for i, (k, _) in
                                                        enumerate(THREAD_CASES)])
def test_one_vs_two_threads(restore_threads, kind, kw, dtype, shape):
    """Bit-identical values and gradients for 1 and 2 threads, at sizes that
    split over both: entries in several pieces (a unit is a piece of one
    entry), and many small entries (a unit is a group of whole entries)."""
    rng = rng_for("threads", kind, str(kw), np.dtype(dtype).name, str(shape))
    act = "sigmoid" if kw.get("sigmoid") else "softmax" if kw.get("softmax") else "none"
    x, y = make_inputs(rng, shape, dtype, act, kw.get("to_onehot_y", False))
    out = {}
    for n in (1, 2):
        closs.set_num_threads(n)
        out[n] = [closs_func(kind)(x, y, reduction=r, return_grad=True, **kw)
                  for r in REDUCTIONS]
    for a, b in zip(out[1], out[2]):
        assert_identical(a[0], b[0])
        assert_identical(a[1], b[1])
    check_against_reference(kind, x, y, "mean", None, kw, dtype, grads=False)


def test_simd_paths_identical(tmp_path):
    """The portable, AVX2 and AVX-512 builds give the same bits (no FMA contraction)."""
    rng = rng_for("simd")
    x, y = make_inputs(rng, (2, 3, 7, 19), np.float32, "softmax", onehot=True)
    xs = (rng.normal(size=(2, 3, 7, 19))).astype(np.float64)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "xs.npy", xs)
    code = f"""
import numpy as np, closs.functional as F
d = {str(tmp_path)!r}
x, y, xs = (np.load(d + f) for f in ("/x.npy", "/y.npy", "/xs.npy"))
v, g = F.dice_loss(x, y, softmax=True, to_onehot_y=True, return_grad=True)
w, h = F.tversky_loss(xs, y, sigmoid=True, to_onehot_y=True, alpha=0.2, beta=0.9,
                      return_grad=True)
import sys
sys.stdout.write(repr((float(v), float(w))) + " " + g.tobytes().hex() + " "
                 + h.tobytes().hex())
"""
    outs = {}
    for isa in ("portable", "avx2", "avx512"):
        res = run_python(code, {"CLOSS_SIMD": isa})
        assert res.returncode == 0, res.stderr
        outs[isa] = res.stdout
    assert outs["portable"] == outs["avx2"] == outs["avx512"]
