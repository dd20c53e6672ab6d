#!/usr/bin/env bash
# Issues 18 and 33's GPU work in one device call, from the repository root:
#
#     bash benchmarks/gpu_device_run.sh
#
# 1. the environment (nvidia-smi, torch, transformers, varlen_attn's signature)
# 2. the GPU tests: pytest -m gpu tests/engines/test_gpu.py (the demo models are built first, on
#    the CPU, about 20 s, into $FASTSCORE_CACHE_DIR)
#    (FP8's among them: skipped, with the reason, on a device without FP8)
# 3. FP8 against bf16 on the demo's trained pair (benchmarks/fp8_agreement.py)
# 4. the benchmark at the Llama-3.2-1B shape, then 5. at the Llama-3.1-8B shape, each
#    with one profiled engine forward and the FP8 ways after the bf16 ones
#
# Everything lands in $OUT: env.log, gpu-tests.log, fp8-agreement.json, gpu-1b.json,
# gpu-8b.json (written
# after every way, so a stage cut short still leaves its figures), gpu-1b.log,
# gpu-8b.log, profile-1b.txt, profile-8b.txt, and gpu.log with all the logs in order.
# No stage stops the next (no set -e); each has a time limit, and the limits add up to
# 550 s (with the 10 s each stage is given to stop after its TERM, 600 s: the device's
# limit for one command) even if every stage hangs. Expected: about 5 minutes on an H200.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fastscore-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
LOG="$OUT/gpu.log"
: >"$LOG"

# orjson is not on the GPU machine: a carried wheel, when there is one
if ! "$PY" -c "import orjson" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's fastscore, no install
export FASTSCORE_CACHE_DIR=${FASTSCORE_CACHE_DIR:-/tmp/fastscore-cache}
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
export TOKENIZERS_PARALLELISM=false

stage() { # NAME SECONDS COMMAND...: run it with a time limit into $OUT/NAME.log
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    echo "=== $name: $* (limit ${limit}s)" | tee -a "$LOG"
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    cat "$OUT/$name.log" >>"$LOG"
    echo "=== $name: rc=$rc in $((SECONDS - t0))s" | tee -a "$LOG"
    # the summary, not the benchmark's long JSON line (the JSON files hold it)
    grep -v '^{' "$OUT/$name.log" | tail -n "${TAIL:-22}"
}

stage env 30 bash -c 'nvidia-smi; "$0" -c "
import inspect, sys, torch, transformers
print(sys.version)
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name())
print(\"transformers\", transformers.__version__)
from torch.nn.attention.varlen import varlen_attn
print(\"varlen_attn\", inspect.signature(varlen_attn))
"' "$PY"
stage gpu-tests 130 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/engines/test_gpu.py
stage fp8-agreement 60 "$PY" benchmarks/fp8_agreement.py --json-out "$OUT/fp8-agreement.json"
# BENCH_ARGS: more options for both (a rehearsal on CPU: "--shape tiny --device cpu")
stage gpu-1b 140 "$PY" -m fastscore.benchmarks.gpu --shape llama-1b --repeats 2 \
    --json-out "$OUT/gpu-1b.json" --profile-out "$OUT/profile-1b.txt" ${BENCH_ARGS:-}
stage gpu-8b 190 "$PY" -m fastscore.benchmarks.gpu --shape llama-8b --repeats 2 \
    --json-out "$OUT/gpu-8b.json" --profile-out "$OUT/profile-8b.txt" ${BENCH_ARGS:-}
echo "=== done in ${SECONDS}s" | tee -a "$LOG"
# gpu.log holds every stage's log: the device gives back 8 files at most
rm -f "$OUT"/env.log "$OUT"/gpu-tests.log "$OUT"/fp8-agreement.log "$OUT"/gpu-1b.log \
    "$OUT"/gpu-8b.log
ls -l "$OUT"
