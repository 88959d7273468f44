"""Threading controls (API.md "Threading") and thread-count independence.

* closs.set_num_threads / get_num_threads, bad counts (TypeError / ValueError
  naming the argument);
* CLOSS_NUM_THREADS sets the default (checked in fresh interpreters), the
  default without it is the number of available cores;
* 1 thread and 2 threads give bit-identical values and gradients on arrays of
  more than 1e6 elements, for every loss and reduction;
* calls from several Python threads at once give the serial results.
"""
import concurrent.futures
import json
import os
import warnings

import numpy as np
import pytest

import closs

from conftest import CASES, REDUCTIONS, as_tuple, assert_identical, make_args, rng_for, \
    run_python

N_BIG = 1_000_003  # > 1e6 and not a multiple of any chunk size

# one option set per loss, plus the variants that take other kernel branches
THREAD_CASES = [CASES[i] for i in (0, 1, 2, 3, 6, 9, 10, 12, 14, 17)]
THREAD_IDS = [c.id for c in THREAD_CASES]


def _available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count()


# ---------------------------------------------------------------------------------
# set / get
# ---------------------------------------------------------------------------------


def test_get_num_threads_is_positive_int():
    n = closs.get_num_threads()
    assert type(n) is int and n >= 1


@pytest.mark.parametrize("n", [1, 2, 3, 8, 64])
def test_set_get_round_trip(restore_threads, n):
    closs.set_num_threads(n)
    assert closs.get_num_threads() == n
    # still computes the same thing
    x = np.linspace(-1, 1, 100_000)
    assert closs.functional.mse_loss(x, 0.5 * x, reduction="sum") == pytest.approx(
        np.sum((0.5 * x) ** 2), rel=1e-12)


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-1, ValueError), (-100, ValueError),
                                      (1.5, TypeError), (2.0, TypeError), ("2", TypeError),
                                      (None, TypeError), ([2], TypeError)],
                         ids=repr)
def test_bad_thread_counts(restore_threads, bad, exc):
    closs.set_num_threads(2)
    with pytest.raises(exc, match=r"set_num_threads|\bn\b|thread") as e:
        closs.set_num_threads(bad)
    assert repr(bad) in str(e.value) or str(bad) in str(e.value)
    assert closs.get_num_threads() == 2  # unchanged


# ---------------------------------------------------------------------------------
# CLOSS_NUM_THREADS (fresh interpreters)
# ---------------------------------------------------------------------------------

PRINT_THREADS = ("import json, os, closs; "
                 "print(json.dumps([closs.get_num_threads(), len(os.sched_getaffinity(0))]))")


@pytest.mark.parametrize("value", ["1", "2", "3", "16"])
def test_env_sets_default(value):
    r = run_python(PRINT_THREADS, {"CLOSS_NUM_THREADS": value})
    assert r.returncode == 0, r.stderr
    n, _ = json.loads(r.stdout.strip().splitlines()[-1])
    assert n == int(value)


def test_default_without_env_is_available_cores():
    r = run_python(PRINT_THREADS, {"CLOSS_NUM_THREADS": None})
    assert r.returncode == 0, r.stderr
    n, cores = json.loads(r.stdout.strip().splitlines()[-1])
    assert n == cores == _available_cores()


def test_env_then_set_num_threads():
    code = ("import closs; assert closs.get_num_threads() == 3; closs.set_num_threads(1); "
            "print(closs.get_num_threads())")
    r = run_python(code, {"CLOSS_NUM_THREADS": "3"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"


@pytest.mark.parametrize("value", ["0", "-2", "abc", "1.5"])
def test_env_invalid_is_reported_not_crashing(value):
    """An unusable CLOSS_NUM_THREADS never crashes the interpreter: either a
    Python error naming the variable, or a positive default."""
    r = run_python(PRINT_THREADS, {"CLOSS_NUM_THREADS": value})
    assert r.returncode >= 0, f"killed by signal {-r.returncode}"
    if r.returncode != 0:
        assert "CLOSS_NUM_THREADS" in r.stderr
        assert "Error" in r.stderr
    else:
        n, _ = json.loads(r.stdout.strip().splitlines()[-1])
        assert n >= 1


# ---------------------------------------------------------------------------------
# 1 vs 2 threads: bit-identical results on > 1e6 elements
# ---------------------------------------------------------------------------------


def _big_args(case, dtype):
    rng = rng_for("threads", case.id, np.dtype(dtype).name)
    args = make_args(case, rng, (N_BIG,), dtype)
    args[0][::997] = np.nan
    args[1][::1009] = args[0][::1009]  # exact ties (L1's sign(0))
    return args


def _all_outputs(case, args):
    out = []
    with np.errstate(all="ignore"):
        for reduction in REDUCTIONS:
            crit = case.closs_cls(reduction=reduction, **case.kwargs)
            value, grad = crit.value_and_grad(*args)
            out.append((reduction, "value_and_grad", value, as_tuple(grad)))
            value = crit(*args)
            out.append((reduction, "forward", value, as_tuple(crit.backward())))
            value, grad = case.closs_func(*args, reduction=reduction, return_grad=True,
                                          **case.kwargs)
            out.append((reduction, "functional", value, as_tuple(grad)))
            go = _grad_output(reduction, args[0].dtype)
            value, grad = case.closs_func(*args, reduction=reduction, return_grad=True,
                                          grad_output=go, **case.kwargs)
            out.append((reduction, "functional(grad_output)", value, as_tuple(grad)))
            if case.func in ("l1_loss", "mse_loss", "huber_loss"):
                w = _weight(args[0].dtype)
                value, grad = case.closs_func(*args, reduction=reduction, return_grad=True,
                                              weight=w, grad_output=go, **case.kwargs)
                out.append((reduction, "functional(weight)", value, as_tuple(grad)))
    return out


def _grad_output(reduction, dtype):
    if reduction != "none":
        return 0.625
    return rng_for("threads-go").uniform(-2, 2, N_BIG).astype(dtype)


def _weight(dtype):
    return rng_for("threads-w").uniform(0, 2, N_BIG).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", THREAD_CASES, ids=THREAD_IDS)
def test_one_vs_two_threads_bit_identical(restore_threads, case, dtype):
    args = _big_args(case, dtype)
    closs.set_num_threads(1)
    one = _all_outputs(case, args)
    closs.set_num_threads(2)
    two = _all_outputs(case, args)
    for (red, route, v1, g1), (_, _, v2, g2) in zip(one, two):
        assert_identical(v1, v2, f"{red} {route} value")
        for a, b in zip(g1, g2):
            assert_identical(a, b, f"{red} {route} grad")


@pytest.mark.parametrize("case", [c for c in THREAD_CASES if c.nargs == 3][:1] +
                         THREAD_CASES[:1], ids=lambda c: c.id)
def test_one_vs_two_threads_broadcast(restore_threads, case):
    """Broadcast target / homoscedastic var: the summed-back gradients too."""
    rng = rng_for("threads-bcast", case.id)
    shape = (1000, 1001)
    args = make_args(case, rng, shape, np.float64)
    if case.nargs == 3:
        args[2] = args[2][:, 0].copy()  # var of shape input.shape[:-1]
    else:
        args[0] = args[0][:1].copy()  # input (1, 1001) broadcast by target (1000, 1001)
    results = []
    for n in (1, 2):
        closs.set_num_threads(n)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the broadcast-target warning
            results.append([case.closs_func(*args, reduction=r, return_grad=True,
                                            **case.kwargs) for r in REDUCTIONS])
    for (v1, g1), (v2, g2) in zip(*results):
        assert_identical(v1, v2)
        for a, b in zip(as_tuple(g1), as_tuple(g2)):
            assert_identical(a, b)


# ---------------------------------------------------------------------------------
# concurrent calls from Python threads
# ---------------------------------------------------------------------------------


def test_concurrent_python_threads(restore_threads):
    closs.set_num_threads(2)
    jobs = []
    for i, case in enumerate(THREAD_CASES):
        args = make_args(case, rng_for("concurrent", case.id), (200_000,), np.float64)
        jobs.append((case, args, REDUCTIONS[i % 3]))

    def run(job):
        case, args, reduction = job
        return case.closs_func(*args, reduction=reduction, return_grad=True, **case.kwargs)

    serial = [run(j) for j in jobs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            parallel = list(pool.map(run, jobs))
            for (v1, g1), (v2, g2) in zip(serial, parallel):
                assert_identical(v1, v2)
                for a, b in zip(as_tuple(g1), as_tuple(g2)):
                    assert_identical(a, b)
