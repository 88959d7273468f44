"""The public API contract (shared/API.md) for the regression losses:
names, signatures, repr, result types, backward before forward, and every
"Bad input" case that applies to L1/MSE/SmoothL1/Huber/PoissonNLL/GaussianNLL:
exception type, and a message that names the argument (and what was given).
"""
import inspect
import re
import warnings

import numpy as np
import pytest

import closs
import closs.functional as CF

from conftest import BASIC_CASES, BASIC_IDS, CASES, REDUCTIONS, as_tuple, make_args, rng_for

CLASSES = ["L1Loss", "MSELoss", "SmoothL1Loss", "HuberLoss", "PoissonNLLLoss",
           "GaussianNLLLoss"]
FUNCTIONS = ["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss", "poisson_nll_loss",
             "gaussian_nll_loss"]
P = inspect.Parameter

# torch 2.13's constructor and functional signatures (spec §1, §2, §8-§11)
CLASS_SIGNATURES = {
    "L1Loss": [("size_average", None), ("reduce", None), ("reduction", "mean")],
    "MSELoss": [("size_average", None), ("reduce", None), ("reduction", "mean")],
    "SmoothL1Loss": [("size_average", None), ("reduce", None), ("reduction", "mean"),
                     ("beta", 1.0)],
    "HuberLoss": [("reduction", "mean"), ("delta", 1.0)],
    "PoissonNLLLoss": [("log_input", True), ("full", False), ("size_average", None),
                       ("eps", 1e-08), ("reduce", None), ("reduction", "mean")],
    "GaussianNLLLoss": [("full", False), ("eps", 1e-06), ("reduction", "mean")],
}
FUNCTION_SIGNATURES = {
    "l1_loss": ["input", "target", ("size_average", None), ("reduce", None),
                ("reduction", "mean"), ("weight", None)],
    "mse_loss": ["input", "target", ("size_average", None), ("reduce", None),
                 ("reduction", "mean"), ("weight", None)],
    "smooth_l1_loss": ["input", "target", ("size_average", None), ("reduce", None),
                       ("reduction", "mean"), ("beta", 1.0)],
    "huber_loss": ["input", "target", ("reduction", "mean"), ("delta", 1.0),
                   ("weight", None)],
    "poisson_nll_loss": ["input", "target", ("log_input", True), ("full", False),
                         ("size_average", None), ("eps", 1e-08), ("reduce", None),
                         ("reduction", "mean")],
    "gaussian_nll_loss": ["input", "target", "var", ("full", False), ("eps", 1e-06),
                          ("reduction", "mean")],
}


def _params(fn, skip_self=True):
    ps = list(inspect.signature(fn).parameters.values())
    return ps[1:] if skip_self and ps and ps[0].name == "self" else ps


# ---------------------------------------------------------------------------------
# names and signatures
# ---------------------------------------------------------------------------------


def test_public_names():
    for name in CLASSES:
        assert name in closs.__all__
        assert isinstance(getattr(closs, name), type)
    for name in FUNCTIONS:
        assert callable(getattr(CF, name))
        assert name in CF.__all__
    assert closs.functional is CF
    assert callable(closs.set_num_threads) and callable(closs.get_num_threads)
    assert isinstance(closs.__version__, str)
    assert re.match(r"^\d+\.\d+", closs.__version__)


@pytest.mark.parametrize("name", CLASSES)
def test_class_signature(name):
    params = _params(getattr(closs, name).__init__)
    got = [(p.name, p.default) for p in params]
    assert got == CLASS_SIGNATURES[name]
    if name == "GaussianNLLLoss":  # keyword-only, as torch
        assert all(p.kind is P.KEYWORD_ONLY for p in params)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functional_signature(name):
    params = _params(getattr(CF, name), skip_self=False)
    expected = FUNCTION_SIGNATURES[name]
    head = params[:len(expected)]
    got = [p.name if p.default is P.empty else (p.name, p.default) for p in head]
    assert got == expected
    assert all(p.kind is P.POSITIONAL_OR_KEYWORD for p in head)
    extra = {p.name: p for p in params[len(expected):]}
    assert extra["return_grad"].default is False
    assert "grad_output" in extra


@pytest.mark.parametrize("name", CLASSES + FUNCTIONS)
def test_signatures_match_torch(torch, name):
    if name in CLASSES:
        mine = _params(getattr(closs, name).__init__)
        theirs = _params(getattr(torch.nn, name).__init__)
    else:
        mine = _params(getattr(CF, name), skip_self=False)
        theirs = _params(getattr(torch.nn.functional, name), skip_self=False)
    assert [(p.name, p.default, p.kind) for p in mine[:len(theirs)]] == [
        (p.name, p.default, p.kind) for p in theirs]


@pytest.mark.parametrize("name", CLASSES)
def test_repr(name):
    r = repr(getattr(closs, name)())
    assert r.startswith(name + "(") and r.endswith(")")
    assert "reduction='sum'" in repr(getattr(closs, name)(reduction="sum"))
    assert "0.25" in repr(closs.SmoothL1Loss(beta=0.25))
    assert "2.5" in repr(closs.HuberLoss(delta=2.5))


@pytest.mark.parametrize("name", CLASSES)
def test_backward_before_forward(name):
    crit = getattr(closs, name)()
    with pytest.raises(RuntimeError, match="forward"):
        crit.backward()
    with pytest.raises(RuntimeError):
        crit.backward(1.0)


@pytest.mark.parametrize("name", CLASSES)
def test_call_is_forward(name):
    case = next(c for c in CASES if c.cls == name)
    args = make_args(case, rng_for("call", name), (3, 2))
    crit = case.closs_cls(**case.kwargs)
    assert crit(*args) == crit.forward(*args)


@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_result_types(case):
    for dtype in (np.float32, np.float64):
        args = make_args(case, rng_for("types", case.id), (2, 3), dtype)
        for reduction in REDUCTIONS:
            crit = case.closs_cls(reduction=reduction, **case.kwargs)
            value = crit(*args)
            grads = as_tuple(crit.backward())
            if reduction == "none":
                assert type(value) is np.ndarray
                assert value.shape == (2, 3) and value.dtype == dtype
            else:
                assert type(value) is np.dtype(dtype).type
            for g, a in zip(grads, args[::2]):
                assert type(g) is np.ndarray and g.shape == a.shape and g.dtype == dtype
            assert len(grads) == (2 if case.nargs == 3 else 1)


# ---------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------


def _call_class(case, args, **ctor):
    """Construct and run forward: closs may validate at either point."""
    kw = dict(case.kwargs)
    kw.update(ctor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return case.closs_cls(**kw)(*args)


def _call_func(case, args, **kwargs):
    kw = dict(case.kwargs)
    kw.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return case.closs_func(*args, **kw)


def _good_args(case, shape=(3, 4)):
    return make_args(case, rng_for("bad", case.id), shape)


@pytest.mark.parametrize("reduction", ["foo", "batchmean", "", "MEAN", None, 1])
@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_bad_reduction(case, reduction):
    args = _good_args(case)
    with pytest.raises(ValueError, match="reduction") as e1:
        _call_class(case, args, reduction=reduction)
    with pytest.raises(ValueError, match="reduction") as e2:
        _call_func(case, args, reduction=reduction)
    if reduction:
        for e in (e1, e2):
            assert str(reduction) in str(e.value)


@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_elementwise_mean(case):
    """Deprecated alias of 'mean' (with a UserWarning) for the losses that go
    through torch's reduction enum; ValueError for PoissonNLL and GaussianNLL
    (spec §0.1)."""
    args = _good_args(case)
    if case.func in ("poisson_nll_loss", "gaussian_nll_loss"):
        with pytest.raises(ValueError, match="reduction"):
            _call_class(case, args, reduction="elementwise_mean")
        with pytest.raises(ValueError, match="reduction"):
            _call_func(case, args, reduction="elementwise_mean")
        return
    mean = case.closs_func(*args, **case.kwargs)
    with pytest.warns(UserWarning, match="elementwise_mean"):
        crit = case.closs_cls(reduction="elementwise_mean", **case.kwargs)
        v1 = crit(*args)
    with pytest.warns(UserWarning, match="elementwise_mean"):
        v2 = case.closs_func(*args, reduction="elementwise_mean", **case.kwargs)
    assert v1 == mean and v2 == mean


@pytest.mark.parametrize("func", ["l1_loss", "mse_loss", "huber_loss"])
def test_weighted_rejects_elementwise_mean(func):
    x = np.ones(3)
    with pytest.raises(ValueError, match="reduction"):
        getattr(CF, func)(x, x, reduction="elementwise_mean", weight=np.ones(3))
    with pytest.raises(ValueError, match="reduction"):
        getattr(CF, func)(x, x, reduction="foo", weight=np.ones(3))


NON_FLOAT_INPUTS = [
    ("int64", lambda a: a.astype(np.int64)),
    ("int32", lambda a: a.astype(np.int32)),
    ("uint8", lambda a: a.astype(np.uint8)),
    ("bool", lambda a: a > 0),
    ("complex128", lambda a: a.astype(np.complex128)),
    ("int list", lambda a: a.astype(np.int64).tolist()),
    ("str", lambda a: a.astype(str)),
    ("object", lambda a: a.astype(object)),
]


@pytest.mark.parametrize("kind, convert", NON_FLOAT_INPUTS, ids=[k for k, _ in NON_FLOAT_INPUTS])
@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_non_float_input(case, kind, convert):
    """A non-floating input raises TypeError naming `input` (API.md)."""
    args = _good_args(case)
    args[0] = convert(np.abs(args[0]) * 3)
    with pytest.raises(TypeError, match="input"):
        _call_class(case, args)
    with pytest.raises(TypeError, match="input"):
        _call_func(case, args)
    with pytest.raises(TypeError, match="input"):
        case.closs_cls(**case.kwargs).value_and_grad(*args)


@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_python_int_input(case):
    args = [2, 1] + ([1.0] if case.nargs == 3 else [])
    with pytest.raises(TypeError, match="input"):
        _call_func(case, args)
    # a Python float input is fine, and an integer target too
    v = _call_func(case, [2.0, 1] + args[2:], reduction="sum")
    assert type(v) is np.float64


@pytest.mark.parametrize("kind, convert", NON_FLOAT_INPUTS[4:5] + NON_FLOAT_INPUTS[6:],
                         ids=["complex128", "str", "object"])
@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_non_real_target(case, kind, convert):
    args = _good_args(case)
    args[1] = convert(args[1])
    with pytest.raises(TypeError, match="target"):
        _call_func(case, args)


@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
@pytest.mark.parametrize("target_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8,
                                          np.uint16, np.uint64])
def test_integer_targets_accepted(case, target_dtype):
    args = _good_args(case)
    args[1] = np.round(np.abs(args[1])).astype(target_dtype)
    expected = _call_func(case, [args[0], args[1].astype(np.float64)] + args[2:])
    assert _call_func(case, args) == expected
    assert _call_class(case, args) == expected


SHAPE_MISMATCH = [((3,), (2,)), ((2, 3), (3, 2)), ((4, 3), (2, 3)), ((2, 3), (2, 3, 2))]


@pytest.mark.parametrize("shapes", SHAPE_MISMATCH, ids=str)
@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_target_does_not_broadcast(case, shapes):
    shape, tshape = shapes
    rng = rng_for("mismatch", case.id, shapes)
    args = make_args(case, rng, shape)
    args[1] = rng.uniform(0, 1, tshape)
    for call in (_call_class, _call_func):
        with pytest.raises(ValueError, match="target") as e:
            call(case, args)
        assert str(tshape) in str(e.value)


@pytest.mark.parametrize("case", BASIC_CASES, ids=BASIC_IDS)
def test_bad_grad_output(case):
    args = _good_args(case, (3, 4))
    bad_none = [np.ones((4, 3)), np.ones(12), np.ones((3, 4, 1)), 1.0 * np.ones((1, 4))]
    for g in bad_none:
        crit = case.closs_cls(reduction="none", **case.kwargs)
        crit(*args)
        with pytest.raises(ValueError, match="grad_output") as e:
            crit.backward(g)
        assert str(np.shape(g)) in str(e.value)
        with pytest.raises(ValueError, match="grad_output"):
            case.closs_cls(reduction="none", **case.kwargs).value_and_grad(*args,
                                                                           grad_output=g)
        with pytest.raises(ValueError, match="grad_output"):
            case.closs_func(*args, reduction="none", return_grad=True, grad_output=g,
                            **case.kwargs)
    for reduction in ("mean", "sum"):
        for g in (np.ones((3, 4)), np.ones(1), [1.0, 2.0]):
            crit = case.closs_cls(reduction=reduction, **case.kwargs)
            crit(*args)
            with pytest.raises(ValueError, match="grad_output"):
                crit.backward(g)
            with pytest.raises(ValueError, match="grad_output"):
                case.closs_func(*args, reduction=reduction, return_grad=True, grad_output=g,
                                **case.kwargs)
        crit = case.closs_cls(reduction=reduction, **case.kwargs)
        crit(*args)
        with pytest.raises((TypeError, ValueError), match="grad_output"):
            crit.backward("abc")


def test_grad_output_has_the_broadcast_loss_shape():
    x = np.ones((2, 1))
    y = np.zeros((2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crit = closs.MSELoss(reduction="none")
        crit(x, y)
        with pytest.raises(ValueError, match="grad_output"):
            crit.backward(np.ones((2, 1)))
        g = crit.backward(np.ones((2, 3)))
    assert g.shape == (2, 1)


@pytest.mark.parametrize("beta", [-1.0, -1e-12, -np.inf, np.nan])
def test_negative_beta(beta):
    x = np.ones(3)
    with pytest.raises(ValueError, match="beta"):
        closs.SmoothL1Loss(beta=beta)(x, x)
    with pytest.raises(ValueError, match="beta"):
        CF.smooth_l1_loss(x, x, beta=beta)


@pytest.mark.parametrize("delta", [0.0, -0.0, -1.0, -np.inf, np.nan])
def test_non_positive_delta(delta):
    x = np.ones(3)
    with pytest.raises(ValueError, match="delta"):
        closs.HuberLoss(delta=delta)(x, x)
    with pytest.raises(ValueError, match="delta"):
        CF.huber_loss(x, x, delta=delta)


@pytest.mark.parametrize("name, value", [("beta", "a"), ("beta", None), ("delta", "a"),
                                         ("delta", None), ("delta", [1.0])])
def test_non_numeric_hyper_parameters(name, value):
    cls = closs.SmoothL1Loss if name == "beta" else closs.HuberLoss
    fn = CF.smooth_l1_loss if name == "beta" else CF.huber_loss
    x = np.ones(3)
    with pytest.raises(TypeError, match=name):
        cls(**{name: value})(x, x)
    with pytest.raises(TypeError, match=name):
        fn(x, x, **{name: value})


@pytest.mark.parametrize("var", [np.array([[1.0, -0.5, 1.0, 1.0]] * 3), -1.0,
                                 np.array([-1e-300, 1.0, 1.0]), -np.inf])
def test_negative_var(var):
    x = np.ones((3, 4))
    case = next(c for c in CASES if c.func == "gaussian_nll_loss")
    with pytest.raises(ValueError, match="var"):
        _call_class(case, [x, x, var])
    with pytest.raises(ValueError, match="var"):
        _call_func(case, [x, x, var])


@pytest.mark.parametrize("shapes", [((3, 4), (4,)), ((3, 4), (1, 1)), ((3, 4), ()),
                                    ((3, 4), (3, 4, 1)), ((3, 4), (2, 4)), ((3, 4), (3, 5)),
                                    ((3, 4), (12,)), ((2, 3, 4), (3, 4)), ((2, 3, 4), (2, 1, 1)),
                                    ((4,), (2,)), ((), (1,))], ids=str)
def test_bad_var_shape(shapes):
    """var must have input's shape, input.shape[:-1], or input's shape with one
    differing dim where var has size 1 (spec §11)."""
    shape, vshape = shapes
    x = np.ones(shape)
    var = np.ones(vshape)
    case = next(c for c in CASES if c.func == "gaussian_nll_loss")
    with pytest.raises(ValueError, match="var") as e:
        _call_class(case, [x, x, var])
    assert str(vshape) in str(e.value)
    with pytest.raises(ValueError, match="var"):
        _call_func(case, [x, x, var])


def test_bad_var_shape_torch_agrees(torch):
    for shape, vshape in [((3, 4), (4,)), ((3, 4), (1, 1)), ((3, 4), ()), ((3, 4), (3, 5))]:
        with pytest.raises(ValueError, match="var is of incorrect size"):
            torch.nn.functional.gaussian_nll_loss(torch.ones(shape), torch.ones(shape),
                                                  torch.ones(vshape))


@pytest.mark.parametrize("func", ["l1_loss", "mse_loss", "huber_loss"])
@pytest.mark.parametrize("wshape", [(3,), (4, 3), (1, 3), (2, 3, 4)], ids=str)
def test_bad_weight_shape(func, wshape):
    x = np.ones((3, 4))
    with pytest.raises(ValueError, match="weight"):
        getattr(CF, func)(x, x, weight=np.ones(wshape))


def test_modules_have_no_weight():
    """torch's L1Loss / MSELoss / HuberLoss modules reject weight= (spec §1)."""
    for name in ("L1Loss", "MSELoss", "HuberLoss"):
        with pytest.raises(TypeError):
            getattr(closs, name)(weight=np.ones(3))


@pytest.mark.parametrize("name", ["HuberLoss", "GaussianNLLLoss", "huber_loss",
                                  "gaussian_nll_loss"])
@pytest.mark.parametrize("legacy", ["size_average", "reduce"])
def test_no_legacy_args(name, legacy):
    """HuberLoss and GaussianNLLLoss have no size_average / reduce (spec §0.2)."""
    if name[0].isupper():
        with pytest.raises(TypeError, match=legacy):
            getattr(closs, name)(**{legacy: False})
    else:
        x = np.ones(3)
        args = [x, x] + ([x] if name == "gaussian_nll_loss" else [])
        with pytest.raises(TypeError, match=legacy):
            getattr(CF, name)(*args, **{legacy: False})


def test_gaussian_positional_options_rejected():
    """GaussianNLLLoss's options are keyword-only, as torch's."""
    with pytest.raises(TypeError):
        closs.GaussianNLLLoss(True)


def test_gaussian_var_nan_passes_check():
    """NaN var is not negative: no error, nan loss (spec §11)."""
    v = CF.gaussian_nll_loss(np.ones(2), np.zeros(2), np.array([np.nan, 1.0]),
                             reduction="none")
    assert np.isnan(v[0]) and np.isfinite(v[1])


@pytest.mark.parametrize("flag", ["log_input", "full"])
@pytest.mark.parametrize("value", [True, False, 1, 0, np.bool_(True)])
def test_bool_like_flags_accepted(flag, value):
    x = np.linspace(0.5, 2, 5)
    v = CF.poisson_nll_loss(x, x, **{flag: value})
    assert v == CF.poisson_nll_loss(x, x, **{flag: bool(value)})
    assert closs.PoissonNLLLoss(**{flag: value})(x, x) == v
    g = CF.gaussian_nll_loss(x, x, x, full=value)
    assert g == CF.gaussian_nll_loss(x, x, x, full=bool(value))


@pytest.mark.parametrize("name", CLASSES + FUNCTIONS)
def test_docstring_examples(name):
    """The examples in the docstrings of the regression losses are right
    (e.g. PoissonNLL of [2,4,6] vs [1,3,5], log_input=False: spec §25 #13)."""
    import doctest

    obj = getattr(closs, name) if name in CLASSES else getattr(CF, name)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(obj, name, globs={})
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} failing docstring example(s) in {name}"
