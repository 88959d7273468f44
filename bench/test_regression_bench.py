"""Regression losses: closs vs NumPy vs torch vs JAX, value and value+grad."""
import pytest

from closs import _bench

SIZES = [100, 100_000, 1_000_000]
DTYPES = ["float32", "float64"]


@pytest.mark.parametrize("impl", _bench.IMPLS)
@pytest.mark.parametrize("mode", _bench.MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES, ids=_bench.format_size)
@pytest.mark.parametrize("loss", [s.name for s in _bench.LOSSES.values()])
def test_regression(benchmark, bench_data, loss, size, dtype, mode, impl):
    if not _bench.available(impl):
        pytest.skip(f"{impl} is not importable")
    key = _bench.loss_key(loss)
    spec = _bench.LOSSES[key]
    impls = _bench.make_impls(spec, bench_data(key, size, dtype), mode, ("closs", impl))
    agreement = _bench.check(impls, dtype)  # also the warm-up (JAX: compilation)
    if impl in agreement:
        assert agreement[impl]["ok"], f"{impl} disagrees with closs: {agreement[impl]}"
    benchmark.group = f"{loss} {dtype} n={_bench.format_size(size)} {mode}"
    benchmark.extra_info["bytes"] = _bench.bytes_moved(spec, size, dtype, mode)
    benchmark(impls[impl].call)
