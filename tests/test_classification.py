"""Classification / probabilistic losses: CrossEntropy, NLL, BCE, BCEWithLogits,
KLDiv, MultiLabelSoftMargin (spec §0, §3-§7, §16).

* worked examples (spec §25) and spec anchors: fixed numbers, no torch needed;
* golden files (tests/golden/classification/, made by tests/golden/make_golden.py),
  checked without torch;
* parity with torch 2.13 through every closs route (class forward + backward,
  value_and_grad, functional with/without return_grad, explicit grad_output):
  every option (weight, ignore_index, label_smoothing with index and
  probability targets, pos_weight, log_target, 'batchmean', legacy
  size_average/reduce), reductions, float32/float64, 1-D to 4-D inputs, all
  three CE kernel layouts (C < 32 regrouped rows, C >= 32 contiguous rows,
  K-dimensional strided), special cases (all targets ignored, zero weights,
  N = 0, C = 1, NaN / inf);
* stability: shifted logits, huge logits, -inf logits, the BCE / BCEWithLogits
  extremes;
* any integer target dtype; memory layouts, read-only arrays, inputs never
  modified; bit-for-bit agreement of the routes and of 1 vs 2 threads;
* 4th-order finite differences (float64); hypothesis properties against an
  independent NumPy implementation of the spec's formulas;
* bad input: exception type per API.md, message naming the argument.

Tolerances (conftest.assert_close): rtol 1e-12 (float64) / 1e-5 (float32),
with an absolute tolerance of rtol * (largest |expected|).  That absolute part
matters for gradients: entries such as ``p - 1`` (softmax minus one-hot) or
``sigmoid(x) - y`` are differences of O(1) terms, and torch's float32 kernels
(and closs's) round those terms at the ~1e-7 relative level, so an entry that
cancels to ~1e-6 has a *relative* error of order 1 in both implementations;
it can only be judged against the magnitude of the gradient it belongs to.
Reduced values of losses whose elements are all >= 0 need nothing more; KLDiv
(elements of both signs) gets the magnitude of its summed elements.
"""
import contextlib
import glob
import inspect
import itertools
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
    run_python,
)

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden",
                          "classification")
DTYPE_IDS = ["f32", "f64"]

CE = LossCase("CrossEntropyLoss", "cross_entropy")
NLL = LossCase("NLLLoss", "nll_loss")
BCE = LossCase("BCELoss", "binary_cross_entropy")
BCEL = LossCase("BCEWithLogitsLoss", "binary_cross_entropy_with_logits")
KL = LossCase("KLDivLoss", "kl_div")
MLSM = LossCase("MultiLabelSoftMarginLoss", "multilabel_soft_margin_loss")
LOSSES = [CE, NLL, BCE, BCEL, KL, MLSM]
LOSS_IDS = [c.func for c in LOSSES]
BY_FUNC = {c.func: c for c in LOSSES}


@contextlib.contextmanager
def quiet():
    """Silence KLDiv's 'mean' warning and the legacy warning where not under test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _reduced_type(value, dtype):
    assert type(value) is np.dtype(dtype).type, f"{type(value)} is not {np.dtype(dtype)}"


# ---------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------


def n_classes(shape):
    return shape[0] if len(shape) == 1 else shape[1]


def index_shape(shape):
    """The target / 'none' shape of a (C,), (N, C) or (N, C, d1, ...) input."""
    return () if len(shape) == 1 else (shape[0],) + tuple(shape[2:])


def loss_shape(func, shape, target_shape=None):
    if func in ("cross_entropy", "nll_loss"):
        return index_shape(shape)
    if func == "multilabel_soft_margin_loss":
        return tuple(shape[:-1])
    if func == "kl_div" and target_shape is not None:
        return np.broadcast_shapes(shape, target_shape)
    return tuple(shape)


def make_inputs(func, rng, shape, dtype, *, prob=False, ignore=None, ignore_frac=0.3,
                log_target=False):
    """(input, target) for `func`, of `dtype` (index targets: int64).

    ignore: an ignore_index whose value is written into ~ignore_frac of the
    index targets (when it is not a class index itself)."""
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    if func in ("cross_entropy", "nll_loss"):
        x = rng.normal(0.0, 2.0, shape)
        cdim = 0 if len(shape) == 1 else 1
        if func == "nll_loss":  # log-probabilities (any values are valid; these are usual)
            x = x - np.log(np.sum(np.exp(x), axis=cdim, keepdims=True))
        if prob:
            return x.astype(dtype), rng.uniform(0.0, 1.0, shape).astype(dtype)
        t = rng.integers(0, n_classes(shape), index_shape(shape))
        if ignore is not None and ignore < 0:
            t = np.where(rng.random(t.shape) < ignore_frac, ignore, t)
        return x.astype(dtype), np.asarray(t, np.int64)
    if func == "binary_cross_entropy":
        return (rng.uniform(0.02, 0.98, shape).astype(dtype),
                rng.uniform(0.0, 1.0, shape).astype(dtype))
    if func == "binary_cross_entropy_with_logits":
        return (rng.normal(0.0, 3.0, shape).astype(dtype),
                rng.uniform(0.0, 1.0, shape).astype(dtype))
    if func == "kl_div":
        x = np.log(rng.uniform(0.02, 1.0, shape))
        y = rng.uniform(0.0, 1.0, shape)
        y[rng.random(shape) < 0.1] = 0.0  # xlogy(0, 0) = 0
        if log_target:
            y = np.log(rng.uniform(0.02, 1.0, shape))
        return x.astype(dtype), y.astype(dtype)
    if func == "multilabel_soft_margin_loss":
        return (rng.normal(0.0, 3.0, shape).astype(dtype),
                (rng.random(shape) < 0.5).astype(dtype))
    raise AssertionError(func)


def random_go(rng, reduction, shape, dtype):
    """A non-trivial upstream gradient (an array of the loss's shape for 'none')."""
    if reduction == "none":
        return np.asarray(rng.uniform(-2, 2, shape)).astype(dtype)
    return float(rng.uniform(0.25, 2.0))


# ---------------------------------------------------------------------------------
# torch reference
# ---------------------------------------------------------------------------------


def torch_ref(func, args, reduction="mean", grad_output=None, **kwargs):
    """torch's value and gradient w.r.t. input, as numpy.

    Index targets go to torch as int64 (torch takes only int64 / uint8);
    array options (weight, pos_weight) as tensors of the input's dtype."""
    import torch

    x = torch.from_numpy(np.array(args[0], copy=True)).requires_grad_(True)
    y = np.asarray(args[1])
    if y.dtype.kind in "iu":
        y = y.astype(np.int64)
    y = torch.from_numpy(np.array(y, copy=True))
    kw = {k: torch.from_numpy(np.array(v, dtype=np.asarray(args[0]).dtype))
          if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    kw["reduction"] = reduction
    with quiet():
        out = getattr(torch.nn.functional, func)(x, y, **kw)
    go = torch.ones_like(out) if grad_output is None else torch.as_tensor(
        np.asarray(grad_output), dtype=out.dtype).reshape(out.shape)
    out.backward(go)
    g = x.grad if x.grad is not None else torch.zeros_like(x)
    return out.detach().numpy(), g.numpy()


def kl_scale(args, reduction, kwargs):
    """The magnitude a reduced KLDiv value is computed from (its elements have
    both signs and may cancel)."""
    x = np.asarray(args[0], np.float64)
    with quiet():
        none = CF.kl_div(x, np.asarray(args[1], np.float64), reduction="none", **kwargs)
    mag = float(np.sum(np.abs(none[np.isfinite(none)])))
    if reduction == "mean":
        return mag / max(none.size, 1)
    if reduction == "batchmean":
        return mag / (x.shape[0] if x.ndim and x.shape[0] else 1)
    return mag


def check_routes(case, args, reduction, go, ref_value, ref_grad, dtype, kwargs, *,
                 scale=None):
    """Every closs route against torch's value and input gradient."""
    with quiet():
        routes = closs_routes(case, args, reduction, go, kwargs=kwargs)
    for route, (value, grads) in routes.items():
        msg = f"[{route}]"
        if reduction == "none":
            assert isinstance(value, np.ndarray), msg
        else:
            _reduced_type(value, dtype)
        assert_close(value, ref_value, dtype, scale=scale, err_msg=msg + " value")
        if grads is not None:
            assert len(grads) == 1, msg
            assert_close(grads[0], ref_grad, dtype, err_msg=msg + " grad")
    return routes


# =================================================================================
# Worked examples (spec §25) and spec anchors: fixed numbers
# =================================================================================


def _rel(dtype):
    return 1e-15 if dtype is np.float64 else 2e-7


class TestWorkedExamples:
    """Spec §25 #3-#7, #9, #10, #14 (float64 values in brackets there)."""

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_ce_01_02_03(self, dtype):
        x = np.array([[0.1, 0.2, 0.3]], dtype)
        t = np.array([1])
        for reduction in ("mean", "sum"):  # N = 1: both the same
            v = closs.CrossEntropyLoss(reduction=reduction)(x, t)
            _reduced_type(v, dtype)
            assert v == pytest.approx(1.1019, abs=5e-5)
            exact = 1.101942848229244 if dtype is np.float64 else 1.1019428968
            assert v == pytest.approx(exact, rel=_rel(dtype) * 4)
            assert CF.cross_entropy(x, t, reduction=reduction) == v

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_ce_05_036_023(self, dtype):
        v = closs.CrossEntropyLoss()(np.array([[0.5, 0.36, 0.23]], dtype), np.array([0]))
        assert v == pytest.approx(0.9680, abs=5e-5)
        exact = 0.968024266641238 if dtype is np.float64 else 0.9680243134
        assert v == pytest.approx(exact, rel=_rel(dtype) * 4)

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_ce_2x2(self, dtype):
        x = np.array([[2, 1], [1, 2]], dtype)
        t = np.array([1, 0])
        v, g = closs.CrossEntropyLoss().value_and_grad(x, t)
        assert v == pytest.approx(1.3133, abs=5e-5)
        exact = 1.3132616875182228 if dtype is np.float64 else 1.3132616282
        assert v == pytest.approx(exact, rel=_rel(dtype) * 4)
        s = 1 / (1 + math.exp(-1))  # softmax of the larger logit
        expected = np.array([[s, (1 - s) - 1], [(1 - s) - 1, s]]) / 2  # p - onehot, / N
        np.testing.assert_allclose(g, expected, rtol=1e-6 if dtype is np.float32 else 1e-14)

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_bce(self, dtype):
        x = np.array([0.4, 0.1], dtype)
        y = np.array([0.2, 0.8], dtype)
        v = closs.BCELoss()(x, y)
        assert v == pytest.approx(1.2275, abs=5e-5)
        exact = 1.2275294114572126 if dtype is np.float64 else 1.2275294065
        assert v == pytest.approx(exact, rel=_rel(dtype) * 4)
        assert CF.binary_cross_entropy(x, y) == v

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_bce_with_logits(self, dtype):
        x = np.array([0.4, 0.1], dtype)
        y = np.array([0.2, 0.8], dtype)
        v = closs.BCEWithLogitsLoss()(x, y)
        assert v == pytest.approx(0.7487, abs=5e-5)
        exact = 0.7487059562367617 if dtype is np.float64 else 0.7487059832
        assert v == pytest.approx(exact, rel=_rel(dtype) * 4)
        assert CF.binary_cross_entropy_with_logits(x, y) == v

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_nll(self, dtype):
        x = np.array([[3, 1], [2, 4]], dtype)
        t = np.array([0, 1])
        v, g = closs.NLLLoss().value_and_grad(x, t)
        assert v == -3.5
        np.testing.assert_array_equal(g, [[-0.5, 0], [0, -0.5]])
        assert CF.nll_loss(x, t) == -3.5

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_kl_sum(self, dtype):
        """KLDiv('sum')(log target, pred) = KL(pred || target) = 0.4322."""
        x = np.log(np.array([0.5, 0.2, 0.3])).astype(dtype)
        y = np.array([0.1, 0.2, 0.7], dtype)
        v = closs.KLDivLoss(reduction="sum")(x, y)
        assert v == pytest.approx(0.4322, abs=5e-5)
        exact = 0.4321647110276325 if dtype is np.float64 else 0.4321646690
        assert v == pytest.approx(exact, rel=1e-14 if dtype is np.float64 else 1e-6)

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_kl_mean(self, dtype):
        """The seed article's 0.5974 is wrong: torch gives 0.43776 (sum 1.3133)."""
        x = np.array([2.0, 4.0, 6.0])
        x = (x - np.log(np.sum(np.exp(x)))).astype(dtype)
        y = np.array([0.3, 0.5, 0.2], dtype)
        with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size"):
            v = closs.KLDivLoss(reduction="mean")(x, y)
        assert v == pytest.approx(0.43776, abs=5e-6)
        exact = 0.43775953814510854 if dtype is np.float64 else 0.4377595484
        assert v == pytest.approx(exact, rel=1e-14 if dtype is np.float64 else 1e-6)
        assert CF.kl_div(x, y, reduction="sum") == pytest.approx(1.3132786751, rel=1e-6)
        # 1-D input: batchmean divides by its length too
        assert CF.kl_div(x, y, reduction="batchmean") == v


class TestSpecAnchors:
    """The anchors of spec §3.4, §4-§7 and §16 (torch 2.13 values)."""

    def test_nll_anchor(self):
        x = np.array([[1, 2, .5], [.1, -1, 3], [2, 2, 2], [0, 1, -1]])
        x = x - np.log(np.sum(np.exp(x), axis=1, keepdims=True))
        t = np.array([1, 2, 0, 2])
        w = np.array([0.2, 1, 3])
        assert CF.nll_loss(x, t) == pytest.approx(1.0103403140452316, rel=1e-14)
        assert CF.nll_loss(x, t, weight=w) == pytest.approx(1.127671082230025, rel=1e-14)
        assert CF.nll_loss(x, t, weight=w, ignore_index=2) == pytest.approx(
            0.5700760348679724, rel=1e-14)
        assert CF.nll_loss(x, t, weight=w, ignore_index=2, reduction="sum") == pytest.approx(
            0.6840912418415669, rel=1e-14)
        # the gradient: -w_t / D at (i, t_i) only (D = 1.2 here)
        _, g = CF.nll_loss(x, t, weight=w, ignore_index=2, return_grad=True)
        expected = np.zeros((4, 3))
        expected[0, 1] = -1.0 / 1.2
        expected[2, 0] = -0.2 / 1.2
        np.testing.assert_allclose(g, expected, rtol=1e-15)

    def test_nll_input_used_as_given(self):
        """Not required to be log-probabilities: positive values, negative losses."""
        v = CF.nll_loss(np.array([[5.0, -1.0]]), np.array([0]), reduction="none")
        np.testing.assert_array_equal(v, [-5.0])

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_bce_extremes(self, dtype):
        x = np.array([0, 1, 0, 1, 1e-20], dtype)
        y = np.array([1, 0, 0, 1, 1], dtype)
        v = CF.binary_cross_entropy(x, y, reduction="none")
        np.testing.assert_array_equal(v[:4], [100, 100, 0, 0])  # logs clamped at -100
        rel = 1e-14 if dtype is np.float64 else 1e-6
        assert v[4] == pytest.approx(46.051701859880914, rel=rel)  # clamp not reached
        # the spec's anchor for log(1 - x), where 1 - x is exact (torch: log1p(-x))
        v = CF.binary_cross_entropy(np.array([0.999999], dtype), np.array([0.0], dtype),
                                    reduction="sum")
        assert v == pytest.approx(13.815510557935518 if dtype is np.float64
                                  else 13.802318572998047, rel=rel)

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_bce_logs_near_the_clamp(self, dtype):
        """Soft targets (both logs) at x = 0, subnormals and around exp(-100): each
        log is log(x) clamped at -100 (float32 subnormals reach above it)."""
        info = np.finfo(dtype)
        x = np.array([0.0, info.smallest_subnormal, info.tiny / 3, info.tiny, 1e-44, 4e-44,
                      1e-43, 1e-40, np.exp(-100.0), np.exp(-99.5), 1e-30, 0.5], dtype)
        x = np.concatenate([x, 1 - x])  # 1 - x: 1 and the largest floats below it
        y = np.linspace(0.05, 0.95, x.size).astype(dtype)
        v = CF.binary_cross_entropy(x, y, reduction="none")
        xd, yd = x.astype(np.float64), y.astype(np.float64)
        with np.errstate(divide="ignore"):  # torch: log1p(-x) for log(1 - x)
            expected = -(yd * np.maximum(np.log(xd), -100)
                         + (1 - yd) * np.maximum(np.log1p(-xd), -100))
        assert_close(v, expected, dtype)

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_bce_gradient_eps(self, dtype):
        """grad = (x - y) / max(x (1 - x), float32(1e-12)), float32's 1e-12 even in float64."""
        x = np.array([0.0, 0.0, 1.0, 1.0], dtype)
        y = np.array([1.0, 0.0, 0.0, 1.0], dtype)
        _, g = CF.binary_cross_entropy(x, y, reduction="sum", return_grad=True)
        if dtype is np.float64:
            assert g[0] == -1000000003995.8029
            assert g[0] == -1.0 / float(np.float32(1e-12))
        else:
            assert g[0] == np.float32(-999999995904.0)
        assert g[1] == 0 and g[3] == 0
        assert g[2] == -g[0]
        # the gradient is not the derivative of the clamped loss: x=0, y=1 has loss 100
        # whatever x does near 0, yet the gradient is huge

    def test_bce_target_gradient_not_returned(self):
        """Only d/d input is returned (API.md)."""
        _, g = CF.binary_cross_entropy(np.array([0.3]), np.array([0.6]), return_grad=True)
        assert isinstance(g, np.ndarray) and g.shape == (1,)

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_bce_with_logits_anchor(self, dtype):
        x = np.array([-200, -30, -1, 0, 2, 40, 800], dtype)
        y = np.array([1, 0, .3, 1, 0, 1, 0], dtype)
        v = CF.binary_cross_entropy_with_logits(x, y, reduction="none")
        vp = CF.binary_cross_entropy_with_logits(x, y, reduction="none",
                                                 pos_weight=np.array([3.0], dtype))
        want = [200, 9.237055564881302e-14, 0.6132616875182229, 0.6931471805599453,
                2.1269280110429727, 4.248354255291589e-18, 800]
        want_p = [600, 9.237055564881302e-14, 1.4012187000291567, 2.0794415416798357,
                  2.1269280110429727, 1.2745062765874767e-17, 800]
        if dtype is np.float64:
            # torch's bit-exact form: (1 - y) x - lw log_sigmoid(x)
            np.testing.assert_allclose(v, want, rtol=1e-14, atol=1e-16)
            np.testing.assert_allclose(vp, want_p, rtol=1e-14, atol=1e-16)
            assert v[1] == pytest.approx(9.237055564881302e-14, rel=1e-6)  # not 9.3576e-14
        else:
            np.testing.assert_allclose(v, want, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(vp, want_p, rtol=1e-6, atol=1e-6)
            assert v[1] == 0.0  # the cancellation of -30 - log_sigmoid(-30) in float32
        _, g = CF.binary_cross_entropy_with_logits(x, y, reduction="sum", return_grad=True)
        sig = 1 / (1 + np.exp(-x.astype(np.float64)))
        np.testing.assert_allclose(g, sig - y, rtol=1e-6, atol=1e-7)
        _, gp = CF.binary_cross_entropy_with_logits(
            x, y, reduction="sum", return_grad=True, pos_weight=np.array([3.0], dtype))
        np.testing.assert_allclose(gp, (3 * y + 1 - y) * sig - 3 * y, rtol=1e-6, atol=1e-7)

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_bce_with_logits_infinities(self, dtype):
        """torch's form (1 - y) x - log_sigmoid(x) at x = +-inf: y=1, x=+inf -> nan
        (0 * inf); y=0, x=-inf -> nan; y=1, x=-inf -> nan (0 * -inf); y=0, x=+inf
        -> inf.  The gradient sigmoid(x) - y stays finite (0 or +-1)."""
        x = np.array([np.inf, -np.inf, -np.inf, np.inf], dtype)
        y = np.array([1, 0, 1, 0], dtype)
        with np.errstate(all="ignore"):
            v, g = CF.binary_cross_entropy_with_logits(x, y, reduction="none",
                                                       return_grad=True)
        assert np.all(np.isnan(v[:3])) and v[3] == np.inf
        np.testing.assert_array_equal(g, [0, 0, -1, 1])

    def test_bce_with_logits_targets_not_range_checked(self):
        v = CF.binary_cross_entropy_with_logits(np.array([1.0, -2.0]), np.array([2.0, -1.0]),
                                                reduction="none")
        x, y = np.array([1.0, -2.0]), np.array([2.0, -1.0])
        np.testing.assert_allclose(v, (1 - y) * x + np.log1p(np.exp(-x)), rtol=1e-14)

    KX = np.array([[-1.2, -.5, -2], [-.1, -3, -.7]])
    KY = np.array([[.3, .7, 0], [.5, .2, .3]])

    def test_kl_anchor(self):
        assert CF.kl_div(self.KX, self.KY, reduction="sum") == pytest.approx(
            -0.07051731611946702, rel=1e-13)
        assert CF.kl_div(self.KX, self.KY, reduction="batchmean") == pytest.approx(
            -0.03525865805973351, rel=1e-13)
        with quiet():
            assert CF.kl_div(self.KX, self.KY) == pytest.approx(-0.011752886019911169,
                                                                rel=1e-13)
        assert CF.kl_div(self.KX, self.KY, reduction="sum", log_target=True) == pytest.approx(
            12.688871856437201, rel=1e-14)

    def test_kl_gradients(self):
        """-s g y (for every y, incl. y <= 0); log_target: -s g exp(y)."""
        y = np.array([[0.3, -0.5, 0.0], [0.5, 0.2, 0.3]])
        _, g = CF.kl_div(self.KX, y, reduction="batchmean", return_grad=True)
        np.testing.assert_array_equal(g, -y / 2)
        assert g[0, 1] == 0.25
        with quiet():
            _, g = CF.kl_div(self.KX, self.KY, reduction="mean", log_target=True,
                             return_grad=True, grad_output=3.0)
        np.testing.assert_allclose(g, -3.0 * np.exp(self.KY) / 6, rtol=1e-15)

    def test_kl_special_values(self):
        """y=0 -> 0 unless x = +-inf / nan; y<0 -> nan; y=+inf -> inf; y=nan -> nan;
        subnormal y: y log y; log_target y=-inf -> nan."""
        x = np.array([0.5, np.inf, -np.inf, np.nan, 1.0, -1.0, 1.0, -1.0])
        y = np.array([0.0, 0.0, 0.0, 0.0, -0.5, np.inf, np.nan, 1e-310])
        with np.errstate(all="ignore"):
            v = CF.kl_div(x, y, reduction="none")
            vl = CF.kl_div(np.array([1.0]), np.array([-np.inf]), reduction="none",
                           log_target=True)
        assert v[0] == 0
        assert np.all(np.isnan(v[1:5]))
        assert v[5] == np.inf
        assert np.isnan(v[6])
        assert v[7] == 1e-310 * np.log(1e-310) + 1e-310
        assert np.isnan(vl[0])

    def test_kl_batchmean_uses_input_batch(self):
        """'batchmean' divides by input.size(0) even when target broadcasts to more."""
        x = np.log(np.array([[0.2, 0.3, 0.5]]))
        y = np.full((4, 3), 0.25)
        s = CF.kl_div(x, y, reduction="sum")
        assert CF.kl_div(x, y, reduction="batchmean") == s
        v, g = CF.kl_div(np.array(-0.5), np.array(0.25), reduction="batchmean",
                         return_grad=True)  # 0-d input: = sum
        assert v == CF.kl_div(np.array(-0.5), np.array(0.25), reduction="sum")
        assert g == -0.25

    MX = np.array([[.3, -.5, 2], [1, 0, -40]])
    MY = np.array([[1, 0, 1], [0, 1, 0]])

    def test_multilabel_soft_margin_anchor(self):
        v = CF.multilabel_soft_margin_loss(self.MX, self.MY, reduction="none")
        np.testing.assert_allclose(v, [0.3851200798972021, 0.668802956026056], rtol=1e-14)
        assert CF.multilabel_soft_margin_loss(self.MX, self.MY) == pytest.approx(
            0.526961517961629, rel=1e-14)
        assert CF.multilabel_soft_margin_loss(
            self.MX, self.MY, weight=np.array([1, 2, .5])) == pytest.approx(
            0.7109215444980568, rel=1e-14)

    def test_multilabel_soft_margin_gradient(self):
        """d/dx_c = s_row g w_c (sigmoid(x_c) - y_c) / C; weight not in the denominator."""
        w = np.array([1, 2, .5])
        _, g = CF.multilabel_soft_margin_loss(self.MX, self.MY, weight=w, return_grad=True)
        sig = 1 / (1 + np.exp(-self.MX))
        np.testing.assert_allclose(g, w * (sig - self.MY) / 3 / 2, rtol=1e-14, atol=1e-17)

    def test_multilabel_soft_margin_stable(self):
        x = np.array([[1e4, -1e4, 1e9, -1e9]], np.float32)
        y = np.array([[0, 1, 1, 0]], np.float32)
        v, g = CF.multilabel_soft_margin_loss(x, y, reduction="none", return_grad=True)
        assert v[0] == pytest.approx(2e4 / 4, rel=1e-6)
        np.testing.assert_array_equal(g, [[0.25, -0.25, 0, 0]])

    @pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
    def test_ce_extreme_logits(self, dtype):
        """x=[1000, 0, -1000], t=1 -> 1000, grad [1, -1, 0] (log-softmax is stable)."""
        v, g = CF.cross_entropy(np.array([1000, 0, -1000], dtype), np.array(1),
                                return_grad=True)
        assert v == 1000.0
        np.testing.assert_array_equal(g, [1, -1, 0])

    def test_ce_unbatched_weight(self):
        """Unbatched input with weight: 'mean' cancels the weight, 'sum' keeps it."""
        x = np.array([0.5, -1.0, 2.0])
        w = np.array([0.5, 3.0, 2.0])
        t = np.array(1)
        plain = CF.cross_entropy(x, t, reduction="sum")
        assert CF.cross_entropy(x, t, weight=w) == pytest.approx(plain, rel=1e-15)
        assert CF.cross_entropy(x, t, weight=w, reduction="sum") == pytest.approx(
            3.0 * plain, rel=1e-15)
        assert CF.cross_entropy(x, t, weight=w, reduction="none") == pytest.approx(
            3.0 * plain, rel=1e-15)

    def test_ce_label_smoothing_bounds(self):
        """Negative smoothing is silently 0; 1.0 is allowed (uniform target)."""
        x = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, 0.0]])
        t = np.array([1, 0])
        assert_identical(CF.cross_entropy(x, t, label_smoothing=-0.5), CF.cross_entropy(x, t))
        v = CF.cross_entropy(x, t, label_smoothing=1.0, reduction="none")
        lp = x - np.log(np.sum(np.exp(x), axis=1, keepdims=True))
        np.testing.assert_allclose(v, -lp.mean(axis=1), rtol=1e-14)
        y = np.full((2, 3), 1 / 3)
        np.testing.assert_allclose(CF.cross_entropy(x, y, reduction="none"), v, rtol=1e-14)

    def test_ce_probability_targets_unchecked(self):
        """Probability targets need not sum to 1 and may be negative."""
        x = np.array([[0.5, -1.0, 2.0]])
        lp = x - np.log(np.sum(np.exp(x)))
        for y in ([[2.0, 0, 0]], [[-0.5, 1.0, 0.25]]):
            y = np.array(y)
            v, g = CF.cross_entropy(x, y, reduction="sum", return_grad=True)
            assert v == pytest.approx(-np.sum(y * lp), rel=1e-14)
            np.testing.assert_allclose(g, np.exp(lp) * y.sum() - y, rtol=1e-14, atol=1e-16)

    def test_ce_probability_mean_ignores_weights(self):
        """Probability targets: 'mean' divides by N*d1*...*dK, whatever the weights."""
        rng = rng_for("prob-mean")
        x, y = make_inputs("cross_entropy", rng, (3, 4, 2), np.float64, prob=True)
        w = np.array([0.5, 2.0, 3.0, 0.25])
        s = CF.cross_entropy(x, y, weight=w, reduction="sum")
        assert CF.cross_entropy(x, y, weight=w) == pytest.approx(s / 6, rel=1e-15)


# =================================================================================
# Golden files (torch-made, checked without torch)
# =================================================================================


def _dec(obj):
    if isinstance(obj, dict):
        dtype = np.int64 if obj.get("dtype") == "int64" else np.float64
        return np.array(obj["data"], dtype=dtype).reshape(obj["shape"])
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
    assert {p.values[0] for p in GOLDEN} == set(LOSS_IDS)
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(GOLDEN_DIR, "*.json")))
    assert total < 100_000


@pytest.mark.parametrize("func, case", GOLDEN)
def test_golden(func, case):
    args = [_dec(a) for a in case["args"]]
    kwargs = {k: _dec(v) for k, v in case["kwargs"].items()}
    reduction = case["reduction"]
    go = _dec(case["grad_output"]) if case["grad_output"] is not None else None
    expected_value = _dec(case["value"])
    expected_grad = _dec(case["grads"][0])
    loss = BY_FUNC[func]
    with quiet(), np.errstate(all="ignore"):
        results = [getattr(CF, func)(*args, reduction=reduction, return_grad=True,
                                     grad_output=go, **kwargs)]
        crit = loss.closs_cls(reduction=reduction, **kwargs)
        results.append((crit(*args), crit.backward(go)))
    for value, grad in results:
        if reduction == "none":
            assert np.shape(value) == np.shape(expected_value)
        assert_close(value, expected_value, np.float64)
        assert_close(grad, expected_grad, np.float64)


# =================================================================================
# Parity with torch: values and gradients through every route
# =================================================================================

CE_SHAPES = [(5,), (70, 5), (3, 5, 4), (2, 5, 3, 2), (6, 40)]  # 70 rows: > one 64-row tile
CE_INDEX_OPTS = ["plain", "weight", "ignore", "smooth", "weight+ignore+smooth"]
CE_PROB_OPTS = ["plain", "weight", "smooth", "weight+ignore+smooth"]
NLL_OPTS = ["plain", "weight", "ignore", "weight+ignore"]


def class_kwargs(opts, C, dtype, rng):
    """Options for CE / NLL.  'ignore' alone: ignore_index=1 (a real class);
    combined with others: the default -100 written into some targets."""
    kw = {}
    parts = opts.split("+")
    if "weight" in parts:
        kw["weight"] = rng.uniform(0.25, 2.0, C).astype(dtype)
    if "smooth" in parts:
        kw["label_smoothing"] = 0.2
    if "ignore" in parts:
        kw["ignore_index"] = 1 if parts == ["ignore"] else -100
    return kw


def _class_parity(torch, func, shape, opts, prob, reduction, dtype):
    rng = rng_for("parity", func, shape, opts, prob, reduction, np.dtype(dtype).name)
    kw = class_kwargs(opts, n_classes(shape), dtype, rng)
    if prob and "ignore_index" in kw:
        kw["ignore_index"] = -1  # any negative value is accepted (and unused)
    x, t = make_inputs(func, rng, shape, dtype, prob=prob, ignore=kw.get("ignore_index"))
    go = random_go(rng, reduction, index_shape(shape), dtype)
    ref_value, ref_grad = torch_ref(func, [x, t], reduction, go, **kw)
    check_routes(BY_FUNC[func], [x, t], reduction, go, ref_value, ref_grad, dtype, kw)
    # the default upstream gradient (1 / all ones)
    _, ref_grad = torch_ref(func, [x, t], reduction, None, **kw)
    crit = BY_FUNC[func].closs_cls(reduction=reduction, **kw)
    crit(x, t)
    assert_close(crit.backward(), ref_grad, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
@pytest.mark.parametrize("opts", CE_INDEX_OPTS)
def test_ce_index_parity(torch, opts, shape, reduction, dtype):
    _class_parity(torch, "cross_entropy", shape, opts, False, reduction, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
@pytest.mark.parametrize("opts", CE_PROB_OPTS)
def test_ce_probability_parity(torch, opts, shape, reduction, dtype):
    _class_parity(torch, "cross_entropy", shape, opts, True, reduction, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
@pytest.mark.parametrize("opts", NLL_OPTS)
def test_nll_parity(torch, opts, shape, reduction, dtype):
    _class_parity(torch, "nll_loss", shape, opts, False, reduction, dtype)


POINT_SHAPES = [(), (7,), (70, 5), (2, 3, 4)]


def pointwise_kwargs(func, opts, shape, dtype, rng):
    """weight / pos_weight broadcast along the last dim ('last'), or of the
    input's full shape ('full'); log_target for KLDiv."""
    kw = {}
    for part in opts.split("+"):
        if part == "plain":
            continue
        if part == "log_target":
            kw["log_target"] = True
            continue
        name, how = part.split(":")
        wshape = shape if how == "full" else tuple(shape[-1:])
        low = 0.0 if name == "pos_weight" else 0.25
        kw[name] = np.asarray(rng.uniform(low, 3.0, wshape)).astype(dtype)
    return kw


def _pointwise_parity(torch, func, shape, opts, reduction, dtype):
    rng = rng_for("parity", func, shape, opts, reduction, np.dtype(dtype).name)
    kw = pointwise_kwargs(func, opts, shape, dtype, rng)
    x, y = make_inputs(func, rng, shape, dtype, log_target=kw.get("log_target", False))
    go = random_go(rng, reduction, loss_shape(func, shape), dtype)
    ref_value, ref_grad = torch_ref(func, [x, y], reduction, go, **kw)
    scale = kl_scale([x, y], reduction, kw) if func == "kl_div" and reduction != "none" \
        else None
    check_routes(BY_FUNC[func], [x, y], reduction, go, ref_value, ref_grad, dtype, kw,
                 scale=scale)
    _, ref_grad = torch_ref(func, [x, y], reduction, None, **kw)
    with quiet():
        crit = BY_FUNC[func].closs_cls(reduction=reduction, **kw)
        crit(x, y)
    assert_close(crit.backward(), ref_grad, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", POINT_SHAPES, ids=str)
@pytest.mark.parametrize("opts", ["plain", "weight:last", "weight:full"])
def test_bce_parity(torch, opts, shape, reduction, dtype):
    _pointwise_parity(torch, "binary_cross_entropy", shape, opts, reduction, dtype)


def _bce_hard_inputs(dtype, n=3000):
    """x in [0, 1] with exact 0s, 1s and subnormals; targets all 0 or 1."""
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, n).astype(dtype)
    x[::7], x[::11], x[::13] = 0, 1, np.finfo(dtype).tiny / 4
    return x, (rng.random(n) < 0.4).astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_bce_hard_targets_give_the_general_forms_bits(dtype):
    """A block of 0/1 targets takes one log (of x or 1 - x) instead of two; its
    values and gradients are the general form's, bit for bit, and torch's."""
    x, y = _bce_hard_inputs(dtype)
    mixed = y.copy()
    mixed[::200] = 0.5  # a soft target in every block of 256: the general form throughout
    kept = np.ones(y.size, bool)
    kept[::200] = False
    v, g = CF.binary_cross_entropy(x, y, reduction="none", return_grad=True)
    vm, gm = CF.binary_cross_entropy(x, mixed, reduction="none", return_grad=True)
    np.testing.assert_array_equal(v[kept], vm[kept])
    np.testing.assert_array_equal(g[kept], gm[kept])
    x64 = x.astype(np.float64)
    with np.errstate(divide="ignore"):  # torch: log x or log1p(-x), clamped
        expected = -np.maximum(np.where(y == 1, np.log(x64), np.log1p(-x64)), -100)
    assert_close(v, expected, dtype)


@pytest.mark.parametrize("func", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_class_index_zero_losses_have_torchs_sign(torch, dtype, func):
    """torch's -w log_softmax (-w x for NLL): a zero row loss is -0 for w > 0
    and +0 for w < 0 in a batch; an unbatched 'none' loss is a sum from +0."""
    x = np.array([[0.0, -800.0], [2.0, 0.0], [0.0, 0.0], [0.0, -800.0]], dtype)
    t = np.array([0, 1, 0, 0])
    w = np.array([1.0, -1.0], dtype)
    for xs, ts in ((x, t), (x[0], t[0]), (x[3], t[3])):
        for weight in (None, w):
            v = getattr(CF, func)(xs, ts, weight=weight, reduction="none")
            tv = getattr(torch.nn.functional, func)(
                torch.tensor(xs), torch.tensor(ts),
                weight=None if weight is None else torch.tensor(weight), reduction="none")
            np.testing.assert_array_equal(v, tv.numpy())
            np.testing.assert_array_equal(np.signbit(v), np.signbit(tv.numpy()))


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_bce_zero_losses_have_torchs_sign(torch, dtype, soft):
    """torch's (y - 1) log1p(-x) - y log(x): a zero loss is +0 for y = 0 at
    x = 0 and -0 for y = 1 at x = 1 (then negated by a weight of -1), in the
    one-log form for 0/1 targets and in the general form alike."""
    x = np.array([0, 1, 0, 1, 0.5, 0.5], dtype)
    y = np.array([0, 1, 0, 1, 0, 1], dtype)
    w = np.array([1, 1, -1, -1, 1, 1], dtype)
    if soft:
        x, y, w = (np.concatenate([a, a[:1]]) for a in (x, y, w))
        y[-1] = 0.5  # a soft target in the block: the general (two-log) form
    v = CF.binary_cross_entropy(x, y, weight=w, reduction="none")
    tv = torch.nn.functional.binary_cross_entropy(
        torch.tensor(x), torch.tensor(y), weight=torch.tensor(w), reduction="none").numpy()
    np.testing.assert_array_equal(v, tv)
    np.testing.assert_array_equal(np.signbit(v), np.signbit(tv))


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_bce_small_input_takes_log1p_as_torch(torch, dtype, soft):
    """torch evaluates log(1 - x) as log1p(-x): x = 1e-8 with y = 0 loses 1e-8,
    where the log of the rounded 1 - x (1 in float32) would give 0."""
    x = np.geomspace(1e-30 if dtype == np.float64 else 1e-12, 0.75, 300).astype(dtype)
    y = np.zeros_like(x)
    if soft:
        y[::7] = 0.25  # soft targets in the block: the general (two-log) form
    v, g = CF.binary_cross_entropy(x, y, reduction="none", return_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    tv = torch.nn.functional.binary_cross_entropy(tx, torch.tensor(y), reduction="none")
    tv.sum().backward()
    assert_close(v, tv.detach().numpy(), dtype, scale=1e-30)  # relative, down to 1e-30
    assert_close(g, tx.grad.numpy(), dtype)
    hard = y == 0
    np.testing.assert_allclose(v[hard], -np.log1p(-x[hard].astype(np.float64)),
                               rtol=2e-7 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_hard_targets_parity(torch, reduction, dtype):
    x, y = _bce_hard_inputs(dtype)
    go = random_go(np.random.default_rng(8), reduction, x.shape, dtype)
    ref_value, ref_grad = torch_ref("binary_cross_entropy", [x, y], reduction, go)
    check_routes(BY_FUNC["binary_cross_entropy"], [x, y], reduction, go, ref_value, ref_grad,
                 dtype, {})


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", POINT_SHAPES, ids=str)
@pytest.mark.parametrize("opts", ["plain", "weight:last", "pos_weight:last",
                                  "weight:full+pos_weight:last", "pos_weight:full"])
def test_bce_with_logits_parity(torch, opts, shape, reduction, dtype):
    _pointwise_parity(torch, "binary_cross_entropy_with_logits", shape, opts, reduction,
                      dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS + ("batchmean",))
@pytest.mark.parametrize("shape", POINT_SHAPES, ids=str)
@pytest.mark.parametrize("opts", ["plain", "log_target"])
def test_kl_div_parity(torch, opts, shape, reduction, dtype):
    _pointwise_parity(torch, "kl_div", shape, opts, reduction, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(5,), (70, 5), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("opts", ["plain", "weight:last", "weight:full"])
def test_multilabel_soft_margin_parity(torch, opts, shape, reduction, dtype):
    _pointwise_parity(torch, "multilabel_soft_margin_loss", shape, opts, reduction, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS + ("batchmean",))
@pytest.mark.parametrize("shapes", [((1, 3), (4, 3)), ((2, 3), (3,)), ((4, 1), (4, 3)),
                                    ((3,), (2, 3))], ids=str)
def test_kl_div_broadcast_parity(torch, shapes, reduction):
    """KLDiv broadcasts silently; the input gradient is summed back to its shape."""
    shape, tshape = shapes
    rng = rng_for("klb", shapes, reduction)
    x = np.log(rng.uniform(0.05, 1, shape))
    y = rng.uniform(0, 1, tshape)
    go = random_go(rng, reduction, np.broadcast_shapes(shape, tshape), np.float64)
    ref_value, ref_grad = torch_ref("kl_div", [x, y], reduction, go)
    with warnings.catch_warnings():
        warnings.simplefilter("error" if reduction != "mean" else "ignore")
        routes = check_routes(KL, [x, y], reduction, go, ref_value, ref_grad, np.float64, {},
                              scale=kl_scale([x, y], reduction, {}) if reduction != "none"
                              else None)
    assert routes["value_and_grad"][1][0].shape == shape


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("tshape", [(4,), (1, 4), (3, 1)], ids=str)
def test_multilabel_soft_margin_broadcast_target(torch, tshape, reduction):
    rng = rng_for("mlsmb", tshape, reduction)
    x = rng.normal(0, 3, (3, 4))
    y = (rng.random(tshape) < 0.5).astype(np.float64)
    go = random_go(rng, reduction, (3,), np.float64)
    ref_value, ref_grad = torch_ref("multilabel_soft_margin_loss", [x, y], reduction, go)
    check_routes(MLSM, [x, y], reduction, go, ref_value, ref_grad, np.float64, {})


@pytest.mark.parametrize("func", ["binary_cross_entropy", "binary_cross_entropy_with_logits",
                                  "multilabel_soft_margin_loss"])
def test_integer_targets_equal_float_targets(torch, func):
    """0/1 targets given as integers compute the float targets' result (torch
    rejects some of these; closs takes anything numpy.asarray gives)."""
    rng = rng_for("int-target", func)
    x, _ = make_inputs(func, rng, (4, 3), np.float64)
    y = (rng.random((4, 3)) < 0.5).astype(np.int64)
    a = getattr(CF, func)(x, y, reduction="none", return_grad=True)
    b = getattr(CF, func)(x, y.astype(np.float64), reduction="none", return_grad=True)
    assert_identical(a[0], b[0])
    assert_identical(a[1], b[1])
    ref_value, ref_grad = torch_ref(func, [x, y.astype(np.float64)], "none")
    assert_close(a[0], ref_value)
    assert_close(a[1], ref_grad)


@pytest.mark.parametrize("func", ["cross_entropy", "binary_cross_entropy",
                                  "binary_cross_entropy_with_logits", "kl_div",
                                  "multilabel_soft_margin_loss"])
def test_mixed_float_dtypes_keep_input_dtype(func):
    """API.md: the result has the input's dtype (float64 targets / weights are
    converted, not promoted to; torch would promote or refuse)."""
    rng = rng_for("mixed", func)
    x, y = make_inputs(func, rng, (4, 3), np.float32, prob=True)
    kw = {} if func == "kl_div" else {"weight": rng.uniform(0.5, 2, 3)}
    for reduction in REDUCTIONS:
        with quiet():
            v, g = getattr(CF, func)(x, y.astype(np.float64), reduction=reduction,
                                     return_grad=True, **kw)
            ref = getattr(CF, func)(x, y, reduction=reduction,
                                    **{k: w.astype(np.float32) for k, w in kw.items()})
        assert np.asarray(v).dtype == np.float32 and g.dtype == np.float32
        assert_identical(v, ref)


# ---------------------------------------------------------------------------------
# legacy size_average / reduce (§0.2)
# ---------------------------------------------------------------------------------

LEGACY = [(None, False, "none"), (False, None, "sum"), (True, None, "mean"),
          (True, False, "none"), (False, True, "sum")]


@pytest.mark.parametrize("size_average, reduce, expected", LEGACY,
                         ids=[f"sa={a}-r={b}" for a, b, _ in LEGACY])
@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_legacy_size_average_reduce(torch, case, size_average, reduce, expected):
    rng = rng_for("legacy", case.func, size_average, reduce)
    shape = (4, 3)
    x, y = make_inputs(case.func, rng, shape, np.float64)
    kw = {"weight": rng.uniform(0.5, 2, 3)} if case.func != "kl_div" else {}
    other = "sum" if expected != "sum" else "none"  # overridden by the legacy pair
    msg = ("size_average and reduce args will be deprecated, please use "
           f"reduction='{expected}' instead")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # KLDiv's 'mean' warning: test_kl_warnings_as_torch
        warnings.filterwarnings("ignore", message="reduction: 'mean' divides")
        with pytest.warns(UserWarning, match=msg):
            crit = case.closs_cls(size_average=size_average, reduce=reduce, reduction=other,
                                  **kw)
        value, grad = crit.value_and_grad(x, y)
        v2 = crit(x, y)
        g2 = crit.backward()
        with pytest.warns(UserWarning, match=msg):
            fvalue, fgrad = case.closs_func(x, y, size_average=size_average, reduce=reduce,
                                            reduction=other, return_grad=True, **kw)
    with quiet():
        plain = case.closs_func(x, y, reduction=expected, return_grad=True, **kw)
    for v, g in [(value, grad), (v2, g2), (fvalue, fgrad)]:
        assert_identical(v, plain[0])
        assert_identical(g, plain[1])
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    tkw = {k: torch.from_numpy(v) for k, v in kw.items()}
    with quiet():
        out = getattr(torch.nn.functional, case.func)(
            tx, torch.from_numpy(y.copy()), size_average=size_average, reduce=reduce,
            reduction=other, **tkw)
    out.backward(torch.ones_like(out))
    scale = kl_scale([x, y], expected, {}) if case.func == "kl_div" and expected != "none" \
        else None
    assert_close(value, out.detach().numpy(), np.float64, scale=scale)
    assert_close(grad, tx.grad.numpy(), np.float64)


@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_legacy_positional(case):
    """size_average and reduce keep torch's positional places."""
    rng = rng_for("legpos", case.func)
    x, y = make_inputs(case.func, rng, (3, 4), np.float64)
    # [weight,] size_average, [ignore_index,] reduce: the same after (input, target)
    if case.func in ("cross_entropy", "nll_loss"):
        legacy = (None, False, -100, True)
    elif case.func == "kl_div":
        legacy = (False, True)
    else:
        legacy = (None, False, True)
    with pytest.warns(UserWarning, match="reduction='sum'"):
        crit = case.closs_cls(*legacy)
    with pytest.warns(UserWarning, match="reduction='sum'"):
        fv = case.closs_func(x, y, *legacy)
    assert crit.reduction == "sum"
    assert_identical(crit(x, y), case.closs_func(x, y, reduction="sum"))
    assert_identical(fv, case.closs_func(x, y, reduction="sum"))


# ---------------------------------------------------------------------------------
# KLDiv's 'mean' warning (§7)
# ---------------------------------------------------------------------------------


ZERO_WEIGHT_SUM = [  # (logits, targets, weight): the kept targets' weights sum to 0
    ([[0., 1, 2], [1, 0, 2]], [0, 0], [0., 1, 1]),
    ([[0., 1], [1, 0]], [0, 1], [1., -1]),
    ([[0., 1, 2], [1, 0, 2], [3, 1, 0]], [0, 1, 2], [1., 1, -2]),
    ([[0., 1, 2], [1, 0, 2], [3, 1, 0]], [0, -100, 2], [0., 1, 0.]),
]


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("smoothing", [0.2, 1.0, 0.0])
@pytest.mark.parametrize("case", range(len(ZERO_WEIGHT_SUM)))
def test_smoothed_mean_with_zero_weight_sum_as_torch(torch, case, smoothing, dtype):
    """'mean' with label smoothing where the kept targets' weights sum to 0:
    torch divides the nll and the smoothing sums by that 0 each (nan, or an
    infinity by their signs) and its gradient is nan in every kept row."""
    x, t, w = (np.array(a, d) for a, d in zip(ZERO_WEIGHT_SUM[case], (dtype, np.int64, dtype)))
    tx = torch.tensor(x, requires_grad=True)
    tv = torch.nn.functional.cross_entropy(tx, torch.tensor(t), weight=torch.tensor(w),
                                           label_smoothing=smoothing)
    tv.backward()
    crit = closs.CrossEntropyLoss(weight=w, label_smoothing=smoothing)
    results = [CF.cross_entropy(x, t, weight=w, label_smoothing=smoothing, return_grad=True),
               crit.value_and_grad(x, t), (crit(x, t), crit.backward())]
    for v, g in results:
        assert v.dtype == dtype
        np.testing.assert_array_equal(v, tv.detach().numpy())
        np.testing.assert_array_equal(g, tx.grad.numpy())


@pytest.mark.parametrize("shape", [(0, 3), (2, 0), (2, 3, 0), (2, 3)])
def test_probability_targets_zero_sum_is_negative_zero(torch, shape):
    """torch negates the whole sum of probability-target losses: a sum of 0
    (no rows, or all-zero targets) is -0.0 (spec 3.4), and 'mean' over C = 0
    classes is 0 / 0 = nan."""
    x = np.zeros(shape)
    for reduction in ("sum", "mean"):
        v = CF.cross_entropy(x, np.zeros(shape), reduction=reduction)
        tv = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(np.zeros(shape)),
                                               reduction=reduction).item()
        assert (np.isnan(v) and np.isnan(tv)) or (v == tv and np.signbit(v) == np.signbit(tv))


def _warning_texts(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, sorted(str(w.message) for w in caught)


KL_OPTIONS = [{}, {"reduction": "mean"}, {"reduction": "elementwise_mean"},
              {"reduce": True}, {"size_average": True}, {"size_average": False},
              {"reduce": False, "reduction": "batchmean"},
              {"size_average": True, "reduction": "batchmean"},
              {"size_average": False, "reduction": "batchmean"}]


@pytest.mark.parametrize("options", KL_OPTIONS, ids=[str(o) for o in KL_OPTIONS])
def test_kl_warnings_and_legacy_batchmean_as_torch(torch, options):
    """The same warnings as torch, and torch's kl_div quirk: given the legacy
    arguments, reduction='batchmean' still divides by input.shape[0] after the
    legacy reduction.  (A class warns of 'elementwise_mean' when it is built,
    torch's at each forward: the two are compared together.)"""
    x = np.log(np.array([[0.2, 0.8, 0.5], [0.1, 0.6, 0.3]]))
    y = np.array([[0.5, 0.25, 0.25], [0.1, 0.7, 0.2]])
    tx = torch.tensor(x, requires_grad=True)
    for cls in (True, False):
        if cls:
            crit, built = _warning_texts(lambda: closs.KLDivLoss(**options))
            tcrit, tbuilt = _warning_texts(lambda: torch.nn.KLDivLoss(**options))
            (value, grad), warned = _warning_texts(lambda: crit.value_and_grad(x, y))
            tout, twarned = _warning_texts(lambda: tcrit(tx, torch.tensor(y)))
            warned, twarned = sorted(built + warned), sorted(tbuilt + twarned)
        else:
            (value, grad), warned = _warning_texts(
                lambda: CF.kl_div(x, y, return_grad=True, **options))
            tout, twarned = _warning_texts(
                lambda: torch.nn.functional.kl_div(tx, torch.tensor(y), **options))
        assert warned == twarned
        tx.grad = None
        tout.backward(torch.ones_like(tout))
        assert_close(value, tout.detach().numpy(), np.float64)
        assert_close(grad, tx.grad.numpy(), np.float64)


def test_kl_mean_warns_at_every_forward():
    x, y = np.log(np.array([0.2, 0.8])), np.array([0.5, 0.5])
    crit = closs.KLDivLoss()
    for _ in range(2):
        with pytest.warns(UserWarning, match="reduction: 'mean' divides the total loss"):
            crit(x, y)
    with pytest.warns(UserWarning, match="reduction: 'mean' divides the total loss"):
        CF.kl_div(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for reduction in ("sum", "batchmean", "none"):
            closs.KLDivLoss(reduction=reduction)(x, y)
            CF.kl_div(x, y, reduction=reduction)
        crit.backward()  # backward does not warn again


# =================================================================================
# Special cases (spec §3.4, §0.1, §0.7) against torch
# =================================================================================

LAYOUT_SHAPES = [(4, 3), (4, 40), (2, 3, 5), (2, 40, 3)]  # regrouped / rows / strided


IGNORED_OPTS = [("cross_entropy", {}), ("cross_entropy", {"label_smoothing": 0.3}),
                ("cross_entropy", {"weight": True, "label_smoothing": 0.3}),
                ("nll_loss", {}), ("nll_loss", {"weight": True})]


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", LAYOUT_SHAPES + [(3,)], ids=str)
@pytest.mark.parametrize("func, opts", IGNORED_OPTS,
                         ids=[f"{f}-{'+'.join(o) or 'plain'}" for f, o in IGNORED_OPTS])
def test_all_targets_ignored(torch, func, opts, shape, dtype):
    """'mean' -> nan with a zero gradient; 'sum' -> 0; 'none' -> zeros (§3.4)."""
    rng = rng_for("allign", func, shape, str(opts), np.dtype(dtype).name)
    kw = dict(opts)
    if "weight" in kw:
        kw["weight"] = rng.uniform(0.5, 2, n_classes(shape)).astype(dtype)
    for ignore_index in (-100, 2):
        x, _ = make_inputs(func, rng, shape, dtype)
        t = np.full(index_shape(shape), ignore_index)
        for reduction in REDUCTIONS:
            for go in (None, random_go(rng, reduction, index_shape(shape), dtype)):
                ref_value, ref_grad = torch_ref(func, [x, t], reduction, go,
                                                ignore_index=ignore_index, **kw)
                routes = check_routes(BY_FUNC[func], [x, t], reduction, go, ref_value,
                                      ref_grad, dtype, dict(kw, ignore_index=ignore_index))
                value, grads = routes["value_and_grad"]
                if reduction == "mean":
                    assert np.isnan(value)
                else:
                    assert np.all(value == 0)
                assert np.all(grads[0] == 0)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", LAYOUT_SHAPES, ids=str)
def test_ignored_rows_with_nan_logits(torch, shape, dtype):
    """An ignored row contributes 0 to the loss even with NaN logits; its
    gradient is torch's 0 - p * 0 = nan."""
    rng = rng_for("ign-nan", shape, np.dtype(dtype).name)
    x, t = make_inputs("cross_entropy", rng, shape, dtype)
    t.reshape(-1)[0] = -100
    x[(0, slice(None)) + (0,) * (len(shape) - 2)] = np.nan
    for reduction in REDUCTIONS:
        ref_value, ref_grad = torch_ref("cross_entropy", [x, t], reduction)
        with np.errstate(all="ignore"):
            check_routes(CE, [x, t], reduction, None, ref_value, ref_grad, dtype, {})


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", LAYOUT_SHAPES, ids=str)
@pytest.mark.parametrize("func", ["cross_entropy", "nll_loss"])
def test_zero_weight_targets(torch, func, shape, dtype):
    """Every non-ignored target has weight 0: 'mean' = 0/0 = nan, with a nan
    gradient (unlike the all-ignored case)."""
    rng = rng_for("zero-w", func, shape, np.dtype(dtype).name)
    x, _ = make_inputs(func, rng, shape, dtype)
    t = np.zeros(index_shape(shape), np.int64)
    t.reshape(-1)[1] = -100
    w = np.ones(n_classes(shape), dtype)
    w[0] = 0
    for reduction in REDUCTIONS:
        ref_value, ref_grad = torch_ref(func, [x, t], reduction, weight=w)
        with np.errstate(all="ignore"):
            check_routes(BY_FUNC[func], [x, t], reduction, None, ref_value, ref_grad, dtype,
                         {"weight": w})


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("func", ["cross_entropy", "nll_loss"])
def test_negative_class_weights(torch, func, dtype):
    rng = rng_for("neg-w", func, np.dtype(dtype).name)
    x, t = make_inputs(func, rng, (6, 4), dtype)
    w = np.array([-1.0, 2.0, 0.5, 3.0], dtype)
    t[:] = [0, 1, 2, 3, 1, 0]
    for reduction in REDUCTIONS:
        ref_value, ref_grad = torch_ref(func, [x, t], reduction, weight=w)
        check_routes(BY_FUNC[func], [x, t], reduction, None, ref_value, ref_grad, dtype,
                     {"weight": w}, scale=10.0)


def test_ce_weights_cancelling_to_zero_denominator(torch):
    x = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    t = np.array([0, 1])
    w = np.array([-1.0, 1.0, 1.0])
    ref_value, ref_grad = torch_ref("cross_entropy", [x, t], "mean", weight=w)
    with np.errstate(all="ignore"):
        v, g = CF.cross_entropy(x, t, weight=w, return_grad=True)
    assert v == ref_value == -np.inf
    assert_close(g, ref_grad)  # torch: [[nan, -inf, -inf], [inf, nan, inf]]


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", [
    ("cross_entropy", (0, 3), False), ("cross_entropy", (0, 3), True),
    ("cross_entropy", (0, 40, 2), False), ("cross_entropy", (2, 3, 0), False),
    ("cross_entropy", (2, 3, 0), True), ("nll_loss", (0, 3), False),
    ("nll_loss", (2, 3, 0, 2), False), ("binary_cross_entropy", (0, 3), False),
    ("binary_cross_entropy_with_logits", (0,), False), ("kl_div", (0, 3), False),
    ("multilabel_soft_margin_loss", (0, 3), False),
], ids=str)
def test_empty(torch, case, dtype):
    """n == 0: 'none' -> empty, 'mean' -> nan, 'sum' -> 0 (§0.1, §3.4)."""
    func, shape, prob = case
    x, y = make_inputs(func, rng_for("empty"), shape, dtype, prob=prob)
    for reduction in REDUCTIONS + (("batchmean",) if func == "kl_div" else ()):
        with quiet(), np.errstate(all="raise"):  # no floating-point warnings either
            closs_routes(BY_FUNC[func], [x, y], reduction, None, kwargs={})
        ref_value, ref_grad = torch_ref(func, [x, y], reduction)
        routes = check_routes(BY_FUNC[func], [x, y], reduction, None, ref_value, ref_grad,
                              dtype, {})
        for value, grads in routes.values():
            if reduction == "none":
                assert value.shape == ref_value.shape and value.dtype == dtype
            elif reduction in ("mean", "batchmean"):
                assert np.isnan(value)
            else:
                assert value == 0
            if grads is not None:
                assert grads[0].shape == shape and grads[0].dtype == dtype


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_multilabel_soft_margin_no_classes(torch, dtype):
    """C = 0: every row is 0/0 = nan ('sum' too), quietly (no numpy warning)."""
    x = np.zeros((2, 0), dtype)
    for reduction in REDUCTIONS:
        ref_value, ref_grad = torch_ref("multilabel_soft_margin_loss", [x, x], reduction)
        assert np.all(np.isnan(ref_value))
        with np.errstate(all="raise"):
            check_routes(MLSM, [x, x], reduction, None, ref_value, ref_grad, dtype, {})


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.5}, {"prob": True}], ids=str)
def test_one_class(torch, opts, dtype):
    """C = 1: the loss is 0 (index) or linear in the target (probabilities)."""
    opts = dict(opts)
    prob = opts.pop("prob", False)
    rng = rng_for("C1", str(opts), prob, np.dtype(dtype).name)
    for shape in [(1,), (5, 1), (3, 1, 4)]:
        x, t = make_inputs("cross_entropy", rng, shape, dtype, prob=prob)
        for reduction in REDUCTIONS:
            ref_value, ref_grad = torch_ref("cross_entropy", [x, t], reduction, **opts)
            check_routes(CE, [x, t], reduction, None, ref_value, ref_grad, dtype, opts)
            ref_value, ref_grad = torch_ref("nll_loss", [x, t], reduction) if not prob \
                else (None, None)
            if ref_value is not None:
                check_routes(NLL, [x, t], reduction, None, ref_value, ref_grad, dtype, {})


@pytest.mark.parametrize("func", ["cross_entropy", "nll_loss"])
def test_unbatched_target_of_length_one(torch, func):
    """(C,) input with a (1,) target: torch's forward accepts it (the value of
    the () target) but its backward fails ("size mismatch"); closs returns the
    gradient of the () target.  An intended difference."""
    rng = rng_for("unb1", func)
    x, _ = make_inputs(func, rng, (4,), np.float64)
    for reduction in REDUCTIONS:
        ref_value, _ = torch_ref(func, [x, np.array(2)], reduction)
        v, g = getattr(CF, func)(x, np.array([2]), reduction=reduction, return_grad=True)
        v0, g0 = getattr(CF, func)(x, np.array(2), reduction=reduction, return_grad=True)
        assert_identical(v, v0)
        assert_identical(g, g0)
        assert_close(v, ref_value)
        assert np.shape(v) == ()


# Every instruction-set path of the small-C layout (rows regrouped into tiles
# through register transposes on AVX-512, scalar copies elsewhere): each C
# from 1 to 33 (both sides of 8, 16 and the layout switch at 32) and batch
# sizes around the 16- and 64-row blocks, against a float64 NumPy reference.
TILE_CLASSES = list(range(1, 34))
TILE_ROWS = [1, 15, 16, 17, 64, 65, 130]
TILE_SCRIPT = """
import numpy as np, closs.functional as F
from closs._kernels import _runtime
out = {}
for C in CLASSES:
    for N in ROWS:
        rng = np.random.default_rng(1000 * C + N)
        x = rng.standard_normal((N, C)) * 3
        t = rng.integers(0, C, N)
        t[::5] = -100
        w = rng.uniform(0.5, 2.0, C)
        y = rng.dirichlet(np.ones(C), N)
        out[f"{C}|{N}|inputs"] = (x, t, w, y)
        for dt in ("float32", "float64"):
            xd, wd, yd = x.astype(dt), w.astype(dt), y.astype(dt)
            key = f"{C}|{N}|{dt}"
            out[key + "|index"] = F.cross_entropy(xd, t, weight=wd, label_smoothing=0.1,
                                                  reduction="none", return_grad=True)
            out[key + "|prob"] = F.cross_entropy(xd, yd, reduction="sum", return_grad=True)
np.savez(OUT, **{k + "|" + str(i): v for k, arrays in out.items() for i, v in enumerate(arrays)})
print(_runtime.SIMD_SELECTED)
"""


def _ce_reference(x, t, w, smoothing, y=None):
    """float64 (per-row loss, gradient of the loss sum) of cross-entropy."""
    C = x.shape[1]
    z = x - x.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    if y is None:
        keep = t != -100
        tt = np.where(keep, t, 0)
        onehot = np.eye(C)[tt] * keep[:, None]
        y = (1 - smoothing) * onehot + smoothing / C * keep[:, None]
    wy = y * w
    return -(wy * log_p).sum(axis=1), np.exp(log_p) * wy.sum(axis=1, keepdims=True) - wy


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_ce_small_class_layout_every_isa(isa, tmp_path):
    path = tmp_path / "out.npz"
    code = f"CLASSES = {TILE_CLASSES}\nROWS = {TILE_ROWS}\nOUT = {str(path)!r}\n" + TILE_SCRIPT
    r = run_python(code, {"CLOSS_SIMD": isa})
    assert r.returncode == 0, r.stderr
    with np.load(path) as data:
        got = {k: data[k] for k in data.files}
    for C in TILE_CLASSES:
        for N in TILE_ROWS:
            x, t, w, y = (got[f"{C}|{N}|inputs|{i}"] for i in range(4))
            for dt in ("float32", "float64"):
                xd, wd, yd = (a.astype(dt).astype(np.float64) for a in (x, w, y))
                key = f"{C}|{N}|{dt}"
                loss, grad = _ce_reference(xd, t, wd, 0.1)
                assert_close(got[key + "|index|0"], loss, dt, err_msg=key)
                assert_close(got[key + "|index|1"], grad, dt, err_msg=key)
                loss, grad = _ce_reference(xd, None, np.ones(C), 0.0, yd)
                assert_close(got[key + "|prob|0"], loss.sum(), dt, scale=abs(loss).sum(),
                             err_msg=key)
                assert_close(got[key + "|prob|1"], grad, dt, err_msg=key)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(4, 3), (4, 40), (4, 3, 5), (4, 40, 3)], ids=str)
@pytest.mark.parametrize("kind", ["index", "smooth", "prob"])
def test_ce_nonfinite_logits(torch, kind, shape, dtype):
    """+inf logit -> nan row; NaN logit -> nan row; -inf on a non-target class is
    fine (inf with label smoothing; nan with a probability target that is 0
    there, gradient finite) — as torch."""
    rng = rng_for("nonfinite", kind, shape, np.dtype(dtype).name)
    x, t = make_inputs("cross_entropy", rng, shape, dtype, prob=kind == "prob")
    kw = {"label_smoothing": 0.1} if kind == "smooth" else {}
    N, C = shape[0], shape[1]
    tail = (0,) * (len(shape) - 2)
    if kind == "prob":
        t[(slice(None), 0) + tail] = 0.0  # zero probability where the logit is -inf
    else:
        t[(slice(None),) + tail] = 1 + np.arange(N) % (C - 1)  # never class 0 in column 0
    x[(0, 0) + tail] = -np.inf
    x[(1, 0) + tail] = -np.inf
    x[(1, C - 1) + tail] = -np.inf
    x[(2, 0) + tail] = np.inf
    x[(3, 1) + tail] = np.nan
    for reduction in REDUCTIONS:
        ref_value, ref_grad = torch_ref("cross_entropy", [x, t], reduction, **kw)
        with np.errstate(all="ignore"):
            check_routes(CE, [x, t], reduction, None, ref_value, ref_grad, dtype, kw)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("func", ["nll_loss", "binary_cross_entropy_with_logits", "kl_div",
                                  "multilabel_soft_margin_loss"])
def test_pointwise_nonfinite(torch, func, dtype):
    """NaN / inf propagate as in torch (§0.7)."""
    nan, inf = np.nan, np.inf
    if func == "nll_loss":
        x = np.array([[nan, 0, 1], [1, nan, 3], [inf, 0, 1], [-inf, 2, 2]], dtype)
        y = np.array([1, 2, 0, 0])
    elif func == "kl_div":
        x = np.array([[inf, -inf, nan, 1.0], [1.0, 1.0, -0.5, 2.0]], dtype)
        y = np.array([[0, 0, 0, -0.5], [inf, nan, 0.25, 0.0]], dtype)
    else:
        x = np.array([[inf, -inf, inf, -inf], [nan, 1.0, 1e30, -1e30]], dtype)
        y = np.array([[1, 0, 0, 1], [1, nan, 0.5, 0.5]], dtype)
    for reduction in REDUCTIONS:
        ref_value, ref_grad = torch_ref(func, [x, y], reduction)
        with np.errstate(all="ignore"):
            check_routes(BY_FUNC[func], [x, y], reduction, None, ref_value, ref_grad, dtype,
                         {})
    if func == "kl_div":
        ref_value, ref_grad = torch_ref(func, [x, y], "none", log_target=True)
        with np.errstate(all="ignore"):
            check_routes(KL, [x, y], "none", None, ref_value, ref_grad, dtype,
                         {"log_target": True})


# =================================================================================
# Stability
# =================================================================================


@pytest.mark.parametrize("shape", [(70, 5), (6, 40), (3, 5, 7)], ids=str)
@pytest.mark.parametrize("kind", ["index", "weight+ignore+smooth", "prob"])
def test_ce_shift_invariance_float32(kind, shape):
    """Logits shifted by 1e6 in float32 give the same loss and gradient, bit for
    bit: multiples of 1/16 in [-8, 8] stay exact after the shift (ulp(1e6) =
    1/16), and the kernel only ever uses x - max."""
    rng = rng_for("shift", kind, shape)
    x = (rng.integers(-128, 129, shape) / 16).astype(np.float32)
    shifted = x + np.float32(1e6)
    np.testing.assert_array_equal(shifted.astype(np.float64) - 1e6, x)  # exact
    C = n_classes(shape)
    kw = class_kwargs(kind, C, np.float32, rng) if kind != "prob" else {}
    _, t = make_inputs("cross_entropy", rng, shape, np.float32, prob=kind == "prob",
                       ignore=kw.get("ignore_index"))
    for reduction in REDUCTIONS:
        a = CF.cross_entropy(x, t, reduction=reduction, return_grad=True, **kw)
        b = CF.cross_entropy(shifted, t, reduction=reduction, return_grad=True, **kw)
        assert_identical(a[0], b[0])
        assert_identical(a[1], b[1])
        assert np.all(np.isfinite(b[1]))


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("magnitude", [1e4, 1e9, 3e38], ids=str)
@pytest.mark.parametrize("kind", ["index", "smooth", "prob"])
def test_ce_huge_logits(torch, kind, magnitude, dtype):
    """Logits of +-1e4 / +-1e9 (and near float32's max): finite where torch is."""
    rng = rng_for("huge", kind, magnitude, np.dtype(dtype).name)
    for shape in [(6, 3), (6, 40), (6, 3, 2)]:
        x = (rng.choice([-1.0, 0.0, 1.0], shape) * magnitude).astype(dtype)
        _, t = make_inputs("cross_entropy", rng, shape, dtype, prob=kind == "prob")
        kw = {"label_smoothing": 0.2} if kind == "smooth" else {}
        for reduction in REDUCTIONS:
            ref_value, ref_grad = torch_ref("cross_entropy", [x, t], reduction, **kw)
            with np.errstate(all="ignore"):
                value, grad = CF.cross_entropy(x, t, reduction=reduction, return_grad=True,
                                               **kw)
            # finite wherever torch is finite (and then equal to torch's)
            assert np.all(np.isfinite(value)[np.isfinite(ref_value)])
            assert np.all(np.isfinite(grad)[np.isfinite(ref_grad)])
            if magnitude == 3e38:
                # closs accumulates the smoothing term in double: finite where
                # torch's float32 sum of log-probabilities overflows (intended)
                ok = np.isfinite(ref_value)
                value, ref_value = np.where(ok, value, 0), np.where(ok, ref_value, 0)
            else:
                np.testing.assert_array_equal(np.isfinite(value), np.isfinite(ref_value))
            none = np.abs(torch_ref("cross_entropy", [x, t], "none", **kw)[0])
            scale = None if reduction == "none" else float(
                np.sum(none[np.isfinite(none)], dtype=np.float64))
            assert_close(value, ref_value, dtype, scale=scale, check_dtype=False)
            assert_close(grad, ref_grad, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("func", ["binary_cross_entropy_with_logits",
                                  "multilabel_soft_margin_loss"])
def test_sigmoid_losses_huge_logits(torch, func, dtype):
    x = np.array([[1e4, -1e4, 1e9, -1e9], [3e38, -3e38, 40.0, -40.0]], dtype)
    y = np.array([[0, 1, 0.5, 0.5], [1, 0, 0, 1]], dtype)
    for kw in ({}, {"pos_weight": np.array([2.0, 0.5, 1.0, 3.0], dtype)}):
        if kw and func != "binary_cross_entropy_with_logits":
            continue
        for reduction in REDUCTIONS:
            ref_value, ref_grad = torch_ref(func, [x, y], reduction, **kw)
            assert np.all(np.isfinite(ref_value))
            check_routes(BY_FUNC[func], [x, y], reduction, None, ref_value, ref_grad, dtype,
                         kw)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_bce_with_logits_tiny_values(torch, dtype):
    """Tiny losses of confident predictions: torch's form cancels ((1-y) x -
    log_sigmoid(x)); compared on an absolute scale (spec §6)."""
    x = np.array([-30, -20, -17, 17, 20, 30, -100, 100], dtype)
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1], dtype)
    ref_value, ref_grad = torch_ref("binary_cross_entropy_with_logits", [x, y], "none")
    v, g = CF.binary_cross_entropy_with_logits(x, y, reduction="none", return_grad=True)
    np.testing.assert_allclose(v, ref_value, rtol=0, atol=1e-15 if dtype is np.float64
                               else 1e-6)
    assert np.all(v >= 0) and np.all(v < 1e-6)
    assert_close(g, ref_grad, dtype)


# =================================================================================
# Integer target dtypes
# =================================================================================

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
              np.uint64, np.intp, np.longlong]


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(5,), (70, 5), (3, 5, 4), (2, 5, 3, 2)], ids=str)
@pytest.mark.parametrize("func", ["cross_entropy", "nll_loss"])
def test_integer_target_dtypes(func, shape, dtype):
    """Any integer dtype (torch: int64, and uint8 for 1-D/2-D input only) gives
    the int64 result, bit for bit, incl. ignore_index."""
    rng = rng_for("intdt", func, shape, np.dtype(dtype).name)
    x, t = make_inputs(func, rng, shape, np.float32)
    ignore = -100 if np.dtype(dtype).kind == "i" else 255  # uint8's largest value
    t = np.where(rng.random(t.shape) < 0.25, ignore, t)
    weight = {"weight": rng.uniform(0.5, 2, n_classes(shape))}
    # without a weight, (N, C) input with int64 targets takes closs's fast path
    for kw, reduction in itertools.product(
            [{"ignore_index": ignore}, {"ignore_index": ignore, **weight}], REDUCTIONS):
        want = getattr(CF, func)(x, t.astype(np.int64), reduction=reduction,
                                 return_grad=True, **kw)
        got = getattr(CF, func)(x, t.astype(dtype), reduction=reduction, return_grad=True,
                                **kw)
        crit = BY_FUNC[func].closs_cls(reduction=reduction, **kw)
        got2 = crit.value_and_grad(x, t.astype(dtype))
        for a in (got, got2):
            assert_identical(a[0], want[0])
            assert_identical(a[1], want[1])


@pytest.mark.parametrize("dtype", [np.int64, np.uint8])
@pytest.mark.parametrize("func", ["cross_entropy", "nll_loss"])
def test_integer_target_dtypes_torch(torch, func, dtype):
    """The two target dtypes torch takes (uint8 only below K-dim input)."""
    rng = rng_for("intdt-torch", func, np.dtype(dtype).name)
    x, t = make_inputs(func, rng, (6, 4), np.float32)
    w = rng.uniform(0.5, 2, 4).astype(np.float32)
    t[0] = 255 if dtype is np.uint8 else -100
    ignore = int(t[0])
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    out = getattr(torch.nn.functional, func)(tx, torch.from_numpy(t.astype(dtype)),
                                              weight=torch.from_numpy(w), ignore_index=ignore)
    out.backward()
    v, g = getattr(CF, func)(x, t.astype(dtype), weight=w, ignore_index=ignore,
                             return_grad=True)
    assert_close(v, out.detach().numpy(), np.float32)
    assert_close(g, tx.grad.numpy(), np.float32)


@pytest.mark.parametrize("func", ["cross_entropy", "nll_loss"])
def test_fast_path_equals_general_path(func):
    """Unweighted (N, C) input with contiguous int64 targets skips the
    conversions; any other spelling of the same call gives identical results."""
    rng = rng_for("fast", func)
    x, t = make_inputs(func, rng, (70, 5), np.float64)
    t[::7] = -100
    for reduction in REDUCTIONS:
        for go in (None, random_go(rng, reduction, (70,), np.float64)):
            want = getattr(CF, func)(x, t, reduction=reduction, return_grad=True,
                                     grad_output=go)
            for xs, ts in [(x, t.astype(np.int32)), (x, t.tolist()), (x.tolist(), t),
                           (x, np.repeat(t, 2)[::2]), (np.asfortranarray(x), t),
                           (x.astype(">f8"), t)]:
                got = getattr(CF, func)(xs, ts, reduction=reduction, return_grad=True,
                                        grad_output=go)
                assert_identical(got[0], want[0])
                assert_identical(got[1], want[1])


@pytest.mark.parametrize("dtype", [">i4", "<i2", ">i8", ">u2"])
def test_byteswapped_integer_targets(dtype):
    rng = rng_for("bswap-int", dtype)
    x, t = make_inputs("cross_entropy", rng, (6, 4, 3), np.float64)
    a = CF.cross_entropy(x, t.astype(dtype), reduction="none", return_grad=True)
    b = CF.cross_entropy(x, t, reduction="none", return_grad=True)
    assert_identical(a[0], b[0])
    assert_identical(a[1], b[1])


# =================================================================================
# Memory layouts, read-only inputs, inputs never modified
# =================================================================================


def relayout(kind, a, rng):
    """`a` as a differently laid out array of the same values (any ndim >= 1)."""
    a = np.asarray(a)
    if kind == "every-other":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        big[..., 1::2] = rng.integers(0, 2, big[..., 1::2].shape)
        return big[..., ::2]
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "reversed":
        idx = tuple(slice(None, None, -1) for _ in range(a.ndim))
        return np.ascontiguousarray(a[idx])[idx]
    if kind == "byteswapped":
        return a.astype(a.dtype.newbyteorder("S"))
    if kind == "unaligned":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        out = np.frombuffer(buf[1:].data, dtype=a.dtype).reshape(a.shape)
        out[...] = a
        return out
    if kind == "readonly":
        out = a.copy()
        out.flags.writeable = False
        return out
    raise AssertionError(kind)


LAYOUT_KINDS = ["every-other", "fortran", "reversed", "byteswapped", "unaligned", "readonly"]

# (func, input shape, target kind, kwargs maker)
LAYOUT_CASES = [
    ("cross_entropy", (6, 5, 3), "index", "weight+smooth"),
    ("cross_entropy", (6, 40), "index", "weight+ignore+smooth"),
    ("cross_entropy", (6, 5), "prob", "weight+smooth"),
    ("nll_loss", (6, 5, 3), "index", "weight+ignore"),
    ("binary_cross_entropy", (6, 5), None, "weight:full"),
    ("binary_cross_entropy_with_logits", (6, 5), None, "weight:full+pos_weight:full"),
    ("kl_div", (6, 5), None, "plain"),
    ("kl_div", (6, 5), None, "log_target"),
    ("multilabel_soft_margin_loss", (6, 5), None, "weight:full"),
]


def _layout_inputs(func, shape, tkind, opts, rng):
    if tkind is not None:
        kw = class_kwargs(opts, n_classes(shape), np.float64, rng)
        x, y = make_inputs(func, rng, shape, np.float64, prob=tkind == "prob",
                           ignore=kw.get("ignore_index"))
    else:
        kw = pointwise_kwargs(func, opts, shape, np.float64, rng)
        x, y = make_inputs(func, rng, shape, np.float64,
                           log_target=kw.get("log_target", False))
    return x, y, kw


@pytest.mark.parametrize("layout", LAYOUT_KINDS)
@pytest.mark.parametrize("case", LAYOUT_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_layouts(case, layout):
    """Any layout of input, target, weights and grad_output gives exactly the
    result of C-contiguous copies; nothing passed in is modified."""
    func, shape, tkind, opts = case
    rng = rng_for("layout", case, layout)
    x, y, kw = _layout_inputs(func, shape, tkind, opts, rng)
    out_shape = loss_shape(func, shape)
    go = rng.uniform(-2, 2, out_shape)
    args_l = [relayout(layout, x, rng), relayout(layout, y, rng)]
    kw_l = {k: relayout(layout, v, rng) if isinstance(v, np.ndarray) else v
            for k, v in kw.items()}
    go_l = relayout(layout, go, rng)
    saved = [np.array(a, copy=True) for a in args_l + [go_l] + list(kw_l.values())
             if isinstance(a, np.ndarray)]
    loss = BY_FUNC[func]
    for reduction in REDUCTIONS:
        g_l = go_l if reduction == "none" else 0.75
        g_c = go if reduction == "none" else 0.75
        with quiet():
            got = closs_routes(loss, args_l, reduction, g_l, kwargs=kw_l)
            want = closs_routes(loss, [x, y], reduction, g_c, kwargs=kw)
        for route in want:
            assert_identical(got[route][0], want[route][0], route)
            for ga, gb in zip(got[route][1] or (), want[route][1] or ()):
                assert ga.flags.c_contiguous
                assert_identical(ga, gb, route)
    after = [a for a in args_l + [go_l] + list(kw_l.values()) if isinstance(a, np.ndarray)]
    for a, s in zip(after, saved):
        assert a.dtype == s.dtype
        assert a.tobytes() == s.tobytes(), "an argument was modified"


@pytest.mark.parametrize("case", LAYOUT_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_results_do_not_alias_inputs(case):
    """Values and gradients are fresh arrays; NaN in the input changes nothing
    in the arguments."""
    func, shape, tkind, opts = case
    rng = rng_for("alias", case)
    x, y, kw = _layout_inputs(func, shape, tkind, opts, rng)
    if func != "binary_cross_entropy":
        x[0, 0] = np.nan
    go = rng.uniform(-2, 2, loss_shape(func, shape))
    args = [x, y, go] + [v for v in kw.values() if isinstance(v, np.ndarray)]
    saved = [a.copy() for a in args]
    for reduction in REDUCTIONS:
        with quiet(), np.errstate(all="ignore"):
            routes = closs_routes(BY_FUNC[func], [x, y], reduction,
                                  go if reduction == "none" else None, kwargs=kw)
        for value, grads in routes.values():
            for out in [value] + list(grads or ()):
                if isinstance(out, np.ndarray):
                    for a in args:
                        assert not np.shares_memory(out, a)
    for a, s in zip(args, saved):
        assert_identical(a, s)


def test_lists_and_scalars():
    """Inputs are anything numpy.asarray accepts."""
    x = [[0.5, -1.0, 2.0], [1.0, 0.0, 0.25]]
    assert_identical(CF.cross_entropy(x, [2, 0]), CF.cross_entropy(np.array(x), np.array([2, 0])))
    assert_identical(CF.cross_entropy(x, [[0.0, 0.5, 0.5], [1.0, 0, 0]]),
                     CF.cross_entropy(np.array(x), np.array([[0.0, 0.5, 0.5], [1.0, 0, 0]])))
    assert_identical(CF.cross_entropy(x, [2, 0], weight=[1, 2, 3]),
                     CF.cross_entropy(np.array(x), np.array([2, 0]),
                                      weight=np.array([1.0, 2.0, 3.0])))
    v, g = CF.binary_cross_entropy(0.25, 1.0, return_grad=True)
    _reduced_type(v, np.float64)
    assert v == pytest.approx(-math.log(0.25), rel=1e-15) and np.shape(g) == ()
    v = CF.binary_cross_entropy_with_logits(0.5, 1.0, pos_weight=2.0)
    assert v == pytest.approx(2 * math.log1p(math.exp(-0.5)), rel=1e-14)
    assert CF.kl_div(-1.0, 0.5, reduction="sum") == pytest.approx(0.5 * math.log(0.5) + 0.5,
                                                                  rel=1e-15)


def test_backward_repeatable_and_independent_of_result_mutation():
    rng = rng_for("rep-cls")
    x, t = make_inputs("cross_entropy", rng, (5, 4), np.float64)
    crit = closs.CrossEntropyLoss(reduction="none", weight=np.array([1.0, 2.0, 3.0, 4.0]))
    v = crit(x, t)
    g1 = crit.backward()
    v[...] = 0
    g1_copy = g1.copy()
    g1[...] = 0
    assert_identical(crit.backward(), g1_copy)
    np.testing.assert_allclose(crit.backward(np.full(5, 2.0)), 2 * g1_copy, rtol=0)


# =================================================================================
# Bit-for-bit agreement of the routes
# =================================================================================

ROUTE_CASES = [
    ("cross_entropy", (300, 7), "index", "weight+ignore+smooth"),
    ("cross_entropy", (50, 100), "index", "weight+ignore+smooth"),
    ("cross_entropy", (4, 6, 301), "index", "weight+ignore+smooth"),
    ("cross_entropy", (300, 7), "prob", "weight+smooth"),
    ("cross_entropy", (4, 6, 301), "prob", "smooth"),
    ("nll_loss", (4, 6, 301), "index", "weight+ignore"),
    ("binary_cross_entropy", (30, 301), None, "weight:last"),
    ("binary_cross_entropy_with_logits", (30, 301), None, "weight:full+pos_weight:last"),
    ("kl_div", (30, 301), None, "plain"),
    ("kl_div", (30, 301), None, "log_target"),
    ("multilabel_soft_margin_loss", (30, 301), None, "weight:last"),
]


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", ROUTE_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_routes_bit_identical(case, dtype):
    """forward+backward == value_and_grad == functional (return_grad or not),
    with and without grad_output, NaN positions included; the 'sum' gradient
    equals the 'none' gradient with grad_output = ones."""
    func, shape, tkind, opts = case
    rng = rng_for("bits", case, np.dtype(dtype).name)
    x, y, kw = _layout_inputs(func, shape, tkind, opts, rng)
    x = x.astype(dtype)
    if y.dtype.kind == "f":
        y = y.astype(dtype)
    kw = {k: v.astype(dtype) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    if func != "binary_cross_entropy":
        x.reshape(-1)[::97] = np.nan
    reductions = REDUCTIONS + (("batchmean",) if func == "kl_div" else ())
    out_shape = loss_shape(func, shape)
    for reduction in reductions:
        for go in (None, random_go(rng, reduction, out_shape, dtype)):
            with quiet(), np.errstate(all="ignore"):
                routes = closs_routes(BY_FUNC[func], [x, y], reduction, go, kwargs=kw)
            ref_value, ref_grads = routes["value_and_grad"]
            for route, (value, grads) in routes.items():
                assert_identical(value, ref_value, route)
                for g, r in zip(grads or (), ref_grads):
                    assert_identical(g, r, route)
    with quiet(), np.errstate(all="ignore"):
        _, g_sum = BY_FUNC[func].closs_func(x, y, reduction="sum", return_grad=True, **kw)
        _, g_none = BY_FUNC[func].closs_func(x, y, reduction="none", return_grad=True,
                                             grad_output=np.ones(out_shape, dtype), **kw)
    assert_identical(g_sum, g_none)


# =================================================================================
# 1 vs 2 threads: bit-identical on > 1e6 elements
# =================================================================================

THREAD_SHAPES = [(100_003, 10), (1_009, 1_000), (4, 10, 25_013)]


def _thread_outputs(func, x, y, kw, go_none):
    out = []
    with quiet(), np.errstate(all="ignore"):
        for reduction in REDUCTIONS:
            crit = BY_FUNC[func].closs_cls(reduction=reduction, **kw)
            v, g = crit.value_and_grad(x, y)
            out.append((reduction, "value_and_grad", v, g))
            v = crit(x, y)
            out.append((reduction, "forward+backward", v, crit.backward()))
            go = go_none if reduction == "none" else 0.625
            v, g = BY_FUNC[func].closs_func(x, y, reduction=reduction, return_grad=True,
                                            grad_output=go, **kw)
            out.append((reduction, "functional(grad_output)", v, g))
    return out


def _compare_threads(func, x, y, kw, go_none):
    closs.set_num_threads(1)
    one = _thread_outputs(func, x, y, kw, go_none)
    closs.set_num_threads(2)
    two = _thread_outputs(func, x, y, kw, go_none)
    for (red, route, v1, g1), (_, _, v2, g2) in zip(one, two):
        assert_identical(v1, v2, f"{red} {route} value")
        assert_identical(g1, g2, f"{red} {route} grad")


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("shape", THREAD_SHAPES, ids=str)
def test_ce_one_vs_two_threads(restore_threads, shape, kind):
    assert np.prod(shape) >= 1_000_000
    rng = rng_for("threads", shape, kind)
    x = rng.standard_normal(shape, np.float32) * 3
    x.reshape(-1)[::9973] = np.nan
    C = n_classes(shape)
    if kind == "index":
        kw = {"weight": rng.uniform(0.5, 2, C).astype(np.float32), "label_smoothing": 0.1}
        t = rng.integers(0, C, index_shape(shape)).astype(np.int32)
        t.reshape(-1)[::7] = -100
    else:
        kw = {"weight": rng.uniform(0.5, 2, C).astype(np.float32)}
        t = rng.random(shape, np.float32)
    go = rng.uniform(-2, 2, index_shape(shape)).astype(np.float32)
    _compare_threads("cross_entropy", x, t, kw, go)


def test_ce_one_vs_two_threads_float64(restore_threads):
    rng = rng_for("threads64")
    shape = (50_021, 20)
    x = rng.standard_normal(shape) * 3
    t = rng.integers(0, 20, 50_021)
    _compare_threads("cross_entropy", x, t, {"label_smoothing": 0.05},
                     rng.uniform(-2, 2, 50_021))
    _compare_threads("nll_loss", x, t, {"weight": rng.uniform(0.5, 2, 20)},
                     rng.uniform(-2, 2, 50_021))


@pytest.mark.parametrize("func, opts", [
    ("binary_cross_entropy", "weight:last"),
    ("binary_cross_entropy_with_logits", "weight:last+pos_weight:last"),
    ("kl_div", "plain"), ("kl_div", "log_target"),
    ("multilabel_soft_margin_loss", "weight:last")])
def test_pointwise_one_vs_two_threads(restore_threads, func, opts):
    rng = rng_for("threads-pw", func, opts)
    shape = (1_000_003 // 7, 7)
    x, y = make_inputs(func, rng, shape, np.float32, log_target=opts == "log_target")
    kw = pointwise_kwargs(func, opts, shape, np.float32, rng)
    go = rng.uniform(-2, 2, loss_shape(func, shape)).astype(np.float32)
    _compare_threads(func, x, y, kw, go)


# =================================================================================
# Finite differences (float64, 4th order)
# =================================================================================

H = 1e-4


def fd_gradient(phi, x, h=H):
    """d phi / d x by 4th-order central differences, element by element."""
    grad = np.zeros(x.shape)
    for idx in np.ndindex(x.shape):
        def at(t):
            z = x.copy()
            z[idx] += t
            return phi(z)
        grad[idx] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    return grad


FD_CASES = [
    ("cross_entropy", (5,), "index", "weight+smooth"),
    ("cross_entropy", (3, 4), "index", "plain"),
    ("cross_entropy", (3, 4), "index", "weight+ignore+smooth"),
    ("cross_entropy", (2, 3, 2), "index", "weight+smooth"),
    ("cross_entropy", (2, 3, 2, 2), "index", "ignore"),
    ("cross_entropy", (3, 4), "prob", "weight+smooth"),
    ("cross_entropy", (2, 3, 2), "prob", "plain"),
    ("nll_loss", (3, 4), "index", "weight+ignore"),
    ("nll_loss", (2, 3, 2), "index", "weight"),
    ("binary_cross_entropy", (3, 4), None, "weight:last"),
    ("binary_cross_entropy_with_logits", (3, 4), None, "weight:full+pos_weight:last"),
    ("kl_div", (3, 4), None, "plain"),
    ("kl_div", (3, 4), None, "log_target"),
    ("multilabel_soft_margin_loss", (3, 4), None, "weight:last"),
    ("multilabel_soft_margin_loss", (2, 2, 3), None, "plain"),
]


FD_PARAMS = [pytest.param(c, r, id=f"{c[0]}-{c[1]}-{c[2]}-{c[3]}-{r}") for c in FD_CASES
             for r in REDUCTIONS + (("batchmean",) if c[0] == "kl_div" else ())]


@pytest.mark.parametrize("case, reduction", FD_PARAMS)
def test_finite_differences(case, reduction):
    func, shape, tkind, opts = case
    rng = rng_for("fd", case, reduction)
    x, y, kw = _layout_inputs(func, shape, tkind, opts, rng)
    out_shape = loss_shape(func, shape)
    go = random_go(rng, reduction, out_shape, np.float64)
    fn = getattr(CF, func)

    def phi(z):
        with quiet():
            v = fn(z, y, reduction=reduction, **kw)
        return float(np.sum(np.asarray(go) * v)) if reduction == "none" else float(go * v)

    with quiet():
        _, g = fn(x, y, reduction=reduction, return_grad=True, grad_output=go, **kw)
    numeric = fd_gradient(phi, x)
    assert g.shape == numeric.shape
    scale = max(1.0, float(np.max(np.abs(numeric))))
    np.testing.assert_allclose(g, numeric, rtol=1e-7, atol=1e-9 * scale)


# =================================================================================
# Properties (hypothesis) against an independent NumPy float64 implementation
# =================================================================================


def ce_reference(x, target, weight=None, ignore_index=-100, eps=0.0):
    """Spec §3.2 / §3.3 in float64: ('none' values, 'sum' gradient, 'mean'
    denominator, magnitude of the value terms)."""
    x = np.asarray(x, np.float64)
    cdim = 0 if x.ndim == 1 else 1
    xm = np.moveaxis(x, cdim, -1)  # (..., C)
    C = xm.shape[-1]
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    m = np.max(xm, axis=-1, keepdims=True) if C else np.zeros(xm.shape[:-1] + (1,))
    lse = m + np.log(np.sum(np.exp(xm - m), axis=-1, keepdims=True))
    lp = xm - lse
    p = np.exp(lp)
    target = np.asarray(target)
    if target.dtype.kind == "f":  # probabilities
        y = np.moveaxis(target.astype(np.float64), cdim, -1)
        if eps > 0:
            y = (1 - eps) * y + eps / C
        loss = -np.sum(w * y * lp, axis=-1)
        grad = p * np.sum(w * y, axis=-1, keepdims=True) - w * y
        mag = np.sum(np.abs(w * y) * (np.abs(lp) + np.abs(xm) + 1), axis=-1)
        denom = loss.size
    else:
        t = target.astype(np.int64)
        keep = t != ignore_index
        tc = np.where(keep, t, 0)
        onehot = np.eye(C)[tc] if C else np.zeros(t.shape + (0,))
        w_t = np.where(keep, w[tc] if C else 0.0, 0.0)
        lp_t = np.sum(onehot * lp, axis=-1)
        smooth = np.sum(w * -lp, axis=-1)
        loss = (1 - eps) * w_t * -lp_t + (eps / C) * keep * smooth
        grad = (1 - eps) * w_t[..., None] * (p - onehot) \
            + (eps / C) * keep[..., None] * (w.sum() * p - w)
        mag = (1 - eps) * np.abs(w_t) * (np.abs(lp_t) + 1) + (eps / C) * keep * np.sum(
            np.abs(w) * (np.abs(lp) + 1), axis=-1)
        mag = mag + np.max(np.abs(xm), axis=-1, initial=0) * (np.abs(w_t) + np.abs(w).sum())
        denom = float(np.sum(w_t))
    grad = np.moveaxis(grad, -1, cdim)
    return loss, grad, denom, mag


@st.composite
def ce_problems(draw, prob=None, weighted=None):
    C = draw(st.integers(1, 6))
    ndim = draw(st.integers(1, 4))
    shape = [draw(st.integers(0, 4))] if ndim > 1 else []
    shape = shape[:1] + [C] + [draw(st.integers(1, 3)) for _ in range(max(ndim - 2, 0))]
    if ndim == 1:
        shape = [C]
    shape = tuple(shape)
    elements = st.floats(-30, 30, allow_nan=False, width=64)
    x = np.array(draw(st.lists(elements, min_size=int(np.prod(shape)),
                               max_size=int(np.prod(shape)))), np.float64).reshape(shape)
    prob = draw(st.booleans()) if prob is None else prob
    weighted = draw(st.booleans()) if weighted is None else weighted
    kw = {}
    if weighted:  # no subnormal weights: a 'mean' over weights summing to < 1e-308
        # overflows closs's 1/D (torch divides the product g * w_t by D instead)
        kw["weight"] = np.array(draw(st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 4.0)),
                                              min_size=C, max_size=C)))
    if draw(st.booleans()):
        kw["label_smoothing"] = draw(st.floats(0.0, 1.0))
    if prob:
        y = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=x.size, max_size=x.size)),
                     np.float64).reshape(shape)
    else:
        tshape = index_shape(shape)
        size = int(np.prod(tshape))
        ignore = draw(st.sampled_from([-100, 0, C - 1, -1]))
        kw["ignore_index"] = ignore
        choices = list(range(C)) + [ignore]
        y = np.array(draw(st.lists(st.sampled_from(choices), min_size=size, max_size=size)),
                     np.int64).reshape(tshape)
    return x, y, kw


@given(problem=ce_problems())
def test_ce_matches_numpy_reference(problem):
    x, y, kw = problem
    loss, grad, denom, mag = ce_reference(x, y, kw.get("weight"), kw.get("ignore_index", -100),
                                          kw.get("label_smoothing", 0.0))
    v, g = CF.cross_entropy(x, y, reduction="none", return_grad=True, **kw)
    assert v.shape == loss.shape
    assert np.all(np.abs(v - loss) <= 1e-12 * mag + 1e-300)
    gscale = 1.0 + np.sum(kw.get("weight", np.ones(n_classes(x.shape))))
    np.testing.assert_allclose(g, grad, rtol=0, atol=1e-13 * gscale)
    total, g_sum = CF.cross_entropy(x, y, reduction="sum", return_grad=True, **kw)
    assert abs(float(total) - math.fsum(loss.ravel().tolist())) <= 1e-12 * float(
        np.sum(mag)) + 1e-300
    np.testing.assert_allclose(g_sum, grad, rtol=0, atol=1e-13 * gscale)
    mean, g_mean = CF.cross_entropy(x, y, return_grad=True, **kw)
    if denom == 0:
        assert np.isnan(mean) or not np.all(np.isfinite(mean))
    else:
        assert float(mean) == pytest.approx(float(total) / denom, rel=1e-14, abs=1e-300)
        np.testing.assert_allclose(g_mean, grad / denom, rtol=0,
                                   atol=1e-13 * gscale / abs(denom))


@given(problem=ce_problems(prob=False))
def test_ce_index_equals_one_hot_probabilities(problem):
    """Index target t with smoothing e and weights == probability target
    onehot(t) with the same smoothing ('none' and 'sum'; ignored rows excluded)."""
    x, t, kw = problem
    keep = t != kw["ignore_index"]
    C = n_classes(x.shape)
    onehot = np.moveaxis(np.eye(C)[np.where(keep, t, 0)], -1, 0 if x.ndim == 1 else 1)
    pkw = {k: v for k, v in kw.items() if k != "ignore_index"}
    a, ga = CF.cross_entropy(x, t, reduction="none", return_grad=True, **kw)
    b, gb = CF.cross_entropy(x, onehot, reduction="none", return_grad=True, **pkw)
    np.testing.assert_allclose(a[keep], b[keep], rtol=1e-12, atol=1e-12)
    ga_k = np.moveaxis(ga, 0 if x.ndim == 1 else 1, -1)[keep]
    gb_k = np.moveaxis(gb, 0 if x.ndim == 1 else 1, -1)[keep]
    np.testing.assert_allclose(ga_k, gb_k, rtol=0, atol=1e-13 * (1 + C * 4))


@given(problem=ce_problems(prob=False))
def test_ce_is_nll_of_log_softmax(problem):
    x, t, kw = problem
    kw.pop("label_smoothing", None)
    cdim = 0 if x.ndim == 1 else 1
    m = np.max(x, axis=cdim, keepdims=True)
    lp = x - m - np.log(np.sum(np.exp(x - m), axis=cdim, keepdims=True))
    for reduction in REDUCTIONS:
        a = CF.cross_entropy(x, t, reduction=reduction, **kw)
        b = CF.nll_loss(lp, t, reduction=reduction, **kw)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@given(problem=ce_problems())
def test_ce_gradient_rows_sum_to_zero(problem):
    """Each position's gradient sums to 0 over the classes (both target kinds,
    any weights and smoothing): softmax's invariance to a constant shift."""
    x, y, kw = problem
    _, g = CF.cross_entropy(x, y, reduction="sum", return_grad=True, **kw)
    total = np.sum(g, axis=0 if x.ndim == 1 else 1)
    bound = 1e-13 * (1 + np.sum(kw.get("weight", np.ones(n_classes(x.shape)))))
    y_mag = 1.0 if y.dtype.kind != "f" else 1 + np.max(np.sum(
        np.abs(y), axis=0 if x.ndim == 1 else 1), initial=0)
    assert np.all(np.abs(total) <= bound * y_mag * n_classes(x.shape))


@given(problem=ce_problems())
def test_ce_kdim_equals_flattened(problem):
    """(N, C, d1, ..., dK) == the (N*d1*...*dK, C) computation (spec §3.1)."""
    x, y, kw = problem
    if x.ndim < 3:
        return
    C = x.shape[1]
    xf = np.moveaxis(x, 1, -1).reshape(-1, C)
    yf = np.moveaxis(y, 1, -1).reshape(-1, C) if y.dtype.kind == "f" else y.reshape(-1)
    for reduction in REDUCTIONS:
        a, ga = CF.cross_entropy(x, y, reduction=reduction, return_grad=True, **kw)
        b, gb = CF.cross_entropy(xf, yf, reduction=reduction, return_grad=True, **kw)
        np.testing.assert_allclose(np.reshape(a, -1), np.reshape(b, -1), rtol=1e-13,
                                   atol=1e-13)
        gb = np.moveaxis(gb.reshape((x.shape[0],) + x.shape[2:] + (C,)), -1, 1)
        np.testing.assert_allclose(ga, gb, rtol=0, atol=1e-13 * (1 + 4 * C))


@given(problem=ce_problems())
def test_ce_float32_agrees_with_float64(problem):
    x, y, kw = problem
    x32 = x.astype(np.float32)
    y32 = y.astype(np.float32) if y.dtype.kind == "f" else y
    kw32 = {k: v.astype(np.float32) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    loss, grad, _, mag = ce_reference(x32, y32, kw32.get("weight"),
                                      kw.get("ignore_index", -100),
                                      kw.get("label_smoothing", 0.0))
    v, g = CF.cross_entropy(x32, y32, reduction="none", return_grad=True, **kw32)
    assert v.dtype == np.float32 and g.dtype == np.float32
    assert np.all(np.abs(v - loss) <= 2e-6 * mag + 1e-30)
    gscale = 1.0 + np.sum(kw.get("weight", np.ones(n_classes(x.shape))))
    np.testing.assert_allclose(g, grad, rtol=0, atol=2e-6 * gscale)


@given(problem=ce_problems(prob=False),
       shift=st.integers(-2 ** 20, 2 ** 20).map(lambda k: k / 16))
def test_ce_shift_invariance_property(problem, shift):
    """Dyadic logits (multiples of 1/16) shifted by a dyadic constant: exactly
    representable in float64, so values and gradients are bit-identical."""
    x, y, kw = problem
    x = np.round(x * 16) / 16
    a = CF.cross_entropy(x, y, reduction="none", return_grad=True, **kw)
    b = CF.cross_entropy(x + shift, y, reduction="none", return_grad=True, **kw)
    assert_identical(a[0], b[0])
    assert_identical(a[1], b[1])


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))


@st.composite
def binary_problems(draw, max_dims=3):
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=max_dims)))
    n = int(np.prod(shape))
    x = np.array(draw(st.lists(st.floats(-50, 50, width=64), min_size=n, max_size=n)),
                 np.float64).reshape(shape)
    y = np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)),
                 np.float64).reshape(shape)
    last = shape[-1:] if shape else ()
    w = np.array(draw(st.lists(st.floats(0, 3), min_size=int(np.prod(last)),
                               max_size=int(np.prod(last))))).reshape(last)
    pw = np.array(draw(st.lists(st.floats(0, 3), min_size=int(np.prod(last)),
                                max_size=int(np.prod(last))))).reshape(last)
    return x, y, w, pw


@given(problem=binary_problems())
def test_bce_with_logits_matches_reference(problem):
    x, y, w, pw = problem
    lw = 1 + (pw - 1) * y
    sp = np.logaddexp(0, -x)  # -log_sigmoid(x)
    loss = w * ((1 - y) * x + lw * sp)
    mag = w * (np.abs((1 - y) * x) + lw * sp) + 1e-300
    grad = w * (lw * _sigmoid(x) - pw * y)
    v, g = CF.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw,
                                               reduction="none", return_grad=True)
    assert np.all(np.abs(v - loss) <= 1e-13 * mag + 1e-300)
    np.testing.assert_allclose(g, grad, rtol=0, atol=1e-14 * (1 + 4 * np.max(w, initial=0)))
    assert np.all(v >= -1e-13 * mag)  # non-negative up to torch-form cancellation


@given(problem=binary_problems())
def test_bce_matches_reference(problem):
    x, y, w, _ = problem
    p = np.clip(_sigmoid(x / 10), 0, 1)  # probabilities, incl. exact 0 and 1
    with np.errstate(divide="ignore"):
        loss = -w * (y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p),
                                                                             -100))
    eps = float(np.float32(1e-12))
    grad = w * (p - y) / np.maximum(p * (1 - p), eps)
    v, g = CF.binary_cross_entropy(p, y, weight=w, reduction="none", return_grad=True)
    np.testing.assert_allclose(v, loss, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(g, grad, rtol=1e-13, atol=1e-300)
    assert np.all(v >= 0)


@given(problem=binary_problems(max_dims=3).filter(lambda p: p[0].ndim >= 1))
def test_multilabel_soft_margin_is_mean_of_bce_with_logits(problem):
    """MLSM row = mean over the classes of the BCEWithLogits elements (same weights)."""
    x, y, w, _ = problem
    for reduction in REDUCTIONS:
        a, ga = CF.multilabel_soft_margin_loss(x, y, weight=w, reduction=reduction,
                                               return_grad=True)
        e, ge = CF.binary_cross_entropy_with_logits(x, y, weight=w, reduction="none",
                                                    return_grad=True)
        C = x.shape[-1]
        rows = e.sum(axis=-1) / C if C else np.full(x.shape[:-1], np.nan)
        # BCEWithLogits's torch form (1 - y) x - log_sigmoid(x) cancels on the scale of |x|
        mag = (np.abs(e) + np.abs(x) + 1).sum(axis=-1) / max(C, 1)
        if reduction == "none":
            assert np.all(np.abs(a - rows) <= 1e-13 * mag + 1e-300) or C == 0
            continue
        if not rows.size or C == 0:
            continue
        want = rows.sum() if reduction == "sum" else rows.mean()
        scale = mag.sum() if reduction == "sum" else mag.mean()
        assert abs(float(a) - want) <= 1e-13 * scale + 1e-300
        n_rows = rows.size if reduction == "mean" else 1
        np.testing.assert_allclose(ga, ge / C / n_rows, rtol=1e-13,
                                   atol=1e-15 * (1 + np.max(w, initial=0)))


@given(problem=binary_problems())
def test_kl_log_target_equivalence(problem):
    """kl_div(x, y) == kl_div(x, log y, log_target=True) for y > 0."""
    x, y, _, _ = problem
    x = -np.abs(x) / 10
    y = np.clip(y, 1e-6, 1)
    for reduction in ("none", "sum", "batchmean"):
        a, ga = CF.kl_div(x, y, reduction=reduction, return_grad=True)
        b, gb = CF.kl_div(x, np.log(y), reduction=reduction, log_target=True,
                          return_grad=True)
        mag = np.abs(y * np.log(y)) + np.abs(y * x) + 1e-300
        if reduction == "none":
            assert np.all(np.abs(a - b) <= 1e-14 * mag + 1e-300)
        np.testing.assert_allclose(ga, gb, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("func", ["binary_cross_entropy", "binary_cross_entropy_with_logits",
                                  "kl_div", "multilabel_soft_margin_loss"])
@given(problem=binary_problems(), c=st.floats(-4, 4, allow_nan=False).filter(bool))
def test_pointwise_reductions_and_linearity(func, problem, c):
    """'sum' == accurately summed 'none'; 'mean' == 'sum' / n; gradients are
    linear in grad_output and 'sum' is 'none' with ones."""
    x, y, w, _ = problem
    if func == "multilabel_soft_margin_loss" and (x.ndim == 0 or x.shape[-1] == 0):
        return  # no class dim / C = 0 (rows of 0/0 = nan, see test_empty)
    if func == "binary_cross_entropy":
        x = _sigmoid(x / 10)
    fn = getattr(CF, func)
    with quiet():
        none, g_none = fn(x, y, reduction="none", return_grad=True)
        total, g_sum = fn(x, y, reduction="sum", return_grad=True)
        mean, g_mean = fn(x, y, reduction="mean", return_grad=True)
        _, g_c = fn(x, y, reduction="sum", return_grad=True, grad_output=c)
        _, g_go = fn(x, y, reduction="none", return_grad=True,
                     grad_output=np.full(np.shape(none), c))
    assert_identical(g_sum, g_none)
    assert_identical(g_c, g_go)
    np.testing.assert_allclose(g_c, c * g_sum, rtol=4e-15, atol=1e-300)
    n = np.size(none)
    if n == 0:
        assert total == 0 and np.isnan(mean)
        return
    mag = math.fsum(np.abs(none).ravel().tolist())
    assert abs(float(total) - math.fsum(none.ravel().tolist())) <= 1e-13 * mag + 1e-300
    assert float(mean) == pytest.approx(float(total) / n, rel=1e-15, abs=1e-300)
    np.testing.assert_allclose(g_mean, g_sum / (np.size(x) if func != "multilabel_soft_margin_loss"
                                                else n), rtol=4e-15, atol=1e-300)


# =================================================================================
# Bad input (API.md "Bad input", spec §3.5, §5, §6, §16)
# =================================================================================

X43 = np.zeros((4, 3))
T4 = np.array([0, 1, 2, 1])
P23 = np.full((2, 3), 0.5)

BAD = [
    # (id, callable, exception, regex naming the argument (and the given value))
    ("ce-target-too-large", lambda: CF.cross_entropy(X43, np.array([0, 1, 3, 1])),
     IndexError, r"target.*\b3\b"),
    ("ce-target-negative", lambda: CF.cross_entropy(X43, np.array([0, -1, 2, 1])),
     IndexError, r"target.*-1"),
    ("ce-target-kdim", lambda: CF.cross_entropy(np.zeros((2, 3, 4)), np.full((2, 4), 7)),
     IndexError, r"target.*\b7\b"),
    ("ce-target-unbatched", lambda: CF.cross_entropy(np.zeros(3), np.array(3)),
     IndexError, r"target.*\b3\b"),
    ("ce-target-uint64-huge",
     lambda: CF.cross_entropy(X43, np.array([0, 1, 2, 2 ** 64 - 100], np.uint64)),
     IndexError, r"target"),
    ("ce-target-negative-ignore-other",
     lambda: CF.cross_entropy(X43, np.array([0, -100, 2, 1]), ignore_index=-1),
     IndexError, r"target.*-100"),
    ("nll-target-too-large", lambda: CF.nll_loss(X43, np.array([0, 1, 3, 1])),
     IndexError, r"target.*\b3\b"),
    ("ce-C0", lambda: CF.cross_entropy(np.zeros((2, 0)), np.array([0, 0])),
     IndexError, r"target"),
    ("ce-batch-mismatch", lambda: CF.cross_entropy(X43, np.array([0, 1, 2])),
     ValueError, r"target.*batch.*\(3,\)"),
    ("nll-batch-mismatch", lambda: CF.nll_loss(X43, np.array([0, 1, 2, 1, 0])),
     ValueError, r"target.*batch"),
    ("ce-0d-target-batched", lambda: CF.cross_entropy(X43, np.array(1)),
     ValueError, r"target.*batch"),
    ("ce-kdim-target-shape", lambda: CF.cross_entropy(np.zeros((2, 3, 4)),
                                                      np.zeros((2, 5), int)),
     ValueError, r"target.*\(2, 4\).*\(2, 5\)"),
    ("ce-kdim2-target-shape", lambda: CF.cross_entropy(np.zeros((2, 3, 4, 5)),
                                                       np.zeros((2, 4, 4), int)),
     ValueError, r"target.*\(2, 4, 4\)"),
    ("ce-kdim-target-ndim", lambda: CF.cross_entropy(np.zeros((2, 3, 4)), np.zeros(2, int)),
     ValueError, r"target"),
    ("ce-N1-target", lambda: CF.cross_entropy(X43, np.zeros((4, 1), int)),
     ValueError, r"target.*\(4, 1\)"),
    ("nll-N1-target", lambda: CF.nll_loss(X43, np.zeros((4, 1), int)),
     ValueError, r"target.*\(4, 1\)"),
    ("ce-1d-input-target-2", lambda: CF.cross_entropy(np.zeros(3), np.array([0, 1])),
     ValueError, r"target.*\(2,\)"),
    ("ce-float-index-target", lambda: CF.cross_entropy(X43, np.array([0.0, 1, 2, 1])),
     TypeError, r"target.*float64"),
    ("ce-bool-target", lambda: CF.cross_entropy(X43, np.array([0, 1, 1, 0], bool)),
     TypeError, r"target.*bool"),
    ("nll-float-target", lambda: CF.nll_loss(X43, np.array([0.0, 1, 2, 1])),
     TypeError, r"target.*float64"),
    ("nll-probability-target", lambda: CF.nll_loss(X43, np.zeros((4, 3))),
     TypeError, r"target"),
    ("ce-weight-length", lambda: CF.cross_entropy(X43, T4, weight=np.ones(2)),
     ValueError, r"weight.*\(3,\).*\(2,\)"),
    ("ce-weight-2d", lambda: CF.cross_entropy(X43, T4, weight=np.ones((1, 3))),
     ValueError, r"weight.*\(1, 3\)"),
    ("nll-weight-length", lambda: CF.nll_loss(X43, T4, weight=np.ones(4)),
     ValueError, r"weight.*\(4,\)"),
    ("ce-weight-strings", lambda: CF.cross_entropy(X43, T4, weight=np.array(["a", "b", "c"])),
     TypeError, r"weight"),
    ("ce-label-smoothing", lambda: CF.cross_entropy(X43, T4, label_smoothing=1.5),
     ValueError, r"label_smoothing.*1\.5"),
    ("ce-label-smoothing-class",
     lambda: closs.CrossEntropyLoss(label_smoothing=1.5)(X43, T4),
     ValueError, r"label_smoothing.*1\.5"),
    ("ce-label-smoothing-type", lambda: CF.cross_entropy(X43, T4, label_smoothing="0.1"),
     TypeError, r"label_smoothing"),
    ("ce-ignore-index-probabilities",
     lambda: CF.cross_entropy(X43, np.zeros((4, 3)), ignore_index=0),
     ValueError, r"ignore_index.*\b0\b"),
    ("ce-ignore-index-type", lambda: CF.cross_entropy(X43, T4, ignore_index=1.5),
     TypeError, r"ignore_index.*1\.5"),
    ("ce-ignore-index-int64-range", lambda: CF.cross_entropy(X43, T4, ignore_index=2 ** 64 - 1),
     ValueError, r"ignore_index.*18446744073709551615"),
    ("ce-integer-probabilities", lambda: CF.cross_entropy(X43, np.zeros((4, 3), int)),
     TypeError, r"target.*int"),
    ("ce-integer-input", lambda: CF.cross_entropy(np.zeros((4, 3), int), T4),
     TypeError, r"input.*int64"),
    ("nll-integer-input", lambda: CF.nll_loss(np.zeros((4, 3), np.int32), T4),
     TypeError, r"input.*int32"),
    ("ce-0d-input", lambda: CF.cross_entropy(np.array(1.0), np.array(0)),
     ValueError, r"input.*0-d"),
    ("nll-0d-input", lambda: CF.nll_loss(np.array(1.0), np.array(0)),
     ValueError, r"input.*0-d"),
    ("mlsm-0d-input", lambda: CF.multilabel_soft_margin_loss(np.array(1.0), np.array(1.0)),
     ValueError, r"input.*0-d"),
    ("mlsm-0d-input-class",
     lambda: closs.MultiLabelSoftMarginLoss()(np.array(1.0), np.array(1.0)),
     ValueError, r"input.*0-d"),
    ("bce-input-above-1", lambda: CF.binary_cross_entropy(np.array([0.5, 1.5]),
                                                          np.array([0.0, 1.0])),
     ValueError, r"input.*1\.5"),
    ("bce-input-below-0", lambda: CF.binary_cross_entropy(np.array([0.5, -0.25]),
                                                          np.array([0.0, 1.0])),
     ValueError, r"input.*-0\.25"),
    ("bce-input-nan", lambda: CF.binary_cross_entropy(np.array([0.5, np.nan]),
                                                      np.array([0.0, 1.0])),
     ValueError, r"input.*nan"),
    ("bce-target-above-1", lambda: CF.binary_cross_entropy(np.array([0.5, 0.5]),
                                                           np.array([0.0, 2.0])),
     ValueError, r"target.*2\.0"),
    ("bce-target-nan", lambda: CF.binary_cross_entropy(np.array([0.5, 0.5]),
                                                       np.array([np.nan, 1.0])),
     ValueError, r"target.*nan"),
    ("bce-target-inf", lambda: closs.BCELoss()(np.array([0.5, 0.5]), np.array([-np.inf, 1.0])),
     ValueError, r"target.*inf"),
    ("bce-target-shape", lambda: CF.binary_cross_entropy(np.full((2, 2), .5), np.full(2, .5)),
     ValueError, r"target.*\(2, 2\).*\(2,\)"),
    ("bce-target-shape-class", lambda: closs.BCELoss()(np.full(2, .5), np.full((1, 2), .5)),
     ValueError, r"target.*\(1, 2\)"),
    ("bce-weight-larger", lambda: CF.binary_cross_entropy(P23, P23, weight=np.ones((2, 2, 3))),
     ValueError, r"weight.*\(2, 2, 3\)"),
    ("bce-weight-incompatible", lambda: CF.binary_cross_entropy(P23, P23, weight=np.ones(2)),
     ValueError, r"weight.*\(2,\)"),
    ("bce-integer-input", lambda: CF.binary_cross_entropy(np.zeros(2, int), np.zeros(2)),
     TypeError, r"input.*int64"),
    ("bcel-target-shape", lambda: CF.binary_cross_entropy_with_logits(P23, np.zeros(3)),
     ValueError, r"target.*\(2, 3\).*\(3,\)"),
    ("bcel-target-shape-class", lambda: closs.BCEWithLogitsLoss()(P23, np.zeros((1, 2, 3))),
     ValueError, r"target.*\(1, 2, 3\)"),
    ("bcel-weight-larger",
     lambda: CF.binary_cross_entropy_with_logits(P23, P23, weight=np.ones((4, 2, 3))),
     ValueError, r"weight.*\(4, 2, 3\)"),
    ("bcel-pos-weight-length",
     lambda: CF.binary_cross_entropy_with_logits(P23, P23, pos_weight=np.ones(2)),
     ValueError, r"pos_weight.*\(2,\)"),
    ("bcel-pos-weight-larger",
     lambda: closs.BCEWithLogitsLoss(pos_weight=np.ones((2, 2, 3)))(P23, P23),
     ValueError, r"pos_weight.*\(2, 2, 3\)"),
    ("kl-target-incompatible", lambda: CF.kl_div(P23, np.zeros(4), reduction="sum"),
     ValueError, r"target.*\(4,\)"),
    ("kl-log-target-type", lambda: closs.KLDivLoss(log_target="yes"),
     TypeError, r"log_target"),
    ("kl-bad-reduction", lambda: CF.kl_div(P23, P23, reduction="batch_mean"),
     ValueError, r"reduction.*batch_mean"),
    ("ce-batchmean", lambda: CF.cross_entropy(X43, T4, reduction="batchmean"),
     ValueError, r"reduction.*batchmean"),
    ("bce-batchmean", lambda: closs.BCELoss(reduction="batchmean"),
     ValueError, r"reduction.*batchmean"),
    ("mlsm-elementwise-mean",
     lambda: CF.multilabel_soft_margin_loss(P23, P23, reduction="elementwise_mean"),
     ValueError, r"reduction.*elementwise_mean"),
    ("mlsm-weight-length",
     lambda: CF.multilabel_soft_margin_loss(P23, P23, weight=np.ones(2)),
     ValueError, r"weight.*\(2,\)"),
    ("mlsm-target-larger", lambda: CF.multilabel_soft_margin_loss(P23, np.zeros((2, 2, 3))),
     ValueError, r"target.*\(2, 2, 3\)"),
    ("ce-grad-output-shape",
     lambda: CF.cross_entropy(X43, T4, reduction="none", return_grad=True,
                              grad_output=np.ones(3)),
     ValueError, r"grad_output.*\(4,\).*\(3,\)"),
    ("ce-grad-output-array-for-mean",
     lambda: CF.cross_entropy(X43, T4, return_grad=True, grad_output=np.ones(4)),
     ValueError, r"grad_output"),
    ("mlsm-grad-output-shape",
     lambda: CF.multilabel_soft_margin_loss(P23, P23, reduction="none", return_grad=True,
                                            grad_output=np.ones(3)),
     ValueError, r"grad_output.*\(2,\)"),
]


@pytest.mark.parametrize("make, exc, pattern", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(make, exc, pattern):
    with quiet(), pytest.raises(exc, match=pattern):
        make()


@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_backward_before_forward(case):
    with pytest.raises(RuntimeError, match="backward"):
        case.closs_cls().backward()


def test_failed_forward_keeps_previous_state():
    """A forward that raises does not leave a half-built state behind."""
    crit = closs.CrossEntropyLoss()
    x, t = make_inputs("cross_entropy", rng_for("state"), (4, 3), np.float64)
    v, g = crit.value_and_grad(x, t)
    with pytest.raises(IndexError):
        crit(x, np.array([0, 1, 5, 1]))
    assert crit.backward() is not None


def test_mlsm_zero_dim_error_is_also_torch_index_error():
    """torch raises IndexError for a 0-d MultiLabelSoftMargin input; closs's error
    is a ValueError (API.md: a wrong shape) that is also an IndexError."""
    with pytest.raises(IndexError):
        CF.multilabel_soft_margin_loss(np.array(1.0), np.array(1.0))


# =================================================================================
# Names and signatures (torch 2.13's, spec §3-§7, §16)
# =================================================================================

CLASS_SIGNATURES = {
    "CrossEntropyLoss": [("weight", None), ("size_average", None), ("ignore_index", -100),
                         ("reduce", None), ("reduction", "mean"), ("label_smoothing", 0.0)],
    "NLLLoss": [("weight", None), ("size_average", None), ("ignore_index", -100),
                ("reduce", None), ("reduction", "mean")],
    "BCELoss": [("weight", None), ("size_average", None), ("reduce", None),
                ("reduction", "mean")],
    "BCEWithLogitsLoss": [("weight", None), ("size_average", None), ("reduce", None),
                          ("reduction", "mean"), ("pos_weight", None)],
    "KLDivLoss": [("size_average", None), ("reduce", None), ("reduction", "mean"),
                  ("log_target", False)],
    "MultiLabelSoftMarginLoss": [("weight", None), ("size_average", None), ("reduce", None),
                                 ("reduction", "mean")],
}


@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_signatures(case):
    assert case.cls in closs.__all__ and case.func in CF.__all__
    params = list(inspect.signature(case.closs_cls.__init__).parameters.values())[1:]
    assert [(p.name, p.default) for p in params] == CLASS_SIGNATURES[case.cls]
    params = list(inspect.signature(case.closs_func).parameters.values())
    positional = [(p.name, p.default) for p in params if p.kind != p.KEYWORD_ONLY]
    assert positional[:2] == [("input", inspect.Parameter.empty),
                              ("target", inspect.Parameter.empty)]
    assert positional[2:] == CLASS_SIGNATURES[case.cls]
    keyword = [(p.name, p.default) for p in params if p.kind == p.KEYWORD_ONLY]
    assert keyword == [("return_grad", False), ("grad_output", None), ("grad_out", None)]


@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_signatures_match_torch(torch, case):
    ours = list(inspect.signature(case.closs_cls.__init__).parameters.values())[1:]
    theirs = list(inspect.signature(getattr(torch.nn, case.cls).__init__).parameters.values())
    assert [(p.name, p.default) for p in ours] == [(p.name, p.default) for p in theirs[1:]]
    ours = [p for p in inspect.signature(case.closs_func).parameters.values()
            if p.kind != p.KEYWORD_ONLY]
    theirs = list(inspect.signature(getattr(torch.nn.functional, case.func)).parameters
                  .values())
    assert [(p.name, p.default) for p in ours] == [(p.name, p.default) for p in theirs]


# The sweep checks BCE's [0, 1] ranges (and GaussianNLL's var >= 0) block by
# block; a failure is then located by a pass of its own, so the error names
# the first bad entry wherever it is, on any thread count, and with grad_out
# nothing reaches the caller's buffer.
RANGE_N = 3 * 4096 * 16 + 77  # several chunks of the sweep, a partial last block


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("where", [0, 70000, RANGE_N - 1])
@pytest.mark.parametrize("operand", ["input", "target", "both"])
def test_bce_range_error_names_the_first_bad_entry(threads, where, operand):
    rng = rng_for("bce-range", where, operand)
    x, y = rng.uniform(0, 1, RANGE_N), rng.uniform(0, 1, RANGE_N)
    if operand in ("input", "both"):
        x[where] = 1.5
        x[-1] = -2.0  # a later bad entry: not the one named
    if operand in ("target", "both"):
        y[where] = np.nan
    named, value = ("input", "1.5") if operand != "target" else ("target", "nan")
    if where == RANGE_N - 1 and operand != "target":
        value = "-2.0"
    saved = closs.get_num_threads()
    closs.set_num_threads(threads)
    try:
        calls = [lambda: CF.binary_cross_entropy(x, y),
                 lambda: CF.binary_cross_entropy(x, y, reduction="none"),
                 lambda: CF.binary_cross_entropy(x, y, return_grad=True),
                 lambda: CF.binary_cross_entropy(x.astype(np.float32), y.astype(np.float32)),
                 lambda: closs.BCELoss(weight=np.ones(RANGE_N))(x, y),
                 lambda: closs.BCELoss().value_and_grad(x, y)]
        for call in calls:
            with pytest.raises(ValueError, match=rf"^{named}: expected all elements between 0 "
                                                 rf"and 1, got {value}$"):
                call()
        out = np.full(RANGE_N, 7.0)
        with pytest.raises(ValueError, match=named):
            CF.binary_cross_entropy(x, y, return_grad=True, grad_out=out)
        assert np.all(out == 7.0)  # checked before the sweep wrote anything
    finally:
        closs.set_num_threads(saved)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_range_check_accepts_the_edges_and_signed_zeros(dtype):
    """The sweep's quick test of a block is integer min / max on the bits, where -0
    looks negative: a block holding -0, +0, 1 and the least subnormal passes
    (through the exact count), and its values are the ones of +0."""
    rng = rng_for("bce-range-edges", np.dtype(dtype).name)
    x, y = rng.uniform(0, 1, RANGE_N).astype(dtype), rng.uniform(0, 1, RANGE_N).astype(dtype)
    tiny = np.finfo(dtype).smallest_subnormal
    for i, v in enumerate([-0.0, 0.0, 1.0, tiny]):
        x[1000 * i + 3], y[1000 * i + 600] = v, v
    x[RANGE_N - 1], y[0] = -0.0, -0.0
    plus_x, plus_y = x + dtype(0), y + dtype(0)  # -0 + 0 = +0
    assert np.signbit(x).sum() == 2 and not np.signbit(plus_x).any()
    for reduction in ("sum", "none"):
        got = CF.binary_cross_entropy(x, y, reduction=reduction, return_grad=True)
        want = CF.binary_cross_entropy(plus_x, plus_y, reduction=reduction, return_grad=True)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_backward_after_a_range_checked_forward():
    """A module's backward reuses the operands its forward's sweep checked."""
    rng = rng_for("bce-range-once")
    x, y = rng.uniform(0, 1, (50, 7)), rng.uniform(0, 1, (50, 7))
    for loss in (closs.BCELoss(), closs.GaussianNLLLoss()):
        args = (x, y) if isinstance(loss, closs.BCELoss) else (x, y, y + 0.5)
        value = loss(*args)
        grad = loss.backward()
        v2, g2 = loss.value_and_grad(*args)
        assert_identical(value, v2)
        assert_identical(grad, g2)


@pytest.mark.parametrize("threads", [1, 2])
def test_var_range_error_wherever_the_negative_entry_is(threads):
    rng = rng_for("var-range", threads)
    x = rng.normal(0, 1, RANGE_N)
    saved = closs.get_num_threads()
    closs.set_num_threads(threads)
    try:
        for where in (0, 70000, RANGE_N - 1):
            var = rng.uniform(0.5, 2, RANGE_N)
            var[where] = -0.25
            for call in (lambda: CF.gaussian_nll_loss(x, x, var),
                         lambda: CF.gaussian_nll_loss(x, x, var, return_grad=True),
                         lambda: closs.GaussianNLLLoss(reduction="none")(x, x, var)):
                with pytest.raises(ValueError, match=r"^var: expected entries >= 0 \(var has "
                                                     r"negative entry/entries\), got a minimum "
                                                     r"of -0\.25$"):
                    call()
    finally:
        closs.set_num_threads(saved)
