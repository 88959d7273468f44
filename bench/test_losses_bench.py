"""Every loss of closs bench: closs vs NumPy, torch, JAX (and scikit-learn), value and
value+grad."""
import pytest

from closs import _bench

SIZES = [100, 100_000, 1_000_000]
DTYPES = ["float32", "float64"]


@pytest.mark.parametrize("impl", _bench.IMPLS)
@pytest.mark.parametrize("mode", _bench.MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES, ids=_bench.format_size)
@pytest.mark.parametrize("loss", list(_bench.LOSSES))
def test_loss(benchmark, bench_data, loss, size, dtype, mode, impl):
    if not _bench.available(impl):
        pytest.skip(f"{impl} is not importable")
    spec = _bench.LOSSES[loss]
    impls = _bench.make_impls(spec, bench_data(loss, size, dtype), mode, ("closs", impl))
    if impl not in impls:
        pytest.skip(f"{impl} has no implementation of {spec.label}")
    agreement = _bench.check(impls, dtype)  # also the warm-up (JAX: compilation)
    if impl in agreement:
        assert agreement[impl]["ok"], f"{impl} disagrees with closs: {agreement[impl]}"
    benchmark.group = f"{spec.label} {dtype} n={_bench.format_size(size)} {mode}"
    benchmark.extra_info["bytes"] = _bench.bytes_moved(spec, size, dtype, mode)
    benchmark(impls[impl].call)
