# distutils: language = c++
"""The machine's limits for ``closs bench --roofline`` (csrc/closs_roofline.hpp).

Each function runs one pass on exactly ``threads`` OpenMP threads (1 without
OpenMP), with the GIL released, on the instruction set closs's kernels use;
closs/_bench.py times them.

    read(x, threads)                  sum of a float64 array
    scale(x, out, a, threads)         out = a * x (float64, same length)
    exp(x, y, reps, threads)          y = vexp(x), `reps` times; x and y are
                                      (rows, m) float32 or float64, rows over threads
"""
import numpy as np

cimport numpy as cnp

cnp.import_array()

cdef extern from *:
    """
    #ifdef _OPENMP
    #define CLOSS_ROOFLINE_OPENMP 1
    #else
    #define CLOSS_ROOFLINE_OPENMP 0
    #endif
    """
    int CLOSS_ROOFLINE_OPENMP

cdef extern from "closs_isa.hpp":
    int closs_isa_selected()

cdef extern from "closs_roofline.hpp":
    double c_read "closs::roofline::read"(const double* x, Py_ssize_t n, int threads,
                                          int isa) noexcept nogil
    void c_scale "closs::roofline::scale"(const double* x, double* out, Py_ssize_t n, double a,
                                          int threads, int isa) noexcept nogil
    double c_exp_f32 "closs::roofline::exp_f32"(const float* x, float* y, Py_ssize_t rows,
                                                Py_ssize_t m, Py_ssize_t reps, int threads,
                                                int isa) noexcept nogil
    double c_exp_f64 "closs::roofline::exp_f64"(const double* x, double* y, Py_ssize_t rows,
                                                Py_ssize_t m, Py_ssize_t reps, int threads,
                                                int isa) noexcept nogil

OPENMP = bool(CLOSS_ROOFLINE_OPENMP)
cdef int ISA = closs_isa_selected()


cdef int _threads(threads) except -1:
    t = int(threads)
    if t < 1:
        raise ValueError(f"threads: expected a positive int, got {threads!r}")
    return t if OPENMP else 1


def read(const double[::1] x, threads=1):
    """The sum of x, read once on `threads` threads."""
    cdef int t = _threads(threads)
    cdef double s
    with nogil:
        s = c_read(&x[0] if x.shape[0] else NULL, x.shape[0], t, ISA)
    return s


def scale(const double[::1] x, double[::1] out, double a=1.0, threads=1):
    """out = a * x on `threads` threads."""
    if out.shape[0] != x.shape[0]:
        raise ValueError(f"scale: out has {out.shape[0]} elements, x has {x.shape[0]}")
    cdef int t = _threads(threads)
    if x.shape[0] == 0:
        return
    with nogil:
        c_scale(&x[0], &out[0], x.shape[0], a, t, ISA)


def exp(x, y, Py_ssize_t reps=1, threads=1):
    """y = vexp(x) `reps` times; x, y: C-contiguous (rows, m), float32 or float64, the
    rows shared out over `threads` threads (a row per thread when rows == threads)."""
    cdef int t = _threads(threads)
    cdef cnp.ndarray a = x, b = y
    if (a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]
            or a.shape[1] != b.shape[1] or a.dtype != b.dtype
            or not a.flags.c_contiguous or not b.flags.c_contiguous):
        raise ValueError("exp: x and y must be C-contiguous (rows, m) arrays of one dtype")
    cdef Py_ssize_t rows = a.shape[0], m = a.shape[1]
    cdef void* px = cnp.PyArray_DATA(a)
    cdef void* py = cnp.PyArray_DATA(b)
    if a.dtype == np.float32:
        with nogil:
            c_exp_f32(<const float*> px, <float*> py, rows, m, reps, t, ISA)
    elif a.dtype == np.float64:
        with nogil:
            c_exp_f64(<const double*> px, <double*> py, rows, m, reps, t, ISA)
    else:
        raise TypeError(f"exp: expected float32 or float64, got {a.dtype}")
