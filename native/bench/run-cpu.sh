#!/usr/bin/env bash
# Builds native/ (through dotnet build, which restores LLamaSharp's libggml) and runs the CPU
# attention benchmark; the table goes to bench/results/cpu-attention-<date>.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
dotnet build src/Mustafar.AI/Mustafar.AI.csproj -v q >/dev/null
threads="${THREADS:-$(nproc)}"
out="bench/results/cpu-attention-$(date -u +%Y-%m-%d).md"
mkdir -p bench/results
artifacts/native/attention_bench "$threads" "$out" "$(git rev-parse --short HEAD)"
echo "wrote $out"
