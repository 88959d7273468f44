# distutils: language = c++
"""Sequence kernel family: CTC loss and torch's gradient (csrc/closs_ctc.hpp).

The caller (closs/functional.py) has normalised the arguments: log_probs a
C-contiguous (T, N, C) float32/float64 array, targets a flat int64 array
(padded rows or the concatenation), lengths as int64 arrays of N.  `prepare`
checks lengths and labels against them and returns the `Operands` of one
sweep; `evaluate` runs it (value, gradient or both) and finishes the reduction.
"""
cimport numpy as cnp
import numpy as np
from libc.stdint cimport int64_t

from closs._kernels._arrays cimport data_or_null, grad_buffer, real, scalar_of, upstream
from closs._kernels._runtime cimport threads_for

from closs import _validation as _v

cnp.import_array()

cdef extern from "closs_ctc.hpp" namespace "closs":
    ctypedef Py_ssize_t index

    cdef cppclass CtcArgs[T]:
        index steps, batch, classes, max_target
        const T* lp
        const int64_t* targets
        const int64_t* offsets
        const int64_t* input_lengths
        const int64_t* target_lengths
        int64_t blank
        bint zero_infinity, mean
        T* loss
        T* grad
        const T* grad_output
        double gscale

ctypedef double chunk_f32_t(const CtcArgs[float]&, index, index) noexcept nogil
ctypedef double chunk_f64_t(const CtcArgs[double]&, index, index) noexcept nogil

cdef extern from "closs_ctc.hpp" namespace "closs":
    chunk_f32_t* ctc_f32_for(int isa)
    chunk_f64_t* ctc_f64_for(int isa)
    double ctc_sweep[T](double (*chunk)(const CtcArgs[T]&, index, index) noexcept nogil,
                        const CtcArgs[T]& p, int threads) except + nogil

cdef extern from "closs_isa.hpp":
    int closs_isa_selected()

# Lattice cells (steps x states) below which a second thread costs more than it
# saves: a cell is ~10 exp/log for value and gradient.
DEF GRAIN = 4096

cdef chunk_f32_t* chunk_f32 = ctc_f32_for(closs_isa_selected())
cdef chunk_f64_t* chunk_f64 = ctc_f64_for(closs_isa_selected())


cdef class Operands:
    """The validated operands of one CTC call.

    x: log_probs as a C-contiguous (T, N, C) array; targets: int64 labels,
    sample n's at offsets[n]; input_lengths, target_lengths: int64 (N,).
    loss_shape: (N,) or () (unbatched); grad_shape: the shape of log_probs.
    """

    cdef public cnp.ndarray x, targets, offsets, input_lengths, target_lengths
    cdef public object loss_shape, grad_shape
    cdef public Py_ssize_t max_target
    cdef public int64_t blank
    cdef public bint zero_infinity


def prepare(cnp.ndarray x, cnp.ndarray targets, Py_ssize_t width, cnp.ndarray input_lengths,
            cnp.ndarray target_lengths, int64_t blank, bint zero_infinity, loss_shape,
            grad_shape):
    """Check the lengths and the labels each sample uses; returns Operands.

    x: (T, N, C); targets, input_lengths, target_lengths: C-contiguous 1-D
    int64 arrays (as closs.functional makes them; read through raw pointers),
    the lengths N values each; width: the padded targets' row length, or -1
    for concatenated targets (then len(targets) must be sum(target_lengths)).
    """
    cdef Py_ssize_t T = x.shape[0], N = x.shape[1], C = x.shape[2], n, k
    cdef cnp.npy_intp dims = N
    cdef cnp.ndarray offsets_array = cnp.PyArray_EMPTY(1, &dims, cnp.NPY_INT64, 0)
    cdef int64_t* offsets = <int64_t*> cnp.PyArray_DATA(offsets_array)
    cdef const int64_t* labels = <const int64_t*> cnp.PyArray_DATA(targets)
    cdef const int64_t* in_lengths = <const int64_t*> cnp.PyArray_DATA(input_lengths)
    cdef const int64_t* tg_lengths = <const int64_t*> cnp.PyArray_DATA(target_lengths)
    cdef int64_t il, tl, pos = 0, label, max_target = 0
    cdef Py_ssize_t total = targets.shape[0]
    for n in range(N):
        il = in_lengths[n]
        tl = tg_lengths[n]
        if il < 0 or il > T:
            raise ValueError(
                f"input_lengths: expected values in [0, {T}] (the time steps of log_probs), "
                f"got {il} at index {n} (Expected input_lengths to have value "
                f"{'at least 0' if il < 0 else f'at most {T}'}, but got value {il})")
        if tl < 0:
            raise ValueError(f"target_lengths: expected values >= 0, got {tl} at index {n} "
                             f"(Expected target_lengths to have value at least 0, but got "
                             f"value {tl})")
        if width >= 0:
            if tl > width:
                raise ValueError(
                    f"target_lengths: expected values <= {width}, the row length of the "
                    f"padded targets, got {tl} at index {n} (Expected tensor to have size "
                    f"at least {tl} at dimension 1, but got size {width} for argument #2 "
                    f"'targets')")
            offsets[n] = n * width
        else:
            if tl > total - pos:
                raise ValueError(
                    f"targets: expected the concatenated labels, sum(target_lengths) values, "
                    f"got only {total} for the first {n + 1} lengths")
            offsets[n] = pos
            pos += tl
        max_target = max(max_target, tl)
    if width < 0 and pos != total:
        raise ValueError(f"targets: expected sum(target_lengths) = {pos} concatenated labels "
                         f"(Expected tensor to have size {pos} at dimension 0), got {total}")
    for n in range(N):
        for k in range(offsets[n], offsets[n] + tg_lengths[n]):
            label = labels[k]
            if label < 0 or label >= C:
                raise _v.LabelError(
                    f"targets: expected labels in [0, {C}) (the classes of log_probs), got "
                    f"{label} for sample {n} (torch does not check and reads out of bounds)")
            if label == blank:
                raise ValueError(
                    f"targets: expected labels other than blank ({blank}), got {label} for "
                    f"sample {n} (a label equal to blank gives torch a meaningless value)")
    cdef Operands ops = Operands()
    ops.x = x
    ops.targets = targets
    ops.offsets = offsets_array
    ops.input_lengths = input_lengths
    ops.target_lengths = target_lengths
    ops.max_target = max_target
    ops.blank = blank
    ops.zero_infinity = zero_infinity
    ops.loss_shape = loss_shape
    ops.grad_shape = grad_shape
    return ops


cdef double ctc(real tag, Operands ops, bint mean, object loss, object grad, object grad_output,
                double gscale) except? -1.0:
    cdef CtcArgs[real] p
    cdef cnp.ndarray x = ops.x
    p.steps = x.shape[0]
    p.batch = x.shape[1]
    p.classes = x.shape[2]
    p.max_target = ops.max_target
    p.lp = <const real*> cnp.PyArray_DATA(x)
    p.targets = <const int64_t*> cnp.PyArray_DATA(ops.targets)
    p.offsets = <const int64_t*> cnp.PyArray_DATA(ops.offsets)
    p.input_lengths = <const int64_t*> cnp.PyArray_DATA(ops.input_lengths)
    p.target_lengths = <const int64_t*> cnp.PyArray_DATA(ops.target_lengths)
    p.blank = ops.blank
    p.zero_infinity = ops.zero_infinity
    p.mean = mean
    p.loss = data_or_null(loss, tag)
    p.grad = data_or_null(grad, tag)
    p.grad_output = data_or_null(grad_output, tag)
    p.gscale = gscale
    cdef int threads = threads_for(p.batch * p.steps * (2 * p.max_target + 1), GRAIN)
    with nogil:
        if real is float:
            return ctc_sweep[float](chunk_f32, p, threads)
        else:
            return ctc_sweep[double](chunk_f64, p, threads)


def evaluate(Operands ops, str reduction, bint want_value, bint want_grad, grad_output,
             grad_out=None):
    """One sweep; returns (value or None, grad or None).  The value is a NumPy
    scalar for 'mean' (mean of loss_n / max(S_n, 1)) and 'sum', the per-sample
    losses for 'none'; the gradient has log_probs' shape."""
    cdef cnp.ndarray x = ops.x
    cdef Py_ssize_t N = x.shape[1]
    cdef bint reduced = reduction != "none", mean = reduction == "mean"
    cdef double gscale = 1.0, total
    loss = grad = gout = None
    if want_grad:
        gscale, gout = upstream(grad_output, reduction, ops.loss_shape, (<object> x).dtype, N)
        grad = grad_buffer(grad_out, 0, x)
    if want_value and not reduced:
        loss = np.empty(N, (<object> x).dtype)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        total = ctc(<float> 0, ops, mean, loss, grad, gout, gscale)
    else:
        total = ctc(<double> 0, ops, mean, loss, grad, gout, gscale)
    value = None
    if want_value:
        if mean:  # an empty batch's mean is nan, as every loss's
            total = total / N if N else float("nan")
        value = scalar_of(total, x) if reduced else loss.reshape(ops.loss_shape)
    if want_grad:
        grad = grad.reshape(ops.grad_shape)
    return value, grad
