# distutils: language = c++
"""Test and benchmark entry to csrc/closs_vmath.hpp (private).

``apply(name, x)`` evaluates one of the vectorisable exp/log functions on every
element of a float32/float64 array, in one loop compiled per instruction set
(closs_isa.hpp; CLOSS_SIMD selects the path, ``ISA`` names the one in use),
single-threaded, with the GIL released.
"""
import numpy as np

cimport numpy as cnp

cnp.import_array()

cdef extern from *:
    """
    #include <cstddef>
    #include "closs_isa.hpp"
    #include "closs_vmath.hpp"

    namespace closs {

    enum VmathOp { VM_EXP = 0, VM_EXP_NONPOS, VM_LOG, VM_LOG1P, VM_SOFTPLUS, VM_LOG_SIGMOID,
                   VM_LOG_NONNEG, VM_LOG_NORMAL, VM_LOG_SUM, VM_LOG_POSITIVE,
                   VM_LOG_POSITIVE_NORMAL, VM_LOG_UNIT };

    template <class T, class F>
    static inline void vmath_loop(F f, const T* __restrict x, T* __restrict y, std::ptrdiff_t n) {
        for (std::ptrdiff_t i = 0; i < n; ++i) y[i] = f(x[i]);
    }

    template <class T>
    void vmath_apply(int op, const T* x, T* y, std::ptrdiff_t n) {
        switch (op) {
            case VM_EXP: vmath_loop(vexp<T>, x, y, n); break;
            case VM_EXP_NONPOS: vmath_loop(vexp_nonpos<T>, x, y, n); break;
            case VM_LOG: vmath_loop(vlog<T>, x, y, n); break;
            case VM_LOG1P: vmath_loop(vlog1p<T>, x, y, n); break;
            case VM_SOFTPLUS: vmath_loop(softplus<T>, x, y, n); break;
            case VM_LOG_SIGMOID: vmath_loop(log_sigmoid<T>, x, y, n); break;
            case VM_LOG_NONNEG: vmath_loop(vlog_nonneg<T>, x, y, n); break;
            case VM_LOG_NORMAL: vmath_loop(vlog_nonneg<T, false>, x, y, n); break;
            case VM_LOG_SUM: vmath_loop(vlog_sum<T>, x, y, n); break;
            case VM_LOG_POSITIVE: vmath_loop(vlog_positive<T>, x, y, n); break;
            case VM_LOG_POSITIVE_NORMAL: vmath_loop(vlog_positive<T, false>, x, y, n); break;
            case VM_LOG_UNIT: vmath_loop(vlog_unit<T>, x, y, n); break;
            default: break;
        }
    }

    using vmath_f32_fn = void(int, const float*, float*, std::ptrdiff_t);
    using vmath_f64_fn = void(int, const double*, double*, std::ptrdiff_t);
    CLOSS_MULTIVERSION(vmath_f32_fn, vmath_f32, vmath_apply<float>)
    CLOSS_MULTIVERSION(vmath_f64_fn, vmath_f64, vmath_apply<double>)

    }  // namespace closs
    """

ctypedef void vmath_f32_t(int, const float*, float*, Py_ssize_t) noexcept nogil
ctypedef void vmath_f64_t(int, const double*, double*, Py_ssize_t) noexcept nogil

cdef extern from * namespace "closs":
    vmath_f32_t* vmath_f32_for(int isa)
    vmath_f64_t* vmath_f64_for(int isa)

cdef extern from "closs_isa.hpp":
    int closs_isa_selected()
    const char* closs_isa_name(int isa)

cdef vmath_f32_t* apply_f32 = vmath_f32_for(closs_isa_selected())
cdef vmath_f64_t* apply_f64 = vmath_f64_for(closs_isa_selected())

ISA = closs_isa_name(closs_isa_selected()).decode()

OPS = {"exp": 0, "exp_nonpos": 1, "log": 2, "log1p": 3, "softplus": 4, "log_sigmoid": 5,
       "log_nonneg": 6, "log_normal": 7, "log_sum": 8, "log_positive": 9,
       "log_positive_normal": 10, "log_unit": 11}


def apply(str name, x):
    """name(x) elementwise, as a new array of x's shape and dtype (float32 or float64)."""
    cdef int op
    try:
        op = OPS[name]
    except KeyError:
        raise ValueError(f"apply: unknown function {name!r}; expected one of {sorted(OPS)}") from None
    cdef cnp.ndarray a = np.ascontiguousarray(x)
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError(f"apply: expected a float32 or float64 array, got {a.dtype}")
    cdef cnp.ndarray out = np.empty_like(a, order="C")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef void* px = cnp.PyArray_DATA(a)
    cdef void* py = cnp.PyArray_DATA(out)
    if a.dtype == np.float32:
        with nogil:
            apply_f32(op, <const float*> px, <float*> py, n)
    else:
        with nogil:
            apply_f64(op, <const double*> px, <double*> py, n)
    return out
