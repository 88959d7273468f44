"""Argument checks shared by every loss, and their messages.

Each message names the argument, what was expected and what was given.  The
exception types follow the API contract: ValueError for a wrong value or
shape, TypeError for a wrong kind of dtype, IndexError for an out-of-range
class index.  Everything is checked here, in Python, before a kernel runs:
the kernels trust their inputs.
"""
import numbers
import warnings

import numpy as np

# contiguous(arr): a C-contiguous, aligned view or copy of arr (in Cython: on
# the path of every call, where arr.flags alone would cost 0.1-0.2 us)
from ._kernels._runtime import contiguous  # noqa: F401

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
REDUCTIONS = ("none", "mean", "sum")


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype}"
    return f"{value!r} ({type(value).__name__})"


# -- reductions --------------------------------------------------------------------


def legacy_reduction(size_average, reduce):
    """torch's mapping of the deprecated size_average/reduce pair, with its warning."""
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    reduction = "none" if not reduce else "mean" if size_average else "sum"
    warnings.warn(
        "size_average and reduce args will be deprecated, please use "
        f"reduction='{reduction}' instead.",
        UserWarning,
        stacklevel=4,
    )
    return reduction


def reduction(value, size_average=None, reduce=None, *, allowed=REDUCTIONS, alias=True):
    """The reduction to apply: the legacy pair overrides `value`.

    alias: accept 'elementwise_mean' as a deprecated alias of 'mean' (as torch
    does for losses that go through its reduction enum).
    """
    if size_average is not None or reduce is not None:
        return legacy_reduction(size_average, reduce)
    if value in allowed:
        return value
    if alias and value == "elementwise_mean" and "mean" in allowed:
        warnings.warn(
            "reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
            UserWarning,
            stacklevel=3,
        )
        return "mean"
    expected = ", ".join(repr(r) for r in allowed)
    raise ValueError(f"reduction: expected one of {expected}, got {value!r} "
                     f"({value!r} is not a valid value for reduction)")


# -- arrays ------------------------------------------------------------------------


def float_array(value, name):
    """`value` as a float32/float64 array (no copy when it already is one)."""
    arr = value if type(value) is np.ndarray else np.asarray(value)
    dtype = arr.dtype
    if dtype is FLOAT_DTYPES[0] or dtype is FLOAT_DTYPES[1] or dtype in FLOAT_DTYPES:
        return arr
    if dtype.kind == "f" and dtype.itemsize in (4, 8):  # non-native byte order
        return arr.astype(dtype.newbyteorder("="))
    raise TypeError(
        f"{name}: expected a floating-point array (float32 or float64), got {_describe(arr)}"
    )


def operand(value, name, dtype):
    """`value` (real numbers of any dtype) as an array of the compute `dtype`."""
    arr = value if type(value) is np.ndarray else np.asarray(value)
    if arr.dtype is dtype:
        return arr
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected an array of real numbers, got {_describe(arr)}")
    return arr.astype(dtype)


def same_shape(arr, shape, name, expected_name="input"):
    if arr.shape != shape:
        raise ValueError(
            f"{name}: expected the shape of {expected_name} {tuple(shape)}, got {arr.shape}"
        )


def broadcast_shape(shape_a, shape_b, name_a, name_b):
    try:
        return np.broadcast_shapes(shape_a, shape_b)
    except ValueError:
        raise ValueError(
            f"{name_b}: expected a shape that broadcasts with {name_a} {shape_a}, got {shape_b}"
        ) from None


def sum_to_shape(grad, shape):
    """Sum a gradient computed over a broadcast shape back to `shape`."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, size in enumerate(shape) if size == 1 and grad.shape[lead + i] != 1
    )
    return np.sum(grad, axis=axes, keepdims=True).reshape(shape)


def gradient_like(grad, shapes, dtype):
    """A gradient summed back to its argument: shapes is (the shape the argument
    broadcast from, the argument's own shape), or None for a Python number."""
    if shapes is None:
        return dtype.type(np.sum(grad, dtype=np.float64))
    return sum_to_shape(grad, shapes[0]).reshape(shapes[1])


def warn_target_size(input_shape, target_shape):
    """torch's warning for L1/MSE/SmoothL1/Huber targets that broadcast."""
    warnings.warn(
        f"Using a target size ({target_shape}) that is different to the input size "
        f"({input_shape}). This will likely lead to incorrect results due to broadcasting. "
        "Please ensure they have the same size.",
        UserWarning,
        stacklevel=4,
    )


def grad_output(value, reduction, shape, dtype):
    """The upstream gradient: (scalar, None) for reduced losses, (1.0, None) or
    (None-or-1.0, array of the loss's shape) for 'none'."""
    if reduction != "none":
        if value is None:
            return 1.0, None
        if np.ndim(value) != 0:
            raise ValueError(
                f"grad_output: expected a scalar for reduction={reduction!r}, "
                f"got an array of shape {np.shape(value)}"
            )
        return real_number(value, "grad_output"), None
    if value is None:
        return 1.0, None
    arr = operand(value, "grad_output", dtype)
    if arr.shape != shape:
        raise ValueError(
            f"grad_output: expected the loss's shape {tuple(shape)} for reduction='none', "
            f"got {arr.shape}"
        )
    return 1.0, contiguous(arr)


def grad_out(out, args, grad_args, others=()):
    """The preallocated gradient buffers of value_and_grad / backward: None, or a
    tuple with one array per differentiable argument (args[i] for i in grad_args).

    Each must be a writeable, C-contiguous float32/float64 ndarray of its
    argument's shape, sharing no memory with any argument (whatever its type:
    a torch tensor or memoryview may share an array's memory), with `others`
    (what else the sweep reads: grad_output, a loss object's weights) or with
    another buffer.  (Its dtype is checked against the gradient's by `deliver`;
    a kernel writes straight into a buffer of the right size and dtype.)
    """
    if out is None:
        return None
    read = [a if isinstance(a, np.ndarray) else np.asarray(a)
            for a in (*args, *others) if a is not None and not isinstance(a, (int, float, str))]
    many = len(grad_args) > 1
    outs = out if many and isinstance(out, tuple) else (out,)
    if len(outs) != len(grad_args):
        raise ValueError(f"grad_out: expected a tuple of {len(grad_args)} arrays, one per "
                         f"gradient, got {_describe(out)}")
    for k, (o, i) in enumerate(zip(outs, grad_args)):
        name = f"grad_out[{k}]" if many else "grad_out"
        if type(o) is not np.ndarray:
            raise TypeError(f"{name}: expected a numpy.ndarray, got {_describe(o)}")
        if o.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}: expected a float32 or float64 array, got {_describe(o)}")
        shape = np.shape(args[i])
        if o.shape != shape:
            raise ValueError(f"{name}: expected the shape of its argument {shape}, got {o.shape}")
        if not (o.flags.c_contiguous and o.flags.writeable):
            raise ValueError(f"{name}: expected a writeable C-contiguous array, got a "
                             f"{'read-only' if not o.flags.writeable else 'non-contiguous'} one")
        if any(np.shares_memory(o, a) for a in read + list(outs[:k])):
            raise ValueError(f"{name}: expected a buffer of its own, got one that shares memory "
                             f"with an input (or grad_output, or a weight) or another "
                             f"gradient buffer")
    return outs


def deliver(grad, outs):
    """The gradient(s) of a sweep in the buffers outs (from `grad_out`): a kernel
    has written in place where it could, the rest is copied.  Returns the buffers."""
    if outs is None:
        return grad
    grads = grad if isinstance(grad, tuple) else (grad,)
    for k, (g, o) in enumerate(zip(grads, outs)):
        g = np.asarray(g)
        if g.dtype != o.dtype:
            raise ValueError(f"grad_out{f'[{k}]' if len(outs) > 1 else ''}: expected the "
                             f"gradient's dtype {g.dtype}, got {o.dtype}")
        if g.ctypes.data != o.ctypes.data:  # not written in place
            np.copyto(o, g.reshape(o.shape))
    return outs if isinstance(grad, tuple) else outs[0]


# -- hyper-parameters ----------------------------------------------------------


def outside_unit_interval(name, value):
    """The error for an entry of a probability operand outside [0, 1]."""
    return ValueError(f"{name}: expected all elements between 0 and 1, got {value}")


def negative_var(minimum):
    """GaussianNLL's error for a var with negative entries."""
    return ValueError("var: expected entries >= 0 (var has negative entry/entries), "
                      f"got a minimum of {minimum}")


def real_number(value, name):
    """`value` as a Python float; TypeError when it is not a real number."""
    if type(value) is float or type(value) is int:  # fast: isinstance of an ABC is slow
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {_describe(value)}")
    return float(value)


def integer(value, name):
    """`value` as a Python int; TypeError when it is not an integer."""
    if type(value) is int:  # fast: isinstance of an ABC is slow
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {_describe(value)}")
    return int(value)


def non_negative(value, name):
    value = real_number(value, name)
    if not value >= 0:
        raise ValueError(f"{name}: expected a value >= 0, got {value}")
    return value


def positive(value, name):
    value = real_number(value, name)
    if not value > 0:
        raise ValueError(f"{name}: expected a value > 0, got {value}")
    return value


def flag(value, name):
    if value is True or value is False:  # the common case, fast
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name}: expected a bool, got {_describe(value)}")


class LabelError(ValueError, IndexError):
    """A class label outside [0, C) (CTC targets, Dice / Tversky labels): a wrong
    value (ValueError) that is also a class index out of range (IndexError, API.md)."""
