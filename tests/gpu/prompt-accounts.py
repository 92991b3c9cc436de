#!/usr/bin/env python3
"""Splits MUSTAFAR_PROFILE=graphs' running account of prompt graphs at the Bench's points.

The backend logs the account (cumulative means) every 8 prompt graphs; the Bench prints a table row after
each point. Each point's own means come from the differences of the running sums between the last account
before its row and the last one before the previous row (to within 8 graphs).
Usage: prompt-accounts.py <Bench output with the profile's log>
"""
import re
import sys

ACCOUNT = re.compile(r"profile: (\d+) prompt graphs, per graph: host issue ([\d.]+) ms, finish wait ([\d.]+) ms; "
                     r"since the previous graph ([\d.]+) ms, of which uploads ([\d.]+) \(([\d.]+) KB\) ([\d.]+) ms")
ROW = re.compile(r"^\| (\d+) \| (\S+) \|")
FIELDS = ["host issue ms", "finish wait ms", "since the previous graph ms", "uploads KB", "uploads ms"]


def sums(match):
    n = int(match.group(1))
    means = [float(match.group(i)) for i in (2, 3, 4, 6, 7)]
    return n, [n * m for m in means]


def main(path):
    last = (0, [0.0] * len(FIELDS))
    start = last
    print("| point | prompt graphs | " + " | ".join(FIELDS) + " |")
    print("|---" * (len(FIELDS) + 2) + "|")
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = ACCOUNT.search(line)
            if m:
                last = sums(m)
                continue
            r = ROW.match(line)
            if r:
                n = last[0] - start[0]
                means = [(a - b) / n if n else 0.0 for a, b in zip(last[1], start[1])]
                print(f"| b{r.group(1)}, {r.group(2)} | {n} | " + " | ".join(f"{v:.3f}" for v in means) + " |")
                start = last


if __name__ == "__main__":
    main(sys.argv[1])
