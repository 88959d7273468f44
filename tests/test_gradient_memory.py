"""Gradient memory reuse (closs/_kernels/_runtime.pyx): a gradient of 32 MiB or
more is a view of a block that closs hands out again once no array uses it.

What must hold: memory an array still uses (the gradient, or any view of it) is
never handed out again; a reused block gives the same bits as fresh memory
(also for NLL, whose gradient is mostly zeros the kernel must now write); idle
blocks stay within the limit and empty_cache() frees them; CLOSS_GRAD_CACHE_MB=0
turns reuse off.
"""
import numpy as np
import pytest

import closs
import closs.functional as F
from closs._kernels import _runtime

from conftest import run_python

ROWS = _runtime.CACHE_FROM // (8 * 1000) + 1  # a (ROWS, 1000) float64 gradient is cached


@pytest.fixture(autouse=True)
def no_idle_blocks():
    closs.empty_cache()
    yield
    closs.empty_cache()


def data(seed=0, rows=ROWS, classes=1000):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, classes)), rng.integers(0, classes, rows)


def address(a):
    return a.__array_interface__["data"][0]


def test_a_dropped_gradient_is_reused_with_the_same_bits():
    x, t = data()
    fresh = np.empty_like(x)
    F.cross_entropy(x, t, return_grad=True, grad_out=fresh)  # not from a block
    g = F.cross_entropy(x, t, return_grad=True)[1]
    assert g.nbytes >= _runtime.CACHE_FROM and g.base is not None
    assert g.flags.c_contiguous and g.flags.writeable and g.flags.aligned
    where = address(g)
    del g
    g = F.cross_entropy(x, t, return_grad=True)[1]
    assert address(g) == where
    np.testing.assert_array_equal(g, fresh)
    assert _runtime.cached_blocks() == (g.nbytes, 0)


def test_memory_in_use_is_never_handed_out():
    x, t = data()
    kept = F.cross_entropy(x, t, return_grad=True)[1]
    where = address(kept)
    view = kept[::3, 1:]  # a view keeps the memory in use as well
    copy = view.copy()
    del kept
    others = [F.cross_entropy(x + k, t, return_grad=True)[1] for k in range(3)]
    assert len({where} | {address(o) for o in others}) == 4
    np.testing.assert_array_equal(view, copy)  # untouched by the later gradients
    del view
    g = F.cross_entropy(x, t, return_grad=True)[1]  # the first block is idle again
    assert address(g) == where
    assert _runtime.cached_blocks() == (4 * g.nbytes, 0)


def test_nll_on_reused_memory_writes_its_zeros():
    """NLL's fresh gradient comes zeroed from calloc; a reused block holds the last
    gradient's values, so the kernel must write every zero itself."""
    x, t = data(1)
    g = F.cross_entropy(x, t, return_grad=True)[1]  # a dense gradient in the block
    where = address(g)
    del g
    g = F.nll_loss(x, t, return_grad=True)[1]
    assert address(g) == where
    expected = np.zeros_like(x)
    expected[np.arange(ROWS), t] = -1.0 / ROWS
    np.testing.assert_array_equal(g, expected)


def test_a_loop_keeps_two_calls_of_blocks():
    """A loop holding the previous call's gradients while it computes the next
    needs two sets of blocks and no more (triplet: three gradients a call)."""
    rng = np.random.default_rng(2)
    rows = _runtime.CACHE_FROM // (8 * 128) + 1
    a, p, n = (rng.standard_normal((rows, 128)) for _ in range(3))
    loss = closs.TripletMarginLoss()
    grads = None
    addresses = set()
    for _ in range(5):
        value, grads = loss.value_and_grad(a, p, n)
        addresses |= {address(g) for g in grads}
    assert len(addresses) == 6
    used, idle = _runtime.cached_blocks()
    assert used == 3 * a.nbytes and idle == 3 * a.nbytes
    closs.empty_cache()
    assert _runtime.cached_blocks() == (3 * a.nbytes, 0)


def test_small_gradients_are_fresh_memory():
    x, t = data(rows=100)
    g = F.cross_entropy(x, t, return_grad=True)[1]
    assert g.base is None and g.flags.owndata
    assert _runtime.cached_blocks() == (0, 0)


def test_environment_limit():
    code = f"""
import numpy as np, closs.functional as F
from closs._kernels import _runtime
x = np.ones({_runtime.CACHE_FROM // 8 + 8})
grads = [F.mse_loss(x + k, x, return_grad=True)[1] for k in range(4)]
print(all(g.base is None for g in grads))
del grads  # four idle blocks: over the limit until the next new block
y = np.ones(2 * x.size)
g = F.mse_loss(y, y, return_grad=True)[1]  # too large for them: a new block
print(*_runtime.cached_blocks())
"""
    off = run_python(code, {"CLOSS_GRAD_CACHE_MB": "0"})
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["True", "0", "0"]
    on = run_python(code, {"CLOSS_GRAD_CACHE_MB": "70"})  # room for two idle blocks of 32 MiB
    assert on.returncode == 0, on.stderr
    reused, used, idle = on.stdout.split()
    block = _runtime.CACHE_FROM + 64
    assert reused == "False" and int(used) == 2 * block and int(idle) == 2 * block
    bad = run_python("import closs", {"CLOSS_GRAD_CACHE_MB": "lots"})
    assert bad.returncode != 0 and "CLOSS_GRAD_CACHE_MB" in bad.stderr
