#!/usr/bin/env python3
# The merge's phases from a stamps build's output (tests/gpu/stamps.py, run through tests/gpu/ab.sh with its stderr in
# stamps.txt): per point and stamps tree, from call 45's medians over the blocks: the arrival counted to a merger's
# role known (7 -> 9), a merger's first load and fold of its share (9 -> 10), with --refold the same again
# (10 -> 13), and the arrival counted to the merge's end (7 -> 8), in us. These are differences of medians, not
# medians of each block's differences. ab.sh prints one stamps block per point and stamps tree, in its ab.txt order.
# Usage: python3 tests/gpu/stamps_phases.py stamps.txt ab.txt ref2 ref3   (the trees that are stamps builds)
import re
import sys

stamps, ab, trees = sys.argv[1], sys.argv[2], set(sys.argv[3:])
if not trees:
    sys.exit('name the stamps trees as ab.txt calls them (new, ref1, ...)')
blocks = open(stamps).read().split('stamps: ')[1:]
runs = [line.split(':')[0] for line in open(ab) if line.split(' ', 1)[0] in trees]
if len(runs) != len(blocks):
    sys.exit(f'{len(blocks)} stamps blocks against {len(runs)} runs of those trees in {ab}')


def phase(med, a, b):
    return f'{(med[b] - med[a]) / 1000:.2f}' if a in med and b in med else '-'


print('| run | arrival to role | first pass | second pass (--refold) | arrival to end |')
print('|---|---|---|---|---|')
for run, block in zip(runs, blocks):
    med = {int(m.group(1)): int(m.group(2)) for m in re.finditer(r'call 45 stamp (\d+): \d+ / \d+ / (\d+)', block)}
    print(f'| {run} | {phase(med, 7, 9)} | {phase(med, 9, 10)} | {phase(med, 10, 13)} | {phase(med, 7, 8)} |')
