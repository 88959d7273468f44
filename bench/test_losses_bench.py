"""Every loss of closs bench: closs vs NumPy, torch, JAX (and scikit-learn), value and
value+grad, at the presets of `closs bench` (tiny, medium, large: 100 / 1e5 / 1e7
elements, 8x10 / 1e4x10 / 1e6x10 logits, ...; closs/_bench.py, LossSpec.sizes), on
closs's current thread count (CLOSS_NUM_THREADS)."""
import pytest

from closs import _bench

DTYPES = ["float32", "float64"]


@pytest.mark.parametrize("impl", _bench.IMPLS)
@pytest.mark.parametrize("mode", _bench.MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", _bench.PRESETS)
@pytest.mark.parametrize("loss", list(_bench.LOSSES))
def test_loss(benchmark, bench_data, loss, size, dtype, mode, impl):
    if not _bench.available(impl):
        pytest.skip(f"{impl} is not importable")
    spec = _bench.LOSSES[loss]
    arrays = bench_data(loss, size, dtype)
    impls = _bench.make_impls(spec, arrays, mode, ("closs", impl))
    if impl not in impls:
        pytest.skip(f"{impl} has no implementation of {spec.label}")
    agreement = _bench.check(impls, dtype)  # also the warm-up (JAX: compilation)
    if impl in agreement:
        assert agreement[impl]["ok"], f"{impl} disagrees with closs: {agreement[impl]}"
    benchmark.group = f"{spec.label} {dtype} {_bench.format_shape(arrays[0].shape)} {mode}"
    benchmark.extra_info["bytes"] = sum(_bench.bytes_moved(spec, arrays, mode))
    benchmark.extra_info["threads"] = _bench.closs.get_num_threads()
    benchmark(impls[impl].call)
