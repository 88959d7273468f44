"""CTC loss (spec section 21): closs.CTCLoss and closs.functional.ctc_loss.

* the spec's anchor and a hand-counted example: fixed numbers, no torch;
* golden file (tests/golden/ctc/ctc_loss.json, made by
  tests/golden/ctc/make_golden.py), checked without torch;
* parity with torch 2.13 through every closs route (class forward + backward,
  value_and_grad, functional with and without return_grad, explicit
  grad_output): blank at either end and inside, every reduction, padded /
  concatenated / unbatched (S,) and (1, S) targets, zero_infinity, impossible
  alignments, repeated labels, target length 0, input length 0, both dtypes,
  the issue's size (T=50, N=16, C=20, S=10), NaN and -inf log-probabilities;
* value and gradient against an independent float64 recursion in probability
  space (no logs; small T), for fixed cases and as hypothesis properties;
* 4th-order finite differences in float64, in torch's gradient convention:
  finite differences of the loss w.r.t. log_probs give the *true* derivative
  -g gamma, which is closs's gradient minus g exp(log_probs); and through a
  log_softmax, J^T of closs's gradient must equal finite differences of
  loss(log_softmax(z)) w.r.t. z;
* shift and occupancy properties; any integer dtype and form of targets and
  lengths; layouts, read-only arrays, inputs never modified; empty batches;
  bit-for-bit agreement of the routes and of 1 vs 2 threads; bad input.

Tolerances (conftest.assert_close): rtol 1e-12 (float64) / 1e-5 (float32).
closs does torch's float32 arithmetic operation for operation (see
csrc/closs_ctc.hpp), so float32 agrees with torch to ~1e-7 even at T = 50,
where both differ from the exact result by ~1e-4 of the largest gradient.
"""
import json
import os
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import closs
import closs.functional as CF
from closs._validation import LabelError

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
    torch_value_and_grads,
)

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "ctc",
                      "ctc_loss.json")
DTYPE_IDS = ["f32", "f64"]
INF = float("inf")


def ctc_case(**kwargs):
    return LossCase("CTCLoss", "ctc_loss", tuple(kwargs.items()), nargs=4, legacy=False)


def _reduced_type(value, dtype):
    assert type(value) is np.dtype(dtype).type, f"{type(value)} is not {np.dtype(dtype)}"


# ---------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------


def log_probs(rng, shape, dtype=np.float64, scale=1.5):
    x = scale * rng.standard_normal(shape)
    x -= np.log(np.sum(np.exp(x), axis=-1, keepdims=True))
    return x.astype(dtype)


def draw_labels(rng, n, classes, blank, repeat=0.3):
    """n labels in [0, classes) without blank; about `repeat` of them repeat
    the previous one."""
    choices = [c for c in range(classes) if c != blank]
    out = []
    for _ in range(n):
        if out and rng.random() < repeat:
            out.append(out[-1])
        else:
            out.append(int(rng.choice(choices)))
    return out


def batch(rng, T, N, C, S, blank=0, dtype=np.float64, form="padded"):
    """(log_probs, targets, input_lengths, target_lengths) with a target of
    length 0, an input of length 0, an impossible alignment and padding junk
    (for N >= 4); form: 'padded', 'concatenated', 'unbatched' ((S,) targets,
    int lengths) or 'unbatched2d' ((1, S) targets, (1,) lengths)."""
    if form.startswith("unbatched"):
        S_n = int(rng.integers(1, S + 1))
        labels = draw_labels(rng, S_n, C, blank)
        lp = log_probs(rng, (T, C), dtype)
        T_n = int(rng.integers(min(T, 2 * S_n + 1), T + 1))
        if form == "unbatched":
            return lp, np.array(labels), T_n, S_n
        return lp, np.array([labels + [-1] * (S - S_n)]), [T_n], [S_n]
    lp = log_probs(rng, (T, N, C), dtype)
    tl = rng.integers(1, S + 1, N)
    il = rng.integers(T // 2, T + 1, N)
    if N >= 4:
        tl[1] = 0                     # empty target
        il[2], tl[2] = 0, 0           # empty input and target: loss 0
        il[3], tl[3] = 1, 2           # too few steps: loss inf
    labels = [draw_labels(rng, int(tl[n]), C, blank) for n in range(N)]
    if form == "concatenated":
        targets = np.array([v for row in labels for v in row], np.int64)
    else:
        junk = [-1, blank, C + 3]     # padding past each length is never read
        targets = np.array([row + [junk[k % 3] for k in range(S - len(row))]
                            for row in labels])
    return lp, targets, list(map(int, il)), list(map(int, tl))


def random_grad_output(rng, reduction, n, dtype):
    if reduction == "none":
        return rng.uniform(-2, 2, n).astype(dtype)
    return float(rng.uniform(0.25, 2.0))


# ---------------------------------------------------------------------------------
# an independent reference: the recursion in probability space (float64, small T)
# ---------------------------------------------------------------------------------


def reference_sample(lp, labels, blank, dtype=np.float64):
    """(loss, gamma[t, c]) of one sample, lp (T_n, C) in float64, by the
    alpha-beta recursion on probabilities in `dtype` (no logs; T_n small
    enough that nothing underflows).  An impossible alignment gives (inf, nan)."""
    T, C = lp.shape
    ext = [blank]
    for label in labels:
        ext += [label, blank]
    W = len(ext)
    gamma = np.zeros((T, C), dtype)
    if T == 0:
        return (0.0 if not labels else INF), gamma
    p = np.exp(lp.astype(dtype))

    def allowed_skip(s):
        return s > 1 and ext[s] != blank and ext[s] != ext[s - 2]

    alpha = np.zeros((T, W), dtype)
    alpha[0, 0] = p[0, blank]
    if W > 1:
        alpha[0, 1] = p[0, ext[1]]
    for t in range(1, T):
        for s in range(W):
            a = alpha[t - 1, s] + (alpha[t - 1, s - 1] if s > 0 else 0.0)
            if allowed_skip(s):
                a += alpha[t - 1, s - 2]
            alpha[t, s] = a * p[t, ext[s]]
    beta = np.zeros((T, W), dtype)
    beta[T - 1, W - 1] = p[T - 1, blank]
    if W > 1:
        beta[T - 1, W - 2] = p[T - 1, ext[W - 2]]
    for t in range(T - 2, -1, -1):
        for s in range(W):
            b = beta[t + 1, s] + (beta[t + 1, s + 1] if s + 1 < W else 0.0)
            if s + 2 < W and allowed_skip(s + 2):
                b += beta[t + 1, s + 2]
            beta[t, s] = b * p[t, ext[s]]
    prob = alpha[T - 1, W - 1] + (alpha[T - 1, W - 2] if W > 1 else 0.0)
    if prob == 0.0:
        return INF, np.full((T, C), np.nan)
    for s in range(W):
        gamma[:, ext[s]] += alpha[:, s] * beta[:, s] / p[:, ext[s]]
    return -np.log(prob), gamma / prob


def reference(lp, labels, il, tl, blank=0, reduction="mean", zero_infinity=False,
              grad_output=None):
    """(value, gradient in torch's convention) of a batched (T, N, C) call with
    per-sample label lists."""
    T, N, C = lp.shape
    losses = np.zeros(N)
    grad = np.zeros_like(lp, dtype=np.float64)
    for n in range(N):
        loss, gamma = reference_sample(lp[:il[n], n].astype(np.float64), labels[n], blank)
        if zero_infinity and loss == INF:
            loss, gamma = 0.0, None
        losses[n] = loss
        if reduction == "none":
            g = 1.0 if grad_output is None else float(grad_output[n])
        else:
            g = 1.0 if grad_output is None else float(grad_output)
            if reduction == "mean":
                g /= N * max(tl[n], 1)
        if gamma is not None and il[n] > 0:
            grad[:il[n], n] = g * (np.exp(lp[:il[n], n]) - gamma)
    if reduction == "none":
        value = losses
    elif reduction == "sum":
        value = losses.sum()
    else:
        value = np.mean(losses / np.maximum(np.asarray(tl), 1))
    return value, grad


def labels_of(targets, tl):
    t = np.asarray(targets)
    if t.ndim == 2:
        return [list(t[n, :tl[n]]) for n in range(len(tl))]
    out, pos = [], 0
    for n in range(len(tl)):
        out.append(list(t[pos:pos + tl[n]]))
        pos += tl[n]
    return out


# ---------------------------------------------------------------------------------
# fixed numbers
# ---------------------------------------------------------------------------------


def _golden():
    with open(GOLDEN) as f:
        return json.load(f)["cases"]


def _array(enc, dtype=None):
    a = np.array(enc["data"], dtype=np.int64 if enc.get("dtype") == "int64" else np.float64)
    a = a.reshape(enc["shape"])
    return a if dtype is None else a.astype(dtype)


def _golden_args(case):
    dtype = np.dtype(case["dtype"])
    lp = _array(case["log_probs"], dtype)
    targets = _array(case["targets"])
    go = case["grad_output"]
    if isinstance(go, dict):
        go = _array(go, dtype)
    return (lp, targets, case["input_lengths"], case["target_lengths"]), go, dtype


GOLDEN_CASES = _golden()


def test_golden_file_has_the_cases():
    ids = [c["id"] for c in GOLDEN_CASES]
    assert len(ids) == len(set(ids)) >= 20
    assert {"anchor-none", "anchor-mean", "anchor-sum"} <= set(ids)
    assert {c["dtype"] for c in GOLDEN_CASES} == {"float32", "float64"}


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=[c["id"] for c in GOLDEN_CASES])
def test_golden(case):
    args, go, dtype = _golden_args(case)
    value, grad = CF.ctc_loss(*args, reduction=case["reduction"], return_grad=True,
                              grad_output=go, **case["kwargs"])
    expected = _array(case["value"])
    assert_close(np.asarray(value), expected.astype(dtype), dtype)
    assert_close(grad, _array(case["grad"]).astype(dtype), dtype)


def test_spec_anchor():
    """spec 21.4: T=6, N=3, C=4, targets [[1,2,2],[3,1,0],[1,1,1]], lengths
    [6,5,6] / [3,2,0] (the anchor's log_probs come from torch's seed 0, kept
    in the golden file)."""
    case = next(c for c in GOLDEN_CASES if c["id"] == "anchor-none")
    args, _, _ = _golden_args(case)
    assert_close(CF.ctc_loss(*args, reduction="none"),
                 np.array([5.3902973472104065, 3.2262629039191943, 10.571466253281123]))
    assert_close(CF.ctc_loss(*args), np.float64(4.660454495881396))
    assert_close(CF.ctc_loss(*args, reduction="sum"), np.float64(19.188026504410722))


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_uniform_example(dtype):
    """T=3, C=2 uniform (p = 1/2), one label: 6 of the 8 paths give it, so
    loss = -log(6/8); gamma counts the paths by the class they use at each t:
    blank at t = (3/6, 2/6, 3/6), so the gradient is (0, +-1/6, 0)."""
    lp = np.log(np.full((3, 1, 2), 0.5, dtype=dtype))
    value, grad = CF.ctc_loss(lp, np.array([[1]]), [3], [1], reduction="sum", return_grad=True)
    assert_close(value, dtype(-np.log(0.75)), dtype)
    expected = np.array([[0, 0], [1 / 6, -1 / 6], [0, 0]], dtype=dtype)[:, None, :]
    assert_close(grad, expected, dtype, scale=1.0)


def test_docstring_examples():
    lp = np.log(np.full((3, 1, 2), 0.5))
    assert CF.ctc_loss(lp, np.array([[1]]), [3], [1], reduction="sum") == -np.log(0.75)
    assert closs.CTCLoss(reduction="sum")(lp, np.array([[1]]), [3], [1]) == -np.log(0.75)


# ---------------------------------------------------------------------------------
# parity with torch
# ---------------------------------------------------------------------------------


def check_against_torch(args, reduction, grad_output, dtype, **kwargs):
    case = ctc_case(**kwargs)
    t_value, (t_grad,) = torch_value_and_grads(case, args, reduction, grad_output)
    routes = closs_routes(case, args, reduction, grad_output)
    ref_value, ref_grads = routes["value_and_grad"]
    for name, (value, grads) in routes.items():
        if reduction != "none":
            _reduced_type(value, dtype)
        assert_close(np.asarray(value), t_value, dtype, err_msg=name)
        if grads is not None:
            assert_close(grads[0], t_grad, dtype, err_msg=name)
            assert grads[0].shape == np.shape(args[0])
            assert_identical(grads[0], ref_grads[0], err_msg=name)
        assert_identical(value, ref_value, err_msg=name)


@pytest.mark.parametrize("zero_infinity", [False, True], ids=["zi0", "zi1"])
@pytest.mark.parametrize("form", ["padded", "concatenated", "unbatched", "unbatched2d"])
@pytest.mark.parametrize("blank", ["first", "middle", "last"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_torch_parity(torch, dtype, reduction, blank, form, zero_infinity):
    C = 6
    b = {"first": 0, "middle": 2, "last": C - 1}[blank]
    rng = rng_for("parity", dtype, reduction, blank, form, zero_infinity)
    args = batch(rng, 12, 6, C, 5, b, dtype, form)
    n = 1 if form.startswith("unbatched") else 6
    go = random_grad_output(rng, reduction, n, dtype)
    if form.startswith("unbatched") and reduction == "none":
        go = go.reshape(())  # the loss of an unbatched call is 0-d
    check_against_torch(args, reduction, go, dtype, blank=b, zero_infinity=zero_infinity)
    check_against_torch(args, reduction, None, dtype, blank=b, zero_infinity=zero_infinity)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_torch_parity_issue_size(torch, dtype):
    """The issue's size: T=50, N=16, C=20, S=10 (float32 agrees with torch to
    ~1e-7 of the largest gradient entry; see the module docstring)."""
    rng = rng_for("issue", dtype)
    lp = log_probs(rng, (50, 16, 20), dtype, scale=2.0)
    targets = rng.integers(1, 20, (16, 10))
    il = rng.integers(30, 51, 16)
    tl = rng.integers(1, 11, 16)
    for reduction in REDUCTIONS:
        check_against_torch((lp, targets, il, tl), reduction, None, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_torch_parity_special_values(torch, dtype):
    """NaN in a used log-probability: nan loss and gradient for that sample;
    a class at -inf that no path uses: torch's nan gradient
    (exp(-inf + loss + inf)); a required -inf: an impossible alignment."""
    rng = rng_for("special", dtype)
    lp = log_probs(rng, (7, 4, 5), dtype)
    lp[3, 0, 2] = np.nan
    lp[:, 1, 4] = -np.inf            # class 4: not in sample 1's target
    lp[2, 2, 1] = -np.inf            # sample 2 needs class 1 at every step: impossible
    targets = np.array([[2, 3], [1, 2], [1, 1], [3, 3]])
    args = (lp, targets, [7, 7, 3, 7], [2, 2, 2, 2])
    for reduction in REDUCTIONS:
        for zi in (False, True):
            check_against_torch(args, reduction, None, dtype, zero_infinity=zi)


@pytest.mark.skipif(np.finfo(np.longdouble).eps > 1e-18, reason="no 80-bit long double")
def test_float64_against_extended_precision():
    """float64 (the probability-space recursion) against the same recursion in
    80-bit long double at T = 50: the loss to ~1 ulp, the gradient within
    1e-14 of its largest entry (torch's log space is ~1e-13 off here, so
    torch parity alone could not see a loss of accuracy this size)."""
    rng = rng_for("extended")
    lp = log_probs(rng, (50, 4, 20))
    labels = [[int(v) for v in rng.integers(1, 20, 10)] for _ in range(4)]
    value, grad = CF.ctc_loss(lp, np.array(labels), [50] * 4, [10] * 4, reduction="none",
                              return_grad=True, grad_output=np.ones(4))
    for n in range(4):
        loss, gamma = reference_sample(lp[:, n], labels[n], 0, dtype=np.longdouble)
        expected = np.exp(lp[:, n].astype(np.longdouble)) - gamma
        assert abs(value[n] - loss) <= 1e-15 * loss
        assert np.max(np.abs(grad[:, n] - expected)) <= 1e-14 * np.max(np.abs(expected))


def _fallback_cases():
    """float64 inputs for each route of closs's probability-space recursion
    (csrc/closs_ctc.hpp): taken, or left for log space before the forward
    pass (a used log-probability outside [-150, 0]), after it (a prefix
    1e100 behind: one class dominates every step) or after the backward
    pass (a suffix 1e100 behind: the last steps all but certainly blank)."""
    rng = rng_for("fallback")
    cases = {"taken": log_probs(rng, (30, 3, 6))}
    edge = log_probs(rng, (30, 3, 6))
    edge[5, 0, :] = -149.0            # sample 0: inside, sample 1: just outside
    edge[5, 1, :] = -151.0
    edge[7, 2, 1:] = 0.25             # sample 2: a positive log-probability
    cases["range"] = edge
    prefix = np.full((30, 3, 6), -140.0)
    prefix[:, :, 1] = -0.01
    cases["prefix"] = prefix
    suffix = log_probs(rng, (30, 3, 6))
    suffix[20:] = -140.0
    suffix[20:, :, 0] = -1e-12
    cases["suffix"] = suffix
    targets = np.array([[1, 2, 3, 4], [1, 1, 2, 5], [5, 4, 3, 1]])
    return {name: (lp, targets, [30, 30, 30], [4, 4, 4]) for name, lp in cases.items()}


@pytest.mark.parametrize("name", ["taken", "range", "prefix", "suffix"])
def test_torch_parity_probability_space_and_fallbacks(torch, name):
    """float64 in probability space, and each way out of it into log space:
    torch's value and gradient either way, every route bit-identical (a
    value-only call and value_and_grad give the same loss even when only the
    backward pass falls back)."""
    args = _fallback_cases()[name]
    for reduction in REDUCTIONS:
        check_against_torch(args, reduction, None, np.float64)


def test_torch_parity_target_forms(torch):
    """Targets and lengths in every form torch takes give torch's value."""
    rng = rng_for("forms")
    lp, targets, il, tl = batch(rng, 10, 4, 5, 4)
    expected = CF.ctc_loss(lp, targets, il, tl, reduction="none")
    t_value, _ = torch_value_and_grads(ctc_case(), (lp, targets, il, tl), "none")
    assert_close(expected, t_value)
    for il2, tl2 in [(tuple(il), tuple(tl)), (np.array(il, np.int32), np.array(tl, np.uint8)),
                     (np.array([il]), np.array([tl]).T)]:
        assert_identical(CF.ctc_loss(lp, targets, il2, tl2, reduction="none"), expected)


# ---------------------------------------------------------------------------------
# against the probability-space reference
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("zero_infinity", [False, True], ids=["zi0", "zi1"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("blank", [0, 2, 4])
def test_reference_recursion(blank, reduction, zero_infinity):
    rng = rng_for("reference", blank, reduction, zero_infinity)
    lp, targets, il, tl = batch(rng, 10, 6, 5, 4, blank)
    go = random_grad_output(rng, reduction, 6, np.float64)
    value, grad = CF.ctc_loss(lp, targets, il, tl, blank=blank, reduction=reduction,
                              zero_infinity=zero_infinity, return_grad=True, grad_output=go)
    ref_value, ref_grad = reference(lp, labels_of(targets, tl), il, tl, blank, reduction,
                                    zero_infinity, go)
    assert_close(np.asarray(value), np.asarray(ref_value), scale=10.0)
    assert_close(grad, ref_grad, scale=1.0)
    if not zero_infinity:
        assert np.all(np.isnan(grad[:il[3], 3])) and np.all(grad[il[3]:, 3] == 0)
    else:
        assert np.all(grad[:, 3] == 0)
    assert np.all(grad[:, 2] == 0)


@st.composite
def ctc_problems(draw):
    T = draw(st.integers(0, 7))
    N = draw(st.integers(1, 3))
    C = draw(st.integers(2, 5))
    blank = draw(st.integers(0, C - 1))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    il = [draw(st.integers(0, T)) for _ in range(N)]
    tl = [draw(st.integers(0, 4)) for _ in range(N)]
    labels = [draw_labels(rng, tl[n], C, blank, repeat=draw(st.sampled_from([0.0, 0.5])))
              for n in range(N)]
    lp = log_probs(rng, (T, N, C), scale=draw(st.sampled_from([0.5, 2.0])))
    S = max(tl)
    targets = np.array([row + [blank] * (S - len(row)) for row in labels], np.int64)
    return lp, targets, il, tl, labels, blank


@given(ctc_problems(), st.sampled_from(REDUCTIONS), st.booleans())
def test_property_matches_reference(problem, reduction, zero_infinity):
    lp, targets, il, tl, labels, blank = problem
    value, grad = CF.ctc_loss(lp, targets, il, tl, blank=blank, reduction=reduction,
                              zero_infinity=zero_infinity, return_grad=True)
    ref_value, ref_grad = reference(lp, labels, il, tl, blank, reduction, zero_infinity)
    assert_close(np.asarray(value), np.asarray(ref_value), scale=10.0)
    assert_close(grad, ref_grad, scale=1.0)


@given(ctc_problems(), st.floats(-5, 5))
def test_property_shift(problem, k):
    """Every path takes one emission per step: adding k to all of sample n's
    log-probabilities at a step t < T_n lowers its loss by k."""
    lp, targets, il, tl, labels, blank = problem
    n = int(np.argmax(il))
    if il[n] == 0:
        return
    shifted = lp.copy()
    shifted[il[n] - 1, n] += k
    before = CF.ctc_loss(lp, targets, il, tl, blank=blank, reduction="none")
    after = CF.ctc_loss(shifted, targets, il, tl, blank=blank, reduction="none")
    if np.isinf(before[n]):
        assert np.isinf(after[n])
    else:
        assert_close(after[n], before[n] - k, scale=10.0)
    others = np.arange(len(il)) != n
    assert_identical(after[others], before[others])


@given(ctc_problems())
def test_property_occupancy_sums_to_one(problem):
    """For a possible alignment, gamma is a distribution over classes at each
    step: sum_c (exp(lp) - grad / g) = 1 for t < T_n ('sum': g = 1)."""
    lp, targets, il, tl, labels, blank = problem
    losses, grad = CF.ctc_loss(lp, targets, il, tl, blank=blank, reduction="none",
                               return_grad=True)
    for n in range(len(il)):
        if np.isfinite(losses[n]) and il[n]:
            gamma = np.exp(lp[:il[n], n]) - grad[:il[n], n]
            assert_close(gamma.sum(axis=1), np.ones(il[n]))
            assert np.all(gamma > -1e-12)


# ---------------------------------------------------------------------------------
# finite differences (float64)
# ---------------------------------------------------------------------------------


def finite_differences(f, x, h=1e-3):
    """4th-order central differences of the scalar f at x (float64)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        v = flat[i]
        vals = []
        for step in (-2, -1, 1, 2):
            flat[i] = v + step * h
            vals.append(f(x))
        flat[i] = v
        gflat[i] = (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * h)
    return g


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("form", ["padded", "concatenated", "unbatched"])
def test_finite_differences_true_gradient(reduction, form):
    """d loss / d log_probs is -g gamma = closs's gradient - g exp(log_probs)
    (torch's convention adds g exp(lp) over t < T_n)."""
    rng = rng_for("fd", reduction, form)
    lp, targets, il, tl = batch(rng, 6, 3, 4, 3, form=form)
    n = 1 if form == "unbatched" else 3
    il = 6 if form == "unbatched" else [6, 5, 6]  # every alignment possible: a finite loss
    go = random_grad_output(rng, reduction, n, np.float64)
    if form == "unbatched" and reduction == "none":
        go = go.reshape(())
    weights = go if reduction == "none" else None

    def f(x):
        v = CF.ctc_loss(x, targets, il, tl, reduction=reduction)
        return float(np.sum(v * weights)) if weights is not None else float(v) * go

    _, grad = CF.ctc_loss(lp, targets, il, tl, reduction=reduction, return_grad=True,
                          grad_output=go)
    x3 = lp if lp.ndim == 3 else lp[:, None, :]
    g3 = grad if grad.ndim == 3 else grad[:, None, :]
    il_a = np.atleast_1d(il)
    if reduction == "none":
        scale = np.atleast_1d(go)
    else:
        scale = np.full(n, go) / ((n * np.maximum(np.atleast_1d(tl), 1))
                                 if reduction == "mean" else 1)
    mask = np.arange(x3.shape[0])[:, None] < il_a[None, :]
    true_grad = g3 - scale[None, :, None] * np.exp(x3) * mask[:, :, None]
    fd = finite_differences(f, lp.copy()).reshape(x3.shape)
    assert_close(true_grad, fd, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_finite_differences_through_log_softmax(reduction):
    """torch's convention: J^T of log_softmax applied to closs's gradient is
    the gradient of loss(log_softmax(z)) w.r.t. the logits z."""
    rng = rng_for("fd-logits", reduction)
    T, N, C = 6, 3, 4
    z = rng.normal(0, 1.5, (T, N, C))
    targets = np.array([[1, 2, 2], [3, 1, 0], [2, 3, 1]])
    il, tl = [6, 5, 6], [3, 2, 3]
    go = random_grad_output(rng, reduction, N, np.float64)

    def lsm(x):
        m = x.max(axis=-1, keepdims=True)
        return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))

    def f(x):
        v = CF.ctc_loss(lsm(x), targets, il, tl, reduction=reduction)
        return float(np.sum(v * go)) if reduction == "none" else float(v) * go

    _, v = CF.ctc_loss(lsm(z), targets, il, tl, reduction=reduction, return_grad=True,
                       grad_output=go)
    softmax = np.exp(lsm(z))
    jtv = v - softmax * v.sum(axis=-1, keepdims=True)
    assert_close(jtv, finite_differences(f, z.copy()), rtol=1e-8, atol=1e-9)


# ---------------------------------------------------------------------------------
# arguments, layouts, routes, threads
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.uint32, np.int64,
                                   np.uint64])
def test_any_integer_dtype(dtype):
    rng = rng_for("int dtypes")
    lp, targets, il, tl = batch(rng, 8, 4, 5, 3)
    targets = np.where(targets < 0, 0, targets)  # unsigned types: no -1 padding
    expected = CF.ctc_loss(lp, targets, il, tl, reduction="none", return_grad=True)
    got = CF.ctc_loss(lp, targets.astype(dtype), np.array(il, dtype), np.array(tl, dtype),
                      reduction="none", return_grad=True)
    for a, b in zip(got, expected):
        assert_identical(a, b)


def test_float_targets_are_truncated_as_torch(torch):
    """torch casts float labels to int64 (spec 21.1: accepted and cast); so does closs."""
    rng = rng_for("float targets")
    lp, targets, il, tl = batch(rng, 8, 4, 5, 3)
    targets = np.where(targets < 0, 0, targets)
    fractional = targets + rng.uniform(0, 0.9, targets.shape)
    expected = CF.ctc_loss(lp, targets, il, tl, reduction="none", return_grad=True)
    got = CF.ctc_loss(lp, fractional, il, tl, reduction="none", return_grad=True)
    for a, b in zip(got, expected):
        assert_identical(a, b)
    tv = torch.nn.functional.ctc_loss(torch.tensor(lp), torch.tensor(fractional),
                                      torch.tensor(il), torch.tensor(tl), reduction="none")
    assert_close(got[0], tv.numpy(), np.float64)


def test_lengths_as_ints_and_lists():
    rng = rng_for("ints")
    lp, targets, il, tl = batch(rng, 8, 1, 5, 3, form="unbatched")
    v = CF.ctc_loss(lp, targets, il, tl, reduction="none")
    assert v.shape == () and v.dtype == np.float64
    for il2, tl2 in [([il], [tl]), (np.array(il), np.array(tl)), ((il,), np.array([tl]))]:
        assert_identical(CF.ctc_loss(lp, targets, il2, tl2, reduction="none"), v)
    # batched with N = 1: an int is one length per batch entry too
    assert_identical(CF.ctc_loss(lp[:, None], targets, il, tl, reduction="none"), v[None])
    # (1, S) padded targets give the same loss as the (S,) concatenation
    padded = np.concatenate([targets, [-1, 7]])[None]
    assert_identical(CF.ctc_loss(lp, padded, il, tl, reduction="none"), v)


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_layouts_read_only_and_inputs_kept(dtype):
    rng = rng_for("layouts", dtype)
    lp, targets, il, tl = batch(rng, 9, 5, 6, 4, dtype=dtype)
    expected = CF.ctc_loss(lp, targets, il, tl, return_grad=True)
    variants = [
        np.ascontiguousarray(lp.transpose(1, 0, 2)).transpose(1, 0, 2),  # batch-major memory
        np.asfortranarray(lp),
        np.repeat(lp, 2, axis=2)[:, :, ::2],                              # strided classes
    ]
    ro = lp.copy()
    ro.setflags(write=False)
    variants.append(ro)
    swapped = lp.byteswap().view(lp.dtype.newbyteorder())
    variants.append(swapped)
    t_copy, il_a, tl_a = targets.copy(), np.array(il), np.array(tl)
    t_strided = np.repeat(targets, 2, axis=1)[:, ::2]
    for x in variants:
        before = x.copy()
        got = CF.ctc_loss(x, t_strided, il_a, tl_a, return_grad=True)
        for a, b in zip(got, expected):
            assert_identical(a, b)
        assert_identical(x, before)
    assert_identical(targets, t_copy)
    assert_identical(il_a, np.array(il))
    assert_identical(tl_a, np.array(tl))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_routes_identical(dtype, reduction):
    rng = rng_for("routes", dtype, reduction)
    args = batch(rng, 10, 5, 6, 4, dtype=dtype)
    go = random_grad_output(rng, reduction, 5, dtype)
    for grad_output in (None, go):
        routes = closs_routes(ctc_case(blank=0), args, reduction, grad_output)
        ref_value, ref_grads = routes["value_and_grad"]
        for name, (value, grads) in routes.items():
            assert_identical(value, ref_value, err_msg=name)
            if grads is not None:
                assert_identical(as_tuple(grads)[0], ref_grads[0], err_msg=name)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_threads_identical(dtype, reduction, restore_threads):
    """Large enough for two threads (N T (2S + 1) >= 2 grains of 4096 cells)."""
    rng = rng_for("threads", dtype, reduction)
    args = batch(rng, 50, 64, 20, 10, dtype=dtype)
    out = []
    for n in (1, 2):
        closs.set_num_threads(n)
        out.append(CF.ctc_loss(*args, reduction=reduction, return_grad=True))
    for a, b in zip(*out):
        assert_identical(a, b)


ISA_SCRIPT = """
import numpy as np, closs.functional as F
rng = np.random.default_rng(7)
out = {}
for dt in ("float32", "float64"):
    x = rng.normal(0, 2, (23, 7, 11))
    x = (x - np.log(np.exp(x).sum(2, keepdims=True))).astype(dt)
    x[3, 2, 4] = -np.inf
    t = rng.integers(1, 11, (7, 9))
    t[:, 4] = t[:, 3]  # repeats
    il, tl = [23, 20, 0, 23, 5, 17, 23], [9, 3, 0, 0, 4, 9, 1]
    for r in ("none", "sum"):
        v, g = F.ctc_loss(x, t, il, tl, reduction=r, return_grad=True)
        out[dt + r + "v"], out[dt + r + "g"] = np.asarray(v), g
np.savez(OUT, **out)
"""


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_every_isa_identical(isa, tmp_path):
    """CLOSS_SIMD=portable|avx2|avx512 (in fresh interpreters; a path the CPU
    lacks falls back) give the same bits: no FMA, vmath is bit-identical on
    every path, and the padded loops leave no scalar remainder."""
    got = {}
    for name, env in (("isa", {"CLOSS_SIMD": isa}), ("default", {"CLOSS_SIMD": None})):
        path = tmp_path / f"{name}.npz"
        r = run_python(f"OUT = {str(path)!r}\n" + ISA_SCRIPT, env)
        assert r.returncode == 0, r.stderr
        with np.load(path) as data:
            got[name] = {k: data[k] for k in data.files}
    assert len(got["isa"]) == 8
    for key, value in got["default"].items():
        assert_identical(got["isa"][key], value, err_msg=key)


@pytest.mark.skipif(not os.path.exists("/proc/sys/vm/overcommit_memory")
                    or open("/proc/sys/vm/overcommit_memory").read().strip() != "0",
                    reason="needs Linux's heuristic overcommit to refuse a huge allocation")
def test_scratch_too_large_is_memory_error(restore_threads):
    """A lattice of 2^20 steps x 2^21 + 1 states needs terabytes of scratch:
    MemoryError, not a crash (also from inside the threads' parallel region)."""
    T = S = 2 ** 20
    lp = np.zeros((T, 2, 2), np.float32)
    for n in (1, 2):
        closs.set_num_threads(n)
        with pytest.raises(MemoryError):
            CF.ctc_loss(lp, np.ones((2, S), np.int8), [T, T], [S, S])


@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
def test_empty_batch_and_no_steps(dtype):
    """N = 0 (torch raises; closs: 'none' empty, 'mean' nan, 'sum' 0, as every
    other loss) and T = 0 (every input length 0: loss 0, or inf with a target)."""
    lp = np.zeros((5, 0, 3), dtype)
    none, g = CF.ctc_loss(lp, np.zeros((0, 2), np.int64), [], [], reduction="none",
                          return_grad=True)
    assert none.shape == (0,) and none.dtype == dtype and g.shape == (5, 0, 3)
    mean = CF.ctc_loss(lp, np.zeros((0, 2), np.int64), [], [])
    _reduced_type(mean, dtype)
    assert np.isnan(mean)
    assert CF.ctc_loss(lp, np.zeros(0, np.int64), [], [], reduction="sum") == 0
    lp = np.zeros((0, 2, 3), dtype)
    none, g = CF.ctc_loss(lp, np.array([[1], [2]]), [0, 0], [0, 1], reduction="none",
                          return_grad=True)
    assert_identical(none, np.array([-0.0, np.inf], dtype))
    assert g.shape == (0, 2, 3)
    assert CF.ctc_loss(lp, np.array([[1], [2]]), [0, 0], [0, 1], zero_infinity=True) == 0


# ---------------------------------------------------------------------------------
# the class
# ---------------------------------------------------------------------------------


def test_module():
    crit = closs.CTCLoss(blank=2, reduction="sum", zero_infinity=True)
    assert (crit.blank, crit.reduction, crit.zero_infinity) == (2, "sum", True)
    assert repr(crit) == "CTCLoss(reduction='sum', blank=2, zero_infinity=True)"
    assert repr(closs.CTCLoss()) == "CTCLoss()"
    assert "CTCLoss" in closs.__all__ and "ctc_loss" in CF.__all__
    with pytest.raises(RuntimeError, match="before forward"):
        closs.CTCLoss().backward()
    with pytest.warns(UserWarning, match="elementwise_mean"):
        assert closs.CTCLoss(reduction="elementwise_mean").reduction == "mean"


def test_module_backward_default_and_grad_output():
    rng = rng_for("module")
    lp, targets, il, tl = batch(rng, 8, 4, 5, 3)
    crit = closs.CTCLoss(reduction="none")
    value = crit(lp, targets, il, tl)
    g1 = crit.backward()
    g2 = crit.backward(np.full(4, 2.0))
    assert_close(g2, 2 * g1)
    v3, g3 = CF.ctc_loss(lp, targets, il, tl, reduction="none", return_grad=True)
    assert_identical(value, v3)
    assert_identical(g1, g3)


# ---------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------

GOOD = dict(log_probs=np.log(np.full((6, 2, 4), 0.25)), targets=np.array([[1, 2], [3, 3]]),
            input_lengths=[6, 5], target_lengths=[2, 2])


def call(**change):
    kw = dict(GOOD)
    kw.update(change)
    return CF.ctc_loss(**kw)


@pytest.mark.parametrize("change, exc, match", [
    (dict(log_probs=np.zeros((6, 2, 4), np.int64)), TypeError, "log_probs: expected a floating"),
    (dict(log_probs=np.zeros(6)), ValueError, r"log_probs: expected an array of shape \(T, N, C\)"),
    (dict(log_probs=np.zeros((1, 6, 2, 4))), ValueError, "log_probs: expected"),
    (dict(blank=4), ValueError, r"blank: expected a class index in \[0, 4\)"),
    (dict(blank=-1), ValueError, "blank must be in label range"),
    (dict(blank=1.0), TypeError, "blank: expected an int"),
    (dict(reduction="foo"), ValueError, "reduction: expected one of"),
    (dict(zero_infinity="yes"), TypeError, "zero_infinity: expected a bool"),
    (dict(targets=np.array([[1.0, 2.0], [3.0, 3.0]]) + 0j), TypeError, "targets: expected integer"),
    (dict(targets=np.array([[1.0, np.nan], [3.0, 3.0]])), ValueError, "targets: expected finite"),
    (dict(targets=np.array([[[1, 2], [3, 3]]])), ValueError, "targets: expected padded"),
    (dict(targets=np.array(1)), ValueError, "targets: expected padded"),
    (dict(targets=np.array([[1, 2]])), ValueError, r"targets: expected padded targets of shape \(2, S\)"),
    (dict(targets=np.array([[1], [3]])), ValueError, "target_lengths: expected values <= 1"),
    (dict(targets=np.array([1, 2, 3])), ValueError, "targets: expected the concatenated"),
    (dict(targets=np.array([1, 2, 3, 3, 1])), ValueError, r"targets: expected sum\(target_lengths\) = 4"),
    (dict(input_lengths=[6.0, 5.0]), TypeError, "input_lengths: expected integers"),
    (dict(target_lengths=[True, True]), TypeError, "target_lengths: expected integers"),
    (dict(input_lengths=[6]), ValueError, "input_lengths: expected 2 value"),
    (dict(target_lengths=[2, 2, 2]), ValueError, "target_lengths must be of size batch_size"),
    (dict(input_lengths=[7, 5]), ValueError, r"input_lengths: expected values in \[0, 6\].*at most 6"),
    (dict(input_lengths=[6, -1]), ValueError, "input_lengths: .*at least 0"),
    (dict(target_lengths=[2, -1]), ValueError, "target_lengths: expected values >= 0"),
    (dict(input_lengths=np.array([6, 2 ** 64 - 1], np.uint64)), ValueError, "input_lengths"),
    (dict(targets=np.array([[1, 4], [3, 3]])), LabelError, r"targets: expected labels in \[0, 4\)"),
    (dict(targets=np.array([[1, 2], [-3, 3]])), LabelError, "got -3 for sample 1"),
    (dict(targets=np.array([[1, 2], [3, 0]])), ValueError, r"targets: expected labels other than blank \(0\)"),
    (dict(targets=np.array([[1, 2], [2 ** 64 - 1, 3]], np.uint64)), LabelError, "targets"),
])
def test_bad_input(change, exc, match):
    with pytest.raises(exc, match=match):
        call(**change)


def test_label_error_is_value_and_index_error():
    assert issubclass(LabelError, ValueError) and issubclass(LabelError, IndexError)


def test_bad_grad_output():
    with pytest.raises(ValueError, match="grad_output: expected the loss's shape"):
        call(reduction="none", return_grad=True, grad_output=np.ones(3))
    with pytest.raises(ValueError, match="grad_output: expected a scalar"):
        call(return_grad=True, grad_output=np.ones(2))


def test_bad_constructor_arguments():
    with pytest.raises(TypeError):
        closs.CTCLoss(size_average=True)  # no legacy arguments, as torch
    with pytest.raises(TypeError, match="blank"):
        closs.CTCLoss(blank="0")
    with pytest.raises(ValueError, match="reduction"):
        closs.CTCLoss(reduction="batchmean")
    crit = closs.CTCLoss(blank=7)
    with pytest.raises(ValueError, match="blank"):
        crit(*GOOD.values())
