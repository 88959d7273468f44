cdef int threads_for(Py_ssize_t work, Py_ssize_t grain) noexcept nogil
