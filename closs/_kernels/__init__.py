"""Compiled kernels (Cython over csrc/); private."""
