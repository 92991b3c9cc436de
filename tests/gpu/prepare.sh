#!/usr/bin/env bash
# On the build machine: copies LLamaSharp's libggml-base.so and libggml-cpu.so (restored by
# dotnet build) to artifacts/gpu/ggml, the folder tests/gpu/run.sh builds against on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
dotnet build src/Mustafar.AI/Mustafar.AI.csproj -v q >/dev/null
pkg="$(dotnet nuget locals global-packages --list | sed 's/^global-packages: //')llamasharp.backend.cpu/0.30.0/LLamaSharpRuntimes/linux-x64/native/avx2"
mkdir -p artifacts/gpu/ggml
cp "$pkg/libggml-base.so" "$pkg/libggml-cpu.so" artifacts/gpu/ggml/
echo "copied to artifacts/gpu/ggml"

# --e2e: also a self-contained publish of the chat, agent and benchmark samples into one folder (they
# share the runtime; only the avx2 natives: LLamaSharp falls back to them), the models and prompts, and
# the CPU flavour's outputs to compare against.
if [ "${1:-}" = "--e2e" ]; then
  rm -rf artifacts/gpu/publish
  for app in Mustafar.Chat Mustafar.Agent Mustafar.Bench; do
    dotnet publish "samples/$app" -c Release -r linux-x64 --self-contained true -o artifacts/gpu/publish -v q
  done
  # The GPU machine is linux-x64 (glibc): other platforms' natives only fill the 64 MB that travels.
  find artifacts/gpu/publish/runtimes -mindepth 1 -maxdepth 1 ! -name linux-x64 -exec rm -rf {} +
  rm -rf artifacts/gpu/publish/runtimes/linux-x64/native/{avx,avx512,noavx}
  tar -cJf artifacts/gpu/apps.tar.xz -C artifacts/gpu publish
  mkdir -p artifacts/gpu/models artifacts/gpu/expected
  cp ../shared/models/stories260K-f32.gguf ../shared/models/babyllama-tok105-f32.gguf ../shared/models/recall-hd128-q8_0.gguf \
    artifacts/gpu/models/
  # The CPU flavour's outputs, dense and with the Mustafar store, for run.sh to compare with.
  for s in 0 0.5 0.7; do
    tests/gpu/e2e.sh artifacts/gpu/publish artifacts/gpu/models "artifacts/gpu/expected/e2e-s$s.txt" "$s"
  done
  tests/gpu/e2e-agent.sh artifacts/gpu/publish artifacts/gpu/models artifacts/gpu/expected/agent.txt
  tests/gpu/layout-digests.sh artifacts/gpu/publish artifacts/gpu/models artifacts/gpu/expected/layouts.txt
  echo "carry: artifacts/gpu/ggml artifacts/gpu/apps.tar.xz artifacts/gpu/models artifacts/gpu/expected"
fi
