"""Loss functions and their gradients, one function per loss, with the names
and signatures of ``torch.nn.functional``.

Every function also takes ``return_grad=False``; with ``return_grad=True`` it
returns ``(value, grad)`` exactly as the loss class's ``value_and_grad`` does,
and ``grad_output`` (keyword) is the upstream gradient: a scalar for a reduced
loss, an array of the loss's shape for ``reduction='none'``.  With
``return_grad=True``, ``grad_out`` (keyword) takes preallocated gradient
buffers as the classes' ``value_and_grad`` does: the gradient is written into
them and they are returned.

How a call runs: validate and normalise the arguments into operands (once),
run exactly one kernel sweep that computes the value, the gradient or both,
then finish the reduction here (``_reduce``).  The loss classes in
``closs.modules`` use the same operand builders and the same sweep.
"""
import warnings
from collections import namedtuple

import numpy as np

from . import _validation as _v
from ._kernels import _ctc
from ._kernels import _features
from ._kernels import _margin
from ._kernels import _overlap
from ._kernels import _pointwise as _pw
from ._kernels import _softmax as _softmax

__all__ = [
    "l1_loss",
    "mse_loss",
    "smooth_l1_loss",
    "huber_loss",
    "poisson_nll_loss",
    "gaussian_nll_loss",
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "multilabel_soft_margin_loss",
    "margin_ranking_loss",
    "hinge_embedding_loss",
    "soft_margin_loss",
    "sigmoid_focal_loss",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "ctc_loss",
    "dice_loss",
    "tversky_loss",
    "cosine_embedding_loss",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
]

# ----------------------------------------------------------------------------------
# Pointwise losses: validated Operands, then one sweep of
# closs/_kernels/_pointwise.pyx (`evaluate`), which also allocates the outputs
# and finishes the reduction (kernels return sums, pairwise in double).
# ----------------------------------------------------------------------------------

_Operands = _pw.Operands
_same_layout = _pw.same_layout
_evaluate = _pw.evaluate


def _finish(ops, reduction, return_grad, grad_output, grad_out, args, grad_args=(0,),
            sweep=_evaluate):
    """What a functional returns: the value of one sweep, or (value, grad) with
    return_grad.  grad_out: preallocated gradient buffers, as the classes'
    value_and_grad takes them (args: the call's arguments; grad_args: the
    indices of those with a gradient).  Every family's sweep has the signature
    of _evaluate."""
    if grad_out is None:
        value, grad = sweep(ops, reduction, True, return_grad, grad_output)
        return (value, grad) if return_grad else value
    if not return_grad:
        raise ValueError("grad_out: expected return_grad=True (the buffers receive the "
                         "gradient), got grad_out without it")
    outs = _v.grad_out(grad_out, args, grad_args, (grad_output,))
    value, grad = sweep(ops, reduction, True, True, grad_output, outs)
    return value, _v.deliver(grad, outs)


def _broadcast_operands(arrays, shape):
    """Each array as a C-contiguous array of `shape` (a copy only where needed)."""
    return [
        None if arr is None
        else _v.contiguous(arr if arr.shape == shape else np.broadcast_to(arr, shape))
        for arr in arrays
    ]


def _difference_operands(kind, input, target, weight, p0=0.0, *, weighted_mean_by="weight"):
    """Operands of the losses of input - target (L1, MSE, SmoothL1, Huber).

    A target of another shape broadcasts with torch's warning.  The functional
    `weight` must have input's shape; a weighted 'mean' divides by sum(weight)
    (L1, MSE) or by the number of elements (Huber), as torch.
    """
    if weight is None and _same_layout(input, target):  # the common case, kept fast
        return _Operands(kind, input, target, None, None, p0)
    a = _v.float_array(input, "input")
    b = _v.operand(target, "target", a.dtype)
    w = None if weight is None else _v.operand(weight, "weight", a.dtype)
    count = None
    if w is not None:
        _v.same_shape(w, a.shape, "weight")
        if weighted_mean_by == "weight":
            count = float(np.sum(w, dtype=np.float64))
    if b.shape == a.shape:
        a, b, w = _broadcast_operands((a, b, w), a.shape)
        return _Operands(kind, a, b, None, w, p0, count=count)
    _v.warn_target_size(a.shape, b.shape)
    shape = _v.broadcast_shape(a.shape, b.shape, "input", "target")
    a_shape = a.shape
    a, b, w = _broadcast_operands((a, b, w), shape)
    return _Operands(kind, a, b, None, w, p0, a_shape=a_shape, count=count)


def _weighted_reduction(reduction, size_average, reduce, weight):
    # torch checks the weighted functionals' reduction with a plain comparison
    if weight is None:
        return _v.reduction(reduction, size_average, reduce)
    return _v.reduction(reduction, size_average, reduce, alias=False)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None, *,
            return_grad=False, grad_output=None, grad_out=None):
    """Mean absolute error: ``l = |input - target|`` (times ``weight`` if given).

    Parameters
    ----------
    input, target : array_like
        Any shape; target broadcasts against input with torch's warning.
    reduction : {'mean', 'sum', 'none'}
        'mean' divides by the number of elements, or by ``weight.sum()`` when
        ``weight`` (input's shape) is given.
    return_grad : bool
        Also return d value / d input; the derivative at ``input == target``
        is 0, as torch's ``sign(0)``.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.l1_loss(np.array([1., 2., 3.]), np.array([1., 2., 5.]))
    np.float64(0.6666666666666666)
    """
    reduction = _weighted_reduction(reduction, size_average, reduce, weight)
    ops = _difference_operands(_pw.L1, input, target, weight)
    return _finish(ops, reduction, return_grad, grad_output, grad_out, (input, target, weight))


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None, *,
             return_grad=False, grad_output=None, grad_out=None):
    """Mean squared error: ``l = (input - target)**2`` (times ``weight`` if given).

    Shapes, ``weight`` and reductions as :func:`l1_loss`; the gradient is
    ``2 (input - target)`` times the reduction's scale.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> value, grad = F.mse_loss(np.array([1., 2., 3.]), np.array([1., 2., 5.]), return_grad=True)
    >>> value, grad
    (np.float64(1.3333333333333333), array([ 0.        ,  0.        , -1.33333333]))
    """
    reduction = _weighted_reduction(reduction, size_average, reduce, weight)
    ops = _difference_operands(_pw.MSE, input, target, weight)
    return _finish(ops, reduction, return_grad, grad_output, grad_out, (input, target, weight))


def _smooth_l1_operands(input, target, beta):
    beta = _v.non_negative(beta, "beta")
    if beta == 0.0:  # torch computes plain L1 (value and gradient) for beta == 0
        return _difference_operands(_pw.L1, input, target, None)
    return _difference_operands(_pw.SMOOTH_L1, input, target, None, beta)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0, *,
                   return_grad=False, grad_output=None, grad_out=None):
    """Smooth L1: ``0.5 d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta``,
    with ``d = input - target``.

    ``beta = 0`` is exactly :func:`l1_loss`; ``beta < 0`` raises ValueError.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.smooth_l1_loss(np.array([2., 4., 6.]), np.array([1., 3., 5.]))
    np.float64(0.5)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ops = _smooth_l1_operands(input, target, beta)
    return _finish(ops, reduction, return_grad, grad_output, grad_out, (input, target))


def _huber_operands(input, target, delta, weight=None):
    delta = _v.positive(delta, "delta")
    return _difference_operands(_pw.HUBER, input, target, weight, delta,
                                weighted_mean_by="count")


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None, *, return_grad=False,
               grad_output=None, grad_out=None):
    """Huber loss: ``0.5 d**2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``.

    ``delta`` must be > 0.  With ``weight`` (input's shape), 'mean' divides the
    weighted sum by the number of elements (not by the sum of weights), as torch.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.huber_loss(np.array([0., 3.]), np.array([0.5, 0.]), delta=2.0)
    np.float64(2.0625)
    """
    reduction = _weighted_reduction(reduction, None, None, weight)
    ops = _huber_operands(input, target, delta, weight)
    return _finish(ops, reduction, return_grad, grad_output, grad_out, (input, target, weight))


def _silent_broadcast(a, others):
    """The shape a and the other (name, array) operands broadcast to (no warning)."""
    shape = a.shape
    for name, arr in others:
        if arr is not None and arr.shape != shape:
            shape = _v.broadcast_shape(shape, arr.shape, "input", name)
    return shape


def _poisson_operands(log_input, target, log_input_flag, full, eps):
    """log_input_flag, full (bools) and eps (a float) come validated."""
    kind = _pw.POISSON_LOG if log_input_flag else _pw.POISSON
    if _same_layout(log_input, target):  # the common case, kept fast
        return _Operands(kind, log_input, target, None, None, eps, float(full))
    a = _v.float_array(log_input, "input")
    b = _v.operand(target, "target", a.dtype)
    shape = _silent_broadcast(a, [("target", b)])
    a_shape = a.shape
    a, b = _broadcast_operands((a, b), shape)
    return _Operands(kind, a, b, None, None, eps, float(full), a_shape=a_shape)


def poisson_nll_loss(input, target, log_input=True, full=False, size_average=None, eps=1e-8,
                     reduce=None, reduction="mean", *, return_grad=False, grad_output=None,
                     grad_out=None):
    """Poisson negative log likelihood.

    ``log_input=True``: ``l = exp(input) - target * input``;
    ``log_input=False``: ``l = input - target * log(input + eps)``.
    ``full=True`` adds Stirling's term ``t log t - t + 0.5 log(2 pi t)`` where
    ``target > 1``.  target broadcasts silently against input.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.poisson_nll_loss(np.array([2., 4., 6.]), np.array([1., 3., 5.]), log_input=False)
    np.float64(-0.6036092102977416)
    """
    reduction = _v.reduction(reduction, size_average, reduce, alias=False)
    ops = _poisson_operands(input, target, _v.flag(log_input, "log_input"), _v.flag(full, "full"),
                            _v.real_number(eps, "eps"))
    return _finish(ops, reduction, return_grad, grad_output, grad_out, (input, target))


def _gaussian_var(var, input_shape, dtype):
    """torch's checks and shape rules for GaussianNLL's var; returns the array
    that broadcasts against input and the shapes of its gradient (as
    _gradient_like takes them)."""
    if not isinstance(var, np.ndarray) and np.ndim(var) == 0 and not isinstance(var, (list, tuple)):
        value = _v.real_number(var, "var")
        if value < 0:
            raise ValueError(f"var: expected entries >= 0 (var has negative entry/entries), "
                             f"got {value}")
        return np.asarray(value, dtype=dtype), None
    v = _v.operand(var, "var", dtype)
    if np.any(v < 0):
        raise _v.negative_var(v.min())
    if v.shape == input_shape:
        return v, (v.shape, v.shape)
    if v.shape == input_shape[:-1]:  # homoscedastic: one variance per row
        return v[..., None], (v.shape + (1,), v.shape)
    if v.ndim == len(input_shape) and sum(
            vs for xs, vs in zip(input_shape, v.shape) if xs != vs) == 1:
        return v, (v.shape, v.shape)
    raise ValueError(f"var: expected the shape of input {input_shape}, input.shape[:-1] "
                     f"{input_shape[:-1]} or a shape with one dimension of size 1 "
                     f"(var is of incorrect size), got {v.shape}")


def _gaussian_operands(input, target, var, full, eps):
    """full (a bool) and eps (a float) come validated."""
    if _same_layout(input, target) and _same_layout(input, var):  # the common case, kept fast
        return _Operands(_pw.GAUSSIAN, input, target, var, None, eps, float(full),
                         c_shape=(var.shape, var.shape), check=_pw.CHECK_VAR)
    a = _v.float_array(input, "input")
    b = _v.operand(target, "target", a.dtype)
    c, c_shape = _gaussian_var(var, a.shape, a.dtype)
    shape = _silent_broadcast(a, [("target", b), ("var", c)])
    a_shape = a.shape
    a, b, c = _broadcast_operands((a, b, c), shape)
    # grad_var in var's dtype when var is a float array of the other precision
    mixed = isinstance(var, np.ndarray) and var.dtype in _v.FLOAT_DTYPES and var.dtype != a.dtype
    grad_dtypes = (a.dtype, var.dtype) if mixed else None
    return _Operands(_pw.GAUSSIAN, a, b, c, None, eps, float(full), a_shape=a_shape,
                     c_shape=c_shape, grad_dtypes=grad_dtypes)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean", *,
                      return_grad=False, grad_output=None, grad_out=None):
    """Gaussian negative log likelihood:
    ``l = 0.5 (log v + (input - target)**2 / v)`` with ``v = max(var, eps)``,
    plus ``0.5 log(2 pi)`` if ``full``.

    var has input's shape, or input.shape[:-1], or input's shape with one
    dimension of size 1 (homoscedastic), or is a Python number.  With
    ``return_grad=True`` the gradient is ``(grad_input, grad_var)``; as in
    torch, the var gradient is not masked where the eps clamp is active.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.gaussian_nll_loss(np.array([1., 2.]), np.array([1.5, 2.]), np.array([0.5, 1.]))
    np.float64(-0.04828679513998632)
    """
    reduction = _v.reduction(reduction, allowed=_v.REDUCTIONS, alias=False)
    ops = _gaussian_operands(input, target, var, _v.flag(full, "full"), _v.real_number(eps, "eps"))
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (input, target, var), (0, 2))


# ----------------------------------------------------------------------------------
# Class-axis losses (cross-entropy, NLL): Operands over (outer, classes, inner),
# then one sweep of closs/_kernels/_softmax.pyx.
# ----------------------------------------------------------------------------------


def _class_layout(x):
    """(outer, classes, inner, the 'none' loss shape) of a (C,), (N, C) or
    (N, C, d1, ..., dK) input."""
    if x.ndim == 0:
        raise ValueError("input: expected an array of shape (C,), (N, C) or (N, C, d1, ..., dK), "
                         "got a 0-d array")
    if x.ndim == 1:
        return 1, x.shape[0], 1, ()
    inner = 1
    for d in x.shape[2:]:
        inner *= d
    # A zero spatial dim leaves no positions at all: say so with outer = 0 (the
    # kernels' layout choice looks at inner > 1 and would otherwise treat an
    # (N, C, 0) input as N rows of C contiguous values, past the empty buffers).
    outer = x.shape[0] if inner else 0
    return outer, x.shape[1], inner, (x.shape[0],) + x.shape[2:]


def _class_targets(target, x, loss_shape, probabilities=False):
    """Class indices as a flat C-contiguous int64 array of the 'none' loss's size
    (probabilities: the loss also takes probability targets, as the message says)."""
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        other = f" (or probabilities of input's shape {x.shape})" if probabilities else ""
        raise TypeError(f"target: expected an integer array of class indices{other}, "
                        f"got {_v._describe(t)} of shape {t.shape}")
    if x.ndim == 1:
        if t.shape not in ((), (1,)):
            raise ValueError(f"target: expected shape () or (1,) for a 1-D input (For 1D input, "
                             f"1D target must have size 1), got {t.shape}")
    elif t.ndim == 0 or t.shape[0] != x.shape[0]:
        got = t.shape[0] if t.ndim else 0
        raise ValueError(f"target: expected batch size {x.shape[0]} (Expected input batch_size "
                         f"({x.shape[0]}) to match target batch_size ({got})), got shape {t.shape}")
    elif t.shape != loss_shape:
        raise ValueError(f"target: expected shape {loss_shape} for input of shape {x.shape}, "
                         f"got {t.shape}")
    if t.dtype.kind == "u" and t.size and t.max() > np.iinfo(np.int64).max:
        raise IndexError(f"target: expected class indices below {x.shape[x.ndim > 1]}, "
                         f"got {t.max()}")
    return np.ascontiguousarray(t, dtype=np.int64).reshape(-1)


def _class_weight(weight, classes, dtype):
    if weight is None:
        return None
    w = _v.operand(weight, "weight", dtype)
    if w.shape != (classes,):
        raise ValueError(f"weight: expected shape ({classes},), one weight per class, "
                         f"got {w.shape}")
    return _v.contiguous(w)


def _class_options(ignore_index, label_smoothing):
    """Validated (ignore_index, label_smoothing) of cross-entropy and NLL."""
    if (type(ignore_index) is int and type(label_smoothing) is float  # the common case, fast
            and -2 ** 63 <= ignore_index < 2 ** 63 and 0.0 <= label_smoothing <= 1.0):
        return ignore_index, label_smoothing
    ignore_index = _v.integer(ignore_index, "ignore_index")
    if not -2 ** 63 <= ignore_index < 2 ** 63:  # torch's int64; else an OverflowError below
        raise ValueError(f"ignore_index: expected an integer in the int64 range, "
                         f"got {ignore_index}")
    smoothing = _v.real_number(label_smoothing, "label_smoothing")
    if smoothing > 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {smoothing}")
    return ignore_index, max(smoothing, 0.0)  # torch treats a negative value as 0


def _class_operands(input, target, weight, ignore_index, smoothing, probabilities):
    """Operands of cross-entropy (probabilities=True allows probability targets) and
    NLL; ignore_index and smoothing come validated from _class_options."""
    if weight is None and _softmax.plain_rows(input, target):  # the common case, kept fast
        outer, classes = input.shape
        count = _softmax.target_weight_sum(target, classes, ignore_index, None)
        return _softmax.Operands(input, outer, classes, 1, (outer,), target, None, None,
                                 ignore_index, smoothing, float(classes), count)
    x = _v.contiguous(_v.float_array(input, "input"))
    outer, classes, inner, loss_shape = _class_layout(x)
    w = _class_weight(weight, classes, x.dtype)
    weight_sum = float(classes) if w is None else float(np.sum(w, dtype=np.float64))
    if probabilities and np.shape(target) == x.shape:
        y = np.asarray(target)
        if y.dtype.kind != "f":
            raise TypeError(f"target: expected floating-point class probabilities of input's "
                            f"shape {x.shape}, got {_v._describe(y)}")
        if ignore_index >= 0:
            raise ValueError(f"ignore_index: expected a negative value with probability targets "
                             f"(not supported for floating point target), got {ignore_index}")
        prob = _v.contiguous(_v.operand(y, "target", x.dtype))
        # 'mean' divides by numel / C (nan for C = 0, as torch's 0 / 0)
        count = float(outer * inner) if classes else float("nan")
        return _softmax.Operands(x, outer, classes, inner, loss_shape, None, prob, w,
                                 ignore_index, smoothing, weight_sum, count)
    t = _class_targets(target, x, loss_shape, probabilities)
    count = _softmax.target_weight_sum(t, classes, ignore_index, w)
    return _softmax.Operands(x, outer, classes, inner, loss_shape, t, None, w, ignore_index,
                             smoothing, weight_sum, count)


def _cross_entropy_sweep(ops, *sweep_args):
    return _softmax.evaluate(ops, "ce", *sweep_args)


def _nll_sweep(ops, *sweep_args):
    return _softmax.evaluate(ops, "nll", *sweep_args)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0, *, return_grad=False, grad_output=None,
                  grad_out=None):
    """Cross-entropy of logits over the class axis (dim 1; dim 0 for a 1-D input).

    target: class indices (any integer dtype) of shape (), (N,) or
    (N, d1, ..., dK); or class probabilities of input's shape.  'mean' divides
    by the summed weight of the non-ignored targets (by N*d1*...*dK for
    probability targets).  Computed in one sweep per row: max, sum of
    exponentials, loss, gradient ``softmax - onehot`` (smoothing and weights
    folded in); never a full log-softmax array.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.cross_entropy(np.array([[0.1, 0.2, 0.3]]), np.array([1]))
    np.float64(1.1019428482292442)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ignore_index, smoothing = _class_options(ignore_index, label_smoothing)
    ops = _class_operands(input, target, weight, ignore_index, smoothing, True)
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (input, target, weight), sweep=_cross_entropy_sweep)


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean", *, return_grad=False, grad_output=None, grad_out=None):
    """Negative log likelihood ``-weight[t] * input[t]`` over the class axis.

    Shapes, weight, ignore_index and the 'mean' denominator as
    :func:`cross_entropy` with class-index targets.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.nll_loss(np.array([[3., 1.], [2., 4.]]), np.array([0, 1]))
    np.float64(-3.5)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ignore_index = _class_options(ignore_index, 0.0)[0]
    ops = _class_operands(input, target, weight, ignore_index, 0.0, False)
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (input, target, weight), sweep=_nll_sweep)


# ----------------------------------------------------------------------------------
# Binary and distribution losses: more pointwise kernels.
# ----------------------------------------------------------------------------------


def _weight_like(weight, shape, dtype, name="weight"):
    """An element weight (or pos_weight) broadcast to the loss's shape; it may
    not be larger than the loss, as torch."""
    if weight is None:
        return None
    w = _v.operand(weight, name, dtype)
    if w.shape != shape:
        full = _v.broadcast_shape(shape, w.shape, "input", name)
        if full != shape:
            raise ValueError(f"{name}: expected a shape that broadcasts to input's shape "
                             f"{shape}, got {w.shape}")
        w = np.broadcast_to(w, shape)
    return _v.contiguous(w)


def _bce_operands(input, target, weight):
    """input and target in [0, 1] are checked by the sweep (CHECK_UNIT)."""
    if weight is None and _same_layout(input, target):  # the common case, kept fast
        return _Operands(_pw.BCE, input, target, check=_pw.CHECK_UNIT)
    a = _v.contiguous(_v.float_array(input, "input"))
    b = _v.contiguous(_v.operand(target, "target", a.dtype))
    _v.same_shape(b, a.shape, "target")
    return _Operands(_pw.BCE, a, b, None, _weight_like(weight, a.shape, a.dtype),
                     check=_pw.CHECK_UNIT)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean", *, return_grad=False, grad_output=None, grad_out=None):
    """Binary cross-entropy of probabilities:
    ``-w (y log x + (1 - y) log1p(-x))``, each log clamped at -100 (torch's forms).

    input and target (same shape) must lie in [0, 1] (ValueError otherwise);
    weight broadcasts to input's shape.  The gradient is torch's
    ``w (x - y) / max(x (1 - x), 1e-12)``.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.binary_cross_entropy(np.array([0.4, 0.1]), np.array([0.2, 0.8]))
    np.float64(1.2275294114572126)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ops = _bce_operands(input, target, weight)
    return _finish(ops, reduction, return_grad, grad_output, grad_out, (input, target, weight))


def _bce_logits_operands(input, target, weight, pos_weight):
    a = _v.contiguous(_v.float_array(input, "input"))
    b = _v.contiguous(_v.operand(target, "target", a.dtype))
    if b.shape != a.shape:
        raise ValueError(f"target: expected the shape of input {a.shape} (Target size must be "
                         f"the same as input size), got {b.shape}")
    w = _weight_like(weight, a.shape, a.dtype)
    if pos_weight is None:
        return _Operands(_pw.BCE_LOGITS, a, b, None, w)
    pw = _weight_like(pos_weight, a.shape, a.dtype, "pos_weight")
    return _Operands(_pw.BCE_LOGITS_POS, a, b, pw, w)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None, *, return_grad=False,
                                     grad_output=None, grad_out=None):
    """Binary cross-entropy of logits, in torch's stable form
    ``w ((1 - y) x - (1 + (pos_weight - 1) y) log_sigmoid(x))``.

    target has input's shape (not range-checked); weight and pos_weight
    broadcast against it (pos_weight usually one value per class, the last
    dim).  The gradient is ``w ((pos_weight y + 1 - y) sigmoid(x) - pos_weight y)``.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.binary_cross_entropy_with_logits(np.array([0.4, 0.1]), np.array([0.2, 0.8]))
    np.float64(0.7487...)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ops = _bce_logits_operands(input, target, weight, pos_weight)
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (input, target, weight, pos_weight))


_KL_MEAN_WARNING = (
    "reduction: 'mean' divides the total loss by both the batch size and the support size."
    "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
    "'mean' will be changed to behave the same as 'batchmean' in the next major release.")


def _kl_operands(input, target, log_target):
    kind = _pw.KL_LOG if _v.flag(log_target, "log_target") else _pw.KL
    if _same_layout(input, target):  # the common case, kept fast
        return _Operands(kind, input, target)
    a = _v.float_array(input, "input")
    b = _v.operand(target, "target", a.dtype)
    shape = _silent_broadcast(a, [("target", b)])
    a_shape = a.shape
    a, b = _broadcast_operands((a, b), shape)
    return _Operands(kind, a, b, a_shape=a_shape)


def _kl_reduction(reduction, size_average=None, reduce=None):
    """kl_div's reduction (it also has 'batchmean'), with torch's warning for a
    'mean' asked for by name (not by the legacy arguments or 'elementwise_mean')."""
    legacy = size_average is not None or reduce is not None
    if reduction == "mean" and not legacy:
        warnings.warn(_KL_MEAN_WARNING, UserWarning, stacklevel=3)
    return _v.reduction(reduction, size_average, reduce,
                        allowed=("none", "batchmean", "sum", "mean"))


def _kl_batchmean(reduction, ops, input_shape):
    """'batchmean' is a mean over input.shape[0] (1 for a 0-d input)."""
    if reduction == "batchmean":
        ops.count = input_shape[0] if input_shape else 1
        return "mean"
    return reduction


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False, *,
           return_grad=False, grad_output=None, grad_out=None):
    """Kullback-Leibler divergence of log-probabilities ``input`` from ``target``:
    ``xlogy(y, y) - y x`` (``exp(y) (y - x)`` with ``log_target=True``).

    'batchmean' divides the sum by ``input.shape[0]``; 'mean' divides by the
    number of elements (with torch's warning).  target broadcasts silently.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.kl_div(np.log([0.5, 0.2, 0.3]), np.array([0.1, 0.2, 0.7]), reduction="sum")
    np.float64(0.43216...)
    """
    resolved = _kl_reduction(reduction, size_average, reduce)
    ops = _kl_operands(input, target, log_target)
    if reduction == "batchmean" and resolved != "batchmean" and np.ndim(input):
        return _kl_legacy_batchmean(ops, resolved, np.shape(input)[0], return_grad, grad_output,
                                    grad_out, (input, target))
    resolved = _kl_batchmean(resolved, ops, np.shape(input))
    return _finish(ops, resolved, return_grad, grad_output, grad_out, (input, target))


def _kl_legacy_batchmean(ops, reduction, batch, return_grad, grad_output, grad_out, args):
    """torch's kl_div given size_average / reduce and reduction='batchmean': the
    legacy reduction, and then a division by input.shape[0] all the same."""
    if reduction != "none":
        ops.count = (ops.count if reduction == "mean" else 1) * batch
        return _finish(ops, "mean", return_grad, grad_output, grad_out, args)
    upstream = np.ones(ops.a.shape, ops.a.dtype) if grad_output is None else grad_output
    out = _finish(ops, "none", return_grad, np.asarray(upstream) / batch, grad_out, args)
    return (out[0] / batch, out[1]) if return_grad else out / batch


class _NoClassDimError(ValueError, IndexError):
    """A 0-d input where a class dim is needed: ValueError (a wrong shape, API.md)
    that is also torch's IndexError ("Dimension specified as -1 but tensor has no
    dimensions"), as NumPy's AxisError is both."""


def _multilabel_soft_margin_operands(input, target, weight):
    if weight is None and _same_layout(input, target) and input.ndim:  # the common case, kept fast
        return _Operands(_pw.SOFT_MARGIN_ML, input, target)
    a = _v.float_array(input, "input")
    if a.ndim == 0:
        raise _NoClassDimError("input: expected at least 1 dimension (the classes), "
                               "got a 0-d array")
    b = _v.operand(target, "target", a.dtype)
    shape = _silent_broadcast(a, [("target", b)])
    if shape != a.shape:
        raise ValueError(f"target: expected a shape that broadcasts to input's shape {a.shape}, "
                         f"got {b.shape}")
    a, b = _broadcast_operands((a, b), shape)
    return _Operands(_pw.SOFT_MARGIN_ML, a, b, None, _weight_like(weight, shape, a.dtype))


def _multilabel_soft_margin_sweep(ops, reduction, want_value, want_grad, grad_output,
                                  grad_out=None):
    """Rows are the last dim: the value sums each row's C element terms and
    divides by C; the kernel's 'mean' with count C (or n) does that in one sweep."""
    a = ops.a
    classes = a.shape[-1]
    if reduction != "none":
        ops.count = a.size if reduction == "mean" else classes
        return _evaluate(ops, "mean", want_value, want_grad, grad_output, grad_out)
    value = grad = None  # 'none': the per-element terms, then the gradient
    if want_value:
        loss = _evaluate(ops, "none", True, False, None)[0]
        with np.errstate(invalid="ignore", divide="ignore"):  # C = 0: rows of 0/0 = nan, quietly
            value = np.asarray(np.sum(loss, axis=-1, dtype=np.float64) / classes,
                               dtype=a.dtype)
    if want_grad and grad_output is None:
        ops.count = classes
        grad = _evaluate(ops, "mean", False, True, None, grad_out)[1]
    elif want_grad:
        g = _v.grad_output(grad_output, "none", a.shape[:-1], a.dtype)[1]
        gout = np.ascontiguousarray(np.broadcast_to(g[..., None] / classes, a.shape))
        grad = _evaluate(ops, "none", False, True, gout, grad_out)[1]
    return value, grad


def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None,
                                reduction="mean", *, return_grad=False, grad_output=None,
                                grad_out=None):
    """Multi-label one-versus-all loss over the last dim (the C classes):
    ``(1/C) sum_c w_c (-y_c log_sigmoid(x_c) - (1 - y_c) log_sigmoid(-x_c))``.

    'none' gives one value per row (input.shape[:-1]); 'mean' averages rows.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.multilabel_soft_margin_loss(np.array([[.3, -.5, 2], [1, 0, -40]]),
    ...                               np.array([[1, 0, 1], [0, 1, 0]]))
    np.float64(0.526961517961629)
    """
    reduction = _v.reduction(reduction, size_average, reduce, alias=False)
    ops = _multilabel_soft_margin_operands(input, target, weight)
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (input, target, weight), sweep=_multilabel_soft_margin_sweep)


# ----------------------------------------------------------------------------------
# Margin, ranking and focal losses: more pointwise kernels (closs/_kernels/_pointwise.pyx).
# ----------------------------------------------------------------------------------


def _margin_ranking_operands(input1, input2, target, margin):
    """margin (a float) comes validated.  The three arrays must have one ndim
    (torch's rule) and broadcast silently; float32 and float64 inputs are
    computed in float64 (torch's promotion), each gradient returned in its
    input's dtype and summed back to its input's shape."""
    if _same_layout(input1, input2) and _same_layout(input1, target):  # the common case
        return _Operands(_pw.MARGIN_RANKING, input1, input2, target, None, margin)
    a = _v.float_array(input1, "input1")
    b = _v.float_array(input2, "input2")
    dtype = np.promote_types(a.dtype, b.dtype)
    c = _v.operand(target, "target", dtype)
    if not a.ndim == b.ndim == c.ndim:
        raise ValueError(
            f"input1, input2, target: expected arrays with one number of dimensions (All input "
            f"tensors should have same dimension), got shapes {a.shape}, {b.shape}, {c.shape}")
    shape = _v.broadcast_shape(a.shape, b.shape, "input1", "input2")
    shape = _v.broadcast_shape(shape, c.shape, "input1 and input2", "target")
    grad_dtypes = None if a.dtype == b.dtype else (a.dtype, b.dtype)
    a_shape, b_shape = a.shape, b.shape
    a, b, c = _broadcast_operands((a.astype(dtype, copy=False), b.astype(dtype, copy=False), c),
                                  shape)
    return _Operands(_pw.MARGIN_RANKING, a, b, c, None, margin, a_shape=a_shape,
                     b_shape=b_shape, grad_dtypes=grad_dtypes)


def margin_ranking_loss(input1, input2, target, margin=0, size_average=None, reduce=None,
                        reduction="mean", *, return_grad=False, grad_output=None, grad_out=None):
    """Ranking loss ``max(0, -target * (input1 - input2) + margin)``.

    target is usually +1 (input1 should rank higher) or -1; other values are
    used as they are, as torch.  input1, input2 and target have one number of
    dimensions and broadcast silently.  With ``return_grad=True`` the gradient
    is ``(grad_input1, grad_input2)`` = ``(-target, target)`` times the
    reduction's scale where ``-target * (input1 - input2) + margin >= 0`` (the
    hinge included, as torch 2.13's clamp_min), else 0; both from one sweep.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.margin_ranking_loss(np.array([1., 2., 3.]), np.array([2., 3., 4.]),
    ...                       np.array([1., -1., 1.]))
    np.float64(0.6666666666666666)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ops = _margin_ranking_operands(input1, input2, target, _v.real_number(margin, "margin"))
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (input1, input2, target), (0, 1))


def _input_target_operands(kind, input, target, p0=0.0, p1=0.0, *, input_shaped=False):
    """Operands of a loss of (input, target) where target broadcasts silently;
    input_shaped: the loss has input's shape (target may only broadcast up to it)."""
    if _same_layout(input, target):  # the common case, kept fast
        return _Operands(kind, input, target, None, None, p0, p1)
    a = _v.float_array(input, "input")
    b = _v.operand(target, "target", a.dtype)
    shape = _silent_broadcast(a, [("target", b)])
    if input_shaped and shape != a.shape:
        raise ValueError(f"target: expected a shape that broadcasts to input's shape {a.shape}, "
                         f"got {b.shape}")
    a_shape = a.shape
    a, b = _broadcast_operands((a, b), shape)
    return _Operands(kind, a, b, None, None, p0, p1, a_shape=a_shape)


def hinge_embedding_loss(input, target, margin=1.0, size_average=None, reduce=None,
                         reduction="mean", *, return_grad=False, grad_output=None, grad_out=None):
    """Hinge embedding loss: ``input`` where target is 1, ``max(0, margin - input)``
    where target is -1, and the sum of both for any other target value (as torch).

    target broadcasts silently against input; the margin may be negative.  The
    gradient at the hinge (``input == margin``, target -1) is -1, as torch's.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.hinge_embedding_loss(np.array([.3, -.5, 2, .3, 1.5, .7]),
    ...                        np.array([1, 1, -1, -1, -1, 0]))
    np.float64(0.25)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ops = _input_target_operands(_pw.HINGE_EMBEDDING, input, target,
                                 _v.real_number(margin, "margin"))
    return _finish(ops, reduction, return_grad, grad_output, grad_out, (input, target))


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean", *,
                     return_grad=False, grad_output=None, grad_out=None):
    """Two-class logistic loss ``log(1 + exp(-target * input))``.

    target broadcasts up to input's shape (silently).  Computed as the stable
    softplus: where torch's ``log1p(exp(z))`` overflows (``z = -target * input``
    above 88.7 in float32, 709.8 in float64) to an infinite loss and a NaN
    gradient, closs returns ``z`` and ``-target``.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.soft_margin_loss(np.array([0., 40.]), np.array([1., 1.]), reduction="none")
    array([6.93147181e-01, 4.24835426e-18])
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ops = _input_target_operands(_pw.SOFT_MARGIN, input, target, input_shaped=True)
    return _finish(ops, reduction, return_grad, grad_output, grad_out, (input, target))


def _focal_options(alpha, gamma):
    """alpha in [0, 1] or -1 (torchvision's check), gamma any finite number."""
    alpha = _v.real_number(alpha, "alpha")
    if not (0.0 <= alpha <= 1.0 or alpha == -1.0):
        raise ValueError(f"alpha: expected a value in [0, 1], or -1 for no alpha weighting, got "
                         f"{alpha} (Invalid alpha value: {alpha}. alpha must be in the range "
                         f"[0,1] or -1 for ignore.)")
    gamma = _v.real_number(gamma, "gamma")
    if not abs(gamma) < float("inf"):  # inf or nan: pow(1, inf) = 1 but exp(inf * log 1) = nan
        raise ValueError(f"gamma: expected a finite number, got {gamma}")
    return alpha, gamma


def _sigmoid_focal_operands(inputs, targets, alpha, gamma, names=("inputs", "targets")):
    """alpha and gamma come validated (_focal_options); targets has inputs's shape."""
    if _same_layout(inputs, targets):  # the common case, kept fast
        return _Operands(_pw.SIGMOID_FOCAL, inputs, targets, None, None, alpha, gamma)
    a = _v.contiguous(_v.float_array(inputs, names[0]))
    b = _v.contiguous(_v.operand(targets, names[1], a.dtype))
    _v.same_shape(b, a.shape, names[1], names[0])
    return _Operands(_pw.SIGMOID_FOCAL, a, b, None, None, alpha, gamma)


def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none", *,
                       return_grad=False, grad_output=None, grad_out=None):
    """Sigmoid focal loss (torchvision.ops.sigmoid_focal_loss):
    ``alpha_t * ce * (1 - p_t)**gamma`` with ``p = sigmoid(inputs)``,
    ``ce = binary_cross_entropy_with_logits(inputs, targets)``,
    ``p_t = p * targets + (1 - p) * (1 - targets)`` and
    ``alpha_t = alpha * targets + (1 - alpha) * (1 - targets)``.

    alpha in [0, 1], or -1 for no alpha weighting; gamma any finite number
    (0: alpha-weighted BCE); soft targets in [0, 1] allowed; targets has
    inputs's shape.  The default reduction is 'none', as torchvision's.
    Evaluated without cancellation (``ce`` from softplus / log_sigmoid,
    ``1 - p_t = p (1 - targets) + (1 - p) targets``), so a well-classified
    element keeps its tiny loss and finite gradient where torchvision's
    ``1 - p_t`` rounds to 0 (and its gradient to NaN for gamma < 1).

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.sigmoid_focal_loss(np.array([-3., -.5, 0, .5, 3, 20]),
    ...                      np.array([0., 1, 1, 0, 1, 0]), reduction="mean")
    np.float64(2.5701404204466924)
    """
    reduction = _v.reduction(reduction, alias=False)
    ops = _sigmoid_focal_operands(inputs, targets, *_focal_options(alpha, gamma))
    return _finish(ops, reduction, return_grad, grad_output, grad_out, (inputs, targets))


# ----------------------------------------------------------------------------------
# Margin losses over the class axis: MultiMargin, MultiLabelMargin (closs/_kernels/_margin.pyx).
# ----------------------------------------------------------------------------------


def _margin_input(input):
    """(x, rows, classes): x C-contiguous, of shape () (one row of one class,
    as torch), (C,) (one row) or (N, C), with C > 0."""
    x = _v.contiguous(_v.float_array(input, "input"))
    if x.ndim > 2 or (x.ndim and x.shape[-1] == 0):
        raise ValueError(f"input: expected shape (C,) or (N, C) with C > 0 (Expected non-empty "
                         f"vector or matrix with optional 0-dim batch size), got {x.shape}")
    return x, (x.shape[0] if x.ndim == 2 else 1), (x.shape[-1] if x.ndim else 1)


def _check_margin_targets(t, low, classes, note=""):
    """t: flat int64 class indices; each must lie in [low, classes)."""
    bad = _margin.first_out_of_range(t, low, classes)
    if bad >= 0:
        raise IndexError(f"target: expected class indices in [{low}, {classes}){note}, "
                         f"got {t[bad]} (target out of range)")


def _multi_margin_p(p):
    value = _v.real_number(p, "p")
    if value != 1 and value != 2:
        raise ValueError(f"p: expected 1 or 2 (only p == 1 and p == 2 supported), got {p!r}")
    return int(value)


def _multi_margin_weight_dims(weight):
    """torch checks the weight's dimensions first (also in the module's constructor)."""
    if weight is not None and np.ndim(weight) != 1:
        raise ValueError(f"weight: expected a 1-D array, one weight per class (weight must be "
                         f"one-dimensional), got shape {np.shape(weight)}")


def _multi_margin_operands(input, target, p, margin, weight):
    """p (1 or 2) and margin (a float) come validated."""
    kind = _margin.P1 if p == 1 else _margin.P2
    if weight is None and _softmax.plain_rows(input, target) and input.shape[1]:
        rows, classes = input.shape  # the common case, kept fast
        _check_margin_targets(target, 0, classes)
        return _margin.Operands(kind, input, rows, classes, target, (rows,), None, margin)
    _multi_margin_weight_dims(weight)
    x, rows, classes = _margin_input(input)
    if x.ndim == 2 and not (rows == 1 and np.ndim(target) == 0):
        loss_shape = (rows,)
        t = _class_targets(target, x, loss_shape)
    else:  # one row: torch takes a target of shape () or (1,), and 'none' has its shape
        t = _class_targets(target, x.reshape(classes), ())
        loss_shape = () if np.ndim(target) == 0 else (1,)
    _check_margin_targets(t, 0, classes)
    w = _class_weight(weight, classes, x.dtype)
    return _margin.Operands(kind, x, rows, classes, t, loss_shape, w, margin)


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None,
                      reduce=None, reduction="mean", *, return_grad=False, grad_output=None,
                      grad_out=None):
    """Multi-class hinge loss of logits against one class index per row:
    ``l = w[t] / C * sum_{i != t} max(0, margin - x[t] + x[i]) ** p``.

    input (C,) or (N, C) (a 0-d input is one class: loss 0); target (), (1,)
    or (N,) class indices of any integer dtype; ``p`` 1 or 2; ``weight`` (C,)
    is indexed by the target class and never enters the 'mean' denominator
    ('mean' averages the rows).  The hinge test is strict (``> 0``): the
    gradient at the hinge is 0, and a NaN logit contributes nothing, as torch.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.multi_margin_loss(np.array([[.25, .5, 1, 2], [1, -1, .5, 0]]), np.array([3, 0]))
    np.float64(0.0625)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ops = _multi_margin_operands(input, target, _multi_margin_p(p),
                                 _v.real_number(margin, "margin"), weight)
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (input, target, weight), sweep=_margin.evaluate)


def _multilabel_margin_operands(input, target):
    ops = _margin.plain_multilabel(input, target)  # the common case, kept fast
    if ops is not None:
        return ops
    x, rows, classes = _margin_input(input)
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target: expected an integer array of class indices padded with -1, "
                        f"got {_v._describe(t)}")
    if x.ndim == 2 and t.shape != x.shape or x.ndim < 2 and (t.ndim > 1 or t.size != classes):
        expected = x.shape if x.ndim == 2 else (classes,)
        raise ValueError(f"target: expected the shape of input {expected} (inconsistent target "
                         f"size), got {t.shape}")
    if t.dtype.kind == "u" and t.size and t.max() > np.iinfo(np.int64).max:
        raise IndexError(f"target: expected class indices below {classes}, got {t.max()}")
    t = np.ascontiguousarray(t, dtype=np.int64).reshape(-1)
    # torch range-checks every entry, also those after a row's first -1
    _check_margin_targets(t, -1, classes, " (-1 ends a row's targets)")
    return _margin.Operands(_margin.MULTILABEL, x, rows, classes, t,
                            (rows,) if x.ndim == 2 else ())


def multilabel_margin_loss(input, target, size_average=None, reduce=None, reduction="mean", *,
                           return_grad=False, grad_output=None, grad_out=None):
    """Multi-label hinge loss: each row's targets are its class indices before
    the first -1 (later entries are ignored, but must still lie in [-1, C)),
    ``l = 1 / C * sum_{j in targets} sum_{i not in targets} max(0, 1 - x[j] + x[i])``.

    input (C,) or (N, C) (a 0-d input is one class: loss 0); target of
    input's shape, any integer dtype.  A repeated target index counts twice,
    as torch.  'none' gives one value per row; 'mean' averages the rows.
    The hinge test is strict: the gradient at the hinge is 0.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.multilabel_margin_loss(np.array([[1., 2, 3, 4]]), np.array([[0, 3, -1, -1]]))
    np.float64(1.25)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ops = _multilabel_margin_operands(input, target)
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (input, target), sweep=_margin.evaluate)


# ----------------------------------------------------------------------------------
# Losses over feature rows: CosineEmbedding, TripletMargin(+WithDistance) (closs/_kernels/_features.pyx).
# ----------------------------------------------------------------------------------


_PAIRWISE_EPS = 1e-6  # torch's pairwise_distance default
_COSINE_SIMILARITY_EPS = 1e-8  # torch's cosine_similarity default


def _feature_arrays(arrays, names):
    """The differentiable arguments as float arrays, and the dtype they promote
    to (float64 if any is float64, as torch)."""
    arrs = [_v.float_array(x, name) for x, name in zip(arrays, names)]
    dtype = arrs[0].dtype
    for a in arrs[1:]:
        if a.dtype != dtype:
            dtype = np.dtype(np.float64)
    return arrs, dtype


def _feature_rows(arrays, full_shape, dtype):
    """Each array broadcast to full_shape as a C-contiguous (rows, D) array of
    dtype (no copy when it already is one), and the gradient shapes for
    _features.Operands (None when every gradient is such an array as it is)."""
    D = full_shape[-1] if full_shape else 1
    rows = 1
    for s in full_shape[:-1]:
        rows *= s
    out, grad_shapes = [], []
    for a in arrays:
        own = None if a.shape == full_shape and a.dtype == dtype else (a.shape, a.dtype)
        grad_shapes.append(own)
        if a.dtype != dtype:
            a = a.astype(dtype)
        if a.shape != full_shape:
            a = np.broadcast_to(a, full_shape)
        out.append(_v.contiguous(a).reshape(rows, D))
    if len(full_shape) == 2 and not any(grad_shapes):
        grad_shapes = None
    return out, grad_shapes


def _cosine_embedding_operands(input1, input2, target, margin):
    """margin comes validated (a float)."""
    t = target if type(target) is np.ndarray else np.asarray(target)
    if (_features.plain_rows(input1, input2) and t.ndim == 1 and t.dtype.kind in "biuf"
            and t.shape[0] == input1.shape[0]):  # the common case, kept fast
        y = _features.float64_target(t)
        return _features.Operands(_features.COSINE_EMBEDDING, input1, input2, None, y,
                                  t.shape, margin)
    if t.dtype.kind not in "biuf":
        raise TypeError(f"target: expected an array of real numbers (1 or -1), "
                        f"got {_v._describe(t)}")
    if t.ndim > 1:
        raise ValueError(f"target: expected a 0-d or 1-d array (0D or 1D target tensor "
                         f"expected, multi-target not supported), got shape {t.shape}")
    (a, b), dtype = _feature_arrays((input1, input2), ("input1", "input2"))
    want = 2 if t.ndim == 1 else 1
    for x, name in ((a, "input1"), (b, "input2")):
        if x.ndim != want:
            raise ValueError(
                f"{name}: expected a {want}-d array (N, D) for a {t.ndim}-d target "
                f"({t.ndim}D target tensor expects {want}D input tensors, but found inputs "
                f"with sizes {list(a.shape)} and {list(b.shape)}), got shape {x.shape}")
    if a.shape[-1] != b.shape[-1]:
        # torch broadcasts a feature size of 1 in the dot product but takes the
        # norm of the unbroadcast vector (a "cosine" above 1): closs refuses
        raise ValueError(f"input2: expected the feature size of input1 ({a.shape[-1]}; the "
                         f"feature dimension does not broadcast), got shape {b.shape}")
    batch = _v.broadcast_shape(a.shape[:-1], b.shape[:-1], "input1", "input2")
    batch = _v.broadcast_shape(batch, t.shape, "the inputs' batch", "target")
    full = batch + a.shape[-1:]
    (x1, x2), grad_shapes = _feature_rows((a, b), full, dtype)
    y = np.ascontiguousarray(np.broadcast_to(t, batch), dtype=np.float64).reshape(-1)
    return _features.Operands(_features.COSINE_EMBEDDING, x1, x2, None, y, batch, margin,
                              full_shape=full, grad_shapes=grad_shapes)


def cosine_embedding_loss(input1, input2, target, margin=0, size_average=None, reduce=None,
                          reduction="mean", *, return_grad=False, grad_output=None, grad_out=None):
    """Cosine embedding loss of pairs of rows:
    ``1 - cos(x1, x2)`` where ``target == 1``, ``max(0, cos(x1, x2) - margin)``
    where ``target == -1``, 0 for any other target value.

    ``cos = x1.x2 / sqrt((|x1|**2 + e) (|x2|**2 + e))`` with torch's
    ``e = float32(1e-12)`` added to each squared norm (a zero vector gives
    cos 0 and a huge gradient, as torch).

    Parameters
    ----------
    input1, input2 : array_like
        (N, D) with a (N,) target, or (D,) with a 0-d target (then the loss
        is 0-d).  Their batch sizes (and target's) broadcast silently; the
        feature size D must match.
    target : array_like
        1 or -1 per row (any real dtype).
    margin : float
        The hinge of the target -1 rows; the gradient passes at
        ``cos == margin`` (torch's ``clamp_min``).
    return_grad : bool
        Also return ``(grad_input1, grad_input2)``.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> x1 = np.array([[1., 0, 0], [1, 1, 0], [0, 0, 0], [3, 4, 0]])
    >>> x2 = np.array([[0., 1, 0], [1, 1, 0], [1, 2, 3], [-3, -4, 0]])
    >>> F.cosine_embedding_loss(x1, x2, np.array([1, -1, 1, -1]), reduction="none")
    array([1., 1., 1., 0.])
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ops = _cosine_embedding_operands(input1, input2, target, _v.real_number(margin, "margin"))
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (input1, input2, target), (0, 1), sweep=_features.evaluate)


def _triplet_margin(margin, owner=None):
    """margin as a float; torch's ValueError for margin <= 0 (NaN passes, as in torch)."""
    margin = _v.real_number(margin, "margin")
    if margin <= 0:
        said = (f"{owner}: expected margin to be greater than 0, got {margin} instead" if owner
                else f"margin must be greater than 0, got {margin}")
        raise ValueError(f"margin: expected a value > 0 ({said}), got {margin}")
    return margin


def _triplet_arrays(anchor, positive, negative):
    """The three triplet arguments as float arrays, their dtype and the shape
    they broadcast to (torch: the same number of dimensions, sizes broadcast)."""
    names = ("anchor", "positive", "negative")
    arrs, dtype = _feature_arrays((anchor, positive, negative), names)
    ndims = [a.ndim for a in arrs]
    if len(set(ndims)) != 1:
        bad = 1 if ndims[1] != ndims[0] else 2
        raise ValueError(
            f"{names[bad]}: expected {ndims[0]} dimensions like anchor (The anchor, positive, "
            f"and negative tensors are expected to have the same number of dimensions, but "
            f"got: anchor {ndims[0]}D, positive {ndims[1]}D, and negative {ndims[2]}D "
            f"inputs), got shape {arrs[bad].shape}")
    full = _v.broadcast_shape(arrs[0].shape, arrs[1].shape, "anchor", "positive")
    full = _v.broadcast_shape(full, arrs[2].shape, "anchor and positive", "negative")
    return arrs, dtype, full


def _triplet_operands(anchor, positive, negative, kind, margin, p, eps, swap):
    """Operands of a triplet loss with a built-in distance; margin, p, eps,
    swap come validated."""
    if _features.plain_rows(anchor, positive, negative) and anchor.shape[1]:  # the common case
        return _features.Operands(kind, anchor, positive, negative, None, anchor.shape[:1],
                                  margin, p, eps, swap)
    names = ("anchor", "positive", "negative")
    arrs, dtype, full = _triplet_arrays(anchor, positive, negative)
    if full:
        # each distance is over its own pair broadcast: a pair whose feature
        # sizes are both 1 against a third argument's D > 1 would be a distance
        # over 1 feature in torch; closs's rows have one feature size
        sizes = [a.shape[-1] for a in arrs]
        pairs = ((0, 1), (0, 2)) + (((1, 2),) if swap else ())
        for i, j in pairs:
            if max(sizes[i], sizes[j]) != full[-1]:
                raise ValueError(
                    f"{names[j]}: expected a feature size that broadcasts with {names[i]}'s "
                    f"to {full[-1]} (both are 1: closs does not broadcast a pair's distance "
                    f"against another pair's features), got shape {arrs[j].shape}")
    D = full[-1] if full else 1
    if kind == _features.TRIPLET_NORM and D == 0 and not 0 <= p < np.inf:
        raise ValueError(f"p: expected p >= 0 for an empty feature dimension (the {p:g} norm "
                         f"of no entries has no identity), got {p}")
    rows, grad_shapes = _feature_rows(arrs, full, dtype)
    return _features.Operands(kind, rows[0], rows[1], rows[2], None, full[:-1], margin, p,
                              eps, swap, full_shape=full, grad_shapes=grad_shapes)


def _triplet_options(margin, p, eps, swap, owner=None):
    return (_triplet_margin(margin, owner), _v.real_number(p, "p"), _v.real_number(eps, "eps"),
            _v.flag(swap, "swap"))


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False,
                        size_average=None, reduce=None, reduction="mean", *, return_grad=False,
                        grad_output=None, grad_out=None):
    """Triplet margin loss ``max(0, margin + d(a, p) - d(a, n))`` with torch's
    ``pairwise_distance`` ``d(x, y) = ||x - y + eps||_p`` over the last dim.

    ``eps`` is added to every component of the difference (not a clamp).  Any
    real ``p`` (torch's ``linalg.vector_norm``): 1, 2, fractional, negative,
    ``inf`` / ``-inf`` (max / min |.|, the subgradient split evenly between
    the tied entries), 0 (the number of nonzero entries; gradient 0).  With
    ``swap`` the negative distance is ``min(d(a, n), d(p, n))``; at an exact
    tie the gradient is split half and half (``torch.minimum``).  The
    gradient passes at the hinge (``margin + d+ - d- == 0``).

    Parameters
    ----------
    anchor, positive, negative : array_like
        Float arrays with the same number of dimensions, broadcasting
        silently: (D,) gives a 0-d loss, (N, D) a (N,) loss, (N, M, D) a
        (N, M) loss.
    margin : float
        > 0 (ValueError otherwise).
    return_grad : bool
        Also return ``(grad_anchor, grad_positive, grad_negative)``.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> A = np.array([[0., 0], [1, 1], [0, 0]])
    >>> P = np.array([[1., 0], [1, 1], [3, 4]])
    >>> N = np.array([[0., 2], [1, 1.5], [1, 1]])
    >>> F.triplet_margin_loss(A, P, N)
    np.float64(1.6952629553510945)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    margin, p, eps, swap = _triplet_options(margin, p, eps, swap)
    ops = _triplet_operands(anchor, positive, negative, _features.TRIPLET_NORM, margin, p, eps,
                            swap)
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (anchor, positive, negative), (0, 1, 2), sweep=_features.evaluate)


# The distances closs differentiates itself, by name: (kernel kind, p, eps).
_DISTANCES = {
    "pairwise": (_features.TRIPLET_NORM, 2.0, _PAIRWISE_EPS),
    "cosine": (_features.TRIPLET_COSINE, 2.0, _COSINE_SIMILARITY_EPS),
}


def _distance_function(distance_function):
    """A validated distance_function: a name of _DISTANCES or a callable."""
    if distance_function is None:
        return "pairwise"
    if isinstance(distance_function, str):
        if distance_function not in _DISTANCES:
            raise ValueError(f"distance_function: expected None, a callable or one of "
                             f"{', '.join(map(repr, _DISTANCES))}, got {distance_function!r}")
        return distance_function
    if not callable(distance_function):
        raise TypeError(f"distance_function: expected None, a callable or one of "
                        f"{', '.join(map(repr, _DISTANCES))}, got "
                        f"{_v._describe(distance_function)}")
    return distance_function


def _accepts_return_grad(fn):
    """Whether fn can be called with return_grad=True (its signature says so)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature (some builtins): try it
        return True
    return any(q.name == "return_grad" and q.kind != q.POSITIONAL_ONLY
               or q.kind == q.VAR_KEYWORD for q in params)


class _CallableTriplet:
    """The operands of a triplet loss with a user distance function.

    The arguments are broadcast to one shape (views) before the callable sees
    them; the per-row hinge, swap and reduction are done here on the (N,)
    distances, and the gradients combine the callable's per-pair gradients
    with per-row coefficients (the same rules as csrc/closs_features.hpp's
    triplet_hinge).
    """

    def __init__(self, anchor, positive, negative, fn, margin, swap):
        arrs, dtype, full = _triplet_arrays(anchor, positive, negative)
        self.shapes = [(a.shape, a.dtype) for a in arrs]
        self.args = [np.broadcast_to(a.astype(dtype, copy=False), full) for a in arrs]
        self.full, self.dtype = full, dtype
        self.loss_shape = full[:-1]
        self.fn, self.margin, self.swap = fn, margin, swap

    def _distance(self, x, y, want_grad):
        fn, shape = self.fn, self.loss_shape
        if not want_grad:
            d, grads = fn(x, y), None
        else:
            if not _accepts_return_grad(fn):
                raise TypeError(
                    "distance_function: expected a callable that supplies its gradient when "
                    "called as f(x, y, return_grad=True) -> (distance, (grad_x, grad_y)), "
                    f"got {fn!r} without a return_grad parameter; closs cannot differentiate "
                    "an arbitrary callable (use distance_function='pairwise' or 'cosine', or "
                    "add return_grad)")
            out = fn(x, y, return_grad=True)
            if not (isinstance(out, (tuple, list)) and len(out) == 2
                    and isinstance(out[1], (tuple, list)) and len(out[1]) == 2):
                raise TypeError("distance_function: expected (distance, (grad_x, grad_y)) from "
                                f"f(x, y, return_grad=True), got {type(out).__name__}")
            d, grads = out
            grads = [_v.operand(g, f"distance_function's {name}", self.dtype)
                     for g, name in zip(grads, ("grad_x", "grad_y"))]
            for g, name in zip(grads, ("grad_x", "grad_y")):
                if g.shape != self.full:
                    raise ValueError(f"distance_function: expected {name} of the argument's "
                                     f"shape {self.full}, got {g.shape}")
        d = _v.operand(d, "distance_function's result", self.dtype)
        if d.shape != shape:
            raise ValueError(f"distance_function: expected one distance per row, an array of "
                             f"shape {shape}, got shape {d.shape}")
        return d, grads

    def evaluate(self, reduction, want_value, want_grad, grad_output, grad_out=None):
        a, p, n = self.args  # (grad_out: the caller copies the gradients into it)
        d_ap, g_ap = self._distance(a, p, want_grad)
        d_an, g_an = self._distance(a, n, want_grad)
        dtype = self.dtype
        if self.swap:
            d_pn, g_pn = self._distance(p, n, want_grad)
            d_neg = np.minimum(d_an, d_pn)  # NaN propagates, as torch.minimum
        else:
            d_neg = d_an
        h = (dtype.type(self.margin) + d_ap) - d_neg
        value = grad = None
        if want_value:
            loss = np.asarray(np.maximum(h, dtype.type(0)))  # NaN stays NaN, as clamp_min
            if reduction == "none":
                value = loss
            else:
                total = np.sum(loss, dtype=np.float64)
                if reduction == "mean":
                    with np.errstate(invalid="ignore"):  # 0/0 = nan for no rows, as torch
                        total = total / loss.size if loss.size else np.float64(np.nan)
                value = dtype.type(total)
        if want_grad:
            gscale, gout = _v.grad_output(grad_output, reduction, self.loss_shape, dtype)
            if reduction == "mean":
                gscale = gscale / max(h.size, 1)
            # torch masks with where(): a masked coefficient is 0 even for a NaN grad_output
            scale = gscale if gout is None else gscale * gout.astype(np.float64)
            c = np.where(h >= 0, scale, 0.0)
            col = (lambda v: v[..., None]) if self.full else (lambda v: v)
            c_an = c
            grads = [col(c) * g_ap[0], col(c) * g_ap[1], np.zeros(self.full)]
            if self.swap:  # torch.minimum's gradient: half each at a tie, all to both for NaN
                tie = d_an == d_pn
                c_an = np.where(d_an > d_pn, 0.0, np.where(tie, 0.5, 1.0) * c)
                c_pn = np.where(d_an < d_pn, 0.0, np.where(tie, 0.5, 1.0) * c)
                grads[1] -= col(c_pn) * g_pn[0]
                grads[2] -= col(c_pn) * g_pn[1]
            grads[0] -= col(c_an) * g_an[0]
            grads[2] -= col(c_an) * g_an[1]
            grad = tuple(_v.sum_to_shape(g, shape).astype(dt, copy=False)
                         for g, (shape, dt) in zip(grads, self.shapes))
        return value, grad


def _triplet_distance_operands(anchor, positive, negative, distance_function, margin, swap):
    """distance_function (from _distance_function), margin and swap come validated."""
    if isinstance(distance_function, str):
        kind, p, eps = _DISTANCES[distance_function]
        return _triplet_operands(anchor, positive, negative, kind, margin, p, eps, swap)
    return _CallableTriplet(anchor, positive, negative, distance_function, margin, swap)


def _triplet_distance_evaluate(ops, reduction, want_value, want_grad, grad_output,
                               grad_out=None):
    if isinstance(ops, _CallableTriplet):
        return ops.evaluate(reduction, want_value, want_grad, grad_output)
    return _features.evaluate(ops, reduction, want_value, want_grad, grad_output, grad_out)


def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None,
                                      margin=1.0, swap=False, reduction="mean",
                                      return_grad=False, grad_output=None, grad_out=None):
    """Triplet margin loss ``max(0, margin + D(a, p) - D(a, n))`` with a chosen
    distance ``D`` over the last dim (``min(D(a, n), D(p, n))`` with swap).

    Parameters
    ----------
    distance_function : None, 'pairwise', 'cosine' or callable
        None or ``'pairwise'``: torch's ``pairwise_distance`` (p = 2,
        eps = 1e-6), so the loss equals :func:`triplet_margin_loss` (use that
        for other p).  ``'cosine'``: ``1 - cosine_similarity(x, y, dim=-1,
        eps=1e-8)`` with torch's eps semantics (each norm clamped below at eps
        in the division, the norm's own derivative unclamped).  closs
        differentiates both itself, in one fused sweep.

        A callable ``f(x, y)`` returning one distance per row (shape
        ``x.shape[:-1]``) gives values; closs calls it with the three
        arguments broadcast to one shape, as float arrays of the computation
        dtype.  For gradients (``backward``, ``value_and_grad``,
        ``return_grad=True``) it must take a keyword ``return_grad`` and, when
        called with ``return_grad=True``, return ``(distance, (grad_x,
        grad_y))`` where ``grad_x[..., k] = d distance[...] / d x[..., k]``
        (x's shape; likewise grad_y).  Otherwise closs raises TypeError there:
        it cannot differentiate an arbitrary Python callable.
    margin : float
        > 0 (ValueError otherwise).
    reduction : {'mean', 'sum', 'none'}
        No legacy size_average / reduce and no 'elementwise_mean', as torch.
    return_grad : bool
        Also return ``(grad_anchor, grad_positive, grad_negative)``.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> a, p = np.array([[1., 0], [1, 1]]), np.array([[1., 1], [0, 1]])
    >>> n = np.array([[0., 1], [1, 0]])
    >>> F.triplet_margin_with_distance_loss(a, p, n, distance_function="cosine", reduction="none")
    array([0.29289322, 1.        ])
    >>> def sq(x, y, return_grad=False):  # squared Euclidean distance, with its gradient
    ...     d = x - y
    ...     dist = np.sum(d * d, axis=-1)
    ...     return (dist, (2 * d, -2 * d)) if return_grad else dist
    >>> value, (ga, gp, gn) = F.triplet_margin_with_distance_loss(
    ...     a, p, n, distance_function=sq, return_grad=True)
    >>> value  # hinges 1 + 1 - 2 and 1 + 1 - 1
    np.float64(0.5)
    """
    reduction = _v.reduction(reduction, allowed=_v.REDUCTIONS, alias=False)
    margin = _triplet_margin(margin)
    swap = _v.flag(swap, "swap")
    ops = _triplet_distance_operands(anchor, positive, negative,
                                     _distance_function(distance_function), margin, swap)
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (anchor, positive, negative), (0, 1, 2), sweep=_triplet_distance_evaluate)


# ----------------------------------------------------------------------------------
# Overlap losses: Dice, Tversky (closs/_kernels/_overlap.pyx).
# ----------------------------------------------------------------------------------


# The validated hyper-parameters of a Dice / Tversky loss.  coefficients: (k, u,
# a, b, nr, dr) of L = 1 - (k I + nr) / (u I + a P + b G + dr) (see
# csrc/closs_overlap.hpp); weight: None or a float64 array, 0-d or 1-d;
# keep_spatial: 'none' keeps one axis of size 1 per spatial dim (Dice) or not (Tversky).
_OverlapOptions = namedtuple(
    "_OverlapOptions", "act to_onehot_y include_background squared batch coefficients weight "
                       "keep_spatial")


def _overlap_activation(sigmoid, softmax, other_act):
    sigmoid, softmax = _v.flag(sigmoid, "sigmoid"), _v.flag(softmax, "softmax")
    if other_act is not None and not callable(other_act):
        raise TypeError(f"other_act: expected None or a callable (other_act must be None or "
                        f"callable but is {type(other_act).__name__}.), got {other_act!r}")
    if sigmoid + softmax + (other_act is not None) > 1:
        raise ValueError(f"sigmoid, softmax, other_act: expected at most one activation "
                         f"(Incompatible values: more than 1 of [sigmoid=True, softmax=True, "
                         f"other_act is not None].), got sigmoid={sigmoid}, softmax={softmax}, "
                         f"other_act={other_act!r}")
    if other_act is not None:
        raise ValueError(f"other_act: expected None (closs differentiates through its own "
                         f"activations only: use sigmoid=True or softmax=True, or apply the "
                         f"activation first and chain its gradient), got {other_act!r}")
    return _overlap.SIGMOID if sigmoid else _overlap.SOFTMAX if softmax else _overlap.NONE


def _overlap_weight(weight):
    """MONAI's class weight as a float64 array (0-d: one weight for every class)."""
    if weight is None:
        return None
    w = np.asarray(weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"weight: expected a number or a sequence of numbers, got "
                        f"{_v._describe(w)}")
    if w.ndim > 1:
        raise ValueError(f"weight: expected a number or one value per class, got an array of "
                         f"shape {w.shape}")
    return w.astype(np.float64)


def _overlap_options(act, include_background, to_onehot_y, squared_pred, smooth_nr, smooth_dr,
                     batch, weight, coefficients, keep_spatial):
    """coefficients: (k, u, a, b) of the score; smooth_nr and smooth_dr complete them."""
    nr, dr = _v.real_number(smooth_nr, "smooth_nr"), _v.real_number(smooth_dr, "smooth_dr")
    return _OverlapOptions(act, _v.flag(to_onehot_y, "to_onehot_y"),
                           _v.flag(include_background, "include_background"),
                           _v.flag(squared_pred, "squared_pred"), _v.flag(batch, "batch"),
                           tuple(coefficients) + (nr, dr), _overlap_weight(weight), keep_spatial)


def _dice_options(include_background, to_onehot_y, sigmoid, softmax, other_act, squared_pred,
                  jaccard, smooth_nr, smooth_dr, batch, weight):
    act = _overlap_activation(sigmoid, softmax, other_act)
    # 1 - (2I + nr) / (P + G + dr); jaccard: 1 - (2I + nr) / (2 (P + G - I) + dr)
    coefficients = (2.0, -2.0, 2.0, 2.0) if _v.flag(jaccard, "jaccard") else (2.0, 0.0, 1.0, 1.0)
    return _overlap_options(act, include_background, to_onehot_y, squared_pred, smooth_nr,
                            smooth_dr, batch, weight, coefficients, True)


def _tversky_options(include_background, to_onehot_y, sigmoid, softmax, other_act, alpha, beta,
                     smooth_nr, smooth_dr, batch):
    act = _overlap_activation(sigmoid, softmax, other_act)
    alpha, beta = _v.real_number(alpha, "alpha"), _v.real_number(beta, "beta")
    # 1 - (I + nr) / (I + alpha (P - I) + beta (G - I) + dr)
    coefficients = (1.0, 1.0 - alpha - beta, alpha, beta)
    return _overlap_options(act, include_background, to_onehot_y, False, smooth_nr, smooth_dr,
                            batch, None, coefficients, False)


def _single_channel(option):
    warnings.warn(f"single channel prediction, `{option}` ignored.", UserWarning, stacklevel=4)


_INT64 = np.dtype(np.int64)  # the native one


def _overlap_labels(target, x):
    """to_onehot_y: labels of shape (B, 1, spatial...) as a C-contiguous int64 array,
    each a whole number in [0, C)."""
    t = target if type(target) is np.ndarray else np.asarray(target)
    labels = t
    if t.dtype is not _INT64:  # native int64 labels go to the check as they are
        if t.dtype.kind not in "biuf":
            raise TypeError(f"target: expected class labels (integers, or floats holding "
                            f"whole numbers) with to_onehot_y=True, got {_v._describe(t)}")
        labels = (_v.float_array(t, "target") if t.dtype.kind == "f" else
                  t.astype(np.int64))
    shape, tshape = x.shape, t.shape
    expected = (shape[0], 1) + shape[2:]
    if tshape != expected:
        if len(tshape) >= 2 and tshape[1] != 1:
            why = "labels should have a channel with length equal to one."
        else:
            onehot = (tshape + (1,))[:1] + (shape[1],) + tshape[2:]
            why = f"ground truth has different shape {onehot} from input {shape}"
        raise ValueError(f"target: expected labels of shape {expected} with to_onehot_y=True "
                         f"({why}), got {tshape}")
    labels, bad = _overlap.labels_as_int64(_v.contiguous(labels), shape[1])
    if bad >= 0:
        raise _v.LabelError(f"target: expected class labels that are whole numbers in "
                          f"[0, {shape[1]}) with to_onehot_y=True, got "
                          f"{t.reshape(-1)[bad].item()!r} (index out of bounds)")
    return labels


def _overlap_class_weight(weight, scored):
    """The per-class weight for `scored` scored classes (MONAI ignores it for one class)."""
    if weight is None or scored == 1:
        return None
    if weight.ndim == 0:
        weight = np.full(scored, weight)
    elif weight.shape[0] != scored:
        raise ValueError(f"weight: expected {scored} values, one per scored class (the length "
                         f"of the `weight` sequence should be the same as the number of "
                         f"classes; with include_background=False it does not include class "
                         f"0), got {weight.shape[0]}")
    if weight.size and weight.min() < 0:
        raise ValueError(f"weight: expected values >= 0 (the value/values of the `weight` "
                         f"should be no less than 0.), got {weight.min()}")
    return weight


def _overlap_operands(opts, input, target):
    """Validate one call of a Dice / Tversky loss into kernel operands: the
    common call through the Cython check, any other through _overlap_checked."""
    ops = _overlap.fast_operands(opts, input, target)
    return _overlap_checked(opts, input, target) if ops is None else ops


def _overlap_checked(opts, input, target):
    """_overlap_operands for any call (MONAI's pipeline: activation,
    to_onehot_y, include_background, shape check, weight)."""
    act, onehot, include_background, squared, batch, coefficients, weight, keep_spatial = opts
    x = _v.contiguous(_v.float_array(input, "input"))
    shape = x.shape
    if len(shape) < 3:
        raise ValueError(f"input: expected shape (B, C, spatial...) with at least one spatial "
                         f"dim, got {shape}")
    classes = shape[1]
    first = 0 if include_background else 1
    if classes <= 1:
        if classes == 1:
            if act == _overlap.SOFTMAX:
                _single_channel("softmax=True")
                act = _overlap.NONE
            if onehot:
                _single_channel("to_onehot_y=True")
                onehot = False
            if first:
                _single_channel("include_background=False")
        first = 0
    y = labels = None
    if onehot:
        labels = _overlap_labels(target, x)
    else:
        y = _v.operand(target, "target", x.dtype)
        if y.shape != shape:
            raise ValueError(f"target: expected the shape of input {shape} (ground truth has "
                             f"different shape {y.shape} from input {shape}), got {y.shape}")
        y = _v.contiguous(y)
    if weight is not None:
        weight = _overlap_class_weight(weight, classes - first)
    return _overlap.Operands(x, y, labels, act, first, squared, batch, coefficients, weight,
                             keep_spatial)


def dice_loss(input, target, include_background=True, to_onehot_y=False, sigmoid=False,
              softmax=False, other_act=None, squared_pred=False, jaccard=False, reduction="mean",
              smooth_nr=1e-5, smooth_dr=1e-5, batch=False, weight=None, *, return_grad=False,
              grad_output=None, grad_out=None):
    """Soft Dice loss with MONAI's ``DiceLoss`` conventions (parameters, order, defaults).

    Per batch entry b and class c (with ``batch=True``: per class, summing over
    the batch too), with p the prediction after the activation and g the target,
    sums over the spatial positions::

        I = sum p g,  S = sum p + sum g  (squared_pred: sum p**2 + sum g**2)
        L = 1 - (2 I + smooth_nr) / (S + smooth_dr)
        jaccard: L = 1 - (2 I + smooth_nr) / (2 (S - I) + smooth_dr)

    Parameters
    ----------
    input : array_like, (B, C, spatial...)
        Predictions, or logits with ``sigmoid=True`` / ``softmax=True`` (softmax
        over C; the gradient goes through the activation).  At least one spatial dim.
    target : array_like
        Of input's shape, or with ``to_onehot_y=True`` class labels of shape
        (B, 1, spatial...) (any integer dtype, or floats holding whole numbers;
        a label outside [0, C) raises an error that is both ValueError and IndexError).
    include_background : bool
        False drops channel 0 of both (ignored, with MONAI's warning, when C = 1;
        so are ``softmax`` and ``to_onehot_y``).
    other_act : None
        Only None: closs cannot differentiate an arbitrary callable (ValueError).
    weight : number or sequence, optional
        Multiplies each class's L (one value per scored class; ignored when one
        class is scored, as MONAI); values must be >= 0.
    reduction : {'mean', 'sum', 'none'}
        'mean' averages the B x C' values (C' with ``batch=True``); 'none' gives
        shape (B, C', 1, ..., 1) ((C', 1, ..., 1) with ``batch=True``).

    Returns
    -------
    The loss, and with ``return_grad=True`` also its gradient w.r.t. input.
    Sums are accumulated in double; targets are not checked to be binary.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> p1 = np.array([[0.9, 0.2], [0.6, 0.1]])
    >>> x = np.stack([1 - p1, p1])[None]         # (1, 2, 2, 2) class probabilities
    >>> y = np.array([[[[1, 0], [1, 0]]]])         # (1, 1, 2, 2) labels
    >>> F.dice_loss(x, y, to_onehot_y=True)
    np.float64(0.20050074936842105)
    """
    reduction = _v.reduction(reduction, alias=False)
    opts = _dice_options(include_background, to_onehot_y, sigmoid, softmax, other_act,
                         squared_pred, jaccard, smooth_nr, smooth_dr, batch, weight)
    ops = _overlap_operands(opts, input, target)
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (input, target, weight), sweep=_overlap.evaluate)


def tversky_loss(input, target, include_background=True, to_onehot_y=False, sigmoid=False,
                 softmax=False, other_act=None, alpha=0.5, beta=0.5, reduction="mean",
                 smooth_nr=1e-5, smooth_dr=1e-5, batch=False, *, return_grad=False,
                 grad_output=None, grad_out=None):
    """Tversky loss with MONAI's ``TverskyLoss`` conventions (parameters, order, defaults).

    Shapes, activations, ``to_onehot_y``, ``include_background`` and ``batch``
    as :func:`dice_loss`.  Per entry, with ``TP = sum p g``,
    ``FP = sum p (1 - g)``, ``FN = sum (1 - p) g``::

        L = 1 - (TP + smooth_nr) / (TP + alpha FP + beta FN + smooth_dr)

    alpha weighs false positives, beta false negatives.  'none' gives shape
    (B, C') ((C',) with ``batch=True``).  With both smooth terms 0,
    alpha = beta = 0.5 is the Dice loss and alpha = beta = 1 its jaccard form.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> p1 = np.array([[0.9, 0.2], [0.6, 0.1]])
    >>> x = np.stack([1 - p1, p1])[None]
    >>> y = np.array([[[[1, 0], [1, 0]]]])
    >>> F.tversky_loss(x, y, to_onehot_y=True, alpha=0.3, beta=0.7, reduction="none")
    array([[0.17475643, 0.22680295]])
    """
    reduction = _v.reduction(reduction, alias=False)
    opts = _tversky_options(include_background, to_onehot_y, sigmoid, softmax, other_act, alpha,
                            beta, smooth_nr, smooth_dr, batch)
    ops = _overlap_operands(opts, input, target)
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (input, target), sweep=_overlap.evaluate)


# ----------------------------------------------------------------------------------
# Sequence loss: CTC (closs/_kernels/_ctc.pyx).
# ----------------------------------------------------------------------------------


def _ctc_lengths(value, name, batch):
    """Lengths (an int, a sequence or an array of ints, any shape, as torch
    flattens them) as a C-contiguous int64 array of `batch` values."""
    arr = value if type(value) is np.ndarray else np.asarray(value)
    if arr.size != batch:
        raise ValueError(f"{name}: expected {batch} value(s), one per batch entry ({name} must "
                         f"be of size batch_size), got {arr.size}")
    if arr.dtype is _INT64 and arr.ndim == 1 and arr.flags.c_contiguous:  # the common case
        return arr
    if arr.dtype.kind not in "iu" and arr.size:  # np.asarray([]) is float64
        raise TypeError(f"{name}: expected integers (an int, or a sequence or array of ints), "
                        f"got {_v._describe(arr)} ({name} must be integral)")
    if arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: expected lengths that fit int64, got {arr.max()}")
    return np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)


def _ctc_operands(log_probs, targets, input_lengths, target_lengths, blank, zero_infinity):
    """Operands of ctc_loss; blank (an int) and zero_infinity (a bool) come validated."""
    x = _v.float_array(log_probs, "log_probs")
    if x.ndim not in (2, 3):
        raise ValueError(f"log_probs: expected an array of shape (T, N, C) or, unbatched, (T, C), "
                         f"got {x.ndim} dimension(s) {x.shape}")
    # torch raises for an empty log_probs; closs gives what an empty batch gives every
    # loss ('none' empty, 'mean' nan, 'sum' 0), and T = 0 needs all input lengths 0.
    grad_shape = x.shape
    loss_shape = (x.shape[1],) if x.ndim == 3 else ()
    x3 = _v.contiguous(x if x.ndim == 3 else x[:, None, :])
    steps, batch, classes = x3.shape
    if not 0 <= blank < classes:
        raise ValueError(f"blank: expected a class index in [0, {classes}) (blank must be in "
                         f"label range), got {blank}")
    t = targets if type(targets) is np.ndarray else np.asarray(targets)
    if t.dtype.kind == "f":  # torch casts float labels to int64 (truncating)
        if not np.isfinite(t).all():
            raise ValueError(f"targets: expected finite labels, got {t[~np.isfinite(t)][0]}")
        t = t.astype(np.int64)
    if t.dtype.kind not in "iu":
        raise TypeError(f"targets: expected integer labels, got {_v._describe(t)}")
    if t.ndim == 2:
        if t.shape[0] != batch:
            raise ValueError(f"targets: expected padded targets of shape ({batch}, S), one row "
                             f"per batch entry, got {t.shape}")
        width = t.shape[1]
    elif t.ndim == 1:
        width = -1  # the concatenation of every sample's labels
    else:
        raise ValueError(f"targets: expected padded targets (N, S) or concatenated targets "
                         f"(sum(target_lengths),), got shape {t.shape}")
    if t.dtype is _INT64 and t.flags.c_contiguous:  # the common case
        t = t.reshape(-1)
    else:
        if t.dtype == np.uint64:  # labels past int64 are out of range anyway
            t = np.minimum(t, np.iinfo(np.int64).max)
        t = np.ascontiguousarray(t.reshape(-1), dtype=np.int64)
    il = _ctc_lengths(input_lengths, "input_lengths", batch)
    tl = _ctc_lengths(target_lengths, "target_lengths", batch)
    return _ctc.prepare(x3, t, width, il, tl, blank, zero_infinity, loss_shape, grad_shape)


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
             zero_infinity=False, *, return_grad=False, grad_output=None, grad_out=None):
    """Connectionist temporal classification loss: ``-log p(target | log_probs)``
    summed over every alignment, by the log-space alpha-beta recursion.

    Parameters
    ----------
    log_probs : array_like, (T, N, C) time-major, or (T, C) unbatched
        Log-probabilities (normally ``log_softmax`` output; used as given), float32
        or float64.
    targets : integer array_like (float labels are truncated to integers, as torch)
        Padded labels (N, S) (entries past each target length are ignored), or
        the concatenation of every sample's labels (sum(target_lengths),).
        Labels must lie in [0, C) and differ from ``blank`` (ValueError; torch
        does not check).  Unbatched: (S,) concatenated or (1, S) padded.
    input_lengths, target_lengths : integers
        N values each (an int, or a sequence or array; 0-d or (1,) unbatched),
        with 0 <= input_lengths <= T and 0 <= target_lengths.
    reduction : {'mean', 'sum', 'none'}
        'mean' averages ``loss_n / max(target_lengths[n], 1)`` over the batch, as
        torch; 'none' gives (N,) (or () unbatched).
    zero_infinity : bool
        Infinite losses (impossible alignments: too few steps) become 0, with
        gradient 0.  Otherwise such a loss is inf and its gradient nan.
    return_grad : bool
        Also return the gradient w.r.t. log_probs in torch's convention:
        ``g (exp(log_probs) - gamma)`` for t < input_lengths[n], 0 beyond, with
        gamma the posterior occupancy of each class.  That is the gradient
        w.r.t. the logits when ``log_probs = log_softmax(logits)`` (the true
        derivative w.r.t. log_probs is ``-g gamma``).  As in torch, a class at
        log_prob -inf gets a nan gradient.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> lp = np.log(np.full((3, 1, 2), 0.5))        # T=3, N=1, C=2, uniform
    >>> F.ctc_loss(lp, np.array([[1]]), [3], [1], reduction="sum")   # -log(6/8)
    np.float64(0.2876820724517809)
    """
    reduction = _v.reduction(reduction)
    ops = _ctc_operands(log_probs, targets, input_lengths, target_lengths,
                        _v.integer(blank, "blank"), _v.flag(zero_infinity, "zero_infinity"))
    return _finish(ops, reduction, return_grad, grad_output, grad_out,
                   (log_probs, targets, input_lengths, target_lengths), sweep=_ctc.evaluate)
