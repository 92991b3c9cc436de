#!/usr/bin/env python3
"""Shared-memory wavefronts of the store's decode kernel's 2-byte loads, simulated with random bitmaps.

The decode kernel over the Mustafar store (native/src/cuda/attention_decode.cu, mma_kernel) reads a step's
16 staged K and V records with predicated 2-byte loads: per channel, the lanes whose channel is kept load the
next kept value of their record. A load instruction costs one wavefront per distinct 4-byte word in its most
used bank (32 banks of 4 bytes). This model places the records as a staging layout does and counts, per warp
step of 16 cells:
  - K: lane (g, t) walks channels t*D/4 .. (t+1)*D/4 - 1 of cell g (first 32 loads) and of cell g + 8 (next 32);
  - V: lane l expands half l // 16 of cell l % 16's record, one channel per load;
  - V runs (a candidate, artifacts/gpu/try/s8/runv.cu): lane (g, t) walks channels g*D/8 .. (g+1)*D/8 - 1 of
    cells 2t, 2t + 1, 2t + 8 and 2t + 9 (O^T's A fragments straight from the records, no V tile);
  - K windows (a candidate, not built): lane (g, t) loads its K run's values as three 16-byte chunks from the one
    that holds its first value (16-byte loads: four phases of 8 lanes, each costing the most distinct chunks in
    one group of 4 banks); the values would then have to be placed into the fragments from registers.
Usage: bank_conflicts.py [kept values per record, default 39 (D = 128, s = 0.7)] [trials, default 200]
Prints the layouts compared in bench/results/gpu-attention-2026-11-30.md (fifth session).
"""
import random
import sys

D = 128


def wavefronts(addresses):
    banks = {}
    for a in addresses:
        word = a // 4
        banks.setdefault(word % 32, set()).add(word)
    return max((len(words) for words in banks.values()), default=0)


def random_record(kept):
    bits = [0] * D
    for c in random.sample(range(D), kept):
        bits[c] = 1
    prefix = [0] * (D + 1)  # kept values below each channel
    for c in range(D):
        prefix[c + 1] = prefix[c] + bits[c]
    return bits, prefix


def step_wavefronts(records, at, instructions):
    """Wavefronts of a step's load instructions; each instruction lists its lanes' (cell, channel)."""
    total = 0
    for lanes in instructions:
        loads = []
        for u, c in lanes:
            bits, prefix = records[u]
            if bits[c]:
                loads.append(at(u) + D // 8 + 2 * prefix[c])
        total += wavefronts(loads)
    return total


def k_runs(records, at):
    return step_wavefronts(records, at, ([(first + g, t * D // 4 + p) for g in range(8) for t in range(4)]
                                         for first in (0, 8) for p in range(D // 4)))


def v_halves(records, at):
    return step_wavefronts(records, at, ([(lane % 16, lane // 16 * D // 2 + p) for lane in range(32)] for p in range(D // 2)))


def v_runs(records, at):
    return step_wavefronts(records, at, ([(2 * (lane % 4) + i % 2 + 8 * (i // 2), lane // 4 * D // 8 + p) for lane in range(32)]
                                         for i in range(4) for p in range(D // 8)))


def k_windows(records, at, chunks=3):
    total = 0
    for first in (0, 8):
        for j in range(chunks):
            lanes = []  # lane 4g + t: chunk j of its run's values
            for g in range(8):
                for t in range(4):
                    bits, prefix = records[first + g]
                    lanes.append((at(first + g) + D // 8 + 2 * prefix[t * D // 4]) // 16 + j)
            for phase in range(4):
                groups = {}
                for chunk in lanes[8 * phase:8 * phase + 8]:
                    groups.setdefault(chunk % 8, set()).add(chunk)
                total += max(len(c) for c in groups.values())
    return total


def main():
    kept = int(sys.argv[1]) if len(sys.argv) > 1 else 39
    trials = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    stride = (D // 8 + 2 * kept + 15) // 16 * 16
    # (K's record of cell u, V's record of cell u): byte offsets in the staging buffer.
    row = 2 * stride + 16
    layouts = {
        "two blocks (93d4e61)": (lambda u: u * stride, lambda u: (16 + u) * stride),
        "V's cells 8-15 16 bytes on (52633ae)": (lambda u: u * stride, lambda u: (16 + u) * stride + (u // 8) * 16),
        "both, every 4 cells 16 bytes on": (lambda u: u * stride + (u // 4) * 16, lambda u: (16 + u) * stride + 64 + (u // 4) * 16),
        "per cell K | V | 16 bytes (16-byte copies, below sm_90)": (lambda u: u * row, lambda u: u * row + stride),
    }
    random.seed(1)
    print(f"D = {D}, {kept} kept values, records of {stride} bytes; wavefronts a warp step, mean of {trials} steps")
    print(f"{'layout':64s} {'K':>7s} {'V':>7s} {'V runs':>7s} {'K windows':>9s}")
    for name, (k_at, v_at) in layouts.items():
        k = v = vr = kw = 0
        for _ in range(trials):
            records = [random_record(kept) for _ in range(16)]
            k += k_runs(records, k_at)
            v += v_halves(records, v_at)
            vr += v_runs(records, v_at)
            kw += k_windows(records, k_at)
        print(f"{name:64s} {k / trials:7.1f} {v / trials:7.1f} {vr / trials:7.1f} {kw / trials:9.1f}")


if __name__ == "__main__":
    main()
