"""Margin losses over the class axis: MultiMarginLoss and MultiLabelMarginLoss
(spec §0, §14, §18, §25).

* the worked example (spec §25 #16) and the spec's anchors: fixed numbers, no torch;
* golden files (tests/golden/class_margin/, made by make_golden.py there),
  checked without torch;
* parity with torch 2.13 (make_golden.torch_reference) through every closs
  route: p = 1 / 2, margins, class weights, reductions, float32 / float64,
  every shape torch takes (0-d, (C,), (1, C) with a 0-d target, (N, C)),
  upstream gradients, legacy size_average / reduce, padded multilabel targets
  with entries after the first -1;
* exact hinges (z = 0: gradient 0) and ties, NaN / inf as torch, empty batches
  (closs: nan / 0 where torch returns uninitialised memory);
* 4th-order finite differences (float64) for both losses;
* hypothesis properties against NumPy float64 implementations of the spec's
  formulas, and identities (a one-target multilabel row is a multi-margin row,
  entries after the first -1 never matter, target order does not matter,
  dyadic shifts leave every bit unchanged);
* any integer target dtype, memory layouts, read-only inputs, inputs never
  modified, bit-identical routes, 1 vs 2 threads, every instruction-set path;
* bad input: exception type per API.md and a message naming the argument;
  names, signatures and repr.

Tolerances are conftest.assert_close's (rtol 1e-12 float64 / 1e-5 float32, an
absolute part scaled by the largest expected magnitude).
"""
import importlib.util
import inspect
import json
import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

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
# shared helpers of the class-axis tests
from test_classification import (
    INT_DTYPES,
    LAYOUT_KINDS,
    _dec,
    fd_gradient,
    random_go,
    relayout,
)

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "class_margin")
_spec = importlib.util.spec_from_file_location("_class_margin_golden",
                                               os.path.join(GOLDEN_DIR, "make_golden.py"))
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)  # torch is imported only when torch_reference runs
torch_reference = golden.torch_reference

DTYPE_IDS = ["f32", "f64"]
MM = LossCase("MultiMarginLoss", "multi_margin_loss")
MLM = LossCase("MultiLabelMarginLoss", "multilabel_margin_loss")
LOSSES = [MM, MLM]
LOSS_IDS = [c.func for c in LOSSES]
BY_FUNC = {c.func: c for c in LOSSES}


# =================================================================================
# Arguments and NumPy references (spec §14, §18, in float64)
# =================================================================================


def rows_of(x):
    """x as (rows, C): 0-d is one row of one class, (C,) one row."""
    x = np.asarray(x, np.float64)
    return x.reshape(-1, x.shape[-1] if x.ndim else 1)


def mm_reference(x, t, p=1, margin=1.0, weight=None):
    """(per-row losses, gradient of their sum) of MultiMargin, spec §18."""
    X = rows_of(x)
    T = np.asarray(t, np.int64).reshape(-1)
    C = X.shape[1]
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    loss, grad = np.zeros(len(X)), np.zeros(X.shape)
    with np.errstate(invalid="ignore"):  # NaN compares false; 0 * inf is NaN, as torch
        for r, y in enumerate(T):
            z = (margin - X[r, y]) + X[r]  # torch's order of operations
            on = z > 0
            on[y] = False
            # torch weights each active term, so a row without one is 0 for any w
            loss[r] = np.sum(z[on] ** p * w[y]) / C
            grad[r, on] = w[y] * (1.0 if p == 1 else 2 * z[on]) / C
            grad[r, y] = 0.0 - np.sum(grad[r, on])
    return loss, grad.reshape(np.shape(x))


def mlm_reference(x, t):
    """(per-row losses, gradient of their sum) of MultiLabelMargin, spec §14."""
    X = rows_of(x)
    C = X.shape[1]
    T = np.asarray(t, np.int64).reshape(-1, C)
    loss, grad = np.zeros(len(X)), np.zeros(X.shape)
    for r in range(len(X)):
        stop = np.flatnonzero(T[r] < 0)
        targets = T[r, :stop[0] if stop.size else C]
        other = np.ones(C, bool)
        other[targets] = False
        for j in targets:
            with np.errstate(invalid="ignore"):
                z = (1.0 - X[r, j]) + X[r]
                on = other & (z > 0)
            loss[r] += np.sum(z[on])
            grad[r, on] += 1 / C
            grad[r, j] -= np.sum(on) / C
        loss[r] /= C
    return loss, grad.reshape(np.shape(x))


def label_sets(rng, rows, C, junk=True):
    """rows x C multilabel targets: distinct classes, then -1, then (junk) entries
    in [-1, C) that are ignored."""
    t = np.full((rows, C), -1, np.int64)
    for r in range(rows):
        k = int(rng.integers(0, C + 1))
        t[r, :k] = rng.permutation(C)[:k]
        if junk and k + 1 < C:
            t[r, k + 1:] = rng.integers(-1, C, C - k - 1)
    return t


def target_shape(func, shape):
    if func == "multilabel_margin_loss":
        return shape
    return () if len(shape) < 2 else shape[:1]


def make_args(func, rng, shape, dtype=np.float64):
    """(input, target) for an input of `shape` (targets int64)."""
    shape = tuple(shape)
    C = shape[-1] if shape else 1
    x = rng.normal(0.0, 1.0, shape).astype(dtype)
    if func == "multi_margin_loss":
        return x, rng.integers(0, C, target_shape(func, shape))
    rows = shape[0] if len(shape) == 2 else 1
    return x, label_sets(rng, rows, C).reshape(shape)


def loss_shape(func, shape, t_shape=None):
    if len(shape) == 2 and not (func == "multi_margin_loss" and t_shape == ()):
        return shape[:1]
    if func == "multi_margin_loss" and t_shape == (1,):
        return (1,)
    return ()


MM_OPTS = {
    "plain": {},
    "p=2": {"p": 2},
    "margin=0.5": {"margin": 0.5},
    "weight": {"weight": True},
    "p=2+margin=-0.3+weight": {"p": 2, "margin": -0.3, "weight": True},
}


def mm_kwargs(opts, C, dtype, rng):
    kw = dict(MM_OPTS[opts])
    if kw.get("weight"):
        kw["weight"] = rng.uniform(0.25, 2.0, C).astype(dtype)
    return kw


def check_routes(case, args, reduction, go, ref_value, ref_grad, dtype, kwargs):
    """Every closs route against the reference value and input gradient."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        routes = closs_routes(case, args, reduction, go, kwargs=kwargs)
    for route, (value, grads) in routes.items():
        msg = f"[{route}]"
        if reduction == "none":
            assert isinstance(value, np.ndarray), msg
        else:
            assert type(value) is np.dtype(dtype).type, msg
        assert_close(value, ref_value, dtype, err_msg=msg + " value")
        if grads is not None:
            assert len(grads) == 1, msg
            assert_close(grads[0], ref_grad, dtype, err_msg=msg + " grad")
    return routes


# =================================================================================
# Worked example (spec §25 #16) and the spec's anchors
# =================================================================================

ANCHOR_X = np.array([[.1, .2, .4, .8], [1, -1, .5, 0], [.3, .3, .3, .3]])


class TestWorkedExamples:
    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_multilabel_margin_worked_example(self, dtype):
        """[[1,2,3,4]] with targets [[0,3,-1,-1]]: 1.25, not the article's 0.0.
        Pairs (0,1) -> 2 and (0,2) -> 3; (3,1) -> -1 and (3,2) -> 0 (an exact
        hinge: no loss, no gradient); 5 / C = 1.25."""
        x = np.array([[1, 2, 3, 4]], dtype)
        t = np.array([[0, 3, -1, -1]])
        for value in (closs.MultiLabelMarginLoss()(x, t), CF.multilabel_margin_loss(x, t)):
            assert type(value) is np.dtype(dtype).type
            assert value == 1.25
        v, g = closs.MultiLabelMarginLoss(reduction="none").value_and_grad(x, t)
        np.testing.assert_array_equal(v, [1.25])
        np.testing.assert_array_equal(g, [[-0.5, 0.25, 0.25, 0.0]])

    def test_multilabel_margin_anchor(self):
        t = np.array([[3, 0, -1, 1], [1, 2, 3, -1], [-1, 0, 1, 2]])
        np.testing.assert_allclose(CF.multilabel_margin_loss(ANCHOR_X, t, reduction="none"),
                                   [0.85, 1.625, 0.0], rtol=1e-15)
        assert CF.multilabel_margin_loss(ANCHOR_X, t) == pytest.approx(0.825, rel=1e-15)

    def test_multi_margin_anchor(self):
        y = np.array([3, 0, 1])
        np.testing.assert_allclose(CF.multi_margin_loss(ANCHOR_X, y, reduction="none"),
                                   [0.325, 0.125, 0.75], rtol=1e-15)
        assert CF.multi_margin_loss(ANCHOR_X, y) == pytest.approx(0.4, rel=1e-15)
        assert CF.multi_margin_loss(ANCHOR_X, y, weight=np.array([1, 2, .5, 3])) == \
            pytest.approx(0.8666666666666666, rel=1e-15)
        assert CF.multi_margin_loss(ANCHOR_X, y, p=2) == pytest.approx(0.32166666666666666,
                                                                      rel=1e-15)

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_nan_logits_contribute_nothing(self, dtype):
        """Spec §0.7: x = [0, nan, 0], y = 0 -> 1/3; NaN at the target -> 0, grad 0."""
        v, g = CF.multi_margin_loss(np.array([0, np.nan, 0], dtype), np.array(0),
                                    return_grad=True)
        assert v == pytest.approx(1 / 3, rel=1e-7)
        np.testing.assert_allclose(g, [-1 / 3, 0, 1 / 3], rtol=1e-7)
        v, g = CF.multi_margin_loss(np.array([np.nan, 1, 0], dtype), np.array(0),
                                    return_grad=True)
        assert v == 0
        np.testing.assert_array_equal(g, [0, 0, 0])
        v, g = CF.multilabel_margin_loss(np.array([np.nan, 1, 0], dtype), np.array([0, -1, 0]),
                                         return_grad=True)
        assert v == 0
        np.testing.assert_array_equal(g, [0, 0, 0])

    def test_weight_is_indexed_by_the_target(self):
        """w[y] multiplies the whole row (spec §18), never enters the 'mean' denominator."""
        x = np.array([[0.5, 0.25, -1.0], [0.0, 2.0, 1.0]])
        y = np.array([0, 2])
        w = np.array([3.0, 100.0, 0.5])
        none = CF.multi_margin_loss(x, y, reduction="none")
        np.testing.assert_allclose(CF.multi_margin_loss(x, y, weight=w, reduction="none"),
                                   none * [3.0, 0.5], rtol=1e-15)
        assert CF.multi_margin_loss(x, y, weight=w) == pytest.approx(
            (3.0 * none[0] + 0.5 * none[1]) / 2, rel=1e-15)
        _, g = CF.multi_margin_loss(x, y, weight=w, reduction="sum", return_grad=True)
        _, g1 = CF.multi_margin_loss(x, y, reduction="sum", return_grad=True)
        np.testing.assert_allclose(g, g1 * np.array([[3.0], [0.5]]), rtol=1e-15)

    def test_repeated_targets_count_again(self):
        x = np.array([0.5, 0.25, -1.0, 0.75])
        once = CF.multilabel_margin_loss(x, np.array([1, -1, 0, 0]), reduction="sum",
                                         return_grad=True)
        twice = CF.multilabel_margin_loss(x, np.array([1, 1, -1, 0]), reduction="sum",
                                          return_grad=True)
        assert twice[0] == 2 * once[0]
        np.testing.assert_array_equal(twice[1], 2 * once[1])

    def test_no_targets_and_all_targets_give_zero(self):
        x = np.array([[0.5, 0.25, -1.0], [1.0, 2.0, 3.0]])
        t = np.array([[-1, 0, 1], [2, 0, 1]])
        v, g = CF.multilabel_margin_loss(x, t, reduction="none", return_grad=True)
        np.testing.assert_array_equal(v, [0, 0])
        np.testing.assert_array_equal(g, np.zeros((2, 3)))


# =================================================================================
# Golden files (torch-made, checked without torch)
# =================================================================================


def _golden_cases():
    out = []
    for func in golden.FUNCS:
        path = os.path.join(GOLDEN_DIR, func + ".json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            data = json.load(f)
        out += [pytest.param(func, case, id=f"{func}-{case['id']}") for case in data["cases"]]
    return out


GOLDEN = _golden_cases()


def test_golden_files_present():
    assert {p.values[0] for p in GOLDEN} == set(golden.FUNCS)
    assert sum(os.path.getsize(os.path.join(GOLDEN_DIR, f + ".json"))
               for f in golden.FUNCS) < 100_000


@pytest.mark.parametrize("func, case", GOLDEN)
def test_golden(func, case):
    args = [_dec(a) for a in case["args"]]
    kwargs = {k: _dec(v) for k, v in case["kwargs"].items()}
    go = _dec(case["grad_output"])
    expected_value, expected_grad = _dec(case["value"]), _dec(case["grads"][0])
    reduction = kwargs.pop("reduction")
    results = [getattr(CF, func)(*args, reduction=reduction, return_grad=True, grad_output=go,
                                 **kwargs)]
    crit = BY_FUNC[func].closs_cls(reduction=reduction, **kwargs)
    results.append((crit(*args), crit.backward(go)))
    for value, grad in results:
        assert np.shape(value) == expected_value.shape
        assert_close(value, expected_value, np.float64)
        assert_close(grad, expected_grad, np.float64)


# =================================================================================
# Parity with torch through every route
# =================================================================================

# (input shape, target shape): every form torch takes
MM_SHAPES = [((), ()), ((5,), ()), ((5,), (1,)), ((1, 5), ()), ((7, 5), None),
             ((70, 40), None), ((3, 300), None), ((2, 1), None)]
MLM_SHAPES = [(), (5,), (1,), (7, 5), (9, 16), (9, 17), (70, 40), (3, 300), (2, 1)]  # 16 | 17: short rows | lanes


def _parity(torch, func, shape, tshape, kw, reduction, dtype, rng):
    x, t = make_args(func, rng, shape, dtype)
    if tshape is not None and func == "multi_margin_loss":
        t = np.asarray(t).reshape(tshape)
    go = random_go(rng, reduction, loss_shape(func, shape, tshape), dtype)
    ref_value, ref_grad = torch_reference(func, [x, t], dict(kw, reduction=reduction), go)
    check_routes(BY_FUNC[func], [x, t], reduction, go, ref_value, ref_grad, dtype, kw)
    # the default upstream gradient (1 / all ones)
    _, ref_grad = torch_reference(func, [x, t], dict(kw, reduction=reduction))
    crit = BY_FUNC[func].closs_cls(reduction=reduction, **kw)
    crit(x, t)
    assert_close(crit.backward(), ref_grad, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shapes", MM_SHAPES, ids=str)
@pytest.mark.parametrize("opts", list(MM_OPTS))
def test_multi_margin_parity(torch, opts, shapes, reduction, dtype):
    shape, tshape = shapes
    rng = rng_for("mm-parity", opts, shapes, reduction, np.dtype(dtype).name)
    kw = mm_kwargs(opts, shape[-1] if shape else 1, dtype, rng)
    _parity(torch, "multi_margin_loss", shape, tshape, kw, reduction, dtype, rng)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", MLM_SHAPES, ids=str)
def test_multilabel_margin_parity(torch, shape, reduction, dtype):
    rng = rng_for("mlm-parity", shape, reduction, np.dtype(dtype).name)
    _parity(torch, "multilabel_margin_loss", shape, None, {}, reduction, dtype, rng)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_multilabel_single_class_with_0d_target(torch, dtype):
    """A (1,) input takes a 0-d target (torch: target.numel() == C)."""
    for t in (np.array(0), np.array(-1), np.array([0])):
        for reduction in REDUCTIONS:
            x = np.array([0.5], dtype)
            ref_value, ref_grad = torch_reference("multilabel_margin_loss", [x, t],
                                                  {"reduction": reduction})
            check_routes(MLM, [x, t], reduction, None, ref_value, ref_grad, dtype, {})


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("margin", [1.0, 0.5, 0.0, 0.25, -0.5])
def test_multi_margin_kinks_and_ties(torch, margin, dtype, reduction):
    """Logits on a grid of quarters: many z = margin - x_y + x_i are exactly 0
    (gradient 0, strict test) and many logits tie; closs decides as torch."""
    rng = rng_for("mm-kinks", margin, np.dtype(dtype).name, reduction)
    x = (rng.integers(-6, 7, (40, 6)) / 4).astype(dtype)
    t = rng.integers(0, 6, 40)
    for kw in ({"p": 1}, {"p": 2}, {"p": 2, "weight": rng.uniform(0.5, 2, 6).astype(dtype)}):
        kw = dict(kw, margin=margin)
        ref_value, ref_grad = torch_reference("multi_margin_loss", [x, t],
                                              dict(kw, reduction=reduction))
        routes = check_routes(MM, [x, t], reduction, None, ref_value, ref_grad, dtype, kw)
        g = routes["value_and_grad"][1][0]
        z = (margin - x[np.arange(40), t][:, None]) + x
        assert np.any(z == 0)
        hinge = (z == 0)
        hinge[np.arange(40), t] = False
        assert np.all(g[hinge] == 0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_multilabel_margin_kinks_and_ties(torch, dtype, reduction):
    rng = rng_for("mlm-kinks", np.dtype(dtype).name, reduction)
    x = (rng.integers(-6, 7, (40, 6)) / 4).astype(dtype)
    t = label_sets(rng, 40, 6)
    ref_value, ref_grad = torch_reference("multilabel_margin_loss", [x, t],
                                          {"reduction": reduction})
    check_routes(MLM, [x, t], reduction, None, ref_value, ref_grad, dtype, {})
    x = np.array([[1.0, 0.0, 0.5, 2.0]], dtype)  # pairs (0, 1): z = 0; (0, 2): 0.5; (0, 3): 2
    _, g = CF.multilabel_margin_loss(x, np.array([[0, -1, 0, 0]]), reduction="sum",
                                     return_grad=True)
    np.testing.assert_array_equal(g, [[-0.5, 0.0, 0.25, 0.25]])


def _sprinkle(rng, x, values=(np.nan, np.inf, -np.inf)):
    """x with ~15% of its entries replaced by NaN / +-inf."""
    x = x.copy()
    mask = rng.random(x.shape) < 0.15
    x[mask] = rng.choice(np.asarray(values, x.dtype), int(mask.sum()))
    return x


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, kw", [
    ("multi_margin_loss", {}), ("multi_margin_loss", {"p": 2}),
    ("multi_margin_loss", {"p": 2, "weight": "zeros-and-ones"}),
    ("multi_margin_loss", {"weight": "zeros-and-ones"}), ("multilabel_margin_loss", {})],
    ids=["mm-p1", "mm-p2", "mm-p2-weight", "mm-p1-weight", "mlm"])
def test_nonfinite_as_torch(torch, func, kw, dtype):
    """NaN / inf at targets and elsewhere: comparisons with NaN are false (no
    term), +inf terms are inf (p = 2: inf gradients), a zero weight times inf is
    NaN, as torch."""
    rng = rng_for("nonfinite", func, str(kw), np.dtype(dtype).name)
    x, t = make_args(func, rng, (30, 5), dtype)
    x = _sprinkle(rng, x)
    kw = dict(kw)
    if kw.get("weight") == "zeros-and-ones":
        kw["weight"] = np.array([0, 1, 1, 0, 2], dtype)
    for reduction in REDUCTIONS:
        for go in (None, random_go(rng, reduction, loss_shape(func, (30, 5)), dtype)):
            ref_value, ref_grad = torch_reference(func, [x, t], dict(kw, reduction=reduction), go)
            with np.errstate(all="ignore"):
                check_routes(BY_FUNC[func], [x, t], reduction, go, ref_value, ref_grad, dtype, kw)


@pytest.mark.parametrize("func", LOSS_IDS)
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_empty_batch(func, dtype):
    """N = 0: 'none' is empty, 'mean' nan, 'sum' 0 (torch: uninitialised memory
    for the last two), gradients of shape (0, C); no floating-point warnings."""
    x = np.zeros((0, 4), dtype)
    t = np.zeros((0,) if func == "multi_margin_loss" else (0, 4), np.int64)
    for reduction in REDUCTIONS:
        go = np.zeros(0, dtype) if reduction == "none" else 2.0
        with np.errstate(all="raise"):
            routes = closs_routes(BY_FUNC[func], [x, t], reduction, go)
        for value, grads in routes.values():
            if reduction == "none":
                assert value.shape == (0,) and value.dtype == dtype
            elif reduction == "mean":
                assert np.isnan(value) and type(value) is np.dtype(dtype).type
            else:
                assert value == 0 and type(value) is np.dtype(dtype).type
            if grads is not None:
                assert grads[0].shape == (0, 4) and grads[0].dtype == dtype


def test_empty_batch_none_as_torch(torch):
    for func in LOSS_IDS:
        x = np.zeros((0, 3))
        t = np.zeros((0,) if func == "multi_margin_loss" else (0, 3), np.int64)
        ref_value, ref_grad = torch_reference(func, [x, t], {"reduction": "none"})
        check_routes(BY_FUNC[func], [x, t], "none", None, ref_value, ref_grad, np.float64, {})


LEGACY = [(None, False, "none"), (False, None, "sum"), (True, None, "mean"),
          (True, False, "none"), (False, True, "sum")]


@pytest.mark.parametrize("size_average, reduce, expected", LEGACY,
                         ids=[f"sa={a}-r={b}" for a, b, _ in LEGACY])
@pytest.mark.parametrize("func", LOSS_IDS)
def test_legacy_size_average_reduce(torch, func, size_average, reduce, expected):
    rng = rng_for("legacy", func, size_average, reduce)
    x, t = make_args(func, rng, (4, 3))
    kw = {"weight": rng.uniform(0.5, 2, 3), "p": 2} if func == "multi_margin_loss" else {}
    case = BY_FUNC[func]
    other = "sum" if expected != "sum" else "none"  # overridden by the legacy pair
    msg = ("size_average and reduce args will be deprecated, please use "
           f"reduction='{expected}' instead")
    with pytest.warns(UserWarning, match=msg):
        crit = case.closs_cls(size_average=size_average, reduce=reduce, reduction=other, **kw)
    with pytest.warns(UserWarning, match=msg):
        fvalue, fgrad = case.closs_func(x, t, size_average=size_average, reduce=reduce,
                                        reduction=other, return_grad=True, **kw)
    plain = case.closs_func(x, t, reduction=expected, return_grad=True, **kw)
    for v, g in [crit.value_and_grad(x, t), (fvalue, fgrad)]:
        assert_identical(v, plain[0])
        assert_identical(g, plain[1])
    ref_value, ref_grad = torch_reference(func, [x, t], dict(
        kw, size_average=size_average, reduce=reduce, reduction=other))
    assert_close(fvalue, ref_value)
    assert_close(fgrad, ref_grad)


@pytest.mark.parametrize("func", LOSS_IDS)
def test_legacy_positional(func):
    """size_average and reduce keep torch's positional places."""
    x, t = make_args(func, rng_for("legpos", func), (3, 4))
    legacy = (1, 1.0, None, False, True) if func == "multi_margin_loss" else (False, True)
    case = BY_FUNC[func]
    with pytest.warns(UserWarning, match="reduction='sum'"):
        crit = case.closs_cls(*legacy)
    with pytest.warns(UserWarning, match="reduction='sum'"):
        value = case.closs_func(x, t, *legacy)
    assert crit.reduction == "sum"
    assert_identical(value, case.closs_func(x, t, reduction="sum"))


@pytest.mark.parametrize("func", LOSS_IDS)
def test_elementwise_mean_alias(torch, func):
    """A deprecated alias of 'mean' for both (torch's reduction enum), with a warning."""
    x, t = make_args(func, rng_for("alias", func), (3, 4))
    with pytest.warns(UserWarning, match="elementwise_mean"):
        value = BY_FUNC[func].closs_func(x, t, reduction="elementwise_mean")
    with pytest.warns(UserWarning, match="elementwise_mean"):
        crit = BY_FUNC[func].closs_cls(reduction="elementwise_mean")
    assert crit.reduction == "mean"
    assert_identical(value, BY_FUNC[func].closs_func(x, t))
    assert_close(value, torch_reference(func, [x, t], {"reduction": "elementwise_mean"})[0])


def test_mixed_float_dtypes_keep_input_dtype():
    """A float64 weight with a float32 input gives the float32 result (API.md;
    torch refuses the mix)."""
    rng = rng_for("mixed")
    x, t = make_args("multi_margin_loss", rng, (5, 4), np.float32)
    w = rng.uniform(0.5, 2, 4)
    for reduction in REDUCTIONS:
        v, g = CF.multi_margin_loss(x, t, weight=w, reduction=reduction, return_grad=True)
        ref = CF.multi_margin_loss(x, t, weight=w.astype(np.float32), reduction=reduction,
                                   return_grad=True)
        assert np.asarray(v).dtype == np.float32 and g.dtype == np.float32
        assert_identical(v, ref[0])
        assert_identical(g, ref[1])


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("func", LOSS_IDS)
def test_integer_target_dtypes(func, dtype):
    """Any integer dtype (torch: int64 only) gives the int64 result, bit for bit."""
    rng = rng_for("intdt", func, np.dtype(dtype).name)
    x, t = make_args(func, rng, (9, 5), np.float32)
    if np.dtype(dtype).kind == "u":
        t = np.where(t < 0, 4, t)  # no -1 terminators: every entry is a target
    for reduction in REDUCTIONS:
        want = BY_FUNC[func].closs_func(x, t, reduction=reduction, return_grad=True)
        got = BY_FUNC[func].closs_func(x, t.astype(dtype), reduction=reduction, return_grad=True)
        crit = BY_FUNC[func].closs_cls(reduction=reduction)
        for v, g in (got, crit.value_and_grad(x, t.astype(dtype))):
            assert_identical(v, want[0])
            assert_identical(g, want[1])


# =================================================================================
# Finite differences (float64, 4th order), away from the hinges
# =================================================================================

FD_CASES = [("multi_margin_loss", (5,), {}), ("multi_margin_loss", (3, 5), {}),
            ("multi_margin_loss", (3, 5), {"p": 2, "margin": 0.5, "weight": True}),
            ("multi_margin_loss", (3, 5), {"margin": -0.25, "weight": True}),
            ("multilabel_margin_loss", (5,), {}), ("multilabel_margin_loss", (4, 5), {})]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("func, shape, opts", FD_CASES,
                         ids=[f"{f}-{s}-{o}" for f, s, o in FD_CASES])
def test_finite_differences(func, shape, opts, reduction):
    rng = rng_for("fd", func, shape, str(opts), reduction)
    kw = dict(opts)
    if kw.get("weight"):
        kw["weight"] = rng.uniform(0.5, 2, shape[-1])
    margin = kw.get("margin", 1.0)
    for _ in range(100):  # every pair's hinge argument at least 0.05 away from 0
        x, t = make_args(func, rng, shape)
        X = rows_of(x)
        z = (margin - X[:, :, None]) + X[:, None, :]  # z[r, j, i]: target j, other class i
        z[:, np.arange(X.shape[1]), np.arange(X.shape[1])] = 1.0  # i == j is never a pair
        if np.min(np.abs(z)) > 0.05 and np.any(_reference(func, x, t, kw)[1] != 0):
            break
    go = random_go(rng, reduction, loss_shape(func, shape), np.float64)
    fn = getattr(CF, func)

    def phi(z):
        v = fn(z, t, reduction=reduction, **kw)
        return float(np.sum(np.asarray(go) * v)) if reduction == "none" else float(go * v)

    _, g = fn(x, t, reduction=reduction, return_grad=True, grad_output=go, **kw)
    numeric = fd_gradient(phi, x)
    assert np.any(g != 0)
    np.testing.assert_allclose(g, numeric, rtol=1e-7, atol=1e-9)


# =================================================================================
# Properties (hypothesis) against the NumPy float64 references
# =================================================================================

REALS = st.one_of(st.floats(-4, 4, width=64), st.integers(-16, 16).map(lambda k: k / 4))


@st.composite
def mm_problems(draw, nonfinite=False):
    C = draw(st.integers(1, 6))
    shape = draw(st.sampled_from([(C,), (draw(st.integers(0, 5)), C)] + ([()] if C == 1 else [])))
    elements = st.one_of(REALS, st.sampled_from([np.nan, np.inf, -np.inf])) if nonfinite \
        else REALS
    n = int(np.prod(shape))
    x = np.array(draw(st.lists(elements, min_size=n, max_size=n)), np.float64).reshape(shape)
    rows = shape[0] if len(shape) == 2 else 1
    t = np.array(draw(st.lists(st.integers(0, C - 1), min_size=rows, max_size=rows)), np.int64)
    t = t.reshape(target_shape("multi_margin_loss", shape))
    kw = {"p": draw(st.sampled_from([1, 2])),
          "margin": draw(st.sampled_from([1.0, 0.5, 0.0, -0.5, 2.0]))}
    if draw(st.booleans()):
        weights = st.one_of(st.floats(-4, 4), st.sampled_from([np.nan, np.inf, -np.inf])) \
            if nonfinite else st.floats(0, 4)
        kw["weight"] = np.array(draw(st.lists(weights, min_size=C, max_size=C)))
    return x, t, kw


@st.composite
def mlm_problems(draw):
    C = draw(st.integers(1, 6))
    shape = draw(st.sampled_from([(C,), (draw(st.integers(0, 5)), C)] + ([()] if C == 1 else [])))
    n = int(np.prod(shape))
    x = np.array(draw(st.lists(REALS, min_size=n, max_size=n)), np.float64).reshape(shape)
    rows = shape[0] if len(shape) == 2 else 1
    t = np.full((rows, C), -1, np.int64)
    for r in range(rows):
        k = draw(st.integers(0, C))
        t[r, :k] = draw(st.lists(st.integers(0, C - 1), min_size=k, max_size=k))  # repeats too
        if k + 1 < C:
            t[r, k + 1:] = draw(st.lists(st.integers(-1, C - 1), min_size=C - k - 1,
                                         max_size=C - k - 1))
    return x, t.reshape(shape), {}


def _reference(func, x, t, kw):
    return mm_reference(x, t, **kw) if func == "multi_margin_loss" else mlm_reference(x, t)


def _check_against_reference(func, x, t, kw):
    loss, grad = _reference(func, x, t, kw)
    fn = getattr(CF, func)
    v, g = fn(x, t, reduction="none", return_grad=True, **kw)
    assert np.shape(v) == loss_shape(func, x.shape, np.shape(t))
    np.testing.assert_allclose(np.reshape(v, -1), loss, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(g, grad, rtol=1e-13, atol=1e-300)
    total, g_sum = fn(x, t, reduction="sum", return_grad=True, **kw)
    assert float(total) == pytest.approx(math.fsum(loss.tolist()), rel=1e-13, abs=1e-300)
    assert_identical(g_sum, g)
    mean, g_mean = fn(x, t, return_grad=True, **kw)
    if loss.size == 0:
        assert np.isnan(mean) and total == 0
    else:
        assert float(mean) == pytest.approx(float(total) / loss.size, rel=1e-15, abs=1e-300)
        np.testing.assert_allclose(g_mean, g / loss.size, rtol=1e-15, atol=1e-300)


@given(problem=mm_problems())
def test_multi_margin_matches_reference(problem):
    _check_against_reference("multi_margin_loss", *problem)


@given(problem=mlm_problems())
def test_multilabel_margin_matches_reference(problem):
    _check_against_reference("multilabel_margin_loss", *problem)


@given(problem=mm_problems(nonfinite=True))
def test_multi_margin_nonfinite_matches_reference(problem):
    x, t, kw = problem
    loss, grad = mm_reference(x, t, **kw)
    with np.errstate(all="ignore"):
        v, g = CF.multi_margin_loss(x, t, reduction="none", return_grad=True, **kw)
    assert_close(np.reshape(v, -1), loss, np.float64, rtol=1e-13)
    assert_close(g, grad, np.float64, rtol=1e-13)


@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_nonfinite_weight_as_torch(torch, p):
    """torch multiplies the weight into the active terms only: a NaN or
    infinite weight leaves a row without active terms at 0 (value and
    gradient), and elsewhere makes NaN / inf only the active entries."""
    x = np.array([[2.0, 0.0, 0.5], [2.0, 0.0, 1.5], [0.0, 3.0, 0.2], [1.0, 1.0, 1.0]])
    t = np.array([0, 0, 1, 2])
    for w in ([np.nan, 1.0, 2.0], [np.inf, 1.0, 0.5], [-np.inf, np.nan, -1.0]):
        w = np.array(w)
        for reduction in ("none", "sum"):
            v, g = CF.multi_margin_loss(x, t, p=p, weight=w, reduction=reduction,
                                        return_grad=True)
            tx = torch.tensor(x, requires_grad=True)
            tv = torch.nn.functional.multi_margin_loss(tx, torch.tensor(t), p=p,
                                                       weight=torch.tensor(w),
                                                       reduction=reduction)
            tv.sum().backward()
            np.testing.assert_array_equal(v, tv.detach().numpy())
            np.testing.assert_array_equal(g, tx.grad.numpy())
            assert not np.signbit(g[tx.grad.numpy() == 0]).any()  # +0, as torch


def test_multi_margin_tiny_weight_keeps_infinite_gradient():
    """torch scales by 1/C first and by the weight last: a subnormal weight
    times an infinite slope stays infinite instead of 0 * inf = nan (a case
    hypothesis found)."""
    x = np.zeros((2, 6))
    x[1, 5] = -np.inf
    t = np.array([0, 5])
    w = np.array([0, 0, 0, 0, 0, 5e-324])
    loss, grad = mm_reference(x, t, p=2, weight=w)
    with np.errstate(all="ignore"):
        v, g = CF.multi_margin_loss(x, t, p=2, weight=w, reduction="none", return_grad=True)
    assert_close(v, loss, np.float64)
    assert_close(g, grad, np.float64)
    assert np.array_equal(g[1], [np.inf] * 5 + [-np.inf])


@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_zeros_and_nan_upstream_as_torch(torch, p):
    """torch multiplies its whole gradient row by the upstream gradient last:
    an inactive entry is 0 * g (-0 for g < 0, NaN for a NaN g), and a row's
    loss is a sum from +0 (a weight of -0 leaves +0)."""
    x = np.array([[0.0, -2.0, 0.5], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    t = np.array([0, 0, 0, 2])
    w = np.array([-0.0, 1.0, 2.0])
    go = np.array([-1.0, -0.0, np.nan, 2.0])
    v, g = CF.multi_margin_loss(x, t, p=p, weight=w, reduction="none", return_grad=True,
                                grad_output=go)
    tx = torch.tensor(x, requires_grad=True)
    tv = torch.nn.functional.multi_margin_loss(tx, torch.tensor(t), p=p, weight=torch.tensor(w),
                                               reduction="none")
    tv.backward(torch.tensor(go))
    for got, want in ((v, tv.detach().numpy()), (g, tx.grad.numpy())):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_multi_margin_p2_gradient_scales_before_doubling():
    """torch's p = 2 term is (2 g) z: finite where 2 z overflows (z = 2e38 in
    float32); the expected numbers are torch 2.13's."""
    x = np.array([[1e38, -1e38, 0.0]], np.float32)
    _, g = CF.multi_margin_loss(x, np.array([1]), p=2, return_grad=True)
    assert_close(g, np.array([[1.3333334e38, -2.0000001e38, 6.6666668e37]], np.float32),
                 np.float32)


@pytest.mark.parametrize("func", LOSS_IDS)
@given(data=st.data(), c=st.floats(-4, 4, allow_nan=False).filter(bool))
def test_grad_output_linearity(func, data, c):
    """A scalar upstream gradient c scales the gradient; 'none' with c
    everywhere gives the 'sum' gradient with c, bit for bit."""
    x, t, kw = data.draw(mm_problems() if func == "multi_margin_loss" else mlm_problems())
    fn = getattr(CF, func)
    none = fn(x, t, reduction="none", **kw)
    _, g1 = fn(x, t, reduction="sum", return_grad=True, **kw)
    _, gc = fn(x, t, reduction="sum", return_grad=True, grad_output=c, **kw)
    _, gn = fn(x, t, reduction="none", return_grad=True, grad_output=np.full(np.shape(none), c),
               **kw)
    assert_identical(gc, gn)
    np.testing.assert_allclose(gc, c * g1, rtol=1e-15, atol=1e-300)  # k = c / C rounds once


@given(problem=mlm_problems())
def test_entries_after_the_first_terminator_never_matter(problem):
    x, t, _ = problem
    T = t.reshape(-1, x.shape[-1] if x.ndim else 1).copy()
    for row in T:
        stop = np.flatnonzero(row < 0)
        if stop.size:
            row[stop[0] + 1:] = np.arange(row.size - stop[0] - 1) % row.size
    for reduction in REDUCTIONS:
        a = CF.multilabel_margin_loss(x, t, reduction=reduction, return_grad=True)
        b = CF.multilabel_margin_loss(x, T.reshape(t.shape), reduction=reduction,
                                      return_grad=True)
        assert_identical(a[0], b[0])
        assert_identical(a[1], b[1])


@given(problem=mlm_problems(), seed=st.integers(0, 2 ** 32 - 1))
def test_target_order_does_not_matter(problem, seed):
    """Permuting a row's targets: the same value (up to the order of the sum)
    and the same gradient, bit for bit (it counts pairs)."""
    x, t, _ = problem
    rng = np.random.default_rng(seed)
    T = t.reshape(-1, x.shape[-1] if x.ndim else 1).copy()
    for row in T:
        stop = np.flatnonzero(row < 0)
        k = stop[0] if stop.size else row.size
        row[:k] = rng.permutation(row[:k])
    a = CF.multilabel_margin_loss(x, t, reduction="none", return_grad=True)
    b = CF.multilabel_margin_loss(x, T.reshape(t.shape), reduction="none", return_grad=True)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-15, atol=1e-300)
    assert_identical(a[1], b[1])


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("C", [1, 2, 5, 10, 15, 16])
def test_short_multilabel_rows_read_wide_or_padded_alike(C, dtype):
    """Rows of at most 16 classes are read 16 wide, the last ones (where that
    would run past the array) through a padded copy: a row gives the same bits
    either way, and the same as torch's formula."""
    rng = rng_for("mlm-short", C, np.dtype(dtype).name)
    rows = 40
    x = rng.normal(0, 1, (rows, C)).astype(dtype)
    x[3, 0] = np.nan  # a NaN logit adds no term
    t = np.full((rows, C), -1, np.int64)
    for r in range(rows):
        k = rng.integers(0, C + 1)
        t[r, :k] = rng.integers(0, C, k)  # repeats too
        t[r, k + 1:] = rng.integers(-1, C, max(C - k - 1, 0))  # past the first -1: ignored
    go = rng.uniform(-2, 2, rows).astype(dtype)
    value, grad = CF.multilabel_margin_loss(x, t, reduction="none", return_grad=True,
                                            grad_output=go)
    for r in range(rows):  # one row alone: the padded copy (for C < 16)
        v, g = CF.multilabel_margin_loss(x[r:r + 1], t[r:r + 1], reduction="none",
                                         return_grad=True, grad_output=go[r:r + 1])
        assert_identical(v, value[r:r + 1])
        assert_identical(g, grad[r:r + 1])
    ref_value, ref_grad = mlm_reference(x.astype(np.float64), t)
    assert_close(value, ref_value.astype(dtype), dtype)
    assert_close(grad, (ref_grad * go[:, None]).astype(dtype), dtype)


@given(problem=mm_problems())
def test_one_target_multilabel_is_multi_margin(problem):
    """A multilabel row with the single target y is MultiMargin(y) with margin 1, p 1."""
    x, t, _ = problem
    C = x.shape[-1] if x.ndim else 1
    rows = rows_of(x).shape[0]
    T = np.full((rows, C), -1)
    T[:, 0] = np.reshape(t, -1)
    T = T.reshape(x.shape) if x.ndim else T.reshape(())
    for reduction in REDUCTIONS:
        a = CF.multi_margin_loss(x, np.reshape(t, -1) if x.ndim == 2 else t,
                                 reduction=reduction, return_grad=True)
        b = CF.multilabel_margin_loss(x, T, reduction=reduction, return_grad=True)
        np.testing.assert_allclose(a[0], b[0], rtol=1e-15, atol=1e-300)
        assert_identical(a[1], b[1])


@pytest.mark.parametrize("func", LOSS_IDS)
@given(data=st.data(), shift=st.integers(-2 ** 10, 2 ** 10).map(lambda k: k / 4))
def test_dyadic_shift_changes_no_bit(func, data, shift):
    """Quarter-grid logits shifted by a quarter-grid constant: every z is the
    same number, so values and gradients are bit-identical."""
    x, t, kw = data.draw(mm_problems() if func == "multi_margin_loss" else mlm_problems())
    x = np.round(x * 4) / 4
    fn = getattr(CF, func)
    a = fn(x, t, reduction="none", return_grad=True, **kw)
    b = fn(x + shift, t, reduction="none", return_grad=True, **kw)
    assert_identical(a[0], b[0])
    assert_identical(a[1], b[1])


def _near_hinge(func, x, t, margin):
    """Per row: a hinge argument z within float32 rounding of 0 (where the float32
    and float64 computations of the same inputs may decide differently)."""
    X = rows_of(x)
    near = np.zeros(len(X), bool)
    T = np.asarray(t).reshape(len(X), -1) if len(X) else None
    for r in range(len(X)):
        for j in T[r, :1] if func == "multi_margin_loss" else T[r]:
            if j < 0:
                break
            z = (margin - X[r, j]) + X[r]
            near[r] |= np.any(np.abs(z) < 1e-6 * (1 + abs(margin) + abs(X[r, j]) + np.abs(X[r])))
    return near


@pytest.mark.parametrize("func", LOSS_IDS)
@given(data=st.data())
def test_float32_agrees_with_float64(func, data):
    """float32 results are float32 and agree with the float64 formulas of the same
    inputs to float32 precision (rows with an argument at the hinge excepted)."""
    x, t, kw = data.draw(mm_problems() if func == "multi_margin_loss" else mlm_problems())
    x32 = x.astype(np.float32)
    kw32 = {k: v.astype(np.float32) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    loss, grad = _reference(func, x32, t, kw32)
    v, g = getattr(CF, func)(x32, t, reduction="none", return_grad=True, **kw32)
    assert np.asarray(v).dtype == np.float32 and g.dtype == np.float32
    margin = kw.get("margin", 1.0)
    keep = ~_near_hinge(func, x32, t, margin)
    w = np.max(kw.get("weight", np.ones(1)), initial=1.0)
    atol = 1e-5 * w * (1 + abs(margin) + 2 * np.max(np.abs(x), initial=0)) ** kw.get("p", 1)
    np.testing.assert_allclose(np.reshape(v, -1)[keep], loss[keep], rtol=1e-6, atol=atol)
    np.testing.assert_allclose(rows_of(g)[keep], rows_of(grad)[keep], rtol=1e-6, atol=atol)


# =================================================================================
# Routes, layouts, threads, instruction sets
# =================================================================================

ROUTE_CASES = [("multi_margin_loss", (300, 7), {"p": 2, "margin": 0.5, "weight": True}),
               ("multi_margin_loss", (20, 301), {"weight": True}),
               ("multi_margin_loss", (9,), {"p": 2}),
               ("multilabel_margin_loss", (300, 7), {}),
               ("multilabel_margin_loss", (20, 301), {})]
ROUTE_IDS = [f"{f}-{s}-{o}" for f, s, o in ROUTE_CASES]


def _route_args(case, rng, dtype):
    func, shape, opts = case
    x, t = make_args(func, rng, shape, dtype)
    kw = dict(opts)
    if kw.get("weight"):
        kw["weight"] = rng.uniform(0.5, 2, shape[-1]).astype(dtype)
    return x, t, kw


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", ROUTE_CASES, ids=ROUTE_IDS)
def test_routes_bit_identical(case, dtype):
    """forward+backward == value_and_grad == functional (return_grad or not),
    with and without grad_output, NaN positions included; the 'sum' gradient
    equals the 'none' gradient with grad_output = ones."""
    func = case[0]
    rng = rng_for("bits", case, np.dtype(dtype).name)
    x, t, kw = _route_args(case, rng, dtype)
    x.reshape(-1)[::97] = np.nan
    x.reshape(-1)[5::89] = np.inf
    out_shape = loss_shape(func, x.shape)
    for reduction in REDUCTIONS:
        for go in (None, random_go(rng, reduction, out_shape, dtype)):
            with np.errstate(all="ignore"):
                routes = closs_routes(BY_FUNC[func], [x, t], reduction, go, kwargs=kw)
            ref_value, ref_grads = routes["value_and_grad"]
            for route, (value, grads) in routes.items():
                assert_identical(value, ref_value, route)
                for g, r in zip(grads or (), ref_grads):
                    assert_identical(g, r, route)
    with np.errstate(all="ignore"):
        _, g_sum = BY_FUNC[func].closs_func(x, t, reduction="sum", return_grad=True, **kw)
        _, g_none = BY_FUNC[func].closs_func(x, t, reduction="none", return_grad=True,
                                             grad_output=np.ones(out_shape, dtype), **kw)
    assert_identical(g_sum, g_none)


@pytest.mark.parametrize("layout", LAYOUT_KINDS)
@pytest.mark.parametrize("case", ROUTE_CASES[:2] + ROUTE_CASES[3:4],
                         ids=ROUTE_IDS[:2] + ROUTE_IDS[3:4])
def test_layouts_and_inputs_unmodified(case, layout):
    """Any layout of input, target, weight and grad_output gives exactly the
    result of C-contiguous copies; nothing passed in is modified; results are
    fresh arrays."""
    func = case[0]
    rng = rng_for("layout", case, layout)
    x, t, kw = _route_args(case, rng, np.float64)
    go = rng.uniform(-2, 2, loss_shape(func, x.shape))
    x_l, t_l, go_l = (relayout(layout, a, rng) for a in (x, t, go))
    kw_l = {k: relayout(layout, v, rng) if isinstance(v, np.ndarray) else v
            for k, v in kw.items()}
    given_arrays = [x_l, t_l, go_l] + [v for v in kw_l.values() if isinstance(v, np.ndarray)]
    saved = [a.copy() for a in given_arrays]
    for reduction in REDUCTIONS:
        g_l, g_c = (go_l, go) if reduction == "none" else (0.75, 0.75)
        got = closs_routes(BY_FUNC[func], [x_l, t_l], reduction, g_l, kwargs=kw_l)
        want = closs_routes(BY_FUNC[func], [x, t], reduction, g_c, kwargs=kw)
        for route in want:
            assert_identical(got[route][0], want[route][0], route)
            for ga, gb in zip(got[route][1] or (), want[route][1] or ()):
                assert ga.flags.c_contiguous
                assert_identical(ga, gb, route)
            for out in [got[route][0]] + list(got[route][1] or ()):
                if isinstance(out, np.ndarray):
                    assert not any(np.shares_memory(out, a) for a in given_arrays)
    for a, s in zip(given_arrays, saved):
        assert a.dtype == s.dtype and a.tobytes() == s.tobytes(), "an argument was modified"


def test_lists_and_scalars():
    """Inputs are anything numpy.asarray accepts."""
    x = [[0.5, -1.0, 2.0], [1.0, 0.0, 0.25]]
    assert_identical(CF.multi_margin_loss(x, [2, 0], weight=[1, 2, 3]),
                     CF.multi_margin_loss(np.array(x), np.array([2, 0]),
                                          weight=np.array([1.0, 2, 3])))
    assert_identical(CF.multilabel_margin_loss(x, [[2, -1, 0], [0, 1, -1]]),
                     CF.multilabel_margin_loss(np.array(x), np.array([[2, -1, 0], [0, 1, -1]])))
    v, g = CF.multi_margin_loss(np.float64(0.5), 0, return_grad=True)
    assert v == 0 and g.shape == () and g == 0


def test_backward_repeatable_and_independent_of_result_mutation():
    x, t = make_args("multilabel_margin_loss", rng_for("rep"), (5, 4))
    crit = closs.MultiLabelMarginLoss(reduction="none")
    v = crit(x, t)
    g1 = crit.backward()
    v[...] = 0
    g1_copy = g1.copy()
    g1[...] = 0
    assert_identical(crit.backward(), g1_copy)
    np.testing.assert_allclose(crit.backward(np.full(5, 2.0)), 2 * g1_copy, rtol=0)


THREAD_CASES = [("multi_margin_loss", (3001, 1000), np.float32, {"weight": True}),
                ("multi_margin_loss", (20011, 50), np.float64, {"p": 2, "margin": 0.25,
                                                                 "weight": True}),
                ("multilabel_margin_loss", (30011, 37), np.float32, {}),
                ("multilabel_margin_loss", (301, 700), np.float64, {})]


@pytest.mark.parametrize("case", THREAD_CASES,
                         ids=[f"{c[0]}-{c[1]}-{np.dtype(c[2]).name}" for c in THREAD_CASES])
def test_one_vs_two_threads(restore_threads, case):
    """Enough work for two threads; every value and gradient bit-identical."""
    func, shape, dtype, opts = case
    rng = rng_for("threads", func, shape)
    x, t, kw = _route_args((func, shape, opts), rng, dtype)
    x.reshape(-1)[::9973] = np.nan
    go = rng.uniform(-2, 2, shape[:1]).astype(dtype)
    outs = []
    for n in (1, 2):
        closs.set_num_threads(n)
        out = []
        for reduction in REDUCTIONS:
            crit = BY_FUNC[func].closs_cls(reduction=reduction, **kw)
            out.append(crit.value_and_grad(x, t))
            out.append((crit(x, t), crit.backward()))
            out.append(BY_FUNC[func].closs_func(x, t, reduction=reduction, return_grad=True,
                                                grad_output=go if reduction == "none" else 0.625,
                                                **kw))
        outs.append(out)
    for (v1, g1), (v2, g2) in zip(*outs):
        assert_identical(v1, v2)
        assert_identical(g1, g2)


ISA_SCRIPT = """
import numpy as np, closs.functional as CF
rng = np.random.default_rng(7)
out = {}
for C in (1, 7, 40, 300):
    x = rng.normal(0, 1, (37, C))
    x.reshape(-1)[::13] = np.nan
    x.reshape(-1)[::29] = np.inf
    y = rng.integers(0, C, 37)
    t = np.where(rng.random((37, C)) < 0.4, rng.integers(0, C, (37, C)), -1)
    w = rng.uniform(0.5, 2, C)
    for d in ("float32", "float64"):
        xd = x.astype(d)
        for p in (1, 2):
            v, g = CF.multi_margin_loss(xd, y, p, 0.5, w.astype(d), reduction="none",
                                        return_grad=True)
            out[f"mm|{C}|{d}|{p}|v"], out[f"mm|{C}|{d}|{p}|g"] = v, g
            out[f"mm|{C}|{d}|{p}|sum"] = CF.multi_margin_loss(xd, y, p, reduction="sum")
        v, g = CF.multilabel_margin_loss(xd, t, reduction="none", return_grad=True)
        out[f"mlm|{C}|{d}|v"], out[f"mlm|{C}|{d}|g"] = v, g
        out[f"mlm|{C}|{d}|sum"] = CF.multilabel_margin_loss(xd, t, reduction="sum")
np.savez(OUT, **out)
"""


@pytest.fixture(scope="module")
def isa_runs(tmp_path_factory):
    return run_every_isa(tmp_path_factory.mktemp("isa"), ISA_SCRIPT)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_every_instruction_set_gives_the_same_bits(isa_runs, isa):
    """No FMA contraction and the same lanes on every path: the same numbers."""
    default = isa_runs["default"]
    assert isa_runs[isa].keys() == default.keys()
    for key, ref in default.items():
        assert_identical(isa_runs[isa][key], ref, f"{isa} {key}")


# =================================================================================
# Bad input (API.md "Bad input"; spec §14, §18)
# =================================================================================

X34 = np.zeros((3, 4))
Y3 = np.array([0, 1, 3])
T34 = np.array([[0, -1, 0, 0], [1, 2, -1, 3], [-1, 0, 0, 0]])
BAD = [
    ("mm-target-too-large", lambda: CF.multi_margin_loss(X34, np.array([0, 4, 1])),
     IndexError, r"target: expected class indices in \[0, 4\), got 4"),
    ("mm-target-negative", lambda: closs.MultiMarginLoss()(X34, np.array([0, -1, 1])),
     IndexError, r"target: .*got -1"),
    ("mm-target-unbatched", lambda: CF.multi_margin_loss(np.zeros(4), np.array(7)),
     IndexError, r"target.*got 7"),
    ("mm-target-0d-input", lambda: CF.multi_margin_loss(np.array(1.0), np.array(1)),
     IndexError, r"target.*\[0, 1\).*got 1"),
    ("mm-target-uint64-huge",
     lambda: CF.multi_margin_loss(X34, np.array([0, 1, 2 ** 64 - 1], np.uint64)),
     IndexError, r"target"),
    ("mm-target-weighted", lambda: CF.multi_margin_loss(X34, np.array([0, 9, 1]),
                                                        weight=np.ones(4)),
     IndexError, r"target.*got 9"),
    ("mm-3d-input", lambda: CF.multi_margin_loss(np.zeros((2, 3, 4)), np.zeros(2, int)),
     ValueError, r"input: expected shape \(C,\) or \(N, C\).*got \(2, 3, 4\)"),
    ("mm-no-classes", lambda: CF.multi_margin_loss(np.zeros((2, 0)), np.zeros(2, int)),
     ValueError, r"input: .*C > 0.*got \(2, 0\)"),
    ("mm-no-classes-1d", lambda: CF.multi_margin_loss(np.zeros(0), np.zeros((), int)),
     ValueError, r"input: .*got \(0,\)"),
    ("mm-batch-mismatch", lambda: CF.multi_margin_loss(X34, np.array([0, 1])),
     ValueError, r"target: expected batch size 3.*\(2,\)"),
    ("mm-target-2d", lambda: CF.multi_margin_loss(X34, np.zeros((3, 1), int)),
     ValueError, r"target: expected shape \(3,\).*\(3, 1\)"),
    ("mm-target-0d-batched", lambda: CF.multi_margin_loss(X34, np.array(1)),
     ValueError, r"target: expected batch size 3"),
    ("mm-1d-input-target-2", lambda: CF.multi_margin_loss(np.zeros(4), np.array([0, 1])),
     ValueError, r"target: expected shape \(\) or \(1,\).*\(2,\)"),
    ("mm-float-target", lambda: CF.multi_margin_loss(X34, np.array([0.0, 1, 2])),
     TypeError, r"target: expected an integer array.*float64"),
    ("mm-bool-target", lambda: CF.multi_margin_loss(X34, np.array([True, False, True])),
     TypeError, r"target.*bool"),
    ("mm-int-input", lambda: CF.multi_margin_loss(np.zeros((3, 4), int), Y3),
     TypeError, r"input: expected a floating-point array.*int64"),
    ("mm-p3", lambda: CF.multi_margin_loss(X34, Y3, p=3), ValueError,
     r"p: expected 1 or 2 \(only p == 1 and p == 2 supported\), got 3"),
    ("mm-p1.5", lambda: closs.MultiMarginLoss(p=1.5), ValueError, r"p: .*got 1.5"),
    ("mm-p-str", lambda: CF.multi_margin_loss(X34, Y3, p="1"), TypeError,
     r"p: expected a real number"),
    ("mm-margin-str", lambda: CF.multi_margin_loss(X34, Y3, margin="a"), TypeError,
     r"margin: expected a real number, got 'a'"),
    ("mm-class-margin", lambda: closs.MultiMarginLoss(margin=None), TypeError,
     r"margin: expected a real number"),
    ("mm-weight-2d", lambda: CF.multi_margin_loss(X34, Y3, weight=np.ones((1, 4))),
     ValueError, r"weight: expected a 1-D array.*one-dimensional.*\(1, 4\)"),
    ("mm-weight-0d", lambda: CF.multi_margin_loss(X34, Y3, weight=np.array(2.0)),
     ValueError, r"weight: expected a 1-D array.*got shape \(\)"),
    ("mm-class-weight-2d", lambda: closs.MultiMarginLoss(weight=np.ones((1, 4))),
     ValueError, r"weight: expected a 1-D array.*\(1, 4\)"),
    ("mm-weight-length", lambda: CF.multi_margin_loss(X34, Y3, weight=np.ones(2)),
     ValueError, r"weight: expected shape \(4,\).*got \(2,\)"),
    ("mm-class-weight-length", lambda: closs.MultiMarginLoss(weight=np.ones(5))(X34, Y3),
     ValueError, r"weight: expected shape \(4,\).*got \(5,\)"),
    ("mm-weight-strings", lambda: CF.multi_margin_loss(X34, Y3, weight=np.array(list("abcd"))),
     TypeError, r"weight: expected an array of real numbers"),
    ("mm-reduction", lambda: CF.multi_margin_loss(X34, Y3, reduction="foo"), ValueError,
     r"reduction: expected one of 'none', 'mean', 'sum', got 'foo'"),
    ("mm-batchmean", lambda: closs.MultiMarginLoss(reduction="batchmean"), ValueError,
     r"reduction: .*'batchmean'"),
    ("mm-grad-output-shape", lambda: CF.multi_margin_loss(
        X34, Y3, reduction="none", return_grad=True, grad_output=np.ones(4)), ValueError,
     r"grad_output: expected the loss's shape \(3,\)"),
    ("mm-grad-output-array", lambda: CF.multi_margin_loss(
        X34, Y3, return_grad=True, grad_output=np.ones(3)), ValueError,
     r"grad_output: expected a scalar for reduction='mean'"),
    ("mlm-target-too-large", lambda: CF.multilabel_margin_loss(X34, np.where(T34 == 3, 4, T34)),
     IndexError, r"target: expected class indices in \[-1, 4\).*got 4"),
    ("mlm-target-below-minus-one",
     lambda: closs.MultiLabelMarginLoss()(X34, np.where(T34 == 3, -2, T34)),
     IndexError, r"target: .*got -2"),
    ("mlm-out-of-range-after-terminator",
     lambda: CF.multilabel_margin_loss(X34, np.array([[0, -1, 7, 0], [1, 2, -1, 3],
                                                      [-1, 0, 0, 0]])),
     IndexError, r"target: .*-1 ends a row's targets.*got 7"),
    ("mlm-target-uint64-huge",
     lambda: CF.multilabel_margin_loss(X34, np.full((3, 4), 2 ** 64 - 1, np.uint64)),
     IndexError, r"target"),
    ("mlm-target-shape", lambda: CF.multilabel_margin_loss(X34, T34[:, :3]), ValueError,
     r"target: expected the shape of input \(3, 4\).*got \(3, 3\)"),
    ("mlm-target-1d-for-2d", lambda: CF.multilabel_margin_loss(X34[:1], T34[0]), ValueError,
     r"target: expected the shape of input \(1, 4\).*got \(4,\)"),
    ("mlm-target-2d-for-1d", lambda: CF.multilabel_margin_loss(X34[0], T34[:1]), ValueError,
     r"target: expected the shape of input \(4,\).*got \(1, 4\)"),
    ("mlm-float-target", lambda: CF.multilabel_margin_loss(X34, T34.astype(float)), TypeError,
     r"target: expected an integer array.*float64"),
    ("mlm-int-input", lambda: CF.multilabel_margin_loss(np.zeros((3, 4), np.int32), T34),
     TypeError, r"input: expected a floating-point array.*int32"),
    ("mlm-3d-input", lambda: CF.multilabel_margin_loss(np.zeros((2, 3, 4)),
                                                       np.zeros((2, 3, 4), int)),
     ValueError, r"input: .*got \(2, 3, 4\)"),
    ("mlm-no-classes", lambda: closs.MultiLabelMarginLoss()(np.zeros((2, 0)),
                                                            np.zeros((2, 0), int)),
     ValueError, r"input: .*got \(2, 0\)"),
    ("mlm-reduction", lambda: closs.MultiLabelMarginLoss(reduction="Mean"), ValueError,
     r"reduction: .*'Mean'"),
    ("mlm-grad-output-shape", lambda: CF.multilabel_margin_loss(
        X34, T34, reduction="none", return_grad=True, grad_output=np.ones((3, 1))), ValueError,
     r"grad_output: expected the loss's shape \(3,\)"),
]


@pytest.mark.parametrize("make, exc, pattern", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_backward_before_forward(case):
    with pytest.raises(RuntimeError, match=rf"{case.cls}.backward\(\) called before forward"):
        case.closs_cls().backward()


def test_failed_forward_keeps_previous_state():
    x, t = make_args("multi_margin_loss", rng_for("state"), (4, 3))
    crit = closs.MultiMarginLoss()
    v, g = crit.value_and_grad(x, t)
    with pytest.raises(IndexError):
        crit(x, np.array([0, 1, 5, 1]))
    with pytest.raises(IndexError):
        crit.value_and_grad(x, np.array([0, 1, 5, 1]))
    assert_identical(crit.backward(), g)
    # the losses whose sweep checks input ranges alike
    p = rng_for("state").uniform(0, 1, (4, 3))
    for crit, good, bad in [(closs.BCELoss(), (p, p), (p, p + 1)),
                            (closs.GaussianNLLLoss(), (p, p, p), (p, p, p - 1))]:
        v, g = crit.value_and_grad(*good)
        for call in (crit, crit.value_and_grad):
            with pytest.raises(ValueError):
                call(*bad)
        assert_identical(crit.backward(), g)


# =================================================================================
# Names, signatures, repr
# =================================================================================


def _params(fn):
    ps = list(inspect.signature(fn).parameters.values())
    return ps[1:] if ps and ps[0].name == "self" else ps


def test_public_names():
    for case in LOSSES:
        assert case.cls in closs.__all__ and isinstance(getattr(closs, case.cls), type)
        assert case.func in CF.__all__ and callable(getattr(CF, case.func))


@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_signatures_match_torch(torch, case):
    for mine, theirs in [(case.closs_cls.__init__, getattr(torch.nn, case.cls).__init__),
                         (case.closs_func, getattr(torch.nn.functional, case.func))]:
        mine, theirs = _params(mine), _params(theirs)
        assert [(p.name, p.default, p.kind) for p in mine[:len(theirs)]] == [
            (p.name, p.default, p.kind) for p in theirs]
    keyword = [(p.name, p.default, p.kind) for p in _params(case.closs_func)][-3:]
    assert keyword == [("return_grad", False, inspect.Parameter.KEYWORD_ONLY),
                       ("grad_output", None, inspect.Parameter.KEYWORD_ONLY),
                       ("grad_out", None, inspect.Parameter.KEYWORD_ONLY)]


def test_repr():
    assert repr(closs.MultiMarginLoss()) == "MultiMarginLoss(p=1, margin=1.0)"
    assert repr(closs.MultiMarginLoss(2.0, 0.5, reduction="sum")) == (
        "MultiMarginLoss(p=2, margin=0.5, reduction='sum')")
    assert repr(closs.MultiLabelMarginLoss()) == "MultiLabelMarginLoss()"
    assert repr(closs.MultiLabelMarginLoss(reduction="none")) == (
        "MultiLabelMarginLoss(reduction='none')")


@pytest.mark.parametrize("obj", [CF.multi_margin_loss, CF.multilabel_margin_loss,
                                 closs.MultiMarginLoss, closs.MultiLabelMarginLoss],
                         ids=lambda o: o.__name__)
def test_docstring_examples(obj):
    import doctest

    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = doctest.DocTestFinder(recurse=False).find(obj, obj.__name__, globs={})
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("threads", [1, 2])
def test_first_bad_target_found_past_the_first_chunks(threads):
    """The targets' check counts chunks of 4096 on threads, then searches the
    first flagged chunk: the error names the first bad target, wherever it is,
    and with grad_out nothing reaches the buffer."""
    rows, classes = 8000, 10  # 80000 targets: two threads' worth
    x = np.zeros((rows, classes))
    t = np.full((rows, classes), -1, np.int64)
    t[:, 0] = 1
    t.reshape(-1)[25_007] = 11  # after its row's first -1: still checked
    t.reshape(-1)[70_000] = -5  # a later one, on the other thread
    labels = np.ones(rows * 10, np.int64)
    labels[40_001], labels[79_000] = 10, 12
    xm = np.zeros((rows * 10, classes))
    old = closs.get_num_threads()
    closs.set_num_threads(threads)
    try:
        for call in (lambda: CF.multilabel_margin_loss(x, t),
                     lambda: CF.multilabel_margin_loss(x, t, reduction="none"),
                     lambda: closs.MultiLabelMarginLoss().value_and_grad(x, t)):
            with pytest.raises(IndexError, match=r"^target: expected class indices in \[-1, "
                                                 r"10\) \(-1 ends a row's targets\), got 11 "):
                call()
        for call in (lambda: CF.multi_margin_loss(xm, labels),
                     lambda: CF.multi_margin_loss(xm, labels, p=2, return_grad=True)):
            with pytest.raises(IndexError, match=r"^target: expected class indices in \[0, "
                                                 r"10\), got 10 "):
                call()
        out = np.full_like(x, 7.0)
        with pytest.raises(IndexError, match=r"got 11 "):
            CF.multilabel_margin_loss(x, t, return_grad=True, grad_out=out)
        assert np.all(out == 7.0)  # checked before the sweep wrote anything
    finally:
        closs.set_num_threads(old)
