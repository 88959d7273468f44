# distutils: language = c++
"""Pointwise kernel family: one entry, `evaluate`, for every elementwise loss.

The caller (closs/functional.py) has validated everything into `Operands`:
C-contiguous, aligned arrays of one float dtype and one shape.  This module
allocates the outputs, takes the data pointers, releases the GIL and splits
the chunks of csrc/closs_pointwise.hpp over threads; the sum of losses comes back as the pairwise sum of the chunks'
partial sums, so it is the same for any number of threads.
"""
cimport numpy as cnp
from libcpp cimport bool as cbool

from closs._kernels._arrays cimport (data_or_null, empty_like, grad_buffer, real, same_float_layout,
                                    scalar_of, upstream)
from closs._kernels._runtime cimport threads_for

from closs import _validation as _v

cnp.import_array()

cdef extern from "closs_pointwise.hpp" namespace "closs":
    ctypedef Py_ssize_t index

    cdef cppclass PointwiseArgs[T]:
        index n
        const T* a
        const T* b
        const T* c
        const T* w
        T* loss
        T* grad_a
        T* grad_b
        T* grad_c
        const T* grad_output
        T gscale
        double p0, p1
        int kind
        int want_sum
        int check

    int PW_CHECK_NONE, PW_CHECK_UNIT, PW_CHECK_VAR
    int PW_L1, PW_MSE, PW_SMOOTH_L1, PW_HUBER, PW_POISSON_LOG, PW_POISSON, PW_GAUSSIAN
    int PW_BCE, PW_BCE_LOGITS, PW_BCE_LOGITS_POS, PW_KL, PW_KL_LOG, PW_SOFT_MARGIN_ML
    int PW_MARGIN_RANKING, PW_HINGE_EMBEDDING, PW_SOFT_MARGIN, PW_SIGMOID_FOCAL

ctypedef double chunk_f32_t(const PointwiseArgs[float]&, index, index) noexcept nogil
ctypedef double chunk_f64_t(const PointwiseArgs[double]&, index, index) noexcept nogil

cdef extern from "closs_pointwise.hpp" namespace "closs":
    chunk_f32_t* pointwise_f32_for(int isa)
    chunk_f64_t* pointwise_f64_for(int isa)
    double pointwise_sweep[T](double (*chunk)(const PointwiseArgs[T]&, index, index) noexcept nogil,
                              const PointwiseArgs[T]& p, int threads,
                              cbool* out_of_range) except + nogil

cdef extern from "closs_checks.hpp" namespace "closs":
    index first_outside_unit[T](const T* x, index n, int threads) except + nogil
    index first_negative[T](const T* x, index n, int threads) except + nogil

cdef extern from "closs_isa.hpp":
    int closs_isa_selected()

L1 = PW_L1
MSE = PW_MSE
SMOOTH_L1 = PW_SMOOTH_L1
HUBER = PW_HUBER
POISSON_LOG = PW_POISSON_LOG
POISSON = PW_POISSON
GAUSSIAN = PW_GAUSSIAN
BCE = PW_BCE
BCE_LOGITS = PW_BCE_LOGITS
BCE_LOGITS_POS = PW_BCE_LOGITS_POS
KL = PW_KL
KL_LOG = PW_KL_LOG
SOFT_MARGIN_ML = PW_SOFT_MARGIN_ML
MARGIN_RANKING = PW_MARGIN_RANKING
HINGE_EMBEDDING = PW_HINGE_EMBEDDING
SOFT_MARGIN = PW_SOFT_MARGIN
SIGMOID_FOCAL = PW_SIGMOID_FOCAL
# the input ranges a sweep checks block by block (Operands.check)
CHECK_UNIT = PW_CHECK_UNIT
CHECK_VAR = PW_CHECK_VAR

# Below two grains of elements a second thread costs more than it saves.
DEF GRAIN = 32768

cdef chunk_f32_t* chunk_f32 = pointwise_f32_for(closs_isa_selected())
cdef chunk_f64_t* chunk_f64 = pointwise_f64_for(closs_isa_selected())

cdef double sweep(real tag, int kind, cnp.ndarray a, cnp.ndarray b, object c, object w,
                  object loss, object grad_a, object grad_b, object grad_c, object grad_output,
                  double gscale, double p0, double p1, bint want_sum, int check,
                  cbool* out_of_range) except? -1.0:
    cdef PointwiseArgs[real] p
    p.n = cnp.PyArray_SIZE(a)
    p.a = <const real*> cnp.PyArray_DATA(a)
    p.b = <const real*> cnp.PyArray_DATA(b)
    p.c = data_or_null(c, tag)
    p.w = data_or_null(w, tag)
    p.loss = data_or_null(loss, tag)
    p.grad_a = data_or_null(grad_a, tag)
    p.grad_b = data_or_null(grad_b, tag)
    p.grad_c = data_or_null(grad_c, tag)
    p.grad_output = data_or_null(grad_output, tag)
    p.gscale = <real> gscale
    p.p0 = p0
    p.p1 = p1
    p.kind = kind
    p.want_sum = want_sum
    p.check = check
    cdef int threads = threads_for(p.n, GRAIN)
    with nogil:
        if real is float:
            return pointwise_sweep[float](chunk_f32, p, threads, out_of_range)
        else:
            return pointwise_sweep[double](chunk_f64, p, threads, out_of_range)


cdef class Operands:
    """The validated operands of one pointwise call (kept by a loss class for backward).

    a, b, c, w: C-contiguous, aligned arrays of one float dtype and one shape
    (c: the third operand or None; w: the element weight or None).  a_shape,
    b_shape, c_shape: the shapes the gradients are summed back to (None: the
    operand's own shape; b_shape only for MarginRanking, whose b is input2;
    see closs._validation.gradient_like for c_shape).  grad_dtypes: None, or
    the dtypes MarginRanking's (grad_a, grad_b) or GaussianNLL's (grad_a,
    grad_c) are returned in when the arguments' dtypes differ.  count: the
    'mean' denominator (default: the number of elements).  check: CHECK_UNIT
    (BCE: a and b in [0, 1]) or CHECK_VAR (GaussianNLL: c >= 0), ranges the
    first sweep checks block by block (then 0); or 0.
    """

    cdef public int kind, check
    cdef public double p0, p1, count
    cdef public cnp.ndarray a, b
    cdef public object c, w, a_shape, b_shape, c_shape, grad_dtypes

    def __init__(self, int kind, cnp.ndarray a, cnp.ndarray b, c=None, w=None, double p0=0.0,
                 double p1=0.0, a_shape=None, c_shape=None, count=None, b_shape=None,
                 grad_dtypes=None, int check=PW_CHECK_NONE):
        self.kind = kind
        self.check = check
        self.a = a
        self.b = b
        self.c = c
        self.w = w
        self.p0 = p0
        self.p1 = p1
        self.a_shape = None if a_shape == (<object> a).shape else a_shape
        self.b_shape = None if b_shape == (<object> b).shape else b_shape
        self.c_shape = c_shape
        self.grad_dtypes = grad_dtypes
        self.count = cnp.PyArray_SIZE(a) if count is None else count


def same_layout(a, b):
    """True when a and b are float32/float64 arrays of one dtype and one shape,
    both C-contiguous and aligned: the operands need no conversion at all."""
    return same_float_layout(a, b)


cdef Py_ssize_t first_outside(cnp.ndarray a, bint below_zero_only):
    """The flat index of the first entry of the C-contiguous float32/float64
    array a outside [0, 1] (or NaN), or below 0 with below_zero_only; or -1."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a), bad
    cdef void* x = cnp.PyArray_DATA(a)
    cdef int threads = threads_for(n, GRAIN)
    cdef bint single = cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32
    with nogil:
        if below_zero_only:
            bad = (first_negative[float](<const float*> x, n, threads) if single
                   else first_negative[double](<const double*> x, n, threads))
        else:
            bad = (first_outside_unit[float](<const float*> x, n, threads) if single
                   else first_outside_unit[double](<const double*> x, n, threads))
    return bad


cdef check_ranges(Operands ops):
    """ops.check's ranges, in a pass of their own: the ValueError of the first
    entry outside them (the sweep's block check only says that one is)."""
    cdef Py_ssize_t bad
    if ops.check == PW_CHECK_UNIT:
        for arr, name in ((ops.a, "input"), (ops.b, "target")):
            bad = first_outside(arr, False)
            if bad >= 0:
                raise _v.outside_unit_interval(name, arr.reshape(-1)[bad])
    elif ops.check == PW_CHECK_VAR and first_outside(ops.c, True) >= 0:
        raise _v.negative_var(ops.c.min())


def evaluate(Operands ops, str reduction, bint want_value, bint want_grad, grad_output,
             grad_out=None):
    """One sweep of the kernel; returns (value or None, grad or None).

    reduction: 'none', 'mean' or 'sum' (validated).  The value is a NumPy
    scalar of the operands' dtype, or an array for 'none'.  grad is the
    gradient w.r.t. a (summed back to a_shape), or (grad_a, grad_c) when there
    is a third operand.  grad_output: None (ones) or the upstream gradient, a
    scalar for reduced losses and an array of the loss's shape for 'none'.
    MarginRanking's grad is (grad_a, grad_b), both written by the one sweep.
    """
    cdef cnp.ndarray a = ops.a
    cdef bint reduced = reduction != "none", mean = reduction == "mean"
    cdef cbool out_of_range = False
    cdef double gscale = 1.0, total
    if ops.check and grad_out is not None:  # nothing may reach the caller's buffers
        check_ranges(ops)
        ops.check = PW_CHECK_NONE
    loss = grad_a = grad_b = grad_c = gout = None
    if want_grad:
        gscale, gout = upstream(grad_output, reduction, (<object> a).shape, (<object> a).dtype,
                                ops.count)
        grad_a = grad_buffer(grad_out, 0, a)
        if ops.kind == PW_GAUSSIAN:  # the one loss whose third operand is differentiated
            grad_c = grad_buffer(grad_out, 1, a)
        elif ops.kind == PW_MARGIN_RANKING:  # the one loss whose b is differentiated
            grad_b = grad_buffer(grad_out, 1, a)
    if want_value and not reduced:
        loss = empty_like(a)
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        total = sweep(<float> 0, ops.kind, a, ops.b, ops.c, ops.w, loss, grad_a, grad_b, grad_c,
                      gout, gscale, ops.p0, ops.p1, want_value and reduced, ops.check,
                      &out_of_range)
    else:
        total = sweep(<double> 0, ops.kind, a, ops.b, ops.c, ops.w, loss, grad_a, grad_b, grad_c,
                      gout, gscale, ops.p0, ops.p1, want_value and reduced, ops.check,
                      &out_of_range)
    if out_of_range:
        check_ranges(ops)  # raises ...
        raise RuntimeError("an input changed during the call")  # ... unless it did
    ops.check = PW_CHECK_NONE  # checked: a later sweep of these operands (backward) skips it
    value = grad = None
    if want_value:
        if reduced:
            value = scalar_of(total / ops.count if mean else total, a)  # 0/0 = nan when empty
        else:
            value = loss
    if want_grad:
        grad = grad_a if ops.a_shape is None else _v.sum_to_shape(grad_a, ops.a_shape)
        if grad_b is not None:
            grad = (grad, grad_b if ops.b_shape is None else _v.sum_to_shape(grad_b, ops.b_shape))
            if ops.grad_dtypes is not None:
                grad = tuple(g.astype(dt, copy=False) for g, dt in zip(grad, ops.grad_dtypes))
        if grad_c is not None:
            grad_c = _v.gradient_like(grad_c, ops.c_shape, (<object> a).dtype)
            if ops.grad_dtypes is not None:
                grad_c = grad_c.astype(ops.grad_dtypes[1], copy=False)
            grad = (grad, grad_c)
    return value, grad
