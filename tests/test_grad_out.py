"""grad_out=: preallocated gradient buffers for value_and_grad and backward,
and for the functionals with return_grad=True.

Every loss class and its functional (the benchmark's cases, closs/_bench.py)
write into the caller's buffers and return them, with the same bits as fresh
gradients; the kernels write in place (no gradient-sized allocation);
broadcast arguments go through a copy; and bad buffers are refused before
anything is written.
"""
import tracemalloc
import warnings

import numpy as np
import pytest

import closs
import closs.functional as F
from closs import _bench

from conftest import FLOATS

LOSS_KEYS = list(_bench.LOSSES)


def case(key, dtype, seed=0):
    spec = _bench.LOSSES[key]
    rng = np.random.default_rng([seed, LOSS_KEYS.index(key)])
    return spec.closs_module(), spec.make_data(rng, _bench.resolve_size(spec, "tiny"), dtype)


# each loss class's functional
FUNCTIONALS = {
    "L1Loss": F.l1_loss, "MSELoss": F.mse_loss, "SmoothL1Loss": F.smooth_l1_loss,
    "HuberLoss": F.huber_loss, "PoissonNLLLoss": F.poisson_nll_loss,
    "GaussianNLLLoss": F.gaussian_nll_loss, "CrossEntropyLoss": F.cross_entropy,
    "NLLLoss": F.nll_loss, "BCELoss": F.binary_cross_entropy,
    "BCEWithLogitsLoss": F.binary_cross_entropy_with_logits, "KLDivLoss": F.kl_div,
    "MultiLabelSoftMarginLoss": F.multilabel_soft_margin_loss,
    "MarginRankingLoss": F.margin_ranking_loss, "HingeEmbeddingLoss": F.hinge_embedding_loss,
    "SoftMarginLoss": F.soft_margin_loss, "FocalLoss": F.sigmoid_focal_loss,
    "MultiMarginLoss": F.multi_margin_loss, "MultiLabelMarginLoss": F.multilabel_margin_loss,
    "CosineEmbeddingLoss": F.cosine_embedding_loss, "TripletMarginLoss": F.triplet_margin_loss,
    "TripletMarginWithDistanceLoss": F.triplet_margin_with_distance_loss,
    "DiceLoss": F.dice_loss, "TverskyLoss": F.tversky_loss, "CTCLoss": F.ctc_loss,
}


def functional_case(key, dtype, reduction=None):
    """The functional of case(key), and its options (the class's, reduction included)."""
    loss, args = case(key, dtype)
    spec = _bench.LOSSES[key]
    options = dict(spec.options)
    options["reduction"] = reduction or loss.reduction
    return FUNCTIONALS[spec.name], options, args


def as_tuple(g):
    return g if isinstance(g, tuple) else (g,)


def buffers_like(grads):
    """nan-filled buffers, in the form grad_out takes (a tuple for several)."""
    outs = tuple(np.full_like(g, np.nan) for g in grads)
    return outs if len(outs) > 1 else outs[0]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("key", LOSS_KEYS)
def test_every_loss_writes_its_buffers(key, dtype):
    loss, args = case(key, dtype)
    before = [np.array(a, copy=True) for a in args]
    value, grad = loss.value_and_grad(*args)
    outs = buffers_like(as_tuple(grad))
    assert loss._grad_args == _bench.LOSSES[key].grad_args
    for _ in range(2):  # a loop reusing its buffers
        value2, grad2 = loss.value_and_grad(*args, grad_out=outs)
        assert np.array_equal(value2, value, equal_nan=True)
        for g2, o, g in zip(as_tuple(grad2), as_tuple(outs), as_tuple(grad)):
            assert g2 is o
            assert np.array_equal(g2, g, equal_nan=True)
    loss(*args)
    outs = buffers_like(as_tuple(grad))
    back = loss.backward(grad_out=outs)
    for b, o, g in zip(as_tuple(back), as_tuple(outs), as_tuple(grad)):
        assert b is o
        assert np.array_equal(b, g, equal_nan=True)
    for a, b in zip(args, before):
        assert np.array_equal(np.asarray(a), b, equal_nan=True)


def peak_bytes(call):
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("functional", [False, True], ids=["class", "functional"])
@pytest.mark.parametrize("name, options, shapes", [
    ("MSELoss", {}, [(200_000,), (200_000,)]),
    ("CrossEntropyLoss", {}, [(20_000, 10), None]),
    ("MultiMarginLoss", {}, [(2000, 100), None]),
    ("DiceLoss", {"softmax": True}, [(2, 4, 100, 250), (2, 4, 100, 250)]),
    ("TripletMarginLoss", {}, [(2000, 100)] * 3),
], ids=["pointwise", "softmax", "margin", "overlap", "features"])
def test_written_in_place(name, options, shapes, functional):
    """With grad_out, no gradient-sized array is allocated (numpy's allocations
    are visible to tracemalloc)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=shapes[0])
    if shapes[1] is None:
        args = [x, rng.integers(0, x.shape[1], x.shape[0])]
    else:
        args = [x] + [rng.random(s) for s in shapes[1:]]
    if functional:
        fn = FUNCTIONALS[name]

        def value_and_grad(*args, grad_out=None):
            return fn(*args, **options, return_grad=True, grad_out=grad_out)
    else:
        value_and_grad = getattr(closs, name)(**options).value_and_grad
    grad = value_and_grad(*args)[1]
    outs = buffers_like(as_tuple(grad))
    value_and_grad(*args, grad_out=outs)  # warm up
    fresh = peak_bytes(lambda: value_and_grad(*args))
    reused = peak_bytes(lambda: value_and_grad(*args, grad_out=outs))
    assert fresh >= x.nbytes
    assert reused < x.nbytes / 8


def test_broadcast_gradients_are_copied():
    """A gradient computed over a broadcast shape is summed back, then copied in."""
    rng = np.random.default_rng(2)
    x, y, var = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)), rng.random((6, 1)) + 0.5
    loss = closs.GaussianNLLLoss()
    _, (gx, gv) = loss.value_and_grad(x, y, var)
    outs = (np.empty_like(x), np.empty_like(var))
    _, got = loss.value_and_grad(x, y, var, grad_out=outs)
    assert got[0] is outs[0] and got[1] is outs[1]
    np.testing.assert_array_equal(outs[0], gx)
    np.testing.assert_array_equal(outs[1], gv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's broadcasting warning
        small, target = rng.normal(size=3), rng.normal(size=(4, 3))
        mse = closs.MSELoss()
        g = mse.value_and_grad(small, target)[1]
        out = np.empty(3)
        assert mse.value_and_grad(small, target, grad_out=out)[1] is out
    np.testing.assert_array_equal(out, g)


def test_refused_before_writing():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    mse = closs.MSELoss()
    bad = [
        (np.zeros((3, 4)), ValueError, "shape"),
        (np.zeros(12), ValueError, "shape"),
        (np.zeros((4, 3), np.int64), TypeError, "float32 or float64"),
        ([[0.0] * 3] * 4, TypeError, "ndarray"),
        (np.zeros((3, 4)).T, ValueError, "non-contiguous"),
        (x, ValueError, "shares memory"),
        (y, ValueError, "shares memory"),
        ((np.zeros((4, 3)),), TypeError, "ndarray"),
    ]
    ro = np.zeros((4, 3))
    ro.flags.writeable = False
    bad.append((ro, ValueError, "read-only"))
    for out, exc, words in bad:
        with pytest.raises(exc, match=words):
            mse.value_and_grad(x, y, grad_out=out)
    wrong_dtype = np.full((4, 3), 7.0, np.float32)
    with pytest.raises(ValueError, match="dtype float64"):
        mse.value_and_grad(x, y, grad_out=wrong_dtype)
    assert (wrong_dtype == 7.0).all()  # untouched
    mse(x, y)
    with pytest.raises(ValueError, match="shape"):
        mse.backward(grad_out=np.zeros(5))


def test_refused_when_sharing_a_weight_grad_output_or_a_non_array_input():
    """What else the sweep reads may not be the buffer either: a loss object's
    weight (overwriting it would change later calls), an upstream gradient, or
    an input given as another type that shares the buffer's memory."""
    rng = np.random.default_rng(5)
    p, w, pw = rng.uniform(0.1, 0.9, 8), rng.uniform(0.5, 2, 8), rng.uniform(0.5, 2, 8)
    t = (p > 0.5) * 1.0
    w0 = w.copy()
    for loss in (closs.BCELoss(weight=w), closs.BCEWithLogitsLoss(pos_weight=pw)):
        held = w if isinstance(loss, closs.BCELoss) else pw
        with pytest.raises(ValueError, match="shares memory"):
            loss.value_and_grad(p, t, grad_out=held)
        loss(p, t)
        with pytest.raises(ValueError, match="shares memory"):
            loss.backward(grad_out=held)
    np.testing.assert_array_equal(w, w0)
    x, target = rng.normal(size=(4, 40)), rng.integers(0, 40, 4)
    buf = np.empty((4, 40))
    go = buf.reshape(-1)[:4]
    go[:] = [1.0, 2.0, 3.0, 4.0]
    ce = closs.CrossEntropyLoss(reduction="none")
    with pytest.raises(ValueError, match="shares memory"):
        ce.value_and_grad(x, target, grad_output=go, grad_out=buf)
    with pytest.raises(ValueError, match="shares memory"):
        F.cross_entropy(x, target, reduction="none", return_grad=True, grad_output=go,
                        grad_out=buf)
    ce(x, target)
    with pytest.raises(ValueError, match="shares memory"):
        ce.backward(go, grad_out=buf)
    m = rng.normal(size=4)
    with pytest.raises(ValueError, match="shares memory"):
        F.mse_loss(memoryview(m), rng.normal(size=4), return_grad=True, grad_out=m)
    np.testing.assert_array_equal(go, [1.0, 2.0, 3.0, 4.0])


def test_several_gradients():
    rng = np.random.default_rng(4)
    a, b, y = rng.normal(size=10), rng.normal(size=10), np.sign(rng.normal(size=10))
    loss = closs.MarginRankingLoss()
    one = np.empty(10)
    with pytest.raises(ValueError, match="tuple of 2 arrays"):
        loss.value_and_grad(a, b, y, grad_out=one)
    with pytest.raises(ValueError, match="tuple of 2 arrays"):
        loss.value_and_grad(a, b, y, grad_out=(one,))
    with pytest.raises(ValueError, match=r"grad_out\[1\].*shares memory"):
        loss.value_and_grad(a, b, y, grad_out=(one, one))
    with pytest.raises(ValueError, match=r"grad_out\[1\].*shares memory"):
        loss.value_and_grad(a, b, y, grad_out=(one, b))
    two = (np.empty(10), np.empty(10))
    _, got = loss.value_and_grad(a, b, y, grad_out=two)
    assert got[0] is two[0] and got[1] is two[1]
    np.testing.assert_array_equal(got[0], loss.value_and_grad(a, b, y)[1][0])


def test_every_loss_has_its_functional():
    assert set(FUNCTIONALS) == set(closs.modules.__all__)
    assert {f.__name__ for f in FUNCTIONALS.values()} == set(F.__all__)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("key", LOSS_KEYS)
def test_every_functional_writes_its_buffers(key, dtype):
    fn, options, args = functional_case(key, dtype)
    before = [np.array(a, copy=True) for a in args]
    value, grad = _bench.LOSSES[key].closs_module().value_and_grad(*args)
    fvalue, fgrad = fn(*args, **options, return_grad=True)
    assert np.array_equal(fvalue, value, equal_nan=True)
    outs = buffers_like(as_tuple(grad))
    for _ in range(2):  # a loop reusing its buffers
        value2, grad2 = fn(*args, **options, return_grad=True, grad_out=outs)
        assert np.array_equal(value2, value, equal_nan=True)
        for g2, o, g, fg in zip(as_tuple(grad2), as_tuple(outs), as_tuple(grad), as_tuple(fgrad)):
            assert g2 is o
            assert np.array_equal(g2, g, equal_nan=True)
            assert np.array_equal(g2, fg, equal_nan=True)
    for a, b in zip(args, before):
        assert np.array_equal(np.asarray(a), b, equal_nan=True)


@pytest.mark.parametrize("key", ["mse", "cross_entropy", "multilabel_soft_margin", "dice",
                                 "triplet_margin", "ctc"])
def test_functional_with_upstream_gradient(key):
    """grad_out with reduction='none' and an array grad_output (MultiLabelSoftMargin's
    'none' gradient is its own sweep)."""
    fn, options, args = functional_case(key, np.float64, reduction="none")
    value = fn(*args, **options)
    g = np.random.default_rng(5).uniform(0.5, 2.0, np.shape(value))
    _, grad = fn(*args, **options, return_grad=True, grad_output=g)
    outs = buffers_like(as_tuple(grad))
    _, got = fn(*args, **options, return_grad=True, grad_output=g, grad_out=outs)
    for o, w, want in zip(as_tuple(outs), as_tuple(got), as_tuple(grad)):
        assert w is o
        np.testing.assert_array_equal(o, want)


def test_functional_refuses_bad_buffers():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    with pytest.raises(ValueError, match="return_grad=True"):
        F.mse_loss(x, y, grad_out=np.empty_like(x))
    for out, exc, words in [(np.zeros((3, 4)), ValueError, "shape"),
                            (y, ValueError, "shares memory"),
                            (np.zeros((4, 3), np.float32), ValueError, "dtype float64")]:
        with pytest.raises(exc, match=words):
            F.mse_loss(x, y, return_grad=True, grad_out=out)
    w = rng.random((4, 3))
    with pytest.raises(ValueError, match="shares memory"):  # the weight is an input too
        F.mse_loss(x, y, weight=w, return_grad=True, grad_out=w)
    labels = rng.integers(0, 3, 4)
    with pytest.raises(TypeError, match="ndarray"):
        F.cross_entropy(x, labels, return_grad=True, grad_out=[[0.0] * 3] * 4)
    a, b, t = rng.normal(size=5), rng.normal(size=5), np.ones(5)
    with pytest.raises(ValueError, match="tuple of 2 arrays"):
        F.margin_ranking_loss(a, b, t, return_grad=True, grad_out=np.empty(5))
    outs = (np.empty(5), np.empty(5))
    _, got = F.margin_ranking_loss(a, b, t, return_grad=True, grad_out=outs)
    assert got[0] is outs[0] and got[1] is outs[1]
    np.testing.assert_array_equal(outs[1], F.margin_ranking_loss(a, b, t, return_grad=True)[1][1])
