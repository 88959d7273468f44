"""The README's benchmark summary from a `closs bench --json` file, and the rows
that miss issue 5's targets.

    python bench/summarize.py bench/results/full.json > summary.md

Large rows: value+grad at the largest thread count, both dtypes: closs, the
fastest peer and its ratio (target >= 3), 2 threads over 1 (target >= 1.7)
and closs's time over the roofline bound (target <= 2, when the file has
--roofline).  Medium rows: the fastest peer over closs for value and
value+grad (target > 1).  Tiny rows: closs's time per call (targets: value
2 us / value+grad 3 us for pointwise losses, 4 us for row-wise ones) and
NumPy over closs (target > 1).
"""
import json
import sys

from closs._bench import format_shape, format_time as fmt_time

TARGETS = {"large_ratio": 3.0, "speedup": 1.7, "roofline": 2.0}


def fastest_peer(r):
    peers = {m: s["median"] for m, s in r["times"].items() if m != "closs"}
    if not peers:
        return None, None
    name = min(peers, key=peers.get)
    return name, peers[name]


def shape_of(r):
    return format_shape(r["shape"])


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 2 else "---:"
                                                         for i in range(len(head))) + "|"]
    return "\n".join(out + ["| " + " | ".join(row) + " |" for row in rows])


def summarize(doc):
    results = doc["results"]
    top = max(r["threads"] for r in results)
    index = {(r["key"], r["dtype"], r["preset"], r["threads"], r["mode"]): r for r in results}
    keys = list(dict.fromkeys(r["key"] for r in results))
    roof = {(x["key"], x["dtype"], x["threads"], x["mode"]): x["of_roofline"]
            for x in (doc.get("roofline") or {}).get("rows", [])}
    misses, out = [], []

    rows = []
    for k in keys:
        row = None
        for dt in ("float32", "float64"):
            r = index.get((k, dt, "large", top, "value+grad"))
            if r is None:
                continue
            if row is None:
                row = [r["loss"], shape_of(r)]
            name, t = fastest_peer(r)
            ratio = t / r["times"]["closs"]["median"] if t else None
            one = index.get((k, dt, "large", 1, "value+grad"))
            speedup = one["times"]["closs"]["median"] / r["times"]["closs"]["median"] if one else None
            x_roof = roof.get((k, dt, top, "value+grad"))
            row += [fmt_time(r["times"]["closs"]["median"]),
                    f"{name} {fmt_time(t)} ({ratio:.1f}x)" if name else "-",
                    f"{speedup:.2f}" if speedup else "-", f"{x_roof:.2f}" if x_roof else "-"]
            where = f"{r['loss']} {shape_of(r)} {dt}"
            if ratio is not None and ratio < TARGETS["large_ratio"]:
                misses.append(f"large {where}: {ratio:.2f}x {name} (target 3x)")
            if speedup is not None and speedup < TARGETS["speedup"]:
                misses.append(f"large {where}: 2 threads {speedup:.2f}x 1 thread (target 1.7x)")
            if x_roof is not None and x_roof > TARGETS["roofline"]:
                misses.append(f"large {where}: {x_roof:.2f}x the roofline bound (target 2x)")
        if row:
            rows.append(row)
    out.append(f"**Large, value + gradient, {top} threads**\n")
    out.append(table(["loss", "size", "float32", "fastest peer", "2T/1T", "x roofline",
                      "float64", "fastest peer", "2T/1T", "x roofline"], rows))

    def per_mode_rows(preset, cell):
        """A row per loss: cell(r) for float32 / float64 x value / value+grad."""
        rows = []
        for k in keys:
            cases = [index.get((k, dt, preset, top, mode)) for dt in ("float32", "float64")
                     for mode in ("value", "value+grad")]
            cases = [r for r in cases if r is not None]
            if cases:
                rows.append([cases[0]["loss"], shape_of(cases[0])] + [cell(r) for r in cases])
        return rows

    def medium_cell(r):
        name, t = fastest_peer(r)
        c = r["times"]["closs"]["median"]
        if name and t <= c:
            misses.append(f"medium {r['loss']} {shape_of(r)} {r['dtype']} {r['mode']}: {name} "
                          f"{fmt_time(t)}, closs {fmt_time(c)}")
        return f"{fmt_time(c)} ({t / c:.1f}x {name})" if name else fmt_time(c)

    def tiny_cell(r):
        c = r["times"]["closs"]["median"]
        np_t = r["times"].get("numpy", {}).get("median")
        pointwise = len(r["shape"]) == 1
        limit = (2e-6 if r["mode"] == "value" else 3e-6) if pointwise else 4e-6
        where = f"tiny {r['loss']} {shape_of(r)} {r['dtype']} {r['mode']}"
        if c > limit:
            misses.append(f"{where}: {fmt_time(c)} (target {fmt_time(limit)})")
        if np_t and np_t <= c:
            misses.append(f"{where}: NumPy {fmt_time(np_t)}, closs {fmt_time(c)}")
        return fmt_time(c) + (f" ({np_t / c:.1f}x)" if np_t else "")

    head = ["loss", "size", "float32 value", "float32 value+grad", "float64 value",
            "float64 value+grad"]
    out.append(f"\n**Medium, {top} threads** (closs, and the fastest peer over closs)\n")
    out.append(table(head, per_mode_rows("medium", medium_cell)))
    out.append(f"\n**Tiny, {top} threads** (closs per call, and NumPy over closs)\n")
    out.append(table(head, per_mode_rows("tiny", tiny_cell)))
    out.append("\n**Rows that miss a target**\n")
    out.append("\n".join(f"- {m}" for m in misses) if misses else "none")
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(summarize(json.load(f)))
