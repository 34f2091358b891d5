"""Compares two `cargo xtask bench` results.json files row by row (same kernel, variant and shape) and
writes a markdown table per kernel: rows matched, the geometric mean of after / before median time, the
best and worst row. Used for the before/after table of a refactor (bench-results/2026-11-30-units/).

Usage: python3 bench_compare.py BEFORE.json AFTER.json > compare.md
"""

import json
import math
import sys
from collections import defaultdict


def main(before_path: str, after_path: str) -> None:
    # results.json wraps the suite's report with the command, versions and host.
    before = json.load(open(before_path))["report"]
    after = json.load(open(after_path))["report"]
    key = lambda r: (r["kernel"], r["variant"], r["shape"])
    b = {key(r): r for r in before["rows"]}
    per_kernel = defaultdict(list)
    only_after = defaultdict(int)
    for r in after["rows"]:
        k = key(r)
        if k in b and b[k]["seconds"] > 0:
            per_kernel[r["kernel"]].append((r["seconds"] / b[k]["seconds"], k))
        else:
            only_after[r["kernel"]] += 1
    print(f"before: {before['adapter']}, copy {before['copy_gb_per_s']:.2f} GB/s, "
          f"matmul {before['matmul_gflop_per_s']:.2f} GFLOP/s, dispatch {before['dispatch_overhead_us']:.1f} us")
    print(f"after:  {after['adapter']}, copy {after['copy_gb_per_s']:.2f} GB/s, "
          f"matmul {after['matmul_gflop_per_s']:.2f} GFLOP/s, dispatch {after['dispatch_overhead_us']:.1f} us")
    print()
    print("| kernel | rows | after / before (geomean of median times) | fastest row | slowest row |")
    print("|---|---|---|---|---|")
    all_ratios = []
    for kernel in sorted(set(per_kernel) | set(only_after)):
        rows = per_kernel.get(kernel, [])
        if not rows:
            print(f"| {kernel} | 0 (+{only_after[kernel]} new) | new in this run | | |")
            continue
        g = math.exp(sum(math.log(x) for x, _ in rows) / len(rows))
        all_ratios.extend(x for x, _ in rows)
        lo = min(rows)
        hi = max(rows)
        new = f" (+{only_after[kernel]} new)" if only_after.get(kernel) else ""
        print(f"| {kernel} | {len(rows)}{new} | {g:.3f} | {lo[0]:.2f} {lo[1][1]} {lo[1][2]} | "
              f"{hi[0]:.2f} {hi[1][1]} {hi[1][2]} |")
    g = math.exp(sum(math.log(x) for x in all_ratios) / len(all_ratios))
    print()
    print(f"All {len(all_ratios)} matched rows: geometric mean after / before = {g:.3f}; "
          f"{sum(1 for x in all_ratios if x > 1.10)} rows more than 10% slower, "
          f"{sum(1 for x in all_ratios if x < 0.90)} rows more than 10% faster.")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
