"""The `closs` command line: output structure of `closs info` and `closs bench`
(never the timings themselves)."""
import dataclasses
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

import closs
from closs import _bench
from conftest import OUTSIDE_REPO
from closs.cli import build_parser, main

needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="matplotlib is not installed")

TINY = ["bench", "--quick", "--sizes", "100", "--no-progress"]


def test_info_prints_build_and_peers(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("closs", "build flags", "OpenMP", "SIMD", "threads", "numpy", "torch", "jax",
                 "scikit-learn", "MONAI"):
        assert word in out


def test_info_json():
    proc = subprocess.run([sys.executable, "-m", "closs.cli", "info", "--json"],
                          capture_output=True, text=True, check=True, cwd=OUTSIDE_REPO)
    info = json.loads(proc.stdout)
    assert {"cpu", "cores", "numpy", "closs", "closs_openmp", "closs_simd_selected",
            "closs_threads", "peers"} <= info.keys()
    assert set(info["peers"]) >= {"torch", "jax", "sklearn", "monai"}


def test_bench_json_structure(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = TINY + ["--losses", "mse,L1Loss", "--impls", "closs,numpy", "--json", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "MSELoss" in out and "numpy/closs" in out
    doc = json.loads(path.read_text())
    assert {"machine", "config", "results", "elapsed_seconds"} <= doc.keys()
    assert doc["machine"]["cores"] >= 1
    results = doc["results"]
    assert [(r["key"], r["mode"]) for r in results] == [
        ("mse", "value"), ("mse", "value+grad"), ("l1", "value"), ("l1", "value+grad")]
    for r in results:
        assert r["dtype"] == "float32" and r["size"] == 100 and r["shape"] == [100]
        assert r["preset"] is None and r["elements"] == 100
        assert r["threads"] == closs.get_num_threads()  # --quick: closs's default only
        assert r["bytes_read"] == 2 * 100 * 4
        assert r["bytes_written"] == (400 if r["mode"] == "value+grad" else 0)
        assert set(r["times"]) == {"closs", "numpy"}
        for stats in r["times"].values():
            assert 0 < stats["min"] <= stats["q1"] <= stats["median"] <= stats["q3"] <= stats["max"]
            assert len(stats["samples"]) == stats["rounds"] >= _bench.QUICK.min_rounds
        assert r["ratios"]["numpy"] == pytest.approx(
            r["times"]["numpy"]["median"] / r["times"]["closs"]["median"])
        assert r["check"]["numpy"]["ok"]


def test_bench_markdown(capsys):
    assert main(TINY + ["--losses", "huber", "--modes", "value", "--impls", "closs",
                        "--dtypes", "float64", "--markdown"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    assert lines[0].startswith("| loss | dtype | size | threads | mode | closs")
    assert lines[1].startswith("|---|")
    threads = closs.get_num_threads()
    # maybe "value (busy)"
    assert lines[2].startswith(f"| HuberLoss | float64 | 100 | {threads} | value")


def test_bench_peers_agree_with_closs():
    """Every importable peer, on the losses with the most involved maths; exit
    status 1 would mean a peer disagrees with closs."""
    proc = subprocess.run(
        [sys.executable, "-m", "closs.cli"] + TINY
        + ["--losses", "poisson_nll,gaussian_nll,smooth_l1", "--modes", "value+grad",
           "--dtypes", "float32,float64", "--json", "-"],
        capture_output=True, text=True, cwd=OUTSIDE_REPO)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["results"]) == 6
    peers = {p for p in ("torch", "jax") if doc["machine"]["peers"][p]}
    for r in doc["results"]:
        assert set(r["times"]) == {"closs", "numpy"} | peers
        assert all(c["ok"] for c in r["check"].values()), r["check"]


@pytest.mark.parametrize("loss", ["dice", "tversky"])
def test_bench_monai_peer(loss):
    """MONAI's own DiceLoss / TverskyLoss is a peer of the overlap rows, checked
    against closs like the others; the other losses have none."""
    pytest.importorskip("monai")
    spec = _bench.LOSSES[loss]
    for dtype in ("float32", "float64"):
        arrays = spec.make_data(np.random.default_rng(0), 16 * 4 * 8 * 8, np.dtype(dtype))
        for mode in _bench.MODES:
            impls = _bench.make_impls(spec, arrays, mode, ("closs", "monai"))
            assert set(impls) == {"closs", "monai"}
            report = _bench.check(impls, dtype)["monai"]
            assert report["ok"], report
    assert "monai" not in _bench.make_impls(_bench.LOSSES["mse"], (np.zeros(4), np.zeros(4)),
                                            "value", ("closs", "monai"))


def test_bench_reports_a_mismatch(monkeypatch, capsys):
    wrong = dataclasses.replace(_bench.LOSSES["mse"],
                                numpy_value=lambda x, y: 1.001 * _bench._np_mse(x, y))
    monkeypatch.setitem(_bench.LOSSES, "mse", wrong)
    assert main(TINY + ["--losses", "mse", "--modes", "value", "--impls", "closs,numpy"]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH" in captured.err and "MISMATCH" in captured.out


@pytest.mark.parametrize("argv", [
    ["bench", "--losses", "nope"],
    ["bench", "--sizes", "1.5"],
    ["bench", "--dtypes", "float16"],
    ["bench", "--threads", "0"],
    ["bench", "--threads", "1,x"],
    ["bench", "--sizes", "huge"],
    [],
])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


# ----------------------------------------------------------------------------------
# Presets, threads, --plot, --from-json, --roofline
# ----------------------------------------------------------------------------------

def test_new_options_parse():
    args = build_parser().parse_args(
        ["bench", "--threads", "1,2", "--sizes", "tiny,1e5,LARGE", "--plot", "out.png",
         "--from-json", "in.json", "--roofline", "--roofline-mb", "4"])
    assert args.threads == [1, 2]
    assert args.sizes == ["tiny", 100_000, "large"]
    assert (args.plot, args.from_json, args.roofline, args.roofline_mb) == (
        "out.png", "in.json", True, 4.0)
    args = build_parser().parse_args(["bench"])
    assert args.threads is None and args.sizes is None and not args.roofline


# The first input's shape of every loss at tiny, medium and large (the issue's sizes).
PRESET_SHAPES = {
    "l1": "100 1e5 1e7", "mse": "100 1e5 1e7", "smooth_l1": "100 1e5 1e7",
    "huber": "100 1e5 1e7", "poisson_nll": "100 1e5 1e7", "gaussian_nll": "100 1e5 1e7",
    "cross_entropy": "8x10 1e4x10 1e6x10", "cross_entropy_1000": "8x1000 100x1000 16384x1000",
    "bce_with_logits": "100 1e5 1e7", "nll": "8x10 1e4x10 1e6x10", "bce": "100 1e5 1e7",
    "kl_div": "8x10 1e4x10 1e6x10", "multilabel_soft_margin": "8x10 1e4x10 1e6x10",
    "margin_ranking": "100 1e5 1e7", "hinge_embedding": "100 1e5 1e7",
    "soft_margin": "100 1e5 1e7", "sigmoid_focal": "100 1e5 1e7",
    "multi_margin": "8x1000 100x1000 16384x1000", "multilabel_margin": "8x10 1e4x10 1e6x10",
    "cosine_embedding": "8x128 800x128 78125x128", "triplet_margin": "8x128 800x128 78125x128",
    "triplet_margin_with_distance": "8x128 800x128 78125x128",
    "dice": "16x4x4x4 16x4x40x40 16x4x400x400", "tversky": "16x4x4x4 16x4x40x40 16x4x400x400",
    "ctc": "50x1x20 50x16x20 50x256x20",
}


def test_presets_resolve_to_the_issue_shapes():
    assert set(PRESET_SHAPES) == set(_bench.LOSSES)
    for key, spec in _bench.LOSSES.items():
        for preset, expected in zip(_bench.PRESETS, PRESET_SHAPES[key].split()):
            n = _bench.resolve_size(spec, preset)
            data = spec.make_data(np.random.default_rng(0), n, "float32")
            assert _bench.format_shape(data[0].shape) == expected, (key, preset)
            del data
        assert _bench.resolve_size(spec, 1234) == 1234  # element counts still work


def test_bench_threads_list(tmp_path, capsys):
    before = closs.get_num_threads()
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--no-progress", "--sizes", "tiny,1000", "--threads", "1,2",
                 "--losses", "cross_entropy", "--impls", "closs,numpy,torch", "--json",
                 str(path)]) == 0
    assert closs.get_num_threads() == before  # restored after the run
    doc = json.loads(path.read_text())
    assert doc["config"]["threads"] == [1, 2]
    got = [(r["preset"], r["shape"], r["threads"], r["mode"]) for r in doc["results"]]
    assert got == [(preset, shape, t, m) for preset, shape in [("tiny", [8, 10]), (None, [100, 10])]
                   for t in (1, 2) for m in _bench.MODES]
    assert all(c["ok"] for r in doc["results"] for c in r["check"].values())
    out = capsys.readouterr().out
    assert "threads 1,2" in out and "8x10" in out and "pinned" in out


def test_pin_cores_pins_every_thread_and_restores():
    """A 1-thread case runs every thread of the process (JAX's pool too) on one core;
    the end of a run gives them all their CPUs back."""
    import os
    import threading
    if not _bench.pin_cores(None):
        pytest.skip("no sched_setaffinity / /proc on this platform")
    every = os.sched_getaffinity(0)
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        def affinities():
            return {tid: os.sched_getaffinity(int(tid)) for tid in os.listdir("/proc/self/task")}
        _bench.pin_cores(1)
        pinned = affinities()
        assert len(pinned) >= 2 and all(cpus == {min(every)} for cpus in pinned.values())
        _bench.pin_cores(None)
        assert all(cpus == every for cpus in affinities().values())
        main(["bench", "--quick", "--no-progress", "--sizes", "100", "--threads", "1",
              "--losses", "mse", "--impls", "closs"])
        assert all(cpus == every for cpus in affinities().values())
    finally:
        stop.set()
        helper.join()


def test_bench_roofline_tiny(tmp_path, capsys):
    """--roofline on a 2 MB budget: the machine's figures and a row per large result
    (here: an explicit size; the presets tiny and medium get none)."""
    path = tmp_path / "roof.json"
    assert main(["bench", "--quick", "--no-progress", "--roofline", "--roofline-mb", "2",
                 "--sizes", "tiny,1000", "--threads", "1,2", "--losses", "mse,cross_entropy",
                 "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert doc["config"]["impls"] == ["closs"]  # --roofline: closs only by default
    machine = doc["roofline"]["machine"]
    assert [m["threads"] for m in machine["threads"]] == [1, 2]
    for m in machine["threads"]:
        for field in ("read_gbps", "copy_fresh_gbps", "copy_prealloc_gbps", "write_fresh_gbps",
                      "exp_32", "exp_64"):
            assert m[field] > 0, field
    rows = doc["roofline"]["rows"]
    large = [r for r in doc["results"] if r["preset"] is None]
    assert len(rows) == len(large) == 8 and len(doc["results"]) == 16
    for row, r in zip(rows, large):
        assert (row["key"], row["threads"], row["mode"]) == (r["key"], r["threads"], r["mode"])
        assert row["bound"] == max(row["bytes_bound"], row["exp_bound"]) > 0
        assert row["of_roofline"] == pytest.approx(r["times"]["closs"]["median"] / row["bound"])
        assert (row["exps"] > 0) == (r["key"] == "cross_entropy")
    out = capsys.readouterr().out
    assert "read GB/s" in out and "x of roofline" in out


def test_roofline_bound_arithmetic():
    machine = {"threads": [{"threads": 1, "read_gbps": 10.0, "write_fresh_gbps": 5.0,
                            "exp_32": 1e9, "exp_64": 5e8}]}
    result = {"loss": "L", "key": "l", "dtype": "float64", "size": 1000, "shape": [1000],
              "threads": 1, "mode": "value+grad", "bytes_read": 20e6, "bytes_written": 10e6,
              "exps": 2e6, "times": {"closs": {"median": 0.008}}}
    (row,) = _bench.roofline_rows([result], machine)
    assert row["bytes_bound"] == pytest.approx(20e6 / 10e9 + 10e6 / 5e9)  # 4 ms
    assert row["exp_bound"] == pytest.approx(2e6 / 5e8)  # 4 ms
    assert row["bound"] == pytest.approx(4e-3) and row["of_roofline"] == pytest.approx(2.0)
    (row,) = _bench.roofline_rows([dict(result, dtype="float32", exps=0.0)], machine)
    assert row["limit"] == "memory" and row["exp_bound"] == 0


def test_roofline_kernels_agree_with_numpy():
    from closs._kernels import _roofline

    x = np.random.default_rng(0).standard_normal(100_003)
    for t in (1, 2):
        assert _roofline.read(x, t) == pytest.approx(x.sum(), rel=1e-12)
        out = np.empty_like(x)
        _roofline.scale(x, out, 2.0, t)
        np.testing.assert_array_equal(out, 2.0 * x)
        for dtype, rtol in (("float32", 1e-6), ("float64", 1e-15)):
            a = np.linspace(-20, 20, 2 * 300).astype(dtype).reshape(2, 300)
            b = np.empty_like(a)
            _roofline.exp(a, b, 3, t)
            np.testing.assert_allclose(b, np.exp(a.astype(np.float64)), rtol=rtol)


@needs_matplotlib
def test_bench_plot_and_from_json(tmp_path, capsys):
    path, png, png2 = tmp_path / "b.json", tmp_path / "b.png", tmp_path / "c.png"
    assert main(["bench", "--quick", "--no-progress", "--sizes", "tiny,1000", "--threads", "1,2",
                 "--losses", "mse,nll", "--impls", "closs,numpy", "--json", str(path),
                 "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["bench", "--from-json", str(path), "--plot", str(png2), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| NLLLoss (N, 10) | float32 | 8x10 | 1 | value" in out
    assert png2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_plot_without_matplotlib(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(TINY + ["--losses", "mse", "--plot", "never.png"]) == 2
    assert "pip install 'closs[plot]'" in capsys.readouterr().err


def test_from_json_rejects_other_files(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"something": 1}')
    assert main(["bench", "--from-json", str(bad)]) == 2
    assert "not a closs bench JSON file" in capsys.readouterr().err
