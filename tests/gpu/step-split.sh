#!/usr/bin/env bash
# Where an end-to-end decode step's wall time goes on the Llama-3-8B-shaped model: the Bench's generation
# steps split by the engine's metrics (MustafarMetrics: the step, its llama_decode call, its sampling),
# and, with MUSTAFAR_PROFILE=graphs, the backend's account of the decode graphs and of the prompt graphs
# (host time to issue one, the wait for it, the time since the previous graph ended and the host-device
# copies within that time).
# VARIANTS: "plain" (no profile), "graphs" (MUSTAFAR_PROFILE=graphs), "nodes" (MUSTAFAR_PROFILE=1: also GPU
# and host time per kind of node, with events around each node and no CUDA graphs); default "plain graphs".
# After tests/gpu/run.sh (library built, publish unpacked). POINTS: "s,batch,context" (s = 0: dense).
# Usage on the GPU machine: OUT=<folder> POINTS="0,1,4096 0,1,32768" tests/gpu/step-split.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
bench=artifacts/gpu/publish/Mustafar.Bench
model=artifacts/gpu/llama3-8b-f16.gguf
[ -x "$bench" ] || { echo "missing $bench: run tests/gpu/run.sh first" >&2; exit 1; }
mkdir -p "$OUT"
for point in ${POINTS:-"0,1,4096"}; do
  IFS=, read -r s batch ctx <<< "$point"
  for variant in ${VARIANTS:-plain graphs}; do
    run="s$s-b$batch-$ctx-$variant"
    env_profile=()
    [ "$variant" = graphs ] && env_profile=(MUSTAFAR_PROFILE=graphs)
    [ "$variant" = nodes ] && env_profile=(MUSTAFAR_PROFILE=1)
    env "${env_profile[@]}" timeout "${POINT_LIMIT:-150}" "$bench" --generate-llama3-8b --model "$model" --contexts "$ctx" \
      --batches "$batch" --decode-tokens "${DECODE_TOKENS:-130}" --k-sparsity "$s" --v-sparsity "$s" --out "$OUT/$run.md" \
      > "$OUT/$run.txt" 2>&1
    echo "$run rc=$? $(grep -h "^| [0-9]" "$OUT/$run.md" 2>/dev/null)"
    # The last cumulative account of the decode graphs and of the prompt graphs (with nodes: and their tables).
    if [ "$variant" != plain ]; then
      grep -h "profile: " "$OUT/$run.txt" | sed 's/.*profile: //' |
        awk '/ (decode|prompt) graphs,/ { kind = ($2 == "decode") ? "decode" : "prompt"; last[kind] = $0; next }
             /^(decode|prompt): / { k = substr($1, 1, length($1) - 1); last[k] = last[k] "\n" $0 }
             END { print last["decode"]; if ("prompt" in last) print last["prompt"] }' | sed 's/^/  /'
    fi
  done
done | tee "$OUT/step-split.txt"
