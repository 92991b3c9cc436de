#!/usr/bin/env python3
"""The A/B timings of tests/gpu/ab.sh (its ab.txt) as a Markdown table: a row per point, a column per tree,
repeated measurements of a point joined by ", ", and each reference tree's time over `new`'s (mean of the
repeats; below 1: the reference is faster).
Usage: ab_table.py <ab.txt> [tree names for the header, in order: new ref1 ...]"""
import re
import sys

LINE = re.compile(r"^(\S+) s=([\d.]+) b=(\d+) ctx=(\d+) splits=(\d+): ([\d.]+) us")
PROMPT = re.compile(r"^(\S+) prompt s=([\d.]+) rows=(\d+) ctx=(\d+) (\w+)( \(tiles expanded in the kernel\))?: ([\d.]+) us")


def point_name(s, b, ctx, splits):
    kind = "dense" if float(s) == 0 else f"s{float(s):g}"
    size = f"{int(ctx) // 1024}K" if int(ctx) % 1024 == 0 else ctx
    return f"{kind} b{b} {size}" + (f" ({splits} splits)" if splits != "0" else "")


def prompt_name(s, rows, ctx, mask, in_kernel):
    kind = "dense" if float(s) == 0 else f"s{float(s):g}"
    size = f"{int(ctx) // 1024}K" if int(ctx) % 1024 == 0 else ctx
    return f"prompt {rows} rows {kind} {size} {mask}" + (" (tiles expanded in the kernel)" if in_kernel else "")


def main():
    times, trees, points = {}, [], []
    for line in open(sys.argv[1]):
        m = LINE.match(line.strip())
        if m:
            tree, key = m.group(1), point_name(*m.group(2, 3, 4, 5))
        else:
            m = PROMPT.match(line.strip())
            if not m:
                continue
            tree, key = m.group(1), prompt_name(*m.group(2, 3, 4, 5, 6))
        if tree not in trees:
            trees.append(tree)
        if key not in points:
            points.append(key)
        times.setdefault((key, tree), []).append(float(m.group(m.lastindex)))
    names = dict(zip(trees, sys.argv[2:] + trees[len(sys.argv) - 2:]))
    refs = [t for t in trees if t != "new"]
    head = ["point"] + [names[t] for t in trees] + [f"{names[r]} / {names['new']}" for r in refs if "new" in trees]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for key in points:
        row = [key] + [", ".join(f"{v:.1f}" for v in times.get((key, t), [])) for t in trees]
        new = times.get((key, "new"))
        for r in refs:
            if "new" not in trees:
                break
            ref = times.get((key, r))
            row.append(f"{(sum(ref) / len(ref)) / (sum(new) / len(new)):.3f}" if ref and new else "")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
