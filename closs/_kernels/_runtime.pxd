cimport numpy as cnp

cdef int threads_for(Py_ssize_t work, Py_ssize_t grain) noexcept nogil
cdef cnp.ndarray gradient_like(cnp.ndarray a)
cdef bint reuses_memory(cnp.ndarray a) noexcept
