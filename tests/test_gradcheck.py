"""Finite-difference checks of every gradient closs returns (float64).

4th-order central differences  (-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / 12h
of closs's own value, element by element, against closs's analytic gradient:
for every loss and option set, every reduction (with a non-trivial upstream
gradient), GaussianNLL's var gradient for every var shape, broadcast targets,
and the weighted functionals.  Inputs are drawn away from the kinks
(|input - target| = 0, beta, delta; var = eps), so the loss is smooth within
±2h of every point.
"""
import warnings

import numpy as np
import pytest

import closs.functional as CF

from conftest import CASE_IDS, CASES, REDUCTIONS, as_tuple, make_args, rng_for

H = 1e-4


def objective(case, args, reduction, grad_output, kwargs=None):
    """phi(args) = <grad_output, loss>: its gradient is what backward returns."""
    kw = dict(case.kwargs if kwargs is None else kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = case.closs_func(*args, reduction=reduction, **kw)
    if reduction == "none":
        return float(np.sum(np.asarray(grad_output) * value))
    return float(grad_output * value)


def fd_gradient(phi, args, k, h=H):
    """d phi / d args[k] by 4th-order central differences (args[k] may be a float)."""
    base = args[k]
    if isinstance(base, float):
        def at(t):
            a = list(args)
            a[k] = base + t
            return phi(a)
        return (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    grad = np.zeros(np.shape(base))
    for idx in np.ndindex(grad.shape):
        def at(t):
            a = list(args)
            a[k] = np.array(base, dtype=np.float64, copy=True)
            a[k][idx] += t
            return phi(a)
        grad[idx] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    return grad


def check_fd(case, args, reduction, grad_output, *, kwargs=None, wrt=None):
    kw = dict(case.kwargs if kwargs is None else kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, grads = case.closs_func(*args, reduction=reduction, return_grad=True,
                                   grad_output=grad_output, **kw)
    grads = as_tuple(grads)
    if wrt is None:
        wrt = (0, 2) if case.nargs == 3 else (0,)
    assert len(grads) == len(wrt)
    phi = lambda a: objective(case, a, reduction, grad_output, kw)  # noqa: E731
    for g, k in zip(grads, wrt):
        numeric = fd_gradient(phi, args, k)
        assert np.shape(g) == np.shape(numeric), f"gradient {k}: shape"
        scale = max(1.0, float(np.max(np.abs(numeric))) if np.size(numeric) else 1.0)
        np.testing.assert_allclose(np.asarray(g, np.float64), numeric, rtol=1e-7,
                                   atol=1e-9 * scale, err_msg=f"gradient w.r.t. argument {k}")


def _grad_output(rng, reduction, shape):
    if reduction == "none":
        return rng.uniform(-2, 2, shape)
    return float(rng.uniform(0.5, 2.0))


@pytest.mark.parametrize("shape", [(), (6,), (2, 3)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fd(case, reduction, shape):
    rng = rng_for("fd", case.id, reduction, shape)
    args = make_args(case, rng, shape, np.float64, smooth=True)
    check_fd(case, args, reduction, _grad_output(rng, reduction, shape))


GAUSSIAN = [c for c in CASES if c.func == "gaussian_nll_loss"]
VAR_SHAPES = [((3, 4), (3, 4)), ((3, 4), (3,)), ((3, 4), (3, 1)), ((3, 4), (1, 4)),
              ((2, 2, 3), (2, 2)), ((2, 2, 3), (2, 1, 3)), ((2, 2, 3), (1, 2, 3)),
              ((4,), ()), ((4,), (1,)), ((3, 4), "float"), ((4,), "float"), ((), "float")]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shapes", VAR_SHAPES, ids=lambda s: f"{s[0]}-var{s[1]}")
@pytest.mark.parametrize("case", GAUSSIAN, ids=[c.id for c in GAUSSIAN])
def test_fd_gaussian_var(case, shapes, reduction):
    """The var gradient, summed over the axes var broadcasts along; a Python
    float var gets d value / d var of the scalar."""
    shape, vshape = shapes
    rng = rng_for("fdvar", case.id, shapes, reduction)
    x, y, var = make_args(case, rng, shape, np.float64, smooth=True,
                          var_shape=() if vshape == "float" else vshape)
    if vshape == "float":
        var = float(var)
    check_fd(case, [x, y, var], reduction, _grad_output(rng, reduction, shape))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shapes", [((2, 1), (2, 3)), ((3,), (2, 3)), ((), (4,)),
                                    ((1, 3), (2, 1))], ids=str)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fd_broadcast_target(case, shapes, reduction):
    """A target that broadcasts input up: the input gradient sums over the copies."""
    shape, tshape = shapes
    rng = rng_for("fdb", case.id, shapes, reduction)
    args = make_args(case, rng, shape, np.float64, smooth=True, target_shape=tshape)
    out = np.broadcast_shapes(shape, tshape)
    check_fd(case, args, reduction, _grad_output(rng, reduction, out))


WEIGHTED = [c for c in CASES if c.func in ("l1_loss", "mse_loss", "huber_loss")]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", WEIGHTED, ids=[c.id for c in WEIGHTED])
def test_fd_weighted(case, reduction):
    rng = rng_for("fdw", case.id, reduction)
    args = make_args(case, rng, (3, 4), np.float64, smooth=True)
    kw = dict(case.kwargs, weight=rng.uniform(0.1, 2.0, (3, 4)))
    check_fd(case, args, reduction, _grad_output(rng, reduction, (3, 4)), kwargs=kw)


def test_fd_gaussian_var_below_eps_is_not_the_true_derivative():
    """Documents torch's convention (spec §0.6/§11): below eps the loss does
    not depend on var (FD derivative 0), yet the returned var gradient is the
    one at the clamped value, 0.5 (1/eps - d^2/eps^2)."""
    x, y, var = np.array([0.0]), np.array([0.5]), np.array([0.1])
    eps = 0.3
    _, (_, gv) = CF.gaussian_nll_loss(x, y, var, eps=eps, reduction="sum", return_grad=True)
    fd = fd_gradient(lambda a: float(CF.gaussian_nll_loss(*a, eps=eps, reduction="sum")),
                     [x, y, var], 2, h=1e-5)
    assert abs(fd[0]) < 1e-8
    assert gv[0] == pytest.approx(0.5 * (1 / eps - 0.25 / eps ** 2), rel=1e-14)
