"""pytest-benchmark suites comparing closs with NumPy, torch and JAX.

Not part of the test run (pyproject's testpaths is "tests"); run them with

    python -m pytest bench/ --benchmark-only
    python -m pytest bench/ --benchmark-only -k "mse-large and float32" --benchmark-max-time=0.1

Each benchmark's group is "<loss> <dtype> <shape> <mode>", so pytest-benchmark's
table compares the implementations of one case side by side.  The callables are
those of ``closs bench`` (closs/_bench.py); each peer is first checked against
closs, and a disagreement fails the benchmark.
"""
import collections

import numpy as np
import pytest

from closs import _bench


@pytest.fixture(scope="session")
def bench_data():
    """data(loss_key, size, dtype) -> the input arrays (size: a preset name such as
    "large", or an element count, as `closs bench --sizes`); a few cases cached."""
    cache = collections.OrderedDict()

    def data(key, size, dtype):
        n = _bench.resolve_size(_bench.LOSSES[key], size)
        k = (key, n, dtype)
        if k not in cache:
            if len(cache) >= 4:
                cache.popitem(last=False)
            rng = np.random.default_rng([0, list(_bench.LOSSES).index(key), n])
            cache[k] = _bench.LOSSES[key].make_data(rng, n, dtype)
        cache.move_to_end(k)
        return cache[k]

    return data
