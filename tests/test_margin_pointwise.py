"""Pointwise margin / ranking losses and the sigmoid focal loss: MarginRankingLoss,
HingeEmbeddingLoss, SoftMarginLoss (spec §12, §13, §15) and FocalLoss /
sigmoid_focal_loss (torchvision's formula, spec §23).

* the worked example (spec §25 #15) and the spec's anchors: fixed numbers, no torch;
* golden files (tests/golden/margin_pointwise/, made by make_golden.py there),
  checked without torch;
* parity with torch 2.13 (focal: torchvision's formula written in torch, see
  make_golden.torch_reference) through every closs route: every option,
  reduction, dtype, shape (0-d to 3-D, broadcasting), targets other than +-1,
  soft focal targets, upstream gradients, legacy size_average / reduce, empty
  inputs, mixed dtypes, integer targets;
* kinks, NaN / inf as torch, and the two deliberate deviations:
  SoftMargin stays finite where torch's log1p(exp(z)) overflows, and the focal
  loss keeps the tiny loss and finite gradient of a well-classified element
  where torchvision's 1 - p_t rounds to 0;
* 4th-order finite differences (float64) for every gradient;
* hypothesis properties against NumPy float64 formulas;
* memory layouts, read-only inputs, inputs never modified, bit-identical
  routes, 1 vs 2 threads, every instruction-set path;
* bad input: exception type per API.md and a message naming the argument;
  names, signatures and repr.

Tolerances are conftest.assert_close's (rtol 1e-12 float64 / 1e-5 float32, an
absolute part scaled by the largest expected magnitude).  The float32 focal loss
is compared with torch's float64 evaluation of the same float32 inputs: torch's
float32 ``1 - p_t`` cancels (relative error ~1e-7 / (1 - p_t)), closs's does not.
"""
import contextlib
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
    as_tuple,
    assert_close,
    assert_identical,
    closs_routes,
    rng_for,
    run_every_isa,
)

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden",
                          "margin_pointwise")
_spec = importlib.util.spec_from_file_location("_margin_pointwise_golden",
                                               os.path.join(GOLDEN_DIR, "make_golden.py"))
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)  # torch is imported only when torch_reference runs
torch_reference = golden.torch_reference

DTYPE_IDS = ["f32", "f64"]


def _case(cls, func, nargs=2, legacy=True, **opts):
    return LossCase(cls, func, tuple(opts.items()), nargs, legacy)


MR = _case("MarginRankingLoss", "margin_ranking_loss", 3)
HE = _case("HingeEmbeddingLoss", "hinge_embedding_loss")
SM = _case("SoftMarginLoss", "soft_margin_loss")
FL = _case("FocalLoss", "sigmoid_focal_loss", legacy=False)
LOSSES = [MR, HE, SM, FL]
LOSS_IDS = [c.func for c in LOSSES]

OPTION_CASES = (
    [_case("MarginRankingLoss", "margin_ranking_loss", 3, margin=m) for m in (0.0, 0.5, -0.3)]
    + [_case("HingeEmbeddingLoss", "hinge_embedding_loss", margin=m) for m in (1.0, 0.5, -0.5)]
    + [SM]
    + [_case("FocalLoss", "sigmoid_focal_loss", legacy=False, alpha=a, gamma=g)
       for a, g in [(0.25, 2.0), (0.25, 0.0), (0.5, 0.5), (-1.0, 2.0), (0.0, 1.0), (1.0, 3.0),
                    (0.75, 1.7), (0.25, -0.5)]]
)

# argument shapes per loss: equal shapes, 0-d, and torch's broadcasting rules
SHAPES = {
    "margin_ranking_loss": [((),) * 3, ((7,),) * 3, ((4, 5),) * 3, ((2, 3, 4),) * 3,
                            ((3, 1), (1, 4), (3, 4)), ((2, 1, 3), (2, 4, 1), (1, 1, 1)),
                            ((5,), (1,), (5,)), ((1,), (1,), (6,))],
    "hinge_embedding_loss": [((), ()), ((7,),) * 2, ((4, 5),) * 2, ((2, 3, 4),) * 2,
                             ((3, 1), (4,)), ((4,), (3, 1)), ((2, 3), (3,)), ((), (5,)),
                             ((5,), ())],
    "soft_margin_loss": [((), ()), ((7,),) * 2, ((4, 5),) * 2, ((2, 3, 4),) * 2,
                         ((2, 3), (3,)), ((4, 3), (4, 1)), ((2, 3), ()), ((2, 3), (1, 1))],
    "sigmoid_focal_loss": [((), ()), ((7,),) * 2, ((4, 5),) * 2, ((2, 3, 4),) * 2],
}


# ---------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------

ODD_TARGETS = (0.0, 0.5, 2.0, -0.5)


def _signs(rng, shape, odd=False):
    y = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    if odd:
        y = np.where(rng.random(shape) < 0.4, rng.choice(ODD_TARGETS, shape), y)
    return y


def kink_distance(func, args, kw):
    """How far the arguments are from the loss's kinks (inf: the loss has none)."""
    if func == "margin_ranking_loss":
        x1, x2, y = (np.asarray(a, np.float64) for a in args)
        v = -y * (x1 - x2) + kw.get("margin", 0.0)
        return float(np.min(np.abs(v), initial=np.inf))
    if func == "hinge_embedding_loss":
        x, y = (np.asarray(a, np.float64) for a in args)
        h = np.broadcast_to(kw.get("margin", 1.0) - x, np.broadcast_shapes(x.shape, y.shape))
        h = h[np.broadcast_to(y != 1, h.shape)]
        return float(np.min(np.abs(h), initial=np.inf))
    return math.inf


def make_args(case, rng, shapes, dtype=np.float64, *, smooth=False, odd=False):
    """Arguments of `case` (one shape per argument) as arrays of `dtype`.

    smooth: every element at least 0.05 from a kink (for finite differences);
    odd: targets other than +-1 (0, 0.5, 2, -0.5); for the focal loss, soft
    targets in [0, 1] instead of 0 / 1.
    """
    func, kw = case.func, case.kwargs
    for _ in range(1000):
        if func == "margin_ranking_loss":
            args = [rng.uniform(-2, 2, shapes[0]), rng.uniform(-2, 2, shapes[1]),
                    _signs(rng, shapes[2], odd)]
        elif func == "hinge_embedding_loss":
            args = [rng.uniform(-2, 3, shapes[0]), _signs(rng, shapes[1], odd)]
        elif func == "soft_margin_loss":
            args = [rng.uniform(-4, 4, shapes[0]), _signs(rng, shapes[1], odd)]
        else:
            x = rng.uniform(-5, 5, shapes[0])
            y = rng.uniform(0, 1, shapes[1]) if odd else (rng.random(shapes[1]) < 0.4) * 1.0
            args = [x, y]
        args = [np.asarray(a, dtype=dtype) for a in args]
        if not smooth or kink_distance(func, args, kw) >= 0.05:
            return args
    raise AssertionError("could not draw arguments away from the kinks")


def random_go(rng, reduction, shape, dtype):
    if reduction == "none":
        return rng.uniform(-2, 2, shape).astype(dtype)
    return float(rng.uniform(0.25, 2.0))


def loss_shape(case, args):
    return np.broadcast_shapes(*(np.shape(a) for a in args))


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def magnitude(func, args, kw, reduction):
    """The magnitude a reduced value is computed from (sum or mean of |loss|;
    HingeEmbedding has elements of both signs, so its sum may cancel)."""
    kw = {k: v for k, v in kw.items() if k != "reduction"}
    with quiet():
        none = getattr(CF, func)(*[np.asarray(a, np.float64) for a in args], reduction="none",
                                 **kw)
    mag = np.abs(none[np.isfinite(none)])
    if not mag.size:
        return 0.0
    return float({"sum": mag.sum, "mean": mag.mean}.get(reduction, mag.max)())


# =================================================================================
# Worked example (spec §25 #15) and spec anchors
# =================================================================================


class TestWorkedExamples:
    @pytest.mark.parametrize("dtype, expected", [(np.float32, 0.6666666865),
                                                 (np.float64, 0.6666666666666666)])
    def test_margin_ranking_example(self, dtype, expected):
        x1 = np.array([1, 2, 3], dtype)
        x2 = np.array([2, 3, 4], dtype)
        y = np.array([1, -1, 1], dtype)
        value = closs.MarginRankingLoss(margin=0)(x1, x2, y)
        assert type(value) is np.dtype(dtype).type
        assert_close(value, dtype(expected), dtype)
        assert round(float(value), 4) == 0.6667  # the article's 0.0 is wrong (spec §25)
        none = closs.MarginRankingLoss(reduction="none")(x1, x2, y)
        assert_identical(none, np.array([1, 0, 1], dtype))

    def test_margin_ranking_anchor(self):
        x1, x2 = np.array([1, 2, 3, .5]), np.array([2, 3, 4, .5])
        y = np.array([1, -1, 1, 1])
        assert_identical(CF.margin_ranking_loss(x1, x2, y, reduction="none"),
                         np.array([1.0, 0, 1, 0]))
        assert CF.margin_ranking_loss(x1, x2, y) == 0.5
        assert CF.margin_ranking_loss(x1, x2, y, margin=0.5) == 0.875
        # gradients of the mean: -y/n and +y/n where -y (x1 - x2) + margin >= 0; the
        # last element sits at the hinge (x1 = x2, margin 0), where torch 2.13's
        # clamp_min passes the gradient
        _, (g1, g2) = CF.margin_ranking_loss(x1, x2, y, return_grad=True)
        assert_identical(g1, np.array([-0.25, 0, -0.25, -0.25]))
        assert_identical(g2, np.array([0.25, -0.0, 0.25, 0.25]))

    def test_hinge_embedding_anchor(self):
        x = np.array([.3, -.5, 2, .3, 1.5, .7])
        y = np.array([1, 1, -1, -1, -1, 0])
        assert_close(CF.hinge_embedding_loss(x, y, reduction="none"),
                     np.array([0.3, -0.5, 0, 0.7, 0, 1.0]))
        assert_close(CF.hinge_embedding_loss(x, y), 0.25)
        # y = 0.5 takes both terms: 0.3 + (1 - 0.3)
        assert_close(CF.hinge_embedding_loss(np.array([0.3]), np.array([0.5]), reduction="sum"),
                     1.0)

    def test_soft_margin_anchors(self):
        x, y = np.array([40.0, 0.0]), np.array([1.0, 0.0])
        value, grad = CF.soft_margin_loss(x, y, reduction="none", return_grad=True)
        assert_close(value, np.array([4.248354255291589e-18, math.log(2)]))
        assert grad[1] == 0

    def test_focal_anchor(self):
        x = np.array([-3, -.5, 0, .5, 3, 20])
        y = np.array([0.0, 1, 1, 0, 1, 0])
        expected = [8.196249337274802e-05, 0.09435290021485244, 0.04332169878499658,
                    0.28305870064455735, 2.7320831124249216e-05, 14.999999939711252]
        assert_close(CF.sigmoid_focal_loss(x, y), np.array(expected))  # default 'none'
        assert_close(closs.FocalLoss()(x, y), 2.5701404204466924)  # the class: 'mean'

    def test_defaults(self):
        assert closs.FocalLoss().reduction == "mean"
        assert inspect.signature(CF.sigmoid_focal_loss).parameters["reduction"].default == "none"
        crit = closs.FocalLoss()
        assert (crit.alpha, crit.gamma) == (0.25, 2.0)
        assert closs.MarginRankingLoss().margin == 0.0
        assert closs.HingeEmbeddingLoss().margin == 1.0


# =================================================================================
# Golden files (torch-made, checked without torch)
# =================================================================================


def _golden_cases():
    out = []
    for func in golden.FUNCS:
        path = os.path.join(GOLDEN_DIR, f"{func}.json")
        if os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
            out += [pytest.param(func, c, id=f"{func}-{c['id']}") for c in data["cases"]]
    return out


GOLDEN = _golden_cases()


def test_golden_files_present():
    for func in golden.FUNCS:
        assert os.path.exists(os.path.join(GOLDEN_DIR, f"{func}.json")), func
    assert len(GOLDEN) > 250


@pytest.mark.parametrize("func, case", GOLDEN)
def test_golden(func, case):
    args = [golden.dec(a) for a in case["args"]]
    kw = dict(case["kwargs"])
    go = golden.dec(case["grad_output"])
    value, grads = getattr(CF, func)(*args, return_grad=True, grad_output=go, **kw)
    assert_close(value, golden.dec(case["value"]), np.float64,
                 scale=magnitude(func, args, kw, kw["reduction"]))
    for g, e in zip(as_tuple(grads), case["grads"]):
        assert_close(g, golden.dec(e), np.float64)


# =================================================================================
# Parity with torch through every route
# =================================================================================


def check_parity(case, args, reduction, dtype, go, *, legacy=None):
    """closs through every route against torch (float64 torch for float32 focal)."""
    kw = dict(case.kwargs, reduction=reduction)
    ref_dtype = np.float64 if case.func == "sigmoid_focal_loss" else None
    ref_value, ref_grads = torch_reference(case.func, args, dict(kw, **(legacy or {})), go,
                                           dtype=ref_dtype)
    scale = magnitude(case.func, args, case.kwargs, reduction)
    for route, (value, grads) in closs_routes(case, args, reduction, go).items():
        msg = f"{case.id} {route} {reduction}"
        if reduction == "none":
            assert isinstance(value, np.ndarray), msg
            assert value.shape == loss_shape(case, args), msg
        else:
            assert type(value) is np.dtype(dtype).type, msg
        assert_close(value, np.asarray(ref_value).astype(dtype), dtype, scale=scale,
                     err_msg=msg)
        if grads is None:
            continue
        assert len(grads) == len(ref_grads), msg
        for g, a, r in zip(grads, args, ref_grads):
            assert g.shape == np.shape(a) and g.dtype == np.dtype(dtype), msg
            assert_close(g, r.astype(dtype), dtype, err_msg=msg)


PARITY = [pytest.param(case, shapes, id=f"{case.id}-{shapes}")
          for case in OPTION_CASES for shapes in SHAPES[case.func]]


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case, shapes", PARITY)
def test_parity(torch, case, shapes, reduction, dtype):
    rng = rng_for("parity", case.id, shapes, reduction, np.dtype(dtype).name)
    args = make_args(case, rng, shapes, dtype)
    go = random_go(rng, reduction, loss_shape(case, args), dtype)
    check_parity(case, args, reduction, dtype, go)
    check_parity(case, args, reduction, dtype, None)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", OPTION_CASES, ids=lambda c: c.id)
def test_parity_odd_and_soft_targets(torch, case, reduction, dtype):
    """Targets other than +-1 (used as they are, as torch); soft focal targets."""
    rng = rng_for("odd", case.id, reduction, np.dtype(dtype).name)
    shapes = SHAPES[case.func][2]
    args = make_args(case, rng, shapes, dtype, odd=True)
    if case.func != "sigmoid_focal_loss":
        assert any(np.isin(args[-1], ODD_TARGETS).ravel())
    check_parity(case, args, reduction, dtype, random_go(rng, reduction, (4, 5), dtype))


LEGACY = [(None, False, "none"), (True, False, "none"), (False, None, "sum"),
          (False, True, "sum"), (True, None, "mean"), (None, True, "mean"), (True, True, "mean")]


@pytest.mark.parametrize("size_average, reduce, expected", LEGACY,
                         ids=[f"{a}-{b}" for a, b, _ in LEGACY])
@pytest.mark.parametrize("case", [MR, HE, SM], ids=lambda c: c.func)
def test_legacy_size_average_reduce(torch, case, size_average, reduce, expected):
    rng = rng_for("legacy", case.func, size_average, reduce)
    args = make_args(case, rng, SHAPES[case.func][2])
    legacy = {"size_average": size_average, "reduce": reduce}
    match = f"please use reduction='{expected}' instead"
    with pytest.warns(UserWarning, match=match):
        crit = case.closs_cls(reduction="sum" if expected != "sum" else "mean", **legacy)
    assert crit.reduction == expected
    with pytest.warns(UserWarning, match=match):
        value = case.closs_func(*args, reduction="sum" if expected != "sum" else "mean",
                                **legacy)
    ref = torch_reference(case.func, args, dict(legacy, reduction="mean"))[0]
    scale = magnitude(case.func, args, case.kwargs, expected)
    assert_close(value, ref, np.float64, scale=scale)
    assert_close(crit(*args), ref, np.float64, scale=scale)


@pytest.mark.parametrize("case", [MR, HE, SM], ids=lambda c: c.func)
def test_legacy_positional(case):
    """size_average and reduce sit where torch has them, positionally too."""
    rng = rng_for("legacy-positional", case.func)
    args = make_args(case, rng, SHAPES[case.func][1])
    extra = () if case.func == "soft_margin_loss" else (0.5,)  # margin first
    with pytest.warns(UserWarning):
        crit = case.closs_cls(*extra, False, None)
    assert crit.reduction == "sum"
    with pytest.warns(UserWarning):
        value = case.closs_func(*args, *extra, None, False)
    assert value.shape == loss_shape(case, args)


@pytest.mark.parametrize("case", [MR, HE, SM], ids=lambda c: c.func)
def test_elementwise_mean_alias(case):
    args = make_args(case, rng_for("alias", case.func), SHAPES[case.func][1])
    with pytest.warns(UserWarning, match="elementwise_mean"):
        value = case.closs_func(*args, reduction="elementwise_mean")
    assert value == case.closs_func(*args)


def test_focal_has_no_alias_and_no_legacy():
    x, y = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match="reduction"):
        CF.sigmoid_focal_loss(x, y, reduction="elementwise_mean")
    with pytest.raises(ValueError, match="reduction"):
        closs.FocalLoss(reduction="elementwise_mean")
    with pytest.raises(TypeError):
        closs.FocalLoss(size_average=False)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("shape", [(0,), (2, 0)], ids=str)
def test_empty(torch, case, shape, dtype):
    """'none' -> empty, 'mean' -> nan (zero-size gradients), 'sum' -> 0, as torch."""
    args = [np.zeros(shape, dtype) for _ in range(case.nargs)]
    for reduction in REDUCTIONS:
        check_parity(case, args, reduction, dtype, None)
    assert math.isnan(case.closs_func(*args, reduction="mean"))
    assert case.closs_func(*args, reduction="sum") == 0


def test_margin_ranking_mixed_dtypes(torch):
    """float32 and float64 inputs compute in float64 (torch's promotion); each
    gradient comes back in its input's dtype."""
    rng = rng_for("mixed")
    x1, x2, y = make_args(MR, rng, ((6,),) * 3)
    x1 = x1.astype(np.float32)
    ref_value, (r1, r2) = torch_reference(MR.func, [x1, x2, y], {"margin": 0.1,
                                                                 "reduction": "sum"})
    for v, (g1, g2) in [CF.margin_ranking_loss(x1, x2, y, 0.1, reduction="sum",
                                               return_grad=True),
                        closs.MarginRankingLoss(0.1, reduction="sum").value_and_grad(x1, x2, y)]:
        assert type(v) is np.float64
        assert_close(v, ref_value)
        assert g1.dtype == np.float32 and g2.dtype == np.float64
        assert_close(g1, r1.astype(np.float32))
        assert_close(g2, r2)
    # a float64 target does not promote float32 inputs (API.md: the inputs' dtype)
    v = CF.margin_ranking_loss(x1, x1 + 1, y)
    assert type(v) is np.float32


@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_target_dtypes(case):
    """Integer, bool and float64 targets give the float targets' numbers; the
    result keeps the input's float32 (torch: integer targets promote or, for
    the focal loss, raise)."""
    rng = rng_for("target-dtypes", case.func)
    args = make_args(case, rng, SHAPES[case.func][2], np.float32)
    ref = case.closs_func(*args, reduction="none", return_grad=True)
    kinds = [np.int64, np.int8, np.float64] + ([bool] if case.func == "sigmoid_focal_loss"
                                              else [])
    for kind in kinds:
        t = args[-1].astype(kind)
        out = case.closs_func(*args[:-1], t, reduction="none", return_grad=True)
        assert_identical(out[0], ref[0])
        for g, r in zip(as_tuple(out[1]), as_tuple(ref[1])):
            assert_identical(g, r)


# =================================================================================
# Kinks, NaN / inf, and where closs deliberately differs from torch
# =================================================================================


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_margin_ranking_kink_gradient_passes(torch, dtype):
    """At the hinge (-y (x1 - x2) + margin == 0) torch 2.13's clamp_min passes the
    gradient: -y and +y.  (Spec table 0.6 says 0 there; torch 2.13 on this machine
    gives -y, for margin 0 and 0.5 alike, and torch is the reference.)"""
    x1 = np.array([1.5, 1.0, 0.25, -1.5], dtype)
    x2 = np.array([1.0, 1.5, 0.75, -2.0], dtype)
    y = np.array([1, -1, -1, 1], dtype)  # -y (x1 - x2) + 0.5 == 0 exactly, each element
    value, (g1, g2) = CF.margin_ranking_loss(x1, x2, y, margin=0.5, reduction="sum",
                                             return_grad=True)
    assert value == 0
    assert_identical(g1, -y)
    assert_identical(g2, y)
    check_parity(_case("MarginRankingLoss", "margin_ranking_loss", 3, margin=0.5),
                 [x1, x2, y], "sum", dtype, 1.0)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_hinge_embedding_kink_gradient_passes(torch, dtype):
    x = np.array([1.0, 1.0, 1.0, 0.5], dtype)
    y = np.array([-1, 0, 1, -1], dtype)  # the hinge (x == margin) for y != 1
    value, grad = CF.hinge_embedding_loss(x, y, margin=1.0, reduction="sum", return_grad=True)
    assert_identical(grad, np.array([-1, 0, 1, -1], dtype))
    check_parity(HE, [x, y], "sum", dtype, 1.0)


NONFINITE = {
    "margin_ranking_loss": [[np.nan, 1.0, np.inf, -np.inf, 1.0, 2.0, np.inf],
                            [0.0, np.nan, 1.0, 1.0, np.inf, 1.0, np.inf],
                            [1.0, 1.0, 1.0, 1.0, -1.0, np.nan, 1.0]],
    "hinge_embedding_loss": [[np.nan, np.nan, np.inf, np.inf, -np.inf, -np.inf, 2.0, 0.5],
                             [1.0, -1.0, 1.0, -1.0, 1.0, -1.0, np.nan, 0.0]],
    "soft_margin_loss": [[np.nan, 1.0, 2.0], [1.0, np.nan, 0.0]],
    "sigmoid_focal_loss": [[np.inf, np.inf, -np.inf, -np.inf, np.nan, 1.0, np.inf],
                           [0.0, 1.0, 0.0, 1.0, 1.0, np.nan, 0.5]],
}


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", [c for c in OPTION_CASES if c.func != "margin_ranking_loss"
                                  or c.kwargs["margin"] == 0.0], ids=lambda c: c.id)
def test_nonfinite_as_torch(torch, case, dtype):
    """NaN / inf inputs and targets: NaN and inf where torch has them, value and gradient."""
    args = [np.array(a, dtype) for a in NONFINITE[case.func]]
    for reduction in ("none", "sum"):
        check_parity(case, args, reduction, dtype, None)


@pytest.mark.parametrize("dtype, big", [(np.float32, 100.0), (np.float64, 800.0)],
                         ids=DTYPE_IDS)
def test_soft_margin_stays_finite_where_torch_overflows(torch, dtype, big):
    """Deliberate deviation (spec §15): torch's log1p(exp(-y x)) is inf with a NaN
    gradient past -y x > 88.7 (f32) / 709.8 (f64); closs's stable softplus gives
    -y x and -y, the exact values to the last bit."""
    x = np.array([big, -big, np.inf, 3 * big], dtype)
    y = np.array([-1, 1, -1, -0.5], dtype)
    value, grad = CF.soft_margin_loss(x, y, reduction="none", return_grad=True)
    assert_identical(value, (-y * x).astype(dtype))
    assert_identical(grad, (-y).astype(dtype))
    ref_value, (ref_grad,) = torch_reference(SM.func, [x, y], {"reduction": "none"})
    assert np.isinf(ref_value).all() and np.isnan(ref_grad).all()  # what closs avoids


def _sigmoid(z):
    """sigmoid(z) in float64 to a few ulp for any z (exp of a non-positive argument)."""
    z = np.asarray(z, np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z < 0, e / (1 + e), 1 / (1 + e))


def _focal_reference(x, y, alpha=0.25, gamma=2.0):
    """The focal loss and its gradient in float64 NumPy, from log-space pieces:
    log_sigmoid by logaddexp (no cancellation), 1 - p_t = p (1 - y) + (1 - p) y."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    p, pm = _sigmoid(x), _sigmoid(-x)
    ce = y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x)
    q = p * (1 - y) + pm * y
    with np.errstate(divide="ignore", invalid="ignore"):
        w = q ** gamma
        rate = q ** (gamma - 1)
    at = 1.0 if alpha < 0 else alpha * y + (1 - alpha) * (1 - y)
    dq = 0.0 if gamma == 0 else gamma * ce * rate * p * pm * (2 * y - 1)
    p_minus_y = p * (1 - y) - pm * y  # p - y without losing a tiny 1 - p
    return at * ce * w, at * (p_minus_y * w - dq)


@pytest.mark.parametrize("gamma", [2.0, 0.5, 0.0, 3.0])
def test_focal_well_classified_stays_accurate(torch, gamma):
    """Deliberate deviation: torchvision's 1 - p_t rounds to 0 once sigmoid(x)
    rounds to 1 (x = 40, y = 1 in float64), giving a loss of exactly 0 and, for
    gamma < 1, a NaN gradient; closs keeps the tiny true values."""
    x = np.array([40.0, -40.0, 30.0, 700.0])
    y = np.array([1.0, 0.0, 1.0, 1.0])
    value, grad = CF.sigmoid_focal_loss(x, y, gamma=gamma, return_grad=True)
    ref_value, ref_grad = _focal_reference(x, y, gamma=gamma)
    assert np.isfinite(value).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(value, ref_value, rtol=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-13)
    assert value[0] > 0
    torch_value, (torch_grad,) = torch_reference(FL.func, [x, y], {"gamma": gamma})
    if gamma > 0:
        assert torch_value[0] == 0
    if 0 < gamma < 1:
        assert np.isnan(torch_grad[0])


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 2.5])
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_focal_gradient_finite_where_one_minus_p_underflows(dtype, gamma):
    """|x| past ~104 (float32) / ~745 (float64): 1 - p_t underflows to 0 and
    q^(gamma - 1) is inf for gamma < 1; the gradient's limit there is 0 (not
    inf * 0 = NaN, torchvision's), while x = +-inf keeps torch's NaN."""
    big = 110.0 if dtype == np.float32 else 750.0
    x = np.array([big, -big, big, -big], dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0], dtype)
    value, grad = CF.sigmoid_focal_loss(x, y, gamma=gamma, return_grad=True)
    assert np.isfinite(value).all() and np.isfinite(grad).all()
    assert value[0] == value[1] == grad[0] == grad[1] == 0  # well classified
    np.testing.assert_allclose(grad[2:], [0.75, -0.25], rtol=1e-6)  # 1 - alpha, -alpha
    _, grad_inf = CF.sigmoid_focal_loss(np.array([np.inf], dtype), np.array([1.0], dtype),
                                        gamma=gamma, return_grad=True)
    assert np.isnan(grad_inf).all()


@pytest.mark.parametrize("gamma", [0.01, 0.5, 2.0, 3.7])
def test_focal_float32_gradient_where_terms_overflow(gamma):
    """float32 logits where a factor of the gradient alone leaves float32's
    range: q^(gamma - 1) at q = 1e-42 (|x| = 95), gamma ce at |x| = 2e38.  The
    gradient is float64's (of the same inputs) to float32 accuracy."""
    x = np.array([95.0, -95.0, 60.0, 2e38, -2e38, 2e38, 3e38], np.float32)
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.5, 0.25], np.float32)
    for alpha in (0.25, 0.0, -1.0):
        v, g = CF.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, return_grad=True)
        v64, g64 = CF.sigmoid_focal_loss(x.astype(np.float64), y.astype(np.float64),
                                         alpha=alpha, gamma=gamma, return_grad=True)
        assert np.isfinite(g).all()
        assert_close(g, g64.astype(np.float32), np.float32, scale=1e-30)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_focal_targets_outside_unit_interval(torch, dtype):
    """q = 1 - p_t < 0 (targets outside [0, 1]): q**gamma as torch's pow, real for
    integer gamma, NaN otherwise."""
    x = np.array([1.0, -0.5, 2.0, 0.3], dtype)
    y = np.array([2.0, -1.0, 1.5, 3.0], dtype)
    for gamma in (1.0, 2.0, 3.0, 4.0, 0.0, 0.5, -1.0):
        case = _case("FocalLoss", "sigmoid_focal_loss", legacy=False, alpha=0.25, gamma=gamma)
        check_parity(case, [x, y], "none", dtype, None)


# =================================================================================
# Finite differences (float64, 4th order)
# =================================================================================

H = 1e-4


def fd_gradient(phi, x, h=H):
    """4th-order central differences of the scalar phi at every entry of x."""
    grad = np.zeros_like(x)
    flat = x.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        vals = []
        for k in (2, 1, -1, -2):
            flat[i] = orig + k * h
            vals.append(phi())
        flat[i] = orig
        grad.reshape(-1)[i] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
    return grad


FD = [pytest.param(case, shapes, reduction, id=f"{case.id}-{shapes}-{reduction}")
      for case in OPTION_CASES for shapes in SHAPES[case.func][1:]
      for reduction in REDUCTIONS]


@pytest.mark.parametrize("case, shapes, reduction", FD)
def test_finite_differences(case, shapes, reduction):
    rng = rng_for("fd", case.id, shapes, reduction)
    args = make_args(case, rng, shapes, np.float64, smooth=True,
                     odd=case.func == "sigmoid_focal_loss")
    go = random_go(rng, reduction, loss_shape(case, args), np.float64)
    value, grads = case.closs_func(*args, reduction=reduction, return_grad=True, grad_output=go,
                                   **case.kwargs)
    weights = np.asarray(go, np.float64)

    def phi():
        v = case.closs_func(*args, reduction=reduction, **case.kwargs)
        return float(np.sum(np.asarray(v, np.float64) * weights))

    diff = (0, 1) if case.func == "margin_ranking_loss" else (0,)
    for i, g in zip(diff, as_tuple(grads)):
        expected = fd_gradient(phi, args[i])
        np.testing.assert_allclose(g, expected, rtol=1e-7, atol=1e-8 * max(1.0, abs(value).max()),
                                   err_msg=f"argument {i}")


# =================================================================================
# Properties (hypothesis) against NumPy float64 formulas
# =================================================================================

finite = st.floats(-1e3, 1e3, allow_nan=False)


@st.composite
def operands(draw, n_args=2, targets=st.sampled_from([-1.0, 1.0, 0.0, 0.5, 2.0, -0.5])):
    n = draw(st.integers(0, 40))
    xs = [np.array(draw(st.lists(finite, min_size=n, max_size=n))) for _ in range(n_args - 1)]
    y = np.array(draw(st.lists(targets, min_size=n, max_size=n)), dtype=np.float64)
    return xs + [y]


@given(operands(3), st.floats(-2, 2), st.sampled_from(REDUCTIONS))
def test_margin_ranking_matches_numpy(problem, margin, reduction):
    x1, x2, y = problem
    v = -y * (x1 - x2) + margin
    active = (v >= 0).astype(float)  # torch 2.13's clamp_min passes the gradient at 0
    value, (g1, g2) = CF.margin_ranking_loss(x1, x2, y, margin, reduction="none",
                                             return_grad=True)
    assert_identical(value, np.where(v < 0, 0.0, v))  # clamp_min keeps -0.0, as torch
    assert_identical(g1, -y * active)
    assert_identical(g2, -g1)  # the kernel writes both in one sweep: exact negation
    total, (s1, s2) = CF.margin_ranking_loss(x1, x2, y, margin, reduction=reduction,
                                             return_grad=True)
    assert_identical(s2, -s1)
    if reduction != "none":
        expected = np.sum(np.where(v < 0, 0.0, v))
        if reduction == "mean":
            expected = expected / len(y) if len(y) else np.nan
        assert_close(total, expected, scale=np.sum(np.abs(v)))


@given(operands(2, st.floats(-3, 3)), st.floats(-2, 2))
def test_hinge_embedding_matches_numpy(problem, margin):
    x, y = problem
    y = np.where(np.arange(len(y)) % 3 == 0, np.sign(y) + (y == 0), y)  # many exact +-1
    h = margin - x
    expected = np.where(y != 1, np.maximum(h, 0), 0) + np.where(y != -1, x, 0)
    grad = (y != -1).astype(float) - ((y != 1) & (h >= 0))
    value, g = CF.hinge_embedding_loss(x, y, margin, reduction="none", return_grad=True)
    assert_close(value, expected)
    assert_identical(g, grad)


@given(operands(2, st.floats(-3, 3)), st.sampled_from([np.float32, np.float64]))
def test_soft_margin_matches_stable_numpy(problem, dtype):
    """log(1 + exp(-y x)) by logaddexp, accurate everywhere (|y x| up to 3e3)."""
    x, y = (a.astype(dtype) for a in problem)
    z = (-y * x).astype(np.float64)  # z rounded to dtype, as the loss sees it
    value, g = CF.soft_margin_loss(x, y, reduction="none", return_grad=True)
    assert np.isfinite(value).all() and np.isfinite(g).all()
    ref = np.logaddexp(0, z)
    assert_close(value, ref.astype(dtype), dtype, atol=0, rtol=8 * np.finfo(dtype).eps)
    assert_close(g, (-y * _sigmoid(z)).astype(dtype), dtype, rtol=8 * np.finfo(dtype).eps,
                 atol=np.finfo(dtype).tiny)


@st.composite
def focal_problems(draw):
    n = draw(st.integers(1, 30))
    x = np.array(draw(st.lists(st.floats(-60, 60), min_size=n, max_size=n)))
    hard = draw(st.booleans())
    tgt = st.sampled_from([0.0, 1.0]) if hard else st.floats(0, 1)
    y = np.array(draw(st.lists(tgt, min_size=n, max_size=n)))
    alpha = draw(st.one_of(st.just(-1.0), st.floats(0, 1)))
    gamma = draw(st.one_of(st.sampled_from([0.0, 1.0, 2.0, 3.0]), st.floats(0, 5)))
    return x, y, alpha, gamma


@given(focal_problems())
def test_focal_matches_log_space_numpy(problem):
    x, y, alpha, gamma = problem
    value, grad = CF.sigmoid_focal_loss(x, y, alpha, gamma, return_grad=True)
    ref_value, ref_grad = _focal_reference(x, y, alpha, gamma)
    # q**gamma by exp(gamma log q): relative error ~ |gamma log q| ulp
    np.testing.assert_allclose(value, ref_value, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12,
                               atol=1e-13 * np.abs(ref_grad).max() + 1e-300)


@given(focal_problems())
def test_focal_float32_agrees_with_float64(problem):
    x, y, alpha, gamma = problem
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    value, grad = CF.sigmoid_focal_loss(x32, y32, alpha, gamma, return_grad=True)
    ref_value, ref_grad = _focal_reference(x32, y32, alpha, gamma)
    assert_close(value, ref_value.astype(np.float32), np.float32, rtol=2e-5)
    assert_close(grad, ref_grad.astype(np.float32), np.float32, rtol=2e-5)


@given(focal_problems())
def test_focal_gamma_zero_is_weighted_bce(problem):
    """gamma = 0: alpha-weighted BCEWithLogits, up to the cancellation of torch's
    BCE form (1 - y) x - log_sigmoid(x) (absolute error ~ ulp(x)), which the
    focal loss avoids."""
    x, y, alpha, _ = problem
    value, grad = CF.sigmoid_focal_loss(x, y, alpha, 0.0, return_grad=True)
    weight = None if alpha < 0 else alpha * y + (1 - alpha) * (1 - y)
    bce, bce_grad = CF.binary_cross_entropy_with_logits(x, y, weight, reduction="none",
                                                        return_grad=True)
    assert_close(value, bce, atol=4 * np.finfo(float).eps * max(1.0, np.abs(x).max()))
    assert_close(grad, bce_grad, atol=1e-15)


@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
@given(c=st.floats(0.1, 4.0))
def test_reductions_and_linearity(case, c):
    """sum == sum of 'none', mean == sum / n; gradients scale with grad_output."""
    rng = rng_for("linearity", case.func)
    args = make_args(case, rng, SHAPES[case.func][2])
    none = case.closs_func(*args, reduction="none")
    total, g_sum = case.closs_func(*args, reduction="sum", return_grad=True)
    mean, g_mean = case.closs_func(*args, reduction="mean", return_grad=True)
    assert_close(total, np.sum(none), scale=np.abs(none).sum())
    assert_close(mean, total / none.size, scale=np.abs(none).mean())
    _, g_c = case.closs_func(*args, reduction="sum", return_grad=True, grad_output=c)
    _, g_none = case.closs_func(*args, reduction="none", return_grad=True,
                                grad_output=np.full(none.shape, c))
    for a, b, m, n_ in zip(as_tuple(g_sum), as_tuple(g_c), as_tuple(g_mean), as_tuple(g_none)):
        assert_close(b, c * a)
        assert_close(m, a / none.size)
        assert_close(n_, b)


# =================================================================================
# Routes, layouts, read-only inputs, threads, instruction sets
# =================================================================================


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case, shapes", [
    pytest.param(c, s, id=f"{c.id}-{s}") for c in OPTION_CASES for s in SHAPES[c.func][1::3]])
def test_routes_bit_identical(case, shapes, reduction, dtype):
    """forward + backward == value_and_grad == functional(return_grad=True), to the bit."""
    rng = rng_for("routes", case.id, shapes, reduction)
    args = make_args(case, rng, shapes, dtype)
    for go in (None, random_go(rng, reduction, loss_shape(case, args), dtype)):
        routes = closs_routes(case, args, reduction, go)
        ref_value, ref_grads = routes["value_and_grad"]
        for name, (value, grads) in routes.items():
            assert_identical(value, ref_value, name)
            if grads is not None:
                for g, r in zip(grads, ref_grads):
                    assert_identical(g, r, name)


def relayout(kind, a):
    """The same values as `a` in another memory layout."""
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "strided":
        big = np.zeros(a.shape + (2,), a.dtype)
        big[..., 0] = a
        return big[..., 0]
    if kind == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if kind == "byteswapped":
        return a.astype(a.dtype.newbyteorder(">"))
    if kind == "list":
        return a.tolist()
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["fortran", "strided", "readonly", "byteswapped", "list"])
@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_layouts_and_inputs_unmodified(case, kind):
    rng = rng_for("layout", case.func, kind)
    args = make_args(case, rng, SHAPES[case.func][3])
    ref = case.closs_func(*args, reduction="none", return_grad=True)
    for i in range(len(args)):
        moved = list(args)
        moved[i] = relayout(kind, args[i])
        before = [np.array(a, copy=True) for a in moved]
        out = case.closs_func(*moved, reduction="none", return_grad=True)
        assert_identical(out[0], ref[0], f"argument {i}")
        for g, r in zip(as_tuple(out[1]), as_tuple(ref[1])):
            assert_identical(g, r, f"argument {i}")
        for a, b in zip(moved, before):
            assert_identical(np.asarray(a), b)
        # the results are new arrays, not views of an input
        for res in (out[0],) + as_tuple(out[1]):
            assert not any(np.shares_memory(res, a) for a in moved if isinstance(a, np.ndarray))


def test_backward_repeatable_and_independent_of_result_mutation():
    rng = rng_for("repeat")
    args = make_args(MR, rng, SHAPES[MR.func][2])
    crit = closs.MarginRankingLoss(reduction="none")
    value = crit(*args)
    g1 = crit.backward()
    value[...] = 7
    g1[0][...] = 7
    g2 = crit.backward()
    assert_identical(g2[0], CF.margin_ranking_loss(*args, reduction="none",
                                                   return_grad=True)[1][0])
    assert_identical(crit.backward()[1], g2[1])


N_THREADED = 300_001  # several grains: two threads do split the work


@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_one_vs_two_threads(restore_threads, case):
    rng = rng_for("threads", case.func)
    args = make_args(case, rng, [(N_THREADED,)] * case.nargs, np.float32)
    outs = []
    for n in (1, 2):
        closs.set_num_threads(n)
        outs.append([case.closs_func(*args, reduction=r, return_grad=True, **case.kwargs)
                     for r in REDUCTIONS])
    for (v1, g1), (v2, g2) in zip(*outs):
        assert_identical(v1, v2)
        for a, b in zip(as_tuple(g1), as_tuple(g2)):
            assert_identical(a, b)


ISA_SCRIPT = """
import numpy as np, closs.functional as CF
rng = np.random.default_rng(5)
n = 1000
x1, x2 = rng.uniform(-3, 3, n), rng.uniform(-3, 3, n)
y = np.where(rng.random(n) < 0.5, -1.0, 1.0)
soft = rng.uniform(0, 1, n)
out = {}
calls = {
    "mr": lambda d: CF.margin_ranking_loss(x1.astype(d), x2.astype(d), y, 0.3, reduction="none",
                                           return_grad=True),
    "he": lambda d: CF.hinge_embedding_loss(x1.astype(d), y, 0.5, reduction="none",
                                            return_grad=True),
    "sm": lambda d: CF.soft_margin_loss(10 * x1.astype(d), y, reduction="none", return_grad=True),
    "fl": lambda d: CF.sigmoid_focal_loss(10 * x1.astype(d), soft, return_grad=True),
    "fl15": lambda d: CF.sigmoid_focal_loss(10 * x1.astype(d), soft, 0.4, 1.5, return_grad=True),
}
for key, call in calls.items():
    for d in ("float32", "float64"):
        value, grad = call(d)
        out[f"{key}|{d}|value"] = value
        for i, g in enumerate(grad if isinstance(grad, tuple) else (grad,)):
            out[f"{key}|{d}|grad{i}"] = g
np.savez(OUT, **out)
"""


@pytest.fixture(scope="module")
def isa_runs(tmp_path_factory):
    return run_every_isa(tmp_path_factory.mktemp("isa"), ISA_SCRIPT)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_every_instruction_set_gives_the_same_bits(isa_runs, isa):
    """No FMA contraction and one vmath: every path computes the same numbers."""
    default = isa_runs["default"]
    assert isa_runs[isa].keys() == default.keys()
    for key, ref in default.items():
        assert_identical(isa_runs[isa][key], ref, f"{isa} {key}")


# =================================================================================
# Bad input (API.md "Bad input")
# =================================================================================

V3 = np.zeros(3)
BAD = [
    ("mr-ndim", lambda: CF.margin_ranking_loss(V3, np.zeros((1, 3)), V3), ValueError,
     r"input1, input2, target: .*same dimension.*\(3,\), \(1, 3\), \(3,\)"),
    ("mr-broadcast", lambda: CF.margin_ranking_loss(V3, np.zeros(2), np.zeros(2)), ValueError,
     r"input2: expected a shape that broadcasts with input1 \(3,\), got \(2,\)"),
    ("mr-broadcast-target", lambda: CF.margin_ranking_loss(V3, V3, np.zeros(2)), ValueError,
     r"target: expected a shape that broadcasts .*got \(2,\)"),
    ("mr-int-input1", lambda: CF.margin_ranking_loss([1, 2, 3], V3, V3), TypeError,
     r"input1: expected a floating-point array.*int64"),
    ("mr-int-input2", lambda: CF.margin_ranking_loss(V3, np.arange(3), V3), TypeError,
     r"input2: expected a floating-point array"),
    ("mr-str-target", lambda: CF.margin_ranking_loss(V3, V3, np.array(["a", "b", "c"])),
     TypeError, r"target: expected an array of real numbers"),
    ("mr-margin", lambda: CF.margin_ranking_loss(V3, V3, V3, margin="1"), TypeError,
     r"margin: expected a real number, got '1'"),
    ("mr-class-margin", lambda: closs.MarginRankingLoss(margin=None), TypeError,
     r"margin: expected a real number"),
    ("mr-reduction", lambda: CF.margin_ranking_loss(V3, V3, V3, reduction="foo"), ValueError,
     r"reduction: expected one of .*got 'foo'"),
    ("mr-class-reduction", lambda: closs.MarginRankingLoss(reduction="batchmean"), ValueError,
     r"reduction: .*'batchmean'"),
    ("mr-grad-output-shape", lambda: CF.margin_ranking_loss(
        V3, V3, V3, reduction="none", return_grad=True, grad_output=np.ones(2)), ValueError,
     r"grad_output: expected the loss's shape \(3,\)"),
    ("mr-grad-output-array", lambda: CF.margin_ranking_loss(
        V3, V3, V3, return_grad=True, grad_output=np.ones(3)), ValueError,
     r"grad_output: expected a scalar for reduction='mean'"),
    ("he-broadcast", lambda: CF.hinge_embedding_loss(V3, np.zeros(2)), ValueError,
     r"target: expected a shape that broadcasts with input \(3,\), got \(2,\)"),
    ("he-int-input", lambda: CF.hinge_embedding_loss(np.arange(3), V3), TypeError,
     r"input: expected a floating-point array"),
    ("he-margin", lambda: closs.HingeEmbeddingLoss(margin="x"), TypeError,
     r"margin: expected a real number"),
    ("he-complex-target", lambda: CF.hinge_embedding_loss(V3, V3 + 1j), TypeError,
     r"target: expected an array of real numbers"),
    ("sm-larger-target", lambda: CF.soft_margin_loss(V3, np.zeros((2, 3))), ValueError,
     r"target: expected a shape that broadcasts to input's shape \(3,\), got \(2, 3\)"),
    ("sm-broadcast", lambda: CF.soft_margin_loss(V3, np.zeros(2)), ValueError,
     r"target: expected a shape that broadcasts with input \(3,\), got \(2,\)"),
    ("sm-int-input", lambda: closs.SoftMarginLoss()(np.arange(3), V3), TypeError,
     r"input: expected a floating-point array"),
    ("fl-shape", lambda: CF.sigmoid_focal_loss(V3, np.zeros((1, 3))), ValueError,
     r"targets: expected the shape of inputs \(3,\), got \(1, 3\)"),
    ("fl-class-shape", lambda: closs.FocalLoss()(V3, np.zeros(2)), ValueError,
     r"target: expected the shape of input \(3,\), got \(2,\)"),
    ("fl-int-input", lambda: CF.sigmoid_focal_loss(np.arange(3), V3), TypeError,
     r"inputs: expected a floating-point array"),
    ("fl-alpha-high", lambda: CF.sigmoid_focal_loss(V3, V3, alpha=1.5), ValueError,
     r"alpha: expected a value in \[0, 1\], or -1.*got 1.5"),
    ("fl-alpha-negative", lambda: closs.FocalLoss(alpha=-0.5), ValueError,
     r"alpha: expected .*got -0.5"),
    ("fl-alpha-nan", lambda: closs.FocalLoss(alpha=float("nan")), ValueError,
     r"alpha: expected .*got nan"),
    ("fl-alpha-type", lambda: closs.FocalLoss(alpha="0.25"), TypeError,
     r"alpha: expected a real number"),
    ("fl-gamma-inf", lambda: CF.sigmoid_focal_loss(V3, V3, gamma=float("inf")), ValueError,
     r"gamma: expected a finite number, got inf"),
    ("fl-gamma-nan", lambda: closs.FocalLoss(gamma=float("nan")), ValueError,
     r"gamma: expected a finite number, got nan"),
    ("fl-gamma-type", lambda: closs.FocalLoss(gamma=None), TypeError,
     r"gamma: expected a real number"),
    ("fl-reduction", lambda: CF.sigmoid_focal_loss(V3, V3, reduction="foo"), ValueError,
     r"reduction: expected one of 'none', 'mean', 'sum', got 'foo'"),
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
    args = make_args(MR, rng_for("state"), SHAPES[MR.func][1])
    crit = closs.MarginRankingLoss()
    crit(*args)
    g = crit.backward()
    with pytest.raises(ValueError):
        crit(args[0], args[1], np.zeros(2))
    for a, b in zip(crit.backward(), g):
        assert_identical(a, b)


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


@pytest.mark.parametrize("case", [MR, HE, SM], ids=lambda c: c.func)
def test_signatures_match_torch(torch, case):
    for mine, theirs in [(case.closs_cls.__init__, getattr(torch.nn, case.cls).__init__),
                         (case.closs_func, getattr(torch.nn.functional, case.func))]:
        mine, theirs = _params(mine), _params(theirs)
        assert [(p.name, p.default, p.kind) for p in mine[:len(theirs)]] == [
            (p.name, p.default, p.kind) for p in theirs]
    extra = {p.name: p for p in _params(case.closs_func)}
    assert extra["return_grad"].default is False and extra["return_grad"].kind is \
        inspect.Parameter.KEYWORD_ONLY
    assert extra["grad_output"].default is None


def test_focal_signatures():
    """torchvision's functional signature; the class per API.md."""
    assert [(p.name, p.default) for p in _params(CF.sigmoid_focal_loss)] == [
        ("inputs", inspect.Parameter.empty), ("targets", inspect.Parameter.empty),
        ("alpha", 0.25), ("gamma", 2), ("reduction", "none"), ("return_grad", False),
        ("grad_output", None), ("grad_out", None)]
    assert [(p.name, p.default) for p in _params(closs.FocalLoss.__init__)] == [
        ("alpha", 0.25), ("gamma", 2.0), ("reduction", "mean")]


def test_repr():
    assert repr(closs.MarginRankingLoss()) == "MarginRankingLoss(margin=0.0)"
    assert repr(closs.MarginRankingLoss(0.5, reduction="sum")) == (
        "MarginRankingLoss(margin=0.5, reduction='sum')")
    assert repr(closs.HingeEmbeddingLoss()) == "HingeEmbeddingLoss(margin=1.0)"
    assert repr(closs.SoftMarginLoss(reduction="none")) == "SoftMarginLoss(reduction='none')"
    assert repr(closs.FocalLoss(alpha=-1, gamma=0)) == "FocalLoss(alpha=-1.0, gamma=0.0)"


def test_forward_argument_names():
    """forward takes torch's positional arguments."""
    assert [p.name for p in _params(closs.MarginRankingLoss._operands)] == [
        "input1", "input2", "target"]
    for cls in (closs.HingeEmbeddingLoss, closs.SoftMarginLoss, closs.FocalLoss):
        assert [p.name for p in _params(cls._operands)] == ["input", "target"]


def test_lists_and_scalars():
    """Python lists and 0-d arrays of floats are arrays too; a Python float target broadcasts."""
    assert_close(CF.margin_ranking_loss([1.0, 2.0], [2.0, 1.0], [1.0, 1.0]), 0.5)
    assert_close(CF.hinge_embedding_loss(np.float64(0.5), -1.0), 0.5)
    assert_close(CF.soft_margin_loss(np.zeros((2, 2)), 1.0), math.log(2))
    value, grad = CF.sigmoid_focal_loss(np.float64(0.0), np.float64(1.0), return_grad=True)
    assert isinstance(value, np.ndarray) and value.shape == () and grad.shape == ()

