G=$PWD/artifacts/gpu
cmake -S native -B $G/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_LIB_DIR=$G/ggml -DMUSTAFAR_CUDA=ON > /dev/null && cmake --build $G/build --target attention_cuda_bench > /dev/null || echo BUILD FAILED
B=$G/build/attention_cuda_bench
for r in 1 2; do for s in 0 0.7 0.5; do $B --one $s 1 4096; $B --cold $s 1 4096; done; done
for pt in "0 1 32768" "0.7 1 32768" "0 8 4096" "0.7 8 4096" "0 8 32768" "0.7 8 32768" "0.7 1 131072"; do $B --one $pt; $B --cold $pt; done
for s in 0 0.7; do for cc in none all; do echo "ncu s=$s cache-control $cc"; ncu --cache-control $cc --clock-control none -k regex:mma_kernel --launch-skip 10 --launch-count 5 --metrics gpu__time_duration.sum $B --one $s 1 4096 | grep duration; done; done
for s in 0 0.7; do for cc in none all; do echo "ncu stalls s=$s cache-control $cc"; ncu --cache-control $cc --clock-control none -k regex:mma_kernel --launch-skip 10 --launch-count 1 --metrics smsp__warp_issue_stalled_no_instruction_per_warp_active.pct,smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct,smsp__warp_issue_stalled_barrier_per_warp_active.pct,smsp__warp_issue_stalled_short_scoreboard_per_warp_active.pct $B --one $s 1 4096 2>&1 | grep -E "stalled|ERR|rror" | head; done; done
cuobjdump -sass $B | awk '/Function :/{name=$3} /\/\*[0-9a-f]+\*\//{n[name]++} END{for(k in n) print n[k], k}' | sort -n | c++filt | grep -E "mma_kernel|merge|range" 
