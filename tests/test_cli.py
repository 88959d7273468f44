"""The `closs` command line: output structure of `closs info` and `closs bench`
(never the timings themselves)."""
import dataclasses
import json
import subprocess
import sys

import pytest

from closs import _bench
from conftest import OUTSIDE_REPO
from closs.cli import main

TINY = ["bench", "--quick", "--sizes", "100", "--no-progress"]


def test_info_prints_build_and_peers(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("closs", "build flags", "OpenMP", "SIMD", "threads", "numpy", "torch", "jax",
                 "scikit-learn"):
        assert word in out


def test_info_json():
    proc = subprocess.run([sys.executable, "-m", "closs.cli", "info", "--json"],
                          capture_output=True, text=True, check=True, cwd=OUTSIDE_REPO)
    info = json.loads(proc.stdout)
    assert {"cpu", "cores", "numpy", "closs", "closs_openmp", "closs_simd_selected",
            "closs_threads", "peers"} <= info.keys()
    assert set(info["peers"]) >= {"torch", "jax", "sklearn"}


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
        assert r["dtype"] == "float32" and r["size"] == 100
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
    assert lines[0].startswith("| loss | dtype | size | mode | closs")
    assert lines[1].startswith("|---|")
    assert lines[2].startswith("| HuberLoss | float64 | 100 | value")  # maybe " (busy)"


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
    [],
])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
