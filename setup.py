"""Build closs's compiled kernels from source.

Every extension is Cython compiled as C++17 with -O3 and, when the compiler has
it, OpenMP (otherwise the kernels run on one thread).  Never the fast-math
options: they break the NaN/inf semantics closs promises.  -fno-math-errno only lets the
compiler use sqrt instructions directly, and -fno-trapping-math lets it turn
the kernels' branch-free selects into vector blends (closs never enables FP
traps); neither changes a result.  -ffp-contract=off keeps every SIMD path
bit-identical (no silent FMA).  -g0: no debug info (a faster build).
Instruction sets are picked at run time (csrc/closs_isa.hpp), so the build
itself targets the baseline of the architecture.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class ParallelBuildExt(build_ext):
    """Compile the extensions in parallel (each is a long C++ compile)."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

BASE_FLAGS = ["-O3", "-g0", "-std=c++17", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-fvisibility=hidden"]


def compiler_has_openmp() -> bool:
    """True when the C++ compiler builds and links a program with -fopenmp."""
    cxx = os.environ.get("CXX") or (sysconfig.get_config_var("CXX") or "c++").split()[0]
    if shutil.which(cxx) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp.cpp")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        cmd = [cxx, "-fopenmp", src, "-o", os.path.join(tmp, "omp")]
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


OPENMP = os.environ.get("CLOSS_NO_OPENMP", "") == "" and compiler_has_openmp()
compile_flags = BASE_FLAGS + (["-fopenmp"] if OPENMP else [])
link_flags = ["-fopenmp"] if OPENMP else []
if not OPENMP:
    print("closs: the compiler has no OpenMP; building single-threaded kernels", file=sys.stderr)

macros = [
    ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
    ("CLOSS_BUILD_FLAGS", '"' + " ".join(compile_flags) + '"'),
]


def headers_of(path: str, seen=None) -> set:
    """The csrc/ headers a .pyx or .hpp file includes, transitively, so that
    `build_ext` rebuilds exactly the extensions whose headers changed."""
    seen = set() if seen is None else seen
    with open(path) as f:
        text = f.read()
    for name in re.findall(r'(?:cdef extern from|#include) "([^"]+)"', text):
        header = os.path.join("csrc", name)
        if header not in seen and os.path.exists(header):
            seen.add(header)
            headers_of(header, seen)
    return seen


def kernel(name: str) -> Extension:
    source = f"closs/_kernels/{name}.pyx"
    return Extension(
        f"closs._kernels.{name}",
        [source],
        depends=sorted(headers_of(source)),
        include_dirs=["csrc", numpy.get_include()],
        define_macros=macros,
        extra_compile_args=compile_flags,
        extra_link_args=link_flags,
        language="c++",
    )


# one extension per closs/_kernels/*.pyx (a kernel family)
extensions = [kernel(os.path.basename(path)[:-4])
              for path in sorted(glob.glob("closs/_kernels/_*.pyx"))]

setup(
    cmdclass={"build_ext": ParallelBuildExt},
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
