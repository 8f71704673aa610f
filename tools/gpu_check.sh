#!/usr/bin/env bash
# The GPU checks of issues 4 and 5 in one run on a GPU machine, inside a time budget:
#   1. build (pip install --no-build-isolation, CUDA for this GPU's architecture only, to save time),
#   2. the gpu-marked tests (tests/test_cuda_kernels.py, tests/test_ops_cuda.py, GPU interop),
#   3. compute-sanitizer memcheck and racecheck over the CUDA kernel tests, framework memory
#      pools off (tools/nopool.py), so that the sanitizer sees every allocation.
# Usage, from the repository root: bash tools/gpu_check.sh [OUTDIR] [SECONDS]
# Logs and summary.txt go to OUTDIR (default $OUT, else /tmp/gpu_check). Each stage gets what is
# left of SECONDS (default 540); a stage cut off says so in summary.txt.
set -u -o pipefail
out=${1:-${OUT:-/tmp/gpu_check}}
budget=${2:-540}
mkdir -p "$out"
deadline=$(( $(date +%s) + budget ))
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
sum="$out/summary.txt"
left() { echo $(( deadline - $(date +%s) )); }
stage() {  # stage NAME CAP LOG CMD...: runs CMD with timeout min(CAP, time left - 5)
  local name=$1 cap=$2 log=$3; shift 3
  local t; t=$(left); t=$(( t - 5 < cap ? t - 5 : cap ))
  if [ "$t" -lt 10 ]; then echo "$name: not run (no time left)" | tee -a "$sum"; return; fi
  local s=$(date +%s)
  timeout "$t" "$@" > "$out/$log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $(( $(date +%s) - s ))s (limit ${t}s)$([ $rc = 124 ] && echo ', CUT OFF'): $(tail -n 1 "$out/$log")" | tee -a "$sum"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | tee "$sum"
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' .')
stage build 330 build.log python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.LAYERFORGE_CUDA=ON \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES="${cc:-90}-real" .
python3 -c "import layerforge; layerforge.info()" >> "$sum" 2>&1
stage gpu_tests 200 gpu_tests.log env LAYERFORGE_REQUIRE_BACKENDS=cuda PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
  python3 -m pytest -q -m gpu -rfEs -p no:cacheprovider -p tools.nopool tests
stage memcheck 120 memcheck.log env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
  compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 \
  python3 -m pytest -q -x -p no:cacheprovider -p tools.nopool tests/test_cuda_kernels.py
stage racecheck 90 racecheck.log env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
  compute-sanitizer --tool racecheck --error-exitcode 99 --print-limit 20 \
  python3 -m pytest -q -x -p no:cacheprovider -p tools.nopool tests/test_cuda_kernels.py
grep -h "ERROR SUMMARY\|RACECHECK SUMMARY" "$out"/memcheck.log "$out"/racecheck.log 2>/dev/null | tee -a "$sum"
exit 0
