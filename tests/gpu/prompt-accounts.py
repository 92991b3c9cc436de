#!/usr/bin/env python3
"""Splits MUSTAFAR_PROFILE=graphs' running account of prompt graphs at the Bench's points.

The backend logs the account (cumulative means) every 8 prompt graphs; the Bench prints a table row after
each point. Each point's own means come from the differences of the running sums between the last account
before its row and the last one before the previous row (to within 8 graphs; the profile's time since the
previous graph is a mean over the gaps it timed, taken here as one a graph).
Usage: prompt-accounts.py <Bench output with the profile's log>
"""
import re
import sys

ACCOUNT = re.compile(r"profile: (\d+) prompt graphs, per graph: host issue ([\d.]+) ms, finish wait ([\d.]+) ms; "
                     r"since the previous graph ([\d.]+) ms, of which uploads ([\d.]+) \(([\d.]+) KB\) ([\d.]+) ms")
NODES = re.compile(r"profile: prompt: (.*?)\s+(\d+) nodes\s+per graph: GPU\s+([\d.]+) ms\s+host\s+([\d.]+) ms")
ROW = re.compile(r"^\| (\d+) \| (\S+) \|")
FIELDS = ["host issue ms", "finish wait ms", "since the previous graph ms", "uploads KB", "uploads ms"]


def sums(match):
    n = int(match.group(1))
    means = [float(match.group(i)) for i in (2, 3, 4, 6, 7)]
    return n, [n * m for m in means]


def main(path):
    last = (0, [0.0] * len(FIELDS))
    start = last
    nodes, nodes_start, points = {}, {}, []  # node kind -> running (GPU ms, host ms) sums
    print("| point | prompt graphs | " + " | ".join(FIELDS) + " |")
    print("|---" * (len(FIELDS) + 2) + "|")
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = ACCOUNT.search(line)
            if m:
                last = sums(m)
                continue
            m = NODES.search(line)
            if m:
                nodes[m.group(1)] = (float(m.group(3)) * last[0], float(m.group(4)) * last[0])
                continue
            r = ROW.match(line)
            if r:
                n = last[0] - start[0]
                means = [(a - b) / n if n else 0.0 for a, b in zip(last[1], start[1])]
                print(f"| b{r.group(1)}, {r.group(2)} | {n} | " + " | ".join(f"{v:.3f}" for v in means) + " |")
                points.append((f"b{r.group(1)}, {r.group(2)}", n, {k: tuple(a - b for a, b in zip(v, nodes_start.get(k, (0.0, 0.0))))
                                                                   for k, v in nodes.items()}))
                start, nodes_start = last, dict(nodes)
    for point, n, kinds in points:
        if not kinds or n == 0:
            continue
        print(f"\n{point}, per prompt graph:\n\n| node | GPU ms | host ms |\n|---|---|---|")
        for kind, (gpu, host) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
            print(f"| {kind} | {gpu / n:.3f} | {host / n:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1])
