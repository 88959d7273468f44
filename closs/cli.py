"""The ``closs`` command: ``closs info`` and ``closs bench``.

    closs info                      build, CPU and peer libraries
    closs bench --quick             a short comparison (MSE and L1, float32)
    closs bench --json out.json     everything, with machine information
    closs bench --markdown          a Markdown table for the README
    closs bench --plot out.png      also a throughput plot (needs matplotlib)
    closs bench --from-json out.json --plot out.png   table and plot of a saved run
    closs bench --roofline          this machine's bandwidth and exp rate, and
                                    closs's distance to the bound they imply

The benchmark itself lives in closs/_bench.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
import time

import numpy as np

import closs

QUICK_LOSSES = ("mse", "l1")
QUICK_DTYPES = ("float32",)


def _csv(convert):
    def parse(text):
        items = [t for t in (s.strip() for s in text.split(",")) if t]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        try:
            return [convert(t) for t in items]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _size(text):
    from . import _bench

    if text.lower() in _bench.PRESETS:
        return text.lower()
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"size: expected {', '.join(_bench.PRESETS)} or a positive integer "
                         f"such as 100 or 1e5, got {text!r}") from None
    if not value.is_integer() or value < 1:
        raise ValueError(f"size: expected a positive integer such as 100 or 1e5, got {text!r}")
    return int(value)


def _loss(text):
    from . import _bench

    return "all" if text.strip().lower() == "all" else _bench.loss_key(text)


def _dtype(text):
    if text not in ("float32", "float64"):
        raise ValueError(f"dtype: expected float32 or float64, got {text!r}")
    return text


def _choice(options):
    def convert(text):
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {text!r}")
        return text
    return convert


def _positive_int(text):
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def build_parser():
    from . import _bench

    parser = argparse.ArgumentParser(
        prog="closs", description="closs: loss functions and gradients for NumPy arrays.")
    parser.add_argument("--version", action="version", version=f"closs {closs.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{info,bench}")
    sub.required = True

    info = sub.add_parser("info", help="build flags, CPU features, threads, peer libraries")
    info.add_argument("--json", action="store_true", help="print the information as JSON")

    bench = sub.add_parser(
        "bench", help="time closs against NumPy, torch, JAX, scikit-learn and MONAI",
        description="Time every loss of closs (value, and value+grad) at the tiny, medium "
                    "and large presets, on 1 and all threads, against a vectorised NumPy "
                    "implementation, torch, jax, scikit-learn and MONAI (when importable), after "
                    "checking that every peer agrees with closs.")
    bench.add_argument("--quick", action="store_true",
                       help=f"a short run (under a minute): {','.join(QUICK_LOSSES)}, float32, "
                            "closs's default threads, fewer repeats (explicit --losses/--dtypes/"
                            "--sizes/--threads still apply)")
    bench.add_argument("--losses", type=_csv(_loss), metavar="l1,mse,...",
                       help=f"losses to run: {','.join(_bench.LOSSES)} or all (default: all)")
    bench.add_argument("--dtypes", type=_csv(_dtype), metavar="float32,float64",
                       help="dtypes (default: float32,float64)")
    bench.add_argument("--sizes", type=_csv(_size), metavar="tiny,medium,large",
                       help="presets (per loss: 100 / 1e5 / 1e7 elements, 8x10 / 10000x10 / "
                            "1e6x10 logits, ...) and/or element counts such as 1e5 "
                            "(default: tiny,medium,large; --roofline: large)")
    bench.add_argument("--modes", type=_csv(_choice(_bench.MODES)), metavar="value,value+grad",
                       help="what is computed (default: both)")
    bench.add_argument("--impls", type=_csv(_choice(_bench.IMPLS)),
                       metavar="closs,numpy,torch,jax,sklearn",
                       help="implementations (default: all that are importable; closs always)")
    bench.add_argument("--threads", type=_csv(_positive_int), metavar="1,2",
                       help="thread counts for closs and torch, every case at each, with "
                            "the whole process (JAX's pool too) pinned to that many cores "
                            "(default: 1 and closs's default, CLOSS_NUM_THREADS or all cores; "
                            "--quick: closs's default only)")
    bench.add_argument("--json", metavar="FILE",
                       help="write the results and machine information as JSON ('-': stdout, "
                            "then no table is printed)")
    bench.add_argument("--markdown", action="store_true", help="print a Markdown table")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="plot throughput against size, a panel per loss (needs "
                            "matplotlib: pip install 'closs[plot]')")
    bench.add_argument("--from-json", metavar="FILE",
                       help="no run: the table (and --plot) of a file written by --json")
    bench.add_argument("--roofline", action="store_true",
                       help="measure this machine's read and read+write bandwidth and exp "
                            "rate, and report closs's time over the bound they imply per row "
                            "(default: the large presets, closs only; a row per large result)")
    bench.add_argument("--roofline-mb", type=float, default=None, metavar="MB",
                       help="size of the roofline's bandwidth arrays "
                            f"(default {_bench.ROOFLINE_MB})")
    bench.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


# ----------------------------------------------------------------------------------
# closs info
# ----------------------------------------------------------------------------------

def _info(args, out):
    from . import _bench

    info = _bench.machine_info()
    if args.json:
        print(json.dumps(info, indent=2), file=out)
        return 0
    onoff = "on" if info["closs_openmp"] else "off"
    lines = [
        f"closs {info['closs']}",
        f"  build flags   {info['closs_build_flags'] or '(not recorded)'}",
        f"  OpenMP        {onoff}",
        f"  SIMD          supported: {info['closs_simd_supported']}, "
        f"selected: {info['closs_simd_selected']}",
        f"  threads       {info['closs_threads']} (of {info['cores']} available cores)",
        f"  grad memory   reuse of up to {info['closs_grad_cache_mb']:g} MiB of idle gradient "
        f"blocks (CLOSS_GRAD_CACHE_MB)",
        f"  CPU           {info['cpu']}",
        f"  python        {info['python']} ({platform.python_implementation()})",
        f"  numpy         {info['numpy']}",
        "peers",
    ]
    labels = {"torch": "torch", "jax": "jax", "sklearn": "scikit-learn", "monai": "MONAI",
              "tqdm": "tqdm"}
    for name, label in labels.items():
        version = info["peers"].get(name)
        if version is None:
            exc = _bench.import_peer(name)
            detail = "not installed" if isinstance(exc, ModuleNotFoundError) else \
                f"not importable ({type(exc).__name__}: {exc})"
            lines.append(f"  {label:<13} {detail}")
        else:
            extra = f" ({info['torch_threads']} threads)" if name == "torch" else ""
            lines.append(f"  {label:<13} {version}{extra}")
    for key, value in info["env"].items():
        lines.append(f"  ${key}={value}")
    print("\n".join(lines), file=out)
    return 0


# ----------------------------------------------------------------------------------
# closs bench
# ----------------------------------------------------------------------------------

def _bench_cmd(args, out, argv):
    from . import _bench

    if args.plot:
        try:
            _bench.require_matplotlib()  # before the run, not after it
        except _bench.PlotError as exc:
            print(f"closs bench: {exc}", file=sys.stderr)
            return 2
    if args.from_json:
        return _from_json(args, out)

    losses = args.losses or (list(QUICK_LOSSES) if args.quick else ["all"])
    if "all" in losses:
        losses = list(_bench.LOSSES)
    losses = list(dict.fromkeys(losses))
    dtypes = args.dtypes or (list(QUICK_DTYPES) if args.quick else ["float32", "float64"])
    sizes = args.sizes or (["large"] if args.roofline else list(_bench.PRESETS))
    modes = args.modes or list(_bench.MODES)
    default_impls = ("closs",) if args.roofline else _bench.IMPLS
    impls = ["closs"] + [m for m in (args.impls or default_impls) if m != "closs"]
    missing = [m for m in impls if not _bench.available(m)]
    impls = [m for m in impls if m not in missing]
    for m in missing:
        print(f"closs bench: {m} is not importable; skipped", file=sys.stderr)
    cores = closs.get_num_threads()  # CLOSS_NUM_THREADS or every available core
    threads = args.threads or ([cores] if args.quick else [1, cores])
    threads = list(dict.fromkeys(threads))
    budget = _bench.QUICK if args.quick else _bench.FULL

    load = _bench.LoadMeter()
    t0 = time.perf_counter()
    results = _bench.run(losses, dtypes, sizes, modes, impls, budget, seed=args.seed,
                         progress=not args.no_progress, threads=threads)
    roofline = None
    if args.roofline:
        megabytes = args.roofline_mb or _bench.ROOFLINE_MB
        machine = _bench.measure_machine(threads, megabytes=megabytes)
        roofline = {"machine": machine, "rows": _bench.roofline_rows(results, machine),
                    "note": _bench.roofline_note(machine)}
    elapsed = time.perf_counter() - t0
    other_load = load.other_load()
    busy = other_load is not None and other_load > _bench.BUSY
    if busy:
        print(f"\ncloss bench: other processes used {other_load:.0%} of the CPUs during the run; "
              "the timings are likely distorted", file=sys.stderr)

    mismatches = [(r, p) for r in results for p, c in r["check"].items() if not c["ok"]]
    doc = {
        "closs_bench": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(argv),
        "config": {"losses": losses, "dtypes": dtypes, "sizes": sizes, "modes": modes,
                   "impls": impls, "threads": threads, "quick": args.quick, "seed": args.seed,
                   "budget": dataclasses.asdict(budget),
                   "rtol": _bench.RTOL},
        "machine": _bench.machine_info(),
        "elapsed_seconds": elapsed,
        "other_load": other_load,
        "note": _bench.TABLE_NOTE,
        "results": results,
    }
    if roofline is not None:
        doc["roofline"] = roofline
    if args.json:
        text = json.dumps(doc, indent=1, default=_json_default)
        if args.json == "-":
            print(text, file=out)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    if args.json != "-":
        _print_tables(doc, args.markdown, out)
        load_note = "" if other_load is None else f"; other processes: {other_load:.0%} of the CPUs"
        print(f"{len(results)} cases in {elapsed:.1f} s{load_note}", file=out)
    if args.plot:
        _bench.plot(results, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr if args.json == "-" else out)
    if mismatches:
        print(f"\n*** {len(mismatches)} MISMATCH(ES) with closs:", file=sys.stderr)
        for r, p in mismatches:
            c = r["check"][p]
            print(f"***   {p}: {r['loss']} {r['dtype']} {_bench.size_label(r)} "
                  f"{r.get('threads', '')} threads {r['mode']}: value rel. err "
                  f"{c['value_err']:.3g}, grad rel. err {c['grad_err']:.3g}", file=sys.stderr)
        return 1
    return 0


def _print_tables(doc, markdown, out):
    """The header line, the benchmark table and its note, the roofline's tables."""
    from . import _bench

    m = doc["machine"]
    threads = doc["config"].get("threads") or [m["closs_threads"]]
    reuse = m.get("closs_grad_cache_mb")
    reuse = "" if reuse is None else f" | gradient reuse {reuse:g} MiB" if reuse else \
        " | gradient reuse off"
    print(f"closs {m['closs']} | {m['cpu']}, {m['cores']} cores | threads "
          f"{','.join(map(str, threads))} | SIMD {m['closs_simd_selected']}{reuse} | "
          f"numpy {m['numpy']}", file=out)
    print(_bench.format_table(doc["results"], markdown=markdown), file=out)
    print(f"\n{doc.get('note', _bench.TABLE_NOTE)}", file=out)
    roofline = doc.get("roofline")
    if roofline:
        print("\n" + _bench.format_roofline(roofline["machine"], roofline["rows"], markdown),
              file=out)
        print(f"\n{roofline['note']}", file=out)
        load = roofline["machine"].get("other_load")
        if load is not None and load > _bench.BUSY:
            print(f"(other processes used {load:.0%} of the CPUs while the machine was "
                  "measured: its figures are likely low)", file=out)


def _from_json(args, out):
    """The tables (and --plot) of a saved --json file; no benchmark is run."""
    from . import _bench

    try:
        with open(args.from_json) as f:
            doc = json.load(f)
        doc["results"], doc["machine"], doc.setdefault("config", {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"closs bench: --from-json {args.from_json}: not a closs bench JSON file "
              f"({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    _print_tables(doc, args.markdown, out)
    if args.plot:
        _bench.plot(doc["results"], args.plot)
        print(f"plot: {args.plot}", file=out)
    return 0


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def main(argv=None):
    """Entry point of the ``closs`` script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    out = sys.stdout
    if args.command == "info":
        return _info(args, out)
    return _bench_cmd(args, out, argv)


if __name__ == "__main__":  # python -m closs.cli
    sys.exit(main())
