# Small array helpers shared by the kernel modules (all inline; no module of its own).
cimport numpy as cnp
from libc.stdint cimport int64_t

from closs._kernels._runtime cimport gradient_like

cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void* data, cnp.PyArray_Descr* descr, object base)

ctypedef fused real:
    float
    double


cdef inline bint native_carray(cnp.ndarray a) noexcept:
    """C-contiguous, aligned and in native byte order."""
    return cnp.PyArray_ISCARRAY_RO(a) and not cnp.PyArray_ISBYTESWAPPED(a)


cdef inline const int64_t* index_data(cnp.ndarray a) except NULL:
    """The data of a, a C-contiguous 1-D int64 array in native byte order (as
    the callers make it, aligned or not; checked here at a fraction of the
    cost of a typed buffer argument)."""
    if (cnp.PyArray_TYPE(a) != cnp.NPY_INT64 or cnp.PyArray_NDIM(a) != 1
            or not cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_ISBYTESWAPPED(a)):
        raise TypeError(f"expected a C-contiguous 1-D int64 array in native byte order, got "
                        f"{(<object> a).dtype} of shape {(<object> a).shape}")
    return <const int64_t*> cnp.PyArray_DATA(a)


cdef inline bint same_float_layout(object a, object b) noexcept:
    """True when a and b are float32/float64 arrays of one dtype and one shape,
    both native C-contiguous arrays (closs._kernels._pointwise.same_layout)."""
    if type(a) is not cnp.ndarray or type(b) is not cnp.ndarray:
        return False
    cdef cnp.ndarray x = <cnp.ndarray> a, y = <cnp.ndarray> b
    cdef int t = cnp.PyArray_TYPE(x), d
    if (t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or cnp.PyArray_TYPE(y) != t:
        return False
    if not (native_carray(x) and native_carray(y)) or cnp.PyArray_NDIM(x) != cnp.PyArray_NDIM(y):
        return False
    for d in range(cnp.PyArray_NDIM(x)):
        if cnp.PyArray_DIM(x, d) != cnp.PyArray_DIM(y, d):
            return False
    return True


cdef inline real* data_or_null(object arr, real tag) noexcept:
    """The data pointer of an array, or NULL for None."""
    if arr is None:
        return NULL
    return <real*> cnp.PyArray_DATA(<cnp.ndarray> arr)


cdef inline cnp.ndarray empty_like(cnp.ndarray a):
    """An uninitialised C-contiguous array of a's shape and dtype."""
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a), cnp.PyArray_TYPE(a), 0)


cdef inline tuple upstream(object grad_output, str reduction, object loss_shape, object dtype,
                           double count):
    """(scale, array or None): the upstream gradient of a sweep, as
    closs._validation.grad_output validates it, with 'mean''s 1 / count folded
    into the scale (a C division: inf or nan for an empty mean, which then has
    no gradient entry to scale)."""
    cdef double scale = 1.0
    gout = None
    if grad_output is not None:
        from closs import _validation
        scale, gout = _validation.grad_output(grad_output, reduction, loss_shape, dtype)
    if reduction == "mean":
        scale = scale / count
    return scale, gout


cdef inline cnp.ndarray grad_buffer(object outs, Py_ssize_t i, cnp.ndarray a):
    """Where a gradient like a is written: the caller's buffer outs[i] (validated
    by closs._validation.grad_out) viewed with a's shape when it has a's size and
    dtype, else a new array (then _validation.deliver copies the result)."""
    if outs is None:
        return gradient_like(a)
    cdef cnp.ndarray o = outs[i]
    if cnp.PyArray_SIZE(o) != cnp.PyArray_SIZE(a) or cnp.PyArray_TYPE(o) != cnp.PyArray_TYPE(a):
        return gradient_like(a)
    return (<object> o).reshape((<object> a).shape)  # a view: o is C-contiguous


cdef inline object scalar_of(double value, cnp.ndarray like):
    """`value` as a NumPy scalar of like's dtype."""
    cdef float f
    if cnp.PyArray_TYPE(like) == cnp.NPY_FLOAT32:
        f = <float> value
        return PyArray_Scalar(&f, cnp.PyArray_DESCR(like), None)
    return PyArray_Scalar(&value, cnp.PyArray_DESCR(like), None)
